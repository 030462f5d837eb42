// Gemm, MatMul and Conv on compressed weights: the sparse engine inside the executor.
//
// Fully connected: one sample at a time, EIE style (the leading non-zero inputs are listed, and the
// threads split those inputs' columns of the matrix's one-sample layout, see sparse_run.h); from
// kSparseFcBatchedFrom samples on, inputs are transposed to [in, batch] and each thread runs the batched
// kernel over a balanced contiguous range of rows with the batch in registers. Convolution: sparse W [M,
// C*kh*kw] times the input's (channel, tap) rows, per image, with the output positions as the batched
// kernel's batch, and no im2col matrix: each row is a shifted view of the channel's zero-padded input plane
// (split by stride phase when strided, see pad_phases), output (oh, ow) at position oh * cols + ow of a
// "wide" output row (the positions between rows are computed and dropped). 1x1 windows at stride 1 without
// padding read the input itself. A grouped convolution's W is [M, C/G*kh*kw]: the inputs are formed for
// all C channels and each group's filters read them from the group's first channel on (RowGroups).
#include "engine/ops/sparse_ops.h"

#include <algorithm>
#include <cstring>

#include "engine/ops/window.h"
#include "engine/sparse/sparse_run.h"

namespace sparrow {

namespace {

// The same in place on y [rows, per_row], the residual (when not null) laid out as y.
void add_bias_activate(float* y, int64_t rows, int64_t per_row, const float* bias, const Activation act,
                       const float* residual) {
  if (!bias && act.none() && !residual) return;
  add_bias_activate_rows(y, per_row, rows, per_row, bias, act, y, residual);
}

// y[i] = act(y[i] + scale * bias[i]) for i in [0, n) (no bias when it is null): a fully connected
// layer's output row, in passes the compiler vectorizes.
void add_bias_row_activate(float* y, int64_t n, const float* bias, float scale, const Activation act) {
  if (bias)
    for (int64_t i = 0; i < n; ++i) y[i] += scale * bias[i];
  act.apply(y, n);
}

// Outputs (batch x rows) of a fully connected layer from which its epilogue is split over the
// threads.
constexpr int64_t kSplitEpilogueFrom = int64_t{1} << 16;

void transpose_on_caller(const float* src, int64_t rows, int64_t cols, float* dst) {
  sparse_kernels().transpose(TransposeArgs{src, rows, cols, 0, rows, dst, false});
}

// The product of `dims` as a count of floats, or SIZE_MAX past kMaxTensorElements.
size_t floats_or_max(const Shape& dims) {
  const int64_t n = shape_numel(dims);
  return n < 0 ? SIZE_MAX : static_cast<size_t>(n);
}

int64_t panel_width(int64_t n) {
  return std::min(n, kSparseFcPanel);
}
// Floats of a panel's Xt [cols, width] in the scratch, whole 64-byte lines, so that its Yt and
// the next thread's copy start on a line of their own too.
int64_t panel_xt_floats(const SparseMatrix& m, int64_t n) {
  return (m.cols * panel_width(n) + 15) / 16 * 16;
}
int64_t panel_floats(const SparseMatrix& m, int64_t n) {
  return panel_xt_floats(m, n) + (m.rows * panel_width(n) + 15) / 16 * 16;
}

// The panel's rows [row_begin, row_end) of Yt [rows, n] given the epilogue.
void apply_epilogue(const ProductEpilogue& e, float* yt, int64_t row_begin, int64_t row_end, int64_t n) {
  if (e.none()) return;
  if (e.bias)
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float b = e.bias_scale * e.bias[r];
      float* row = yt + r * n;
      for (int64_t i = 0; i < n; ++i) row[i] += b;
    }
  e.act.apply(yt + row_begin * n, (row_end - row_begin) * n);
}

// Where a panel of `n` samples lies: its samples' rows of x and y, and, in `scratch`, its
// transposed inputs Xt [cols, n] and outputs Yt [rows, n].
struct Panel {
  Panel(const SparseMatrix& m, const float* x, int64_t samples, float* y, int64_t p, float* scratch)
      : n(std::min(kSparseFcPanel, samples - p * kSparseFcPanel)),
        x(x + p * kSparseFcPanel * m.cols),
        y(y + p * kSparseFcPanel * m.rows),
        xt(scratch),
        yt(scratch + panel_xt_floats(m, samples)) {}
  int64_t n;
  const float* x;
  float* y;
  float* xt;
  float* yt;
};

// Rows [row_begin, row_end) of a panel whose Xt is in place: multiplied, given the epilogue and
// written back to the panel's rows of y.
void panel_rows(const SparseMatrix& m, const Panel& panel, int64_t row_begin, int64_t row_end,
                const ProductEpilogue& epilogue) {
  // The kernels add a bias unscaled (Gemm's beta 1, the usual case) as they store each row.
  const bool in_kernel = epilogue.bias_scale == 1.0f;
  const RowEpilogue rows =
      in_kernel ? RowEpilogue{epilogue.bias, epilogue.act.lo, epilogue.act.hi} : RowEpilogue{};
  sparse_matmat_rows(m, row_begin, row_end, panel.xt, panel.n, panel.n, panel.yt, panel.n, nullptr, rows);
  if (!in_kernel) apply_epilogue(epilogue, panel.yt, row_begin, row_end, panel.n);
  sparse_kernels().transpose(TransposeArgs{panel.yt, m.rows, panel.n, row_begin, row_end, panel.y, false});
}

// A whole panel on the calling thread.
void run_panel(const SparseMatrix& m, const Panel& panel, const ProductEpilogue& epilogue) {
  transpose_on_caller(panel.x, panel.n, m.cols, panel.xt);
  panel_rows(m, panel, 0, m.rows, epilogue);
}

// transpose / transpose_add over the pool, in row ranges of whole 8-row tiles.
void transpose_rows(ThreadPool& pool, const float* src, int64_t rows, int64_t cols, float* dst, bool add) {
  const auto kernel = sparse_kernels().transpose;
  const int64_t tiles = (rows + 7) / 8;
  pool.parallel_range(tiles, std::max<int64_t>(1, 512 / std::max<int64_t>(cols, 1)),
                      [&](int64_t t0, int64_t t1) {
                        kernel(TransposeArgs{src, rows, cols, t0 * 8, std::min(rows, t1 * 8), dst, add});
                      });
}

class SparseFcOp : public Op {
 public:
  SparseFcOp(const Node& node, int64_t opset, const SparseMatrix& m, int threads)
      : Op(node, opset), m_(m), threads_(threads) {}

  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    const Shape& x = in[0].shape;
    if (in[0].dtype != DType::f32 || x.empty() || x.back() != m_.cols)
      return fail("input {} does not end with the weight's {} inputs", shape_str(x), m_.cols);
    if (node_.op_type == "Gemm" && x.size() != 2) return fail("Gemm input {} must be 2-D", shape_str(x));
    batch_ = shape_numel(x) / m_.cols;
    has_bias_ = in.size() > 2 && in[2].present;
    if (has_bias_ && shape_numel(in[2].shape) != m_.rows)
      return fail("bias {} must hold {} values", shape_str(in[2].shape), m_.rows);
    SP_ASSIGN_OR_RETURN(beta_, node_.attr_float("beta", 1.0f));
    Shape y(x.begin(), x.end() - 1);
    y.push_back(m_.rows);
    workspace_.reserve(m_, threads_);
    bounds_ = balanced_row_bounds(m_, threads_);
    out = {ValueDesc{DType::f32, y}};
    return {};
  }
  size_t scratch_floats(int threads) const override {
    return batch_ >= kSparseFcBatchedFrom
               ? static_cast<size_t>(sparse_product_by_panels_scratch(m_, batch_, threads))
               : 0;
  }
  int64_t macs() const override { return batch_ * m_.nonzeros; }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    const float* bias = has_bias_ ? a.in[2]->f32_data() : nullptr;
    if (batch_ >= kSparseFcBatchedFrom) {
      sparse_product_by_panels(a.pool, m_, bounds_, x, batch_, y, a.scratch.data(),
                               ProductEpilogue{bias, beta_, activation_});
      return {};
    }
    for (int64_t n = 0; n < batch_; ++n) run_one(a, x + n * m_.cols, y + n * m_.rows);
    if (!bias && activation_.none()) return {};
    auto rows = [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n)
        add_bias_row_activate(y + n * m_.rows, m_.rows, bias, beta_, activation_);
    };
    if (batch_ * m_.rows >= kSplitEpilogueFrom)
      a.pool.parallel_range(batch_, 1, rows);
    else
      rows(0, batch_);
    return {};
  }

 private:
  void run_one(const RunArgs& a, const float* x, float* y) {
    sparse_matvec(a.pool, m_, x, y, workspace_, SpmvScheme::columns);
  }

  const SparseMatrix& m_;
  int64_t batch_ = 0;
  bool has_bias_ = false;
  float beta_ = 1.0f;
  SpmvWorkspace workspace_;
  std::vector<int64_t> bounds_;
  int threads_ = 1;
};

