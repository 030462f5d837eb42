// Gemm (Y = alpha * A' B' + beta * C) and MatMul (numpy matmul with batch broadcasting), on oneDNN's sgemm.
#include "engine/blas.h"
#include "engine/op.h"
#include "engine/ops/sparse_ops.h"

namespace sparrow {

namespace {

class GemmOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(alpha_, node_.attr_float("alpha", 1.0f));
    SP_ASSIGN_OR_RETURN(beta_, node_.attr_float("beta", 1.0f));
    SP_ASSIGN_OR_RETURN(int64_t ta, node_.attr_int("transA", 0));
    SP_ASSIGN_OR_RETURN(int64_t tb, node_.attr_int("transB", 0));
    trans_a_ = ta != 0;
    trans_b_ = tb != 0;
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 2, 3));
    for (size_t i = 0; i < in.size(); ++i)
      if (in[i].present && in[i].dtype != DType::f32) return fail("input {} must be float", i);
    const Shape& a = in[0].shape;
    const Shape& b = in[1].shape;
    if (a.size() != 2 || b.size() != 2)
      return fail("A and B must be 2-D, got {} and {}", shape_str(a), shape_str(b));
    m_ = trans_a_ ? a[1] : a[0];
    k_ = trans_a_ ? a[0] : a[1];
    int64_t kb = trans_b_ ? b[1] : b[0];
    n_ = trans_b_ ? b[0] : b[1];
    if (k_ != kb)
      return fail("inner dimensions differ: A {} (transA={}) and B {} (transB={})", shape_str(a), trans_a_,
                  shape_str(b), trans_b_);
    has_c_ = in.size() > 2 && in[2].present && beta_ != 0.0f;
    if (has_c_) {
      auto bc = broadcast_shapes(in[2].shape, {m_, n_});
      if (!bc || *bc != Shape{m_, n_})
        return fail("C {} does not broadcast to [{}, {}]", shape_str(in[2].shape), m_, n_);
      c_strides_ = broadcast_strides(in[2].shape, {m_, n_});
    }
    out = {ValueDesc{DType::f32, {m_, n_}}};
    return {};
  }
  // Batches of kWeightsFirstFromBatch to kWeightsFirstToBatch samples against B stored [N, K]
  // (transB, as PyTorch's Linear is exported) run as Y^T = B A^T, B read as it is stored, then
  // transposed back: oneDNN's sgemm packs a transposed B again at every call, which costs more
  // than the transpose of the small Y (docs/engine.md, Dense products).
  static constexpr int64_t kWeightsFirstFromBatch = 8, kWeightsFirstToBatch = 64;
  bool weights_first() const {
    return !trans_a_ && trans_b_ && m_ >= kWeightsFirstFromBatch && m_ <= kWeightsFirstToBatch;
  }
  size_t scratch_floats(int) const override { return weights_first() ? static_cast<size_t>(m_ * n_) : 0; }
  Status run(const RunArgs& a) override {
    float* y = a.out[0]->f32_data();
    float beta = 0.0f;
    if (has_c_) {
      const Tensor& c = *a.in[2];
      const float* pc = c.f32_data();
      for (int64_t i = 0; i < m_; ++i)
        for (int64_t j = 0; j < n_; ++j) y[i * n_ + j] = beta_ * pc[i * c_strides_[0] + j * c_strides_[1]];
      beta = 1.0f;
    }
    const Tensor& ta = *a.in[0];
    const Tensor& tb = *a.in[1];
    if (weights_first()) {
      float* yt = a.scratch.data();
      sgemm_parallel(a.pool, false, true, n_, m_, k_, alpha_, tb.f32_data(), k_, ta.f32_data(), k_, 0.0f, yt,
                     m_);
      if (has_c_)
        transpose_add(a.pool, yt, n_, m_, y);
      else
        transpose(a.pool, yt, n_, m_, y);
    } else {
      sgemm_parallel(a.pool, trans_a_, trans_b_, m_, n_, k_, alpha_, ta.f32_data(), ta.dim(1), tb.f32_data(),
                     tb.dim(1), beta, y, n_);
    }
    activation_.apply(y, m_ * n_);
    return {};
  }
  int64_t macs() const override { return m_ * n_ * k_; }

 private:
  float alpha_ = 1, beta_ = 1;
  bool trans_a_ = false, trans_b_ = false, has_c_ = false;
  int64_t m_ = 0, n_ = 0, k_ = 0;
  std::vector<int64_t> c_strides_;
};

