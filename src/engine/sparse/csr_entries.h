// Readers of a CSR block's entries in each of their widths, shared by the batched kernels of every
// ISA and by the code source. walk(begin, end, col, term) visits entries [begin, end) of one row in
// order, calling term(column, code) for each (code 0 for a filler); `col` is the column before the
// row's first entry (the block's first column - 1); each entry adds its gap (zero columns skipped
// since the previous entry) + 1. walk_pairs(begin, end, col, pair, one) visits the same entries
// two at a time, pair(col0, code0, col1, code1), and an odd last one with one(col, code).
#pragma once

#include <cstdint>

#include "engine/sparse/sparse_matrix.h"

namespace sparrow {

// One byte: code | gap << 4.
struct CsrEntries8 {
  const uint8_t* entries;
  explicit CsrEntries8(const CsrBlock& b) : entries(b.entries8.data()) {}
  template <class Term>
  void walk(uint32_t e, uint32_t end, int64_t col, Term&& term) const {
    for (; e < end; ++e) {
      col += (entries[e] >> 4) + 1;
      term(col, entries[e] & 15u);
    }
  }
  template <class Pair, class One>
  void walk_pairs(uint32_t e, uint32_t end, int64_t col, Pair&& pair, One&& one) const {
    for (; e + 2 <= end; e += 2) {
      const int64_t col0 = col + (entries[e] >> 4) + 1;
      col = col0 + (entries[e + 1] >> 4) + 1;
      pair(col0, entries[e] & 15u, col, entries[e + 1] & 15u);
    }
    if (e < end) one(col + (entries[e] >> 4) + 1, entries[e] & 15u);
  }
};

// Two bytes: code | gap << 8.
struct CsrEntries16 {
  const uint16_t* entries;
  explicit CsrEntries16(const CsrBlock& b) : entries(b.entries16.data()) {}
  template <class Term>
  void walk(uint32_t e, uint32_t end, int64_t col, Term&& term) const {
    for (; e < end; ++e) {
      col += (entries[e] >> 8) + 1;
      term(col, entries[e] & 0xFFu);
    }
  }
  template <class Pair, class One>
  void walk_pairs(uint32_t e, uint32_t end, int64_t col, Pair&& pair, One&& one) const {
    for (; e + 2 <= end; e += 2) {
      const int64_t col0 = col + (entries[e] >> 8) + 1;
      col = col0 + (entries[e + 1] >> 8) + 1;
      pair(col0, entries[e] & 0xFFu, col, entries[e + 1] & 0xFFu);
    }
    if (e < end) one(col + (entries[e] >> 8) + 1, entries[e] & 0xFFu);
  }
};

}  // namespace sparrow
