#include "engine/sparse/sparse_matrix.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "engine/sparse/code_source.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/layout_table.h"

namespace sparrow {

int64_t SparseMatrix::csc_entries() const {
  int64_t n = 0;
  for (const auto& p : csc)
    n += e8 ? static_cast<int64_t>(p.entries8.size()) : static_cast<int64_t>(p.entries16.size());
  return n;
}

int64_t csr_block_columns(double density) {
  int64_t width = kCsrMinBlockColumns;
  while (width < kCsrMaxBlockColumns && static_cast<double>(width) * density < kCsrEntriesPerBlockRow)
    width *= 2;
  return width;
}

namespace {

// Where a code goes in a line-keyed layout: its line, and its position along that line.
struct Slot {
  int64_t line, pos;
};

// Calls code(group, col, row_in_group, code) for every non-zero, and new_block(group, col) before
// the first non-zero of each row block: the rows of a column arrive in increasing order
// (CodeSource's contract), so a column's groups do too.
template <class NewBlock, class Code>
void visit_row_blocks(const CodeSource& codes, NewBlock new_block, Code code) {
  std::vector<int64_t> last_group(static_cast<size_t>(codes.cols()), -1);
  codes.visit([&](int64_t r, int64_t c, uint8_t v) {
    const int64_t g = r / kBlockRows;
    if (last_group[static_cast<size_t>(c)] != g) {
      last_group[static_cast<size_t>(c)] = g;
      new_block(g, c);
    }
    code(g, c, static_cast<int>(r % kBlockRows), v);
  });
}

// Gap-coded layouts store each entry's distance from the previous one in its line; kNoGaps marks
// layouts that store positions instead.
constexpr int64_t kNoGaps = 0;

// Fillers a gap-coded layout needs before an entry at `pos` whose line continues at `next`.
int64_t fillers_before(int64_t pos, int64_t next, int64_t max_gap) {
  return max_gap == kNoGaps ? 0 : (pos - next) / (max_gap + 1);
}

// Entries per line, fillers included, in one pass over `codes`: slot_of(row, col) places each code;
// the positions within a line arrive increasing (CodeSource's contract). Distances over max_gap
// are bridged with fillers (code 0).
template <class SlotOf>
std::vector<uint32_t> count_lines(const CodeSource& codes, int64_t lines, int64_t max_gap, SlotOf slot_of) {
  std::vector<int64_t> next(static_cast<size_t>(lines), 0);
  std::vector<uint32_t> counts(static_cast<size_t>(lines), 0);
  codes.visit([&](int64_t r, int64_t c, uint8_t) {
    Slot s = slot_of(r, c);
    counts[static_cast<size_t>(s.line)] +=
        static_cast<uint32_t>(fillers_before(s.pos, next[static_cast<size_t>(s.line)], max_gap) + 1);
    next[static_cast<size_t>(s.line)] = s.pos + 1;
  });
  return counts;
}

// The second pass: the k-th entry of each line (fillers included, as count_lines counted them) is
// encode(code, gap, pos), written to entries[at(line, k)].
template <class Entry, class SlotOf, class Encode, class At>
void place_entries(const CodeSource& codes, int64_t lines, int64_t max_gap, SlotOf slot_of, Encode encode,
                   At at, Entry* entries) {
  std::vector<int64_t> next(static_cast<size_t>(lines), 0);
  std::vector<uint32_t> k(static_cast<size_t>(lines), 0);
  codes.visit([&](int64_t r, int64_t c, uint8_t code) {
    Slot s = slot_of(r, c);
    const auto line = static_cast<size_t>(s.line);
    int64_t& line_next = next[line];
    for (int64_t f = fillers_before(s.pos, line_next, max_gap); f > 0; --f) {
      entries[at(s.line, k[line]++)] = encode(0, max_gap, 0);
      line_next += max_gap + 1;
    }
    entries[at(s.line, k[line]++)] = encode(code, s.pos - line_next, s.pos);
    line_next = s.pos + 1;
  });
}

// Fills `lines` lines of entries one after the other by counting sort (count_lines, then
// place_entries). `starts` gets lines + 1 entry offsets.
template <class Entry, class SlotOf, class Encode>
void fill_lines(const CodeSource& codes, int64_t lines, int64_t max_gap, SlotOf slot_of, Encode encode,
                std::vector<uint32_t>& starts, std::vector<Entry>& entries) {
  std::vector<uint32_t> counts = count_lines(codes, lines, max_gap, slot_of);
  starts.assign(static_cast<size_t>(lines + 1), 0);
  for (int64_t i = 0; i < lines; ++i)
    starts[static_cast<size_t>(i + 1)] = starts[static_cast<size_t>(i)] + counts[static_cast<size_t>(i)];
  counts = std::vector<uint32_t>();
  entries.assign(starts.back(), Entry{});
  place_entries(
      codes, lines, max_gap, slot_of, encode,
      [&](int64_t line, uint32_t k) { return starts[static_cast<size_t>(line)] + k; }, entries.data());
}

// Cuts lines [first, first + count) out of one filled layout: their offsets rebased to 0 and their
// entries.
template <class Entry>
void slice_lines(const std::vector<uint32_t>& starts, const std::vector<Entry>& entries, int64_t first,
                 int64_t count, std::vector<uint32_t>& ptr, std::vector<Entry>& out) {
  const uint32_t base = starts[static_cast<size_t>(first)];
  ptr.assign(starts.begin() + first, starts.begin() + first + count + 1);
  for (uint32_t& p : ptr) p -= base;
  out.assign(entries.begin() + base, entries.begin() + starts[static_cast<size_t>(first + count)]);
}

// Per band of `lines` lines, the band's offsets followed by its end: [bands, lines + 1], as the
// banded layouts keep them, from the lines' starts in band order.
std::vector<uint32_t> band_pointers(const std::vector<uint32_t>& starts, int64_t bands, int64_t lines) {
  std::vector<uint32_t> ptr(static_cast<size_t>(bands * (lines + 1)));
  for (int64_t band = 0; band < bands; ++band)
    std::copy(starts.begin() + band * lines, starts.begin() + (band + 1) * lines + 1,
              ptr.begin() + band * (lines + 1));
  return ptr;
}

// Fillers a gap-coded layout with at most `max_gap` would need for m's codes, placed by slot_of.
template <class SlotOf>
int64_t count_fillers(const SparseMatrix& m, const CodeSource& codes, int64_t lines, int64_t max_gap,
                      SlotOf slot_of) {
  const std::vector<uint32_t> counts = count_lines(codes, lines, max_gap, slot_of);
  return std::accumulate(counts.begin(), counts.end(), int64_t{0}) - m.nonzeros;
}

// Whether a gap-coded layout takes one-byte entries (see the header): 16-entry codebook, and few
// fillers unless the matrix is compact.
template <class CountFillers>
bool narrow_entries(const SparseMatrix& m, CountFillers fillers) {
  return m.small_codebook && (m.compact || fillers() * 10 <= m.nonzeros);
}

template <class Entry>
void build_csc_entries(SparseMatrix& m, const CodeSource& codes, int64_t max_gap, int shift,
                       std::vector<Entry> CscPartition::*field) {
  const int64_t P = m.partitions(), cols = m.cols;
  std::vector<uint32_t> starts;
  std::vector<Entry> all;
  fill_lines(
      codes, P * cols, max_gap,
      [&](int64_t r, int64_t c) {
        return Slot{(r % P) * cols + c, r / P};
      },
      [&](int code, int64_t gap, int64_t) { return static_cast<Entry>(code | gap << shift); }, starts, all);
  std::vector<CscPartition> parts(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p) {
    parts[static_cast<size_t>(p)].local_rows =
        partition_rows(m.rows, static_cast<int>(P), static_cast<int>(p));
    if (P == 1) {
      parts[0].col_ptr = std::move(starts);
      parts[0].*field = std::move(all);
    } else {
      slice_lines(starts, all, p * cols, cols, parts[static_cast<size_t>(p)].col_ptr,
                  parts[static_cast<size_t>(p)].*field);
    }
  }
  m.csc = std::move(parts);
}

}  // namespace

void add_csc(SparseMatrix& m, const CodeSource& codes) {
  const int64_t P = m.partitions(), cols = m.cols;
  m.e8 = narrow_entries(m, [&] {
    return count_fillers(m, codes, P * cols, 15, [&](int64_t r, int64_t c) {
      return Slot{(r % P) * cols + c, r / P};
    });
  });
  if (m.e8)
    build_csc_entries<uint8_t>(m, codes, 15, 4, &CscPartition::entries8);
  else
    build_csc_entries<uint16_t>(m, codes, 255, 8, &CscPartition::entries16);
}

namespace {

template <class Entry>
void build_csr_blocks(SparseMatrix& m, const CodeSource& codes, int64_t width, int64_t max_gap, int shift,
                      std::vector<Entry> CsrBlock::*field) {
  const int64_t rows = m.rows, blocks = (m.cols + width - 1) / width;
  std::vector<uint32_t> starts;
  std::vector<Entry> all;
  fill_lines(
      codes, blocks * rows, max_gap,
      [&](int64_t r, int64_t c) {
        return Slot{c / width * rows + r, c % width};
      },
      [&](int code, int64_t gap, int64_t) { return static_cast<Entry>(code | gap << shift); }, starts, all);
  std::vector<CsrBlock> csr(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) {
    csr[static_cast<size_t>(b)].col_begin = b * width;
    slice_lines(starts, all, b * rows, rows, csr[static_cast<size_t>(b)].row_ptr,
                csr[static_cast<size_t>(b)].*field);
  }
  m.csr = std::move(csr);
}

}  // namespace

void add_csr(SparseMatrix& m, const CodeSource& codes) {
  const int64_t rows = m.rows, width = csr_block_columns(m.density());
  const bool narrow = narrow_entries(m, [&] {
    return count_fillers(m, codes, (m.cols + width - 1) / width * rows, 15, [&](int64_t r, int64_t c) {
      return Slot{c / width * rows + r, c % width};
    });
  });
  m.csr_entry_bits = narrow ? 8 : 16;
  if (narrow)
    build_csr_blocks<uint8_t>(m, codes, width, 15, 4, &CsrBlock::entries8);
  else
    build_csr_blocks<uint16_t>(m, codes, width, 255, 8, &CsrBlock::entries16);
}

namespace {

// The banded CSC's encoding: rows cut into bands of kBandRows; per band and column, one entry per
// non-zero, row within the band << 4 | code.
int64_t fill_bands(const CodeSource& codes, std::vector<uint32_t>& ptr, std::vector<uint16_t>& entries) {
  const int64_t cols = codes.cols(), bands = (codes.rows() + kBandRows - 1) / kBandRows;
  std::vector<uint32_t> starts;
  fill_lines(
      codes, bands * cols, kNoGaps,
      [&](int64_t r, int64_t c) {
        return Slot{r / kBandRows * cols + c, r};
      },
      [&](int code, int64_t, int64_t row) { return static_cast<uint16_t>((row % kBandRows) << 4 | code); },
      starts, entries);
  ptr = band_pointers(starts, bands, cols);
  return bands;
}

// Sliced rows from rows of columns or gaps (count_lines and place_entries' encode and max_gap):
// sorted by entry count, then interleaved 16 rows at a time, written in place (no copy of the
// entries in row order).
template <class Entry, class Encode>
void fill_slices(const CodeSource& codes, int64_t max_gap, Encode encode, SlicedRows& s,
                 std::vector<Entry>& out) {
  const int64_t rows = codes.rows();
  auto slot_of = [](int64_t r, int64_t c) { return Slot{r, c}; };
  const std::vector<uint32_t> length = count_lines(codes, rows, max_gap, slot_of);
  s.order.resize(static_cast<size_t>(rows));
  for (int32_t r = 0; r < rows; ++r) s.order[static_cast<size_t>(r)] = r;
  std::stable_sort(s.order.begin(), s.order.end(), [&](int32_t a, int32_t b) {
    return length[static_cast<size_t>(a)] > length[static_cast<size_t>(b)];
  });
  std::vector<int64_t> position(static_cast<size_t>(rows));
  for (int64_t pos = 0; pos < rows; ++pos)
    position[static_cast<size_t>(s.order[static_cast<size_t>(pos)])] = pos;
  const int64_t slices = (rows + kSliceRows - 1) / kSliceRows;
  s.slice_ptr.assign(static_cast<size_t>(slices + 1), 0);
  for (int64_t slice = 0; slice < slices; ++slice)  // the longest row of a slice is its first
    s.slice_ptr[static_cast<size_t>(slice + 1)] =
        s.slice_ptr[static_cast<size_t>(slice)] +
        static_cast<uint32_t>(kSliceRows) *
            length[static_cast<size_t>(s.order[static_cast<size_t>(slice * kSliceRows)])];
  if (!s.gap_coded) {
    s.lengths.assign(static_cast<size_t>(slices * kSliceRows), 0);
    for (int64_t pos = 0; pos < rows; ++pos)
      s.lengths[static_cast<size_t>(pos)] = length[static_cast<size_t>(s.order[static_cast<size_t>(pos)])];
  }
  out.assign(s.slice_ptr.back(), Entry{0});  // padding: code 0
  place_entries(
      codes, rows, max_gap, slot_of, encode,
      [&](int64_t r, uint32_t k) {
        const int64_t pos = position[static_cast<size_t>(r)];
        return s.slice_ptr[static_cast<size_t>(pos / kSliceRows)] + pos % kSliceRows + k * kSliceRows;
      },
      out.data());
}

// Panelled sliced rows (SlicedRows): rows sorted by entry count, then each slice's entries panel
// after panel, in two passes over the codes (counts per row and panel, then placement). Besides
// the layout it holds a byte per row and panel and four bytes per slice and panel while it builds.
template <class Entry>
void fill_panelled(const CodeSource& codes, SlicedRows& s, std::vector<Entry>& entries) {
  const int64_t rows = codes.rows(), panels = s.panels();
  std::vector<uint8_t> count(static_cast<size_t>(rows * panels), 0);  // at most panel_columns each
  std::vector<uint32_t> length(static_cast<size_t>(rows), 0);
  int largest = 0;
  codes.visit([&](int64_t r, int64_t c, uint8_t code) {
    ++count[static_cast<size_t>(r * panels + c / s.panel_columns)];
    ++length[static_cast<size_t>(r)];
    largest = std::max<int>(largest, code);
  });
  while (s.code_limit <= largest) s.code_limit *= 2;
  s.order.resize(static_cast<size_t>(rows));
  for (int32_t r = 0; r < rows; ++r) s.order[static_cast<size_t>(r)] = r;
  std::stable_sort(s.order.begin(), s.order.end(), [&](int32_t a, int32_t b) {
    return length[static_cast<size_t>(a)] > length[static_cast<size_t>(b)];
  });
  std::vector<uint32_t>& position = length;  // the counts are sorted: now each row's position
  for (int64_t pos = 0; pos < rows; ++pos)
    position[static_cast<size_t>(s.order[static_cast<size_t>(pos)])] = static_cast<uint32_t>(pos);
  const int64_t slices = (rows + kSliceRows - 1) / kSliceRows;
  s.panel_steps.assign(static_cast<size_t>(slices * panels), 0);
  s.slice_ptr.assign(static_cast<size_t>(slices + 1), 0);
  std::vector<uint32_t> base(static_cast<size_t>(slices * panels), 0);  // each panel's first entry
  for (int64_t slice = 0; slice < slices; ++slice) {
    uint32_t offset = s.slice_ptr[static_cast<size_t>(slice)];
    for (int64_t p = 0; p < panels; ++p) {
      uint8_t& steps = s.panel_steps[static_cast<size_t>(slice * panels + p)];
      for (int64_t lane = 0; lane < kSliceRows && slice * kSliceRows + lane < rows; ++lane) {
        const int64_t r = s.order[static_cast<size_t>(slice * kSliceRows + lane)];
        steps = std::max(steps, count[static_cast<size_t>(r * panels + p)]);
      }
      base[static_cast<size_t>(slice * panels + p)] = offset;
      offset += static_cast<uint32_t>(kSliceRows) * steps;
    }
    s.slice_ptr[static_cast<size_t>(slice + 1)] = offset;
  }
  std::fill(count.begin(), count.end(), uint8_t{0});  // now the entries placed per row and panel
  entries.assign(s.slice_ptr.back(), 0);              // padding: code 0
  codes.visit([&](int64_t r, int64_t c, uint8_t code) {
    const int64_t p = c / s.panel_columns, pos = position[static_cast<size_t>(r)];
    uint8_t& placed = count[static_cast<size_t>(r * panels + p)];
    const uint32_t at = base[static_cast<size_t>(pos / kSliceRows * panels + p)] +
                        static_cast<uint32_t>(placed * kSliceRows + pos % kSliceRows);
    entries[at] = static_cast<Entry>((c % s.panel_columns) << s.code_bits | code);
    ++placed;
  });
}

}  // namespace

BandedCsc banded_csc_of(const CodeSource& codes) {
  BandedCsc b;
  b.cols = codes.cols();
  b.bands = fill_bands(codes, b.col_ptr, b.entries);
  return b;
}

SlicedRows sliced_rows_of(const SparseMatrix& m, const CodeSource& codes) {
  SlicedRows s;
  s.cols = codes.cols();
  if (!m.compact) {
    s.panel_columns = kPanelColumns;
    if (m.small_codebook) {
      s.entry_bits = 8;
      fill_panelled(codes, s, s.entries8);
    } else {
      s.entry_bits = 16;
      s.code_bits = 8;
      fill_panelled(codes, s, s.entries16);
    }
    return s;
  }
  if (!m.small_codebook) {  // a compact matrix of up to kNarrowPanelCodebookMost entries
    s.panel_columns = kNarrowPanelColumns;
    s.entry_bits = 8;
    s.code_bits = 5;
    fill_panelled(codes, s, s.entries8);
    return s;
  }
  return classic_sliced_rows_of(m, codes);
}

SlicedRows classic_sliced_rows_of(const SparseMatrix& m, const CodeSource& codes) {
  SlicedRows s;
  s.cols = codes.cols();
  s.entry_bits = m.compact ? 8 : 16;  // one-byte entries' running columns cost time: only within a budget
  s.gap_coded = m.compact || codes.cols() > kSliceColumns;
  auto entry = [](int code, int64_t gap_or_column) { return gap_or_column << 4 | code; };
  if (m.compact)
    fill_slices(
        codes, 15, [&](int code, int64_t gap, int64_t) { return static_cast<uint8_t>(entry(code, gap)); }, s,
        s.entries8);
  else if (s.gap_coded)
    fill_slices(
        codes, kSliceColumns - 1,
        [&](int code, int64_t gap, int64_t) { return static_cast<uint16_t>(entry(code, gap)); }, s,
        s.entries16);
  else
    fill_slices(
        codes, kNoGaps,
        [&](int code, int64_t, int64_t col) { return static_cast<uint16_t>(entry(code, col)); }, s,
        s.entries16);
  return s;
}

ColumnTiles column_tiles_of(const CodeSource& codes) {
  ColumnTiles t;
  const int64_t cols = codes.cols();
  t.tiles_per_column = (codes.rows() + kTileRows - 1) / kTileRows;
  t.masks.assign(static_cast<size_t>(t.tiles_per_column * cols), 0);
  t.code_ptr.assign(static_cast<size_t>(cols + 1), 0);
  codes.visit([&](int64_t r, int64_t c, uint8_t) {
    uint16_t& mask = t.masks[static_cast<size_t>(c * t.tiles_per_column + r / kTileRows)];
    mask = static_cast<uint16_t>(mask | 1u << (r % kTileRows));
    ++t.code_ptr[static_cast<size_t>(c + 1)];
  });
  for (int64_t c = 0; c < cols; ++c)
    t.code_ptr[static_cast<size_t>(c + 1)] += t.code_ptr[static_cast<size_t>(c)];
  t.codes.assign(t.code_ptr.back() + kTileRows, 0);
  std::vector<uint32_t> cursor(t.code_ptr.begin(), t.code_ptr.end() - 1);
  codes.visit([&](int64_t, int64_t c, uint8_t code) { t.codes[cursor[static_cast<size_t>(c)]++] = code; });
  return t;
}

SparseMatrix sparse_matrix_header(const CodeSource& codes, const std::vector<float>& codebook,
                                  int partitions) {
  SparseMatrix m;
  m.rows = codes.rows();
  m.cols = codes.cols();
  m.partition_count = std::max(partitions, 1);
  m.small_codebook = codebook.size() <= 16;
  m.codebook_size = static_cast<int>(std::min<size_t>(codebook.size(), 256));
  m.codebook.assign(m.small_codebook ? 16 : 256, 0.0f);
  std::copy(codebook.begin(),
            codebook.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(codebook.size(), 256)),
            m.codebook.begin());
  m.codebook[0] = 0.0f;
  m.row_entries.assign(static_cast<size_t>(m.rows), 0);
  visit_row_blocks(
      codes,
      [&](int64_t g, int64_t) {
        ++m.blocks_of_rows;
        m.row_block_slots += std::min(kBlockRows, m.rows - g * kBlockRows);
      },
      [&](int64_t g, int64_t, int row, uint8_t) {
        ++m.row_entries[static_cast<size_t>(g * kBlockRows + row)];
      });
  for (uint64_t n : m.row_entries) m.nonzeros += static_cast<int64_t>(n);
  return m;
}

