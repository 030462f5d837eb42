#include "engine/sparse/layout_table.h"

#include <array>
#include <cmath>

#include "engine/sparse/code_source.h"

namespace sparrow {

namespace {

template <class V>
int64_t held(const V& v) {
  return static_cast<int64_t>(v.capacity() * sizeof(v[0]));
}

// The banded layouts and the tiles decode codes from a 16-entry codebook in registers, over one
// row partition; their AVX-512 kernels are what make them pay (the scalar walk gains nothing).
bool narrow_one_partition(const SparseMatrix& m) {
  return m.small_codebook && m.partitions() == 1;
}
bool avx512_narrow(const SparseMatrix& m, Isa isa) {
  return isa == Isa::avx512 && narrow_one_partition(m);
}
bool always(const SparseMatrix&) {
  return true;
}
bool always_pays(const SparseMatrix&, Isa) {
  return true;
}

// Bytes per non-zero of gap-coded entries (CSC, CSR): one byte plus its share of fillers where
// add_csc/add_csr would choose one-byte entries, else two. Gaps between codes spread at random
// with density d are geometric: a gap of 16 or more (a filler) follows an entry with probability
// q = (1 - d)^16, so there are q / (1 - q) fillers per entry.
double gap_coded_entry_bytes(const SparseMatrix& m) {
  const double q = std::pow(1.0 - std::min(m.density(), 1.0), 16.0);
  const double fillers = q < 1.0 ? q / (1.0 - q) : 1e9;
  return m.small_codebook && (m.compact || fillers <= 0.1) ? 1.0 + fillers : 2.0;
}
int64_t entries_expected(const SparseMatrix& m) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(m.nonzeros) * gap_coded_entry_bytes(m)));
}
int64_t pointers(int64_t lines, int64_t bands) {
  return 4 * (lines + 1) * bands;
}

// ---- CSC per partition ----
int64_t csc_held(const SparseMatrix& m) {
  int64_t n = 0;
  for (const auto& p : m.csc) n += held(p.col_ptr) + held(p.entries8) + held(p.entries16);
  return n;
}
int64_t csc_touched(const SparseMatrix& m, std::span<const int32_t> active) {
  int64_t n = 0;
  for (const auto& p : m.csc)
    for (int32_t j : active) n += (p.col_ptr[j + 1] - p.col_ptr[j]) * (m.e8 ? 1 : 2) + 8;
  return n;
}
int64_t csc_expected(const SparseMatrix& m) {
  return entries_expected(m) + pointers(m.cols, m.partitions());
}
void csc_run(const SparseMatrix& m, const SparseKernels& k, const LayoutProduct& p) {
  (m.e8 ? k.spmv_csc_e8 : k.spmv_csc_e16)(
      SpmvArgs{&m.csc[0], m.codebook.data(), m.small_codebook, p.active, p.n_active, p.x, p.y, p.accumulate});
}

// ---- column tiles ----
void tiles_build(SparseMatrix& m, const CodeSource& codes) {
  m.tiles = column_tiles_of(codes);
}
int64_t tiles_held(const SparseMatrix& m) {
  return held(m.tiles.masks) + held(m.tiles.code_ptr) + held(m.tiles.codes);
}
int64_t tiles_expected(const SparseMatrix& m) {
  return 2 * ((m.rows + kTileRows - 1) / kTileRows) * m.cols + m.nonzeros + pointers(m.cols, 1) + kTileRows;
}
int64_t tiles_touched(const SparseMatrix& m, std::span<const int32_t> active) {
  int64_t n = 0;
  for (int32_t j : active)
    n += m.tiles.tiles_per_column * 2 + (m.tiles.code_ptr[j + 1] - m.tiles.code_ptr[j]) + 8;
  return n;
}
void tiles_run(const SparseMatrix& m, const SparseKernels& k, const LayoutProduct& p) {
  k.spmv_tiles(
      SpmvTileArgs{&m.tiles, m.rows, m.codebook.data(), p.active, p.n_active, p.x, p.y, p.accumulate});
}

