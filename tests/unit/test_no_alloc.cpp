// After the first run for a set of input shapes, Executor::run must not allocate; loading a
// compressed model never allocates a layer's float32 weights. This binary replaces the global
// operator new to count allocations and record the largest.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>

#include <zlib.h>
#include <nlohmann/json.hpp>

#include "engine/sparse/kernels.h"
#include "format/graph_section.h"
#include "format/spw_format.h"
#include "test_util.h"

namespace {
std::atomic<int64_t> g_allocations{0};
std::atomic<size_t> g_largest{0};  // largest single allocation since last reset
}  // namespace

namespace {
void count_allocation(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  size_t seen = g_largest.load(std::memory_order_relaxed);
  while (n > seen && !g_largest.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
}
}  // namespace

void* operator new(size_t n) {
  count_allocation(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
// Tensors allocate through the aligned form.
void* operator new(size_t n, std::align_val_t align) {
  count_allocation(n);
  size_t a = static_cast<size_t>(align);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t, std::align_val_t) noexcept {
  std::free(p);
}

namespace sparrow {
namespace {

// Runs the model once to plan, then counts allocations over further runs.
int64_t allocations_in_steady_state(Executor& ex, const std::vector<Tensor>& inputs) {
  int64_t at_start = g_allocations.load();
  auto first = ex.run(inputs);
  EXPECT_TRUE(first.ok()) << first.status().message();
  int64_t before = g_allocations.load();
  EXPECT_GT(before - at_start, 0) << "planning allocates, so the counter must see it";
  for (int i = 0; i < 5; ++i) {
    auto r = ex.run(inputs);
    if (!r.ok()) return -1;
  }
  return g_allocations.load() - before;
}

TEST(NoAllocation, SmallCnnAtOneAndTwoThreads) {
  for (int threads : {1, 2}) {
    auto ex = Executor::create(test::small_cnn(), test::threaded(threads));
    ASSERT_TRUE(ex.ok());
    EXPECT_EQ(allocations_in_steady_state(**ex, {test::random_f32({4, 1, 8, 8}, 1)}), 0);
  }
}

TEST(NoAllocation, EveryCorpusModel) {
  std::string dir = SPARROW_CORPUS_DIR;
  std::ifstream in(dir + "/manifest.json");
  if (!in) GTEST_SKIP() << "no model corpus at " << dir;
  auto manifest = nlohmann::json::parse(in);
  if (manifest.contains("skipped")) GTEST_SKIP() << "model corpus unavailable";
  for (const auto& c : manifest["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::vector<Tensor> inputs;
    for (const auto& n : c["inputs"]) inputs.push_back(*read_npy(dir + "/" + n.get<std::string>()));
    auto model = load_onnx(dir + "/" + c["model"].get<std::string>());
    ASSERT_TRUE(model.ok());
    auto ex = Executor::create(std::move(*model), test::threaded(2));
    ASSERT_TRUE(ex.ok());
    EXPECT_EQ(allocations_in_steady_state(**ex, inputs), 0);
  }
}

// One Gemm layer [batch, in] x W[out, in]^T + b, compressed to 90% sparsity and 4-bit codes, as
// written to and read from a .spw.
SpwModel compressed_fc(int64_t in, int64_t out) {
  Model m;
  m.source = "fc";
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, in}, {"batch", ""}, true}};
  m.outputs = {ValueInfo{"y", ElemType::f32, {-1, out}, {"batch", ""}, true}};
  m.initializers["W"] = test::random_f32({out, in}, 3);
  m.initializers["B"] = test::random_f32({out}, 4);
  Node fc;
  fc.name = "fc";
  fc.op_type = "Gemm";
  fc.inputs = {"x", "W", "B"};
  fc.outputs = {"y"};
  fc.attrs["transB"] = int64_t{1};
  m.nodes = {fc};
  CompressOptions o;
  o.all.prune.sparsity = 0.9;
  o.all.bits = 4;
  auto r = compress_model(m, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  auto bytes = serialize_spw(r->spw, true);
  auto spw = parse_spw(*bytes, "fc.spw");
  EXPECT_TRUE(spw.ok()) << spw.status().message();
  return std::move(spw).value();
}

// The largest single allocation made while creating the executor and running it once.
size_t largest_allocation_to_load_and_run(const SpwModel& spw, int64_t batch, bool sparse) {
  SpwModel copy = spw;
  std::vector<Tensor> x = {test::random_f32({batch, spw.tensors[0].view.cols}, 5)};
  ExecOptions options{1};
  options.sparse = sparse;
  g_largest.store(0);
  auto ex = Executor::create(std::move(copy), options);
  EXPECT_TRUE(ex.ok()) << ex.status().message();
  auto y = (*ex)->run(x);
  EXPECT_TRUE(y.ok()) << y.status().message();
  return g_largest.load();
}

// Compressed convolutions on the engine: a 1x1 read in place, a 3x3 through its padded planes,
// and one on 2x2 planes (each position as one sample at batch 1, gathered at batch 3), each with
// its epilogue on the threads.
TEST(NoAllocation, CompressedConvolutionsAtOneAndTwoThreads) {
  Model m;
  m.source = "convs";
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, 32, 24, 24}, {"N", "", "", ""}, true}};
  m.outputs = {ValueInfo{"y"}};
  m.initializers["w1"] = test::random_f32({64, 32, 1, 1}, 11);
  m.initializers["w2"] = test::random_f32({48, 64, 3, 3}, 12);
  m.initializers["w3"] = test::random_f32({40, 48, 3, 3}, 13);
  m.initializers["b"] = test::random_f32({64}, 14);
  const std::vector<int64_t> pad1 = {1, 1, 1, 1}, pool = {12, 12};
  m.nodes = {Node{"c1", "Conv", "", {"x", "w1", "b"}, {"a"}, {}}, Node{"r1", "Relu", "", {"a"}, {"ar"}, {}},
             Node{"c2", "Conv", "", {"ar", "w2"}, {"b2"}, {{"pads", pad1}}},
             Node{"p", "MaxPool", "", {"b2"}, {"pb"}, {{"kernel_shape", pool}, {"strides", pool}}},
             Node{"c3", "Conv", "", {"pb", "w3"}, {"y"}, {{"pads", pad1}}}};
  CompressOptions o;
  o.all.prune.sparsity = 0.9;
  o.all.bits = 4;
  auto r = compress_model(m, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  for (int threads : {1, 2})
    for (int64_t batch : {1, 3}) {
      auto ex = Executor::create(SpwModel(r->spw), test::threaded(threads));
      ASSERT_TRUE(ex.ok()) << ex.status().message();
      EXPECT_EQ(allocations_in_steady_state(**ex, {test::random_f32({batch, 32, 24, 24}, 15)}), 0)
          << threads << " threads, batch " << batch;
    }
}

TEST(LoadPath, CompressedLayerNeverAllocatesItsFloatWeightsNorADenseCodeMatrix) {
  const int64_t in = 2048, out = 1024;
  SpwModel spw = compressed_fc(in, out);
  ASSERT_EQ(spw.tensors.size(), 1u);
  for (int64_t batch : {1, 2, 8}) {
    size_t largest = largest_allocation_to_load_and_run(spw, batch, true);
    EXPECT_LT(largest, static_cast<size_t>(in * out))
        << "batch " << batch << ": one byte per weight is a code matrix";
  }
  // The check can fail: the same file run dense allocates the float32 weights.
  EXPECT_GE(largest_allocation_to_load_and_run(spw, 1, false), static_cast<size_t>(in * out * 4));
}

TEST(LoadPath, WeightsInMemoryStayWithinTwiceTheFile) {
  SpwModel spw = compressed_fc(2048, 1024);
  for (int64_t batch : {1, 16}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    std::vector<Tensor> x = {test::random_f32({batch, 2048}, 6)};
    WeightMemory held[2];  // the default budget, and none
    for (double ratio : {2.0, 0.0}) {
      ExecOptions options{1};
      options.weight_memory_ratio = ratio;
      options.weight_memory_floor_bytes = 0;
      auto ex = Executor::create(SpwModel(spw), options);
      ASSERT_TRUE(ex.ok());
      EXPECT_GT((*ex)->weight_memory().compressed_in_file, 0);
      auto y = (*ex)->run(x);
      ASSERT_TRUE(y.ok());
      held[ratio == 0.0] = (*ex)->weight_memory();
      EXPECT_EQ(held[ratio == 0.0].decompressed, 0);
      EXPECT_EQ(held[ratio == 0.0].initializers, 1024 * 4) << "the bias";
    }
    EXPECT_LE(held[0].compressed_in_memory, 2 * held[0].compressed_in_file);
    // The check can fail: the fastest layouts of this 10%-dense, 4-bit layer take more.
    EXPECT_GT(held[1].compressed_in_memory, 2 * held[1].compressed_in_file);
  }
}

TEST(LoadPath, ASmallModelKeepsItsFastestLayoutsUnderTheBudgetFloor) {
  // 256 x 128 at 10%: its fastest layouts take a few KiB, more than twice its bytes in the file but
  // far under the floor, so the default budget narrows nothing; without the floor it does.
  SpwModel spw = compressed_fc(256, 128);
  auto held = [&](double ratio, int64_t floor_bytes) {
    ExecOptions options{1};
    options.weight_memory_ratio = ratio;
    options.weight_memory_floor_bytes = floor_bytes;
    auto ex = Executor::create(SpwModel(spw), options);
    EXPECT_TRUE(ex.ok());
    std::vector<Tensor> x = {test::random_f32({1, 256}, 7)};
    EXPECT_TRUE((*ex)->run(x).ok());
    return (*ex)->weight_memory();
  };
  const WeightMemory fastest = held(0.0, 0), by_default = held(2.0, ExecOptions{}.weight_memory_floor_bytes),
                     no_floor = held(2.0, 0);
  EXPECT_EQ(by_default.compressed_in_memory, fastest.compressed_in_memory);
  EXPECT_LE(no_floor.compressed_in_memory, 2 * no_floor.compressed_in_file);
  if (sparse_kernels().isa == Isa::avx512) {  // elsewhere the fastest layout is the one-byte CSC
    EXPECT_LT(no_floor.compressed_in_memory, fastest.compressed_in_memory);
  }
}

// ---- hostile .spw files: declared sizes are checked against the bytes present before allocating ----

// A .spw whose only WGHT section is `weight` (a record, dims, name, codebook, entry counts, then
// zero-filled streams of the sizes the record declares), with a valid header, table and checksums;
// its graph section is `graph` under format 1.`minor` (by default an empty graph, not deflated).
std::string spw_with_weight(const spw::WeightRecord& rec, const Shape& dims,
                            const std::vector<uint64_t>& entries,
                            const std::string& graph = spw::encode_graph(Model{}), uint16_t minor = 1) {
  spw::ByteWriter w;
  w.put(rec);
  for (int64_t d : dims) w.put(static_cast<uint64_t>(d));
  w.put_bytes("w", 1);
  w.pad_to(8);
  std::vector<float> codebook(size_t{1} << rec.weight_bits, 0.5f);
  codebook[0] = 0.0f;
  w.put_bytes(codebook.data(), codebook.size() * sizeof(float));
  for (uint64_t n : entries) w.put(n);
  for (uint64_t bits : {rec.count_stream_bits, rec.code_stream_bits, rec.gap_stream_bits}) {
    w.str().append((bits + 7) / 8, '\0');
    w.pad_to(8);
  }
  std::vector<std::pair<uint32_t, std::string>> sections = {
      {spw::kMeta, "{}"}, {spw::kGraph, graph}, {spw::kDense, std::string(8, '\0')}, {spw::kWeight, w.str()}};
  uint64_t offset = sizeof(spw::SpwHeader) + sections.size() * sizeof(spw::SectionEntry);
  std::vector<spw::SectionEntry> table;
  for (const auto& [kind, bytes] : sections) {
    offset = (offset + 63) / 64 * 64;
    table.push_back({kind, spw::crc32_of(bytes), offset, bytes.size(), 0});
    offset += bytes.size();
  }
  spw::SpwHeader h{};
  std::memcpy(h.magic, spw::kMagic, 4);
  h.version_major = spw::kVersionMajor;
  h.version_minor = minor;
  h.section_count = static_cast<uint32_t>(sections.size());
  h.table_crc = spw::crc32_of(std::string_view(reinterpret_cast<const char*>(table.data()),
                                               table.size() * sizeof(spw::SectionEntry)));
  h.file_bytes = offset;
  h.table_offset = sizeof(spw::SpwHeader);
  h.header_crc = spw::crc32_of(std::string_view(reinterpret_cast<const char*>(&h), 60));
  std::string out(reinterpret_cast<const char*>(&h), sizeof h);
  out.append(reinterpret_cast<const char*>(table.data()), table.size() * sizeof(spw::SectionEntry));
  for (size_t i = 0; i < sections.size(); ++i) {
    out.resize(table[i].offset, '\0');
    out += sections[i].second;
  }
  return out;
}

spw::WeightRecord sparse_record(uint64_t rows, uint64_t cols, uint32_t partitions) {
  spw::WeightRecord rec{};
  rec.name_bytes = 1;
  rec.rank = 2;
  rec.layout = 0;
  rec.weight_bits = 4;
  rec.index_bits = 4;
  rec.count_bits = 8;
  rec.partitions = partitions;
  rec.rows = rows;
  rec.cols = cols;
  rec.count_stream_bits = uint64_t{rec.count_bits} * partitions * cols;
  return rec;
}

// Parses `bytes`, expecting a refusal that mentions `field`, and returns the largest allocation made.
size_t largest_allocation_to_refuse(const std::string& bytes, const std::string& field) {
  g_largest.store(0);
  auto r = parse_spw(bytes, "hostile.spw");
  size_t largest = g_largest.load();
  EXPECT_FALSE(r.ok());
  if (!r.ok()) {
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().message();
  }
  return largest;
}

constexpr size_t kSmallAllocation = size_t{16} << 20;

// Format 1.2: a graph section declaring 1 GiB (within deflate's ratio of its 1 MiB stream) whose
// stream is not zlib: refused on the stream's first bytes, the gigabyte never allocated.
TEST(HostileSpw, ADeflatedGraphDeclaringAGigabyteIsRefusedWithoutAllocatingIt) {
  std::string graph(sizeof(uint64_t), '\0');
  const uint64_t declared = spw::kMaxGraphBytes;
  std::memcpy(graph.data(), &declared, sizeof declared);
  graph += std::string(size_t{1} << 20, '\x55');
  ASSERT_LE(declared, spw::kMaxInflateRatio * (graph.size() - sizeof declared));
  const std::string file = spw_with_weight(sparse_record(1, 1, 1), {1, 1}, {0}, graph, 2);
  EXPECT_LT(largest_allocation_to_refuse(file, "GRPH"), kSmallAllocation);
}

TEST(HostileSpw, ZeroBitCountsForTwoBillionColumnsAreRefusedWithoutAllocating) {
  const uint64_t cols = uint64_t{1} << 31;
  spw::WeightRecord rec = sparse_record(1, cols, 1);
  rec.count_bits = 0;
  rec.count_stream_bits = 0;
  std::string file = spw_with_weight(rec, {1, static_cast<int64_t>(cols)}, {0});
  EXPECT_LT(file.size(), 4096u);
  EXPECT_LT(largest_allocation_to_refuse(file, "count_bits"), kSmallAllocation);
}

TEST(HostileSpw, ManyPartitionsClaimingEveryWeightAreRefusedWithoutAllocating) {
  // 65,536 partitions, each claiming all 2^20 weights: refused on the running sum, not after
  // allocating each partition's codes.
  spw::WeightRecord rec = sparse_record(1024, 1024, 1u << 16);
  rec.count_bits = 1;
  rec.count_stream_bits = uint64_t{1} << 26;  // 8 MB of counts present
  rec.code_stream_bits = rec.gap_stream_bits = 64;
  std::vector<uint64_t> entries(size_t{1} << 16, uint64_t{1} << 20);
  std::string file = spw_with_weight(rec, {1024, 1024}, entries);
  EXPECT_LT(largest_allocation_to_refuse(file, "entries"), kSmallAllocation);
}

TEST(HostileSpw, EntriesBeyondTheStreamsAreRefusedBeforeTheirCodesAreAllocated) {
  // A dense 2^31-weight tensor whose code stream holds 64 bits.
  spw::WeightRecord rec{};
  rec.name_bytes = 1;
  rec.rank = 2;
  rec.layout = 1;
  rec.weight_bits = 4;
  rec.partitions = 1;
  rec.rows = uint64_t{1} << 16;
  rec.cols = uint64_t{1} << 15;
  rec.code_stream_bits = 64;
  std::string file = spw_with_weight(rec, {1 << 16, 1 << 15}, {uint64_t{1} << 31});
  EXPECT_LT(largest_allocation_to_refuse(file, "code_stream_bits"), kSmallAllocation);
  // The same with a sparse tensor whose counts are present but whose entries are not.
  spw::WeightRecord sparse = sparse_record(4096, 4096, 1);
  sparse.code_stream_bits = sparse.gap_stream_bits = 64;
  file = spw_with_weight(sparse, {4096, 4096}, {uint64_t{1} << 24});
  EXPECT_LT(largest_allocation_to_refuse(file, "code_stream_bits"), kSmallAllocation);
}

TEST(HostileSpw, TheBuilderMakesFilesTheReaderAccepts) {
  // The same builder with consistent sizes: an all-pruned 8 x 8 matrix reads back (so the refusals
  // above come from the sizes, not from a malformed file).
  spw::WeightRecord rec = sparse_record(8, 8, 1);
  rec.count_bits = 0;
  rec.count_stream_bits = 0;
  auto r = parse_spw(spw_with_weight(rec, {8, 8}, {0}), "ok.spw");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->tensors.size(), 1u);
  EXPECT_EQ(r->tensors[0].partitions[0].col_counts, std::vector<uint32_t>(8, 0));
}

// ---- hostile ONNX: an initializer's declared size is checked against its data before allocating ----

// Protobuf wire format, just enough for a ModelProto with an opset and one initializer.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_field(std::string& out, int field, const std::string& bytes) {  // length-delimited
  put_varint(out, static_cast<uint64_t>(field) << 3 | 2);
  put_varint(out, bytes.size());
  out += bytes;
}
void put_int(std::string& out, int field, uint64_t v) {
  put_varint(out, static_cast<uint64_t>(field) << 3);
  put_varint(out, v);
}

