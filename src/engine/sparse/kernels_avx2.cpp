// AVX2 kernels (compiled with -mavx2 -mfma). Batch 1 uses the scalar walk (see spmv_scalar.h);
// the batched CSR kernel keeps 32 samples in four 8-lane accumulators.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "engine/sparse/csr_entries.h"
#include "engine/sparse/dense_kernels.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/spmv_scalar.h"

namespace sparrow::kernels {

namespace {

// For each 8-bit mask, the lanes of its set bits in increasing order, one byte each.
constexpr std::array<uint64_t, 256> compress_lanes() {
  std::array<uint64_t, 256> table{};
  for (unsigned mask = 0; mask < 256; ++mask) {
    int out = 0;
    for (unsigned lane = 0; lane < 8; ++lane)
      if (mask & (1u << lane)) table[mask] |= static_cast<uint64_t>(lane) << (8 * out++);
  }
  return table;
}
constexpr std::array<uint64_t, 256> kCompressLanes = compress_lanes();

}  // namespace

// 8 inputs per step: the compare's mask selects a permutation that moves the indices of the
// non-zeros to the front; all 8 lanes are stored (at most index j + 7 < n, see the AVX-512 variant).
void list_nonzero__avx2(const NonzeroArgs& a) {
  int64_t count = 0, j = 0;
  __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  for (; j + 8 <= a.n; j += 8) {
    auto nonzero = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(a.x + j), _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    __m256i lanes = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(kCompressLanes[nonzero])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.active + count),
                        _mm256_permutevar8x32_epi32(index, lanes));
    count += __builtin_popcount(nonzero);
    index = _mm256_add_epi32(index, step);
  }
  for (; j < a.n; ++j)
    if (a.x[j] != 0.0f) a.active[count++] = static_cast<int32_t>(j);
  *a.count = count;
}

void spmv_csc_e8__avx2(const SpmvArgs& a) {
  spmv_csc_scalar<uint8_t, 4, 0xF>(a, a.part->entries8.data());
}
void spmv_csc_e16__avx2(const SpmvArgs& a) {
  spmv_csc_scalar<uint16_t, 8, 0xFF>(a, a.part->entries16.data());
}
void spmv_banded__avx2(const SpmvBandArgs& a) {
  spmv_banded_scalar(a);
}
void spmv_tiles__avx2(const SpmvTileArgs& a) {
  spmv_tiles_scalar(a);
}
void spmv_rows_sliced__avx2(const SpmvRowArgs& a) {
  spmv_rows_sliced_scalar(a);
}

namespace {

// RowEpilogue on the sums of row r in v.
inline __m256 row_epilogue8(__m256 v, const RowEpilogue& e, int64_t r) {
  if (e.bias) v = _mm256_add_ps(v, _mm256_set1_ps(e.bias[r]));
  // max(v, lo) gives lo for NaN (the second operand wins), as the Relu does.
  if (e.clamps()) v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(e.lo)), _mm256_set1_ps(e.hi));
  return v;
}

template <class Entries, bool kRowTable>
void spmm_csr_rows(const SpmmArgs& a) {
  const SparseMatrix& m = *a.m;
  for (int64_t b0 = 0; b0 < a.batch; b0 += 32) {
    // Four 8-lane accumulators over up to 32 batch columns; partial ones are masked.
    __m256i masks[4];
    for (int t = 0; t < 4; ++t) {
      int64_t left = std::clamp<int64_t>(a.batch - b0 - 8 * t, 0, 8);
      masks[t] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)),
                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    for (size_t k = 0; k < m.csr.size(); ++k) {
      const CsrBlock& block = m.csr[k];
      const Entries entries(block);
      for (int64_t r = a.row_begin; r < a.row_end; ++r) {
        float* y = a.y + r * a.ldy + b0;
        __m256 acc[4];
        for (int t = 0; t < 4; ++t)
          acc[t] = k == 0 ? _mm256_setzero_ps() : _mm256_maskload_ps(y + 8 * t, masks[t]);
        entries.walk(block.row_ptr[r], block.row_ptr[r + 1], block.col_begin - 1,
                     [&](int64_t col, unsigned code) {
                       __m256 w = _mm256_set1_ps(m.codebook[code]);
                       const float* x = a.xt + (kRowTable ? a.x_rows[col] : col * a.ldx) + b0;
                       for (int t = 0; t < 4; ++t)
                         acc[t] = _mm256_fmadd_ps(w, _mm256_maskload_ps(x + 8 * t, masks[t]), acc[t]);
                     });
        if (k + 1 == m.csr.size() && !a.epilogue.none())
          for (int t = 0; t < 4; ++t) acc[t] = row_epilogue8(acc[t], a.epilogue, r);
        for (int t = 0; t < 4; ++t) _mm256_maskstore_ps(y + 8 * t, masks[t], acc[t]);
      }
    }
  }
}