// ---- banded CSC ----
void banded_build(SparseMatrix& m, const CodeSource& codes) {
  m.banded = banded_csc_of(codes);
}
int64_t banded_held(const SparseMatrix& m) {
  return held(m.banded.col_ptr) + held(m.banded.entries);
}
int64_t banded_expected(const SparseMatrix& m) {
  return 2 * m.nonzeros + pointers(m.cols, (m.rows + kBandRows - 1) / kBandRows);
}
int64_t banded_touched(const SparseMatrix& m, std::span<const int32_t> active) {
  const BandedCsc& b = m.banded;
  int64_t n = 0;
  for (int64_t band = 0; band < b.bands; ++band)
    for (int32_t j : active) {
      const uint32_t* ptr = b.col_ptr.data() + band * (b.cols + 1);
      n += (ptr[j + 1] - ptr[j]) * 2 + 8;
    }
  return n;
}
void banded_run(const SparseMatrix& m, const SparseKernels& k, const LayoutProduct& p) {
  k.spmv_banded(
      SpmvBandArgs{&m.banded, m.rows, m.codebook.data(), p.active, p.n_active, p.x, p.y, p.accumulate});
}

// ---- sliced rows ----
// 16-entry codebooks in any format; up to kRegisterCodebookMost entries panelled in two-byte
// entries, or in a memory budget's compact matrix up to kNarrowPanelCodebookMost in one-byte ones.
bool sliced_rows_fit(const SparseMatrix& m) {
  const int most = m.compact ? kNarrowPanelCodebookMost : kRegisterCodebookMost;
  return m.partitions() == 1 && (m.small_codebook || m.codebook_size <= most);
}
bool sliced_rows_pay(const SparseMatrix& m, Isa isa) {
  return isa == Isa::avx512 && sliced_rows_fit(m) && !tiles_pay_off(m, isa);
}
void sliced_rows_build(SparseMatrix& m, const CodeSource& codes) {
  m.sliced_rows = sliced_rows_of(m, codes);
}
int64_t sliced_rows_held(const SparseMatrix& m) {
  const SlicedRows& s = m.sliced_rows;
  return held(s.order) + held(s.slice_ptr) + held(s.lengths) + held(s.panel_steps) + held(s.entries8) +
         held(s.entries16);
}
// The expected largest of 16 rows' entry counts in one panel (kSliceRows draws of a Poisson count
// with the panel's mean): E[max] = sum over k >= 0 of P(max > k).
double expected_panel_steps(double mean, int64_t panel_columns) {
  double expected = 0, below = 0, term = std::exp(-mean);  // P(count <= k), P(count == k)
  for (int64_t k = 0; k < panel_columns; ++k) {
    below += term;
    expected += 1.0 - std::pow(std::min(below, 1.0), static_cast<double>(kSliceRows));
    term *= mean / (k + 1);
  }
  return expected;
}
// Panelled: a byte per slot (two with a wider codebook outside a budget), each slice's panel as
// many steps as its longest row there (rows with their non-zeros spread at random), the steps per
// panel, the order and slice offsets.
int64_t panelled_rows_expected(const SparseMatrix& m) {
  const bool narrow_panels = !m.small_codebook && m.compact;
  const int64_t width = narrow_panels ? kNarrowPanelColumns : kPanelColumns;
  const int64_t slices = (m.rows + kSliceRows - 1) / kSliceRows;
  const int64_t panels = (m.cols + width - 1) / width;
  const double per_row_panel = static_cast<double>(m.nonzeros) / static_cast<double>(m.rows * panels);
  const auto slots = static_cast<int64_t>(static_cast<double>(slices * panels * kSliceRows) *
                                          expected_panel_steps(per_row_panel, width));
  const int64_t entry_bytes = m.small_codebook || m.compact ? 1 : 2;
  return entry_bytes * std::max(slots, m.nonzeros) + slices * panels + 4 * m.rows + 4 * (slices + 1);
}
// Two bytes per non-zero, or in a compact matrix one and the fillers of 4-bit gaps; padding for the
// lanes of the last slice past the rows, as long as an average row, and half a step per slice for
// the shorter rows of a slice (sorted by length, they differ little).
int64_t sliced_rows_expected(const SparseMatrix& m) {
  if (m.rows == 0) return 4;
  if (!m.compact || !m.small_codebook) return panelled_rows_expected(m);
  const int64_t slices = (m.rows + kSliceRows - 1) / kSliceRows;
  const int64_t entry_bytes = m.compact ? 1 : 2;
  const int64_t entries = m.compact ? entries_expected(m) : m.nonzeros;
  const int64_t padding = (slices * kSliceRows - m.rows) * m.nonzeros / m.rows + slices * kSliceRows / 2;
  const bool columns = !m.compact && m.cols <= kSliceColumns;
  return entry_bytes * (entries + padding) + 4 * m.rows + 4 * (slices + 1) +
         (columns ? 4 * kSliceRows * slices : 0);
}
int64_t sliced_rows_touched(const SparseMatrix& m, std::span<const int32_t>) {
  const SlicedRows& s = m.sliced_rows;
  return s.entries() * s.entry_bits / 8 + 4 * s.rows() +
         4 * static_cast<int64_t>(s.slice_ptr.size() + s.lengths.size()) + held(s.panel_steps);
}
void sliced_rows_run(const SparseMatrix& m, const SparseKernels& k, const LayoutProduct& p) {
  k.spmv_rows_sliced(
      SpmvRowArgs{&m.sliced_rows, m.codebook.data(), p.x, p.slice_begin, p.slice_end, p.y, p.y_sorted});
}

