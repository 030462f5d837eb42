#include "engine/sparse/code_source.h"

#include "engine/sparse/csr_entries.h"

#include "engine/sparse/sparse_matrix.h"

namespace sparrow {

namespace {

class DenseCodes : public CodeSource {
 public:
  DenseCodes(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols)
      : CodeSource(rows, cols), codes_(codes) {}
  void visit(const Sink& sink) const override {
    const uint8_t* row = codes_.data();
    for (int64_t r = 0; r < rows(); ++r, row += cols())
      for (int64_t c = 0; c < cols(); ++c)
        if (row[c] != 0) sink(r, c, row[c]);
  }

 private:
  const std::vector<uint8_t>& codes_;
};

// The relative-index CSC of a compressed tensor. With one partition the entries of a column are
// already in row order; with several, each column is gathered into a scratch column first (the
// partitions interleave their rows) and read back in row order.
class CompressedCsc : public CodeSource {
 public:
  explicit CompressedCsc(const CompressedTensor& t) : CodeSource(t.view.rows, t.view.cols), t_(t) {}
  void visit(const Sink& sink) const override {
    const int64_t P = static_cast<int64_t>(t_.partitions.size());
    std::vector<size_t> next_entry(static_cast<size_t>(P), 0);
    std::vector<uint8_t> column(P > 1 ? static_cast<size_t>(rows()) : 0, 0);
    for (int64_t c = 0; c < cols(); ++c) {
      for (int64_t p = 0; p < P; ++p) {
        const Partition& part = t_.partitions[static_cast<size_t>(p)];
        size_t& e = next_entry[static_cast<size_t>(p)];
        int64_t local = 0;
        for (uint32_t k = 0; k < part.col_counts[static_cast<size_t>(c)]; ++k, ++e, ++local) {
          local += part.gaps[e];
          if (part.codes[e] == 0) continue;  // filler
          if (P == 1)
            sink(local, c, part.codes[e]);
          else
            column[static_cast<size_t>(local * P + p)] = part.codes[e];
        }
      }
      if (P > 1) drain_column(c, column, sink);
    }
  }

 private:
  void drain_column(int64_t c, std::vector<uint8_t>& column, const Sink& sink) const {
    for (int64_t r = 0; r < rows(); ++r) {
      uint8_t& code = column[static_cast<size_t>(r)];
      if (code == 0) continue;
      sink(r, c, code);
      code = 0;
    }
  }
  const CompressedTensor& t_;
};

// A matrix layout read back as codes. Each walk below is band by band or line by line, which keeps
// both the rows of a column and the columns of a row increasing.
class MatrixCodes : public CodeSource {
 public:
  explicit MatrixCodes(const SparseMatrix& m) : CodeSource(m.rows, m.cols), m_(m) {}
  void visit(const Sink& sink) const override {
    if (!m_.banded.empty())
      visit_banded(m_.banded.col_ptr, m_.banded.entries, m_.banded.bands, cols(), kBandRows,
                   [&](int64_t c, int64_t r, uint8_t code) { sink(r, c, code); });
    else if (!m_.sliced_rows.empty())
      visit_sliced(sink);
    else if (!m_.tiles.empty())
      visit_tiles(sink);
    else if (!m_.csr.empty())
      visit_csr(sink);
    else if (!m_.row_blocks.empty())
      m_.small_codebook ? visit_row_blocks<4>(sink) : visit_row_blocks<8>(sink);
    else
      visit_csc(sink);
  }

