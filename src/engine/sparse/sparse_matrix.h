// The engine's in-memory form of a compressed weight matrix W [rows, cols]. A matrix starts as a
// header (shape, codebook, non-zeros per row) and gains the layouts its products run on, each built
// by counting sort straight from a CodeSource (the file's encoding, or a layout the matrix already
// holds): no dense matrix of codes and no float32 weights are ever formed. Which layouts a product
// runs on, how each is built and walked, and what it costs are rows of the layout table
// (layout_table.h); layouts_for() reads it.
//
// The layouts:
//  - CSC per partition (batch 1 for wide codebooks, and EIE's row partitions): global row i
//    belongs to partition i % P as local row i / P (EIE's row interleaving; the executor uses P = 1
//    and splits the active columns between threads). Entries of each column are (code, gap) pairs,
//    gap = zero local rows skipped since the previous entry. One byte per entry (code | gap << 4)
//    when the codebook has at most 16 entries and 4-bit gaps need few fillers; otherwise two bytes
//    (code | gap << 8). Filler entries (code 0, codebook[0] == 0) bridge longer gaps.
//  - CSR in column blocks (batches and convolutions): the columns are cut into blocks (see
//    csr_block_columns) so that a block of the transposed inputs stays in cache while every row
//    uses it; per block, the entries of each row are (code, column gap) pairs, in one byte
//    (code | gap << 4) or two (code | gap << 8) by the same rule as the CSC (csr_entries.h).
//
// One-byte entries (CSC and CSR) are chosen when the codebook has at most 16 entries and 4-bit
// gaps add at most 10% fillers (each filler costs a full update), or whatever the fillers when the
// matrix is `compact` (built within a memory budget: see weight_store.h).
//  - Row blocks (batches and convolutions, when the non-zeros come in blocks of kBlockRows aligned
//    rows of one column, as `compress --block 4x1` prunes them: see row_blocks_fit): the rows in
//    groups of four, the columns cut into the CSR's column blocks; per column block and group, one
//    entry per column where any of the group's rows is non-zero, in increasing column order: the
//    column within the column block, and the four rows' codes (code 0 for a zero weight). The
//    kernel loads a row of the transposed inputs once for four rows of weights.
//  - Banded CSC (one sample, with AVX-512; the scalar walk gains nothing from it): the rows are
//    cut into bands of 4096; within a band each entry of a
//    column is one uint16, row within the band << 4 | code. No fillers and no prefix sum to find
//    the rows, so 16 entries decode with a shift and a permute.
//  - Sliced rows (one sample when most inputs are non-zero; built beside the banded CSC, or the CSC
//    of a 17- to 64-entry codebook): SELL-16,
//    rows sorted by their entry count (longest first) and cut into slices of 16; a slice's entries
//    are step-major, lane i of step k holding the k-th entry of the slice's row i, so 16 rows
//    advance in one register and no row is summed across lanes. An entry is position << 4 | code.
//    With two-byte entries and at most 4096 columns the position is the column (a shift gives the
//    gather's indices) and each lane's entry count masks its padding; otherwise it is the gap from
//    the previous entry of the row (the first from column -1), 12 bits wide in two-byte entries
//    and 4 in one-byte ones (only in a `compact` matrix), fillers bridging longer gaps. Code 0
//    (fillers, padding) adds nothing. Every row is walked: 16 entries gather their inputs and
//    multiply by their weights, and each row's sum is stored once. No scatter, but every non-zero
//    weight is visited whether its input is zero or not (see row_walk_pays).
//  - Column tiles (one sample, with AVX-512, on denser matrices; see tiles_pay_off), instead of the
//    banded CSC: each column is cut into 16-row tiles; per tile a 16-bit mask of its non-zero rows,
//    and the codes of those rows, one byte each, in row order. The kernel adds a whole tile of y at
//    once (lookup, expand by the mask, FMA), instead of one scattered update per entry.
#pragma once

#include <cstdint>
#include <vector>

