// Readers of a CSR block's entries in each of their widths, shared by the batched kernels of every
// ISA and by the code source. walk(begin, end, col, term) visits entries [begin, end) of one row in
// order, calling term(column, code) for each (code 0 for a filler); `col` is the column before the
// row's first entry (the block's first column - 1); each entry adds its gap (zero columns skipped
// since the previous entry) + 1.
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
};

}  // namespace sparrow
