#include "engine/ops/window.h"

#include <algorithm>
#include <cstring>

#include "engine/sparse/kernels.h"

namespace sparrow {

Result<WindowAttrs> read_window_attrs(const Node& node) {
  WindowAttrs w;
  SP_ASSIGN_OR_RETURN(w.kernel, node.attr_ints("kernel_shape", std::vector<int64_t>{}));
  SP_ASSIGN_OR_RETURN(w.strides, node.attr_ints("strides", std::vector<int64_t>{}));
  SP_ASSIGN_OR_RETURN(w.dilations, node.attr_ints("dilations", std::vector<int64_t>{}));
  SP_ASSIGN_OR_RETURN(w.pads, node.attr_ints("pads", std::vector<int64_t>{}));
  SP_ASSIGN_OR_RETURN(w.auto_pad, node.attr_string("auto_pad", std::string("NOTSET")));
  SP_ASSIGN_OR_RETURN(int64_t ceil_mode, node.attr_int("ceil_mode", 0));
  w.ceil_mode = ceil_mode != 0;
  if (w.auto_pad != "NOTSET" && w.auto_pad != "SAME_UPPER" && w.auto_pad != "SAME_LOWER" &&
      w.auto_pad != "VALID")
    return errorf("{}: attribute 'auto_pad': unknown value '{}'", node.describe(), w.auto_pad);
  return w;
}

namespace {

struct Axis {
  int64_t in, k, s, d, pad_begin, pad_end, out;
};

Status solve_axis(const Node& node, const WindowAttrs& w, Axis& a) {
  int64_t extent = (a.k - 1) * a.d + 1;
  if (w.auto_pad == "VALID") {
    a.pad_begin = a.pad_end = 0;
    a.out = a.in >= extent ? (a.in - extent) / a.s + 1 : 0;
  } else if (w.auto_pad != "NOTSET") {
    a.out = (a.in + a.s - 1) / a.s;
    int64_t total = std::max<int64_t>(0, (a.out - 1) * a.s + extent - a.in);
    a.pad_begin = w.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    a.pad_end = total - a.pad_begin;
  } else {
    int64_t span = a.in + a.pad_begin + a.pad_end - extent;
    if (span < 0)
      a.out = 0;
    else if (w.ceil_mode) {
      a.out = (span + a.s - 1) / a.s + 1;
      if ((a.out - 1) * a.s >= a.in + a.pad_begin) --a.out;  // last window must start inside the input
    } else {
      a.out = span / a.s + 1;
    }
  }
  if (a.out <= 0)
    return errorf("{}: window of {} (dilation {}) does not fit input size {} with pads {}+{}",
                  node.describe(), a.k, a.d, a.in, a.pad_begin, a.pad_end);
  return {};
}

// One tap's row of col for a window at stride 1 whose output rows are as wide as the input's (same
// padding): the output rows that read input rows are one shifted block of the plane, copied at
// once; then the columns that read padding (the neighbouring row's values in that copy) are
// zeroed, and the rows that read padding.
void unroll_same_width_tap(const float* xc, const Window2d& w, int64_t i, int64_t j, float* row) {
  const int64_t shift_h = i * w.d_h - w.pad_t, offset = j * w.d_w - w.pad_l;
  const int64_t lo = std::clamp<int64_t>(-shift_h, 0, w.out_h),
                hi = std::clamp(w.in_h - shift_h, lo, w.out_h);
  const auto [begin, end] = valid_columns(offset, 1, w.in_w, w.out_w);
  const int64_t last = std::max(begin, end);
  if (hi == lo || last == begin) {
    std::fill(row, row + w.out_h * w.out_w, 0.0f);
    return;
  }
  std::fill(row, row + lo * w.out_w, 0.0f);
  std::fill(row + hi * w.out_w, row + w.out_h * w.out_w, 0.0f);
  // From output (lo, begin) to (hi - 1, last): every input read lies in the plane.
  const float* src = xc + (lo + shift_h) * w.in_w + (offset + begin);  // input (lo + shift_h, begin + offset)
  std::copy(src, src + (hi - lo - 1) * w.out_w + (last - begin), row + lo * w.out_w + begin);
  for (int64_t oh = lo; oh < hi; ++oh) {
    std::fill(row + oh * w.out_w, row + oh * w.out_w + begin, 0.0f);
    std::fill(row + oh * w.out_w + last, row + (oh + 1) * w.out_w, 0.0f);
  }
}

}  // namespace

// Unrolls one group's input [C, H, W] into col [C*kh*kw, out_h*out_w] (zero where padded).
void im2col(const float* x, int64_t channels, const Window2d& w, float* col, int64_t ld) {
  if (ld == 0) ld = w.out_h * w.out_w;
  const bool same_width = w.s_h == 1 && w.s_w == 1 && w.out_w == w.in_w;
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * w.in_h * w.in_w;
    for (int64_t i = 0; i < w.k_h; ++i) {
      for (int64_t j = 0; j < w.k_w; ++j) {
        float* row = col + ((c * w.k_h + i) * w.k_w + j) * ld;
        if (same_width) {
          unroll_same_width_tap(xc, w, i, j, row);
          continue;
        }
        for (int64_t oh = 0; oh < w.out_h; ++oh) {
          int64_t ih = oh * w.s_h - w.pad_t + i * w.d_h;
          float* dst = row + oh * w.out_w;
          if (ih < 0 || ih >= w.in_h) {
            std::memset(dst, 0, static_cast<size_t>(w.out_w) * sizeof(float));
            continue;
          }
          const float* src = xc + ih * w.in_w;
          const int64_t offset = j * w.d_w - w.pad_l;
          const auto [begin, end] = valid_columns(offset, w.s_w, w.in_w, w.out_w);
          const int64_t last = std::max(begin, end);
          std::fill(dst, dst + begin, 0.0f);
          if (w.s_w == 1)
            std::copy(src + begin + offset, src + last + offset, dst + begin);
          else
            for (int64_t ow = begin; ow < last; ++ow) dst[ow] = src[ow * w.s_w + offset];
          std::fill(dst + last, dst + w.out_w, 0.0f);
        }
      }
    }
  }
}

