// The engine's in-memory form of a compressed weight matrix W [rows, cols], built once at load
// from the codes of a CompressedTensor (whatever layout the file used).
//
// Two layouts are kept:
//  - CSC per partition (batch 1): global row i belongs to partition i % P as local row i / P (EIE's
//    row interleaving; the executor uses P = 1 and splits the active columns between threads).
//    Entries of each column are (code, gap) pairs, gap = zero local rows skipped since the previous
//    entry. One byte per entry (code | gap << 4) when the codebook has at most 16 entries and 4-bit
//    gaps need few fillers; otherwise two bytes (code | gap << 8). Filler entries (code 0,
//    codebook[0] == 0) bridge longer gaps.
//  - CSR in column blocks (batches and convolutions): the columns are cut into blocks (see
//    csr_block_columns) so that a block of the transposed inputs stays in cache while every row
//    uses it; per block, the entries of each row are (code, column gap) in two bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "sparrow/format.h"

namespace sparrow {

struct CscPartition {
  int64_t local_rows = 0;
  std::vector<uint32_t> col_ptr;   // cols + 1 entry offsets
  std::vector<uint8_t> entries8;   // one-byte entries (narrow codebook)
  std::vector<uint16_t> entries16; // two-byte entries (wide codebook)
};

// Width of a CSR column block: enough columns for about kCsrEntriesPerBlockRow entries per row, so
// the accumulators' reload per block is amortized, and at most kCsrMaxBlockColumns so that the
// 64-sample slice of a block of transposed inputs (256 bytes per column) stays in L1/L2.
inline constexpr double kCsrEntriesPerBlockRow = 16.0;
inline constexpr int64_t kCsrMinBlockColumns = 128;
inline constexpr int64_t kCsrMaxBlockColumns = 2048;
int64_t csr_block_columns(double density);

struct CsrBlock {
  int64_t col_begin = 0;
  std::vector<uint32_t> row_ptr;   // rows + 1 entry offsets
  std::vector<uint16_t> entries;   // code | column gap << 8, gaps relative to col_begin
};

struct SparseMatrix {
  int64_t rows = 0, cols = 0;
  bool small_codebook = false;     // at most 16 entries: looked up from registers
  bool e8 = false;                 // one-byte CSC entries (else two bytes)
  std::vector<float> codebook;     // padded to 16 or 256 entries, entry 0 == 0
  std::vector<CscPartition> csc;   // one per partition
  std::vector<CsrBlock> csr;       // column blocks
  std::vector<uint64_t> row_entries;  // CSR entries per row over all blocks (for load balance)
  int64_t nonzeros = 0;

  int partitions() const { return static_cast<int>(csc.size()); }
  int64_t csc_entries() const;     // fillers included, all partitions
  double density() const { return static_cast<double>(nonzeros) / static_cast<double>(rows * cols); }
};

// Builds both layouts from a code matrix (codes[r * cols + c], 0 = zero weight).
SparseMatrix build_sparse_matrix(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols,
                                 const std::vector<float>& codebook, int partitions);
// From a compressed tensor: decodes its codes (any file layout) and builds the engine layouts.
Result<SparseMatrix> build_sparse_matrix(const CompressedTensor& t, int partitions);

}  // namespace sparrow
