// The geometry of a sliding window over one input plane (Conv, pooling; 1-D windows as 2-D with
// height 1), and the zero-padded copies of a plane that windows read in place. Shared by the
// operators and the per-ISA plane kernels; no dependency on the operator layer.
#pragma once

#include <cstdint>

namespace sparrow {

struct Window2d {
  int64_t in_h = 1, in_w = 1;
  int64_t k_h = 1, k_w = 1;
  int64_t s_h = 1, s_w = 1;
  int64_t d_h = 1, d_w = 1;
  int64_t pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int64_t out_h = 1, out_w = 1;
};

// The rows and columns of the zero-padded input that a window's outputs read: (out - 1) * stride +
// (k - 1) * dilation + 1 along each axis.
struct Reach {
  int64_t rows = 0, cols = 0;
};
inline Reach window_reach(const Window2d& w) {
  return {(w.out_h - 1) * w.s_h + (w.k_h - 1) * w.d_h + 1, (w.out_w - 1) * w.s_w + (w.k_w - 1) * w.d_w + 1};
}

// The output columns [begin, end) of a window row whose input column ow * stride + offset lies in
// [0, in_w): the columns before begin and from end on read padding.
struct ColumnRange {
  int64_t begin = 0, end = 0;
};
ColumnRange valid_columns(int64_t offset, int64_t stride, int64_t in_w, int64_t out_w);

// out[rows, cols] = the input plane x[in_h, in_w] placed at (pad_t, pad_l), zero around it: what
// windows at stride 1 read in place (rows and cols cover every window).
void pad_plane(const float* x, const Window2d& w, int64_t rows, int64_t cols, float* out);
// The zero-padded input plane split by stride phase: out holds s_h * s_w planes [rows, cols], plane
// (a, b) holding padded rows a, a + s_h, ... and columns b, b + s_w, ...; a window tap at padded
// offset (i, j) of output (oh, ow) reads plane (i % s_h, j % s_w) at (oh + i / s_h, ow + j / s_w),
// so strided windows read it as stride-1 windows do their padded plane.
void pad_phases(const float* x, const Window2d& w, int64_t rows, int64_t cols, float* out);

// Floats of scratch a depthwise plane kernel needs for `w` (its zero-padded input plane, then its
// wide output rows).
int64_t depthwise_scratch_floats(const Window2d& w);
// Channels the interleaved depthwise kernel (DepthwiseLanesArgs) convolves at once, one to a
// vector lane; and the floats of scratch it needs for `w` (its zero-padded input, kDepthwiseLanes
// channels to a position, and its taps).
inline constexpr int64_t kDepthwiseLanes = 16;
int64_t depthwise_lanes_scratch_floats(const Window2d& w);

}  // namespace sparrow
