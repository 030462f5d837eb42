#include "engine/sparse/sparse_matrix.h"

#include <algorithm>
#include <cmath>

#include "engine/sparse/kernels.h"

namespace sparrow {

int64_t SparseMatrix::csc_entries() const {
  int64_t n = 0;
  for (const auto& p : csc) n += e8 ? static_cast<int64_t>(p.entries8.size()) : static_cast<int64_t>(p.entries16.size());
  return n;
}

namespace {

// Appends (code, gap) entries for the non-zeros met while walking `n` positions, bridging gaps
// longer than max_gap with fillers. code_at(k) gives the code at position k.
template <class CodeAt, class Emit>
void encode_run(int64_t n, int max_gap, CodeAt code_at, Emit emit) {
  int64_t next = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint8_t code = code_at(k);
    if (code == 0) continue;
    while (k - next > max_gap) {
      emit(0, max_gap);
      next += max_gap + 1;
    }
    emit(code, static_cast<int>(k - next));
    next = k + 1;
  }
}

// Fillers that 4-bit gaps would add to the CSC layout of `partitions` partitions.
int64_t fillers_with_4bit_gaps(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, int partitions) {
  int64_t fillers = 0;
  for (int p = 0; p < partitions; ++p) {
    int64_t local = rows > p ? (rows - p + partitions - 1) / partitions : 0;
    for (int64_t c = 0; c < cols; ++c)
      encode_run(local, 15, [&](int64_t k) { return codes[static_cast<size_t>((k * partitions + p) * cols + c)]; },
                 [&](int code, int) { fillers += code == 0; });
  }
  return fillers;
}

}  // namespace

int64_t csr_block_columns(double density) {
  int64_t width = kCsrMinBlockColumns;
  while (width < kCsrMaxBlockColumns && static_cast<double>(width) * density < kCsrEntriesPerBlockRow) width *= 2;
  return width;
}

bool tiles_pay_off(const SparseMatrix& m) {
  if (!m.small_codebook || m.partitions() != 1 || sparse_kernels().isa != Isa::avx512) return false;
  double tiles = static_cast<double>((m.rows + kTileRows - 1) / kTileRows) * static_cast<double>(m.cols);
  return static_cast<double>(m.nonzeros) >= kTileBreakEvenEntries * tiles;
}

namespace {

// The banded encoding shared by the banded CSC (lines = columns, positions = rows) and the banded
// CSR (lines = rows, positions = columns): positions are cut into bands of `band_width`; per band
// and line, one entry per non-zero, position within the band << 4 | code. ptr gets
// [bands, lines + 1] entry offsets. code_at(line, position) reads the code matrix.
template <class CodeAt>
int64_t encode_bands(int64_t lines, int64_t positions, int64_t band_width, CodeAt code_at, std::vector<uint32_t>& ptr,
                     std::vector<uint16_t>& entries) {
  const int64_t bands = (positions + band_width - 1) / band_width;
  ptr.assign(static_cast<size_t>(bands * (lines + 1)), 0);
  for (int64_t band = 0; band < bands; ++band) {
    uint32_t* band_ptr = ptr.data() + band * (lines + 1);
    band_ptr[0] = static_cast<uint32_t>(entries.size());
    const int64_t begin = band * band_width, end = std::min(positions, begin + band_width);
    for (int64_t line = 0; line < lines; ++line) {
      for (int64_t pos = begin; pos < end; ++pos)
        if (uint8_t code = code_at(line, pos)) entries.push_back(static_cast<uint16_t>((pos - begin) << 4 | code));
      band_ptr[line + 1] = static_cast<uint32_t>(entries.size());
    }
  }
  return bands;
}

}  // namespace

BandedCsc build_banded_csc(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols) {
  BandedCsc b;
  b.cols = cols;
  b.bands = encode_bands(cols, rows, kBandRows,
                         [&](int64_t c, int64_t r) { return codes[static_cast<size_t>(r * cols + c)]; },
                         b.col_ptr, b.entries);
  return b;
}

BandedCsr build_banded_csr(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols) {
  BandedCsr b;
  b.rows = rows;
  b.bands = encode_bands(rows, cols, kBandColumns,
                         [&](int64_t r, int64_t c) { return codes[static_cast<size_t>(r * cols + c)]; },
                         b.row_ptr, b.entries);
  return b;
}

