// Sliding-window geometry shared by Conv and the pooling operators (1-D and 2-D).
// 1-D windows are handled as 2-D with height 1.
#pragma once

#include <string>

#include "engine/op.h"

namespace sparrow {

struct Window2d {
  int64_t in_h = 1, in_w = 1;
  int64_t k_h = 1, k_w = 1;
  int64_t s_h = 1, s_w = 1;
  int64_t d_h = 1, d_w = 1;
  int64_t pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int64_t out_h = 1, out_w = 1;
};

// Window attributes as written in the node.
struct WindowAttrs {
  std::vector<int64_t> kernel, strides, dilations, pads;
  std::string auto_pad = "NOTSET";
  bool ceil_mode = false;
};

// Reads kernel_shape (if present), strides, dilations, pads, auto_pad and ceil_mode.
Result<WindowAttrs> read_window_attrs(const Node& node);

// Computes the window for `spatial` input dims (1 or 2 of them) with kernel dims `kernel`.
// Fails (naming the node) on bad ranks, non-positive sizes or an empty output.
Result<Window2d> make_window(const Node& node, const WindowAttrs& attrs, const Shape& spatial,
                             const Shape& kernel);

// The output columns [begin, end) of a window row whose input column ow * stride + offset lies in
// [0, in_w): the columns before begin and from end on read padding.
struct ColumnRange {
  int64_t begin = 0, end = 0;
};
inline ColumnRange valid_columns(int64_t offset, int64_t stride, int64_t in_w, int64_t out_w) {
  const int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t end = in_w - 1 - offset < 0 ? 0 : (in_w - 1 - offset) / stride + 1;
  return {begin < out_w ? begin : out_w, end < out_w ? end : out_w};
}

// out[rows, cols] = the input plane x[in_h, in_w] placed at (pad_t, pad_l), zero around it: what
// windows at stride 1 read in place (rows and cols cover every window).
void pad_plane(const float* x, const Window2d& w, int64_t rows, int64_t cols, float* out);
// The zero-padded input plane split by stride phase: out holds s_h * s_w planes [rows, cols], plane
// (a, b) holding padded rows a, a + s_h, ... and columns b, b + s_w, ...; a window tap at padded
// offset (i, j) of output (oh, ow) reads plane (i % s_h, j % s_w) at (oh + i / s_h, ow + j / s_w),
// so strided windows read it as stride-1 windows do their padded plane.
void pad_phases(const float* x, const Window2d& w, int64_t rows, int64_t cols, float* out);

// Unrolls input planes [channels, in_h, in_w] into col [channels * k_h * k_w, out_h * out_w]
// (zero where the window covers padding).
void im2col(const float* x, int64_t channels, const Window2d& w, float* col);
// The same, the channels split over the pool.
void im2col_parallel(ThreadPool& pool, const float* x, int64_t channels, const Window2d& w, float* col);

}  // namespace sparrow
