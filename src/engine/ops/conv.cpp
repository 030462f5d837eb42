// Conv (1-D and 2-D, groups, pads/auto_pad, strides, dilations): one input channel per group
// (depthwise) directly on the planes, otherwise im2col + sgemm per group (small planes of several
// images: one product for a group of images, see run_gathered).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "engine/blas.h"
#include "engine/ops/window.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

namespace {

class ConvOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(attrs_, read_window_attrs(node_));
    SP_ASSIGN_OR_RETURN(group_, node_.attr_int("group", 1));
    if (group_ < 1) return fail("attribute 'group' must be >= 1, got {}", group_);
    return residual_.parse(node_);
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 2, kFusedResidualInput + 1));
    const Shape& x = in[0].shape;
    const Shape& wt = in[1].shape;
    if (in[0].dtype != DType::f32 || in[1].dtype != DType::f32) return fail("inputs must be float");
    if (x.size() < 3 || x.size() != wt.size())
      return fail("input {} and weight {} must both be [N, C, spatial...]", shape_str(x), shape_str(wt));
    n_ = x[0];
    c_ = x[1];
    m_ = wt[0];
    if (c_ % group_ != 0 || m_ % group_ != 0 || wt[1] * group_ != c_)
      return fail("weight {} does not match {} input channels in {} groups", shape_str(wt), c_, group_);
    Shape kernel(wt.begin() + 2, wt.end());
    if (!attrs_.kernel.empty() && attrs_.kernel != std::vector<int64_t>(kernel.begin(), kernel.end()))
      return fail("attribute 'kernel_shape' {} disagrees with weight {}", shape_str(attrs_.kernel),
                  shape_str(wt));
    SP_ASSIGN_OR_RETURN(win_, make_window(node_, attrs_, Shape(x.begin() + 2, x.end()), kernel));
    has_bias_ = in.size() > 2 && in[2].present;
    if (has_bias_ && shape_numel(in[2].shape) != m_)
      return fail("bias {} must have {} values", shape_str(in[2].shape), m_);
    Shape y = {n_, m_};
    if (x.size() == 4) y.push_back(win_.out_h);
    y.push_back(win_.out_w);
    SP_ASSIGN_OR_RETURN(y, residual_.infer(node_, in, y));
    out = {ValueDesc{DType::f32, y}};
    return {};
  }
  size_t scratch_floats(int threads) const override {
    return residual_.scratch_floats(conv_scratch_floats(threads));
  }
  int64_t macs() const override { return n_ * m_ * win_.out_h * win_.out_w * col_rows(); }

  Status run(const RunArgs& args) override {
    const ConvRun run = residual_.start(args, activation_);
    const RunArgs& a = run.args;
    const float* x = a.in[0]->f32_data();
    const float* wt = a.in[1]->f32_data();
    const float* bias = has_bias_ ? a.in[2]->f32_data() : nullptr;
    float* y = run.out;
    act_ = run.act;
    res_ = run.residual;
    if (is_depthwise())
      run_depthwise(a.pool, x, wt, bias, a.scratch.data(), y);
    else if (gathered())
      run_gathered(a.pool, x, wt, bias, a.scratch.data(), y);
    else
      run_products(a, x, wt, bias, y);
    residual_.finish(args, activation_);
    return {};
  }

 private:
  size_t conv_scratch_floats(int threads) const {
    if (is_depthwise()) {
      const int64_t planes = shape_numel({threads, depthwise_thread_scratch_floats()});
      return planes < 0 ? SIZE_MAX : static_cast<size_t>(planes);  // SIZE_MAX: over any memory limit
    }
    if (gathered()) {
      const int64_t columns = shape_numel({col_rows() + m_ / group_, gather_group(), win_.out_h, win_.out_w});
      return columns < 0 ? SIZE_MAX : static_cast<size_t>(columns);  // SIZE_MAX: over any memory limit
    }
    if (is_pointwise()) return 0;
    const int64_t columns = shape_numel({threads, col_rows(), win_.out_h, win_.out_w});
    return columns < 0 ? SIZE_MAX : static_cast<size_t>(columns);  // SIZE_MAX: over any memory limit
  }
  // im2col (unless pointwise) and one product per (image, group), then the epilogue.
  void run_products(const RunArgs& a, const float* x, const float* wt, const float* bias, float* y) const {
    int64_t tasks = n_ * group_;
    int64_t chunks = std::min<int64_t>(a.pool.size(), tasks);
    if (chunks > 1) {
      int64_t step = (tasks + chunks - 1) / chunks;
      a.pool.parallel_for(chunks, [&](int64_t c) {
        float* col = a.scratch.data() + (is_pointwise() ? 0 : c * col_rows() * win_.out_h * win_.out_w);
        for (int64_t t = c * step; t < std::min(tasks, (c + 1) * step); ++t)
          run_task(nullptr, t, x, wt, y, col);
      });
    } else {
      for (int64_t t = 0; t < tasks; ++t) run_task(&a.pool, t, x, wt, y, a.scratch.data());
    }
    epilogue(a.pool, bias, y);
  }
  int64_t col_rows() const { return (c_ / group_) * win_.k_h * win_.k_w; }
  bool is_pointwise() const {
    return win_.k_h == 1 && win_.k_w == 1 && win_.s_h == 1 && win_.s_w == 1 && win_.pad_t == 0 &&
           win_.pad_l == 0 && win_.pad_b == 0 && win_.pad_r == 0;
  }
  bool is_depthwise() const { return group_ > 1 && c_ == group_; }
  // Depthwise layers of at least kDepthwiseLanes channels (multiplier 1) whose output planes hold
  // at most kLanesMaxPositions positions and input planes at most kLanesMaxInputPositions run
  // kDepthwiseLanes channels at once with the channels in vector lanes (their planes interleaved on
  // the way in and out), unless the plane kernel runs their window under lane masks; other planes
  // run one at a time with the plane's columns in the lanes.
  static constexpr int64_t kLanesMaxPositions = 14 * 14;
  static constexpr int64_t kLanesMaxInputPositions = 28 * 28;
  bool depthwise_in_lanes() const {
    return m_ == c_ && c_ >= kDepthwiseLanes && win_.out_h * win_.out_w <= kLanesMaxPositions &&
           win_.in_h * win_.in_w <= kLanesMaxInputPositions &&
           !depthwise_plane_masked(sparse_kernels().isa, win_);
  }
  // A thread's scratch for depthwise_*: the larger of a padded plane and, with lanes, a group's
  // interleaved input and output plus the interleaved kernel's scratch (-1 when that overflows).
  int64_t depthwise_thread_scratch_floats() const {
    const int64_t plane = depthwise_scratch_floats(win_);
    if (!depthwise_in_lanes()) return plane;
    const int64_t interleaved =
        shape_numel({kDepthwiseLanes, win_.in_h * win_.in_w + win_.out_h * win_.out_w});
    const int64_t lanes = depthwise_lanes_scratch_floats(win_);
    if (plane < 0 || interleaved < 0 || lanes < 0 || interleaved > INT64_MAX - lanes) return -1;
    return std::max(plane, interleaved + lanes);
  }
  // Every output plane from its one input plane, bias and activation included.
  void run_depthwise(ThreadPool& pool, const float* x, const float* wt, const float* bias, float* scratch,
                     float* y) const {
    const int64_t in_lanes = depthwise_in_lanes() ? c_ / kDepthwiseLanes * kDepthwiseLanes : 0;
    if (in_lanes > 0) run_depthwise_lanes(pool, x, wt, bias, scratch, y);
    if (in_lanes < m_) run_depthwise_planes(pool, in_lanes, x, wt, bias, scratch, y);
  }
  // Groups of kDepthwiseLanes whole channels (multiplier 1), each image's groups in turn.
  void run_depthwise_lanes(ThreadPool& pool, const float* x, const float* wt, const float* bias,
                           float* scratch, float* y) const {
    constexpr int64_t L = kDepthwiseLanes;
    const int64_t in_hw = win_.in_h * win_.in_w, out_hw = win_.out_h * win_.out_w,
                  window = win_.k_h * win_.k_w;
    const int64_t groups = c_ / L, tasks = n_ * groups;
    if (tasks == 0) return;
    const int64_t chunks = std::min<int64_t>(pool.size(), tasks), step = (tasks + chunks - 1) / chunks;
    const SparseKernels& k = sparse_kernels();
    pool.parallel_for(chunks, [&](int64_t chunk) {
      float* xi = scratch + chunk * depthwise_thread_scratch_floats();
      float* yi = xi + in_hw * L;
      float* padded = yi + out_hw * L;
      for (int64_t task = chunk * step; task < std::min(tasks, (chunk + 1) * step); ++task) {
        const int64_t n = task / groups, c0 = task % groups * L;
        k.transpose(TransposeArgs{x + (n * c_ + c0) * in_hw, L, in_hw, 0, L, xi, false});
        const Activation in_kernel = res_ ? Activation{} : act_;
        k.depthwise_lanes(DepthwiseLanesArgs{xi, wt + c0 * window, bias ? bias + c0 : nullptr, &win_,
                                             in_kernel.lo, in_kernel.hi, padded, yi});
        float* planes = y + (n * m_ + c0) * out_hw;
        k.transpose(TransposeArgs{yi, out_hw, L, 0, out_hw, planes, false});
        if (res_) add_residual(planes, L, out_hw, res_ + (n * m_ + c0) * out_hw);
      }
    });
  }
  // Output channels [first, m_) of every image, one plane at a time.
  void run_depthwise_planes(ThreadPool& pool, int64_t first, const float* x, const float* wt,
                            const float* bias, float* scratch, float* y) const {
    const int64_t multiplier = m_ / group_, in_hw = win_.in_h * win_.in_w, out_hw = win_.out_h * win_.out_w;
    const int64_t window = win_.k_h * win_.k_w, per_image = m_ - first, planes = n_ * per_image;
    if (planes == 0) return;
    const int64_t chunks = std::min<int64_t>(pool.size(), planes), step = (planes + chunks - 1) / chunks;
    const auto kernel = sparse_kernels().depthwise_plane;
    const Activation in_kernel = res_ ? Activation{} : act_;
    pool.parallel_for(chunks, [&](int64_t c) {
      float* padded = scratch + c * depthwise_thread_scratch_floats();
      for (int64_t plane = c * step; plane < std::min(planes, (c + 1) * step); ++plane) {
        const int64_t n = plane / per_image, m = first + plane % per_image;
        float* yp = y + (n * m_ + m) * out_hw;
        kernel(DepthwiseArgs{x + (n * c_ + m / multiplier) * in_hw, wt + m * window, bias ? bias[m] : 0.0f,
                             &win_, in_kernel.lo, in_kernel.hi, padded, yp});
        if (res_) add_residual(yp, 1, out_hw, res_ + (n * m_ + m) * out_hw);
      }
    });
  }
  // Small output planes of several images: per group, the images' im2col columns side by side,
  // [C/group * kh * kw, images * out_hw], and one product for all of them, so W is read once per
  // group of images instead of once per image (a 4x4 plane's product with one image is 16 columns
  // wide, and a 512 x 4608 W is streamed from memory for each). At most kGatherMostColumns columns
  // at a time (the scratch does not grow with the batch).
  static constexpr int64_t kGatherMostPositions = 64, kGatherMostColumns = 256;
  static constexpr int64_t kParallelFromColumnFloats = int64_t{1} << 16;
  bool gathered() const { return n_ > 1 && win_.out_h * win_.out_w <= kGatherMostPositions; }
  int64_t gather_group() const {
    return std::clamp<int64_t>(kGatherMostColumns / (win_.out_h * win_.out_w), 1, n_);
  }
  void run_gathered(ThreadPool& pool, const float* x, const float* wt, const float* bias, float* scratch,
                    float* y) const {
    const int64_t in_hw = win_.in_h * win_.in_w, out_hw = win_.out_h * win_.out_w;
    const int64_t cg = c_ / group_, mg = m_ / group_;
    for (int64_t first = 0; first < n_; first += gather_group()) {
      const int64_t images = std::min(gather_group(), n_ - first), ld = images * out_hw;
      float* col = scratch;
      float* yt = col + col_rows() * ld;
      for (int64_t g = 0; g < group_; ++g) {
        auto unroll = [&](int64_t i) {
          im2col(x + ((first + i) * c_ + g * cg) * in_hw, cg, win_, col + i * out_hw, ld);
        };
        if (col_rows() * ld < kParallelFromColumnFloats)  // a parallel region would cost more
          for (int64_t i = 0; i < images; ++i) unroll(i);
        else
          pool.parallel_for(images, unroll);
        sgemm_parallel(pool, false, false, mg, ld, col_rows(), 1.0f, wt + g * mg * col_rows(), col_rows(),
                       col, ld, 0.0f, yt, ld);
        pool.parallel_range(mg, 16, [&](int64_t begin, int64_t end) {
          for (int64_t i = 0; i < images; ++i) {
            const int64_t at = ((first + i) * m_ + g * mg + begin) * out_hw;
            add_bias_activate_rows(yt + begin * ld + i * out_hw, ld, end - begin, out_hw,
                                   bias ? bias + g * mg + begin : nullptr, act_, y + at,
                                   res_ ? res_ + at : nullptr);
          }
        });
      }
    }
  }
  // One (image, group) product; `pool` non-null means parallelize the product itself.
  void run_task(ThreadPool* pool, int64_t task, const float* x, const float* wt, float* y, float* col) const {
    int64_t n = task / group_, g = task % group_;
    int64_t cg = c_ / group_, mg = m_ / group_, out_hw = win_.out_h * win_.out_w;
    const float* xg = x + (n * c_ + g * cg) * win_.in_h * win_.in_w;
    const float* b = xg;
    if (!is_pointwise()) {
      if (pool)
        im2col_parallel(*pool, xg, cg, win_, col);
      else
        im2col(xg, cg, win_, col);
      b = col;
    }
    const float* wg = wt + g * mg * col_rows();
    float* yg = y + (n * m_ + g * mg) * out_hw;
    if (pool)
      sgemm_parallel(*pool, false, false, mg, out_hw, col_rows(), 1.0f, wg, col_rows(), b, out_hw, 0.0f, yg,
                     out_hw);
    else
      sgemm(false, false, mg, out_hw, col_rows(), 1.0f, wg, col_rows(), b, out_hw, 0.0f, yg, out_hw);
  }
  // Adds the bias (when given) and the residual (when fused) and applies the fused activation, in
  // one pass over y, its planes split over the threads.
  void epilogue(ThreadPool& pool, const float* bias, float* y) const {
    if (!bias && act_.none() && !res_) return;
    const auto kernel = sparse_kernels().bias_activation;
    const int64_t out_hw = win_.out_h * win_.out_w;
    pool.parallel_range(n_ * m_, 4, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        float* p = y + plane * out_hw;
        kernel(BiasActivationArgs{p, out_hw, bias ? bias[plane % m_] : kNoBias, act_.lo, act_.hi, p, 1, 0, 0,
                                  res_ ? res_ + plane * out_hw : nullptr});
      }
    });
  }
  // planes[i] = act(planes[i] + residual[i]) over `count` planes of n, the depthwise kernels having
  // added the bias.
  void add_residual(float* planes, int64_t count, int64_t n, const float* residual) const {
    sparse_kernels().bias_activation(
        BiasActivationArgs{planes, n, kNoBias, act_.lo, act_.hi, planes, count, n, n, residual});
  }

  WindowAttrs attrs_;
  int64_t group_ = 1;
  Window2d win_;
  int64_t n_ = 0, c_ = 0, m_ = 0;
  bool has_bias_ = false;
  FusedResidual residual_;
  // Set by run(): the activation the convolution's epilogue applies and the residual it adds.
  Activation act_;
  const float* res_ = nullptr;
};

}  // namespace

void register_conv_ops(OpRegistry& r) {
  r["Conv"] = make_op<ConvOp>;
}

}  // namespace sparrow
