// Eigen's sparse products as benchmark peers (kept in their own translation unit: Eigen headers
// are heavy).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace sparrow::cli {

class EigenPeer {
 public:
  virtual ~EigenPeer() = default;
  // Row-major sparse matrix times a dense vector.
  virtual void spmv_rowmajor(const float* x, float* y) = 0;
  // Column-major sparse matrix times a sparse vector (only the non-zero inputs are visited).
  virtual void spmv_sparse_vector(const float* x, float* y) = 0;
  // Row-major sparse matrix times a dense column-major matrix Xt [cols, batch].
  virtual void spmm(const float* xt, int64_t batch, float* y) = 0;
};

// From a dense row-major matrix.
std::unique_ptr<EigenPeer> make_eigen_peer(const std::vector<float>& w, int64_t rows, int64_t cols);

}  // namespace sparrow::cli
