// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-rms-norm)' | filecheck %s

// Gemma: computed in f32 between extf and truncf, (1 + w), x² as powf, keepdim mean.
// CHECK-LABEL: func.func @gemma_rms_norm_bf16_dynamic
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x?x64xbf16>, %[[W:arg[0-9]+]]: tensor<64xbf16>)
// CHECK-NEXT: %[[N:.*]] = "tessera.norm.rms"(%[[X]], %[[W]]) {eps = 9.99999997E-7 : f32, offset = 1.000000e+00 : f32} : (tensor<?x?x64xbf16>, tensor<64xbf16>) -> tensor<?x?x64xbf16>
// CHECK-NEXT: return %[[N]] : tensor<?x?x64xbf16>
func.func @gemma_rms_norm_bf16_dynamic(%x: tensor<?x?x64xbf16>, %w: tensor<64xbf16>) -> tensor<?x?x64xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %x, %c0 : tensor<?x?x64xbf16>
  %S = tensor.dim %x, %c1 : tensor<?x?x64xbf16>
  %xf = arith.extf %x : tensor<?x?x64xbf16> to tensor<?x?x64xf32>
  %full = tensor.empty(%B, %S) : tensor<?x?x64xf32>
  %c2 = arith.constant 2.0 : f32
  %two = linalg.fill ins(%c2 : f32) outs(%full : tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
  %sq = math.powf %xf, %two : tensor<?x?x64xf32>
  %rows = tensor.empty(%B, %S) : tensor<?x?xf32>
  %zero = arith.constant 0.0 : f32
  %init = linalg.fill ins(%zero : f32) outs(%rows : tensor<?x?xf32>) -> tensor<?x?xf32>
  %sum = linalg.reduce ins(%sq : tensor<?x?x64xf32>) outs(%init : tensor<?x?xf32>) dimensions = [2]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %sumk = tensor.expand_shape %sum [[0], [1, 2]] output_shape [%B, %S, 1] : tensor<?x?xf32> into tensor<?x?x1xf32>
  %kept = tensor.empty(%B, %S) : tensor<?x?x1xf32>
  %c64 = arith.constant 64.0 : f32
  %width = linalg.fill ins(%c64 : f32) outs(%kept : tensor<?x?x1xf32>) -> tensor<?x?x1xf32>
  %mean = arith.divf %sumk, %width : tensor<?x?x1xf32>
  %ceps = arith.constant 1.0e-06 : f32
  %eps = linalg.fill ins(%ceps : f32) outs(%kept : tensor<?x?x1xf32>) -> tensor<?x?x1xf32>
  %var = arith.addf %mean, %eps : tensor<?x?x1xf32>
  %r = math.rsqrt %var : tensor<?x?x1xf32>
  %rc = tensor.collapse_shape %r [[0], [1, 2]] : tensor<?x?x1xf32> into tensor<?x?xf32>
  %rb = linalg.broadcast ins(%rc : tensor<?x?xf32>) outs(%full : tensor<?x?x64xf32>) dimensions = [2]
  %n = arith.mulf %xf, %rb : tensor<?x?x64xf32>
  %wf = arith.extf %w : tensor<64xbf16> to tensor<64xf32>
  %one = arith.constant dense<1.0> : tensor<64xf32>
  %w1 = arith.addf %one, %wf : tensor<64xf32>
  %wb = linalg.broadcast ins(%w1 : tensor<64xf32>) outs(%full : tensor<?x?x64xf32>) dimensions = [0, 1]
  %o = arith.mulf %n, %wb : tensor<?x?x64xf32>
  %y = arith.truncf %o : tensor<?x?x64xf32> to tensor<?x?x64xbf16>
  return %y : tensor<?x?x64xbf16>
}

// -----

// f32, plain weight (offset 0), x² as x·x, mean as × 1/D, no keepdim, weight on the left.
// CHECK-LABEL: func.func @rms_norm_f32_static_plain_weight
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<2x8x32xf32>, %[[W:arg[0-9]+]]: tensor<32xf32>)
// CHECK-NEXT: %[[N:.*]] = "tessera.norm.rms"(%[[X]], %[[W]]) {eps = 9.99999974E-6 : f32, offset = 0.000000e+00 : f32} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
// CHECK-NEXT: return %[[N]] : tensor<2x8x32xf32>
func.func @rms_norm_f32_static_plain_weight(%x: tensor<2x8x32xf32>, %w: tensor<32xf32>) -> tensor<2x8x32xf32> {
  %sq = arith.mulf %x, %x : tensor<2x8x32xf32>
  %zero = arith.constant dense<0.0> : tensor<2x8xf32>
  %sum = linalg.reduce ins(%sq : tensor<2x8x32xf32>) outs(%zero : tensor<2x8xf32>) dimensions = [2]
    (%a: f32, %b: f32) {
      %s = arith.addf %b, %a : f32
      linalg.yield %s : f32
    }
  %inv_width = arith.constant dense<3.125000e-02> : tensor<2x8xf32>
  %mean = arith.mulf %inv_width, %sum : tensor<2x8xf32>
  %eps = arith.constant dense<1.0e-05> : tensor<2x8xf32>
  %var = arith.addf %eps, %mean : tensor<2x8xf32>
  %r = math.rsqrt %var : tensor<2x8xf32>
  %full = tensor.empty() : tensor<2x8x32xf32>
  %rb = linalg.broadcast ins(%r : tensor<2x8xf32>) outs(%full : tensor<2x8x32xf32>) dimensions = [2]
  %n = arith.mulf %rb, %x : tensor<2x8x32xf32>
  %wb = linalg.broadcast ins(%w : tensor<32xf32>) outs(%full : tensor<2x8x32xf32>) dimensions = [0, 1]
  %y = arith.mulf %wb, %n : tensor<2x8x32xf32>
  return %y : tensor<2x8x32xf32>
}

