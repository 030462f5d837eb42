// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool over [N, C, spatial...] (1-D and 2-D).
#include <algorithm>
#include <limits>

#include "engine/ops/window.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

namespace {

enum class PoolKind { max, average };

template <PoolKind K>
class PoolOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(attrs_, read_window_attrs(node_));
    if (attrs_.kernel.empty()) return fail("required attribute 'kernel_shape' is missing");
    if constexpr (K == PoolKind::average) {
      SP_ASSIGN_OR_RETURN(int64_t cip, node_.attr_int("count_include_pad", 0));
      count_include_pad_ = cip != 0;
      if (!attrs_.dilations.empty())
        for (int64_t d : attrs_.dilations)
          if (d != 1) return fail("dilated AveragePool is not supported");
    }
    if (node_.outputs.size() > 1 && !node_.outputs[1].empty())
      return fail("the Indices output of MaxPool is not supported");
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    const Shape& x = in[0].shape;
    if (in[0].dtype != DType::f32 || x.size() < 3)
      return fail("input must be float [N, C, spatial...], got {}", shape_str(x));
    planes_ = x[0] * x[1];
    SP_ASSIGN_OR_RETURN(win_, make_window(node_, attrs_, Shape(x.begin() + 2, x.end()), attrs_.kernel));
    Shape y = {x[0], x[1]};
    if (x.size() == 4) y.push_back(win_.out_h);
    y.push_back(win_.out_w);
    out = {ValueDesc{DType::f32, y}};
    return {};
  }
  void input_is_nan_free() override { nan_free_ = true; }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    a.pool.parallel_range(planes_, 4, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p)
        pool_plane(x + p * win_.in_h * win_.in_w, y + p * win_.out_h * win_.out_w);
    });
    return {};
  }

 private:
  void pool_plane(const float* x, float* y) const {
    if constexpr (K == PoolKind::max) {
      sparse_kernels().max_pool_plane(MaxPoolArgs{x, &win_, y, nan_free_});
      return;
    }
    const Window2d& w = win_;
    for (int64_t oh = 0; oh < w.out_h; ++oh) {
      for (int64_t ow = 0; ow < w.out_w; ++ow) {
        int64_t h0 = oh * w.s_h - w.pad_t, w0 = ow * w.s_w - w.pad_l;
        float acc = K == PoolKind::max ? -std::numeric_limits<float>::infinity() : 0.0f;
        int64_t counted = 0;
        for (int64_t i = 0; i < w.k_h; ++i) {
          int64_t ih = h0 + i * w.d_h;
          if (ih < 0 || ih >= w.in_h) continue;
          for (int64_t j = 0; j < w.k_w; ++j) {
            int64_t iw = w0 + j * w.d_w;
            if (iw < 0 || iw >= w.in_w) continue;
            float v = x[ih * w.in_w + iw];
            if constexpr (K == PoolKind::max)
              acc = (v > acc || v != v) ? v : acc;
            else
              acc += v;
            ++counted;
          }
        }
        if constexpr (K == PoolKind::average) {
          // With count_include_pad, the divisor counts padding but not window parts past the padded input.
          int64_t hend = std::min(h0 + w.k_h, w.in_h + w.pad_b),
                  wend = std::min(w0 + w.k_w, w.in_w + w.pad_r);
          int64_t padded = (hend - h0) * (wend - w0);
          acc /= static_cast<float>(count_include_pad_ ? padded : std::max<int64_t>(counted, 1));
        }
        y[oh * w.out_w + ow] = acc;
      }
    }
  }

  WindowAttrs attrs_;
  Window2d win_;
  int64_t planes_ = 0;
  bool count_include_pad_ = false;
  bool nan_free_ = false;  // input 0 holds no NaN (input_is_nan_free)
};

template <PoolKind K>
class GlobalPoolOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    const Shape& x = in[0].shape;
    if (in[0].dtype != DType::f32 || x.size() < 3)
      return fail("input must be float [N, C, spatial...], got {}", shape_str(x));
    planes_ = x[0] * x[1];
    size_ = shape_numel(x) / std::max<int64_t>(planes_, 1);
    Shape y(x.size(), 1);
    y[0] = x[0];
    y[1] = x[1];
    out = {ValueDesc{DType::f32, y}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    a.pool.parallel_range(planes_, 64, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const float acc = reduce_plane(x + p * size_);
        y[p] = K == PoolKind::max ? acc : acc / static_cast<float>(size_);
      }
    });
    return {};
  }

 private:
  // The plane's sum or max in kLanes partial results (no chain of dependent adds, and the loop runs
  // in vector lanes), combined at the end. NaN propagates either way.
  static constexpr int64_t kLanes = 8;
  static float combine(float acc, float v) {
    if constexpr (K == PoolKind::max)
      return (v > acc || v != v) ? v : acc;
    else
      return acc + v;
  }
  float reduce_plane(const float* x) const {
    constexpr float kStart = K == PoolKind::max ? -std::numeric_limits<float>::infinity() : 0.0f;
    float part[kLanes];
    std::fill(part, part + kLanes, kStart);
    int64_t i = 0;
    for (; i + kLanes <= size_; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) part[j] = combine(part[j], x[i + j]);
    for (; i < size_; ++i) part[0] = combine(part[0], x[i]);
    float acc = kStart;
    for (float p : part) acc = combine(acc, p);
    return acc;
  }

  int64_t planes_ = 0, size_ = 0;
};

}  // namespace

void register_pool_ops(OpRegistry& r) {
  r["MaxPool"] = make_op<PoolOp<PoolKind::max>>;
  r["AveragePool"] = make_op<PoolOp<PoolKind::average>>;
  r["GlobalAveragePool"] = make_op<GlobalPoolOp<PoolKind::average>>;
  r["GlobalMaxPool"] = make_op<GlobalPoolOp<PoolKind::max>>;
}

}  // namespace sparrow