int64_t row_walk_from_active(const BandedCsc& columns, const BandedCsr& rows) {
  if (columns.cols == 0 || rows.rows == 0) return columns.cols + 1;  // nothing to walk either way
  auto steps = [](const std::vector<uint32_t>& ptr, int64_t lines, int64_t bands) {
    int64_t total = 0;
    for (int64_t band = 0; band < bands; ++band)
      for (int64_t i = 0; i < lines; ++i) {
        uint32_t n = ptr[static_cast<size_t>(band * (lines + 1) + i + 1)] - ptr[static_cast<size_t>(band * (lines + 1) + i)];
        total += (n + 15) / 16;
      }
    return static_cast<double>(total);
  };
  const auto cols = static_cast<double>(columns.cols);
  double row_walk = kRowWalkNsPerRow * static_cast<double>(rows.rows) * static_cast<double>(rows.bands) +
                    kRowWalkNsPerStep * steps(rows.row_ptr, rows.rows, rows.bands);
  double per_active_column = kColumnWalkNsPerColumn * static_cast<double>(columns.bands) +
                             kColumnWalkNsPerStep * steps(columns.col_ptr, columns.cols, columns.bands) / cols;
  return static_cast<int64_t>(std::ceil(row_walk / per_active_column));
}

ColumnTiles build_column_tiles(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols) {
  ColumnTiles t;
  t.tiles_per_column = (rows + kTileRows - 1) / kTileRows;
  t.masks.assign(static_cast<size_t>(t.tiles_per_column * cols), 0);
  t.code_ptr.assign(static_cast<size_t>(cols + 1), 0);
  for (int64_t c = 0; c < cols; ++c) {
    uint16_t* masks = t.masks.data() + c * t.tiles_per_column;
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t code = codes[static_cast<size_t>(r * cols + c)];
      if (code == 0) continue;
      masks[r / kTileRows] = static_cast<uint16_t>(masks[r / kTileRows] | 1u << (r % kTileRows));
      t.codes.push_back(code);
    }
    t.code_ptr[c + 1] = static_cast<uint32_t>(t.codes.size());
  }
  t.codes.resize(t.codes.size() + kTileRows, 0);
  return t;
}

SparseMatrix build_sparse_matrix(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols,
                                 const std::vector<float>& codebook, int partitions) {
  SparseMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.small_codebook = codebook.size() <= 16;
  m.codebook.assign(m.small_codebook ? 16 : 256, 0.0f);
  std::copy(codebook.begin(), codebook.end(), m.codebook.begin());
  m.codebook[0] = 0.0f;
  for (uint8_t c : codes) m.nonzeros += c != 0;
  // One-byte entries unless 4-bit gaps would add more than 10% fillers (each costs a full update).
  m.e8 = m.small_codebook && fillers_with_4bit_gaps(codes, rows, cols, partitions) * 10 <= m.nonzeros;
  m.csc.resize(static_cast<size_t>(partitions));
  for (int p = 0; p < partitions; ++p) {
    CscPartition& part = m.csc[p];
    part.local_rows = rows > p ? (rows - p + partitions - 1) / partitions : 0;
    part.col_ptr.assign(static_cast<size_t>(cols + 1), 0);
    for (int64_t c = 0; c < cols; ++c) {
      auto code_at = [&](int64_t k) { return codes[static_cast<size_t>((k * partitions + p) * cols + c)]; };
      if (m.e8)
        encode_run(part.local_rows, 15, code_at,
                   [&](int code, int gap) { part.entries8.push_back(static_cast<uint8_t>(code | gap << 4)); });
      else
        encode_run(part.local_rows, 255, code_at,
                   [&](int code, int gap) { part.entries16.push_back(static_cast<uint16_t>(code | gap << 8)); });
      part.col_ptr[c + 1] = static_cast<uint32_t>(m.e8 ? part.entries8.size() : part.entries16.size());
    }
  }
  if (tiles_pay_off(m)) m.tiles = build_column_tiles(codes, rows, cols);
  else if (m.small_codebook && partitions == 1 && sparse_kernels().isa == Isa::avx512) {
    m.banded = build_banded_csc(codes, rows, cols);
    m.banded_rows = build_banded_csr(codes, rows, cols);
    m.row_walk_from_active = row_walk_from_active(m.banded, m.banded_rows);
  }
  m.row_entries.assign(static_cast<size_t>(rows), 0);
  const int64_t block_columns = csr_block_columns(m.density());
  for (int64_t c0 = 0; c0 < cols; c0 += block_columns) {
    CsrBlock& b = m.csr.emplace_back();
    b.col_begin = c0;
    int64_t width = std::min(block_columns, cols - c0);
    b.row_ptr.assign(static_cast<size_t>(rows + 1), 0);
    for (int64_t r = 0; r < rows; ++r) {
      encode_run(width, 255, [&](int64_t k) { return codes[static_cast<size_t>(r * cols + c0 + k)]; },
                 [&](int code, int gap) { b.entries.push_back(static_cast<uint16_t>(code | gap << 8)); });
      b.row_ptr[r + 1] = static_cast<uint32_t>(b.entries.size());
      m.row_entries[r] += b.row_ptr[r + 1] - b.row_ptr[r];
    }
  }
  return m;
}

Result<SparseMatrix> build_sparse_matrix(const CompressedTensor& t, int partitions) {
  SP_ASSIGN_OR_RETURN(std::vector<uint8_t> codes, decode_codes(t));
  return build_sparse_matrix(codes, t.view.rows, t.view.cols, t.codebook, partitions);
}

}  // namespace sparrow
