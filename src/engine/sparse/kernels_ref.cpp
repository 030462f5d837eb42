// Scalar reference kernels: the functional golden for every optimized variant and for the
// simulator. Plain loops, no intrinsics.
#include <cstring>

#include "engine/sparse/csr_entries.h"
#include "engine/sparse/dense_kernels.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/spmv_scalar.h"

namespace sparrow::kernels {

void list_nonzero__ref(const NonzeroArgs& a) {
  int64_t count = 0;
  for (int64_t j = 0; j < a.n; ++j)
    if (a.x[j] != 0.0f) a.active[count++] = static_cast<int32_t>(j);
  *a.count = count;
}

void spmv_csc_e8__ref(const SpmvArgs& a) {
  spmv_csc_scalar<uint8_t, 4, 0xF>(a, a.part->entries8.data());
}
void spmv_csc_e16__ref(const SpmvArgs& a) {
  spmv_csc_scalar<uint16_t, 8, 0xFF>(a, a.part->entries16.data());
}
void spmv_banded__ref(const SpmvBandArgs& a) {
  spmv_banded_scalar(a);
}
void spmv_tiles__ref(const SpmvTileArgs& a) {
  spmv_tiles_scalar(a);
}
void spmv_rows_sliced__ref(const SpmvRowArgs& a) {
  spmv_rows_sliced_scalar(a);
}

namespace {

// Rows [row_begin, row_end) of Y given the epilogue, after the product.
void apply_epilogue(const SpmmArgs& a) {
  if (a.epilogue.none()) return;
  for (int64_t r = a.row_begin; r < a.row_end; ++r)
    for (int64_t b = 0; b < a.batch; ++b) a.y[r * a.ldy + b] = a.epilogue(a.y[r * a.ldy + b], r);
}

template <class Entries>
void spmm_csr(const SpmmArgs& a) {
  auto x_row = [&](int64_t col) { return a.xt + (a.x_rows ? a.x_rows[col] : col * a.ldx); };
  const SparseMatrix& m = *a.m;
  for (int64_t r = a.row_begin; r < a.row_end; ++r)
    for (int64_t b = 0; b < a.batch; ++b) a.y[r * a.ldy + b] = 0.0f;
  for (const CsrBlock& block : m.csr) {
    const Entries entries(block);
    for (int64_t r = a.row_begin; r < a.row_end; ++r) {
      float* y = a.y + r * a.ldy;
      entries.walk(block.row_ptr[r], block.row_ptr[r + 1], block.col_begin - 1,
                   [&](int64_t col, unsigned code) {
                     const float w = m.codebook[code];
                     const float* x = x_row(col);
                     for (int64_t b = 0; b < a.batch; ++b) y[b] += w * x[b];
                   });
    }
  }
  apply_epilogue(a);
}

template <int kCodeBits>
void spmm_row_blocks(const SpmmArgs& a) {
  if (a.row_begin >= a.row_end) return;  // an empty range may start inside the last group
  auto x_row = [&](int64_t col) { return a.xt + (a.x_rows ? a.x_rows[col] : col * a.ldx); };
  const SparseMatrix& m = *a.m;
  for (int64_t r = a.row_begin; r < a.row_end; ++r)
    for (int64_t b = 0; b < a.batch; ++b) a.y[r * a.ldy + b] = 0.0f;
  for (const RowBlockColumns& block : m.row_blocks.blocks) {
    const RowBlockCodes<kCodeBits> codes(block);
    for (int64_t g = a.row_begin / kBlockRows; g * kBlockRows < a.row_end; ++g)
      for (uint32_t e = block.group_ptr[g]; e < block.group_ptr[g + 1]; ++e) {
        const float* x = x_row(block.col_begin + block.cols[e]);
        for (int64_t k = 0; k < kBlockRows && g * kBlockRows + k < a.row_end; ++k) {
          const float w = m.codebook[codes.code(e, k)];
          float* y = a.y + (g * kBlockRows + k) * a.ldy;
          for (int64_t b = 0; b < a.batch; ++b) y[b] += w * x[b];
        }
      }
  }
  apply_epilogue(a);
}

}  // namespace

void spmm_row_blocks__ref(const SpmmArgs& a) {
  if (a.m->small_codebook)
    spmm_row_blocks<4>(a);
  else
    spmm_row_blocks<8>(a);
}

void spmm_csr_e8__ref(const SpmmArgs& a) {
  spmm_csr<CsrEntries8>(a);
}
void spmm_csr_e16__ref(const SpmmArgs& a) {
  spmm_csr<CsrEntries16>(a);
}

void transpose__ref(const TransposeArgs& a) {
  transpose_tiles(a);
}

SPARROW_DEFINE_DENSE_KERNELS(ref)

}  // namespace sparrow::kernels
