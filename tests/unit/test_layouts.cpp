// The load path: engine layouts built straight from the file's encoding (any partition count, index
// width or file layout) equal those built from the dense code matrix, every layout rebuilds every
// other, the layout choice depends on the ISA asked for (not on this CPU), and the weight store
// decompresses exactly what decompress() gives, before and after its encoding is dropped.
#include "engine/sparse/code_source.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/layout_table.h"
#include "engine/weight_store.h"
#include "test_util.h"

namespace sparrow {
namespace {

using Codes = test::CodeMatrix;
constexpr auto random_codes = &test::random_code_matrix;

constexpr LayoutSet kEveryLayout =
    kLayoutCsc | kLayoutCsr | kLayoutTiles | kLayoutBanded | kLayoutSlicedRows | kLayoutRowBlocks;

SparseMatrix with_layouts(const CodeSource& codes, const std::vector<float>& codebook, int partitions,
                          LayoutSet want, bool compact = false) {
  SparseMatrix m = sparse_matrix_header(codes, codebook, partitions);
  m.compact = compact;
  add_layouts(m, codes, want);
  return m;
}

void expect_same_layouts(const SparseMatrix& a, const SparseMatrix& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.nonzeros, b.nonzeros);
  EXPECT_EQ(a.row_entries, b.row_entries);
  EXPECT_EQ(a.e8, b.e8);
  EXPECT_EQ(a.csr_entry_bits, b.csr_entry_bits);
  ASSERT_EQ(a.csc.size(), b.csc.size());
  for (size_t p = 0; p < a.csc.size(); ++p) {
    EXPECT_EQ(a.csc[p].local_rows, b.csc[p].local_rows);
    EXPECT_EQ(a.csc[p].col_ptr, b.csc[p].col_ptr);
    EXPECT_EQ(a.csc[p].entries8, b.csc[p].entries8);
    EXPECT_EQ(a.csc[p].entries16, b.csc[p].entries16);
  }
  ASSERT_EQ(a.csr.size(), b.csr.size());
  for (size_t k = 0; k < a.csr.size(); ++k) {
    EXPECT_EQ(a.csr[k].col_begin, b.csr[k].col_begin);
    EXPECT_EQ(a.csr[k].row_ptr, b.csr[k].row_ptr);
    EXPECT_EQ(a.csr[k].entries8, b.csr[k].entries8);
    EXPECT_EQ(a.csr[k].entries16, b.csr[k].entries16);
  }
  EXPECT_EQ(a.tiles.masks, b.tiles.masks);
  EXPECT_EQ(a.tiles.code_ptr, b.tiles.code_ptr);
  EXPECT_EQ(a.tiles.codes, b.tiles.codes);
  EXPECT_EQ(a.banded.col_ptr, b.banded.col_ptr);
  EXPECT_EQ(a.banded.entries, b.banded.entries);
  EXPECT_EQ(a.sliced_rows.entry_bits, b.sliced_rows.entry_bits);
  EXPECT_EQ(a.sliced_rows.gap_coded, b.sliced_rows.gap_coded);
  EXPECT_EQ(a.sliced_rows.order, b.sliced_rows.order);
  EXPECT_EQ(a.sliced_rows.lengths, b.sliced_rows.lengths);
  EXPECT_EQ(a.sliced_rows.panel_columns, b.sliced_rows.panel_columns);
  EXPECT_EQ(a.sliced_rows.code_bits, b.sliced_rows.code_bits);
  EXPECT_EQ(a.sliced_rows.code_limit, b.sliced_rows.code_limit);
  EXPECT_EQ(a.sliced_rows.cols, b.sliced_rows.cols);
  EXPECT_EQ(a.sliced_rows.panel_steps, b.sliced_rows.panel_steps);
  EXPECT_EQ(a.sliced_rows.slice_ptr, b.sliced_rows.slice_ptr);
  EXPECT_EQ(a.sliced_rows.entries8, b.sliced_rows.entries8);
  EXPECT_EQ(a.sliced_rows.entries16, b.sliced_rows.entries16);
  EXPECT_EQ(a.row_walk_from_active, b.row_walk_from_active);
  EXPECT_EQ(a.blocks_of_rows, b.blocks_of_rows);
  EXPECT_EQ(a.row_block_slots, b.row_block_slots);
  ASSERT_EQ(a.row_blocks.blocks.size(), b.row_blocks.blocks.size());
  for (size_t k = 0; k < a.row_blocks.blocks.size(); ++k) {
    const RowBlockColumns &x = a.row_blocks.blocks[k], &y = b.row_blocks.blocks[k];
    EXPECT_EQ(x.col_begin, y.col_begin);
    EXPECT_EQ(x.group_ptr, y.group_ptr);
    EXPECT_EQ(x.cols, y.cols);
    EXPECT_EQ(x.codes4, y.codes4);
    EXPECT_EQ(x.codes8, y.codes8);
  }
}

struct Shape2 {
  int64_t rows, cols;
};
// Rows and columns below, at and above 16 lanes, across a 4096 band, and a single row or column.
const Shape2 kShapes[] = {{1, 1}, {15, 40}, {16, 17}, {300, 40}, {4100, 3}, {5, 4100}};

TEST(Layouts, FromTheFileEncodingEqualFromTheCodeMatrix) {
  uint32_t seed = 1;
  for (auto [rows, cols] : kShapes)
    for (double density : {0.0, 0.05, 0.5, 1.0})
      for (int codebook : {16, 256})
        for (int file_partitions : {1, 3})
          for (int index_bits : {2, 4, 8}) {
            Codes c = random_codes(rows, cols, density, codebook, seed++);
            CompressedTensor t =
                encode_sparse(c.codes, MatrixView{rows, cols, false}, file_partitions, index_bits);
            t.codebook = c.codebook;
            auto from_file = compressed_codes(t);
            ASSERT_TRUE(from_file.ok()) << from_file.status().message();
            std::string what = fmt::format("{}x{} density {} codebook {} file partitions {} index bits {}",
                                           rows, cols, density, codebook, file_partitions, index_bits);
            for (int engine_partitions : {1, 2})
              expect_same_layouts(with_layouts(**from_file, c.codebook, engine_partitions, kEveryLayout),
                                  with_layouts(*dense_codes(c.codes, rows, cols), c.codebook,
                                               engine_partitions, kEveryLayout),
                                  what + " engine partitions " + std::to_string(engine_partitions));
          }
}

TEST(Layouts, DenseFileLayoutReadsLikeTheCodeMatrix) {
  Codes c = random_codes(33, 70, 0.7, 16, 77);
  CompressedTensor t = encode_dense(c.codes, MatrixView{33, 70, false});
  t.codebook = c.codebook;
  auto from_file = compressed_codes(t);
  ASSERT_TRUE(from_file.ok());
  expect_same_layouts(with_layouts(**from_file, c.codebook, 1, kEveryLayout),
                      with_layouts(*dense_codes(c.codes, 33, 70), c.codebook, 1, kEveryLayout),
                      "dense file layout");
}

TEST(Layouts, EveryLayoutRebuildsEveryOther) {
  // Compact matrices too: one-byte entries (and their fillers) in every gap-coded layout.
  for (auto [rows, cols] : kShapes)
    for (double density : {0.0, 0.1, 0.6})
      for (bool compact : {false, true}) {
        Codes c = random_codes(rows, cols, density, 16, 500 + static_cast<uint32_t>(rows + cols));
        auto codes = dense_codes(c.codes, rows, cols);
        SparseMatrix want = with_layouts(*codes, c.codebook, 1, kEveryLayout, compact);
        for (LayoutSet only :
             {kLayoutCsc, kLayoutCsr, kLayoutTiles, kLayoutBanded, kLayoutSlicedRows, kLayoutRowBlocks}) {
          SparseMatrix m = with_layouts(*codes, c.codebook, 1, only, compact);
          ASSERT_TRUE(sparse_matrix_has_source(m));
          add_layouts(m, *matrix_codes(m), kEveryLayout);
          expect_same_layouts(m, want,
                              fmt::format("{}x{} density {} compact {} from layout bit {}", rows, cols,
                                          density, compact, only));
        }
      }
}

TEST(Layouts, ChoiceFollowsTheIsaAskedFor) {
  Codes sparse = random_codes(160, 200, 0.05, 16, 11), dense = random_codes(160, 200, 0.4, 16, 12),
        wide = random_codes(160, 200, 0.05, 256, 13);
  auto header = [](const Codes& c, int partitions = 1) {
    return sparse_matrix_header(*dense_codes(c.codes, c.rows, c.cols), c.codebook, partitions);
  };
  EXPECT_EQ(layouts_for(header(sparse), Isa::avx512, true), kLayoutBanded | kLayoutSlicedRows);
  EXPECT_EQ(layouts_for(header(sparse), Isa::avx512, true, InputZeros::expected), kLayoutBanded)
      << "after a ReLU";
  EXPECT_EQ(layouts_for(header(sparse), Isa::avx512, true, InputZeros::unlikely), kLayoutSlicedRows);
  EXPECT_EQ(layouts_for(header(dense), Isa::avx512, true), kLayoutTiles);
  EXPECT_EQ(layouts_for(header(wide), Isa::avx512, true), kLayoutCsc) << "wide codebooks walk the CSC";
  // Codebooks of up to 64 entries keep the panelled row walk beside their CSC, as the banded one.
  for (int entries : {17, 32, 64}) {
    Codes five_bits = random_codes(160, 200, 0.05, entries, 16);
    EXPECT_EQ(layouts_for(header(five_bits), Isa::avx512, true), kLayoutCsc | kLayoutSlicedRows) << entries;
    EXPECT_EQ(layouts_for(header(five_bits), Isa::avx512, true, InputZeros::expected), kLayoutCsc) << entries;
    EXPECT_EQ(layouts_for(header(five_bits), Isa::avx512, true, InputZeros::unlikely), kLayoutSlicedRows)
        << entries;
    EXPECT_EQ(layouts_for(header(five_bits), Isa::avx2, true), kLayoutCsc) << entries;
    EXPECT_EQ(layouts_for(header(five_bits, 2), Isa::avx512, true), kLayoutCsc) << entries;
  }
  EXPECT_EQ(layouts_for(header(random_codes(160, 200, 0.05, 65, 17)), Isa::avx512, true), kLayoutCsc)
      << "65 entries do not fit four registers";
  EXPECT_EQ(layouts_for(header(sparse, 2), Isa::avx512, true), kLayoutCsc) << "EIE's row partitions";
  for (Isa isa : {Isa::scalar, Isa::avx2}) {
    EXPECT_EQ(layouts_for(header(sparse), isa, true), kLayoutCsc) << isa_name(isa);
    EXPECT_EQ(layouts_for(header(dense), isa, true), kLayoutCsc) << isa_name(isa);
  }
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    EXPECT_EQ(layouts_for(header(sparse), isa, false), kLayoutCsr);
  // Batches run on row blocks where the non-zeros fill at least kRowBlocksMinFill of 4x1 blocks.
  Codes blocked = random_codes(160, 200, 0.0, 16, 14), full = random_codes(160, 200, 1.0, 16, 15);
  for (int64_t g = 0; g < 40; ++g)
    for (int64_t c = (g * 7) % 10; c < 200; c += 10)
      for (int64_t r = 4 * g; r < 4 * g + 4; ++r) blocked.codes[static_cast<size_t>(r * 200 + c)] = 3;
  Codes three_of_four = blocked, half = blocked;
  for (int64_t g = 0; g < 40; ++g)
    for (int64_t c = 0; c < 200; ++c) {
      three_of_four.codes[static_cast<size_t>((4 * g + 1) * 200 + c)] = 0;
      half.codes[static_cast<size_t>((4 * g + 1) * 200 + c)] = 0;
      half.codes[static_cast<size_t>((4 * g + 2) * 200 + c)] = 0;
    }
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    EXPECT_EQ(layouts_for(header(blocked), isa, false), kLayoutRowBlocks) << isa_name(isa);
    EXPECT_EQ(layouts_for(header(full), isa, false), kLayoutRowBlocks) << "a dense matrix fills its blocks";
    EXPECT_EQ(layouts_for(header(three_of_four), isa, false), kLayoutRowBlocks) << "fill 0.75";
    EXPECT_EQ(layouts_for(header(half), isa, false), kLayoutCsr) << "fill 0.5";
  }
  EXPECT_EQ(header(blocked).blocks_of_rows, 40 * 20);
  EXPECT_EQ(header(blocked).row_block_slots, 4 * 40 * 20);
}

