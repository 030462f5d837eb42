#include "engine/blas.h"

#include <dnnl.h>
#include <omp.h>

namespace sparrow {

namespace {

// oneDNN runs its products on OpenMP threads; Sparrow parallelizes around them with its own pool,
// so every thread that calls in asks OpenMP for a team of one (the setting is per thread).
void one_openmp_thread_here() {
  thread_local bool done = false;
  if (done) return;
  omp_set_num_threads(1);
  done = true;
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: oneDNN refuses the zero leading dimensions that come with it
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  one_openmp_thread_here();
  // Row-major, as oneDNN's sgemm is; its status can only report bad arguments, which the
  // operators' shape checks and the cases above rule out.
  (void)dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void sgemm_parallel(ThreadPool& pool, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                    float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                    float* c, int64_t ldc) {
  constexpr int64_t kMinWork = 1 << 16;  // below this many MACs threading costs more than it saves
  if (pool.size() == 1 || m * n * k < kMinWork) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Each thread packs the operand it shares in full: split the dimension whose split leaves the
  // smaller operand shared (M shares B, K x N; N shares A, M x K).
  if (m >= pool.size() * 4 && (m >= n || n < pool.size() * 16)) {
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