void im2col_parallel(ThreadPool& pool, const float* x, int64_t channels, const Window2d& w, float* col) {
  const int64_t in_hw = w.in_h * w.in_w, rows_per_channel = w.k_h * w.k_w * w.out_h * w.out_w;
  pool.parallel_range(channels, 1, [&](int64_t begin, int64_t end) {
    im2col(x + begin * in_hw, end - begin, w, col + begin * rows_per_channel);
  });
}

Result<Window2d> make_window(const Node& node, const WindowAttrs& attrs, const Shape& spatial,
                             const Shape& kernel) {
  size_t r = spatial.size();
  if (r < 1 || r > 2)
    return errorf("{}: only 1-D and 2-D windows are supported, input has {} spatial dims", node.describe(),
                  r);
  if (kernel.size() != r)
    return errorf("{}: kernel has {} dims but the input has {} spatial dims", node.describe(), kernel.size(),
                  r);
  auto get = [&](const std::vector<int64_t>& v, size_t i, int64_t fallback) {
    return v.empty() ? fallback : v[i];
  };
  if ((!attrs.strides.empty() && attrs.strides.size() != r) ||
      (!attrs.dilations.empty() && attrs.dilations.size() != r) ||
      (!attrs.pads.empty() && attrs.pads.size() != 2 * r))
    return errorf("{}: strides/dilations need {} values and pads {}", node.describe(), r, 2 * r);
  Axis axes[2];
  for (size_t i = 0; i < r; ++i) {
    Axis& a = axes[i];
    a = {spatial[i],
         kernel[i],
         get(attrs.strides, i, 1),
         get(attrs.dilations, i, 1),
         get(attrs.pads, i, 0),
         get(attrs.pads, i + r, 0),
         0};
    if (a.k <= 0 || a.s <= 0 || a.d <= 0 || a.pad_begin < 0 || a.pad_end < 0 || a.in <= 0)
      return errorf("{}: kernel, strides and dilations must be positive and pads non-negative",
                    node.describe());
    // The dilated extent too: auto_pad derives the pads from it.
    if (std::max({a.in, a.k, a.s, a.d, a.pad_begin, a.pad_end}) > kMaxWindowExtent ||
        (a.k - 1) * a.d + 1 > kMaxWindowExtent)
      return errorf("{}: input size {}, kernel {}, stride {}, dilation {} or pads {}+{} above {}",
                    node.describe(), a.in, a.k, a.s, a.d, a.pad_begin, a.pad_end, kMaxWindowExtent);
    SP_RETURN_IF_ERROR(solve_axis(node, attrs, a));
  }
  Window2d w;
  const Axis& h = r == 2 ? axes[0] : Axis{1, 1, 1, 1, 0, 0, 1};
  const Axis& x = r == 2 ? axes[1] : axes[0];
  w.in_h = h.in, w.k_h = h.k, w.s_h = h.s, w.d_h = h.d, w.pad_t = h.pad_begin, w.pad_b = h.pad_end,
  w.out_h = h.out;
  w.in_w = x.in, w.k_w = x.k, w.s_w = x.s, w.d_w = x.d, w.pad_l = x.pad_begin, w.pad_r = x.pad_end,
  w.out_w = x.out;
  return w;
}

