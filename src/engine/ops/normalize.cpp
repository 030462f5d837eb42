// Softmax, LogSoftmax, BatchNormalization (inference form, when not folded) and ReduceMean.
#include <cmath>

#include "engine/op.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

namespace {

// Softmax over `dim` values spaced `inner` apart; opsets < 13 flatten [axis:] into one dim.
template <bool kLog>
class SoftmaxOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    if (in[0].dtype != DType::f32) return fail("input must be float");
    const Shape& x = in[0].shape;
    int r = static_cast<int>(x.size());
    SP_ASSIGN_OR_RETURN(int64_t axis, node_.attr_int("axis", opset_ < 13 ? 1 : -1));
    SP_ASSIGN_OR_RETURN(int ax, normalize_axis(axis, r));
    outer_ = 1, dim_ = 1, inner_ = 1;
    for (int d = 0; d < r; ++d) {
      if (d < ax)
        outer_ *= x[d];
      else if (d == ax || opset_ < 13)
        dim_ *= x[d];
      else
        inner_ *= x[d];
    }
    out = {ValueDesc{DType::f32, x}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    if (inner_ == 1) {  // contiguous rows: the kernel table's vector-lane rows
      const auto kernel = sparse_kernels().softmax_row;
      a.pool.parallel_range(outer_, std::max<int64_t>(1, 4096 / std::max<int64_t>(dim_, 1)),
                            [&](int64_t b, int64_t e) {
                              for (int64_t k = b; k < e; ++k)
                                kernel(SoftmaxRowArgs{x + k * dim_, dim_, kLog, y + k * dim_});
                            });
      return {};
    }
    a.pool.parallel_range(outer_ * inner_, 64, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        int64_t base = (k / inner_) * dim_ * inner_ + k % inner_;
        row(x + base, y + base);
      }
    });
    return {};
  }

 private:
  void row(const float* x, float* y) const {
    float mx = -INFINITY;
    for (int64_t i = 0; i < dim_; ++i) mx = std::max(mx, x[i * inner_]);
    double sum = 0;
    for (int64_t i = 0; i < dim_; ++i) sum += std::exp(static_cast<double>(x[i * inner_] - mx));
    for (int64_t i = 0; i < dim_; ++i) {
      float v = x[i * inner_] - mx;
      y[i * inner_] = kLog ? v - static_cast<float>(std::log(sum)) : static_cast<float>(std::exp(v) / sum);
    }
  }
  int64_t outer_ = 1, dim_ = 1, inner_ = 1;
};

