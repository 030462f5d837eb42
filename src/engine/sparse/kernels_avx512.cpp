// AVX-512 kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mfma).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#include "engine/sparse/csr_entries.h"
#include "engine/sparse/dense_kernels.h"
#include "engine/sparse/kernels.h"

namespace sparrow::kernels {

namespace {

// Inclusive prefix sum of 16 int32 lanes.
inline __m512i prefix_sum(__m512i s) {
  const __m512i zero = _mm512_setzero_si512();
  s = _mm512_add_epi32(s, _mm512_alignr_epi32(s, zero, 15));
  s = _mm512_add_epi32(s, _mm512_alignr_epi32(s, zero, 14));
  s = _mm512_add_epi32(s, _mm512_alignr_epi32(s, zero, 12));
  s = _mm512_add_epi32(s, _mm512_alignr_epi32(s, zero, 8));
  return s;
}

// y[pos[i]] = w[i] * xj + y[pos[i]] for the lanes of `mask` (a prefix of the 16 lanes): with one
// vpscatterdd after a gather of y, or with scalar fused multiply-adds, which round the same way.
template <bool kHardwareScatter>
inline void scatter_fma16(float* y, __mmask16 mask, __m512i pos, __m512 w, __m512 xj) {
  if constexpr (kHardwareScatter) {
    __m512 yv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, pos, y, 4);
    _mm512_mask_i32scatter_ps(y, mask, pos, _mm512_fmadd_ps(w, xj, yv), 4);
  } else {
    alignas(64) int32_t p[16];
    alignas(64) float wv[16];
    _mm512_store_si512(p, pos);
    _mm512_store_ps(wv, w);
    const float x = _mm512_cvtss_f32(xj);
    const int n = mask == 0xFFFF ? 16 : __builtin_popcount(mask);
    for (int i = 0; i < n; ++i) y[p[i]] = std::fma(wv[i], x, y[p[i]]);
  }
}

// Decodes up to 16 entries (as 32-bit lanes), accumulates w * xj into y at their positions, and
// returns the position of the last one in every lane (`base` holds the position before the first).
// Lanes outside `mask` (a prefix) do nothing.
template <int kGapShift, int kCodeMask, bool kNarrow, bool kHardwareScatter>
inline __m512i accumulate16(__m512i v, __mmask16 mask, __m512i base, __m512 cb, const float* codebook,
                            __m512 xj, float* y) {
  __m512i code = _mm512_and_si512(v, _mm512_set1_epi32(kCodeMask));
  __m512i step = _mm512_maskz_add_epi32(mask, _mm512_srli_epi32(v, kGapShift), _mm512_set1_epi32(1));
  __m512i pos = _mm512_add_epi32(base, prefix_sum(step));
  __m512 w = kNarrow ? _mm512_permutexvar_ps(code, cb)
                     : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, code, codebook, 4);
  scatter_fma16<kHardwareScatter>(y, mask, pos, w, xj);
  return _mm512_permutexvar_epi32(_mm512_set1_epi32(15), pos);
}

// 16 entries (or the masked tail) widened to 32-bit lanes.
template <class Entry>
inline __m512i load16(const Entry* p, __mmask16 mask) {
  if constexpr (sizeof(Entry) == 1)
    return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, p));
  else
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p));
}

template <class Entry, int kGapShift, int kCodeMask, bool kSmallCodebook, bool kHardwareScatter>
void spmv(const SpmvArgs& a, const Entry* entries) {
  const CscPartition& p = *a.part;
  if (!a.accumulate) std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(p.local_rows));
  const __m512 cb = kSmallCodebook ? _mm512_loadu_ps(a.codebook) : _mm512_setzero_ps();
  for (int64_t k = 0; k < a.n_active; ++k) {
    int32_t j = a.active[k];
    __m512 xj = _mm512_set1_ps(a.x[j]);
    uint32_t e = p.col_ptr[j], end = p.col_ptr[j + 1];
    __m512i base = _mm512_set1_epi32(-1);
    for (; e + 16 <= end; e += 16)
      base = accumulate16<kGapShift, kCodeMask, kSmallCodebook, kHardwareScatter>(
          load16(entries + e, 0xFFFF), 0xFFFF, base, cb, a.codebook, xj, a.y);
    if (e < end) {
      __mmask16 mask = static_cast<__mmask16>((1u << (end - e)) - 1);
      accumulate16<kGapShift, kCodeMask, kSmallCodebook, kHardwareScatter>(load16(entries + e, mask), mask,
                                                                           base, cb, a.codebook, xj, a.y);
    }
  }
}