TEST(HostileOnnx, AnInitializerDeclaringMillionsOfValuesWithNoneIsRefusedWithoutAllocating) {
  std::string tensor;
  put_int(tensor, 1, uint64_t{1} << 28);  // dims: [2^28]
  put_int(tensor, 2, 7);                  // data_type: INT64, and no data at all
  put_field(tensor, 8, "big");            // name
  std::string graph;
  put_field(graph, 5, tensor);  // initializer
  std::string opset;
  put_int(opset, 2, 13);
  std::string model;
  put_int(model, 1, 8);  // ir_version
  put_field(model, 7, graph);
  put_field(model, 8, opset);
  EXPECT_LT(model.size(), 100u);
  g_largest.store(0);
  auto r = parse_onnx(model, "hostile.onnx");
  size_t largest = g_largest.load();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("has 0 values"), std::string::npos) << r.status().message();
  EXPECT_LT(largest, kSmallAllocation);
}

// ---- hostile IDX: the header is checked before the data is decompressed ----

// Writes an IDX header (u8 elements, `dims`) and `data_bytes` zero bytes, gzip-compressed.
std::string gzip_idx(const std::string& name, const std::vector<uint32_t>& dims, size_t data_bytes) {
  std::string path = test::temp_dir("hostile_idx") + "/" + name;
  gzFile f = gzopen(path.c_str(), "wb9");
  std::string head = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) head.push_back(static_cast<char>((d >> s) & 0xff));
  gzwrite(f, head.data(), static_cast<unsigned>(head.size()));
  std::string zeros(size_t{1} << 20, '\0');
  for (size_t left = data_bytes; left > 0;) {
    size_t n = std::min(left, zeros.size());
    gzwrite(f, zeros.data(), static_cast<unsigned>(n));
    left -= n;
  }
  gzclose(f);
  return path;
}

TEST(HostileIdx, DataBeyondWhatTheHeaderDeclaresIsNotDecompressed) {
  // 10 declared bytes followed by 64 MB of zeros (about 64 KB compressed).
  std::string path = gzip_idx("bomb.idx.gz", {10}, size_t{64} << 20);
  EXPECT_LT(std::filesystem::file_size(path), size_t{1} << 20);
  g_largest.store(0);
  auto r = read_idx(path);
  EXPECT_LT(g_largest.load(), kSmallAllocation);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("needs 10 bytes of data, file has more"), std::string::npos)
      << r.status().message();
}

TEST(HostileIdx, AHeaderDeclaringGigabytesOverATinyFileAllocatesLittle) {
  std::string path = gzip_idx("liar.idx.gz", {1u << 15, 1u << 15}, 1000);  // declares 1 GiB
  g_largest.store(0);
  auto r = read_idx(path);
  EXPECT_LT(g_largest.load(), kSmallAllocation);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("file has 1000"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace sparrow
