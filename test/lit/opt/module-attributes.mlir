// A module with attributes keeps them (and its ops) through tessera-opt.
// RUN: tessera-opt %s -cse | filecheck %s

// CHECK: module attributes {gpu.container_module, tessera.note = 7 : i64}
// CHECK: func.func @f
module attributes {gpu.container_module, tessera.note = 7 : i64} {
  func.func @f() {
    return
  }
}