template <class Entry, int kGapShift, int kCodeMask, bool kSmallCodebook>
void spmv(const SpmvArgs& a, const Entry* entries) {
  if (avx512_scatter() == ScatterMode::hardware)
    spmv<Entry, kGapShift, kCodeMask, kSmallCodebook, true>(a, entries);
  else
    spmv<Entry, kGapShift, kCodeMask, kSmallCodebook, false>(a, entries);
}

}  // namespace

void spmv_csc_e8__avx512(const SpmvArgs& a) {
  spmv<uint8_t, 4, 0xF, true>(a, a.part->entries8.data());
}
void spmv_csc_e16__avx512(const SpmvArgs& a) {
  if (a.small_codebook)
    spmv<uint16_t, 8, 0xFF, true>(a, a.part->entries16.data());
  else
    spmv<uint16_t, 8, 0xFF, false>(a, a.part->entries16.data());
}

namespace {

// 16 banded entries (or the masked tail): the rows and codes are in the entries themselves, so a
// shift gives the rows and the permute reads only the low 4 bits for the codebook.
template <bool kHardwareScatter>
inline void accumulate_banded16(const uint16_t* entries, __mmask16 mask, __m512 cb, __m512 xj, float* y) {
  __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, entries));
  scatter_fma16<kHardwareScatter>(y, mask, _mm512_srli_epi32(v, 4), _mm512_permutexvar_ps(v, cb), xj);
}

template <bool kHardwareScatter>
void spmv_banded(const SpmvBandArgs& a) {
  const BandedCsc& b = *a.layout;
  if (!a.accumulate) std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(a.rows));
  const __m512 cb = _mm512_loadu_ps(a.codebook);
  for (int64_t band = 0; band < b.bands; ++band) {
    const uint32_t* ptr = b.col_ptr.data() + band * (b.cols + 1);
    float* y = a.y + band * kBandRows;
    for (int64_t k = 0; k < a.n_active; ++k) {
      int32_t j = a.active[k];
      __m512 xj = _mm512_set1_ps(a.x[j]);
      uint32_t e = ptr[j], end = ptr[j + 1];
      for (; e + 16 <= end; e += 16)
        accumulate_banded16<kHardwareScatter>(b.entries.data() + e, 0xFFFF, cb, xj, y);
      if (e < end)
        accumulate_banded16<kHardwareScatter>(b.entries.data() + e,
                                              static_cast<__mmask16>((1u << (end - e)) - 1), cb, xj, y);
    }
  }
}

}  // namespace

void spmv_banded__avx512(const SpmvBandArgs& a) {
  if (avx512_scatter() == ScatterMode::hardware)
    spmv_banded<true>(a);
  else
    spmv_banded<false>(a);
}

namespace {

inline __m512i load_lanes(const uint8_t* entries) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(entries)));
}
inline __m512i load_lanes(const uint16_t* entries) {
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(entries)));
}

// One step of a slice: the lanes in `lanes` add codebook[code] * x[column], the others gather
// nothing (so a padded lane's column may run past the inputs).
inline __m512 add_slice_step(__m512 sum, __m512i v, __m512i col, __mmask16 lanes, __m512 cb, const float* x) {
  const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, col, x, 4);
  return _mm512_fmadd_ps(_mm512_permutexvar_ps(v, cb), xv, sum);
}

// A slice's steps in turn into the two accumulators, so that consecutive steps do not wait on one
// FMA chain: next(sum, entries) adds one step.
template <class Entry, class Next>
[[gnu::always_inline]] inline __m512 alternate_steps(__m512& sum1, __m512 sum0, const Entry* e, int64_t steps,
                                                     Next&& next) {
  int64_t k = 0;
  for (; k + 2 <= steps; k += 2) {
    sum0 = next(sum0, e + k * kSliceRows);
    sum1 = next(sum1, e + (k + 1) * kSliceRows);
  }
  if (k < steps) sum0 = next(sum0, e + k * kSliceRows);
  return sum0;
}