TEST(Layouts, BytesCountEveryLayoutHeld) {
  Codes c = random_codes(300, 500, 0.1, 16, 21);
  auto codes = dense_codes(c.codes, 300, 500);
  SparseMatrix m = with_layouts(*codes, c.codebook, 1, kLayoutBanded);
  const int64_t banded = m.bytes();
  EXPECT_GE(banded, 2 * m.nonzeros) << "two bytes per entry";
  add_layouts(m, *codes, kLayoutCsr);
  EXPECT_EQ(m.csr_entry_bits, 16);
  EXPECT_GE(m.bytes(), banded + 2 * m.nonzeros);
}

TEST(WeightStore, DecompressesExactlyBeforeAndAfterTheEncodingIsDropped) {
  for (bool transposed : {false, true}) {
    Codes c = random_codes(40, 70, 0.2, 16, 31);
    CompressedTensor t = encode_sparse(c.codes, MatrixView{40, 70, transposed}, 3, 4);
    t.name = "w";
    t.codebook = c.codebook;
    t.shape = transposed ? Shape{70, 40} : Shape{40, 70};
    auto want = decompress(t);
    ASSERT_TRUE(want.ok());
    auto store = WeightStore::create({t}, {123}, Isa::avx512);
    ASSERT_TRUE(store.ok()) << store.status().message();
    auto before = (*store)->dense("w");
    ASSERT_TRUE(before.ok());
    EXPECT_EQ(test::max_relative_error(**before, *want), 0.0);
    (*store)->request("w", true);
    ASSERT_TRUE((*store)->build_requested().ok());
    WeightMemory mem = (*store)->memory();
    EXPECT_EQ(mem.compressed_in_file, 123);
    EXPECT_EQ(mem.decompressed, 40 * 70 * 4);
    auto store2 = WeightStore::create({t}, {0}, Isa::avx512);
    (*store2)->request("w", true);
    ASSERT_TRUE((*store2)->build_requested().ok());
    auto after = (*store2)->dense("w");  // from the layouts: the encoding was dropped
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(test::max_relative_error(**after, *want), 0.0) << "transposed " << transposed;
  }
}

