// Google Benchmark: every sparse kernel variant (scalar reference, AVX2, AVX-512) on the Alex-7
// shape (4096 x 4096, 9% of weights, 35% of inputs non-zero, 4-bit codes), batch 1 and 64; and the
// four batch-1 layouts (CSC walk, column tiles, banded CSC, sliced row walk) on the Alex-8
// shape (1000 x 4096, 25% of weights, 37.5% of inputs non-zero), near the tiles' break-even and
// the row walk's; the non-zero input detection of every variant on VGG-6's input (25088 values,
// 18% non-zero); the batched CSR kernel over one panel of a transformer's feed-forward shape; and
// the depthwise and MaxPool planes at MobileNetV2's, SqueezeNet's and ResNet-18's shapes.
#include <array>
#include <random>

#include <benchmark/benchmark.h>

#include "engine/sparse/kernels.h"
#include "engine/sparse/plane_window.h"

namespace sparrow {
namespace {

constexpr int64_t kRows = 4096, kCols = 4096;

// A rows x cols matrix with `percent` of its weights kept at random and 4-bit codes, built with
// one-byte entries and their fillers when `compact`.
SparseMatrix random_4bit(int64_t rows, int64_t cols, unsigned percent, uint32_t seed, bool compact) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols), 0);
  for (auto& c : codes)
    if (rng() % 100 < percent) c = static_cast<uint8_t>(1 + rng() % 15);
  std::vector<float> codebook(16);
  for (int i = 1; i < 16; ++i) codebook[i] = 0.01f * static_cast<float>(i - 8);
  return build_sparse_matrix(codes, rows, cols, codebook, 1, compact);
}

// The Alex-7 shape's matrix (9% of weights).
SparseMatrix alex7(bool compact) {
  return random_4bit(kRows, kCols, 9, 1, compact);
}

const SparseMatrix& matrix() {
  static const SparseMatrix m = alex7(false);
  return m;
}

std::vector<float> inputs(int64_t n, int percent_nonzero) {
  std::mt19937 rng(2);
  std::vector<float> x(static_cast<size_t>(n), 0.0f);
  for (auto& v : x)
    if (static_cast<int>(rng() % 100) < percent_nonzero) v = 0.5f;
  return x;
}

// n activations as a ReLU leaves them: half zeros, the rest of a normal distribution's positive
// half, in no order a branch predictor could learn.
std::vector<float> relu_normal(int64_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = std::max(0.0f, normal(rng));
  return x;
}

// Whether the CPU runs the ISA asked for in arg 0 (sparse_kernels_for falls back to a lower one);
// if not, the benchmark is marked skipped.
bool supported(benchmark::State& state, const SparseKernels& k) {
  if (k.isa == static_cast<Isa>(state.range(0))) return true;
  state.SkipWithError("ISA not supported on this CPU");
  return false;
}

void BM_Spmv(benchmark::State& state) {
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  const SparseMatrix& m = matrix();
  auto x = inputs(kCols, 35);
  std::vector<int32_t> active;
  for (int64_t j = 0; j < kCols; ++j)
    if (x[j] != 0.0f) active.push_back(static_cast<int32_t>(j));
  std::vector<float> y(static_cast<size_t>(kRows));
  SpmvArgs a{
      &m.csc[0], m.codebook.data(), m.small_codebook, active.data(), static_cast<int64_t>(active.size()),
      x.data(),  y.data()};
  SpmvFn fn = m.e8 ? k.spmv_csc_e8 : k.spmv_csc_e16;
  for (auto _ : state) {
    fn(a);
    benchmark::DoNotOptimize(y.data());
  }
  int64_t entries = 0;
  for (int32_t j : active) entries += m.csc[0].col_ptr[j + 1] - m.csc[0].col_ptr[j];
  state.counters["entries/s"] =
      benchmark::Counter(static_cast<double>(entries), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(k.isa)) + (m.e8 ? ", 1-byte entries" : ", 2-byte entries"));
}
BENCHMARK(BM_Spmv)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

struct Alex8 {
  std::vector<uint8_t> codes;
  SparseMatrix csc;  // built with one partition: CSC always, tiles where the CPU has AVX-512
  ColumnTiles tiles;
  BandedCsc banded;
  SlicedRows sliced_rows;
};