// The steps of one slice over entries that hold their columns: a lane takes part while its step is
// below its entry count (a mask from the loaded codes, code != 0, measured 7% slower here: the
// gather then waits on its own load).
inline __m512 add_slice_steps(__m512& sum1, __m512 sum0, const uint16_t* e, const uint32_t* lengths,
                              int64_t steps, __m512 cb, const float* x) {
  const __m512i lens = _mm512_loadu_si512(lengths), one = _mm512_set1_epi32(1);
  __m512i step = _mm512_setzero_si512();
  auto next = [&](__m512 sum, const uint16_t* entries) {
    const __m512i v = load_lanes(entries);
    const __mmask16 lanes = _mm512_cmpgt_epu32_mask(lens, step);
    step = _mm512_add_epi32(step, one);
    return add_slice_step(sum, v, _mm512_srli_epi32(v, 4), lanes, cb, x);
  };
  return alternate_steps(sum1, sum0, e, steps, next);
}

// The same over gap-coded entries: each lane's column advances by gap + 1; fillers and padding
// (code 0) gather nothing.
template <class Entry>
inline __m512 add_gap_coded_steps(__m512& sum1, __m512 sum0, const Entry* e, int64_t steps, __m512 cb,
                                  const float* x) {
  const __m512i one = _mm512_set1_epi32(1), code_bits = _mm512_set1_epi32(0xF);
  __m512i col = _mm512_set1_epi32(-1);
  auto next = [&](__m512 sum, const Entry* entries) {
    const __m512i v = load_lanes(entries);
    col = _mm512_add_epi32(col, _mm512_add_epi32(_mm512_srli_epi32(v, 4), one));
    return add_slice_step(sum, v, col, _mm512_test_epi32_mask(v, code_bits), cb, x);
  };
  return alternate_steps(sum1, sum0, e, steps, next);
}

// A slice's 16 sums: to their rows with scalar stores (a scatter is slower on AMD, and no faster
// elsewhere here), or whole to their sorted positions (SpmvRowArgs::y_sorted).
inline void store_slice_sums(const SpmvRowArgs& a, int64_t slice, __m512 sums) {
  if (a.y_sorted) {
    _mm512_storeu_ps(a.y_sorted + slice * kSliceRows, sums);
    return;
  }
  const SlicedRows& s = *a.layout;
  alignas(64) float lanes_out[kSliceRows];
  _mm512_store_ps(lanes_out, sums);
  const int32_t* rows = s.order.data() + slice * kSliceRows;
  const int64_t lanes = std::min(kSliceRows, s.rows() - slice * kSliceRows);
  for (int64_t lane = 0; lane < lanes; ++lane) a.y[rows[lane]] = lanes_out[lane];
}

// Two accumulators (alternate_steps); the sums stored by store_slice_sums.
template <class Entry>
void spmv_rows_sliced(const SpmvRowArgs& a, const Entry* entries) {
  const SlicedRows& s = *a.layout;
  const __m512 cb = _mm512_loadu_ps(a.codebook);
  for (int64_t slice = a.slice_begin; slice < a.slice_end; ++slice) {
    const Entry* e = entries + s.slice_ptr[slice];
    const int64_t steps = (s.slice_ptr[slice + 1] - s.slice_ptr[slice]) / kSliceRows;
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    if (sizeof(Entry) == 1 || s.gap_coded)  // one-byte entries are always gap-coded
      sum0 = add_gap_coded_steps(sum1, sum0, e, steps, cb, a.x);
    else if constexpr (sizeof(Entry) == 2)
      sum0 = add_slice_steps(sum1, sum0, e, s.lengths.data() + slice * kSliceRows, steps, cb, a.x);
    store_slice_sums(a, slice, _mm512_add_ps(sum0, sum1));
  }
}