// LayerNormalization (opset 17; also what fuse_layer_norm makes of the exported decomposition):
// every row of the dims from `axis` on normalized on its own, then scaled and shifted. Scale and B
// hold one value per normalized element, or one for all of them when constant. Only Y is computed.
class LayerNormOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(epsilon_, node_.attr_float("epsilon", 1e-5f));
    SP_ASSIGN_OR_RETURN(axis_, node_.attr_int("axis", -1));
    SP_ASSIGN_OR_RETURN(int64_t stash, node_.attr_int("stash_type", 1));
    if (stash != 1) return fail("stash_type must be 1 (float)");
    if (!(epsilon_ >= 0.0f) || !std::isfinite(epsilon_)) return fail("epsilon must be finite and >= 0");
    for (size_t i = 1; i < node_.outputs.size(); ++i)
      if (!node_.outputs[i].empty()) return fail("the Mean and InvStdDev outputs are not supported");
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 3));
    if (in[0].dtype != DType::f32) return fail("input must be float");
    const Shape& x = in[0].shape;
    SP_ASSIGN_OR_RETURN(int ax, normalize_axis(axis_, static_cast<int>(x.size())));
    width_ = 1;
    for (size_t d = static_cast<size_t>(ax); d < x.size(); ++d) width_ *= x[d];
    rows_ = width_ > 0 ? shape_numel(x) / width_ : 0;
    for (size_t k = 1; k < in.size(); ++k) SP_RETURN_IF_ERROR(check_parameter(in[k], k));
    out = {ValueDesc{DType::f32, x}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    const float* scale = parameter(a, 1);
    const float* bias = parameter(a, 2);
    const auto kernel = sparse_kernels().layer_norm_row;
    a.pool.parallel_range(
        rows_, std::max<int64_t>(1, 4096 / std::max<int64_t>(width_, 1)), [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r)
            kernel(LayerNormRowArgs{x + r * width_, width_, scale, bias, epsilon_, y + r * width_});
        });
    return {};
  }

 private:
  // A Scale or B input: one value per normalized element, or one constant value (spread now).
  Status check_parameter(const ValueDesc& p, size_t k) {
    if (!p.present) return {};
    if (p.dtype != DType::f32) return fail("input {} must be float", k);
    const int64_t n = shape_numel(p.shape);
    if (n == width_) return {};
    if (n == 1 && p.constant) {
      spread_[k - 1].assign(static_cast<size_t>(width_), p.constant->f32_data()[0]);
      return {};
    }
    return fail("input {} has shape {}: it must hold one value per normalized element ({})", k,
                shape_str(p.shape), width_);
  }
  const float* parameter(const RunArgs& a, size_t k) const {
    if (k >= a.in.size() || a.in[k] == nullptr) return nullptr;
    return spread_[k - 1].empty() ? a.in[k]->f32_data() : spread_[k - 1].data();
  }

  float epsilon_ = 1e-5f;
  int64_t axis_ = -1, width_ = 1, rows_ = 0;
  std::vector<float> spread_[2];  // Scale and B given as one constant value, one per element
};

class BatchNormOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(eps_, node_.attr_float("epsilon", 1e-5f));
    for (size_t i = 1; i < node_.outputs.size(); ++i)
      if (!node_.outputs[i].empty()) return fail("training-mode outputs are not supported");
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 5, 5));
    const Shape& x = in[0].shape;
    if (x.size() < 2) return fail("input {} must be [N, C, ...]", shape_str(x));
    for (int i = 1; i < 5; ++i)
      if (shape_numel(in[i].shape) != x[1] || in[i].dtype != DType::f32)
        return fail("input {} {} must hold {} float values", i, shape_str(in[i].shape), x[1]);
    channels_ = x[1];
    inner_ = x[1] ? shape_numel(x) / x[0] / x[1] : 0;
    out = {ValueDesc{DType::f32, x}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    const float *gamma = a.in[1]->f32_data(), *beta = a.in[2]->f32_data();
    const float *mean = a.in[3]->f32_data(), *var = a.in[4]->f32_data();
    float* y = a.out[0]->f32_data();
    int64_t n = a.in[0]->dim(0);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t c = 0; c < channels_; ++c) {
        float s = gamma[c] / std::sqrt(var[c] + eps_), t = beta[c] - mean[c] * s;
        int64_t base = (b * channels_ + c) * inner_;
        for (int64_t i = 0; i < inner_; ++i) y[base + i] = x[base + i] * s + t;
      }
    return {};
  }

 private:
  float eps_ = 1e-5f;
  int64_t channels_ = 0, inner_ = 0;
};

