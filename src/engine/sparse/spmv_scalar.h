// The scalar CSC walk, shared by the reference kernel and the AVX2 variant (AVX2 has no scatter;
// why no register decoding: docs/engine.md, "Measurements behind the code").
#pragma once

#include <cstring>

#include "engine/sparse/kernels.h"

namespace sparrow::kernels {

template <class Entry, int kGapShift, int kCodeMask>
inline void spmv_csc_scalar(const SpmvArgs& a, const Entry* entries) {
  const CscPartition& p = *a.part;
  if (!a.accumulate) std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(p.local_rows));
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

// The banded CSC walk: each entry holds its row within the band, so the rows need no running sum.
inline void spmv_banded_scalar(const SpmvBandArgs& a) {
  const BandedCsc& b = *a.layout;
  if (!a.accumulate) std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(a.rows));
  for (int64_t band = 0; band < b.bands; ++band) {
    const uint32_t* ptr = b.col_ptr.data() + band * (b.cols + 1);
    float* y = a.y + band * kBandRows;
    for (int64_t k = 0; k < a.n_active; ++k) {
      int32_t j = a.active[k];
      float xj = a.x[j];
      for (uint32_t e = ptr[j]; e < ptr[j + 1]; ++e) {
        uint16_t v = b.entries[e];
        y[v >> 4] += a.codebook[v & 0xF] * xj;
      }
    }
  }
}

// The banded CSR walk: each row's entries hold their column within the band.
inline void spmv_rows_banded_scalar(const SpmvRowArgs& a) {
  const BandedCsr& b = *a.layout;
  for (int64_t r = a.row_begin; r < a.row_end; ++r) {
    float sum = 0.0f;
    for (int64_t band = 0; band < b.bands; ++band) {
      const uint32_t* ptr = b.row_ptr.data() + band * (b.rows + 1);
      const float* x = a.x + band * kBandColumns;
      for (uint32_t e = ptr[r]; e < ptr[r + 1]; ++e)
        sum += a.codebook[b.entries[e] & 0xF] * x[b.entries[e] >> 4];
    }
    a.y[r] = sum;
  }
}

// The column-tile walk: per active column, each tile's mask bits name the rows of its codes.
inline void spmv_tiles_scalar(const SpmvTileArgs& a) {
  const ColumnTiles& t = *a.layout;
  if (!a.accumulate) std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(a.rows));
  for (int64_t k = 0; k < a.n_active; ++k) {
    int32_t j = a.active[k];
    float xj = a.x[j];
    const uint16_t* masks = t.masks.data() + j * t.tiles_per_column;
    const uint8_t* code = t.codes.data() + t.code_ptr[j];
    for (int64_t tile = 0; tile < t.tiles_per_column; ++tile)
      for (uint32_t bits = masks[tile]; bits != 0; bits &= bits - 1)
        a.y[tile * kTileRows + __builtin_ctz(bits)] += a.codebook[*code++] * xj;
  }
}

}  // namespace sparrow::kernels