class SparseConvOp : public Op {
 public:
  SparseConvOp(const Node& node, int64_t opset, const SparseMatrix& m, int threads)
      : Op(node, opset), m_(m), threads_(threads) {}

  Status parse() override {
    SP_ASSIGN_OR_RETURN(attrs_, read_window_attrs(node_));
    SP_ASSIGN_OR_RETURN(group_, node_.attr_int("group", 1));
    if (group_ < 1) return fail("attribute 'group' must be >= 1, got {}", group_);
    return residual_.parse(node_);
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    const Shape& x = in[0].shape;
    const Shape& w = in[1].shape;
    if (in[0].dtype != DType::f32 || x.size() < 3 || x.size() != w.size() || x[1] != w[1] * group_ ||
        w[0] != m_.rows || m_.rows % group_ != 0)
      return fail("input {} does not match weight {} in {} groups", shape_str(x), shape_str(w), group_);
    if (group_ > 1 && (m_.rows / group_) % kBlockRows != 0 && row_blocks_fit(m_))
      return fail("{} filters per group are not whole blocks of {} rows", m_.rows / group_, kBlockRows);
    SP_ASSIGN_OR_RETURN(
        win_, make_window(node_, attrs_, Shape(x.begin() + 2, x.end()), Shape(w.begin() + 2, w.end())));
    if (m_.cols != w[1] * win_.k_h * win_.k_w) return fail("weight matrix has {} columns", m_.cols);
    images_ = x[0];
    channels_ = x[1];
    has_bias_ = in.size() > 2 && in[2].present;
    Shape y = {x[0], m_.rows};
    if (x.size() == 4) y.push_back(win_.out_h);
    y.push_back(win_.out_w);
    SP_ASSIGN_OR_RETURN(const Shape out_shape, residual_.infer(node_, in, y));
    out = {ValueDesc{DType::f32, out_shape}};
    bounds_ = balanced_row_bounds(m_, threads_);
    per_position_ = sparse_conv_per_position(node_, x);
    if (per_position_) workspace_.reserve(m_, threads_);
    if (!per_position_ && !gathered() && !pointwise()) SP_RETURN_IF_ERROR(plan_direct());
    return {};
  }
  size_t scratch_floats(int) const override { return residual_.scratch_floats(conv_scratch_floats()); }
  int64_t macs() const override { return images_ * m_.nonzeros * win_.out_h * win_.out_w; }
  // See sparse_pointwise_matrix.
  const SparseMatrix* pointwise_matrix() const {
    const bool image_by_image = pointwise() && !per_position_ && !gathered();
    return image_by_image && group_ == 1 && !node_.attrs.count(kFusedResidualAttr) ? &m_ : nullptr;
  }

