// Dense float32 matrix products on oneDNN's sgemm (row-major), which picks its kernels by the
// CPU's features. Each call runs on the calling thread alone; Sparrow parallelizes around it.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace sparrow {

// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major, op = transpose if trans_*.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The same, split over the pool along M or N: whichever leaves the smaller operand for every
// thread to pack (N when M is small).
void sgemm_parallel(ThreadPool& pool, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                    float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                    float* c, int64_t ldc);

}  // namespace sparrow
