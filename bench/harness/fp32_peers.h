// Plain float32 sparse kernels, the "well-written peers" Sparrow's compressed kernels are
// benchmarked against: the same loop structure over float values and int32 indices.
#pragma once

#include <cstdint>
#include <vector>

namespace sparrow {

struct PlainCsc {  // column-major: values and row indices per column
  int64_t rows = 0, cols = 0;
  std::vector<uint32_t> col_ptr;
  std::vector<int32_t> row_index;
  std::vector<float> values;
};

struct PlainCsr {  // row-major: values and column indices per row
  int64_t rows = 0, cols = 0;
  std::vector<uint32_t> row_ptr;
  std::vector<int32_t> col_index;
  std::vector<float> values;
};

// Columns per panel of the panelled CSR peer: the rows of Xt one panel reads (256 x 64 batch columns
// x 4 bytes = 64 KB) stay in L1/L2 while every row of W walks them.
inline constexpr int64_t kPeerPanelColumns = 256;

// Row blocks in float32: kPlainBlockRows rows of one column per entry, per panel of
// kPeerPanelColumns columns and group of rows, the entries' column indices and their rows' values
// (block-major, kPlainBlockRows per entry; zeros where a row of the block is zero).
inline constexpr int64_t kPlainBlockRows = 4;
struct PlainBlocks {
  int64_t rows = 0, cols = 0;
  std::vector<uint32_t> group_ptr;  // groups + 1 entry offsets
  std::vector<int32_t> col_index;
  std::vector<float> values;  // kPlainBlockRows per entry
};

// From a dense row-major matrix.
PlainCsc plain_csc(const std::vector<float>& w, int64_t rows, int64_t cols);
PlainCsr plain_csr(const std::vector<float>& w, int64_t rows, int64_t cols);
// The same matrix cut into column panels of kPeerPanelColumns, each a CSR over all rows (column
// indices stay absolute).
std::vector<PlainCsr> plain_csr_panels(const std::vector<float>& w, int64_t rows, int64_t cols);
// The matrix in row blocks, one PlainBlocks per panel of kPeerPanelColumns columns.
std::vector<PlainBlocks> plain_block_panels(const std::vector<float>& w, int64_t rows, int64_t cols);

// y = W x: the plain loop over the inputs that skips the zero ones (y overwritten). This is the
// batch-1 peer: like Sparrow's engine it starts from x and finds the non-zero inputs itself.
void plain_csc_spmv(const PlainCsc& m, const float* x, float* y);
// The same walk over a list of the non-zero inputs made beforehand (the peer's time without
// finding them; reported next to it).
void plain_csc_spmv(const PlainCsc& m, const int32_t* active, int64_t n_active, const float* x, float* y);
// Y[r, 0:batch] = W Xt (Xt [cols, ldx], Y [rows, ldy]) for rows [row_begin, row_end), panel by panel
// (the first panel writes Y, the others add to it); the batch is the inner, vectorized loop (64
// columns per pass held in registers).
void plain_csr_spmm(const std::vector<PlainCsr>& panels, int64_t row_begin, int64_t row_end, const float* xt,
                    int64_t ldx, int64_t batch, float* y, int64_t ldy);
// The same over row blocks: four rows' accumulators per pass, each row of Xt loaded once for the
// four. row_begin is a multiple of kPlainBlockRows.
void plain_blocks_spmm(const std::vector<PlainBlocks>& panels, int64_t row_begin, int64_t row_end,
                       const float* xt, int64_t ldx, int64_t batch, float* y, int64_t ldy);

}  // namespace sparrow
