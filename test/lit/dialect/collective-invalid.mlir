// RUN: tessera-opt %s --split-input-file --verify-diagnostics

func.func @all_reduce_result_type(%x: tensor<?x8xf32>, %c: tensor<1xi64>) -> tensor<?x8xbf16> {
  // expected-error@+1 {{result type tensor<?x8xbf16> must match x's type tensor<?x8xf32>}}
  %0 = "tessera.collective.all_reduce"(%x, %c) {ranks = 2 : i64} : (tensor<?x8xf32>, tensor<1xi64>) -> tensor<?x8xbf16>
  return %0 : tensor<?x8xbf16>
}

// -----

func.func @all_reduce_needs_ranks(%x: tensor<?x8xf32>, %c: tensor<1xi64>) -> tensor<?x8xf32> {
  // expected-error@+1 {{requires attribute 'ranks'}}
  %0 = "tessera.collective.all_reduce"(%x, %c) : (tensor<?x8xf32>, tensor<1xi64>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

func.func @all_reduce_one_rank(%x: tensor<?x8xf32>, %c: tensor<1xi64>) -> tensor<?x8xf32> {
  // expected-error@+1 {{ranks must be at least 2, found 1}}
  %0 = "tessera.collective.all_reduce"(%x, %c) {ranks = 1 : i64} : (tensor<?x8xf32>, tensor<1xi64>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

func.func @all_reduce_communicator(%x: tensor<?x8xf32>, %c: tensor<2xi64>) -> tensor<?x8xf32> {
  // expected-error@+1 {{communicator must be tensor<1xi64>, found tensor<2xi64>}}
  %0 = "tessera.collective.all_reduce"(%x, %c) {ranks = 2 : i64} : (tensor<?x8xf32>, tensor<2xi64>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

func.func @all_reduce_sum_only(%x: tensor<?x8xf32>, %c: tensor<1xi64>) -> tensor<?x8xf32> {
  // expected-error@+1 {{attribute 'reduction' must be one of the strings "sum"}}
  %0 = "tessera.collective.all_reduce"(%x, %c) {ranks = 2 : i64, reduction = "max"} : (tensor<?x8xf32>, tensor<1xi64>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

func.func @all_gather_size(%x: tensor<?x?x8xf32>, %c: tensor<1xi64>) -> tensor<?x?x8xf32> {
  // expected-error@+1 {{result dim 2 is 8, expected 16}}
  %0 = "tessera.collective.all_gather"(%x, %c) {axis = 2 : i64, ranks = 2 : i64} : (tensor<?x?x8xf32>, tensor<1xi64>) -> tensor<?x?x8xf32>
  return %0 : tensor<?x?x8xf32>
}

// -----

func.func @all_gather_axis(%x: tensor<?x8xf32>, %c: tensor<1xi64>) -> tensor<?x16xf32> {
  // expected-error@+1 {{axis 2 is not an axis of x tensor<?x8xf32>}}
  %0 = "tessera.collective.all_gather"(%x, %c) {axis = 2 : i64, ranks = 2 : i64} : (tensor<?x8xf32>, tensor<1xi64>) -> tensor<?x16xf32>
  return %0 : tensor<?x16xf32>
}

// -----

func.func @all_gather_other_dims(%x: tensor<4x8xf32>, %c: tensor<1xi64>) -> tensor<5x16xf32> {
  // expected-error@+1 {{result dim 0 is 5, expected 4}}
  %0 = "tessera.collective.all_gather"(%x, %c) {axis = 1 : i64, ranks = 2 : i64} : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<5x16xf32>
  return %0 : tensor<5x16xf32>
}

// -----

func.func @all_gather_element_type(%x: tensor<4x8xf32>, %c: tensor<1xi64>) -> tensor<4x16xbf16> {
  // expected-error@+1 {{result tensor<4x16xbf16> must have x's rank and element type (tensor<4x8xf32>)}}
  %0 = "tessera.collective.all_gather"(%x, %c) {axis = 1 : i64, ranks = 2 : i64} : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x16xbf16>
  return %0 : tensor<4x16xbf16>
}

// -----

// Valid ops verify silently.
func.func @valid(%x: tensor<?x?x8xf32>, %c: tensor<1xi64>) -> tensor<?x?x16xf32> {
  %0 = "tessera.collective.all_reduce"(%x, %c) {ranks = 2 : i64, reduction = "sum"} : (tensor<?x?x8xf32>, tensor<1xi64>) -> tensor<?x?x8xf32>
  %1 = "tessera.collective.all_gather"(%0, %c) {axis = 2 : i64, ranks = 2 : i64} : (tensor<?x?x8xf32>, tensor<1xi64>) -> tensor<?x?x16xf32>
  return %1 : tensor<?x?x16xf32>
}