// A third input, a bias of N values added in the epilogue, comes from fuse_matmul_bias (graph_passes.h).
class MatMulOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 2, 3));
    if (in[0].dtype != DType::f32 || in[1].dtype != DType::f32) return fail("inputs must be float");
    Shape a = in[0].shape, b = in[1].shape;
    if (a.empty() || b.empty())
      return fail("inputs must have rank >= 1, got {} and {}", shape_str(a), shape_str(b));
    bool a_vec = a.size() == 1, b_vec = b.size() == 1;
    if (a_vec) a.insert(a.begin(), 1);
    if (b_vec) b.push_back(1);
    m_ = a[a.size() - 2];
    k_ = a.back();
    n_ = b.back();
    if (b[b.size() - 2] != k_)
      return fail("inner dimensions differ: {} x {}", shape_str(in[0].shape), shape_str(in[1].shape));
    Shape a_batch(a.begin(), a.end() - 2), b_batch(b.begin(), b.end() - 2);
    auto batch = broadcast_shapes(a_batch, b_batch);
    if (!batch)
      return fail("batch dimensions {} and {} do not broadcast", shape_str(a_batch), shape_str(b_batch));
    batch_ = *batch;
    a_strides_ = broadcast_strides(a_batch, batch_);
    b_strides_ = broadcast_strides(b_batch, batch_);
    // x[..., K] @ W[K, N]: fold every batch dimension of A into M for one product.
    fold_batch_ = b_batch.empty() || shape_numel(b_batch) == 1;
    has_bias_ = in.size() > 2 && in[2].present;
    if (has_bias_ && (in[2].dtype != DType::f32 || shape_numel(in[2].shape) != n_ || b_vec))
      return fail("bias {} must hold the {} outputs", shape_str(in[2].shape), n_);
    Shape y = batch_;
    if (!a_vec) y.push_back(m_);
    if (!b_vec) y.push_back(n_);
    out = {ValueDesc{DType::f32, y}};
    return {};
  }
  Status run(const RunArgs& args) override {
    const float* a = args.in[0]->f32_data();
    const float* b = args.in[1]->f32_data();
    float* y = args.out[0]->f32_data();
    int64_t batches = shape_numel(batch_);
    if (fold_batch_) {  // B has no batch, so A's batch dimensions stack into M
      sgemm_parallel(args.pool, false, false, batches * m_, n_, k_, 1.0f, a, k_, b, n_, 0.0f, y, n_);
      epilogue(args, y, batches * m_);
      return {};
    }
    int rank = static_cast<int>(batch_.size());
    args.pool.parallel_for(batches, [&](int64_t i) {
      int64_t ia = 0, ib = 0, rem = i;
      for (int d = rank - 1; d >= 0; --d) {
        int64_t idx = rem % batch_[d];
        rem /= batch_[d];
        ia += idx * a_strides_[d];
        ib += idx * b_strides_[d];
      }
      sgemm(false, false, m_, n_, k_, 1.0f, a + ia * m_ * k_, k_, b + ib * k_ * n_, n_, 0.0f, y + i * m_ * n_,
            n_);
    });
    epilogue(args, y, batches * m_);
    return {};
  }
  int64_t macs() const override { return shape_numel(batch_) * m_ * n_ * k_; }

 private:
  // y[r, :] += bias, then the fused activation, over `rows` rows of n_.
  void epilogue(const RunArgs& args, float* y, int64_t rows) const {
    const float* bias = has_bias_ ? args.in[2]->f32_data() : nullptr;
    if (!bias && activation_.none()) return;
    for (int64_t r = 0; r < rows; ++r) {
      float* row = y + r * n_;
      if (bias)
        for (int64_t j = 0; j < n_; ++j) row[j] += bias[j];
      activation_.apply(row, n_);
    }
  }

  int64_t m_ = 0, n_ = 0, k_ = 0;
  Shape batch_;
  std::vector<int64_t> a_strides_, b_strides_;
  bool fold_batch_ = false;
  bool has_bias_ = false;
};

}  // namespace

void register_gemm_ops(OpRegistry& r) {
  r["Gemm"] = make_op<GemmOp>;
  r["MatMul"] = make_op<MatMulOp>;
}

}  // namespace sparrow