// -----

// Gemma 3 QK-norm: a [B, S, H, Dh] tensor normalised per head with a [Dh] weight.
// CHECK-LABEL: func.func @gemma3_qk_norm_per_head_bf16
// CHECK-SAME: (%[[Q:arg[0-9]+]]: tensor<?x?x4x16xbf16>, %[[W:arg[0-9]+]]: tensor<16xbf16>)
// CHECK-NEXT: %[[N:.*]] = "tessera.norm.rms"(%[[Q]], %[[W]]) {eps = 9.99999997E-7 : f32, offset = 1.000000e+00 : f32} : (tensor<?x?x4x16xbf16>, tensor<16xbf16>) -> tensor<?x?x4x16xbf16>
// CHECK-NEXT: return %[[N]]
func.func @gemma3_qk_norm_per_head_bf16(%q: tensor<?x?x4x16xbf16>, %w: tensor<16xbf16>) -> tensor<?x?x4x16xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %q, %c0 : tensor<?x?x4x16xbf16>
  %S = tensor.dim %q, %c1 : tensor<?x?x4x16xbf16>
  %qf = arith.extf %q : tensor<?x?x4x16xbf16> to tensor<?x?x4x16xf32>
  %sq = arith.mulf %qf, %qf : tensor<?x?x4x16xf32>
  %rows = tensor.empty(%B, %S) : tensor<?x?x4xf32>
  %zero = arith.constant 0.0 : f32
  %init = linalg.fill ins(%zero : f32) outs(%rows : tensor<?x?x4xf32>) -> tensor<?x?x4xf32>
  %sum = linalg.reduce ins(%sq : tensor<?x?x4x16xf32>) outs(%init : tensor<?x?x4xf32>) dimensions = [3]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %c16 = arith.constant 16.0 : f32
  %width = linalg.fill ins(%c16 : f32) outs(%rows : tensor<?x?x4xf32>) -> tensor<?x?x4xf32>
  %mean = arith.divf %sum, %width : tensor<?x?x4xf32>
  %ceps = arith.constant 1.0e-06 : f32
  %eps = linalg.fill ins(%ceps : f32) outs(%rows : tensor<?x?x4xf32>) -> tensor<?x?x4xf32>
  %var = arith.addf %mean, %eps : tensor<?x?x4xf32>
  %r = math.rsqrt %var : tensor<?x?x4xf32>
  %full = tensor.empty(%B, %S) : tensor<?x?x4x16xf32>
  %rb = linalg.broadcast ins(%r : tensor<?x?x4xf32>) outs(%full : tensor<?x?x4x16xf32>) dimensions = [3]
  %n = arith.mulf %qf, %rb : tensor<?x?x4x16xf32>
  %wf = arith.extf %w : tensor<16xbf16> to tensor<16xf32>
  %one = arith.constant dense<1.0> : tensor<16xf32>
  %w1 = arith.addf %wf, %one : tensor<16xf32>
  %wb = linalg.broadcast ins(%w1 : tensor<16xf32>) outs(%full : tensor<?x?x4x16xf32>) dimensions = [0, 1, 2]
  %o = arith.mulf %n, %wb : tensor<?x?x4x16xf32>
  %y = arith.truncf %o : tensor<?x?x4x16xf32> to tensor<?x?x4x16xbf16>
  return %y : tensor<?x?x4x16xbf16>
}

// -----

