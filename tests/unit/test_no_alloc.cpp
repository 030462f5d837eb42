// After the first run for a set of input shapes, Executor::run must not allocate; loading a
// compressed model never allocates a layer's float32 weights. This binary replaces the global
// operator new to count allocations and record the largest.
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>

#include <nlohmann/json.hpp>

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
    auto ex = Executor::create(test::small_cnn(), ExecOptions{threads});
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
    auto ex = Executor::create(std::move(*model), ExecOptions{2});
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

TEST(LoadPath, WeightsInMemoryStayNearTheFile) {
  SpwModel spw = compressed_fc(2048, 1024);
  auto ex = Executor::create(SpwModel(spw), ExecOptions{1});
  ASSERT_TRUE(ex.ok());
  WeightMemory before = (*ex)->weight_memory();
  EXPECT_GT(before.compressed_in_file, 0);
  EXPECT_EQ(before.decompressed, 0);
  std::vector<Tensor> x = {test::random_f32({16, 2048}, 6)};
  ASSERT_TRUE((*ex)->run(x).ok());
  WeightMemory batched = (*ex)->weight_memory();
  EXPECT_EQ(batched.decompressed, 0);
  // Batches run on the CSR alone: two bytes per entry beside a file of about one.
  EXPECT_LE(batched.compressed_in_memory, 3 * batched.compressed_in_file);
  EXPECT_EQ(batched.initializers, 1024 * 4) << "the bias";
}

}  // namespace
}  // namespace sparrow
