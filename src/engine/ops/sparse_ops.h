// Operators that run on compressed weights (see sparse_ops.cpp).
#pragma once

#include "engine/op.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

// Above this weight density the dense path (OpenBLAS) is used instead of the sparse kernels.
// Measured with `sparrow bench --crossover` (see docs/engine.md).
inline constexpr double kSparseMaxDensity = 0.5;

// The sparse op for a Gemm/MatMul/Conv node whose weight is `m`, splitting work over `threads`, or
// nullptr when the node's attributes are not supported sparsely (the dense op is then used).
Result<std::unique_ptr<Op>> create_sparse_op(const Node& node, int64_t opset, const SparseMatrix& m, int threads);

}  // namespace sparrow
