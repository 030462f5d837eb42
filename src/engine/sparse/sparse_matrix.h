// The engine's in-memory form of a compressed weight matrix W [rows, cols], built once at load
// from the codes of a CompressedTensor (whatever layout the file used).
//
// Two layouts are kept:
//  - CSC per partition (batch 1, EIE style): global row i belongs to partition i % P as local row
//    i / P; entries of each column are (code, gap) pairs, gap = zero local rows skipped since the
//    previous entry. With a codebook of at most 16 entries an entry is one byte (code | gap << 4,
//    4-bit gaps); otherwise two bytes (code | gap << 8, 8-bit gaps). Filler entries (code 0,
//    codebook[0] == 0) bridge longer gaps.
//  - CSR (batches and convolutions): entries of each row are (code, column gap) in two bytes.
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

struct SparseMatrix {
  int64_t rows = 0, cols = 0;
  bool narrow = false;             // codebook <= 16 entries: one-byte CSC entries
  std::vector<float> codebook;     // padded to 16 (narrow) or 256 entries, entry 0 == 0
  std::vector<CscPartition> csc;   // one per partition
  std::vector<uint32_t> row_ptr;   // CSR: rows + 1 entry offsets
  std::vector<uint16_t> csr;       // CSR entries: code | column gap << 8
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
