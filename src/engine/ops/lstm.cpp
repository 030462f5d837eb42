// LSTM, forward direction, default activations (sigmoid, tanh, tanh), gate order i, o, f, c.
// W and R run on the sparse engine when they are compressed (input products for all steps at once,
// the recurrent product per step), else on oneDNN's sgemm; the cell update is the kernel table's
// lstm_cell. Several samples without sequence lengths or peepholes step in the transposed layout
// (run_transposed), which needs no transpose per step.
// Inputs: X [seq, batch, in] (layout 0) or [batch, seq, in] (layout 1), W [1, 4H, in], R [1, 4H, H],
// optional B [1, 8H], sequence_lens [batch], initial_h / initial_c [1, batch, H], P [1, 3H].
// Outputs (each optional): Y [seq, 1, batch, H], Y_h [1, batch, H], Y_c [1, batch, H].
#include <cmath>
#include <cstring>

#include "engine/blas.h"
#include "engine/op.h"
#include "engine/ops/sparse_ops.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/sparse_run.h"

namespace sparrow {

namespace {

class LstmOp : public Op {
 public:
  LstmOp(const Node& node, int64_t opset) : Op(node, opset) {}
  // With engine matrices for W and/or R (nullptr: dense), products over `threads` threads.
  LstmOp(const Node& node, int64_t opset, const SparseMatrix* w, const SparseMatrix* r, int threads)
      : Op(node, opset), w_sparse_(w), r_sparse_(r), threads_(threads) {}
  Status parse() override {
    SP_ASSIGN_OR_RETURN(std::string direction, node_.attr_string("direction", std::string("forward")));
    if (direction != "forward") return fail("direction '{}' is not supported (only forward)", direction);
    SP_ASSIGN_OR_RETURN(auto acts, node_.attr_strings("activations", std::vector<std::string>{}));
    if (!acts.empty() && acts != std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"})
      return fail("only the default activations (Sigmoid, Tanh, Tanh) are supported");
    SP_ASSIGN_OR_RETURN(int64_t input_forget, node_.attr_int("input_forget", 0));
    if (input_forget != 0) return fail("input_forget=1 is not supported");
    SP_ASSIGN_OR_RETURN(clip_, node_.attr_float("clip", 0.0f));
    SP_ASSIGN_OR_RETURN(int64_t layout, node_.attr_int("layout", 0));
    batch_first_ = layout != 0;
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 3, 8));
    for (size_t i = 0; i < in.size(); ++i)
      if (in[i].present && i != 4 && in[i].dtype != DType::f32) return fail("input {} must be float", i);
    const Shape &x = in[0].shape, &w = in[1].shape, &r = in[2].shape;
    if (x.size() != 3) return fail("X must be 3-D, got {}", shape_str(x));
    seq_ = batch_first_ ? x[1] : x[0];
    batch_ = batch_first_ ? x[0] : x[1];
    input_ = x[2];
    if (w.size() != 3 || w[0] != 1 || w[1] % 4 != 0 || w[2] != input_)
      return fail("W {} must be [1, 4*hidden, {}]", shape_str(w), input_);
    hidden_ = w[1] / 4;
    SP_ASSIGN_OR_RETURN(int64_t hs, node_.attr_int("hidden_size", hidden_));
    if (hs != hidden_) return fail("hidden_size {} disagrees with W {}", hs, shape_str(w));
    if (r != Shape{1, 4 * hidden_, hidden_})
      return fail("R {} must be [1, {}, {}]", shape_str(r), 4 * hidden_, hidden_);
    auto check = [&](size_t i, int64_t numel, const char* what) -> Status {
      if (in.size() > i && in[i].present && shape_numel(in[i].shape) != numel)
        return fail("{} {} must hold {} values", what, shape_str(in[i].shape), numel);
      return {};
    };
    SP_RETURN_IF_ERROR(check(3, 8 * hidden_, "B"));
    SP_RETURN_IF_ERROR(check(4, batch_, "sequence_lens"));
    SP_RETURN_IF_ERROR(check(5, batch_ * hidden_, "initial_h"));
    SP_RETURN_IF_ERROR(check(6, batch_ * hidden_, "initial_c"));
    SP_RETURN_IF_ERROR(check(7, 3 * hidden_, "P"));
    if ((w_sparse_ && (w_sparse_->rows != 4 * hidden_ || w_sparse_->cols != input_)) ||
        (r_sparse_ && (r_sparse_->rows != 4 * hidden_ || r_sparse_->cols != hidden_)))
      return fail("compressed W or R does not match [4 * {}, ...]", hidden_);
    if (w_sparse_) w_bounds_ = balanced_row_bounds(*w_sparse_, threads_);
    if (r_sparse_) {
      r_bounds_ = balanced_row_bounds(*r_sparse_, threads_);
      r_workspace_.reserve(*r_sparse_, threads_);
    }
    Shape y = batch_first_ ? Shape{batch_, seq_, 1, hidden_} : Shape{seq_, 1, batch_, hidden_};
    Shape state = batch_first_ ? Shape{batch_, 1, hidden_} : Shape{1, batch_, hidden_};
    out = {ValueDesc{DType::f32, y}, ValueDesc{DType::f32, state}, ValueDesc{DType::f32, state}};
    out.resize(node_.outputs.size());
    return {};
  }
  // Scratch: x*W^T for all steps [seq*batch, 4H], gates [batch, 4H], h and c [batch, H], then the
  // transposed products' room. The transposed steps use the same first block as [4H, seq*batch]
  // and h and c as [H, batch], and keep their gates in the room after them.
  size_t scratch_floats(int threads) const override {
    return static_cast<size_t>(extra_offset()) + transposed_scratch(threads);
  }
  int64_t macs() const override { return seq_ * batch_ * 4 * hidden_ * (input_ + hidden_); }

