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
Result<Window2d> make_window(const Node& node, const WindowAttrs& attrs, const Shape& spatial, const Shape& kernel);

// Unrolls input planes [channels, in_h, in_w] into col [channels * k_h * k_w, out_h * out_w]
// (zero where the window covers padding).
void im2col(const float* x, int64_t channels, const Window2d& w, float* col);

}  // namespace sparrow