  Status run(const RunArgs& args) override {
    const ConvRun run = residual_.start(args, activation_);
    act_ = run.act;
    res_ = run.residual;
    if (per_position_)
      run_per_position(run.args, run.out);
    else if (gathered())
      run_gathered(run.args, run.out);
    else
      run_images(run.args, run.out);
    residual_.finish(args, activation_);
    return {};
  }

 private:
  // Too many floats to count (shape_numel's -1) is reported as the most there can be, which the plan
  // refuses as over its memory limit.
  size_t conv_scratch_floats() const {
    if (per_position_) {  // the positions' columns, as they are and transposed, and one output column
      const size_t columns = floats_or_max({2, images_, win_.out_h, win_.out_w, m_.cols});
      return columns > SIZE_MAX - static_cast<size_t>(m_.rows) ? SIZE_MAX : columns + m_.rows;
    }
    if (gathered()) return floats_or_max({channels_ * win_.k_h * win_.k_w + m_.rows, gathered_ld()});
    if (pointwise()) return 0;
    const size_t planes = floats_or_max({channels_, phases(), padded_rows_, padded_cols_});
    if (writes_rows_in_place()) return planes;
    const size_t wide = floats_or_max({m_.rows, wide_});
    return planes > SIZE_MAX - wide ? SIZE_MAX : planes + wide;
  }
  // Each image on its own: read in place (pointwise) or from its padded planes (run_direct).
  void run_images(const RunArgs& a, float* out) {
    const int64_t hw = win_.out_h * win_.out_w;
    const float* bias = has_bias_ ? a.in[2]->f32_data() : nullptr;
    for (int64_t n = 0; n < images_; ++n) {
      const float* x = a.in[0]->f32_data() + n * channels_ * win_.in_h * win_.in_w;
      float* y = out + n * m_.rows * hw;
      const float* residual = res_ ? res_ + n * m_.rows * hw : nullptr;
      if (!pointwise()) {
        run_direct(a, x, y, residual);
        continue;
      }
      if (splits_positions()) {
        run_pointwise_by_positions(a.pool, x, y, bias, residual);
        continue;
      }
      if (!residual) {  // the kernels add the bias and apply the activation as they store each row
        sparse_matmat(a.pool, m_, bounds_, x, hw, hw, y, hw, nullptr, {}, row_groups(hw),
                      RowEpilogue{bias, act_.lo, act_.hi});
        continue;
      }
      sparse_matmat(
          a.pool, m_, bounds_, x, hw, hw, y, hw, nullptr,
          [&](int64_t begin, int64_t end) {
            add_bias_activate(y + begin * hw, end - begin, hw, bias ? bias + begin : nullptr, act_,
                              residual ? residual + begin * hw : nullptr);
          },
          row_groups(hw));
    }
  }
  // A pointwise convolution that narrows (more input channels than filters) splits each image's
  // output positions over the threads, so that each reads only its share of the input planes, the
  // larger side; the others split the filters, and every thread reads all of the input.
  bool splits_positions() const {
    const int64_t hw = win_.out_h * win_.out_w;
    return pointwise() && group_ == 1 && threads_ > 1 && hw >= kPointwiseSplitPositionsFrom * threads_ &&
           channels_ > m_.rows;
  }
  // One image of a pointwise convolution (x [channels, hw] -> y [filters, hw]), its positions in one
  // range per thread, whole 16-position chunks each, every filter multiplied and given its epilogue.
  void run_pointwise_by_positions(ThreadPool& pool, const float* x, float* y, const float* bias,
                                  const float* residual) {
    const int64_t hw = win_.out_h * win_.out_w, chunks = (hw + 15) / 16;
    const int parts = pool.size();
    pool.parallel_for(parts, [&](int64_t t) {
      const int64_t begin = std::min(hw, chunks * t / parts * 16),
                    end = std::min(hw, chunks * (t + 1) / parts * 16);
      if (begin == end) return;
      // Without a residual, the kernels add the bias and apply the activation as they store each row.
      const float* res = residual ? residual + begin : nullptr;
      const RowEpilogue in_kernel = res ? RowEpilogue{} : RowEpilogue{bias, act_.lo, act_.hi};
      sparse_matmat_rows(m_, 0, m_.rows, x + begin, hw, end - begin, y + begin, hw, nullptr, in_kernel);
      if (res) add_bias_activate_rows(y + begin, hw, m_.rows, end - begin, bias, act_, y + begin, res, hw);
    });
  }
  int64_t phases() const { return win_.s_h * win_.s_w; }
  int64_t group_channels() const { return channels_ / group_; }
  // With groups, each group's filters read its own input channels, whose rows of the product's
  // input lie `per_channel` floats apart per channel.
  RowGroups row_groups(int64_t per_channel) const {
    return group_ == 1 ? RowGroups{} : RowGroups{m_.rows / group_, group_channels() * per_channel};
  }
  // Where each (channel, tap) column's row lies in the padded phase planes (see the top).
  Status plan_direct() {
    const auto [reach_h, reach_w] = window_reach(win_);
    padded_rows_ = (reach_h + win_.s_h - 1) / win_.s_h;
    padded_cols_ = (reach_w + win_.s_w - 1) / win_.s_w;
    wide_ = (win_.out_h - 1) * padded_cols_ + win_.out_w;
    if (shape_numel({channels_, phases(), padded_rows_, padded_cols_}) < 0)
      return fail("{} channels of {} x {} padded planes in {} stride phases are too many values", channels_,
                  padded_rows_, padded_cols_, phases());
    x_rows_.clear();
    for (int64_t c = 0; c < group_channels(); ++c)
      for (int64_t i = 0; i < win_.k_h; ++i)
        for (int64_t j = 0; j < win_.k_w; ++j) {
          const int64_t di = i * win_.d_h, dj = j * win_.d_w;
          const int64_t plane = c * phases() + (di % win_.s_h) * win_.s_w + dj % win_.s_w;
          x_rows_.push_back((plane * padded_rows_ + di / win_.s_h) * padded_cols_ + dj / win_.s_w);
        }
    return {};
  }
  void run_direct(const RunArgs& a, const float* x, float* y, const float* residual) {
    const int64_t planes = phases() * padded_rows_ * padded_cols_, in_hw = win_.in_h * win_.in_w;
    float* padded = a.scratch.data();
    float* wide = padded + channels_ * planes;
    a.pool.parallel_range(channels_, 4, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c)
        pad_phases(x + c * in_hw, win_, padded_rows_, padded_cols_, padded + c * planes);
    });
    const float* bias = has_bias_ ? a.in[2]->f32_data() : nullptr;
    if (!residual && writes_rows_in_place()) {
      run_direct_rows(a.pool, padded, planes, y, bias);
      return;
    }
    const int64_t out_hw = win_.out_h * win_.out_w;
    const auto kernel = sparse_kernels().bias_activation;
    sparse_matmat(
        a.pool, m_, bounds_, padded, 0, wide_, wide, wide_, x_rows_.data(),
        [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r)
            kernel(BiasActivationArgs{wide + r * wide_, win_.out_w, bias ? bias[r] : kNoBias, act_.lo,
                                      act_.hi, y + r * out_hw, win_.out_h, padded_cols_, win_.out_w,
                                      residual ? residual + r * out_hw : nullptr});
        },
        row_groups(planes));
  }
  // Output rows at least kConvRowsInPlaceFromWidth wide, without a fused residual: each output row
  // of every filter is multiplied straight into y, given the bias and activation as the kernels
  // store it (RowEpilogue), the output rows split over the threads. No wide plane is written and
  // copied (at 112 x 112 that copy moved as many bytes as the output).
  bool writes_rows_in_place() const {
    return win_.out_w >= kConvRowsInPlaceFromWidth && !node_.attrs.count(kFusedResidualAttr);
  }
  void run_direct_rows(ThreadPool& pool, const float* padded, int64_t planes, float* y, const float* bias) {
    const int64_t out_hw = win_.out_h * win_.out_w;
    const RowEpilogue epilogue{bias, act_.lo, act_.hi};
    const RowGroups groups = row_groups(planes);
    const int64_t group_rows = groups.rows > 0 ? groups.rows : m_.rows;
    auto output_rows = [&](int64_t begin, int64_t end) {
      for (int64_t oh = begin; oh < end; ++oh)
        for (int64_t g = 0; g * group_rows < m_.rows; ++g)
          sparse_matmat_rows(m_, g * group_rows, (g + 1) * group_rows,
                             padded + g * groups.x_stride + oh * padded_cols_, 0, win_.out_w,
                             y + oh * win_.out_w, out_hw, x_rows_.data(), epilogue);
    };
    if (m_.nonzeros * out_hw < kParallelFromProducts)
      output_rows(0, win_.out_h);
    else
      pool.parallel_range(win_.out_h, 1, output_rows);
  }
  // Few output positions in all: each position's window (its im2col column, transposed into a row)
  // multiplied as one sample, on the one-sample walks, which decode many entries at a time where
  // the batched kernel pays its per-entry cost for a handful of lanes.
  void run_per_position(const RunArgs& a, float* out) {
    const int64_t hw = win_.out_h * win_.out_w, n = positions(), k = m_.cols;
    const int64_t in_chw = channels_ * win_.in_h * win_.in_w;
    float* columns = a.scratch.data();  // [k, n]
    float* rows = columns + k * n;      // [n, k]
    float* y = rows + n * k;            // [m_.rows]
    for (int64_t image = 0; image < images_; ++image)
      im2col(a.in[0]->f32_data() + image * in_chw, channels_, win_, columns + image * hw, n);
    sparse_kernels().transpose(TransposeArgs{columns, k, n, 0, k, rows, false});
    const float* bias = has_bias_ ? a.in[2]->f32_data() : nullptr;
    for (int64_t p = 0; p < n; ++p) {
      sparse_matvec(a.pool, m_, rows + p * k, y, workspace_, SpmvScheme::columns);
      const int64_t at = (p / hw) * m_.rows * hw + p % hw;
      float* plane = out + at;
      for (int64_t r = 0; r < m_.rows; ++r)  // + kNoBias leaves a sum as it is
        plane[r * hw] = act_((y[r] + (bias ? bias[r] : kNoBias)) + (res_ ? res_[at + r * hw] : kNoBias));
    }
  }
  int64_t positions() const { return images_ * win_.out_h * win_.out_w; }
  // Small output planes, a group of images at a time: their im2col columns side by side,
  // [C * kh * kw, images * out_hw] (rows gathered_ld() apart), one product for all of them, then
  // each output row split back per image.
  void run_gathered(const RunArgs& a, float* out) {
    for (int64_t first = 0; first < images_; first += gather_group()) {
      const int64_t n = std::min(gather_group(), images_ - first), in_chw = channels_ * win_.in_h * win_.in_w;
      const int64_t at = first * m_.rows * win_.out_h * win_.out_w;
      run_gathered_group(a, a.in[0]->f32_data() + first * in_chw, out + at, n, res_ ? res_ + at : nullptr);
    }
  }
  void run_gathered_group(const RunArgs& a, const float* x, float* y, int64_t images, const float* residual) {
    const int64_t hw = win_.out_h * win_.out_w, in_chw = channels_ * win_.in_h * win_.in_w;
    const int64_t ld = gathered_ld(), taps = win_.k_h * win_.k_w;
    float* xt = a.scratch.data();
    float* yt = xt + channels_ * taps * ld;
    a.pool.parallel_range(channels_, 4, [&](int64_t begin, int64_t end) {
      for (int64_t n = 0; n < images; ++n)
        im2col(x + n * in_chw + begin * win_.in_h * win_.in_w, end - begin, win_,
               xt + begin * taps * ld + n * hw, ld);
    });
    const float* bias = has_bias_ ? a.in[2]->f32_data() : nullptr;
    sparse_matmat(
        a.pool, m_, bounds_, xt, ld, images * hw, yt, ld, nullptr,
        [&](int64_t begin, int64_t end) {
          for (int64_t n = 0; n < images; ++n) {
            const int64_t at = (n * m_.rows + begin) * hw;
            add_bias_activate_rows(yt + begin * ld + n * hw, ld, end - begin, hw,
                                   bias ? bias + begin : nullptr, act_, y + at,
                                   residual ? residual + at : nullptr);
          }
        },
        row_groups(taps * ld));
  }
  // Images per gathered product: at most kConvGatherMostPositions columns (so the scratch does not
  // grow with the batch).
  int64_t gather_group() const {
    return std::clamp<int64_t>(kConvGatherMostPositions / (win_.out_h * win_.out_w), 1, images_);
  }
  // One image is gathered only when its plane fits one 16-wide chunk: a 7x7 plane's 49 positions
  // already fill chunks of 32 and 16, and its im2col matrix (1.2 MB for 512 channels) cost more
  // than it saved (ResNet-18's last stage at batch 1).
  bool gathered() const {
    const int64_t hw = win_.out_h * win_.out_w;
    return hw < kConvGatherBelowPositions && (images_ > 1 || hw <= 16);
  }
  // Row stride of the gathered columns: whole 64-byte lines, and not a multiple of 1 KiB (rows
  // that far apart would share a quarter of the L1 cache's sets).
  int64_t gathered_ld() const {
    int64_t ld = (gather_group() * win_.out_h * win_.out_w + 15) / 16 * 16;
    return ld % 256 == 0 ? ld + 16 : ld;
  }
  bool pointwise() const {
    return win_.k_h == 1 && win_.k_w == 1 && win_.s_h == 1 && win_.s_w == 1 &&
           win_.pad_t + win_.pad_l + win_.pad_b + win_.pad_r == 0;
  }
  const SparseMatrix& m_;
  WindowAttrs attrs_;
  Window2d win_;
  int64_t images_ = 0, channels_ = 0, group_ = 1;
  bool has_bias_ = false;
  std::vector<int64_t> bounds_;
  int threads_ = 1;
  int64_t padded_rows_ = 0, padded_cols_ = 0, wide_ = 0;
  bool per_position_ = false;
  SpmvWorkspace workspace_;
  std::vector<int64_t> x_rows_;  // per matrix column (channel, tap): its row in the padded planes
  FusedResidual residual_;
  // Set by run(): the activation the convolution's epilogue applies and the residual it adds.
  Activation act_;
  const float* res_ = nullptr;
};

}  // namespace