void add_bias_activate_rows(const float* x, int64_t ldx, int64_t rows, int64_t n, const float* bias,
                            const Activation act, float* y, const float* residual, int64_t ldy) {
  const auto kernel = sparse_kernels().bias_activation;
  if (ldy == 0) ldy = n;
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * ldx;
    float* out = y + r * ldy;
    const float* res = residual ? residual + r * ldy : nullptr;
    const float b = bias ? bias[r] : kNoBias;
    if (n >= 16)
      kernel(BiasActivationArgs{in, n, b, act.lo, act.hi, out, 1, 0, 0, res});
    else if (res)  // short rows (one sample): a call per row would cost more than the row
      for (int64_t i = 0; i < n; ++i) out[i] = act((in[i] + b) + res[i]);
    else
      for (int64_t i = 0; i < n; ++i) out[i] = act(in[i] + b);
  }
}

Status FusedResidual::parse(const Node& node) {
  SP_ASSIGN_OR_RETURN(const int64_t fused, node.attr_int(kFusedResidualAttr, 0));
  fused_ = fused != 0;
  return {};
}

Result<Shape> FusedResidual::infer(const Node& node, std::span<const ValueDesc> in, const Shape& y) {
  if (!fused_ && in.size() > kFusedResidualInput)
    return errorf("{}: takes at most {} inputs, got {}", node.describe(), kFusedResidualInput, in.size());
  if (!fused_) return y;
  if (in.size() != kFusedResidualInput + 1 || !in[kFusedResidualInput].present)
    return errorf("{}: attribute '{}' needs the residual as input {}", node.describe(), kFusedResidualAttr,
                  kFusedResidualInput);
  const ValueDesc& r = in[kFusedResidualInput];
  if (r.dtype != DType::f32) return errorf("{}: the residual input must be float", node.describe());
  auto out = broadcast_shapes(y, r.shape);
  if (!out)
    return errorf("{}: residual {} does not broadcast with the output {}", node.describe(),
                  shape_str(r.shape), shape_str(y));
  deferred_ = r.shape != y;
  out_shape_ = *out;
  strides_ = {broadcast_strides(y, *out), broadcast_strides(r.shape, *out)};
  conv_floats_ = shape_numel(y);
  return *out;
}

size_t FusedResidual::deferred_floats() const {
  if (!deferred_) return 0;
  return conv_floats_ < 0 ? SIZE_MAX : static_cast<size_t>(conv_floats_);
}

size_t FusedResidual::scratch_floats(size_t conv_floats) const {
  const size_t front = deferred_floats();
  return conv_floats > SIZE_MAX - front ? SIZE_MAX : conv_floats + front;  // SIZE_MAX: over any limit
}

ConvRun FusedResidual::start(const RunArgs& a, const Activation& act) const {
  if (deferred_)
    return {RunArgs{a.in, a.out, a.pool, a.scratch.subspan(deferred_floats())}, a.scratch.data(),
            Activation{}, nullptr};
  return {a, a.out[0]->f32_data(), act, fused_ ? a.in[kFusedResidualInput]->f32_data() : nullptr};
}

void FusedResidual::finish(const RunArgs& a, const Activation& act) const {
  if (!deferred_) return;
  const float* y = a.scratch.data();
  const float* r = a.in[kFusedResidualInput]->f32_data();
  float* out = a.out[0]->f32_data();
  for_each_broadcast<2>(out_shape_, strides_, [&](int64_t i, const std::array<int64_t, 2>& at) {
    out[i] = act(y[at[0]] + r[at[1]]);
  });
}

}  // namespace sparrow