// A store of three weights, as a .spw holds them, with their 4-bit encodings' sizes as file bytes.
struct Store {
  std::unique_ptr<WeightStore> store;
  int64_t file_bytes = 0;
};
Store three_layer_store(double ratio, Isa isa, double density = 0.1) {
  const int64_t dims[3][2] = {{300, 700}, {200, 300}, {10, 200}};
  std::vector<CompressedTensor> tensors;
  std::vector<int64_t> bytes;
  Store s;
  for (int i = 0; i < 3; ++i) {
    Codes c = random_codes(dims[i][0], dims[i][1], density, 16, 50 + i);
    CompressedTensor t = encode_sparse(c.codes, MatrixView{dims[i][0], dims[i][1], false}, 1, 4);
    t.name = "w" + std::to_string(i);
    t.codebook = c.codebook;
    t.shape = {dims[i][0], dims[i][1]};
    // Entries of 4-bit codes and 4-bit gaps, as the file stores them, and the column counts.
    int64_t n = static_cast<int64_t>(t.partitions[0].codes.size() + 4 * t.partitions[0].col_counts.size());
    bytes.push_back(n);
    s.file_bytes += n;
    tensors.push_back(std::move(t));
  }
  auto store = WeightStore::create(std::move(tensors), bytes, isa, ratio);
  EXPECT_TRUE(store.ok()) << store.status().message();
  if (store.ok()) s.store = std::move(*store);
  return s;
}

