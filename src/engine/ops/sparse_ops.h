// Operators that run on compressed weights (see sparse_ops.cpp).
#pragma once

#include "engine/op.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

// Weight densities above which a layer runs dense (oneDNN's sgemm) instead of on the sparse kernels: one
// sample on the column walks, one sample on the column tiles, batches. Set from `sparrow bench
// --crossover` (docs/engine.md, "Dense fallback and the choice of layout").
inline constexpr double kSparseMaxDensityOneSample = 0.45;
inline constexpr double kSparseMaxDensityOneSampleTiles = 0.8;
inline constexpr double kSparseMaxDensityBatched = 0.8;

// A fully connected layer runs its samples one at a time (EIE's column walk) below this batch, and
// as one product over the batch from it on.
inline constexpr int64_t kSparseFcBatchedFrom = 4;
// Samples per panel of a batched fully connected product: its [cols, 32] block of Xt for 256
// columns of the weights (the CSR block width at 10% density) is 32 KiB, within L1.
inline constexpr int64_t kSparseFcPanel = 32;

// A convolution of several images whose output planes hold fewer positions than this runs as one
// product over all the images' positions (the CSR kernel wants at least 64 columns per entry); so
// does one image whose plane holds 16 positions or fewer (their wide rows in the padded plane
// would need a second, masked chunk).
inline constexpr int64_t kConvGatherBelowPositions = 64;
// Most positions (images x plane) in one gathered product.
inline constexpr int64_t kConvGatherMostPositions = 1024;

// Output positions per thread from which a pointwise convolution may split its positions over the
// threads instead of its filters.
inline constexpr int64_t kPointwiseSplitPositionsFrom = 64;

// Output rows from which a direct (not pointwise) convolution without a fused residual multiplies
// each output row straight into its output instead of into a wide plane that is then copied.
inline constexpr int64_t kConvRowsInPlaceFromWidth = 96;

// A convolution (group 1) whose input holds at most this many positions in all (images x input
// plane) runs each output position as one sample on the one-sample walks (VGG-11's 2x2 planes at
// batch 1 and in chunks of 2 images), not as a batched product a few lanes wide.
inline constexpr int64_t kConvPerPositionMost = 8;
bool sparse_conv_per_position(const Node& node, const Shape& input);

// Whether the sparse engine runs this node, given its first input's shape and its weight's header:
// Gemm with transA = 0 and alpha = 1, MatMul, Conv with group 1, and a grouped Conv whose groups
// hold several input channels each (depthwise ones run on the dense executor's depthwise kernels)
// and, where the weight runs on row blocks, a multiple of kBlockRows filters each. The others run
// dense.
bool sparse_op_supports(const Node& node, const Shape& input, const SparseMatrix& header);

// The sparse op for a Gemm/MatMul/Conv node whose weight is `m` (sparse_op_supports holds),
// splitting work over `threads`.
Result<std::unique_ptr<Op>> create_sparse_op(const Node& node, int64_t opset, const SparseMatrix& m,
                                             int threads);

// The matrix of a sparse op that runs a pointwise convolution (1x1, stride 1, no padding, group 1,
// no fused residual) image by image on the batched kernel, reading each image's input planes in
// place; null for any other op.
const SparseMatrix* sparse_pointwise_matrix(const Op& op);

// dst[cols, rows] = src[rows, cols]ᵀ (transpose) or dst += it (transpose_add), in 8 x 8 tiles
// split over the pool: the batched sparse products take their inputs and give their outputs with
// the batch along rows.
void transpose(ThreadPool& pool, const float* src, int64_t rows, int64_t cols, float* dst);
void transpose_add(ThreadPool& pool, const float* src, int64_t rows, int64_t cols, float* dst);

// What a batched fully connected product applies to its outputs while their rows are in cache:
// y = act(y + bias_scale * bias[row]) (no bias when null): Gemm's bias and beta, a fused activation.
struct ProductEpilogue {
  const float* bias = nullptr;
  float bias_scale = 1.0f;
  Activation act;
  bool none() const { return !bias && act.none(); }
};

// y[n, m.rows] = epilogue(x[n, m.cols] Wᵀ) (both row-major) in panels of kSparseFcPanel samples:
// each panel is transposed, multiplied on the CSR kernel, given the epilogue and transposed back.
// With at least as many panels as threads, each thread runs whole panels; with fewer, the threads
// split each panel's rows by `bounds` (balanced_row_bounds), each thread transposing the panel
// into a copy of its own and writing back only the rows it multiplied: no thread reads another's
// Xt or Yt. `scratch` holds sparse_product_by_panels_scratch(m, n, pool.size()) floats, each
// thread's part starting on a 64-byte line when the scratch does.
void sparse_product_by_panels(ThreadPool& pool, const SparseMatrix& m, const std::vector<int64_t>& bounds,
                              const float* x, int64_t n, float* y, float* scratch,
                              const ProductEpilogue& epilogue = {});
int64_t sparse_product_by_panels_scratch(const SparseMatrix& m, int64_t n, int threads);

// An LSTM whose W and/or R (nullptr: dense) run on the sparse engine.
Result<std::unique_ptr<Op>> create_sparse_lstm_op(const Node& node, int64_t opset, const SparseMatrix* w,
                                                  const SparseMatrix* r, int threads);

}  // namespace sparrow
