// The engine's layouts as data. One row per layout says which product walks it and with which
// kernel, what that kernel computes, when the layout fits a matrix and when it pays with an ISA's
// kernels, how it is built, the bytes it holds and the bytes one product reads from it. The layout
// policy (layouts_for), building (add_layouts), memory accounting (SparseMatrix::bytes), the
// products' dispatch (sparse_run.cpp), the EIE benchmark's byte counts and the layout tests all read
// this table; a new layout is a new row.
#pragma once

#include <span>

#include "engine/sparse/kernels.h"

namespace sparrow {

class CodeSource;

// How a product uses a layout: one sample walking the columns of its non-zero inputs, one sample
// walking every row, or a batch.
enum class LayoutUse : uint8_t { column_walk, row_walk, batched };

// One call of a layout's kernel.
struct LayoutProduct {
  const float* x = nullptr;         // one sample: inputs [cols]; batched: Xt [cols, ldx]
  const int32_t* active = nullptr;  // column walks: the non-zero inputs, increasing
  int64_t n_active = 0;
  int64_t row_begin = 0, row_end = 0;      // batched: the rows computed
  int64_t slice_begin = 0, slice_end = 0;  // row walk: the slices of rows computed
  int64_t batch = 1, ldx = 0, ldy = 0;     // batched
  float* y = nullptr;                      // column walks and row walk: [rows]; batched: [rows, ldy]
  float* y_sorted = nullptr;               // row walk: SpmvRowArgs::y_sorted
  bool accumulate = false;                 // column walks: add to y instead of overwriting it
  const int64_t* x_rows = nullptr;         // batched: SpmmArgs::x_rows
  const RowEpilogue* epilogue = nullptr;   // batched: SpmmArgs::epilogue (none when null)
};

struct LayoutRow {
  Layout layout;
  const char* name;
  LayoutUse use;
  const char* kernel;    // the SparseKernels entry that walks it
  const char* contract;  // what one call computes
  // Whether the layout can hold the matrix (header only).
  bool (*fits)(const SparseMatrix& header);
  // Whether products with `isa`'s kernels should run on it, given it fits (header only).
  bool (*pays)(const SparseMatrix& header, Isa isa);
  void (*build)(SparseMatrix& m, const CodeSource& codes);
  int64_t (*bytes_held)(const SparseMatrix& m);
  // Bytes the layout would hold, from the header alone (shape, non-zeros, codebook, `compact`); the
  // fillers of gap-coded entries are estimated as for codes spread at random.
  int64_t (*bytes_expected)(const SparseMatrix& header);
  // Entry and pointer bytes one product reads: `active` lists a sample's non-zero inputs (column
  // walks); the row walk and batched products read the whole layout.
  int64_t (*bytes_touched)(const SparseMatrix& m, std::span<const int32_t> active);
  void (*run)(const SparseMatrix& m, const SparseKernels& kernels, const LayoutProduct& p);
};

// Every row; the column walks, and the batched walks, in order of preference.
std::span<const LayoutRow> layout_rows();
const LayoutRow& layout_row(Layout layout);
// The column walk a one-sample product runs on: the first in the table that `m` holds.
const LayoutRow& column_walk_of(const SparseMatrix& m);
// The layout a batched product runs on: the first batched one in the table that `m` holds.
const LayoutRow& batched_walk_of(const SparseMatrix& m);
// Sum of bytes_expected over the layouts in `set`.
int64_t bytes_expected(const SparseMatrix& header, LayoutSet set);

}  // namespace sparrow