// The layouts of an MLP on one sample: w0 reads the graph input, w1 and w2 ReLU outputs.
void request_mlp(WeightStore& store) {
  store.request("w0", true, InputZeros::unknown);
  store.request("w1", true, InputZeros::expected);
  store.request("w2", true, InputZeros::expected);
  ASSERT_TRUE(store.build_requested().ok());
}

TEST(WeightStore, LayoutsStayWithinTheMemoryBudget) {
  for (Isa isa : {Isa::scalar, Isa::avx512}) {
    SCOPED_TRACE(isa_name(isa));
    Store fast = three_layer_store(0.0, isa), lean = three_layer_store(2.0, isa);
    request_mlp(*fast.store);
    request_mlp(*lean.store);
    const int64_t fast_bytes = fast.store->memory().compressed_in_memory;
    const int64_t lean_bytes = lean.store->memory().compressed_in_memory;
    EXPECT_LE(lean_bytes, 2 * lean.file_bytes) << "fast layouts: " << fast_bytes;
    if (isa == Isa::avx512) {
      // The fastest layouts (banded walks, both for the graph input) take more than the budget.
      EXPECT_GT(fast_bytes, 2 * fast.file_bytes);
      EXPECT_TRUE(fast.store->header("w0").has(kLayoutBanded | kLayoutSlicedRows));
      EXPECT_FALSE(lean.store->header("w0").has(kLayoutBanded)) << "the graph input keeps its row walk only";
    }
    // Every layout kept, narrow or not, holds the same matrix.
    for (const char* name : {"w0", "w1", "w2"}) {
      auto a = fast.store->dense(name), b = lean.store->dense(name);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(test::max_relative_error(**a, **b), 0.0) << name;
    }
  }
}

