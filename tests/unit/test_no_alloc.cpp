// After the first run for a set of input shapes, Executor::run must not allocate. This binary
// replaces the global operator new to count allocations while runs repeat.
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}

void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

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

}  // namespace
}  // namespace sparrow