const Alex8& alex8() {
  static const Alex8 a = [] {
    std::mt19937 rng(3);
    Alex8 r;
    r.codes.assign(1000 * 4096, 0);
    for (auto& c : r.codes)
      if (rng() % 100 < 25) c = static_cast<uint8_t>(1 + rng() % 15);
    std::vector<float> codebook(16);
    for (int i = 1; i < 16; ++i) codebook[i] = 0.01f * static_cast<float>(i - 8);
    r.csc = build_sparse_matrix(r.codes, 1000, 4096, codebook, 1);
    r.tiles = build_column_tiles(r.codes, 1000, 4096);
    r.banded = build_banded_csc(r.codes, 1000, 4096);
    r.sliced_rows = build_sliced_rows(r.codes, 1000, 4096);
    return r;
  }();
  return a;
}

// One sample over the Alex-8-shaped matrix at 37.5% input density with `isa`'s kernel for `layout`:
// 0 = CSC walk, 1 = column tiles, 2 = banded CSC, 3 = sliced rows (every row).
void spmv_layouts(benchmark::State& state, int64_t isa, int64_t layout) {
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(isa));
  if (k.isa != static_cast<Isa>(isa)) {
    state.SkipWithError("ISA not supported on this CPU");
    return;
  }
  const Alex8& a = alex8();
  const SparseMatrix& m = a.csc;
  std::vector<float> x(4096, 0.0f);
  std::vector<int32_t> active;
  std::mt19937 rng(4);
  for (int32_t j = 0; j < 4096; ++j)
    if (rng() % 1000 < 375) {
      x[j] = 0.5f;
      active.push_back(j);
    }
  std::vector<float> y(1000);
  auto n = static_cast<int64_t>(active.size());
  for (auto _ : state) {
    if (layout == 3)
      k.spmv_rows_sliced(
          SpmvRowArgs{&a.sliced_rows, m.codebook.data(), x.data(), 0, a.sliced_rows.slices(), y.data()});
    else if (layout == 1)
      k.spmv_tiles(SpmvTileArgs{&a.tiles, 1000, m.codebook.data(), active.data(), n, x.data(), y.data()});
    else if (layout == 2)
      k.spmv_banded(SpmvBandArgs{&a.banded, 1000, m.codebook.data(), active.data(), n, x.data(), y.data()});
    else
      (m.e8 ? k.spmv_csc_e8 : k.spmv_csc_e16)(
          SpmvArgs{&m.csc[0], m.codebook.data(), m.small_codebook, active.data(), n, x.data(), y.data()});
    benchmark::DoNotOptimize(y.data());
  }
  int64_t nonzeros = 0;
  for (int32_t j : active)
    for (int64_t r = 0; r < 1000; ++r) nonzeros += a.codes[static_cast<size_t>(r * 4096 + j)] != 0;
  state.counters["nonzeros/s"] =
      benchmark::Counter(static_cast<double>(nonzeros), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(k.isa)) + (layout == 1   ? ", column tiles"
                                                 : layout == 2 ? ", banded CSC"
                                                 : layout == 3 ? ", sliced rows"
                                                 : m.e8        ? ", CSC 1-byte"
                                                               : ", CSC 2-byte"));
}

// Arg 0: ISA; arg 1: the layout of spmv_layouts.
void BM_SpmvLayouts(benchmark::State& state) {
  spmv_layouts(state, state.range(0), state.range(1));
}
BENCHMARK(BM_SpmvLayouts)->ArgsProduct({{0, 1, 2}, {0, 1, 2, 3}})->Unit(benchmark::kMicrosecond);

// The AVX-512 CSC walk (arg 0: 0) and banded CSC (2) of BM_SpmvLayouts with each way of adding
// their updates to y (arg 1: 0 = hardware scatter, 1 = scalar fused multiply-adds).
void BM_SpmvScatter(benchmark::State& state) {
  const ScatterMode saved = avx512_scatter();
  const auto mode = state.range(1) == 0 ? ScatterMode::hardware : ScatterMode::scalar;
  set_avx512_scatter(mode);
  spmv_layouts(state, static_cast<int64_t>(Isa::avx512), state.range(0));
  set_avx512_scatter(saved);
  state.SetLabel(state.error_occurred() ? ""
                                        : std::string(scatter_mode_name(mode)) +
                                              (state.range(0) == 2 ? ", banded CSC" : ", CSC"));
}
BENCHMARK(BM_SpmvScatter)->ArgsProduct({{0, 2}, {0, 1}})->Unit(benchmark::kMicrosecond);

// The Alex-7 matrix's CSR in each entry width: 16 bits (its own) and 8 (a compact matrix:
// one-byte entries and their fillers).
const SparseMatrix& matrix_with_csr_bits(int64_t bits) {
  static const SparseMatrix compact = alex7(true);
  return bits == 8 ? compact : matrix();
}