  Status run(const RunArgs& a) override;

 private:
  // Several samples without peepholes or sequence lengths: every step in the transposed layout
  // ([4H, batch] gates, [H, batch] states), so the recurrent product reads and writes it as it is
  // and one lstm_cell call updates every sample (the cell is elementwise over [4][H * batch]).
  bool steps_transposed(const RunArgs& a) const {
    auto given = [&](size_t i) { return a.in.size() > i && a.in[i] != nullptr; };
    return steps_may_transpose() && !given(4) && !given(7);
  }
  // Whether the shapes and weights allow the transposed steps (the inputs decide per run).
  bool steps_may_transpose() const { return batch_ > 1 && (r_sparse_ || dense_recurrent_transposed()); }
  void run_transposed(const RunArgs& a);
  // yt [4H, n] = M xt, xt [cols, n], M the op's W (input 1, cols = input) or R (input 2, cols =
  // hidden): on the engine when compressed, else on oneDNN's sgemm, either split over the threads.
  void product_transposed(const RunArgs& a, size_t input, const float* xt, int64_t n, float* yt) const {
    const SparseMatrix* m = input == 1 ? w_sparse_ : r_sparse_;
    const int64_t cols = input == 1 ? input_ : hidden_;
    if (m)
      sparse_matmat(a.pool, *m, input == 1 ? w_bounds_ : r_bounds_, xt, n, n, yt, n);
    else
      sgemm_parallel(a.pool, false, false, 4 * hidden_, n, cols, 1.0f, a.in[input]->f32_data(), cols, xt, n,
                     0.0f, yt, n);
  }
  void step(int64_t t, const RunArgs& a, float* xw, float* gates, float* h, float* c);
  void input_products(const RunArgs& a, float* xw, float* extra);
  void recurrent_product(const RunArgs& a, const float* h, float* gates, float* extra);
  // A dense R on a batch of at least kDenseTransposedFromBatch runs as R [4H, H] times the
  // transposed hidden states, into transposed gates: oneDNN's sgemm reads R as it is stored
  // instead of packing R^T again at every step (with R larger than L2, it took about 0.55x of the
  // time of h R^T on the suite's 2048 x 512 at batch 16).
  static constexpr int64_t kDenseTransposedFromBatch = 4;
  bool dense_recurrent_transposed() const { return !r_sparse_ && batch_ >= kDenseTransposedFromBatch; }
  // Where the transposed scratch starts: after the input products, one step's gates and the two
  // states, on a 64-byte line of its own.
  int64_t extra_offset() const {
    return (seq_ * batch_ * 4 * hidden_ + batch_ * 4 * hidden_ + 2 * batch_ * hidden_ + 15) / 16 * 16;
  }
  // Transposed inputs and outputs for the sparse products and the dense transposed recurrent one:
  // W's panels (or, batch first, [(input + 4H) x seq*batch]), [(hidden + 4H) x batch] for R, and
  // for the transposed steps the inputs [input, seq*batch] or one step's gates [4H, batch],
  // whichever is largest.
  size_t transposed_scratch(int threads) const {
    const int64_t n = seq_ * batch_;
    size_t w = !w_sparse_     ? 0
               : batch_first_ ? static_cast<size_t>((input_ + 4 * hidden_) * n)
                              : static_cast<size_t>(sparse_product_by_panels_scratch(*w_sparse_, n, threads));
    size_t r =
        r_sparse_ || dense_recurrent_transposed() ? static_cast<size_t>((hidden_ + 4 * hidden_) * batch_) : 0;
    size_t steps =
        steps_may_transpose() ? static_cast<size_t>(std::max(input_ * n, 4 * hidden_ * batch_)) : 0;
    return std::max({w, r, steps});
  }

