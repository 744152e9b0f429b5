// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-rope)' | filecheck %s
// RUN: tessera-opt %s --split-input-file -p 'builtin.module(tessera-fuse-rope)' -o /dev/null 2>&1 | filecheck %s --check-prefix=QUIET --allow-empty

// The pass prints nothing, whether a chain fuses or not.
// QUIET-NOT: {{.}}

// Hugging Face's form: q viewed as [B, S, H, D], transposed to [B, H, S, D], then rotated
// with cos/sin tables of [B, S, D] broadcast over heads. rope.apply reads the transpose's
// input and its result is transposed back; the tables and the rotation disappear.
// CHECK-LABEL: func.func @rope_f32_through_transpose
// CHECK-SAME: (%[[XS:.*]]: tensor<?x?x4x16xf32>, %[[POS:.*]]: tensor<?x?xi64>)
// CHECK-NEXT: %[[R:.*]] = "tessera.rope.apply"(%[[XS]], %[[POS]]) {layout = "half_split", rotary_dim = 16 : i64, scaling = 1.000000e+00 : f32, theta = 1.000000e+04 : f32} : (tensor<?x?x4x16xf32>, tensor<?x?xi64>) -> tensor<?x?x4x16xf32>
// CHECK-NOT: math.
// CHECK: %[[Y:.*]] = linalg.transpose ins(%[[R]] : tensor<?x?x4x16xf32>) outs(%{{.*}} : tensor<?x4x?x16xf32>) permutation = [0, 2, 1, 3]
// CHECK-NEXT: return %[[Y]]
func.func @rope_f32_through_transpose(%xs: tensor<?x?x4x16xf32>, %pos: tensor<?x?xi64>) -> tensor<?x4x?x16xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %xs, %c0 : tensor<?x?x4x16xf32>
  %S = tensor.dim %xs, %c1 : tensor<?x?x4x16xf32>
  %xt0 = tensor.empty(%B, %S) : tensor<?x4x?x16xf32>
  %x = linalg.transpose ins(%xs : tensor<?x?x4x16xf32>) outs(%xt0 : tensor<?x4x?x16xf32>) permutation = [0, 2, 1, 3]
  %inv = arith.constant dense<[1.0, 0.316227764, 0.100000001, 0.0316227786, 0.00999999978, 0.00316227786, 0.00100000005, 0.000316227786]> : tensor<8xf32>
  %pf = arith.sitofp %pos : tensor<?x?xi64> to tensor<?x?xf32>
  %e3 = tensor.empty(%B, %S) : tensor<?x?x8xf32>
  %pb = linalg.broadcast ins(%pf : tensor<?x?xf32>) outs(%e3 : tensor<?x?x8xf32>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<8xf32>) outs(%e3 : tensor<?x?x8xf32>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<?x?x8xf32>
  %emb = tensor.concat dim(2) %f, %f : (tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x16xf32>
  %cos = math.cos %emb : tensor<?x?x16xf32>
  %sin = math.sin %emb : tensor<?x?x16xf32>
  %e4 = tensor.empty(%B, %S) : tensor<?x4x?x16xf32>
  %cosb = linalg.broadcast ins(%cos : tensor<?x?x16xf32>) outs(%e4 : tensor<?x4x?x16xf32>) dimensions = [1]
  %sinb = linalg.broadcast ins(%sin : tensor<?x?x16xf32>) outs(%e4 : tensor<?x4x?x16xf32>) dimensions = [1]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [%B, 4, %S, 8] [1, 1, 1, 1] : tensor<?x4x?x16xf32> to tensor<?x4x?x8xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 8] [%B, 4, %S, 8] [1, 1, 1, 1] : tensor<?x4x?x16xf32> to tensor<?x4x?x8xf32>
  %nx2 = arith.negf %x2 : tensor<?x4x?x8xf32>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<?x4x?x8xf32>, tensor<?x4x?x8xf32>) -> tensor<?x4x?x16xf32>
  %a = arith.mulf %x, %cosb : tensor<?x4x?x16xf32>
  %b = arith.mulf %rh, %sinb : tensor<?x4x?x16xf32>
  %y = arith.addf %a, %b : tensor<?x4x?x16xf32>
  return %y : tensor<?x4x?x16xf32>
}

// -----