// Times Y = W Xt over every row of `m` for `batch` samples, `percent_nonzero` of the inputs non-zero.
void time_spmm(benchmark::State& state, const SparseKernels& k, const SparseMatrix& m, int64_t batch,
               int percent_nonzero) {
  auto xt = inputs(m.cols * batch, percent_nonzero);
  std::vector<float> y(static_cast<size_t>(m.rows * batch));
  for (auto _ : state) {
    spmm_csr_of(k,
                m)(SpmmArgs{&m, 0, m.rows, xt.data(), batch, batch, y.data(), batch, nullptr, RowEpilogue{}});
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["nonzeros*batch/s"] = benchmark::Counter(static_cast<double>(m.nonzeros * batch),
                                                          benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(k.isa)) + ", " + std::to_string(m.csr_entry_bits) + "-bit entries");
}

void BM_Spmm(benchmark::State& state) {
  int64_t batch = state.range(1);
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  time_spmm(state, k, matrix_with_csr_bits(state.range(2)), batch, 35);
}
BENCHMARK(BM_Spmm)
    ->ArgsProduct({{0, 1, 2}, {64}, {8, 16}})
    ->ArgsProduct({{2}, {16}, {8, 16}})
    ->Unit(benchmark::kMillisecond);

// A transformer's feed-forward shape (1024 x 256, 10% of weights, 4-bit codes) over one panel of
// 16 to 128 samples, as the batched fully connected op runs it (kSparseFcPanel is 32): Xt is
// contiguous and small, so this times the kernel's own loop.
void BM_SpmmPanel(benchmark::State& state) {
  constexpr int64_t rows = 1024, cols = 256;
  const int64_t batch = state.range(1);
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  time_spmm(state, k, random_4bit(rows, cols, 10, 3, true), batch, 100);
}
BENCHMARK(BM_SpmmPanel)->ArgsProduct({{0, 1, 2}, {16, 32, 64, 128}})->Unit(benchmark::kMicrosecond);

// VGG-11's last convolutions on 32x32 inputs at batch 1 (512 x 4608 at 10%, 4-bit codes) over the
// im2col columns of one image's 4x4 or 2x2 output plane: few columns, many weights.
void BM_SpmmSmallPlane(benchmark::State& state) {
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  static const SparseMatrix m = random_4bit(512, 4608, 10, 4, false);
  time_spmm(state, k, m, state.range(1), 50);
}
BENCHMARK(BM_SpmmSmallPlane)->ArgsProduct({{2}, {4, 16}})->Unit(benchmark::kMicrosecond);

// 1x1 convolutions at batch 1: SqueezeNet's classifier (1000 x 512 at 10%) over a 13x13 plane, a
// MobileNetV2-like 144 x 24 expansion over 56x56 and 28x28 planes, and its 960 x 160 expansion
// over 14x14 and 7x7 planes; Xt is the input planes as they lie (row stride = the plane's positions).
void BM_SpmmPointwise(benchmark::State& state) {
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  static const SparseMatrix classifier = random_4bit(1000, 512, 10, 5, true);
  static const SparseMatrix expand = random_4bit(144, 24, 10, 6, true);
  static const SparseMatrix late = random_4bit(960, 160, 10, 7, true);
  const int64_t positions = state.range(1);
  time_spmm(state, k, positions == 169 ? classifier : positions < 200 ? late : expand, positions, 50);
}
BENCHMARK(BM_SpmmPointwise)->ArgsProduct({{2}, {49, 169, 196, 784, 3136}})->Unit(benchmark::kMicrosecond);