// The panelled walk (SlicedRows): per slice, panel after panel, the panel's 16 inputs in a
// register, each step's inputs picked from it by a permute (no gather) and its weights from the
// register codebook; padding (code 0) masked off, so it adds nothing even beside an infinite input.
// Two accumulators (alternate_steps); the sums stored by store_slice_sums.
// The codebook in registers: 16 entries (one register, permutexvar), up to 32 (two,
// permutex2var) or up to 64 (four: two permutex2var, blended on bit 5 of the code).
template <int kEntries>
struct RegisterCodebook {
  __m512 r[kEntries / 16];
  explicit RegisterCodebook(const float* codebook) {
    for (int i = 0; i < kEntries / 16; ++i) r[i] = _mm512_loadu_ps(codebook + 16 * i);
  }
  __m512 lookup(__m512i code) const {
    if constexpr (kEntries == 16) {
      return _mm512_permutexvar_ps(code, r[0]);
    } else if constexpr (kEntries == 32) {
      return _mm512_permutex2var_ps(r[0], code, r[1]);
    } else {
      const __m512 low = _mm512_permutex2var_ps(r[0], code, r[1]),
                   high = _mm512_permutex2var_ps(r[2], code, r[3]);
      return _mm512_mask_blend_ps(_mm512_test_epi32_mask(code, _mm512_set1_epi32(32)), low, high);
    }
  }
};

template <class Entry, int kCodeBits, int kEntries, int64_t kPanel = kPanelColumns>
void spmv_rows_panelled(const SpmvRowArgs& a, const Entry* entries) {
  const SlicedRows& s = *a.layout;
  const RegisterCodebook<kEntries> cb(a.codebook);
  const __m512i code_bits = _mm512_set1_epi32((1 << kCodeBits) - 1);
  const int64_t panels = s.panels(), last = s.cols - (panels - 1) * kPanel;
  // The last panel's inputs past the matrix's columns are never read (its lanes there are padding).
  const auto full_mask = static_cast<__mmask16>((1u << kPanel) - 1);
  const auto last_mask = static_cast<__mmask16>(last >= kPanel ? full_mask : (1u << last) - 1);
  for (int64_t slice = a.slice_begin; slice < a.slice_end; ++slice) {
    const Entry* e = entries + s.slice_ptr[slice];
    const uint8_t* steps = s.panel_steps.data() + slice * panels;
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    for (int64_t p = 0; p < panels; ++p) {
      if (steps[p] == 0) continue;
      const __m512 xp = _mm512_maskz_loadu_ps(p + 1 == panels ? last_mask : full_mask, a.x + p * kPanel);
      auto next = [&](__m512 sum, const Entry* step) {
        const __m512i v = load_lanes(step);
        const __m512i code = kCodeBits == 4 ? v : _mm512_and_si512(v, code_bits);
        const __m512 xv = _mm512_permutexvar_ps(_mm512_srli_epi32(v, kCodeBits), xp);
        return _mm512_mask3_fmadd_ps(cb.lookup(code), xv, sum, _mm512_test_epi32_mask(v, code_bits));
      };
      sum0 = alternate_steps(sum1, sum0, e, steps[p], next);
      e += steps[p] * kSliceRows;
    }
    store_slice_sums(a, slice, _mm512_add_ps(sum0, sum1));
  }
}

// The panelled walk for the codes held: one-byte entries with 16 codebook entries; two-byte ones
// with the fewest registers that hold every code the layout holds (SlicedRows::code_limit).
void spmv_rows_panelled(const SpmvRowArgs& a) {
  const SlicedRows& s = *a.layout;
  if (s.entry_bits == 8 && s.code_bits == 5)
    return s.code_limit <= 16 ? spmv_rows_panelled<uint8_t, 5, 16, kNarrowPanelColumns>(a, s.entries8.data())
                              : spmv_rows_panelled<uint8_t, 5, 32, kNarrowPanelColumns>(a, s.entries8.data());
  if (s.entry_bits == 8) return spmv_rows_panelled<uint8_t, 4, 16>(a, s.entries8.data());
  if (s.code_limit <= 16) return spmv_rows_panelled<uint16_t, 8, 16>(a, s.entries16.data());
  if (s.code_limit <= 32) return spmv_rows_panelled<uint16_t, 8, 32>(a, s.entries16.data());
  spmv_rows_panelled<uint16_t, 8, 64>(a, s.entries16.data());
}

}  // namespace

