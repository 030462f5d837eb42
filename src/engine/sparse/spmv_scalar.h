// The scalar CSC walk, shared by the reference kernel and the AVX2 variant (AVX2 has no scatter,
// and decoding eight entries in registers before scalar stores measured slower than this loop:
// bench/bench_kernels, Alex-7 shape, 645 us against 516 us).
#pragma once

#include <cstring>

#include "engine/sparse/kernels.h"

namespace sparrow::kernels {

template <class Entry, int kGapShift, int kCodeMask>
inline void spmv_csc_scalar(const SpmvArgs& a, const Entry* entries) {
  const CscPartition& p = *a.part;
  std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(p.local_rows));
  for (int64_t k = 0; k < a.n_active; ++k) {
    int32_t j = a.active[k];
    float xj = a.x[j];
    int64_t pos = -1;
    for (uint32_t e = p.col_ptr[j]; e < p.col_ptr[j + 1]; ++e) {
      Entry v = entries[e];
      pos += (v >> kGapShift) + 1;
      a.y[pos] += a.codebook[v & kCodeMask] * xj;
    }
  }
}

}  // namespace sparrow::kernels