#include "core/machine.h"

#include "engine/sparse/isa.h"
#include "sparrow/format.h"

namespace sparrow {

struct CscPartition {
  int64_t local_rows = 0;
  std::vector<uint32_t> col_ptr;    // cols + 1 entry offsets
  std::vector<uint8_t> entries8;    // one-byte entries (narrow codebook)
  std::vector<uint16_t> entries16;  // two-byte entries (wide codebook)
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
  std::vector<uint32_t> row_ptr;    // rows + 1 entry offsets
  std::vector<uint8_t> entries8;    // code | column gap << 4 (narrow codebook)
  std::vector<uint16_t> entries16;  // code | column gap << 8; gaps relative to col_begin
};

// Rows of one row block; row ranges handed to the batched products start at multiples of it.
inline constexpr int64_t kBlockRows = 4;
// Least share of non-zero weights among the row blocks' slots (zero weights inside a block are
// multiplied like the others) from which a matrix is run on row blocks instead of the CSR.
inline constexpr double kRowBlocksMinFill = 0.75;

struct RowBlockColumns {
  int64_t col_begin = 0;
  std::vector<uint32_t> group_ptr;  // groups + 1 entry offsets
  std::vector<uint16_t> cols;       // column - col_begin
  std::vector<uint16_t> codes4;     // 16-entry codebook: row 4 g + k's code in bits [4k, 4k + 4)
  std::vector<uint32_t> codes8;     // otherwise: row 4 g + k's code in bits [8k, 8k + 8)
};

struct RowBlocks {
  std::vector<RowBlockColumns> blocks;  // column blocks, in column order
  bool empty() const { return blocks.empty(); }
  int64_t entries() const;
};

inline constexpr int64_t kTileRows = 16;

struct ColumnTiles {
  int64_t tiles_per_column = 0;    // ceil(rows / 16)
  std::vector<uint16_t> masks;     // [cols, tiles_per_column]: bit b = row 16 t + b is non-zero
  std::vector<uint32_t> code_ptr;  // cols + 1 offsets into codes
  std::vector<uint8_t> codes;      // codes of the non-zero rows, then kTileRows bytes of padding
                                   // (kernels load 16 codes at a time)
  bool empty() const { return code_ptr.empty(); }
};

// Non-zeros per 16-row tile from which the tile kernel is faster than the banded CSC walk: a tile
// costs about as much as four scattered entries (measured with `sparrow bench --crossover`;
// docs/engine.md, "Dense fallback and the choice of layout").
inline constexpr double kTileBreakEvenEntries = 4.0;

inline constexpr int64_t kBandRows = 4096;

struct BandedCsc {
  int64_t cols = 0;
  int64_t bands = 0;              // ceil(rows / 4096)
  std::vector<uint32_t> col_ptr;  // [bands, cols + 1] entry offsets
  std::vector<uint16_t> entries;  // row within the band << 4 | code (1..15)
  bool empty() const { return col_ptr.empty(); }
};

inline constexpr int64_t kSliceRows = 16;
inline constexpr int64_t kSliceColumns = 4096;  // columns that two-byte entries can hold

inline constexpr int64_t kPanelColumns = 16;  // the inputs one panel holds in a vector register
// Most codebook entries the panelled row walk looks up in registers (four of 16 floats): codebooks
// of 5 and 6 bits (Deep Compression's fully connected layers) walk the rows too.
inline constexpr int kRegisterCodebookMost = 64;
// Within a memory budget (a compact matrix), codebooks of up to 32 entries take one-byte panelled
// entries over panels of this many columns: 3 bits of column, 5 of code.
inline constexpr int64_t kNarrowPanelColumns = 8;
inline constexpr int kNarrowPanelCodebookMost = 32;

// Rows sorted by entry count and interleaved 16 at a time (a slice: one row per lane), for the row
// walk. Two formats:
// - panelled (the default outside a memory budget): the columns in panels of kPanelColumns, and
//   each slice's entries panel after panel: panel_steps[slice * panels() + p] steps of 16 entries
//   in panel p, each (column within the panel) << code_bits | code, code 0 for a lane with no more
//   entries there: one byte (4-bit codes) with a 16-entry codebook, two bytes (8-bit codes) with
//   up to kRegisterCodebookMost entries, or in a compact matrix with up to 32 entries one byte
//   (5-bit codes) over panels of kNarrowPanelColumns. The walk holds a panel's inputs in a register and looks
//   them up by the column within the panel instead of gathering them from memory;
// - classic: each slice's rows entry after entry, one entry of each lane per step, holding the
//   column << 4 | code (two-byte entries, at most kSliceColumns columns) or the gap from the lane's
//   previous column (one-byte entries, or wider matrices), fillers bridging longer gaps.
struct SlicedRows {
  int entry_bits = 16;               // 16 or 8
  bool gap_coded = false;            // positions are gaps (one-byte entries, or more than 4096 columns)
  int64_t panel_columns = 0;         // kPanelColumns (or kNarrowPanelColumns) when panelled, else 0
  int code_bits = 4;                 // panelled: 4 or 5 (entries8) or 8 (entries16)
  int code_limit = 16;               // every code held is below it: 16, 32 (code_bits 5 or 8) or 64 (8)
  int64_t cols = 0;                  // the matrix's columns
  std::vector<int32_t> order;        // [rows]: the row at each sorted position (slice s, lane i: 16 s + i)
  std::vector<uint32_t> slice_ptr;   // [slices + 1] entry offsets, multiples of 16
  std::vector<uint32_t> lengths;     // classic, columns held: [slices, 16] each lane's entry count
  std::vector<uint8_t> panel_steps;  // panelled: [slices, panels()] steps of 16 entries
  std::vector<uint8_t> entries8;
  std::vector<uint16_t> entries16;
  bool panelled() const { return panel_columns > 0; }
  int64_t panels() const { return panelled() ? (cols + panel_columns - 1) / panel_columns : 0; }
  int64_t rows() const { return static_cast<int64_t>(order.size()); }
  int64_t slices() const { return static_cast<int64_t>(slice_ptr.size()) - 1; }
  int64_t entries() const {
    return slice_ptr.empty() ? 0 : slice_ptr.back();
  }  // fillers and padding included
  bool empty() const { return slice_ptr.empty(); }
};

// Costs of the two one-sample walks with AVX-512, in nanoseconds, fitted to BM_RowWalkCrossover in
// bench_kernels (docs/engine.md): the banded CSC walk per active column and band and per 16-entry
// step, the sliced row walk per slice and per step. Only their ratios matter: row_walk_from_active()
// compares the two.
inline constexpr double kColumnWalkNsPerColumn = 1.25, kColumnWalkNsPerStep = 6.6;
// (The classic row walk's costs were scaled by 0.9 when the column walk's were refitted: the
// column costs of the three shapes came out 0.84-0.94 of the earlier fit.)
inline constexpr double kRowWalkNsPerSlice = 9.7, kRowWalkNsPerStep = 4.7;
// The panelled row walk: per 16-entry step while its entries fit in the cache they are read from,
// and per byte beyond the L2 cache otherwise (the walk then waits on the shared cache).
inline constexpr double kPanelWalkNsPerStep = 0.64, kPanelWalkNsPerByteBeyondL2 = 0.14;
// The L2 size those were fitted on (AMD EPYC, 1 MiB): a larger L2 counts as this much. On an Intel
// Xeon with 2 MiB, counting VGG-7's 1.3 MB of entries as L2-resident chose the row walk, 3x slower
// than the banded column walk (docs/engine.md, "Against the targets").
inline constexpr int64_t kPanelWalkFittedL2Bytes = int64_t{1} << 20;

class CodeSource;

// The layouts a matrix may hold, as bits of a LayoutSet.
enum Layout : unsigned {
  kLayoutCsc = 1u << 0,         // CSC per partition
  kLayoutCsr = 1u << 1,         // CSR in column blocks
  kLayoutTiles = 1u << 2,       // column tiles
  kLayoutBanded = 1u << 3,      // banded CSC
  kLayoutSlicedRows = 1u << 4,  // sliced rows
  kLayoutRowBlocks = 1u << 5,   // row blocks
};
using LayoutSet = unsigned;

struct SparseMatrix {
  int64_t rows = 0, cols = 0;
  bool small_codebook = false;        // at most 16 entries: looked up from registers
  int codebook_size = 0;              // the codebook's entries (entry 0 the zero weight)
  bool e8 = false;                    // one-byte CSC entries (else two bytes); set when the CSC is built
  int csr_entry_bits = 16;            // 8 or 16; set when the CSR is built
  bool compact = false;               // one-byte entries whatever the fillers (a memory budget)
  int partition_count = 1;            // CSC row partitions
  LayoutSet layouts = 0;              // the layouts built so far
  std::vector<float> codebook;        // padded to 16 or 256 entries, entry 0 == 0
  std::vector<CscPartition> csc;      // one per partition
  std::vector<CsrBlock> csr;          // column blocks
  ColumnTiles tiles;                  // one sample, when tiles_pay_off
  BandedCsc banded;                   // one sample: 16-entry codebook, one partition, AVX-512, no tiles
  SlicedRows sliced_rows;             // one sample with most inputs active (InputZeros)
  RowBlocks row_blocks;               // batches, when row_blocks_fit
  int64_t row_walk_from_active = 0;   // non-zero inputs from which the row walk is cheaper (see
                                      // row_walk_pays); more than cols when it never is
  std::vector<uint64_t> row_entries;  // non-zeros per row (for load balance)
  int64_t nonzeros = 0;
  int64_t blocks_of_rows = 0;   // row blocks (kBlockRows aligned rows of one column) with a non-zero
  int64_t row_block_slots = 0;  // their weights (fewer than kBlockRows each in a last, short group)