// ReduceMean (axes attribute up to opset 17) and ReduceSum (axes input from opset 13).
template <bool kMean>
class ReduceOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    bool axes_input = !kMean && opset_ >= 13;
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, axes_input ? 2 : 1));
    if (in[0].dtype != DType::f32) return fail("input must be float");
    const Shape& x = in[0].shape;
    int r = static_cast<int>(x.size());
    std::vector<int64_t> axes;
    if (axes_input && in.size() > 1 && in[1].present) {
      SP_ASSIGN_OR_RETURN(axes, constant_ints(in, 1, "axes"));
    } else if (!axes_input) {
      SP_ASSIGN_OR_RETURN(axes, node_.attr_ints("axes", std::vector<int64_t>{}));
    }
    SP_ASSIGN_OR_RETURN(int64_t keepdims, node_.attr_int("keepdims", 1));
    SP_ASSIGN_OR_RETURN(int64_t noop_empty, node_.attr_int("noop_with_empty_axes", 0));
    reduced_.assign(static_cast<size_t>(r), axes.empty() && !noop_empty);
    for (int64_t a : axes) {
      SP_ASSIGN_OR_RETURN(int ax, normalize_axis(a, r));
      reduced_[ax] = true;
    }
    Shape kept(x), y;
    count_ = 1;
    for (int d = 0; d < r; ++d) {
      if (reduced_[d]) {
        count_ *= x[d];
        kept[d] = 1;
        if (keepdims) y.push_back(1);
      } else {
        y.push_back(x[d]);
      }
    }
    out_strides_ = broadcast_strides(kept, x);  // 0 along reduced axes
    find_contiguous_block(x);
    out = {ValueDesc{DType::f32, y}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const Tensor& x = *a.in[0];
    float* y = a.out[0]->f32_data();
    std::fill_n(y, a.out[0]->numel(), 0.0f);
    if (block_.contiguous)
      sum_block(x.f32_data(), y);
    else
      sum_strided(x, y);
    float inv = !kMean ? 1.0f : (count_ ? 1.0f / static_cast<float>(count_) : NAN);
    for (int64_t i = 0; i < a.out[0]->numel(); ++i) y[i] *= inv;
    return {};
  }

 private:
  // When the reduced axes are adjacent, x is [outer, count, inner] and y [outer, inner].
  struct Block {
    bool contiguous = false;
    int64_t outer = 1, inner = 1;
  };
  void find_contiguous_block(const Shape& x) {
    const int r = static_cast<int>(x.size());
    int first = r, last = -1;
    for (int d = 0; d < r; ++d)
      if (reduced_[d]) first = std::min(first, d), last = d;
    block_ = Block{};
    if (last < 0) return;
    for (int d = first; d <= last; ++d)
      if (!reduced_[d]) return;
    block_.contiguous = true;
    for (int d = 0; d < first; ++d) block_.outer *= x[d];
    for (int d = last + 1; d < r; ++d) block_.inner *= x[d];
  }
  void sum_block(const float* x, float* y) const {
    const int64_t inner = block_.inner;
    for (int64_t o = 0; o < block_.outer; ++o) {
      float* out = y + o * inner;
      const float* in = x + o * count_ * inner;
      if (inner == 1) {
        float acc = 0.0f;
        for (int64_t k = 0; k < count_; ++k) acc += in[k];
        *out = acc;
        continue;
      }
      for (int64_t k = 0; k < count_; ++k)
        for (int64_t i = 0; i < inner; ++i) out[i] += in[k * inner + i];
    }
  }
  void sum_strided(const Tensor& x, float* y) const {
    const auto& out_strides = out_strides_;
    int r = x.rank();
    const float* px = x.f32_data();
    for (int64_t k = 0; k < x.numel(); ++k) {
      int64_t rem = k, off = 0;
      for (int d = r - 1; d >= 0; --d) {
        off += (rem % x.dim(d)) * out_strides[d];
        rem /= x.dim(d);
      }
      y[off] += px[k];
    }
  }

  Block block_;
  std::vector<bool> reduced_;
  std::vector<int64_t> out_strides_;
  int64_t count_ = 1;
};

}  // namespace

void register_normalize_ops(OpRegistry& r) {
  r["Softmax"] = make_op<SoftmaxOp<false>>;
  r["LogSoftmax"] = make_op<SoftmaxOp<true>>;
  r["BatchNormalization"] = make_op<BatchNormOp>;
  r["LayerNormalization"] = make_op<LayerNormOp>;
  r["ReduceMean"] = make_op<ReduceOp<true>>;
  r["ReduceSum"] = make_op<ReduceOp<false>>;
}

}  // namespace sparrow