TEST(WeightStore, CancelledRequestsAreNotBuilt) {
  Store s = three_layer_store(2.0, Isa::avx512);
  s.store->request("w0", true);
  s.store->cancel_requests();  // the plan that asked failed
  s.store->request("w1", false);
  ASSERT_TRUE(s.store->build_requested().ok());
  EXPECT_EQ(s.store->header("w0").layouts, 0u);
  EXPECT_EQ(s.store->header("w1").layouts, kLayoutCsr);
}

TEST(WeightStore, WeightsPrunedInRowBlocksRunBatchesOnThem) {
  // A layer pruned in 4x1 blocks, as the file stores it: batches run on the row blocks, one sample
  // on a column walk, and the matrix read back is the file's.
  Tensor w = test::random_f32({66, 90}, 5);
  PruneRule rule{0.8, std::nullopt};
  rule.block = BlockShape{4, 1};
  prune_layer(w.f32_span(), MatrixView{66, 90, false}, rule);
  std::vector<uint8_t> codes(static_cast<size_t>(w.numel()));
  for (size_t i = 0; i < codes.size(); ++i)
    codes[i] = w.f32_data()[i] != 0.0f ? static_cast<uint8_t>(1 + i % 15) : 0;
  CompressedTensor t = encode_sparse(codes, MatrixView{66, 90, false}, 1, 4);
  t.name = "w";
  t.shape = {66, 90};
  t.codebook = random_codes(1, 1, 0.0, 16, 3).codebook;
  auto want = decompress(t);
  ASSERT_TRUE(want.ok());
  auto store = WeightStore::create({t}, {1000}, Isa::avx512);
  ASSERT_TRUE(store.ok()) << store.status().message();
  (*store)->request("w", false);
  ASSERT_TRUE((*store)->build_requested().ok());
  EXPECT_EQ((*store)->header("w").layouts, kLayoutRowBlocks);
  const SparseMatrix& m = (*store)->header("w");
  EXPECT_EQ(m.nonzeros, m.row_block_slots) << "every block full";
  (*store)->request("w", true);
  ASSERT_TRUE((*store)->build_requested().ok());
  auto got = (*store)->dense("w");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(test::max_relative_error(**got, *want), 0.0);
}

TEST(WeightStore, AWiderCodebooksRowWalkNarrowsThenGivesWayToItsCscWithinTheBudget) {
  // 32 entries: a graph input's matrix holds the CSC and the two-byte panelled rows (about 5 bytes
  // a non-zero); a tighter budget leaves the one-byte rows over 8-column panels alone, a budget of
  // the file's bytes the CSC; every one reads back the same codes.
  Codes c = random_codes(300, 400, 0.1, 32, 23);
  for (double ratio : {0.0, 2.0, 1.0}) {
    CompressedTensor t = encode_sparse(c.codes, MatrixView{300, 400, false}, 1, 4);
    t.name = "w";
    t.shape = {300, 400};
    t.codebook = c.codebook;
    const int64_t file_bytes = 2 * static_cast<int64_t>(t.partitions[0].codes.size());
    auto want = decompress(t);
    ASSERT_TRUE(want.ok());
    auto store = WeightStore::create({t}, {file_bytes}, Isa::avx512, ratio);
    ASSERT_TRUE(store.ok()) << store.status().message();
    (*store)->request("w", true);
    ASSERT_TRUE((*store)->build_requested().ok());
    const SparseMatrix& m = (*store)->header("w");
    if (ratio == 0.0) {
      EXPECT_EQ(m.layouts, kLayoutCsc | kLayoutSlicedRows);
      EXPECT_EQ(m.sliced_rows.code_bits, 8);
      EXPECT_GT(m.row_walk_from_active, 0) << "the walk is chosen per call";
      EXPECT_LE(m.row_walk_from_active, 400);
    } else if (ratio == 2.0) {
      EXPECT_EQ(m.layouts, kLayoutSlicedRows) << "the graph input keeps its row walk, in one-byte entries";
      EXPECT_EQ(m.sliced_rows.code_bits, 5);
      EXPECT_LE(m.bytes(), static_cast<int64_t>(ratio * static_cast<double>(file_bytes)) + 4096);
    } else {
      EXPECT_EQ(m.layouts, kLayoutCsc) << "narrowed to the CSC";
      EXPECT_LE(m.bytes(), static_cast<int64_t>(ratio * static_cast<double>(file_bytes)) + 4096);
    }
    auto got = (*store)->dense("w");
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(test::max_relative_error(**got, *want), 0.0) << ratio;
  }
}

