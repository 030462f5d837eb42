#include "harness/eigen_peer.h"

#include <Eigen/Sparse>

namespace sparrow::cli {

namespace {

class EigenPeerImpl : public EigenPeer {
 public:
  EigenPeerImpl(const std::vector<float>& w, int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {
    std::vector<Eigen::Triplet<float>> t;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        if (float v = w[r * cols + c]; v != 0.0f) t.emplace_back(static_cast<int>(r), static_cast<int>(c), v);
    row_major_.resize(rows, cols);
    row_major_.setFromTriplets(t.begin(), t.end());
    col_major_ = row_major_;
    xs_.resize(cols);
  }
  void spmv_rowmajor(const float* x, float* y) override {
    Eigen::Map<const Eigen::VectorXf> xv(x, cols_);
    Eigen::Map<Eigen::VectorXf> yv(y, rows_);
    yv.noalias() = row_major_ * xv;
  }
  void spmv_sparse_vector(const float* x, float* y) override {
    xs_.setZero();
    for (int64_t j = 0; j < cols_; ++j)
      if (x[j] != 0.0f) xs_.insertBack(static_cast<int>(j)) = x[j];
    Eigen::Map<Eigen::VectorXf> yv(y, rows_);
    result_ = col_major_ * xs_;
    yv = result_;
  }
  void spmm(const float* xt, int64_t batch, float* y) override {
    Eigen::Map<const Eigen::MatrixXf> x(xt, cols_, batch);  // column-major: sample b is column b
    Eigen::Map<Eigen::MatrixXf> out(y, rows_, batch);
    out.noalias() = row_major_ * x;
  }

 private:
  int64_t rows_, cols_;
  Eigen::SparseMatrix<float, Eigen::RowMajor, int> row_major_;
  Eigen::SparseMatrix<float, Eigen::ColMajor, int> col_major_;
  Eigen::SparseVector<float> xs_, result_;
};

}  // namespace

std::unique_ptr<EigenPeer> make_eigen_peer(const std::vector<float>& w, int64_t rows, int64_t cols) {
  return std::make_unique<EigenPeerImpl>(w, rows, cols);
}

}  // namespace sparrow::cli