void spmv_rows_sliced__avx512(const SpmvRowArgs& a) {
  if (a.layout->panelled())
    spmv_rows_panelled(a);
  else if (a.layout->entry_bits == 8)
    spmv_rows_sliced(a, a.layout->entries8.data());
  else
    spmv_rows_sliced(a, a.layout->entries16.data());
}

namespace {

// Population count in a 32-bit register. (The compiler's 16-bit popcnt of a uint16_t mask writes a
// partial register, which chains the code pointers of all columns of a pass one after the other.)
inline uint32_t popcount32(uint32_t v) {
  uint32_t r;
  __asm__("popcntl %1, %0" : "=r"(r) : "r"(v));
  return r;
}

// One tile's weights: 16 codes looked up in the register codebook, then spread to the mask's rows
// (lanes of zero rows get 0). Advances `code` past the tile's codes.
inline __m512 tile_weights(uint32_t mask, const uint8_t*& code, __m512 cb) {
  __m512 w = _mm512_permutexvar_ps(
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code))), cb);
  code += popcount32(mask);
  return _mm512_maskz_expand_ps(static_cast<__mmask16>(mask), w);
}

// Adds G active columns to y in one pass over the tiles, so y is loaded and stored once per tile
// for all G. The last tile is partial when rows % 16 != 0 (last_mask: its rows).
template <int G>
void tiles_pass(const SpmvTileArgs& a, const int32_t* cols, __m512 cb, int64_t full_tiles,
                __mmask16 last_mask) {
  const ColumnTiles& t = *a.layout;
  const uint16_t* masks[G];
  const uint8_t* code[G];
  __m512 xv[G];
  for (int g = 0; g < G; ++g) {
    masks[g] = t.masks.data() + cols[g] * t.tiles_per_column;
    code[g] = t.codes.data() + t.code_ptr[cols[g]];
    xv[g] = _mm512_set1_ps(a.x[cols[g]]);
  }
  for (int64_t tile = 0; tile < full_tiles; ++tile) {
    __m512 acc = _mm512_loadu_ps(a.y + tile * kTileRows);
    for (int g = 0; g < G; ++g) acc = _mm512_fmadd_ps(tile_weights(masks[g][tile], code[g], cb), xv[g], acc);
    _mm512_storeu_ps(a.y + tile * kTileRows, acc);
  }
  if (last_mask) {
    float* y = a.y + full_tiles * kTileRows;
    __m512 acc = _mm512_maskz_loadu_ps(last_mask, y);
    for (int g = 0; g < G; ++g)
      acc = _mm512_fmadd_ps(tile_weights(masks[g][full_tiles], code[g], cb), xv[g], acc);
    _mm512_mask_storeu_ps(y, last_mask, acc);
  }
}

}  // namespace

void spmv_tiles__avx512(const SpmvTileArgs& a) {
  if (!a.accumulate) std::memset(a.y, 0, sizeof(float) * static_cast<size_t>(a.rows));
  const __m512 cb = _mm512_loadu_ps(a.codebook);
  const int64_t full_tiles = a.rows / kTileRows;
  const auto last_mask = static_cast<__mmask16>((1u << (a.rows % kTileRows)) - 1);
  int64_t k = 0;
  for (; k + 4 <= a.n_active; k += 4) tiles_pass<4>(a, a.active + k, cb, full_tiles, last_mask);
  for (; k < a.n_active; ++k) tiles_pass<1>(a, a.active + k, cb, full_tiles, last_mask);
}

