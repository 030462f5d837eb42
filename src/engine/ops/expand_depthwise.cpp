// The expansion and its depthwise convolution in bands of output rows (expand_depthwise.h). A band
// of depthwise output rows [o0, o1) reads expanded rows [r0, r1) (its windows' reach, clipped to
// the plane); those are computed for every expanded channel into the thread's buffer, rows
// r1 - r0 positions wide, then each channel's depthwise plane kernel runs over them as over a plane
// of r1 - r0 rows whose top padding is what the band's first window reaches above the plane.
// Neighbouring bands compute the rows their windows share each, so bands are as tall as the buffer
// allows while every thread still gets two, and never so short that the shared rows are more than
// half of what a band computes.
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

// How the depthwise output rows of each image are cut into bands, and what a thread's scratch holds
// for one: the band's expanded rows (every expanded channel, rows `ld` floats apart), then the
// depthwise plane kernel's scratch.
struct Bands {
  Bands(int64_t expanded, const Window2d& win, int64_t images, int threads) {
    rows = band_rows(expanded, win, images, threads);
    count = (win.out_h + rows - 1) / rows;
    reach = std::min(win.in_h, (rows - 1) * win.s_h + (win.k_h - 1) * win.d_h + 1);
    ld = row_stride(reach * win.in_w);
    Window2d tallest = win;
    tallest.out_h = rows;
    tallest.in_h = reach;
    plane_floats = (depthwise_scratch_floats(tallest) + 15) / 16 * 16;
    thread_floats = expanded * ld + plane_floats;
  }
  // As many output rows as kExpandBandBytes of expanded rows serve, but at least two bands per
  // thread over the images (so a thread slowed by the machine hands some on), and at least twice
  // the rows a window adds below its first (neighbours' shared rows at most half a band's).
  static int64_t band_rows(int64_t expanded, const Window2d& win, int64_t images, int threads) {
    const int64_t row_bytes = expanded * win.in_w * static_cast<int64_t>(sizeof(float));
    const int64_t rows = std::max<int64_t>(1, kExpandBandBytes / std::max<int64_t>(row_bytes, 1));
    const int64_t reach = (win.k_h - 1) * win.d_h + 1;
    const int64_t by_bytes = rows > reach ? (rows - reach) / win.s_h + 1 : 1;
    const int64_t bands_wanted = std::max<int64_t>(1, (2 * threads + images - 1) / images);
    const int64_t by_threads = (win.out_h + bands_wanted - 1) / bands_wanted;
    const int64_t fewest = (2 * (reach - 1) + win.s_h - 1) / win.s_h;
    return std::min(win.out_h, std::max({by_bytes < by_threads ? by_bytes : by_threads, fewest, int64_t{1}}));
  }
  int64_t rows = 1, count = 1, reach = 1, ld = 0, plane_floats = 0, thread_floats = 0;
};

class ExpandDepthwiseOp : public Op {
 public:
  ExpandDepthwiseOp(std::unique_ptr<Op> expand, std::unique_ptr<Op> depthwise, const SparseMatrix& m,
                    const Shape& x, const Window2d& win, const Bands& bands)
      : Op(expand->node(), 0),
        expand_(std::move(expand)),
        depthwise_(std::move(depthwise)),
        m_(m),
        images_(x[0]),
        channels_(x[1]),
        win_(win),
        bands_(bands) {
    activation_ = expand_->activation();
  }

  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    if (in.size() != kExpandDepthwiseInputs ||
        in[kExpandX].shape != Shape{images_, channels_, win_.in_h, win_.in_w})
      return fail("the fused expansion and depthwise convolution take {} inputs, the first of shape {}",
                  +kExpandDepthwiseInputs, shape_str({images_, channels_, win_.in_h, win_.in_w}));
    out = {ValueDesc{DType::f32, Shape{images_, m_.rows, win_.out_h, win_.out_w}}};
    return {};
  }
  int64_t macs() const override { return expand_->macs() + depthwise_->macs(); }
  size_t scratch_floats(int threads) const override {
    return static_cast<size_t>(threads) * static_cast<size_t>(bands_.thread_floats);
  }
  const Op* next_in_step() const override { return depthwise_.get(); }

  Status run(const RunArgs& a) override {
    const Inputs in{a.in[kExpandX]->f32_data(), a.in[kExpandBias] ? a.in[kExpandBias]->f32_data() : nullptr,
                    a.in[kDepthwiseWeight]->f32_data(),
                    a.in[kDepthwiseBias] ? a.in[kDepthwiseBias]->f32_data() : nullptr, a.out[0]->f32_data()};
    float* scratch = a.scratch.data();
    a.pool.parallel_tasks(images_ * bands_.count, [&](int64_t task, int thread) {
      run_band(in, task / bands_.count, task % bands_.count, scratch + thread * bands_.thread_floats);
    });
    return {};
  }

 private:
  struct Inputs {
    const float *x, *expand_bias, *w, *bias;
    float* y;
  };

  void run_band(const Inputs& in, int64_t image, int64_t band, float* scratch) const {
    const int64_t o0 = band * bands_.rows, o1 = std::min(win_.out_h, o0 + bands_.rows);
    const int64_t top = o0 * win_.s_h - win_.pad_t;  // the input row of the band's first window
    const int64_t r0 = std::max<int64_t>(0, top);
    const int64_t r1 = std::min(win_.in_h, (o1 - 1) * win_.s_h - win_.pad_t + (win_.k_h - 1) * win_.d_h + 1);
    const int64_t rows = std::max<int64_t>(0, r1 - r0), n = rows * win_.in_w, in_hw = win_.in_h * win_.in_w;
    float* expanded = scratch;
    const Activation& expand_act = expand_->activation();
    if (n > 0)
      sparse_matmat_rows(m_, 0, m_.rows, in.x + image * channels_ * in_hw + r0 * win_.in_w, in_hw, n,
                         expanded, bands_.ld, nullptr,
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
      kernel(DepthwiseArgs{expanded + c * bands_.ld, in.w + c * window, in.bias ? in.bias[c] : 0.0f, &part,
                           act.lo, act.hi, scratch + m_.rows * bands_.ld, y + c * out_hw});
  }

  std::unique_ptr<Op> expand_, depthwise_;
  const SparseMatrix& m_;
  int64_t images_ = 0, channels_ = 0;
  Window2d win_;  // the depthwise convolution's, over the whole expanded plane
  Bands bands_;
};

}  // namespace

std::unique_ptr<Op> fuse_expand_depthwise(std::unique_ptr<Op>& expand, std::unique_ptr<Op>& depthwise,
                                          const SparseMatrix& m, const Shape& x, const Shape& mid,
                                          const Shape& w, int threads, int64_t most_scratch_floats) {
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
  const Bands bands(m.rows, *win, x[0], threads);
  if (threads * bands.thread_floats > most_scratch_floats) return nullptr;
  return std::make_unique<ExpandDepthwiseOp>(std::move(expand), std::move(depthwise), m, x, *win, bands);
}

}  // namespace sparrow