  int partitions() const { return partition_count; }
  bool has(LayoutSet want) const { return (layouts & want) == want; }
  // Whether one sample with n_active non-zero inputs walks the rows (sliced rows): the row walk's
  // cost is fixed, the column walk's grows with the active columns.
  bool row_walk_pays(int64_t n_active) const {
    return !sliced_rows.empty() && n_active >= row_walk_from_active;
  }
  // The layout one sample runs on when it does not walk the rows: "tiles", "banded", "sliced rows"
  // (the only one-sample layout, without a column walk beside it), "csc8" (one-byte entries) or
  // "csc16". Beside a column walk, a sample with enough non-zero inputs walks the sliced rows
  // instead (row_walk_pays).
  const char* batch1_layout() const {
    return !tiles.empty()                        ? "tiles"
           : !banded.empty()                     ? "banded"
           : !sliced_rows.empty() && csc.empty() ? "sliced rows"
           : e8                                  ? "csc8"
                                                 : "csc16";
  }
  int64_t csc_entries() const;  // fillers included, all partitions
  double density() const {
    return rows * cols > 0 ? static_cast<double>(nonzeros) / static_cast<double>(rows * cols) : 0.0;
  }
  // Bytes held in memory: codebook, per-row counts and every layout built (layout_table.h).
  int64_t bytes() const;
};

// Whether the column tiles beat the banded CSC walk for this matrix with `isa`'s kernels: 16-entry
// codebook, one partition, AVX-512, and at least kTileBreakEvenEntries non-zeros per tile. Needs
// only the header.
bool tiles_pay_off(const SparseMatrix& m, Isa isa);
// Whether batched products run on row blocks: at least kRowBlocksMinFill of the weights in the row
// blocks that hold a non-zero are non-zero (header only).
bool row_blocks_fit(const SparseMatrix& m);
// The layouts a product runs on: batches and convolutions the row blocks where they fit
// (row_blocks_fit), else the CSR; one sample the column tiles (tiles_pay_off), else with a 16-entry
// codebook, one partition and AVX-512 the banded CSC and/or the sliced rows (by `zeros`; with both,
// the walk is chosen per call, see row_walk_pays), else the CSC, beside which codebooks of up to
// kRegisterCodebookMost entries with one partition and AVX-512 keep the sliced rows the same way.
// What a one-sample product can expect of its input's zeros, which decides which of the two walks
// to keep: `expected` (the input comes from a ReLU: EIE's column walk skips the zeros; only
// the banded CSC), `unlikely` (tanh, sigmoid, sums: every row is walked; only the sliced rows), or
// `unknown` (a graph input: both, chosen per call).
enum class InputZeros { unknown, expected, unlikely };
LayoutSet layouts_for(const SparseMatrix& m, Isa isa, bool one_sample,
                      InputZeros zeros = InputZeros::unknown);

// The header of the matrix `codes` holds: shape, padded codebook, non-zeros per row and row blocks;
// no layouts.
// `partitions` row partitions for the CSC.
SparseMatrix sparse_matrix_header(const CodeSource& codes, const std::vector<float>& codebook,
                                  int partitions);
// Builds the layouts in `want` that m lacks, from `codes` (which may read m's own layouts).
void add_layouts(SparseMatrix& m, const CodeSource& codes, LayoutSet want);

// Active inputs from which walking every row of `rows` costs less than walking the active columns
// of `columns` (by the fitted costs above); more than the column count when never.
int64_t row_walk_from_active(const BandedCsc& columns, const SlicedRows& rows,
                             int64_t l2_bytes = l2_cache_bytes());
// The same against the CSC walk of one partition (wider codebooks, whose column walk it is), at
// kCscWalkNsPerEntry per entry of the active columns.
inline constexpr double kCscWalkNsPerEntry = 1.0;
int64_t row_walk_from_active(const CscPartition& columns, const SlicedRows& rows,
                             int64_t l2_bytes = l2_cache_bytes());
// Builders of single layouts from a CodeSource (rows of the layout table, layout_table.h).
void add_csc(SparseMatrix& m, const CodeSource& codes);  // sets m.e8
void add_csr(SparseMatrix& m, const CodeSource& codes);
ColumnTiles column_tiles_of(const CodeSource& codes);
RowBlocks row_blocks_of(const SparseMatrix& m, const CodeSource& codes);
BandedCsc banded_csc_of(const CodeSource& codes);
// Panelled entries; in a compact matrix (a memory budget) the classic one-byte gap-coded ones for a
// 16-entry codebook, one-byte 5-bit ones over kNarrowPanelColumns for up to 32 entries.
SlicedRows sliced_rows_of(const SparseMatrix& m, const CodeSource& codes);
// The classic format: one-byte entries when m.compact, else two-byte ones (gaps past kSliceColumns).
SlicedRows classic_sliced_rows_of(const SparseMatrix& m, const CodeSource& codes);

// Single layouts of a dense code matrix (codes[r * cols + c], codes below 16 for the banded ones).
BandedCsc build_banded_csc(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols);
// `panelled` false gives the classic two-byte entries (columns, or gaps past kSliceColumns), kept
// as the panelled walk's baseline in tests and benchmarks.
SlicedRows build_sliced_rows(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols,
                             bool compact = false, bool panelled = true);
ColumnTiles build_column_tiles(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols);

// Every layout a product may run on, from a code matrix (codes[r * cols + c], 0 = zero weight):
// CSC and CSR always, plus the layouts of layouts_for() with the CPU's kernels. `compact`
// asks for one-byte entries whatever the fillers (see SparseMatrix::compact).
SparseMatrix build_sparse_matrix(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols,
                                 const std::vector<float>& codebook, int partitions, bool compact = false);
// The same from a compressed tensor, straight from its encoding.
Result<SparseMatrix> build_sparse_matrix(const CompressedTensor& t, int partitions);

}  // namespace sparrow