 private:
  template <class Emit>
  static void visit_banded(const std::vector<uint32_t>& ptr, const std::vector<uint16_t>& entries,
                           int64_t bands, int64_t lines, int64_t band_width, Emit emit) {
    for (int64_t band = 0; band < bands; ++band) {
      const uint32_t* band_ptr = ptr.data() + band * (lines + 1);
      for (int64_t line = 0; line < lines; ++line)
        for (uint32_t e = band_ptr[line]; e < band_ptr[line + 1]; ++e)
          emit(line, band * band_width + (entries[e] >> 4), static_cast<uint8_t>(entries[e] & 15));
    }
  }
  // Row by row in the matrix's order (the slices hold them sorted by length).
  void visit_sliced(const Sink& sink) const {
    const SlicedRows& s = m_.sliced_rows;
    if (s.panelled()) return visit_panelled(sink);
    std::vector<int64_t> position(static_cast<size_t>(rows()));
    for (int64_t pos = 0; pos < rows(); ++pos)
      position[static_cast<size_t>(s.order[static_cast<size_t>(pos)])] = pos;
    for (int64_t r = 0; r < rows(); ++r) {
      const int64_t pos = position[static_cast<size_t>(r)];
      const auto slice = static_cast<size_t>(pos / kSliceRows);
      int64_t col = -1;
      for (uint32_t e = s.slice_ptr[slice] + static_cast<uint32_t>(pos % kSliceRows);
           e < s.slice_ptr[slice + 1]; e += kSliceRows) {
        const unsigned entry = s.entry_bits == 8 ? s.entries8[e] : s.entries16[e];
        col = s.gap_coded ? col + (entry >> 4) + 1 : entry >> 4;
        if (entry & 0xF) sink(r, col, static_cast<uint8_t>(entry & 0xF));
      }
    }
  }
  // The same for panelled slices: a row's entries panel by panel, in its lane of each step.
  void visit_panelled(const Sink& sink) const {
    const SlicedRows& s = m_.sliced_rows;
    const int64_t panels = s.panels();
    std::vector<int64_t> position(static_cast<size_t>(rows()));
    for (int64_t pos = 0; pos < rows(); ++pos)
      position[static_cast<size_t>(s.order[static_cast<size_t>(pos)])] = pos;
    for (int64_t r = 0; r < rows(); ++r) {
      const int64_t pos = position[static_cast<size_t>(r)], slice = pos / kSliceRows;
      uint32_t e = s.slice_ptr[static_cast<size_t>(slice)] + static_cast<uint32_t>(pos % kSliceRows);
      for (int64_t p = 0; p < panels; ++p)
        for (int step = 0; step < s.panel_steps[static_cast<size_t>(slice * panels + p)];
             ++step, e += kSliceRows) {
          const unsigned entry = s.entry_bits == 8 ? s.entries8[e] : s.entries16[e];
          const unsigned code = entry & ((1u << s.code_bits) - 1);
          if (code) sink(r, p * s.panel_columns + (entry >> s.code_bits), static_cast<uint8_t>(code));
        }
    }
  }
  void visit_tiles(const Sink& sink) const {
    const ColumnTiles& t = m_.tiles;
    for (int64_t c = 0; c < cols(); ++c) {
      uint32_t e = t.code_ptr[static_cast<size_t>(c)];
      for (int64_t tile = 0; tile < t.tiles_per_column; ++tile) {
        uint16_t mask = t.masks[static_cast<size_t>(c * t.tiles_per_column + tile)];
        for (int b = 0; b < kTileRows; ++b)
          if (mask >> b & 1) sink(tile * kTileRows + b, c, t.codes[e++]);
      }
    }
  }
  void visit_csr(const Sink& sink) const {
    switch (m_.csr_entry_bits) {
      case 8:
        return visit_csr_entries<CsrEntries8>(sink);
      default:
        return visit_csr_entries<CsrEntries16>(sink);
    }
  }
  template <class Entries>
  void visit_csr_entries(const Sink& sink) const {
    for (const CsrBlock& block : m_.csr) {
      const Entries entries(block);
      for (int64_t r = 0; r < rows(); ++r)
        entries.walk(block.row_ptr[static_cast<size_t>(r)], block.row_ptr[static_cast<size_t>(r) + 1],
                     block.col_begin - 1, [&](int64_t c, unsigned code) {
                       if (code) sink(r, c, static_cast<uint8_t>(code));
                     });
    }
  }
  // Column block by column block, group by group, each entry's rows in order.
  template <int kCodeBits>
  void visit_row_blocks(const Sink& sink) const {
    const int64_t groups = (rows() + kBlockRows - 1) / kBlockRows;
    for (const RowBlockColumns& block : m_.row_blocks.blocks) {
      const RowBlockCodes<kCodeBits> codes(block);
      for (int64_t g = 0; g < groups; ++g)
        for (uint32_t e = block.group_ptr[static_cast<size_t>(g)];
             e < block.group_ptr[static_cast<size_t>(g) + 1]; ++e)
          for (int64_t k = 0; k < kBlockRows && g * kBlockRows + k < rows(); ++k)
            if (const unsigned code = codes.code(e, k))
              sink(g * kBlockRows + k, block.col_begin + block.cols[e], static_cast<uint8_t>(code));
    }
  }
  void visit_csc(const Sink& sink) const {
    const CscPartition& part = m_.csc[0];
    for (int64_t c = 0; c < cols(); ++c) {
      int64_t r = 0;
      for (uint32_t e = part.col_ptr[static_cast<size_t>(c)]; e < part.col_ptr[static_cast<size_t>(c) + 1];
           ++e, ++r) {
        unsigned entry = m_.e8 ? part.entries8[e] : part.entries16[e];
        r += m_.e8 ? entry >> 4 : entry >> 8;
        if (uint8_t code = static_cast<uint8_t>(m_.e8 ? entry & 15 : entry & 0xff)) sink(r, c, code);
      }
    }
  }
  const SparseMatrix& m_;
};

}  // namespace

std::unique_ptr<CodeSource> dense_codes(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols) {
  return std::make_unique<DenseCodes>(codes, rows, cols);
}

Result<std::unique_ptr<CodeSource>> compressed_codes(const CompressedTensor& t) {
  SP_RETURN_IF_ERROR(check_encoding(t).prefixed(fmt::format("tensor '{}'", t.name)));
  if (t.layout == WeightLayout::dense) return dense_codes(t.partitions[0].codes, t.view.rows, t.view.cols);
  return std::unique_ptr<CodeSource>(std::make_unique<CompressedCsc>(t));
}

bool sparse_matrix_has_source(const SparseMatrix& m) {
  return !m.banded.empty() || !m.sliced_rows.empty() || !m.tiles.empty() || !m.csr.empty() ||
         !m.row_blocks.empty() || (m.csc.size() == 1 && !m.csc[0].col_ptr.empty());
}

std::unique_ptr<CodeSource> matrix_codes(const SparseMatrix& m) {
  return std::make_unique<MatrixCodes>(m);
}

}  // namespace sparrow