// 16 inputs per step: one compare gives the mask of non-zeros, and their lane indices are
// compressed to the front of a register and stored whole. Lanes past the compressed ones land at
// active[count + popcount .. count + 15], which is at most index j + 15 < n, and are overwritten by
// later steps or ignored.
void list_nonzero__avx512(const NonzeroArgs& a) {
  int64_t count = 0, j = 0;
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (; j + 16 <= a.n; j += 16) {
    __mmask16 nonzero = _mm512_cmp_ps_mask(_mm512_loadu_ps(a.x + j), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_si512(a.active + count, _mm512_maskz_compress_epi32(nonzero, index));
    count += popcount32(nonzero);
    index = _mm512_add_epi32(index, step);
  }
  for (; j < a.n; ++j)
    if (a.x[j] != 0.0f) a.active[count++] = static_cast<int32_t>(j);
  *a.count = count;
}

namespace {

// RowEpilogue on the sums of row r in v.
inline __m512 row_epilogue16(__m512 v, const RowEpilogue& e, int64_t r) {
  if (e.bias) v = _mm512_add_ps(v, _mm512_set1_ps(e.bias[r]));
  // max(v, lo) gives lo for NaN (the second operand wins), as the Relu does.
  if (e.clamps()) v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(e.lo)), _mm512_set1_ps(e.hi));
  return v;
}

// One row of one column block over a batch chunk of 16 * kRegs columns of Xt (the first n of them
// unless kFull), in sets of kRegs accumulators that take entries in turn (two sets, or four for
// chunks of one or two registers, whose FMA chains would otherwise wait on each other's latency)
// and are summed into y (or over it, for the first block), given `epilogue` when `last`.
template <class Entries, bool kRowTable, int kRegs, bool kFull>
[[gnu::always_inline]] inline void csr_row_chunk(const SparseMatrix& m, const CsrBlock& block,
                                                 const Entries& entries, bool first, bool last, int64_t r,
                                                 const float* xt, int64_t ldx, const int64_t* x_rows,
                                                 int64_t b0, int64_t n, float* y,
                                                 const RowEpilogue& epilogue) {
  constexpr int kSets = kRegs <= 2 ? 4 : 2;
  __mmask16 masks[kRegs];
  for (int t = 0; t < kRegs; ++t) {
    int64_t left = (kFull ? 16 * kRegs : n) - 16 * t;
    masks[t] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
  }
  __m512 acc[kSets][kRegs];
  for (int t = 0; t < kRegs; ++t) {
    acc[0][t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(masks[t], y + b0 + 16 * t);
    for (int s = 1; s < kSets; ++s) acc[s][t] = _mm512_setzero_ps();
  }
  const float* base = xt + b0;
  const float* codebook = m.codebook.data();
  auto add = [&](__m512* sum, int64_t col, unsigned code) {
    const __m512 w = _mm512_set1_ps(codebook[code]);
    const float* x = base + (kRowTable ? x_rows[col] : col * ldx);
    sum[0] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(masks[0], x), sum[0]);
    for (int t = 1; t < kRegs; ++t)
      if (masks[t]) sum[t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(masks[t], x + 16 * t), sum[t]);
  };
  const uint32_t begin = block.row_ptr[r], end = block.row_ptr[r + 1];
  if constexpr (kSets == 4)
    entries.walk_quads(
        begin, end, block.col_begin - 1,
        [&](int64_t col0, unsigned code0, int64_t col1, unsigned code1, int64_t col2, unsigned code2,
            int64_t col3, unsigned code3) {
          add(acc[0], col0, code0);
          add(acc[1], col1, code1);
          add(acc[2], col2, code2);
          add(acc[3], col3, code3);
        },
        [&](int64_t col, unsigned code) { add(acc[0], col, code); });
  else
    entries.walk_pairs(
        begin, end, block.col_begin - 1,
        [&](int64_t col0, unsigned code0, int64_t col1, unsigned code1) {
          add(acc[0], col0, code0);
          add(acc[1], col1, code1);
        },
        [&](int64_t col, unsigned code) { add(acc[0], col, code); });
  for (int t = 0; t < kRegs; ++t) {
    __m512 sum = _mm512_add_ps(acc[0][t], acc[1][t]);
    if constexpr (kSets == 4) sum = _mm512_add_ps(sum, _mm512_add_ps(acc[2][t], acc[3][t]));
    _mm512_mask_storeu_ps(y + b0 + 16 * t, masks[t], last ? row_epilogue16(sum, epilogue, r) : sum);
  }
}