TEST(Layouts, AWiderCodebooksPanelledRowsRebuildTheOtherLayouts) {
  // Two-byte entries (17 and 64 entries), and a compact matrix's one-byte 5-bit ones (32).
  for (auto [entries, compact] : {std::pair{17, false}, {64, false}, {32, true}}) {
    Codes c = random_codes(70, 90, 0.2, entries, 30 + static_cast<uint32_t>(entries));
    auto codes = dense_codes(c.codes, 70, 90);
    const LayoutSet others = kLayoutCsc | kLayoutCsr | kLayoutRowBlocks;
    SparseMatrix m = with_layouts(*codes, c.codebook, 1, kLayoutSlicedRows, compact);
    EXPECT_EQ(m.sliced_rows.code_bits, compact ? 5 : 8);
    add_layouts(m, *matrix_codes(m), others);
    SparseMatrix want = with_layouts(*codes, c.codebook, 1, others | kLayoutSlicedRows, compact);
    expect_same_layouts(m, want, fmt::format("{} entries compact {}", entries, compact));
  }
}

TEST(WeightStore, BatchedLayoutsStayWithinTheMemoryBudget) {
  Store fast = three_layer_store(0.0, Isa::avx512), lean = three_layer_store(1.25, Isa::avx512);
  for (Store* s : {&fast, &lean}) {
    for (const char* name : {"w0", "w1", "w2"}) s->store->request(name, false);
    ASSERT_TRUE(s->store->build_requested().ok());
  }
  EXPECT_EQ(fast.store->header("w0").csr_entry_bits, 16)
      << "10% density: too many fillers for one-byte entries";
  EXPECT_EQ(lean.store->header("w0").csr_entry_bits, 8);
  EXPECT_LE(lean.store->memory().compressed_in_memory, lean.file_bytes * 5 / 4);
  EXPECT_GT(fast.store->memory().compressed_in_memory, fast.file_bytes * 5 / 4);
}

TEST(WeightStore, ANarrowedRowWalkKeepsWalkingRowsInOneByteEntries) {
  // w0's input has no zeros to skip (a tanh, say): its one sample walks the rows only. A budget
  // below its panelled sliced rows gives it the classic one-byte ones (gap-coded, without the
  // panels' padding), not a column walk.
  Store fast = three_layer_store(0.0, Isa::avx512), lean = three_layer_store(1.1, Isa::avx512);
  for (Store* s : {&fast, &lean}) {
    s->store->request("w0", true, InputZeros::unlikely);
    ASSERT_TRUE(s->store->build_requested().ok());
  }
  const SparseMatrix &wide = fast.store->header("w0"), &narrow = lean.store->header("w0");
  EXPECT_EQ(wide.layouts, kLayoutSlicedRows);
  EXPECT_TRUE(wide.sliced_rows.panelled());
  EXPECT_EQ(narrow.layouts, kLayoutSlicedRows);
  EXPECT_FALSE(narrow.sliced_rows.panelled());
  EXPECT_TRUE(narrow.sliced_rows.gap_coded);
  EXPECT_LT(narrow.bytes(), wide.bytes());
  auto a = fast.store->dense("w0"), b = lean.store->dense("w0");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(test::max_relative_error(**a, **b), 0.0);

  // Under a budget it cannot meet, narrowing never grows a matrix: at every density the budget
  // keeps whichever entries are smaller (at 0.5% and 2%, 4-bit gaps need many fillers, and the
  // panelled one-byte entries pad each panel to its longest row).
  // At 0.1% and 0.5% the gaps of hundreds of columns take dozens of fillers: the panelled rows stay.
  for (double density : {0.001, 0.005, 0.02, 0.3}) {
    Store unlimited = three_layer_store(0.0, Isa::avx512, density);
    Store tight = three_layer_store(0.3, Isa::avx512, density);
    for (Store* s : {&unlimited, &tight}) {
      s->store->request("w0", true, InputZeros::unlikely);
      ASSERT_TRUE(s->store->build_requested().ok());
    }
    const SparseMatrix &narrowed = tight.store->header("w0"), &fastest = unlimited.store->header("w0");
    EXPECT_LE(narrowed.bytes(), fastest.bytes()) << density;
    EXPECT_EQ(narrowed.sliced_rows.panelled(), density < 0.01) << density;
  }
}

