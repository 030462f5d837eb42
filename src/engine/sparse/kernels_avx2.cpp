// AVX2 kernels (compiled with -mavx2 -mfma). AVX2 has no scatter: entries are decoded eight at a
// time in registers (prefix sum of gaps, codebook lookup) and accumulated with scalar stores.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "engine/sparse/kernels.h"

namespace sparrow::kernels {

namespace {

// Inclusive prefix sum of 8 int32 lanes.
inline __m256i prefix_sum(__m256i s) {
  s = _mm256_add_epi32(s, _mm256_slli_si256(s, 4));
  s = _mm256_add_epi32(s, _mm256_slli_si256(s, 8));
  // add the low half's total to every lane of the high half
  __m256i low_total = _mm256_permutevar8x32_epi32(s, _mm256_set1_epi32(3));
  return _mm256_add_epi32(s, _mm256_blend_epi32(_mm256_setzero_si256(), low_total, 0xF0));
}

// Accumulates n (<= 8) decoded entries; returns the last position.
template <int kGapShift, int kCodeMask, bool kNarrow>
inline int accumulate8(__m256i v, int n, int base, __m256 cb_lo, __m256 cb_hi, const float* codebook, float xj, float* y) {
  __m256i code = _mm256_and_si256(v, _mm256_set1_epi32(kCodeMask));
  __m256i step = _mm256_add_epi32(_mm256_srli_epi32(v, kGapShift), _mm256_set1_epi32(1));
  __m256i pos = _mm256_add_epi32(_mm256_set1_epi32(base), prefix_sum(step));
  __m256 w;
  if constexpr (kNarrow) {
    __m256 lo = _mm256_permutevar8x32_ps(cb_lo, code);
    __m256 hi = _mm256_permutevar8x32_ps(cb_hi, code);
    __m256i high = _mm256_cmpgt_epi32(code, _mm256_set1_epi32(7));
    w = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(high));
  } else {
    w = _mm256_i32gather_ps(codebook, code, 4);
  }
  w = _mm256_mul_ps(w, _mm256_set1_ps(xj));
  alignas(32) int32_t p[8];
  alignas(32) float val[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(p), pos);
  _mm256_store_ps(val, w);
  for (int i = 0; i < n; ++i) y[p[i]] += val[i];
  return p[n - 1];
}

template <class Entry, int kGapShift, int kCodeMask, bool kNarrow>
void spmv(const SpmvArgs& a, const Entry* entries) {
  const CscPartition& p = *a.part;
  std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(p.local_rows));
  __m256 cb_lo = _mm256_loadu_ps(a.codebook), cb_hi = _mm256_loadu_ps(a.codebook + 8);
  for (int64_t k = 0; k < a.n_active; ++k) {
    int32_t j = a.active[k];
    float xj = a.x[j];
    uint32_t e = p.col_ptr[j], end = p.col_ptr[j + 1];
    int base = -1;
    for (; e + 8 <= end; e += 8) {
      __m256i v;
      if constexpr (sizeof(Entry) == 1)
        v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(entries + e)));
      else
        v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(entries + e)));
      base = accumulate8<kGapShift, kCodeMask, kNarrow>(v, 8, base, cb_lo, cb_hi, a.codebook, xj, a.y);
    }
    if (e < end) {  // tail: the unused lanes decode zeros and are not stored
      alignas(32) int32_t raw[8] = {};
      for (uint32_t i = 0; e + i < end; ++i) raw[i] = entries[e + i];
      __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(raw));
      accumulate8<kGapShift, kCodeMask, kNarrow>(v, static_cast<int>(end - e), base, cb_lo, cb_hi, a.codebook, xj, a.y);
    }
  }
}

}  // namespace

void spmv_csc_e8__avx2(const SpmvArgs& a) { spmv<uint8_t, 4, 0xF, true>(a, a.part->entries8.data()); }
void spmv_csc_e16__avx2(const SpmvArgs& a) { spmv<uint16_t, 8, 0xFF, false>(a, a.part->entries16.data()); }

void spmm_csr_e16__avx2(const SpmmArgs& a) {
  const SparseMatrix& m = *a.m;
  for (int64_t b0 = 0; b0 < a.batch; b0 += 32) {
    // Four 8-lane accumulators over up to 32 batch columns; partial ones are masked.
    __m256i masks[4];
    for (int t = 0; t < 4; ++t) {
      int64_t left = std::clamp<int64_t>(a.batch - b0 - 8 * t, 0, 8);
      masks[t] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    for (size_t k = 0; k < m.csr.size(); ++k) {
      const CsrBlock& block = m.csr[k];
      for (int64_t r = a.row_begin; r < a.row_end; ++r) {
        float* y = a.y + r * a.ldy + b0;
        __m256 acc[4];
        for (int t = 0; t < 4; ++t) acc[t] = k == 0 ? _mm256_setzero_ps() : _mm256_maskload_ps(y + 8 * t, masks[t]);
        int64_t col = block.col_begin - 1;
        for (uint32_t e = block.row_ptr[r]; e < block.row_ptr[r + 1]; ++e) {
          uint16_t v = block.entries[e];
          col += (v >> 8) + 1;
          __m256 w = _mm256_set1_ps(m.codebook[v & 0xFF]);
          const float* x = a.xt + col * a.ldx + b0;
          for (int t = 0; t < 4; ++t) acc[t] = _mm256_fmadd_ps(w, _mm256_maskload_ps(x + 8 * t, masks[t]), acc[t]);
        }
        for (int t = 0; t < 4; ++t) _mm256_maskstore_ps(y + 8 * t, masks[t], acc[t]);
      }
    }
  }
}

}  // namespace sparrow::kernels