namespace {

// What one walk of every row of `rows` costs, by the fitted costs.
double row_walk_ns(const SlicedRows& rows, int64_t l2_bytes) {
  const auto slices = static_cast<double>(rows.slices()),
             steps = static_cast<double>(rows.entries() / kSliceRows);
  const int64_t cached = std::min(l2_bytes, kPanelWalkFittedL2Bytes);
  const auto beyond_l2 =
      static_cast<double>(std::max<int64_t>(0, rows.entries() * rows.entry_bits / 8 - cached));
  return rows.panelled() ? std::max(kPanelWalkNsPerStep * steps, kPanelWalkNsPerByteBeyondL2 * beyond_l2)
                         : kRowWalkNsPerSlice * slices + kRowWalkNsPerStep * steps;
}

}  // namespace

int64_t row_walk_from_active(const BandedCsc& columns, const SlicedRows& rows, int64_t l2_bytes) {
  if (columns.cols == 0 || rows.entries() == 0) return columns.cols + 1;  // nothing to walk either way
  double column_steps = 0;
  for (int64_t band = 0; band < columns.bands; ++band)
    for (int64_t j = 0; j < columns.cols; ++j) {
      uint32_t n = columns.col_ptr[static_cast<size_t>(band * (columns.cols + 1) + j + 1)] -
                   columns.col_ptr[static_cast<size_t>(band * (columns.cols + 1) + j)];
      column_steps += (n + 15) / 16;
    }
  const auto cols = static_cast<double>(columns.cols);
  double per_active_column = kColumnWalkNsPerColumn * static_cast<double>(columns.bands) +
                             kColumnWalkNsPerStep * column_steps / cols;
  return static_cast<int64_t>(std::ceil(row_walk_ns(rows, l2_bytes) / per_active_column));
}