TEST(WeightStore, RefusesAnEncodingThatDoesNotFitItsMatrix) {
  Codes c = random_codes(10, 10, 0.5, 16, 41);
  CompressedTensor t = encode_sparse(c.codes, MatrixView{10, 10, false}, 1, 4);
  t.name = "fc.weight";
  t.codebook = c.codebook;
  t.shape = {10, 10};
  t.partitions[0].gaps.back() = 200;  // the last entry now runs past the rows
  auto store = WeightStore::create({t}, {0}, Isa::scalar);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("fc.weight"), std::string::npos) << store.status().message();
  t = encode_sparse(c.codes, MatrixView{10, 10, false}, 1, 4);
  t.name = "fc.weight";
  t.codebook = std::vector<float>(c.codebook.begin(), c.codebook.begin() + 2);
  t.shape = {10, 10};
  store = WeightStore::create({t}, {0}, Isa::scalar);
  ASSERT_FALSE(store.ok()) << "codes outside a 2-entry codebook";
}

}  // namespace
}  // namespace sparrow

namespace sparrow {
namespace {

// ---- the layout table: every row's kernel, for every ISA, against the dense product ----

class LayoutTableRow : public ::testing::TestWithParam<std::tuple<size_t, Isa>> {
 protected:
  void SetUp() override {
    if (isa > best_supported_isa())
      GTEST_SKIP() << isa_name(isa) << ": not supported on this CPU (or capped)";
  }
  const LayoutRow& row = layout_rows()[std::get<0>(GetParam())];
  const Isa isa = std::get<1>(GetParam());
};

// y = W x in double, with the sum of |terms| per row for the tolerance.
std::pair<std::vector<double>, std::vector<double>> dense_product(const Codes& c, const float* x) {
  std::vector<double> y(static_cast<size_t>(c.rows), 0.0), scale(static_cast<size_t>(c.rows), 0.0);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t j = 0; j < c.cols; ++j) {
      double term = static_cast<double>(c.codebook[c.codes[r * c.cols + j]]) * x[j];
      y[r] += term;
      scale[r] += std::fabs(term);
    }
  return {y, scale};
}

// The same codes where the first row of each group of kBlockRows is non-zero, and no others: every
// row block full.
Codes in_row_blocks(Codes c) {
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t j = 0; j < c.cols; ++j) {
      const uint8_t lead = c.codes[static_cast<size_t>(r / kBlockRows * kBlockRows * c.cols + j)];
      uint8_t& code = c.codes[static_cast<size_t>(r * c.cols + j)];
      code = lead == 0 ? 0 : code != 0 ? code : lead;
    }
  return c;
}

