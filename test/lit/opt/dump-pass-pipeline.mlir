// --dump-pass-pipeline prints the pipeline that will run, once per chunk, as mlir-opt does:
// tessera's named pipelines expanded, and the tessera clean-ups that follow canonicalize and cse.
// RUN: tessera-opt %s -p 'builtin.module(canonicalize, func.func(cse), tessera-verify)' -dump-pass-pipeline 2>&1 >/dev/null | filecheck %s
// RUN: tessera-opt %s -split-input-file -tessera-fuse -dump-pass-pipeline 2>&1 >/dev/null | filecheck %s --check-prefix=NAMED
// RUN: tessera-opt %s -dump-pass-pipeline 2>&1 >/dev/null | filecheck %s --check-prefix=EMPTY

// CHECK: Pass Manager with 4 passes:
// CHECK-NEXT: builtin.module(canonicalize{{[{].*[}]}},tessera-dce,func.func(cse),tessera-verify){{$}}
// CHECK-EMPTY:
// NAMED-COUNT-2: ,tessera-dce,cse,tessera-cse,tessera-fuse-attention,tessera-fuse-rope,tessera-fuse-rms-norm,tessera-fuse-gated-mlp,tessera-fuse-proj,tessera-fuse-lookup,canonicalize
// EMPTY: Pass Manager with 0 passes:
// EMPTY-NEXT: builtin.module()
func.func @f() {
  return
}

// -----

func.func @g() {
  return
}