// Every row over columns [b0, b0 + 16 * kRegs) of Xt, or the n left.
template <class Entries, bool kRowTable, int kRegs, bool kFull>
void csr_rows_chunk(const SpmmArgs& a, int64_t b0, int64_t n) {
  for (size_t k = 0; k < a.m->csr.size(); ++k) {
    const CsrBlock& block = a.m->csr[k];
    const Entries entries(block);
    const bool last = k + 1 == a.m->csr.size() && !a.epilogue.none();
    for (int64_t r = a.row_begin; r < a.row_end; ++r)
      csr_row_chunk<Entries, kRowTable, kRegs, kFull>(*a.m, block, entries, k == 0, last, r, a.xt, a.ldx,
                                                      a.x_rows, b0, n, a.y + r * a.ldy, a.epilogue);
  }
}

// The last n (1 to 127) columns of Xt from b0 in one pass of ceil(n / 16) registers, the last one
// under a mask unless n is a multiple of 16: each entry is decoded once for all of them (a 7x7
// plane's 49 positions in one pass of four registers, not in passes of 32, 16 and 1).
template <class Entries, bool kRowTable, int kRegs>
void csr_rows_rest(const SpmmArgs& a, int64_t b0, int64_t n) {
  if (n == 16 * kRegs)
    csr_rows_chunk<Entries, kRowTable, kRegs, true>(a, b0, n);
  else
    csr_rows_chunk<Entries, kRowTable, kRegs, false>(a, b0, n);
}

// csr_rows_rest for 1 to 8 registers, by register count - 1.
template <class Entries, bool kRowTable, size_t... kLess>
constexpr auto csr_rests(std::index_sequence<kLess...>) {
  return std::array{&csr_rows_rest<Entries, kRowTable, static_cast<int>(kLess) + 1>...};
}

// Chunks of 128 columns of Xt while there are that many, then the rest in one pass. Wide chunks
// spread an entry's decoding over more FMAs; the 32-wide chunk is what the fully connected op's
// panels use (kSparseFcPanel).
template <class Entries, bool kRowTable>
void spmm_csr_rows(const SpmmArgs& a) {
  int64_t b0 = 0;
  for (; b0 + 128 <= a.batch; b0 += 128) csr_rows_chunk<Entries, kRowTable, 8, true>(a, b0, 128);
  const int64_t n = a.batch - b0;
  if (n > 0) csr_rests<Entries, kRowTable>(std::make_index_sequence<8>{})[(n + 15) / 16 - 1](a, b0, n);
}

template <class Entries>
void spmm_csr(const SpmmArgs& a) {
  if (a.x_rows)
    spmm_csr_rows<Entries, true>(a);
  else
    spmm_csr_rows<Entries, false>(a);
}

// Rows [kBlockRows g, kBlockRows g + rows) of one column block over the batch columns [b0, b0 + 16
// kRegs) of Xt under `masks` (all set when kFull): the group's rows in kBlockRows x kRegs
// accumulators, each loaded row of Xt multiplied by the four weights of its entry; added into y
// (or over it, for the first column block).
// A short group (kShort: its `rows` below kBlockRows) is a separate instance: stores under a row
// count made GCC keep every group's accumulators in memory.
template <int kCodeBits, bool kRowTable, int kRegs, bool kFull, bool kShort>
[[gnu::always_inline]] inline void row_block_chunk(const SpmmArgs& a, const RowBlockColumns& block,
                                                   bool first, bool last, int64_t g, int64_t rows, int64_t b0,
                                                   const __mmask16* masks) {
  if (!kShort) rows = kBlockRows;
  __m512 acc[kBlockRows][kRegs];
  float* y = a.y + g * kBlockRows * a.ldy + b0;
  for (int64_t k = 0; k < kBlockRows; ++k)
    for (int t = 0; t < kRegs; ++t)
      acc[k][t] =
          first || k >= rows ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(masks[t], y + k * a.ldy + 16 * t);
  const float* base = a.xt + b0;
  const float* codebook = a.m->codebook.data();
  const RowBlockCodes<kCodeBits> codes(block);
  for (uint32_t e = block.group_ptr[g]; e < block.group_ptr[g + 1]; ++e) {
    const int64_t col = block.col_begin + block.cols[e];
    const float* x = base + (kRowTable ? a.x_rows[col] : col * a.ldx);
    __m512 xv[kRegs];
    for (int t = 0; t < kRegs; ++t)
      xv[t] = kFull ? _mm512_loadu_ps(x + 16 * t) : _mm512_maskz_loadu_ps(masks[t], x + 16 * t);
    for (int64_t k = 0; k < kBlockRows; ++k) {
      const __m512 w = _mm512_set1_ps(codebook[codes.code(e, k)]);
      for (int t = 0; t < kRegs; ++t) acc[k][t] = _mm512_fmadd_ps(w, xv[t], acc[k][t]);
    }
  }
  if (last)
    for (int64_t k = 0; k < rows; ++k)
      for (int t = 0; t < kRegs; ++t) acc[k][t] = row_epilogue16(acc[k][t], a.epilogue, g * kBlockRows + k);
  for (int64_t k = 0; k < rows; ++k)
    for (int t = 0; t < kRegs; ++t) _mm512_mask_storeu_ps(y + k * a.ldy + 16 * t, masks[t], acc[k][t]);
}

