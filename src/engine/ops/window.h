// Sliding-window geometry shared by Conv and the pooling operators (1-D and 2-D).
// 1-D windows are handled as 2-D with height 1.
#pragma once

#include <array>
#include <span>
#include <string>

#include "engine/op.h"
#include "engine/sparse/plane_window.h"

namespace sparrow {

// Window attributes as written in the node.
struct WindowAttrs {
  std::vector<int64_t> kernel, strides, dilations, pads;
  std::string auto_pad = "NOTSET";
  bool ceil_mode = false;
};

// Largest input size, kernel, stride, dilation, dilated extent ((kernel - 1) x dilation + 1) or pad
// along one axis that a window accepts: products of two of them (a plane, a padded plane) then stay
// far from int64 overflow.
inline constexpr int64_t kMaxWindowExtent = int64_t{1} << 24;

// Reads kernel_shape (if present), strides, dilations, pads, auto_pad and ceil_mode.
Result<WindowAttrs> read_window_attrs(const Node& node);

// Computes the window for `spatial` input dims (1 or 2 of them) with kernel dims `kernel`.
// Fails (naming the node) on bad ranks, non-positive sizes or an empty output.
Result<Window2d> make_window(const Node& node, const WindowAttrs& attrs, const Shape& spatial,
                             const Shape& kernel);

// Unrolls input planes [channels, in_h, in_w] into col [channels * k_h * k_w, out_h * out_w]
// (zero where the window covers padding), whose rows lie `ld` floats apart (0: out_h * out_w).
void im2col(const float* x, int64_t channels, const Window2d& w, float* col, int64_t ld = 0);
// The same, the channels split over the pool.
void im2col_parallel(ThreadPool& pool, const float* x, int64_t channels, const Window2d& w, float* col);

// A convolution's epilogue in one pass: y[r * ldy + 0:n] = act(x[r * ldx + 0:n] + bias[r]) for
// `rows` rows (no bias when it is null; ldy 0: n, y dense); x may be y when ldx == ldy. With a
// residual (laid out as y), y[r * ldy + i] = act((x[r * ldx + i] + bias[r]) + residual[r * ldy + i]).
void add_bias_activate_rows(const float* x, int64_t ldx, int64_t rows, int64_t n, const float* bias,
                            const Activation act, float* y, const float* residual = nullptr, int64_t ldy = 0);

// What one run of a convolution works with when it may carry a fused residual (FusedResidual).
struct ConvRun {
  RunArgs args;           // the op's inputs, outputs and pool, and the scratch the convolution may use
  float* out;             // where the convolution writes its output
  Activation act;         // what its epilogue applies
  const float* residual;  // what its epilogue adds, laid out as `out` (null: nothing)
};

// The residual Add a pass fused into a Conv (fuse_residual_adds, graph_passes.h): the node's input
// 3, added to the convolution's output after its bias and before its fused activation. When the
// residual has the convolution's output shape, the convolution's epilogue adds it; otherwise (a
// residual that broadcasts) the convolution writes its biased output without the activation into
// the front of the scratch and finish() adds the residual with broadcasting and applies the
// activation, as the Add and the activation would have.
class FusedResidual {
 public:
  // Reads kFusedResidualAttr (epilogue.h).
  Status parse(const Node& node);
  // The node's output shape from the convolution's, `y`. Fails, naming the node, when a Conv
  // without kFusedResidualAttr has a fourth input, the residual is not a float input, or the two
  // shapes do not broadcast.
  Result<Shape> infer(const Node& node, std::span<const ValueDesc> in, const Shape& y);
  // The op's scratch: the convolution's own `conv_floats`, after the deferred output if any.
  size_t scratch_floats(size_t conv_floats) const;
  // The run as the convolution sees it, `act` being the node's fused activation.
  ConvRun start(const RunArgs& a, const Activation& act) const;
  // out = act(convolution's output + residual) with broadcasting, when deferred; nothing otherwise.
  void finish(const RunArgs& a, const Activation& act) const;

 private:
  size_t deferred_floats() const;

  bool fused_ = false, deferred_ = false;
  int64_t conv_floats_ = 0;  // the convolution's output
  Shape out_shape_;
  std::array<std::vector<int64_t>, 2> strides_;  // deferred: the output's and residual's, broadcast
};

}  // namespace sparrow
