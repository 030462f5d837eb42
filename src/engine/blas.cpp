#include "engine/blas.h"

#include <cblas.h>

namespace sparrow {

void blas_use_single_thread() { openblas_set_num_threads(1); }

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

void sgemm_parallel(ThreadPool& pool, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  constexpr int64_t kMinWork = 1 << 16;  // below this many MACs threading costs more than it saves
  if (pool.size() == 1 || m * n * k < kMinWork) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (m >= pool.size() * 4) {
    pool.parallel_range(m, 4, [&](int64_t begin, int64_t end) {
      const float* a_rows = trans_a ? a + begin : a + begin * lda;
      sgemm(trans_a, trans_b, end - begin, n, k, alpha, a_rows, lda, b, ldb, beta, c + begin * ldc, ldc);
    });
  } else {
    pool.parallel_range(n, 16, [&](int64_t begin, int64_t end) {
      const float* b_cols = trans_b ? b + begin * ldb : b + begin;
      sgemm(trans_a, trans_b, m, end - begin, k, alpha, a, lda, b_cols, ldb, beta, c + begin, ldc);
    });
  }
}

}  // namespace sparrow