// Gemma 3 in bf16: a local table (theta 1e4) and a global one (theta 1e6, linear scaling 8)
// from the same positions, the tables computed in f32 and truncated. Each rotation fuses
// with its own table's attributes.
// CHECK-LABEL: func.func @gemma3_local_and_global_tables_bf16
// CHECK-SAME: (%[[QL:.*]]: tensor<?x?x2x16xbf16>, %[[QG:.*]]: tensor<?x?x2x16xbf16>, %[[POS:.*]]: tensor<?x?xi64>)
// CHECK: %[[L:.*]] = "tessera.rope.apply"(%[[QL]], %[[POS]]) {layout = "half_split", rotary_dim = 16 : i64, scaling = 1.000000e+00 : f32, theta = 1.000000e+04 : f32} : (tensor<?x?x2x16xbf16>, tensor<?x?xi64>) -> tensor<?x?x2x16xbf16>
// CHECK: %[[LT:.*]] = linalg.transpose ins(%[[L]] : tensor<?x?x2x16xbf16>)
// CHECK: %[[G:.*]] = "tessera.rope.apply"(%[[QG]], %[[POS]]) {layout = "half_split", rotary_dim = 16 : i64, scaling = 8.000000e+00 : f32, theta = 1.000000e+06 : f32} : (tensor<?x?x2x16xbf16>, tensor<?x?xi64>) -> tensor<?x?x2x16xbf16>
// CHECK: %[[GT:.*]] = linalg.transpose ins(%[[G]] : tensor<?x?x2x16xbf16>)
// CHECK-NOT: math.
// CHECK: return %[[LT]], %[[GT]]
func.func @gemma3_local_and_global_tables_bf16(%ql: tensor<?x?x2x16xbf16>, %qg: tensor<?x?x2x16xbf16>, %pos: tensor<?x?xi64>) -> (tensor<?x2x?x16xbf16>, tensor<?x2x?x16xbf16>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %B = tensor.dim %ql, %c0 : tensor<?x?x2x16xbf16>
  %S = tensor.dim %ql, %c1 : tensor<?x?x2x16xbf16>
  %pf = arith.sitofp %pos : tensor<?x?xi64> to tensor<?x?xf32>
  %e3 = tensor.empty(%B, %S) : tensor<?x?x8xf32>
  %pb = linalg.broadcast ins(%pf : tensor<?x?xf32>) outs(%e3 : tensor<?x?x8xf32>) dimensions = [2]
  %e4 = tensor.empty(%B, %S) : tensor<?x2x?x16xbf16>

  %inv_local = arith.constant dense<[1.0, 0.316227764, 0.100000001, 0.0316227786, 0.00999999978, 0.00316227786, 0.00100000005, 0.000316227786]> : tensor<8xf32>
  %il = linalg.broadcast ins(%inv_local : tensor<8xf32>) outs(%e3 : tensor<?x?x8xf32>) dimensions = [0, 1]
  %fl = arith.mulf %pb, %il : tensor<?x?x8xf32>
  %el = tensor.concat dim(2) %fl, %fl : (tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x16xf32>
  %cl = math.cos %el : tensor<?x?x16xf32>
  %sl = math.sin %el : tensor<?x?x16xf32>
  %cl16 = arith.truncf %cl : tensor<?x?x16xf32> to tensor<?x?x16xbf16>
  %sl16 = arith.truncf %sl : tensor<?x?x16xf32> to tensor<?x?x16xbf16>
  %clb = linalg.broadcast ins(%cl16 : tensor<?x?x16xbf16>) outs(%e4 : tensor<?x2x?x16xbf16>) dimensions = [1]
  %slb = linalg.broadcast ins(%sl16 : tensor<?x?x16xbf16>) outs(%e4 : tensor<?x2x?x16xbf16>) dimensions = [1]

  %inv_global = arith.constant dense<[0.125, 0.0222284924, 0.00395284733, 0.000702926656, 0.000125000006, 2.22284925e-05, 3.95284678e-06, 7.02926684e-07]> : tensor<8xf32>
  %ig = linalg.broadcast ins(%inv_global : tensor<8xf32>) outs(%e3 : tensor<?x?x8xf32>) dimensions = [0, 1]
  %fg = arith.mulf %pb, %ig : tensor<?x?x8xf32>
  %eg = tensor.concat dim(2) %fg, %fg : (tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x16xf32>
  %cg = math.cos %eg : tensor<?x?x16xf32>
  %sg = math.sin %eg : tensor<?x?x16xf32>
  %cg16 = arith.truncf %cg : tensor<?x?x16xf32> to tensor<?x?x16xbf16>
  %sg16 = arith.truncf %sg : tensor<?x?x16xf32> to tensor<?x?x16xbf16>
  %cgb = linalg.broadcast ins(%cg16 : tensor<?x?x16xbf16>) outs(%e4 : tensor<?x2x?x16xbf16>) dimensions = [1]
  %sgb = linalg.broadcast ins(%sg16 : tensor<?x?x16xbf16>) outs(%e4 : tensor<?x2x?x16xbf16>) dimensions = [1]

  %xl = linalg.transpose ins(%ql : tensor<?x?x2x16xbf16>) outs(%e4 : tensor<?x2x?x16xbf16>) permutation = [0, 2, 1, 3]
  %l1 = tensor.extract_slice %xl[0, 0, 0, 0] [%B, 2, %S, 8] [1, 1, 1, 1] : tensor<?x2x?x16xbf16> to tensor<?x2x?x8xbf16>
  %l2 = tensor.extract_slice %xl[0, 0, 0, 8] [%B, 2, %S, 8] [1, 1, 1, 1] : tensor<?x2x?x16xbf16> to tensor<?x2x?x8xbf16>
  %nl2 = arith.negf %l2 : tensor<?x2x?x8xbf16>
  %rl = tensor.concat dim(3) %nl2, %l1 : (tensor<?x2x?x8xbf16>, tensor<?x2x?x8xbf16>) -> tensor<?x2x?x16xbf16>
  %al = arith.mulf %xl, %clb : tensor<?x2x?x16xbf16>
  %bl = arith.mulf %rl, %slb : tensor<?x2x?x16xbf16>
  %yl = arith.addf %al, %bl : tensor<?x2x?x16xbf16>

  %xg = linalg.transpose ins(%qg : tensor<?x?x2x16xbf16>) outs(%e4 : tensor<?x2x?x16xbf16>) permutation = [0, 2, 1, 3]
  %g1 = tensor.extract_slice %xg[0, 0, 0, 0] [%B, 2, %S, 8] [1, 1, 1, 1] : tensor<?x2x?x16xbf16> to tensor<?x2x?x8xbf16>
  %g2 = tensor.extract_slice %xg[0, 0, 0, 8] [%B, 2, %S, 8] [1, 1, 1, 1] : tensor<?x2x?x16xbf16> to tensor<?x2x?x8xbf16>
  %ng2 = arith.negf %g2 : tensor<?x2x?x8xbf16>
  %rg = tensor.concat dim(3) %ng2, %g1 : (tensor<?x2x?x8xbf16>, tensor<?x2x?x8xbf16>) -> tensor<?x2x?x16xbf16>
  %ag = arith.mulf %xg, %cgb : tensor<?x2x?x16xbf16>
  %bg = arith.mulf %rg, %sgb : tensor<?x2x?x16xbf16>
  %yg = arith.addf %ag, %bg : tensor<?x2x?x16xbf16>
  return %yl, %yg : tensor<?x2x?x16xbf16>, tensor<?x2x?x16xbf16>
}

// -----

// Static shapes, x already [B, S, H, D] (tables broadcast over axis 2), i32 positions, the
// frequencies as Hugging Face computes them (inv_freq[:, None] against positions[None, :],
// then transposed), and the sum and products written the other way round. No transposes.
// CHECK-LABEL: func.func @rope_bshd_static_commuted
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x2x8xf32>, %[[POS:.*]]: tensor<2x8xi32>)
// CHECK-NEXT: %[[R:.*]] = "tessera.rope.apply"(%[[X]], %[[POS]]) {layout = "half_split", rotary_dim = 8 : i64, scaling = 1.000000e+00 : f32, theta = 1.000000e+04 : f32} : (tensor<2x8x2x8xf32>, tensor<2x8xi32>) -> tensor<2x8x2x8xf32>
// CHECK-NEXT: return %[[R]]
func.func @rope_bshd_static_commuted(%x: tensor<2x8x2x8xf32>, %pos: tensor<2x8xi32>) -> tensor<2x8x2x8xf32> {
  %inv = arith.constant dense<[1.0, 0.100000001, 0.00999999978, 0.00100000005]> : tensor<4xf32>
  %p3 = tensor.expand_shape %pos [[0, 1], [2]] output_shape [2, 1, 8] : tensor<2x8xi32> into tensor<2x1x8xi32>
  %pf = arith.sitofp %p3 : tensor<2x1x8xi32> to tensor<2x1x8xf32>
  %pf2 = tensor.collapse_shape %pf [[0, 1], [2]] : tensor<2x1x8xf32> into tensor<2x8xf32>
  %e3 = tensor.empty() : tensor<2x4x8xf32>
  %pb = linalg.broadcast ins(%pf2 : tensor<2x8xf32>) outs(%e3 : tensor<2x4x8xf32>) dimensions = [1]
  %ib = linalg.broadcast ins(%inv : tensor<4xf32>) outs(%e3 : tensor<2x4x8xf32>) dimensions = [0, 2]
  %ft = arith.mulf %ib, %pb : tensor<2x4x8xf32>
  %et = tensor.empty() : tensor<2x8x4xf32>
  %f = linalg.transpose ins(%ft : tensor<2x4x8xf32>) outs(%et : tensor<2x8x4xf32>) permutation = [0, 2, 1]
  %emb = tensor.concat dim(2) %f, %f : (tensor<2x8x4xf32>, tensor<2x8x4xf32>) -> tensor<2x8x8xf32>
  %cos = math.cos %emb : tensor<2x8x8xf32>
  %sin = math.sin %emb : tensor<2x8x8xf32>
  %e4 = tensor.empty() : tensor<2x8x2x8xf32>
  %cosb = linalg.broadcast ins(%cos : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %sinb = linalg.broadcast ins(%sin : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %nx2 = arith.negf %x2 : tensor<2x8x2x4xf32>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> tensor<2x8x2x8xf32>
  %a = arith.mulf %cosb, %x : tensor<2x8x2x8xf32>
  %b = arith.mulf %sinb, %rh : tensor<2x8x2x8xf32>
  %y = arith.addf %b, %a : tensor<2x8x2x8xf32>
  return %y : tensor<2x8x2x8xf32>
}

// -----

// x [B, H, S, D] is a function argument, not a transpose: transposes go on both sides. The
// positions are one row for the whole batch ([1, S], as Hugging Face passes them), so they
// are broadcast to [B, S] for rope.apply.
// CHECK-LABEL: func.func @rope_inserts_transposes_and_broadcasts_positions
// CHECK-SAME: (%[[X:.*]]: tensor<?x2x?x8xf32>, %[[POS:.*]]: tensor<1x?xi64>)
// CHECK: %[[XT:.*]] = linalg.transpose ins(%[[X]] : tensor<?x2x?x8xf32>) outs(%{{.*}} : tensor<?x?x2x8xf32>) permutation = [0, 2, 1, 3]
// CHECK: %[[ROW:.*]] = tensor.collapse_shape %[[POS]] {{\[}}[0, 1]] : tensor<1x?xi64> into tensor<?xi64>
// CHECK: %[[P:.*]] = linalg.broadcast ins(%[[ROW]] : tensor<?xi64>) outs(%{{.*}} : tensor<?x?xi64>) dimensions = [0]
// CHECK: %[[R:.*]] = "tessera.rope.apply"(%[[XT]], %[[P]]) {layout = "half_split", rotary_dim = 8 : i64, scaling = 1.000000e+00 : f32, theta = 1.000000e+04 : f32} : (tensor<?x?x2x8xf32>, tensor<?x?xi64>) -> tensor<?x?x2x8xf32>
// CHECK: %[[Y:.*]] = linalg.transpose ins(%[[R]] : tensor<?x?x2x8xf32>) outs(%{{.*}} : tensor<?x2x?x8xf32>) permutation = [0, 2, 1, 3]
// CHECK-NEXT: return %[[Y]]
func.func @rope_inserts_transposes_and_broadcasts_positions(%x: tensor<?x2x?x8xf32>, %pos: tensor<1x?xi64>) -> tensor<?x2x?x8xf32> {
  %c0 = arith.constant 0 : index
  %c2 = arith.constant 2 : index
  %B = tensor.dim %x, %c0 : tensor<?x2x?x8xf32>
  %S = tensor.dim %x, %c2 : tensor<?x2x?x8xf32>
  %inv = arith.constant dense<[1.0, 0.100000001, 0.00999999978, 0.00100000005]> : tensor<4xf32>
  %pf = arith.sitofp %pos : tensor<1x?xi64> to tensor<1x?xf32>
  %e3 = tensor.empty(%S) : tensor<1x?x4xf32>
  %pb = linalg.broadcast ins(%pf : tensor<1x?xf32>) outs(%e3 : tensor<1x?x4xf32>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<4xf32>) outs(%e3 : tensor<1x?x4xf32>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<1x?x4xf32>
  %emb = tensor.concat dim(2) %f, %f : (tensor<1x?x4xf32>, tensor<1x?x4xf32>) -> tensor<1x?x8xf32>
  %cos = math.cos %emb : tensor<1x?x8xf32>
  %sin = math.sin %emb : tensor<1x?x8xf32>
  %cos2 = tensor.collapse_shape %cos [[0, 1], [2]] : tensor<1x?x8xf32> into tensor<?x8xf32>
  %sin2 = tensor.collapse_shape %sin [[0, 1], [2]] : tensor<1x?x8xf32> into tensor<?x8xf32>
  %e4 = tensor.empty(%B, %S) : tensor<?x2x?x8xf32>
  %cosb = linalg.broadcast ins(%cos2 : tensor<?x8xf32>) outs(%e4 : tensor<?x2x?x8xf32>) dimensions = [0, 1]
  %sinb = linalg.broadcast ins(%sin2 : tensor<?x8xf32>) outs(%e4 : tensor<?x2x?x8xf32>) dimensions = [0, 1]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [%B, 2, %S, 4] [1, 1, 1, 1] : tensor<?x2x?x8xf32> to tensor<?x2x?x4xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [%B, 2, %S, 4] [1, 1, 1, 1] : tensor<?x2x?x8xf32> to tensor<?x2x?x4xf32>
  %nx2 = arith.negf %x2 : tensor<?x2x?x4xf32>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<?x2x?x4xf32>, tensor<?x2x?x4xf32>) -> tensor<?x2x?x8xf32>
  %a = arith.mulf %x, %cosb : tensor<?x2x?x8xf32>
  %b = arith.mulf %rh, %sinb : tensor<?x2x?x8xf32>
  %y = arith.addf %a, %b : tensor<?x2x?x8xf32>
  return %y : tensor<?x2x?x8xf32>
}

// -----

// Positions as the front end writes position_ids[..., None]: an iota generic of [1, S, 1]
// (no [B, S] tensor exists), bf16-rounded frequencies held in an f32 constant (a bf16 model
// casts its inv_freq buffer), tables multiplied by an attention scaling of 1. The iota is
// reshaped to [1, S] and broadcast to [B, S]; theta is still exactly 1e4.
// CHECK-LABEL: func.func @rope_positions_from_an_iota_bf16
// CHECK-SAME: (%[[XS:.*]]: tensor<?x?x1x8xbf16>)
// CHECK: %[[IOTA:.*]] = linalg.generic
// CHECK: %[[ROWS:.*]] = tensor.collapse_shape %[[IOTA]] {{\[}}[0], [1, 2]] : tensor<1x?x1xi64> into tensor<1x?xi64>
// CHECK: %[[ROW:.*]] = tensor.collapse_shape %[[ROWS]] {{\[}}[0, 1]] : tensor<1x?xi64> into tensor<?xi64>
// CHECK: %[[POS:.*]] = linalg.broadcast ins(%[[ROW]] : tensor<?xi64>) outs(%{{.*}} : tensor<?x?xi64>) dimensions = [0]
// CHECK: %[[R:.*]] = "tessera.rope.apply"(%[[XS]], %[[POS]]) {layout = "half_split", rotary_dim = 8 : i64, scaling = 1.000000e+00 : f32, theta = 1.000000e+04 : f32} : (tensor<?x?x1x8xbf16>, tensor<?x?xi64>) -> tensor<?x?x1x8xbf16>
// CHECK: %[[Y:.*]] = linalg.transpose ins(%[[R]] : tensor<?x?x1x8xbf16>)
// CHECK-NOT: math.
// CHECK: return %[[Y]]
func.func @rope_positions_from_an_iota_bf16(%xs: tensor<?x?x1x8xbf16>) -> tensor<?x1x?x8xbf16> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %one = arith.constant 1.000000e+00 : f32
  %B = tensor.dim %xs, %c0 : tensor<?x?x1x8xbf16>
  %S = tensor.dim %xs, %c1 : tensor<?x?x1x8xbf16>
  %inv = arith.constant dense<[1.000000e+00, 0.100097656, 0.010009765625, 0.00099945068359375]> : tensor<4xf32>
  %i0 = tensor.empty(%S) : tensor<1x?x1xi64>
  %iota = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} outs(%i0 : tensor<1x?x1xi64>) {
  ^bb0(%out: i64):
    %t = linalg.index 1 : index
    %ti = arith.index_cast %t : index to i64
    linalg.yield %ti : i64
  } -> tensor<1x?x1xi64>
  %pf = arith.sitofp %iota : tensor<1x?x1xi64> to tensor<1x?x1xf32>
  %pc = tensor.collapse_shape %pf [[0], [1, 2]] : tensor<1x?x1xf32> into tensor<1x?xf32>
  %e3 = tensor.empty(%S) : tensor<1x?x4xf32>
  %pb = linalg.broadcast ins(%pc : tensor<1x?xf32>) outs(%e3 : tensor<1x?x4xf32>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<4xf32>) outs(%e3 : tensor<1x?x4xf32>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<1x?x4xf32>
  %emb = tensor.concat dim(2) %f, %f : (tensor<1x?x4xf32>, tensor<1x?x4xf32>) -> tensor<1x?x8xf32>
  %cos0 = math.cos %emb : tensor<1x?x8xf32>
  %sin0 = math.sin %emb : tensor<1x?x8xf32>
  %e8 = tensor.empty(%S) : tensor<1x?x8xf32>
  %ones = linalg.fill ins(%one : f32) outs(%e8 : tensor<1x?x8xf32>) -> tensor<1x?x8xf32>
  %cos1 = arith.mulf %cos0, %ones : tensor<1x?x8xf32>
  %sin1 = arith.mulf %sin0, %ones : tensor<1x?x8xf32>
  %cos = arith.truncf %cos1 : tensor<1x?x8xf32> to tensor<1x?x8xbf16>
  %sin = arith.truncf %sin1 : tensor<1x?x8xf32> to tensor<1x?x8xbf16>
  %cos2 = tensor.collapse_shape %cos [[0, 1], [2]] : tensor<1x?x8xbf16> into tensor<?x8xbf16>
  %sin2 = tensor.collapse_shape %sin [[0, 1], [2]] : tensor<1x?x8xbf16> into tensor<?x8xbf16>
  %e4 = tensor.empty(%B, %S) : tensor<?x1x?x8xbf16>
  %cosb = linalg.broadcast ins(%cos2 : tensor<?x8xbf16>) outs(%e4 : tensor<?x1x?x8xbf16>) dimensions = [0, 1]
  %sinb = linalg.broadcast ins(%sin2 : tensor<?x8xbf16>) outs(%e4 : tensor<?x1x?x8xbf16>) dimensions = [0, 1]
  %x = linalg.transpose ins(%xs : tensor<?x?x1x8xbf16>) outs(%e4 : tensor<?x1x?x8xbf16>) permutation = [0, 2, 1, 3]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [%B, 1, %S, 4] [1, 1, 1, 1] : tensor<?x1x?x8xbf16> to tensor<?x1x?x4xbf16>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [%B, 1, %S, 4] [1, 1, 1, 1] : tensor<?x1x?x8xbf16> to tensor<?x1x?x4xbf16>
  %nx2 = arith.negf %x2 : tensor<?x1x?x4xbf16>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<?x1x?x4xbf16>, tensor<?x1x?x4xbf16>) -> tensor<?x1x?x8xbf16>
  %a = arith.mulf %x, %cosb : tensor<?x1x?x8xbf16>
  %b = arith.mulf %rh, %sinb : tensor<?x1x?x8xbf16>
  %y = arith.addf %a, %b : tensor<?x1x?x8xbf16>
  return %y : tensor<?x1x?x8xbf16>
}

// -----

// cos and sin multiplied by an attention scaling factor (1.5): not a pure rotation.
// CHECK-LABEL: func.func @no_fusion_when_the_tables_are_scaled
// CHECK-NOT: tessera.rope.apply
// CHECK: math.cos
func.func @no_fusion_when_the_tables_are_scaled(%x: tensor<2x8x2x8xf32>, %pos: tensor<2x8xi32>) -> tensor<2x8x2x8xf32> {
  %inv = arith.constant dense<[1.0, 0.100000001, 0.00999999978, 0.00100000005]> : tensor<4xf32>
  %factor = arith.constant dense<1.500000e+00> : tensor<2x8x8xf32>
  %pf = arith.sitofp %pos : tensor<2x8xi32> to tensor<2x8xf32>
  %e3 = tensor.empty() : tensor<2x8x4xf32>
  %pb = linalg.broadcast ins(%pf : tensor<2x8xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<4xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<2x8x4xf32>
  %emb = tensor.concat dim(2) %f, %f : (tensor<2x8x4xf32>, tensor<2x8x4xf32>) -> tensor<2x8x8xf32>
  %cos0 = math.cos %emb : tensor<2x8x8xf32>
  %sin0 = math.sin %emb : tensor<2x8x8xf32>
  %cos = arith.mulf %cos0, %factor : tensor<2x8x8xf32>
  %sin = arith.mulf %sin0, %factor : tensor<2x8x8xf32>
  %e4 = tensor.empty() : tensor<2x8x2x8xf32>
  %cosb = linalg.broadcast ins(%cos : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %sinb = linalg.broadcast ins(%sin : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %nx2 = arith.negf %x2 : tensor<2x8x2x4xf32>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> tensor<2x8x2x8xf32>
  %a = arith.mulf %x, %cosb : tensor<2x8x2x8xf32>
  %b = arith.mulf %rh, %sinb : tensor<2x8x2x8xf32>
  %y = arith.addf %a, %b : tensor<2x8x2x8xf32>
  return %y : tensor<2x8x2x8xf32>
}

// -----

// Frequencies that are not theta^(-2i/d) / scaling (the third one is off by 30%, as in a
// rescaled rope): no theta describes them.
// CHECK-LABEL: func.func @no_fusion_when_the_frequencies_are_not_geometric
// CHECK-NOT: tessera.rope.apply
// CHECK: math.cos
func.func @no_fusion_when_the_frequencies_are_not_geometric(%x: tensor<2x8x2x8xf32>, %pos: tensor<2x8xi32>) -> tensor<2x8x2x8xf32> {
  %inv = arith.constant dense<[1.0, 0.100000001, 0.00699999999, 0.00100000005]> : tensor<4xf32>
  %pf = arith.sitofp %pos : tensor<2x8xi32> to tensor<2x8xf32>
  %e3 = tensor.empty() : tensor<2x8x4xf32>
  %pb = linalg.broadcast ins(%pf : tensor<2x8xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<4xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<2x8x4xf32>
  %emb = tensor.concat dim(2) %f, %f : (tensor<2x8x4xf32>, tensor<2x8x4xf32>) -> tensor<2x8x8xf32>
  %cos = math.cos %emb : tensor<2x8x8xf32>
  %sin = math.sin %emb : tensor<2x8x8xf32>
  %e4 = tensor.empty() : tensor<2x8x2x8xf32>
  %cosb = linalg.broadcast ins(%cos : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %sinb = linalg.broadcast ins(%sin : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %nx2 = arith.negf %x2 : tensor<2x8x2x4xf32>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> tensor<2x8x2x8xf32>
  %a = arith.mulf %x, %cosb : tensor<2x8x2x8xf32>
  %b = arith.mulf %rh, %sinb : tensor<2x8x2x8xf32>
  %y = arith.addf %a, %b : tensor<2x8x2x8xf32>
  return %y : tensor<2x8x2x8xf32>
}

// -----

// concat(x[..., d/2:], -x[..., :d/2]) rotates the other way: not rotate_half.
// CHECK-LABEL: func.func @no_fusion_when_the_negated_half_is_the_wrong_one
// CHECK-NOT: tessera.rope.apply
// CHECK: math.cos
func.func @no_fusion_when_the_negated_half_is_the_wrong_one(%x: tensor<2x8x2x8xf32>, %pos: tensor<2x8xi32>) -> tensor<2x8x2x8xf32> {
  %inv = arith.constant dense<[1.0, 0.100000001, 0.00999999978, 0.00100000005]> : tensor<4xf32>
  %pf = arith.sitofp %pos : tensor<2x8xi32> to tensor<2x8xf32>
  %e3 = tensor.empty() : tensor<2x8x4xf32>
  %pb = linalg.broadcast ins(%pf : tensor<2x8xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<4xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<2x8x4xf32>
  %emb = tensor.concat dim(2) %f, %f : (tensor<2x8x4xf32>, tensor<2x8x4xf32>) -> tensor<2x8x8xf32>
  %cos = math.cos %emb : tensor<2x8x8xf32>
  %sin = math.sin %emb : tensor<2x8x8xf32>
  %e4 = tensor.empty() : tensor<2x8x2x8xf32>
  %cosb = linalg.broadcast ins(%cos : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %sinb = linalg.broadcast ins(%sin : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %nx1 = arith.negf %x1 : tensor<2x8x2x4xf32>
  %rh = tensor.concat dim(3) %x2, %nx1 : (tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> tensor<2x8x2x8xf32>
  %a = arith.mulf %x, %cosb : tensor<2x8x2x8xf32>
  %b = arith.mulf %rh, %sinb : tensor<2x8x2x8xf32>
  %y = arith.addf %a, %b : tensor<2x8x2x8xf32>
  return %y : tensor<2x8x2x8xf32>
}

// -----

// rotate_half(x) is also returned: fusing would lose it.
// CHECK-LABEL: func.func @no_fusion_when_rotate_half_has_a_second_user
// CHECK-NOT: tessera.rope.apply
// CHECK: math.cos
func.func @no_fusion_when_rotate_half_has_a_second_user(%x: tensor<2x8x2x8xf32>, %pos: tensor<2x8xi32>) -> (tensor<2x8x2x8xf32>, tensor<2x8x2x8xf32>) {
  %inv = arith.constant dense<[1.0, 0.100000001, 0.00999999978, 0.00100000005]> : tensor<4xf32>
  %pf = arith.sitofp %pos : tensor<2x8xi32> to tensor<2x8xf32>
  %e3 = tensor.empty() : tensor<2x8x4xf32>
  %pb = linalg.broadcast ins(%pf : tensor<2x8xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [2]
  %ib = linalg.broadcast ins(%inv : tensor<4xf32>) outs(%e3 : tensor<2x8x4xf32>) dimensions = [0, 1]
  %f = arith.mulf %pb, %ib : tensor<2x8x4xf32>
  %emb = tensor.concat dim(2) %f, %f : (tensor<2x8x4xf32>, tensor<2x8x4xf32>) -> tensor<2x8x8xf32>
  %cos = math.cos %emb : tensor<2x8x8xf32>
  %sin = math.sin %emb : tensor<2x8x8xf32>
  %e4 = tensor.empty() : tensor<2x8x2x8xf32>
  %cosb = linalg.broadcast ins(%cos : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %sinb = linalg.broadcast ins(%sin : tensor<2x8x8xf32>) outs(%e4 : tensor<2x8x2x8xf32>) dimensions = [2]
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %nx2 = arith.negf %x2 : tensor<2x8x2x4xf32>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> tensor<2x8x2x8xf32>
  %a = arith.mulf %x, %cosb : tensor<2x8x2x8xf32>
  %b = arith.mulf %rh, %sinb : tensor<2x8x2x8xf32>
  %y = arith.addf %a, %b : tensor<2x8x2x8xf32>
  return %y, %rh : tensor<2x8x2x8xf32>, tensor<2x8x2x8xf32>
}

// -----

// Tables passed in as arguments have no positions to rotate by.
// CHECK-LABEL: func.func @no_fusion_when_the_tables_are_arguments
// CHECK-NOT: tessera.rope.apply
// CHECK: arith.addf
func.func @no_fusion_when_the_tables_are_arguments(%x: tensor<2x8x2x8xf32>, %cosb: tensor<2x8x2x8xf32>, %sinb: tensor<2x8x2x8xf32>) -> tensor<2x8x2x8xf32> {
  %x1 = tensor.extract_slice %x[0, 0, 0, 0] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %x2 = tensor.extract_slice %x[0, 0, 0, 4] [2, 8, 2, 4] [1, 1, 1, 1] : tensor<2x8x2x8xf32> to tensor<2x8x2x4xf32>
  %nx2 = arith.negf %x2 : tensor<2x8x2x4xf32>
  %rh = tensor.concat dim(3) %nx2, %x1 : (tensor<2x8x2x4xf32>, tensor<2x8x2x4xf32>) -> tensor<2x8x2x8xf32>
  %a = arith.mulf %x, %cosb : tensor<2x8x2x8xf32>
  %b = arith.mulf %rh, %sinb : tensor<2x8x2x8xf32>
  %y = arith.addf %a, %b : tensor<2x8x2x8xf32>
  return %y : tensor<2x8x2x8xf32>
}
