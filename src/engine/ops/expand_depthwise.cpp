// The expansion and its depthwise convolution in bands of output rows (expand_depthwise.h). A band
// of depthwise output rows [o0, o1) reads expanded rows [r0, r1) (its windows' reach, clipped to
// the plane); those are computed for every expanded channel into the thread's buffer, rows
// r1 - r0 positions wide, then each channel's depthwise plane kernel runs over them as over a plane
// of r1 - r0 rows whose top padding is what the band's first window reaches above the plane.
// Neighbouring bands compute the rows their windows share each, so bands are as tall as the buffer
// allows.
#include "engine/ops/expand_depthwise.h"

#include <algorithm>

#include "engine/epilogue.h"
#include "engine/ops/window.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/sparse_run.h"

namespace sparrow {

namespace {

// Whole 64-byte lines, and not a multiple of 1 KiB (rows that far apart share a quarter of the L1
// cache's sets).
int64_t row_stride(int64_t n) {
  const int64_t ld = (n + 15) / 16 * 16;
  return ld % 256 == 0 ? ld + 16 : ld;
}

class ExpandDepthwiseOp : public Op {
 public:
  ExpandDepthwiseOp(std::unique_ptr<Op> expand, std::unique_ptr<Op> depthwise, const SparseMatrix& m,
                    const Shape& x, const Window2d& win, int threads)
      : Op(expand->node(), 0),
        expand_(std::move(expand)),
        depthwise_(std::move(depthwise)),
        m_(m),
        images_(x[0]),
        channels_(x[1]),
        win_(win) {
    activation_ = expand_->activation();
    band_rows_ = band_rows(threads);
    bands_ = (win_.out_h + band_rows_ - 1) / band_rows_;
    band_ld_ = row_stride(band_reach() * win_.in_w);
    Window2d tallest = win_;
    tallest.out_h = band_rows_;
    tallest.in_h = band_reach();
    plane_floats_ = (depthwise_scratch_floats(tallest) + 15) / 16 * 16;
  }

  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    if (in.size() != kExpandDepthwiseInputs ||
        in[kExpandX].shape != Shape{images_, channels_, win_.in_h, win_.in_w})
      return fail("the fused expansion and depthwise convolution take {} inputs, x first",
                  +kExpandDepthwiseInputs);
    out = {ValueDesc{DType::f32, Shape{images_, m_.rows, win_.out_h, win_.out_w}}};
    return {};
  }
  int64_t macs() const override { return expand_->macs() + depthwise_->macs(); }
  size_t scratch_floats(int threads) const override {
    return static_cast<size_t>(threads) * static_cast<size_t>(thread_floats());
  }
  const Op* next_in_step() const override { return depthwise_.get(); }

  Status run(const RunArgs& a) override {
    const Inputs in{a.in[kExpandX]->f32_data(), a.in[kExpandBias] ? a.in[kExpandBias]->f32_data() : nullptr,
                    a.in[kDepthwiseWeight]->f32_data(),
                    a.in[kDepthwiseBias] ? a.in[kDepthwiseBias]->f32_data() : nullptr, a.out[0]->f32_data()};
    float* scratch = a.scratch.data();
    a.pool.parallel_tasks(images_ * bands_, [&](int64_t task, int thread) {
      run_band(in, task / bands_, task % bands_, scratch + thread * thread_floats());
    });
    return {};
  }

 private:
  struct Inputs {
    const float *x, *expand_bias, *w, *bias;
    float* y;
  };

  // Expanded rows a band of band_rows_ output rows reads, at most.
  int64_t band_reach() const {
    return std::min(win_.in_h, (band_rows_ - 1) * win_.s_h + (win_.k_h - 1) * win_.d_h + 1);
  }
  // As many output rows as kExpandBandBytes of expanded rows serve, but at least two bands per
  // thread over the images (so a thread slowed by the machine hands some on).
  int64_t band_rows(int threads) const {
    const int64_t row_bytes = m_.rows * win_.in_w * static_cast<int64_t>(sizeof(float));
    const int64_t rows = std::max<int64_t>(1, kExpandBandBytes / std::max<int64_t>(row_bytes, 1));
    const int64_t reach = (win_.k_h - 1) * win_.d_h + 1;
    const int64_t by_bytes = rows > reach ? (rows - reach) / win_.s_h + 1 : 1;
    const int64_t bands_wanted = std::max<int64_t>(1, (2 * threads + images_ - 1) / images_);
    const int64_t by_threads = (win_.out_h + bands_wanted - 1) / bands_wanted;
    return std::max<int64_t>(1, std::min(by_bytes, by_threads));
  }
  int64_t thread_floats() const { return m_.rows * band_ld_ + plane_floats_; }

