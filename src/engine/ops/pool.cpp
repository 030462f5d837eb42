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
    if constexpr (K == PoolKind::average) count_columns();
    return {};
  }
  void input_is_nan_free() override { nan_free_ = true; }
  size_t scratch_floats(int threads) const override {
    if constexpr (K == PoolKind::max) return 0;
    const int64_t rows = shape_numel({threads, row_stride()});  // < 0: too many values
    if (rows < 0 || rows > std::numeric_limits<int64_t>::max() - kLineFloats)
      return SIZE_MAX;                               // over any limit
    return static_cast<size_t>(rows + kLineFloats);  // + what aligning the first row may skip
  }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    const int64_t chunks = std::min<int64_t>(a.pool.size(), planes_);
    if (chunks == 0) return {};
    const int64_t step = (planes_ + chunks - 1) / chunks;
    a.pool.parallel_for(chunks, [&](int64_t c) {
      float* row = K == PoolKind::average ? first_line(a.scratch.data()) + c * row_stride() : nullptr;
      for (int64_t p = c * step; p < std::min(planes_, (c + 1) * step); ++p) {
        const float* in = x + p * win_.in_h * win_.in_w;
        float* out = y + p * win_.out_h * win_.out_w;
        if constexpr (K == PoolKind::max)
          sparse_kernels().max_pool_plane(MaxPoolArgs{in, &win_, out, nan_free_});
        else
          average_plane(in, row, out);
      }
    });
    return {};
  }

 private:
  // An input row with its left and right padding, as far as the last window reaches (ceil_mode
  // windows may reach past the padding).
  int64_t padded_row_floats() const {
    return std::max(win_.pad_l + win_.in_w + win_.pad_r, (win_.out_w - 1) * win_.s_w + win_.k_w);
  }
  // Floats between two threads' rows in the scratch, from its first cache line on: whole lines, so
  // that no two threads write to one line.
  static constexpr int64_t kLineFloats = 16;
  int64_t row_stride() const { return (padded_row_floats() + kLineFloats - 1) / kLineFloats * kLineFloats; }
  static float* first_line(float* scratch) {
    const auto address = reinterpret_cast<uintptr_t>(scratch);
    constexpr uintptr_t kLineBytes = kLineFloats * sizeof(float);
    return reinterpret_cast<float*>((address + kLineBytes - 1) / kLineBytes * kLineBytes);
  }
  // Per output column, the columns its window counts: those on the input, or with
  // count_include_pad those on the padded input (window parts past it never count). Counts below
  // 2^24 are exact as floats, and so are their products with the row counts below.
  void count_columns() {
    const Window2d& w = win_;
    column_counts_.resize(static_cast<size_t>(w.out_w));
    for (int64_t ow = 0; ow < w.out_w; ++ow) {
      const int64_t w0 = ow * w.s_w - w.pad_l;
      const int64_t on_input = std::min(w0 + w.k_w, w.in_w) - std::max<int64_t>(w0, 0);  // < 0: all padding
      const int64_t padded = std::min(w0 + w.k_w, w.in_w + w.pad_r) - w0;
      column_counts_[static_cast<size_t>(ow)] = static_cast<float>(count_include_pad_ ? padded : on_input);
    }
  }
  // Each output row: the window's input rows summed column by column into `row` (zero in the
  // padding), then each output's k_w columns of it summed and divided by the window's count (at
  // least 1: a window of padding only gives 0). Both passes run over contiguous floats, so they
  // vectorize; no window tests a bound per tap.
  void average_plane(const float* x, float* row, float* y) const {
    const Window2d& w = win_;
    std::fill(row, row + padded_row_floats(), 0.0f);
    float* sums = row + w.pad_l;
    for (int64_t oh = 0; oh < w.out_h; ++oh) {
      const int64_t h0 = oh * w.s_h - w.pad_t;
      const int64_t first = std::max<int64_t>(h0, 0), last = std::min(h0 + w.k_h, w.in_h);
      if (first < last)
        std::copy(x + first * w.in_w, x + (first + 1) * w.in_w, sums);
      else
        std::fill(sums, sums + w.in_w, 0.0f);
      for (int64_t ih = first + 1; ih < last; ++ih) {
        const float* in = x + ih * w.in_w;
        for (int64_t iw = 0; iw < w.in_w; ++iw) sums[iw] += in[iw];
      }
      const int64_t padded_rows = std::min(h0 + w.k_h, w.in_h + w.pad_b) - h0;
      const auto rows =
          static_cast<float>(count_include_pad_ ? padded_rows : std::max<int64_t>(last - first, 0));
      float* out = y + oh * w.out_w;
      for (int64_t ow = 0; ow < w.out_w; ++ow) {
        const float* window = row + ow * w.s_w;
        float acc = 0.0f;
        for (int64_t j = 0; j < w.k_w; ++j) acc += window[j];
        out[ow] = acc / std::max(rows * column_counts_[static_cast<size_t>(ow)], 1.0f);
      }
    }
  }

  WindowAttrs attrs_;
  Window2d win_;
  int64_t planes_ = 0;
  bool count_include_pad_ = false;
  bool nan_free_ = false;             // input 0 holds no NaN (input_is_nan_free)
  std::vector<float> column_counts_;  // AveragePool: see count_columns
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