// ---- CSR in column blocks ----
int64_t csr_held(const SparseMatrix& m) {
  int64_t n = 0;
  for (const auto& b : m.csr) n += held(b.row_ptr) + held(b.entries8) + held(b.entries16);
  return n;
}
int64_t csr_expected(const SparseMatrix& m) {
  const int64_t width = csr_block_columns(m.density());
  return entries_expected(m) + pointers(m.rows, (m.cols + width - 1) / width);
}
int64_t csr_touched(const SparseMatrix& m, std::span<const int32_t>) {
  int64_t n = 0;
  for (const auto& b : m.csr)
    n += static_cast<int64_t>(b.entries8.size() + 2 * b.entries16.size()) + (m.rows + 1) * 4;
  return n;
}
void csr_run(const SparseMatrix& m, const SparseKernels& k, const LayoutProduct& p) {
  spmm_csr_of(k, m)(SpmmArgs{&m, p.row_begin, p.row_end, p.x, p.ldx, p.batch, p.y, p.ldy, p.x_rows,
                             p.epilogue ? *p.epilogue : RowEpilogue{}});
}

// ---- row blocks ----
bool row_blocks_fit_header(const SparseMatrix& m) {
  return row_blocks_fit(m);
}
void row_blocks_build(SparseMatrix& m, const CodeSource& codes) {
  m.row_blocks = row_blocks_of(m, codes);
}
int64_t row_blocks_code_bytes(const SparseMatrix& m) {
  return m.small_codebook ? 2 : 4;
}
int64_t row_blocks_held(const SparseMatrix& m) {
  int64_t n = 0;
  for (const RowBlockColumns& b : m.row_blocks.blocks)
    n += held(b.group_ptr) + held(b.cols) + held(b.codes4) + held(b.codes8);
  return n;
}
int64_t row_blocks_expected(const SparseMatrix& m) {
  const int64_t width = csr_block_columns(m.density()), groups = (m.rows + kBlockRows - 1) / kBlockRows;
  return m.blocks_of_rows * (2 + row_blocks_code_bytes(m)) + pointers(groups, (m.cols + width - 1) / width);
}
int64_t row_blocks_touched(const SparseMatrix& m, std::span<const int32_t>) {
  int64_t n = 0;
  for (const RowBlockColumns& b : m.row_blocks.blocks)
    n += static_cast<int64_t>(b.cols.size()) * (2 + row_blocks_code_bytes(m)) +
         4 * static_cast<int64_t>(b.group_ptr.size());
  return n;
}
void row_blocks_run(const SparseMatrix& m, const SparseKernels& k, const LayoutProduct& p) {
  k.spmm_row_blocks(SpmmArgs{&m, p.row_begin, p.row_end, p.x, p.ldx, p.batch, p.y, p.ldy, p.x_rows,
                             p.epilogue ? *p.epilogue : RowEpilogue{}});
}

const std::array kRows = {
    LayoutRow{kLayoutTiles, "tiles", LayoutUse::column_walk, "spmv_tiles",
              "y[rows] = W x over the listed active columns, a 16-row tile of y per step (mask, lookup, FMA)",
              narrow_one_partition, tiles_pay_off, tiles_build, tiles_held, tiles_expected, tiles_touched,
              tiles_run},
    LayoutRow{
        kLayoutBanded, "banded", LayoutUse::column_walk, "spmv_banded",
        "y[rows] = W x over the listed active columns, 16 entries (row << 4 | code) per step, band by band",
        narrow_one_partition, avx512_narrow, banded_build, banded_held, banded_expected, banded_touched,
        banded_run},
    LayoutRow{kLayoutCsc, "csc", LayoutUse::column_walk, "spmv_csc_e8/e16",
              "y[local rows] = W x over the listed active columns of one partition, (code, gap) entries",
              always, always_pays, add_csc, csc_held, csc_expected, csc_touched, csc_run},
    LayoutRow{kLayoutSlicedRows, "sliced rows", LayoutUse::row_walk, "spmv_rows_sliced",
              "y[rows of the slices] = W x walking every row, 16 rows (one entry each) per step",
              sliced_rows_fit, sliced_rows_pay, sliced_rows_build, sliced_rows_held, sliced_rows_expected,
              sliced_rows_touched, sliced_rows_run},
    LayoutRow{kLayoutRowBlocks, "row blocks", LayoutUse::batched, "spmm_row_blocks",
              "Y[row_begin:row_end, 0:batch] = W Xt, four rows per entry, column block by column block",
              row_blocks_fit_header, always_pays, row_blocks_build, row_blocks_held, row_blocks_expected,
              row_blocks_touched, row_blocks_run},
    LayoutRow{kLayoutCsr, "csr", LayoutUse::batched, "spmm_csr_e8/e16",
              "Y[row_begin:row_end, 0:batch] = W Xt, column block by column block", always, always_pays,
              add_csr, csr_held, csr_expected, csr_touched, csr_run},
};

}  // namespace