  void run_band(const Inputs& in, int64_t image, int64_t band, float* scratch) const {
    const int64_t o0 = band * band_rows_, o1 = std::min(win_.out_h, o0 + band_rows_);
    const int64_t top = o0 * win_.s_h - win_.pad_t;  // the input row of the band's first window
    const int64_t r0 = std::max<int64_t>(0, top);
    const int64_t r1 = std::min(win_.in_h, (o1 - 1) * win_.s_h - win_.pad_t + (win_.k_h - 1) * win_.d_h + 1);
    const int64_t rows = std::max<int64_t>(0, r1 - r0), n = rows * win_.in_w, in_hw = win_.in_h * win_.in_w;
    float* expanded = scratch;
    const Activation& expand_act = expand_->activation();
    if (n > 0)
      sparse_matmat_rows(m_, 0, m_.rows, in.x + image * channels_ * in_hw + r0 * win_.in_w, in_hw, n,
                         expanded, band_ld_, nullptr,
                         RowEpilogue{in.expand_bias, expand_act.lo, expand_act.hi});
    Window2d part = win_;
    part.in_h = rows;
    part.pad_t = r0 - top;
    part.out_h = o1 - o0;
    part.pad_b = std::max<int64_t>(0, window_reach(part).rows - part.pad_t - rows);
    const auto kernel = sparse_kernels().depthwise_plane;
    const Activation& act = depthwise_->activation();
    const int64_t window = win_.k_h * win_.k_w, out_hw = win_.out_h * win_.out_w;
    float* y = in.y + (image * m_.rows * win_.out_h + o0) * win_.out_w;
    for (int64_t c = 0; c < m_.rows; ++c)
      kernel(DepthwiseArgs{expanded + c * band_ld_, in.w + c * window, in.bias ? in.bias[c] : 0.0f, &part,
                           act.lo, act.hi, scratch + m_.rows * band_ld_, y + c * out_hw});
  }

  std::unique_ptr<Op> expand_, depthwise_;
  const SparseMatrix& m_;
  int64_t images_ = 0, channels_ = 0;
  Window2d win_;  // the depthwise convolution's, over the whole expanded plane
  int64_t band_rows_ = 1, bands_ = 1, band_ld_ = 0, plane_floats_ = 0;
};

}  // namespace

std::unique_ptr<Op> fuse_expand_depthwise(std::unique_ptr<Op>& expand, std::unique_ptr<Op>& depthwise,
                                          const SparseMatrix& m, const Shape& x, const Shape& mid,
                                          const Shape& w, int threads) {
  const Node& dw = depthwise->node();
  if (dw.op_type != "Conv" || dw.attrs.count(kFusedResidualAttr) ||
      expand->node().attrs.count(kFusedResidualAttr))
    return nullptr;
  if (x.size() != 4 || mid.size() != 4 || w.size() != 4 || mid[1] != m.rows || w[0] != m.rows || w[1] != 1 ||
      mid[0] != x[0] || mid[2] != x[2] || mid[3] != x[3] || x[1] != m.cols)
    return nullptr;
  auto group = dw.attr_int("group", 1);
  auto attrs = read_window_attrs(dw);
  if (!group.ok() || *group != m.rows || !attrs.ok()) return nullptr;
  auto win = make_window(dw, *attrs, Shape{mid[2], mid[3]}, Shape{w[2], w[3]});
  if (!win.ok() || win->out_h < kExpandFuseFromOutputRows) return nullptr;
  const int64_t plane_bytes = shape_numel({mid[1], mid[2], mid[3]}) * static_cast<int64_t>(sizeof(float));
  if (plane_bytes < kExpandFuseFromBytes) return nullptr;
  return std::make_unique<ExpandDepthwiseOp>(std::move(expand), std::move(depthwise), m, x, *win, threads);
}

}  // namespace sparrow