template <class Entries>
void spmm_csr(const SpmmArgs& a) {
  if (a.x_rows)
    spmm_csr_rows<Entries, true>(a);
  else
    spmm_csr_rows<Entries, false>(a);
}

// One group of rows over the 16 columns of Xt from b0 under `masks`, in two 8-lane accumulators per
// row, added into y (or over it, for the first column block). A short group (kShort: `rows` below
// kBlockRows) is its own instance: stores under a row count keep GCC's accumulators in memory.
template <int kCodeBits, bool kRowTable, bool kShort>
inline void row_block_group(const SpmmArgs& a, const RowBlockColumns& block, bool first, bool last, int64_t g,
                            int64_t rows, int64_t b0, const __m256i* masks) {
  if (!kShort) rows = kBlockRows;
  const float* codebook = a.m->codebook.data();
  const RowBlockCodes<kCodeBits> codes(block);
  float* y = a.y + g * kBlockRows * a.ldy + b0;
  __m256 acc[kBlockRows][2];
  for (int64_t r = 0; r < kBlockRows; ++r)
    for (int t = 0; t < 2; ++t)
      acc[r][t] =
          first || r >= rows ? _mm256_setzero_ps() : _mm256_maskload_ps(y + r * a.ldy + 8 * t, masks[t]);
  for (uint32_t e = block.group_ptr[g]; e < block.group_ptr[g + 1]; ++e) {
    const int64_t col = block.col_begin + block.cols[e];
    const float* x = a.xt + (kRowTable ? a.x_rows[col] : col * a.ldx) + b0;
    const __m256 x0 = _mm256_maskload_ps(x, masks[0]), x1 = _mm256_maskload_ps(x + 8, masks[1]);
    for (int64_t r = 0; r < kBlockRows; ++r) {
      const __m256 w = _mm256_set1_ps(codebook[codes.code(e, r)]);
      acc[r][0] = _mm256_fmadd_ps(w, x0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(w, x1, acc[r][1]);
    }
  }
  if (last && !a.epilogue.none())
    for (int64_t r = 0; r < rows; ++r)
      for (int t = 0; t < 2; ++t) acc[r][t] = row_epilogue8(acc[r][t], a.epilogue, g * kBlockRows + r);
  for (int64_t r = 0; r < rows; ++r)
    for (int t = 0; t < 2; ++t) _mm256_maskstore_ps(y + r * a.ldy + 8 * t, masks[t], acc[r][t]);
}

// Row blocks over chunks of 16 columns of Xt, partial chunks masked.
template <int kCodeBits, bool kRowTable>
void spmm_row_blocks_rows(const SpmmArgs& a) {
  const int64_t whole_end = a.row_end / kBlockRows;
  for (int64_t b0 = 0; b0 < a.batch; b0 += 16) {
    __m256i masks[2];
    for (int t = 0; t < 2; ++t) {
      const int64_t left = std::clamp<int64_t>(a.batch - b0 - 8 * t, 0, 8);
      masks[t] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)),
                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    const std::vector<RowBlockColumns>& blocks = a.m->row_blocks.blocks;
    for (size_t k = 0; k < blocks.size(); ++k) {
      const bool last = k + 1 == blocks.size();
      for (int64_t g = a.row_begin / kBlockRows; g < whole_end; ++g)
        row_block_group<kCodeBits, kRowTable, false>(a, blocks[k], k == 0, last, g, kBlockRows, b0, masks);
      if (whole_end * kBlockRows < a.row_end)
        row_block_group<kCodeBits, kRowTable, true>(a, blocks[k], k == 0, last, whole_end,
                                                    a.row_end - whole_end * kBlockRows, b0, masks);
    }
  }
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

namespace {

// One 8 x 8 tile in eight AVX registers: pairs interleaved, then quads, then the 128-bit halves.
void transpose_tile8(const float* src, int64_t lds, float* dst, int64_t ldd, bool add) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    __m256 low = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20),
           high = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    if (add) {
      low = _mm256_add_ps(low, _mm256_loadu_ps(dst + i * ldd));
      high = _mm256_add_ps(high, _mm256_loadu_ps(dst + (i + 4) * ldd));
    }
    _mm256_storeu_ps(dst + i * ldd, low);
    _mm256_storeu_ps(dst + (i + 4) * ldd, high);
  }
}

}  // namespace

void transpose__avx2(const TransposeArgs& a) {
  transpose_tiles(a, transpose_tile8);
}

void spmm_row_blocks__avx2(const SpmmArgs& a) {
  if (a.m->small_codebook)
    spmm_row_blocks<4>(a);
  else
    spmm_row_blocks<8>(a);
}

void spmm_csr_e8__avx2(const SpmmArgs& a) {
  spmm_csr<CsrEntries8>(a);
}
void spmm_csr_e16__avx2(const SpmmArgs& a) {
  spmm_csr<CsrEntries16>(a);
}

SPARROW_DEFINE_DENSE_KERNELS(avx2)

}  // namespace sparrow::kernels