const SparseMatrix* sparse_pointwise_matrix(const Op& op) {
  const auto* conv = dynamic_cast<const SparseConvOp*>(&op);
  return conv ? conv->pointwise_matrix() : nullptr;
}

void transpose(ThreadPool& pool, const float* src, int64_t rows, int64_t cols, float* dst) {
  transpose_rows(pool, src, rows, cols, dst, false);
}

void transpose_add(ThreadPool& pool, const float* src, int64_t rows, int64_t cols, float* dst) {
  transpose_rows(pool, src, rows, cols, dst, true);
}

// Each panel transposed into a [cols, panel] block of its own, so that the rows of Xt the kernel
// reads lie a panel apart, not a whole batch apart (batch strides of a power of two put every row
// in the same few cache sets).
void sparse_product_by_panels(ThreadPool& pool, const SparseMatrix& m, const std::vector<int64_t>& bounds,
                              const float* x, int64_t n, float* y, float* scratch,
                              const ProductEpilogue& epilogue) {
  const int64_t panels = (n + kSparseFcPanel - 1) / kSparseFcPanel;
  const int64_t per_thread = panel_floats(m, n);
  if (m.nonzeros * n < kParallelFromProducts) {
    for (int64_t p = 0; p < panels; ++p) run_panel(m, Panel(m, x, n, y, p, scratch), epilogue);
  } else if (panels >= pool.size()) {  // each thread runs whole panels
    pool.parallel_tasks(panels, [&](int64_t p, int thread) {
      run_panel(m, Panel(m, x, n, y, p, scratch + thread * per_thread), epilogue);
    });
  } else {  // the threads split each panel's rows, each on its own copy of the panel's Xt
    for (int64_t p = 0; p < panels; ++p) {
      auto panel = [&](int thread) { return Panel(m, x, n, y, p, scratch + thread * per_thread); };
      pool.parallel_tasks_prepared(
          std::ssize(bounds) - 1,
          [&](int thread) {
            const Panel own = panel(thread);
            transpose_on_caller(own.x, own.n, m.cols, own.xt);
          },
          [&](int64_t t, int thread) {
            panel_rows(m, panel(thread), bounds[static_cast<size_t>(t)], bounds[static_cast<size_t>(t) + 1],
                       epilogue);
          });
    }
  }
}

