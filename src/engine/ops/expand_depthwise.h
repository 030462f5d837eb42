// A sparse pointwise convolution that widens its input (an inverted residual block's expansion,
// MobileNetV2's) and the depthwise convolution that alone reads its output, run as one plan step
// over bands of output rows: each band's expanded rows are computed into a per-thread buffer that
// stays in cache, the depthwise convolution reads them there, and the expanded tensor is never
// written to memory (at 112 x 112 it is several MB, more than the L2 holds, and writing it then
// reading it back cost more than both products).
#pragma once

#include <memory>

#include "engine/op.h"
#include "engine/sparse/sparse_matrix.h"

namespace sparrow {

// Expanded planes of one image (channels x positions, bytes) from which the pair is fused, and the
// fewest depthwise output rows: below, the whole expansion stays in cache anyway, and bands of a
// few rows would recompute a large share of their neighbours' rows.
inline constexpr int64_t kExpandFuseFromBytes = 256 * 1024;
inline constexpr int64_t kExpandFuseFromOutputRows = 16;
// Bytes of expanded rows a band computes at once (its buffer, per thread).
inline constexpr int64_t kExpandBandBytes = 512 * 1024;

// What the fused step reads, in this order: the expansion's input x [N, C, H, W], its bias [Ce]
// (or none), the depthwise weight [Ce, 1, kh, kw] and its bias [Ce] (or none).
enum ExpandDepthwiseInput { kExpandX, kExpandBias, kDepthwiseWeight, kDepthwiseBias, kExpandDepthwiseInputs };

// The pair as one op, or null when they do not form one (and then `expand` and `depthwise` are
// left as they were; otherwise both are moved into the result): `expand` a sparse op whose matrix
// is `m` (sparse_pointwise_matrix), without a fused residual, over input `x`; `depthwise` a 2-D
// Conv with one filter per channel over the expansion's output `mid`, weight `w` [Ce, 1, kh, kw],
// without a fused residual; the fused op's scratch for `threads` threads at most
// `most_scratch_floats`. Both ops were inferred; the result's infer() checks its inputs and gives
// the depthwise output's shape. Its next_in_step() is `depthwise` (what a summary lists with it).
std::unique_ptr<Op> fuse_expand_depthwise(std::unique_ptr<Op>& expand, std::unique_ptr<Op>& depthwise,
                                          const SparseMatrix& m, const Shape& x, const Shape& mid,
                                          const Shape& w, int threads, int64_t most_scratch_floats);

}  // namespace sparrow
