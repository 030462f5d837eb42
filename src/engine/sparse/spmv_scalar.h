// The scalar one-sample walks (CSC, banded CSC, column tiles, sliced rows), shared by the reference
// kernels and the AVX2 variants (AVX2 has no scatter; why no register decoding: docs/engine.md,
// "Measurements behind the code"). Internal to each translation unit that includes them: each is
// compiled with its own ISA flags, and the linker must not pick one TU's copy for the other.
#pragma once

#include <algorithm>
#include <cstring>

#include "engine/sparse/kernels.h"

namespace sparrow::kernels {
namespace {

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

// The sliced row walk, lane by lane: an entry holds its column, or advances its row's column by
// gap + 1; code 0 (fillers, padding) adds nothing.
template <class Entry>
void spmv_rows_sliced_scalar(const SpmvRowArgs& a, const Entry* entries) {
  const SlicedRows& s = *a.layout;
  for (int64_t slice = a.slice_begin; slice < a.slice_end; ++slice) {
    const int64_t lanes = std::min(kSliceRows, s.rows() - slice * kSliceRows);
    for (int64_t lane = 0; lane < lanes; ++lane) {
      float sum = 0.0f;
      int64_t col = -1;
      for (uint32_t e = s.slice_ptr[slice] + static_cast<uint32_t>(lane); e < s.slice_ptr[slice + 1];
           e += kSliceRows) {
        const unsigned entry = entries[e];
        col = s.gap_coded ? col + (entry >> 4) + 1 : entry >> 4;
        if (entry & 0xF) sum += a.codebook[entry & 0xF] * a.x[col];
      }
      (a.y_sorted ? a.y_sorted[slice * kSliceRows + lane] : a.y[s.order[slice * kSliceRows + lane]]) = sum;
    }
  }
}
// The panelled row walk, lane by lane: each panel's steps add codebook[code] * x[panel start +
// column within the panel]; code 0 (padding) adds nothing.
template <class Entry>
void spmv_rows_panelled_scalar(const SpmvRowArgs& a, const Entry* entries) {
  const SlicedRows& s = *a.layout;
  const int64_t panels = s.panels();
  const unsigned code_mask = (1u << s.code_bits) - 1;
  for (int64_t slice = a.slice_begin; slice < a.slice_end; ++slice) {
    const int64_t lanes = std::min(kSliceRows, s.rows() - slice * kSliceRows);
    for (int64_t lane = 0; lane < lanes; ++lane) {
      float sum = 0.0f;
      uint32_t e = s.slice_ptr[slice] + static_cast<uint32_t>(lane);
      for (int64_t p = 0; p < panels; ++p)
        for (int step = 0; step < s.panel_steps[slice * panels + p]; ++step, e += kSliceRows) {
          const unsigned entry = entries[e];
          if (entry & code_mask)
            sum += a.codebook[entry & code_mask] * a.x[p * s.panel_columns + (entry >> s.code_bits)];
        }
      (a.y_sorted ? a.y_sorted[slice * kSliceRows + lane] : a.y[s.order[slice * kSliceRows + lane]]) = sum;
    }
  }
}
inline void spmv_rows_sliced_scalar(const SpmvRowArgs& a) {
  if (a.layout->panelled() && a.layout->entry_bits == 8)
    spmv_rows_panelled_scalar(a, a.layout->entries8.data());
  else if (a.layout->panelled())
    spmv_rows_panelled_scalar(a, a.layout->entries16.data());
  else if (a.layout->entry_bits == 8)
    spmv_rows_sliced_scalar(a, a.layout->entries8.data());
  else
    spmv_rows_sliced_scalar(a, a.layout->entries16.data());
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

}  // namespace
}  // namespace sparrow::kernels