int64_t row_walk_from_active(const CscPartition& columns, const SlicedRows& rows, int64_t l2_bytes) {
  const auto cols = static_cast<double>(columns.col_ptr.size()) - 1;
  if (cols <= 0 || rows.entries() == 0) return static_cast<int64_t>(cols) + 1;
  const double per_active_column =
      kColumnWalkNsPerColumn + kCscWalkNsPerEntry * static_cast<double>(columns.col_ptr.back()) / cols;
  return static_cast<int64_t>(std::ceil(row_walk_ns(rows, l2_bytes) / per_active_column));
}

int64_t RowBlocks::entries() const {
  int64_t n = 0;
  for (const RowBlockColumns& b : blocks) n += static_cast<int64_t>(b.cols.size());
  return n;
}

bool row_blocks_fit(const SparseMatrix& m) {
  return m.blocks_of_rows > 0 &&
         static_cast<double>(m.nonzeros) >= kRowBlocksMinFill * static_cast<double>(m.row_block_slots);
}

namespace {

// Sorts entries [begin, end) of one column block's group by column (they arrive in visit order).
template <class Codes>
void sort_by_column(RowBlockColumns& b, std::vector<Codes>& codes, uint32_t begin, uint32_t end,
                    std::vector<std::pair<uint16_t, Codes>>& scratch) {
  scratch.clear();
  for (uint32_t e = begin; e < end; ++e) scratch.emplace_back(b.cols[e], codes[e]);
  std::sort(scratch.begin(), scratch.end());
  for (uint32_t e = begin; e < end; ++e) std::tie(b.cols[e], codes[e]) = scratch[e - begin];
}

template <class Codes>
void fill_row_blocks(const SparseMatrix& m, const CodeSource& codes, int64_t width, int code_bits,
                     std::vector<Codes> RowBlockColumns::*field, RowBlocks& out) {
  const int64_t groups = (m.rows + kBlockRows - 1) / kBlockRows, col_blocks = (m.cols + width - 1) / width;
  out.blocks.assign(static_cast<size_t>(col_blocks), RowBlockColumns{});
  std::vector<uint32_t> counts(static_cast<size_t>(col_blocks * groups), 0);
  visit_row_blocks(
      codes, [&](int64_t g, int64_t c) { ++counts[static_cast<size_t>(c / width * groups + g)]; },
      [](int64_t, int64_t, int, uint8_t) {});
  std::vector<uint32_t> next(counts.size());
  for (int64_t k = 0; k < col_blocks; ++k) {
    RowBlockColumns& b = out.blocks[static_cast<size_t>(k)];
    b.col_begin = k * width;
    b.group_ptr.assign(static_cast<size_t>(groups + 1), 0);
    for (int64_t g = 0; g < groups; ++g) {
      next[static_cast<size_t>(k * groups + g)] = b.group_ptr[static_cast<size_t>(g)];
      b.group_ptr[static_cast<size_t>(g + 1)] =
          b.group_ptr[static_cast<size_t>(g)] + counts[static_cast<size_t>(k * groups + g)];
    }
    b.cols.assign(b.group_ptr.back(), 0);
    (b.*field).assign(b.group_ptr.back(), 0);
  }
  std::vector<uint32_t> slot(static_cast<size_t>(m.cols), 0);  // the entry of each column's current block
  visit_row_blocks(
      codes,
      [&](int64_t g, int64_t c) {
        RowBlockColumns& b = out.blocks[static_cast<size_t>(c / width)];
        const uint32_t e = next[static_cast<size_t>(c / width * groups + g)]++;
        b.cols[e] = static_cast<uint16_t>(c - b.col_begin);
        slot[static_cast<size_t>(c)] = e;
      },
      [&](int64_t, int64_t c, int row, uint8_t code) {
        (out.blocks[static_cast<size_t>(c / width)].*field)[slot[static_cast<size_t>(c)]] |=
            static_cast<Codes>(Codes{code} << (code_bits * row));
      });
  std::vector<std::pair<uint16_t, Codes>> scratch;
  for (RowBlockColumns& b : out.blocks)
    for (int64_t g = 0; g < groups; ++g)
      sort_by_column(b, b.*field, b.group_ptr[static_cast<size_t>(g)],
                     b.group_ptr[static_cast<size_t>(g + 1)], scratch);
}

}  // namespace