// The f32 result is kept (no truncf back): the fused op reads the extf'd x and returns f32.
// CHECK-LABEL: func.func @rms_norm_upcast_kept_wide
// CHECK-SAME: (%[[X:arg[0-9]+]]: tensor<?x32xbf16>, %[[W:arg[0-9]+]]: tensor<32xf32>)
// CHECK-NEXT: %[[XF:.*]] = arith.extf %[[X]] : tensor<?x32xbf16> to tensor<?x32xf32>
// CHECK-NEXT: %[[N:.*]] = "tessera.norm.rms"(%[[XF]], %[[W]]) {eps = 1.000000e-01 : f32, offset = 0.000000e+00 : f32} : (tensor<?x32xf32>, tensor<32xf32>) -> tensor<?x32xf32>
// CHECK-NEXT: return %[[N]] : tensor<?x32xf32>
func.func @rms_norm_upcast_kept_wide(%x: tensor<?x32xbf16>, %w: tensor<32xf32>) -> tensor<?x32xf32> {
  %c0 = arith.constant 0 : index
  %M = tensor.dim %x, %c0 : tensor<?x32xbf16>
  %xf = arith.extf %x : tensor<?x32xbf16> to tensor<?x32xf32>
  %sq = arith.mulf %xf, %xf : tensor<?x32xf32>
  %rows = tensor.empty(%M) : tensor<?xf32>
  %zero = arith.constant 0.0 : f32
  %init = linalg.fill ins(%zero : f32) outs(%rows : tensor<?xf32>) -> tensor<?xf32>
  %sum = linalg.reduce ins(%sq : tensor<?x32xf32>) outs(%init : tensor<?xf32>) dimensions = [1]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %c32 = arith.constant 32.0 : f32
  %width = linalg.fill ins(%c32 : f32) outs(%rows : tensor<?xf32>) -> tensor<?xf32>
  %mean = arith.divf %sum, %width : tensor<?xf32>
  %ceps = arith.constant 0.1 : f32
  %eps = linalg.fill ins(%ceps : f32) outs(%rows : tensor<?xf32>) -> tensor<?xf32>
  %var = arith.addf %mean, %eps : tensor<?xf32>
  %r = math.rsqrt %var : tensor<?xf32>
  %full = tensor.empty(%M) : tensor<?x32xf32>
  %rb = linalg.broadcast ins(%r : tensor<?xf32>) outs(%full : tensor<?x32xf32>) dimensions = [1]
  %n = arith.mulf %xf, %rb : tensor<?x32xf32>
  %wb = linalg.broadcast ins(%w : tensor<32xf32>) outs(%full : tensor<?x32xf32>) dimensions = [0]
  %y = arith.mulf %n, %wb : tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// Summing over axis 1 of [B, 8, 8] and broadcasting back over the last axis is not a norm.
// CHECK-LABEL: func.func @no_fusion_when_reduction_is_over_another_axis
// CHECK-NOT: tessera.norm.rms
// CHECK: linalg.reduce
// CHECK-SAME: dimensions = [1]
// CHECK: math.rsqrt
// CHECK-NOT: tessera.norm.rms
// CHECK: return
func.func @no_fusion_when_reduction_is_over_another_axis(%x: tensor<2x8x8xf32>, %w: tensor<8xf32>) -> tensor<2x8x8xf32> {
  %sq = arith.mulf %x, %x : tensor<2x8x8xf32>
  %zero = arith.constant dense<0.0> : tensor<2x8xf32>
  %sum = linalg.reduce ins(%sq : tensor<2x8x8xf32>) outs(%zero : tensor<2x8xf32>) dimensions = [1]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %width = arith.constant dense<8.0> : tensor<2x8xf32>
  %mean = arith.divf %sum, %width : tensor<2x8xf32>
  %eps = arith.constant dense<1.0e-06> : tensor<2x8xf32>
  %var = arith.addf %mean, %eps : tensor<2x8xf32>
  %r = math.rsqrt %var : tensor<2x8xf32>
  %full = tensor.empty() : tensor<2x8x8xf32>
  %rb = linalg.broadcast ins(%r : tensor<2x8xf32>) outs(%full : tensor<2x8x8xf32>) dimensions = [2]
  %n = arith.mulf %x, %rb : tensor<2x8x8xf32>
  %wb = linalg.broadcast ins(%w : tensor<8xf32>) outs(%full : tensor<2x8x8xf32>) dimensions = [0, 1]
  %y = arith.mulf %n, %wb : tensor<2x8x8xf32>
  return %y : tensor<2x8x8xf32>
}

// -----

// The sum over 32 elements is divided by 16.
// CHECK-LABEL: func.func @no_fusion_when_mean_is_over_another_width
// CHECK-NOT: tessera.norm.rms
// CHECK: linalg.reduce
// CHECK: arith.divf
// CHECK-NOT: tessera.norm.rms
// CHECK: return
func.func @no_fusion_when_mean_is_over_another_width(%x: tensor<4x32xf32>, %w: tensor<32xf32>) -> tensor<4x32xf32> {
  %sq = arith.mulf %x, %x : tensor<4x32xf32>
  %zero = arith.constant dense<0.0> : tensor<4xf32>
  %sum = linalg.reduce ins(%sq : tensor<4x32xf32>) outs(%zero : tensor<4xf32>) dimensions = [1]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %width = arith.constant dense<16.0> : tensor<4xf32>
  %mean = arith.divf %sum, %width : tensor<4xf32>
  %eps = arith.constant dense<1.0e-06> : tensor<4xf32>
  %var = arith.addf %mean, %eps : tensor<4xf32>
  %r = math.rsqrt %var : tensor<4xf32>
  %full = tensor.empty() : tensor<4x32xf32>
  %rb = linalg.broadcast ins(%r : tensor<4xf32>) outs(%full : tensor<4x32xf32>) dimensions = [1]
  %n = arith.mulf %x, %rb : tensor<4x32xf32>
  %wb = linalg.broadcast ins(%w : tensor<32xf32>) outs(%full : tensor<4x32xf32>) dimensions = [0]
  %y = arith.mulf %n, %wb : tensor<4x32xf32>
  return %y : tensor<4x32xf32>
}

// -----

// The reciprocal RMS is returned as well, so it must be computed anyway.
// CHECK-LABEL: func.func @no_fusion_when_rsqrt_has_a_second_user
// CHECK-NOT: tessera.norm.rms
// CHECK: %[[R:.*]] = math.rsqrt
// CHECK-NOT: tessera.norm.rms
// CHECK: return %{{.*}}, %[[R]]
func.func @no_fusion_when_rsqrt_has_a_second_user(%x: tensor<4x32xf32>, %w: tensor<32xf32>) -> (tensor<4x32xf32>, tensor<4xf32>) {
  %sq = arith.mulf %x, %x : tensor<4x32xf32>
  %zero = arith.constant dense<0.0> : tensor<4xf32>
  %sum = linalg.reduce ins(%sq : tensor<4x32xf32>) outs(%zero : tensor<4xf32>) dimensions = [1]
    (%a: f32, %b: f32) {
      %s = arith.addf %a, %b : f32
      linalg.yield %s : f32
    }
  %width = arith.constant dense<32.0> : tensor<4xf32>
  %mean = arith.divf %sum, %width : tensor<4xf32>
  %eps = arith.constant dense<1.0e-06> : tensor<4xf32>
  %var = arith.addf %mean, %eps : tensor<4xf32>
  %r = math.rsqrt %var : tensor<4xf32>
  %full = tensor.empty() : tensor<4x32xf32>
  %rb = linalg.broadcast ins(%r : tensor<4xf32>) outs(%full : tensor<4x32xf32>) dimensions = [1]
  %n = arith.mulf %x, %rb : tensor<4x32xf32>
  %wb = linalg.broadcast ins(%w : tensor<32xf32>) outs(%full : tensor<4x32xf32>) dimensions = [0]
  %y = arith.mulf %n, %wb : tensor<4x32xf32>
  return %y, %r : tensor<4x32xf32>, tensor<4xf32>
}

// -----

// In bf16 every step rounds; the fused op computes in f32, so this is a different function.
// CHECK-LABEL: func.func @no_fusion_when_arithmetic_is_bf16
// CHECK-NOT: tessera.norm.rms
// CHECK: linalg.reduce
// CHECK-NOT: tessera.norm.rms
// CHECK: return
func.func @no_fusion_when_arithmetic_is_bf16(%x: tensor<4x32xbf16>, %w: tensor<32xbf16>) -> tensor<4x32xbf16> {
  %sq = arith.mulf %x, %x : tensor<4x32xbf16>
  %zero = arith.constant dense<0.0> : tensor<4xbf16>
  %sum = linalg.reduce ins(%sq : tensor<4x32xbf16>) outs(%zero : tensor<4xbf16>) dimensions = [1]
    (%a: bf16, %b: bf16) {
      %s = arith.addf %a, %b : bf16
      linalg.yield %s : bf16
    }
  %width = arith.constant dense<32.0> : tensor<4xbf16>
  %mean = arith.divf %sum, %width : tensor<4xbf16>
  %eps = arith.constant dense<1.0e-06> : tensor<4xbf16>
  %var = arith.addf %mean, %eps : tensor<4xbf16>
  %r = math.rsqrt %var : tensor<4xbf16>
  %full = tensor.empty() : tensor<4x32xbf16>
  %rb = linalg.broadcast ins(%r : tensor<4xbf16>) outs(%full : tensor<4x32xbf16>) dimensions = [1]
  %n = arith.mulf %x, %rb : tensor<4x32xbf16>
  %wb = linalg.broadcast ins(%w : tensor<32xbf16>) outs(%full : tensor<4x32xbf16>) dimensions = [0]
  %y = arith.mulf %n, %wb : tensor<4x32xbf16>
  return %y : tensor<4x32xbf16>
}
