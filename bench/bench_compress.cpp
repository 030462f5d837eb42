// Google Benchmark: the compression kernels at the sizes of real layers. The largest case is
// AlexNet fc6 (9216 x 4096 = 37.7M weights), which must quantize in seconds.
#include <random>

#include <benchmark/benchmark.h>

#include "format/huffman.h"
#include "sparrow/compress.h"

namespace sparrow {
namespace {

std::vector<float> gaussian(size_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 0.01f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void BM_KmeansSharing(benchmark::State& state) {
  auto v = gaussian(static_cast<size_t>(state.range(0)));
  int bits = static_cast<int>(state.range(1));
  for (auto _ : state) {
    Codebook cb = kmeans_1d(v, (1 << bits) - 1, KmeansInit::linear, 1);
    auto codes = assign_nearest(v, cb);
    benchmark::DoNotOptimize(codes.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_KmeansSharing)
    ->Args({1 << 20, 5})
    ->Args({9216 * 4096, 5})
    ->Args({9216 * 4096, 8})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

void BM_PruneTopK(benchmark::State& state) {
  auto v = gaussian(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    auto w = v;
    prune_weights(w, PruneRule{0.91, std::nullopt});
    benchmark::DoNotOptimize(w.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PruneTopK)->Arg(9216 * 4096)->Unit(benchmark::kMillisecond)->Iterations(1);

void BM_EncodeSparse(benchmark::State& state) {
  int64_t rows = 4096, cols = 9216;
  std::mt19937 rng(2);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols), 0);
  for (auto& c : codes)
    if (rng() % 100 < 9) c = static_cast<uint8_t>(1 + rng() % 15);
  for (auto _ : state) {
    CompressedTensor t =
        encode_sparse(codes, MatrixView{rows, cols, false}, static_cast<int>(state.range(0)), 4);
    benchmark::DoNotOptimize(t.partitions.data());
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
}
BENCHMARK(BM_EncodeSparse)->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
}  // namespace sparrow

BENCHMARK_MAIN();