int64_t sparse_product_by_panels_scratch(const SparseMatrix& m, int64_t n, int threads) {
  return threads * panel_floats(m, n);
}

namespace {

bool attr_is(const Node& node, const char* key, int64_t want, int64_t fallback) {
  auto v = node.attr_int(key, fallback);
  return v.ok() && *v == want;
}

}  // namespace

bool sparse_conv_per_position(const Node& node, const Shape& input) {
  if (node.op_type != "Conv" || input.size() < 3 || !attr_is(node, "group", 1, 1)) return false;
  Shape positions = {input[0]};
  positions.insert(positions.end(), input.begin() + 2, input.end());
  const int64_t n = shape_numel(positions);
  return n >= 0 && n <= kConvPerPositionMost;
}

bool sparse_op_supports(const Node& node, const Shape& input, const SparseMatrix& header) {
  if (node.op_type == "Gemm")
    return attr_is(node, "transA", 0, 0) && node.attr_float("alpha", 1.0f).ok() &&
           *node.attr_float("alpha", 1.0f) == 1.0f;
  if (node.op_type != "Conv") return node.op_type == "MatMul";
  auto group = node.attr_int("group", 1);
  if (!group.ok() || *group < 1 || input.size() < 2) return false;
  if (*group == 1) return true;
  const int64_t channels = input[1];
  if (*group >= channels || channels % *group != 0) return false;  // depthwise, or a bad group
  return header.rows % (*group * kBlockRows) == 0 || !row_blocks_fit(header);
}

Result<std::unique_ptr<Op>> create_sparse_op(const Node& node, int64_t opset, const SparseMatrix& m,
                                             int threads) {
  std::unique_ptr<Op> op;
  if (node.op_type == "Conv")
    op = std::make_unique<SparseConvOp>(node, opset, m, threads);
  else
    op = std::make_unique<SparseFcOp>(node, opset, m, threads);
  SP_RETURN_IF_ERROR(op->prepare());
  return op;
}

}  // namespace sparrow