std::span<const LayoutRow> layout_rows() {
  return kRows;
}

const LayoutRow& layout_row(Layout layout) {
  for (const LayoutRow& row : kRows)
    if (row.layout == layout) return row;
  return kRows.back();  // unreachable: every Layout has a row
}

const LayoutRow& batched_walk_of(const SparseMatrix& m) {
  for (const LayoutRow& row : kRows)
    if (row.use == LayoutUse::batched && m.has(row.layout)) return row;
  return layout_row(kLayoutCsr);
}

const LayoutRow& column_walk_of(const SparseMatrix& m) {
  for (const LayoutRow& row : kRows)
    if (row.use == LayoutUse::column_walk && m.has(row.layout)) return row;
  return layout_row(kLayoutCsc);
}

int64_t bytes_expected(const SparseMatrix& header, LayoutSet set) {
  int64_t n = 0;
  for (const LayoutRow& row : kRows)
    if (set & row.layout) n += row.bytes_expected(header);
  return n;
}

bool tiles_pay_off(const SparseMatrix& m, Isa isa) {
  if (!avx512_narrow(m, isa)) return false;
  double tiles = static_cast<double>((m.rows + kTileRows - 1) / kTileRows) * static_cast<double>(m.cols);
  return static_cast<double>(m.nonzeros) >= kTileBreakEvenEntries * tiles;
}

LayoutSet layouts_for(const SparseMatrix& m, Isa isa, bool one_sample, InputZeros zeros) {
  auto first = [&](LayoutUse use) -> LayoutSet {
    for (const LayoutRow& row : kRows)
      if (row.use == use && row.fits(m) && row.pays(m, isa)) return row.layout;
    return 0;
  };
  if (!one_sample) return first(LayoutUse::batched);
  if (m.rows == 0 || m.cols == 0) return kLayoutCsc;
  const LayoutSet columns = first(LayoutUse::column_walk);
  // The row walk is kept beside a banded column walk, or the CSC walk of a wider codebook (tiles
  // are cheap enough either way).
  const bool wide_csc = columns == kLayoutCsc && !m.small_codebook;
  const LayoutSet rows = columns == kLayoutBanded || wide_csc ? first(LayoutUse::row_walk) : 0;
  if (rows == 0) return columns;
  switch (zeros) {
    case InputZeros::expected:
      return columns;
    case InputZeros::unlikely:
      return rows;
    case InputZeros::unknown:
      break;
  }
  return columns | rows;
}

void add_layouts(SparseMatrix& m, const CodeSource& codes, LayoutSet want) {
  const LayoutSet missing = want & ~m.layouts;
  for (const LayoutRow& row : kRows)
    if (missing & row.layout) row.build(m, codes);
  m.layouts |= missing;
  if ((missing & (kLayoutBanded | kLayoutSlicedRows)) && m.has(kLayoutBanded | kLayoutSlicedRows))
    m.row_walk_from_active = row_walk_from_active(m.banded, m.sliced_rows);
  else if ((missing & (kLayoutCsc | kLayoutSlicedRows)) && m.has(kLayoutCsc | kLayoutSlicedRows) &&
           !m.small_codebook && m.partitions() == 1)
    m.row_walk_from_active = row_walk_from_active(m.csc[0], m.sliced_rows);
}

int64_t SparseMatrix::bytes() const {
  int64_t n = held(codebook) + held(row_entries);
  for (const LayoutRow& row : kRows) n += row.bytes_held(*this);
  return n;
}

}  // namespace sparrow