RowBlocks row_blocks_of(const SparseMatrix& m, const CodeSource& codes) {
  RowBlocks out;
  const int64_t width = csr_block_columns(m.density());
  if (m.small_codebook)
    fill_row_blocks<uint16_t>(m, codes, width, 4, &RowBlockColumns::codes4, out);
  else
    fill_row_blocks<uint32_t>(m, codes, width, 8, &RowBlockColumns::codes8, out);
  return out;
}

BandedCsc build_banded_csc(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols) {
  return banded_csc_of(*dense_codes(codes, rows, cols));
}

SlicedRows build_sliced_rows(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, bool compact,
                             bool panelled) {
  auto source = dense_codes(codes, rows, cols);
  SparseMatrix header = sparse_matrix_header(*source, std::vector<float>(16, 0.0f), 1);
  header.compact = compact;
  return panelled ? sliced_rows_of(header, *source) : classic_sliced_rows_of(header, *source);
}

ColumnTiles build_column_tiles(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols) {
  return column_tiles_of(*dense_codes(codes, rows, cols));
}

namespace {

SparseMatrix every_layout(const CodeSource& codes, const std::vector<float>& codebook, int partitions,
                          bool compact) {
  const Isa isa = sparse_kernels().isa;
  SparseMatrix m = sparse_matrix_header(codes, codebook, partitions);
  m.compact = compact;
  add_layouts(m, codes, kLayoutCsc | kLayoutCsr | layouts_for(m, isa, true) | layouts_for(m, isa, false));
  return m;
}

}  // namespace

SparseMatrix build_sparse_matrix(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols,
                                 const std::vector<float>& codebook, int partitions, bool compact) {
  return every_layout(*dense_codes(codes, rows, cols), codebook, partitions, compact);
}

Result<SparseMatrix> build_sparse_matrix(const CompressedTensor& t, int partitions) {
  SP_ASSIGN_OR_RETURN(auto codes, compressed_codes(t));
  return every_layout(*codes, t.codebook, partitions, false);
}

}  // namespace sparrow
