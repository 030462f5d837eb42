// Readers of a CSR block's entries in each of their widths, shared by the batched kernels of every
// ISA and by the code source. walk(begin, end, col, term) visits entries [begin, end) of one row in
// order, calling term(column, code) for each (code 0 for a filler); `col` is the column before the
// row's first entry (the block's first column - 1); each entry adds its gap (zero columns skipped
// since the previous entry) + 1. walk_pairs(begin, end, col, pair, one) visits the same entries
// two at a time, pair(col0, code0, col1, code1), and an odd last one with one(col, code);
// walk_quads four at a time.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "engine/sparse/sparse_matrix.h"

namespace sparrow {

// Entries of type T: code | gap << kCodeBits; `member` is the CsrBlock array of that width.
template <class T, int kCodeBits, std::vector<T> CsrBlock::*member>
struct CsrEntries {
  static constexpr unsigned kCodeMask = (1u << kCodeBits) - 1;
  const T* entries;
  explicit CsrEntries(const CsrBlock& b) : entries((b.*member).data()) {}
  // The column of entry e, given the column before it.
  int64_t next_column(uint32_t e, int64_t col) const { return col + (entries[e] >> kCodeBits) + 1; }
  unsigned code(uint32_t e) const { return entries[e] & kCodeMask; }
  template <class Term>
  void walk(uint32_t e, uint32_t end, int64_t col, Term&& term) const {
    for (; e < end; ++e) {
      col = next_column(e, col);
      term(col, code(e));
    }
  }
  template <class Pair, class One>
  void walk_pairs(uint32_t e, uint32_t end, int64_t col, Pair&& pair, One&& one) const {
    for (; e + 2 <= end; e += 2) {
      const int64_t col0 = next_column(e, col);
      col = next_column(e + 1, col0);
      pair(col0, code(e), col, code(e + 1));
    }
    if (e < end) one(next_column(e, col), code(e));
  }
  // The same four at a time, quad(col0, code0, ..., col3, code3), the last up to three one by one.
  template <class Quad, class One>
  void walk_quads(uint32_t e, uint32_t end, int64_t col, Quad&& quad, One&& one) const {
    for (; e + 4 <= end; e += 4) {
      const int64_t col0 = next_column(e, col), col1 = next_column(e + 1, col0),
                    col2 = next_column(e + 2, col1);
      col = next_column(e + 3, col2);
      quad(col0, code(e), col1, code(e + 1), col2, code(e + 2), col, code(e + 3));
    }
    for (; e < end; ++e) {
      col = next_column(e, col);
      one(col, code(e));
    }
  }
};

// One byte: code | gap << 4.
using CsrEntries8 = CsrEntries<uint8_t, 4, &CsrBlock::entries8>;
// Two bytes: code | gap << 8.
using CsrEntries16 = CsrEntries<uint16_t, 8, &CsrBlock::entries16>;

}  // namespace sparrow

namespace sparrow {

// The codes of one row block entry (RowBlockColumns): kCodeBits (4 or 8) per row of the block.
template <int kCodeBits>
struct RowBlockCodes {
  using Codes = std::conditional_t<kCodeBits == 4, uint16_t, uint32_t>;
  const Codes* codes;
  explicit RowBlockCodes(const RowBlockColumns& b) {
    if constexpr (kCodeBits == 4)
      codes = b.codes4.data();
    else
      codes = b.codes8.data();
  }
  // The code of row k (0..kBlockRows - 1) of entry e.
  unsigned code(uint32_t e, int64_t k) const {
    return static_cast<unsigned>(codes[e] >> (kCodeBits * k)) & ((1u << kCodeBits) - 1);
  }
};

}  // namespace sparrow