  const SparseMatrix* w_sparse_ = nullptr;
  const SparseMatrix* r_sparse_ = nullptr;
  int threads_ = 1;
  std::vector<int64_t> w_bounds_, r_bounds_;
  SpmvWorkspace r_workspace_;

  float clip_ = 0;
  bool batch_first_ = false;
  int64_t seq_ = 0, batch_ = 0, input_ = 0, hidden_ = 0;
};

Status LstmOp::run(const RunArgs& a) {
  if (steps_transposed(a)) {
    run_transposed(a);
    return {};
  }
  const int64_t H = hidden_, G = 4 * H;
  float* xw = a.scratch.data();
  float* gates = xw + seq_ * batch_ * G;
  float* h = gates + batch_ * G;
  float* c = h + batch_ * H;
  float* extra = a.scratch.data() + extra_offset();
  input_products(a, xw, extra);
  auto input = [&](size_t i) { return a.in.size() > i ? a.in[i] : nullptr; };
  if (const Tensor* bias = input(3)) {
    const float* wb = bias->f32_data();
    for (int64_t k = 0; k < seq_ * batch_; ++k)
      for (int64_t g = 0; g < G; ++g) xw[k * G + g] += wb[g] + wb[G + g];
  }
  if (const Tensor* h0 = input(5))
    std::memcpy(h, h0->f32_data(), sizeof(float) * batch_ * H);
  else
    std::fill_n(h, batch_ * H, 0.0f);
  if (const Tensor* c0 = input(6))
    std::memcpy(c, c0->f32_data(), sizeof(float) * batch_ * H);
  else
    std::fill_n(c, batch_ * H, 0.0f);
  for (int64_t t = 0; t < seq_; ++t) {
    std::memcpy(gates, xw + t * batch_ * G, sizeof(float) * batch_ * G);
    recurrent_product(a, h, gates, extra);
    step(t, a, xw, gates, h, c);
  }
  if (a.out.size() > 1 && a.out[1]) std::memcpy(a.out[1]->f32_data(), h, sizeof(float) * batch_ * H);
  if (a.out.size() > 2 && a.out[2]) std::memcpy(a.out[2]->f32_data(), c, sizeof(float) * batch_ * H);
  return {};
}

void LstmOp::run_transposed(const RunArgs& a) {
  const int64_t H = hidden_, G = 4 * H, n = seq_ * batch_;
  float* xw = a.scratch.data();                    // [4H, n]: column t * batch + b is step t, sample b
  float* h = xw + seq_ * batch_ * G + batch_ * G;  // [H, batch]
  float* c = h + batch_ * H;                       // [H, batch]
  float* extra = a.scratch.data() + extra_offset();
  // The inputs transposed, [input, n], then W times them for every step at once.
  const float* x = a.in[0]->f32_data();
  if (batch_first_) {
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < input_; ++j)
        extra[j * n + k] = x[((k % batch_) * seq_ + k / batch_) * input_ + j];
  } else {
    transpose(a.pool, x, n, input_, extra);
  }
  product_transposed(a, 1, extra, n, xw);
  auto input = [&](size_t i) { return a.in.size() > i ? a.in[i] : nullptr; };
  if (const Tensor* bias = input(3)) {
    const float* wb = bias->f32_data();
    for (int64_t g = 0; g < G; ++g) {
      const float add = wb[g] + wb[G + g];
      for (int64_t k = 0; k < n; ++k) xw[g * n + k] += add;
    }
  }
  auto state_in = [&](const Tensor* given, float* state) {
    if (given)
      transpose(a.pool, given->f32_data(), batch_, H, state);
    else
      std::fill_n(state, batch_ * H, 0.0f);
  };
  state_in(input(5), h);
  state_in(input(6), c);
  Tensor* y = a.out.empty() ? nullptr : a.out[0];
  float* gates = extra;  // [4H, batch]
  const auto cell = sparse_kernels().lstm_cell;
  for (int64_t t = 0; t < seq_; ++t) {
    product_transposed(a, 2, h, batch_, gates);
    for (int64_t g = 0; g < G; ++g) {
      const float* xg = xw + g * n + t * batch_;
      float* gg = gates + g * batch_;
      for (int64_t b = 0; b < batch_; ++b) gg[b] += xg[b];
    }
    // Elementwise over [4][H * batch]: gate q of (unit j, sample b) is gates[(q * H + j) * batch + b].
    cell(LstmCellArgs{gates, nullptr, clip_, H * batch_, c, h});
    if (!y) continue;
    float* yt = y->f32_data();
    if (batch_first_) {
      for (int64_t b = 0; b < batch_; ++b)
        for (int64_t j = 0; j < H; ++j) yt[(b * seq_ + t) * H + j] = h[j * batch_ + b];
    } else {
      transpose(a.pool, h, H, batch_, yt + t * batch_ * H);
    }
  }
  if (a.out.size() > 1 && a.out[1]) transpose(a.pool, h, H, batch_, a.out[1]->f32_data());
  if (a.out.size() > 2 && a.out[2]) transpose(a.pool, c, H, batch_, a.out[2]->f32_data());
}