void BM_ListNonzero(benchmark::State& state) {
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  std::vector<float> x = inputs(25088, 18);
  std::vector<int32_t> active(x.size());
  int64_t count = 0;
  for (auto _ : state) {
    k.list_nonzero(NonzeroArgs{x.data(), static_cast<int64_t>(x.size()), active.data(), &count});
    benchmark::DoNotOptimize(count);
  }
  state.SetLabel(isa_name(k.isa));
  state.counters["inputs/s"] =
      benchmark::Counter(static_cast<double>(x.size()), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ListNonzero)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

// Where the row walk overtakes the column walk (the costs in sparse_matrix.h are fitted to these
// timings), AVX-512 only: arg 0 is
// the shape (0 = Alex-7, 4096 x 4096 at 9%; 1 = NT-We, 600 x 4096 at 10%; 2 = NT-Wd, 8791 x 600 at
// 11%), arg 1 the percentage of non-zero inputs, arg 2 the walk (0 = active columns of the banded
// CSC, 1 = every row of the sliced rows). Every call takes the next of 16 inputs.
struct Shape {
  BandedCsc columns;
  SlicedRows rows;
  int64_t out = 0, in = 0;
  std::vector<float> codebook;
};

const Shape& shape(int64_t which) {
  static const std::array<Shape, 3> shapes = [] {
    const int64_t dims[3][2] = {{4096, 4096}, {600, 4096}, {8791, 600}};
    const int percent[3] = {9, 10, 11};
    std::array<Shape, 3> made;
    for (int s = 0; s < 3; ++s) {
      std::mt19937 rng(5 + s);
      int64_t out = dims[s][0], in = dims[s][1];
      std::vector<uint8_t> codes(static_cast<size_t>(out * in), 0);
      for (auto& c : codes)
        if (static_cast<int>(rng() % 100) < percent[s]) c = static_cast<uint8_t>(1 + rng() % 15);
      made[s] = Shape{build_banded_csc(codes, out, in), build_sliced_rows(codes, out, in), out, in,
                      std::vector<float>(16)};
      for (int i = 1; i < 16; ++i) made[s].codebook[i] = 0.01f * static_cast<float>(i - 8);
    }
    return made;
  }();
  return shapes[which];
}

void BM_RowWalkCrossover(benchmark::State& state) {
  SparseKernels k = sparse_kernels_for(Isa::avx512);
  if (k.isa != Isa::avx512) {
    state.SkipWithError("needs AVX-512");
    return;
  }
  const Shape& s = shape(state.range(0));
  const bool rows = state.range(2) == 1;
  std::mt19937 rng(6);
  std::vector<std::vector<float>> xs(16, std::vector<float>(static_cast<size_t>(s.in), 0.0f));
  std::vector<std::vector<int32_t>> active(16);
  for (int i = 0; i < 16; ++i)
    for (int32_t j = 0; j < s.in; ++j)
      if (static_cast<int64_t>(rng() % 100) < state.range(1)) {
        xs[i][j] = 0.5f;
        active[i].push_back(j);
      }
  std::vector<float> y(static_cast<size_t>(s.out));
  size_t turn = 0;
  for (auto _ : state) {
    turn = (turn + 1) % 16;
    if (rows)
      k.spmv_rows_sliced(
          SpmvRowArgs{&s.rows, s.codebook.data(), xs[turn].data(), 0, s.rows.slices(), y.data()});
    else
      k.spmv_banded(SpmvBandArgs{&s.columns, s.out, s.codebook.data(), active[turn].data(),
                                 static_cast<int64_t>(active[turn].size()), xs[turn].data(), y.data()});
    benchmark::DoNotOptimize(y.data());
  }
  const char* names[3] = {"Alex-7", "NT-We", "NT-Wd"};
  state.SetLabel(std::string(names[state.range(0)]) + (rows ? ", rows" : ", columns"));
}
BENCHMARK(BM_RowWalkCrossover)
    ->ArgsProduct({{0, 1, 2}, {10, 15, 20, 30, 40, 50, 60, 100}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

// A 3x3 depthwise window, padding 1, over a square plane of side arg 1 at stride arg 2.
Window2d depthwise_window(const benchmark::State& state) {
  Window2d w;
  w.in_h = w.in_w = state.range(1);
  w.k_h = w.k_w = 3;
  w.s_h = w.s_w = state.range(2);
  w.pad_t = w.pad_l = w.pad_b = w.pad_r = 1;
  w.out_h = w.out_w = (w.in_h + 2 - 3) / w.s_h + 1;
  return w;
}

void label_depthwise(benchmark::State& state, const SparseKernels& k, const Window2d& w, int64_t planes) {
  state.counters["outputs/s"] = benchmark::Counter(static_cast<double>(planes * w.out_h * w.out_w),
                                                   benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(isa_name(k.isa)) + ", " + std::to_string(w.in_h) + " stride " +
                 std::to_string(w.s_h));
}

// Depthwise 3x3 planes (padding 1) at MobileNetV2's shapes: 112x112 at stride 2 (its
// features.2), 56x56 at stride 1, 28x28 at stride 2, 14x14 and 7x7 at stride 1; 32 planes each.
void BM_DepthwisePlane(benchmark::State& state) {
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  const Window2d w = depthwise_window(state);
  constexpr int64_t kPlanes = 32;
  std::vector<float> x = inputs(kPlanes * w.in_h * w.in_w, 100), taps = inputs(9, 100);
  std::vector<float> scratch(static_cast<size_t>(depthwise_scratch_floats(w)));
  std::vector<float> y(static_cast<size_t>(kPlanes * w.out_h * w.out_w));
  for (auto _ : state) {
    for (int64_t p = 0; p < kPlanes; ++p)
      k.depthwise_plane(DepthwiseArgs{x.data() + p * w.in_h * w.in_w, taps.data(), 0.1f, &w, 0.0f, 6.0f,
                                      scratch.data(), y.data() + p * w.out_h * w.out_w});
    benchmark::DoNotOptimize(y.data());
  }
  label_depthwise(state, k, w, kPlanes);
}
BENCHMARK(BM_DepthwisePlane)
    ->ArgsProduct({{2}, {112, 56, 28}, {2}})
    ->ArgsProduct({{2}, {56, 28, 14, 7}, {1}})
    ->Unit(benchmark::kMicrosecond);

// The same 32 planes as BM_DepthwisePlane, 16 channels at a time in vector lanes, as the Conv op
// runs them: interleaved, convolved, de-interleaved.
void BM_DepthwiseLanes(benchmark::State& state) {
  constexpr int64_t L = kDepthwiseLanes;
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  const Window2d w = depthwise_window(state);
  constexpr int64_t kPlanes = 32;
  const int64_t in_hw = w.in_h * w.in_w, out_hw = w.out_h * w.out_w;
  std::vector<float> x = inputs(kPlanes * in_hw, 100), taps = inputs(9 * L, 100), bias(L, 0.1f);
  std::vector<float> xi(static_cast<size_t>(in_hw * L)), yi(static_cast<size_t>(out_hw * L));
  std::vector<float> scratch(static_cast<size_t>(depthwise_lanes_scratch_floats(w)));
  std::vector<float> y(static_cast<size_t>(kPlanes * out_hw));
  for (auto _ : state) {
    for (int64_t c0 = 0; c0 < kPlanes; c0 += L) {
      k.transpose(TransposeArgs{x.data() + c0 * in_hw, L, in_hw, 0, L, xi.data(), false});
      k.depthwise_lanes(
          DepthwiseLanesArgs{xi.data(), taps.data(), bias.data(), &w, 0.0f, 6.0f, scratch.data(), yi.data()});
      k.transpose(TransposeArgs{yi.data(), out_hw, L, 0, out_hw, y.data() + c0 * out_hw, false});
    }
    benchmark::DoNotOptimize(y.data());
  }
  label_depthwise(state, k, w, kPlanes);
}
BENCHMARK(BM_DepthwiseLanes)
    ->ArgsProduct({{2}, {112, 56, 28}, {2}})
    ->ArgsProduct({{2}, {56, 28, 14, 7}, {1}})
    ->Unit(benchmark::kMicrosecond);

// MaxPool 3x3 at stride 2 over 64 planes: SqueezeNet's 111x111 (no padding, ceil mode: 55x55) and
// ResNet-18's 112x112 (padding 1: 56x56).
void BM_MaxPoolPlane(benchmark::State& state) {
  SparseKernels k = sparse_kernels_for(static_cast<Isa>(state.range(0)));
  if (!supported(state, k)) return;
  const bool padded = state.range(1) != 0;
  Window2d w;
  w.in_h = w.in_w = padded ? 112 : 111;
  w.k_h = w.k_w = 3;
  w.s_h = w.s_w = 2;
  w.pad_t = w.pad_l = w.pad_b = w.pad_r = padded ? 1 : 0;
  w.out_h = w.out_w = padded ? 56 : 55;
  constexpr int64_t kPlanes = 64;
  std::vector<float> x = relu_normal(kPlanes * w.in_h * w.in_w);
  std::vector<float> y(static_cast<size_t>(kPlanes * w.out_h * w.out_w));
  for (auto _ : state) {
    for (int64_t p = 0; p < kPlanes; ++p)
      k.max_pool_plane(MaxPoolArgs{x.data() + p * w.in_h * w.in_w, &w, y.data() + p * w.out_h * w.out_w});
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(isa_name(k.isa)) + (padded ? ", 112x112 padded" : ", 111x111"));
}
BENCHMARK(BM_MaxPoolPlane)->ArgsProduct({{0, 1, 2}, {0, 1}})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sparrow

BENCHMARK_MAIN();