TEST_P(LayoutTableRow, KernelMatchesTheDenseProduct) {
  const SparseKernels kernels = sparse_kernels_for(isa);
  uint32_t seed = 40;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {17, 33}, {300, 70}, {4100, 9}, {20, 4200}})
    for (double density : {0.0, 0.1, 0.6}) {
      SCOPED_TRACE(fmt::format("{} {}x{} density {}", row.name, rows, cols, density));
      Codes c = random_codes(rows, cols, density, 16, seed++);
      if (row.layout == kLayoutRowBlocks) c = in_row_blocks(c);
      auto codes = dense_codes(c.codes, rows, cols);
      SparseMatrix m = with_layouts(*codes, c.codebook, 1, row.layout);
      EXPECT_EQ(row.fits(m), m.nonzeros > 0 || row.layout != kLayoutRowBlocks) << "no blocks, nothing to fit";
      ASSERT_TRUE(m.has(row.layout));
      const int64_t batch = row.use == LayoutUse::batched ? 5 : 1;
      Tensor x = test::random_f32({cols, batch}, seed++);  // batched: Xt [cols, batch]
      for (int64_t i = 0; i < x.numel(); i += 3) x.f32_data()[i] = 0.0f;
      std::vector<int32_t> active;
      for (int64_t j = 0; j < cols; ++j)
        if (x.f32_data()[j] != 0.0f) active.push_back(static_cast<int32_t>(j));
      std::vector<float> y(static_cast<size_t>(rows * batch), -3.0f);
      LayoutProduct p;
      p.x = x.f32_data();
      p.active = active.data();
      p.n_active = static_cast<int64_t>(active.size());
      p.row_begin = 0;
      p.row_end = rows;
      p.slice_begin = 0;
      p.slice_end = (rows + kSliceRows - 1) / kSliceRows;
      p.batch = batch;
      p.ldx = batch;
      p.ldy = batch;
      p.y = y.data();
      row.run(m, kernels, p);
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<float> xb(static_cast<size_t>(cols));
        for (int64_t j = 0; j < cols; ++j) xb[j] = x.f32_data()[j * batch + b];
        auto [want, scale] = dense_product(c, xb.data());
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_NEAR(y[r * batch + b], want[r], 1e-5 * scale[r] + 1e-30) << "row " << r << " sample " << b;
      }
      EXPECT_GT(row.bytes_held(m), 0);
      if (rows >= 16 && cols >= 64) {  // lines long enough for the estimate's random gaps
        const auto expected = static_cast<double>(row.bytes_expected(m));
        EXPECT_NEAR(static_cast<double>(row.bytes_held(m)), expected, 0.25 * expected + 512)
            << "the estimate the memory budget works from";
      }
      if (row.use != LayoutUse::column_walk || !active.empty()) {
        EXPECT_GT(row.bytes_touched(m, active), 0);
      }
      std::vector<int32_t> every(static_cast<size_t>(cols));
      for (int64_t j = 0; j < cols; ++j) every[j] = static_cast<int32_t>(j);
      EXPECT_GE(row.bytes_touched(m, every), row.bytes_touched(m, active)) << "more columns, more bytes";
    }
}

INSTANTIATE_TEST_SUITE_P(Table, LayoutTableRow,
                         ::testing::Combine(::testing::Range<size_t>(0, layout_rows().size()),
                                            ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512)),
                         [](const auto& info) {
                           std::string name = layout_rows()[std::get<0>(info.param)].name;
                           std::replace(name.begin(), name.end(), ' ', '_');
                           return name + "_" + isa_name(std::get<1>(info.param));
                         });

TEST(LayoutTable, EveryLayoutHasOneRowAndThePolicyPicksOnlyRowsThatPay) {
  for (Layout l :
       {kLayoutCsc, kLayoutCsr, kLayoutTiles, kLayoutBanded, kLayoutSlicedRows, kLayoutRowBlocks}) {
    int rows = 0;
    for (const LayoutRow& row : layout_rows()) rows += row.layout == l;
    EXPECT_EQ(rows, 1) << l;
    EXPECT_EQ(layout_row(l).layout, l);
  }
  uint32_t seed = 70;
  for (double density : {0.02, 0.5})
    for (int codebook : {16, 200})
      for (int partitions : {1, 2}) {
        Codes c = random_codes(64, 96, density, codebook, seed++);
        SparseMatrix m = sparse_matrix_header(*dense_codes(c.codes, c.rows, c.cols), c.codebook, partitions);
        for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
          for (bool one_sample : {true, false}) {
            LayoutSet chosen = layouts_for(m, isa, one_sample);
            EXPECT_NE(chosen, 0u);
            for (const LayoutRow& row : layout_rows())
              if (chosen & row.layout) {
                EXPECT_TRUE(row.fits(m) && row.pays(m, isa)) << row.name << " " << isa_name(isa);
                EXPECT_EQ(row.use == LayoutUse::batched, !one_sample) << row.name;
              }
          }
      }
}

}  // namespace
}  // namespace sparrow