// xw[(t, b), 0:4H] = X[t, b] W^T for every step at once (rows ordered (t, b) for either layout).
void LstmOp::input_products(const RunArgs& a, float* xw, float* extra) {
  const int64_t G = 4 * hidden_, n = seq_ * batch_;
  const float* x = a.in[0]->f32_data();
  auto row = [&](int64_t k) {  // input row of (t, b) = (k / batch, k % batch)
    int64_t t = k / batch_, b = k % batch_;
    return x + (batch_first_ ? b * seq_ + t : t * batch_ + b) * input_;
  };
  if (w_sparse_ && !batch_first_) {
    sparse_product_by_panels(a.pool, *w_sparse_, w_bounds_, x, n, xw, extra);  // rows (t, b) are x's rows
  } else if (w_sparse_) {
    float* xt = extra;
    float* yt = xt + input_ * n;
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < input_; ++j) xt[j * n + k] = row(k)[j];
    product_transposed(a, 1, xt, n, yt);
    transpose(a.pool, yt, G, n, xw);
  } else if (batch_first_) {
    for (int64_t t = 0; t < seq_; ++t)
      sgemm_parallel(a.pool, false, true, batch_, G, input_, 1.0f, x + t * input_, seq_ * input_,
                     a.in[1]->f32_data(), input_, 0.0f, xw + t * batch_ * G, G);
  } else {
    sgemm_parallel(a.pool, false, true, n, G, input_, 1.0f, x, input_, a.in[1]->f32_data(), input_, 0.0f, xw,
                   G);
  }
}

// gates[b, 0:4H] += h[b] R^T.
void LstmOp::recurrent_product(const RunArgs& a, const float* h, float* gates, float* extra) {
  const int64_t H = hidden_, G = 4 * H;
  if (!r_sparse_ && !dense_recurrent_transposed()) {
    sgemm_parallel(a.pool, false, true, batch_, G, H, 1.0f, h, H, a.in[2]->f32_data(), H, 1.0f, gates, G);
    return;
  }
  if (r_sparse_ && batch_ == 1) {
    sparse_matvec(a.pool, *r_sparse_, h, extra, r_workspace_, SpmvScheme::columns);
    for (int64_t g = 0; g < G; ++g) gates[g] += extra[g];
    return;
  }
  // Several samples: R [4H, H] times the transposed states into transposed gates, added back.
  float* ht = extra;
  float* yt = ht + H * batch_;
  transpose(a.pool, h, batch_, H, ht);
  product_transposed(a, 2, ht, batch_, yt);
  transpose_add(a.pool, yt, G, batch_, gates);
}

void LstmOp::step(int64_t t, const RunArgs& a, float* xw, float* gates, float* h, float* c) {
  const int64_t H = hidden_, G = 4 * H;
  const Tensor* lens = a.in.size() > 4 ? a.in[4] : nullptr;
  const float* p = a.in.size() > 7 && a.in[7] ? a.in[7]->f32_data() : nullptr;
  Tensor* y = a.out.empty() ? nullptr : a.out[0];
  const auto cell = sparse_kernels().lstm_cell;
  for (int64_t b = 0; b < batch_; ++b) {
    bool active = !lens || t < lens->i64_data()[b];
    float* hb = h + b * H;
    if (active) cell(LstmCellArgs{gates + b * G, p, clip_, H, c + b * H, hb});
    if (y) {
      float* yb = y->f32_data() + (batch_first_ ? (b * seq_ + t) * H : (t * batch_ + b) * H);
      if (active)
        std::memcpy(yb, hb, sizeof(float) * H);
      else
        std::fill_n(yb, H, 0.0f);
    }
  }
}

}  // namespace

void register_lstm_ops(OpRegistry& r) {
  r["LSTM"] = make_op<LstmOp>;
}

Result<std::unique_ptr<Op>> create_sparse_lstm_op(const Node& node, int64_t opset, const SparseMatrix* w,
                                                  const SparseMatrix* r, int threads) {
  auto op = std::make_unique<LstmOp>(node, opset, w, r, threads);
  SP_RETURN_IF_ERROR(op->prepare());
  return std::unique_ptr<Op>(std::move(op));
}

}  // namespace sparrow