// Every group of rows over the batch columns [b0, b0 + n), n <= 16 kRegs (== when kFull).
template <int kCodeBits, bool kRowTable, int kRegs, bool kFull>
void row_blocks_chunk(const SpmmArgs& a, int64_t b0, int64_t n) {
  __mmask16 masks[kRegs];
  for (int t = 0; t < kRegs; ++t) {
    const int64_t left = n - 16 * t;
    masks[t] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
  }
  const std::vector<RowBlockColumns>& blocks = a.m->row_blocks.blocks;
  const int64_t whole_end = a.row_end / kBlockRows;
  for (size_t k = 0; k < blocks.size(); ++k) {
    const bool last = k + 1 == blocks.size() && !a.epilogue.none();
    for (int64_t g = a.row_begin / kBlockRows; g < whole_end; ++g)
      row_block_chunk<kCodeBits, kRowTable, kRegs, kFull, false>(a, blocks[k], k == 0, last, g, kBlockRows,
                                                                 b0, masks);
    if (whole_end * kBlockRows < a.row_end)
      row_block_chunk<kCodeBits, kRowTable, kRegs, kFull, true>(
          a, blocks[k], k == 0, last, whole_end, a.row_end - whole_end * kBlockRows, b0, masks);
  }
}

// Chunks of 64 columns of Xt (four rows of four registers each), then the rest in one pass.
template <int kCodeBits, bool kRowTable>
void spmm_row_blocks_rows(const SpmmArgs& a) {
  int64_t b0 = 0;
  for (; b0 + 64 <= a.batch; b0 += 64) row_blocks_chunk<kCodeBits, kRowTable, 4, true>(a, b0, 64);
  const int64_t n = a.batch - b0;
  if (n > 48)
    row_blocks_chunk<kCodeBits, kRowTable, 4, false>(a, b0, n);
  else if (n > 32)
    row_blocks_chunk<kCodeBits, kRowTable, 3, false>(a, b0, n);
  else if (n > 16)
    row_blocks_chunk<kCodeBits, kRowTable, 2, false>(a, b0, n);
  else if (n > 0)
    row_blocks_chunk<kCodeBits, kRowTable, 1, false>(a, b0, n);
}

template <int kCodeBits>
void spmm_row_blocks(const SpmmArgs& a) {
  if (a.row_begin >= a.row_end) return;  // an empty range may start inside the last group
  if (a.x_rows)
    spmm_row_blocks_rows<kCodeBits, true>(a);
  else
    spmm_row_blocks_rows<kCodeBits, false>(a);
}

}  // namespace

void spmm_row_blocks__avx512(const SpmmArgs& a) {
  if (a.m->small_codebook)
    spmm_row_blocks<4>(a);
  else
    spmm_row_blocks<8>(a);
}

void spmm_csr_e8__avx512(const SpmmArgs& a) {
  spmm_csr<CsrEntries8>(a);
}
void spmm_csr_e16__avx512(const SpmmArgs& a) {
  spmm_csr<CsrEntries16>(a);
}

// The AVX2 8 x 8 tile (a 16 x 16 AVX-512 tile was not tried).
void transpose__avx512(const TransposeArgs& a) {
  transpose__avx2(a);
}

SPARROW_DEFINE_DENSE_KERNELS(avx512)

}  // namespace sparrow::kernels
