// Operators that run on compressed weights (see sparse_ops.cpp).
#pragma once

#include "engine/op.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

// Weight densities above which the dense path (OpenBLAS) is used instead of the sparse kernels,
// measured with `sparrow bench --crossover` (4096 x 4096, 4-bit codes, dense inputs, one thread,
// AVX-512; docs/engine.md): one sample at a time, the CSC walk and dense are equal at density
// 0.5, while the column tiles are still 2.3-3.1x faster than dense at 0.8; batches of 64 are still
// 2.1-2.8x faster on the sparse kernels at 0.8 (three runs).
inline constexpr double kSparseMaxDensityOneSample = 0.45;
inline constexpr double kSparseMaxDensityOneSampleTiles = 0.8;
inline constexpr double kSparseMaxDensityBatched = 0.8;

// A fully connected layer runs its samples one at a time (EIE's column walk) below this batch, and
// as one product over the batch from it on.
inline constexpr int64_t kSparseFcBatchedFrom = 4;

// Whether the sparse engine runs this node's attributes (Gemm with transA = 0 and alpha = 1,
// MatMul, ungrouped Conv); the others run dense.
bool sparse_op_supports(const Node& node);

// The sparse op for a Gemm/MatMul/Conv node whose weight is `m`, splitting work over `threads`, or
// nullptr when the node's attributes are not supported sparsely (the dense op is then used).
Result<std::unique_ptr<Op>> create_sparse_op(const Node& node, int64_t opset, const SparseMatrix& m,
                                             int threads);

// An LSTM whose W and/or R (nullptr: dense) run on the sparse engine.
Result<std::unique_ptr<Op>> create_sparse_lstm_op(const Node& node, int64_t opset, const SparseMatrix* w,
                                                  const SparseMatrix* r, int threads);

}  // namespace sparrow
