// Compressed models on the sparse engine against the same weights on the dense executor.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/plan.h"
#include "engine/sparse/kernels.h"
#include "test_util.h"

namespace sparrow {
namespace {

// Compresses, writes and reads back a model, and returns the executors with and without the engine.
struct Pair {
  std::unique_ptr<Executor> sparse, dense;
};

Pair executors(const Model& model, double sparsity, int threads, int partitions = 1, BlockShape block = {}) {
  const SpwModel spw = test::compressed_spw(model, sparsity, block, partitions);
  ExecOptions on = test::threaded(threads), off = on;
  off.sparse = false;
  auto a = Executor::create(spw, on);
  auto b = Executor::create(spw, off);
  EXPECT_TRUE(a.ok() && b.ok());
  return {std::move(a).value(), std::move(b).value()};
}

void expect_same_outputs(Pair& p, const std::vector<Tensor>& inputs, const std::string& what) {
  auto a = p.sparse->run(inputs);
  ASSERT_TRUE(a.ok()) << what << ": " << a.status().message();
  std::vector<Tensor> sparse_out;
  for (const Tensor* t : *a) sparse_out.push_back(*t);
  auto b = p.dense->run(inputs);
  ASSERT_TRUE(b.ok()) << what << ": " << b.status().message();
  for (size_t i = 0; i < sparse_out.size(); ++i)
    EXPECT_LT(test::max_relative_error(sparse_out[i], *(*b)[i]), 1e-5) << what << " output " << i;
}

int sparse_layers(Executor& ex, const std::vector<Shape>& shapes) {
  auto s = ex.summarize(shapes);
  int n = 0;
  for (const auto& l : s->layers) n += l.sparse;
  return n;
}

TEST(Engine, SmallCnnMatchesDenseAtEveryBatchSize) {
  for (int threads : {1, 2})
    for (int partitions : {1, 3}) {
      Pair p = executors(test::small_cnn(), 0.7, threads, partitions);
      EXPECT_EQ(sparse_layers(*p.sparse, {{1, 1, 8, 8}}), 2) << "conv and fc run on the engine";
      EXPECT_EQ(sparse_layers(*p.dense, {{1, 1, 8, 8}}), 0);
      for (int64_t batch : {1, 3, 4, 17})
        expect_same_outputs(p, {test::random_f32({batch, 1, 8, 8}, static_cast<uint32_t>(batch))},
                            "threads " + std::to_string(threads) + " batch " + std::to_string(batch));
    }
}

// One Conv (then Relu) whose geometry the engine must read in place: strides (phase planes),
// dilations, asymmetric pads, windows from 1x1 to 7x7.
struct ConvGeometry {
  int64_t c, h, w, m, kh, kw, stride, dilation;
  std::vector<int64_t> pads;
  int64_t group = 1;
};

Model one_conv(const ConvGeometry& g, uint32_t seed, bool relu = true) {
  Model m;
  m.source = "one_conv";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, g.c, g.h, g.w}, {"N", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w"] = test::random_f32({g.m, g.c / g.group, g.kh, g.kw}, seed);
  m.initializers["b"] = test::random_f32({g.m}, seed + 1);
  m.nodes.push_back(Node{"conv",
                         "Conv",
                         "",
                         {"x", "w", "b"},
                         {"c"},
                         {{"pads", g.pads},
                          {"strides", std::vector<int64_t>{g.stride, g.stride}},
                          {"dilations", std::vector<int64_t>{g.dilation, g.dilation}},
                          {"group", g.group}}});
  if (relu)
    m.nodes.push_back(Node{"relu", "Relu", "", {"c"}, {"y"}, {}});
  else
    m.nodes.back().outputs = {"y"};
  return m;
}

TEST(Engine, ConvolutionsWithoutActivationKeepNaN) {
  // Skipping pruned weights, the engine does not spread a NaN through them as the dense product
  // does (0 * NaN), so the two are not compared here; a NaN the engine does meet stays NaN.
  const ConvGeometry g{4, 7, 7, 5, 3, 3, 1, 1, {1, 1, 1, 1}};
  Pair p = executors(one_conv(g, 3, /*relu=*/false), 0.6, 1);
  EXPECT_EQ(sparse_layers(*p.sparse, {{1, 4, 7, 7}}), 1);
  Tensor x = test::random_f32({1, 4, 7, 7}, 9);
  for (int64_t i = 0; i < 49; ++i) x.f32_data()[i] = std::numeric_limits<float>::quiet_NaN();  // channel 0
  auto y = p.sparse->run({&x, 1});
  ASSERT_TRUE(y.ok());
  int64_t nan = 0, inf = 0;
  for (float v : (*y)[0]->f32_span()) nan += std::isnan(v), inf += std::isinf(v);
  EXPECT_GT(nan, 0);
  EXPECT_EQ(inf, 0) << "a NaN became an infinity";
}

TEST(Engine, ConvolutionsMatchDenseAtEveryStrideDilationAndImageCount) {
  const std::vector<ConvGeometry> grid = {
      {3, 17, 19, 8, 7, 7, 2, 1, {3, 3, 3, 3}},    // a stem: 7x7 stride 2
      {16, 9, 9, 20, 3, 3, 1, 1, {1, 1, 1, 1}},    // 3x3 stride 1
      {16, 10, 11, 12, 3, 3, 2, 1, {1, 1, 1, 1}},  // 3x3 stride 2, odd width
      {12, 8, 8, 6, 1, 1, 2, 1, {0, 0, 0, 0}},     // 1x1 stride 2 (a downsample)
      {5, 12, 13, 7, 3, 3, 1, 2, {2, 0, 1, 3}},    // dilated, asymmetric pads
      {4, 11, 9, 5, 5, 5, 3, 1, {2, 1, 0, 2}},     // 5x5 stride 3
      {6, 6, 6, 4, 1, 1, 1, 1, {1, 1, 1, 1}},      // 1x1 with padding
      {2, 5, 40, 3, 3, 3, 1, 1, {0, 0, 0, 0}},     // no padding, a wide row
      {8, 4, 4, 16, 3, 3, 1, 1, {1, 1, 1, 1}},     // a 4x4 plane: 16 images fill 256 columns
      {8, 2, 2, 16, 1, 1, 1, 1, {0, 0, 0, 0}},     // 1x1 on a 2x2 plane
      {48, 24, 24, 64, 1, 1, 1, 1, {0, 0, 0, 0}},  // 1x1 read in place, large enough for threads
      {64, 15, 13, 16, 1, 1, 1, 1, {0, 0, 0, 0}},  // 1x1 narrowing: 195 positions split over the threads
      {32, 24, 24, 48, 3, 3, 1, 1, {1, 1, 1, 1}},  // 3x3 on padded planes, large enough for threads
      {64, 3, 3, 64, 3, 3, 1, 1, {1, 1, 1, 1}},    // gathered, 16 images large enough for threads
      // output rows of kConvRowsInPlaceFromWidth and more, multiplied straight into the output
      {3, 20, 230, 16, 7, 7, 2, 1, {3, 3, 3, 3}},  // a stem, 115 wide, large enough for threads
      {4, 6, 97, 6, 3, 3, 1, 1, {1, 1, 1, 1}},     // 97 wide, one row of 16 lanes past 96
      {3, 9, 200, 8, 3, 3, 2, 1, {0, 1, 2, 1}},    // stride 2, 100 wide, padding below only
  };
  uint32_t seed = 40;
  for (const ConvGeometry& g : grid)
    for (int threads : {1, 2}) {
      Pair p = executors(one_conv(g, seed), 0.7, threads);
      const std::string what =
          fmt::format("c{} k{} s{} d{} threads {}", g.c, g.kh, g.stride, g.dilation, threads);
      EXPECT_EQ(sparse_layers(*p.sparse, {{2, g.c, g.h, g.w}}), 1) << what;
      // One image runs alone; several whose planes are small run as one product (run_gathered),
      // in groups of at most kConvGatherMostPositions positions (300 2x2 planes: two groups).
      const bool tiny = g.h * g.w <= 4;
      for (int64_t images : {int64_t{1}, int64_t{2}, int64_t{16}, tiny ? int64_t{300} : int64_t{3}})
        expect_same_outputs(p, {test::random_f32({images, g.c, g.h, g.w}, seed + 7)},
                            what + fmt::format(" images {}", images));
      seed += 10;
    }
}

TEST(Engine, ConvolutionsOnFewPositionsRunEachAsOneSampleAndMatchDense) {
  // At most kConvPerPositionMost input positions in all (images x plane): each output position is
  // one sample on the one-sample layouts. More positions (or groups) take the batched product.
  struct Case {
    ConvGeometry g;
    std::vector<int64_t> images;
  };
  const std::vector<Case> cases = {
      {{64, 2, 2, 32, 3, 3, 1, 1, {1, 1, 1, 1}}, {1, 2}},  // VGG-11's 2x2 layers, one and two images
      {{16, 1, 1, 24, 1, 1, 1, 1, {1, 1, 1, 1}}, {1, 4}},  // a padded 1x1: 9 output positions from 1
      {{12, 2, 3, 20, 3, 3, 2, 1, {1, 1, 1, 1}}, {1}},     // stride 2 on a 2x3 plane
      {{8, 1, 7, 10, 1, 3, 1, 2, {0, 2, 0, 0}}, {1}},      // a dilated 1x3 window, uneven pads
  };
  uint32_t seed = 500;
  for (const Case& c : cases)
    for (int threads : {1, 2}) {
      const ConvGeometry& g = c.g;
      Pair p = executors(one_conv(g, seed), 0.6, threads);
      for (int64_t images : c.images) {
        const std::string what =
            fmt::format("c{} {}x{} k{}x{} images {} threads {}", g.c, g.h, g.w, g.kh, g.kw, images, threads);
        auto summary = p.sparse->summarize({{images, g.c, g.h, g.w}});
        ASSERT_TRUE(summary.ok()) << what;
        EXPECT_TRUE(summary->layers[0].sparse) << what;
        EXPECT_NE(summary->layers[0].layouts, "csr") << what << ": the one-sample layouts";
        expect_same_outputs(p, {test::random_f32({images, g.c, g.h, g.w}, seed + 7)}, what);
      }
      // Nine images of a 1x1 plane (9 positions) take the batched product.
      if (g.h * g.w == 1) {
        auto summary = p.sparse->summarize({{9, g.c, g.h, g.w}});
        ASSERT_TRUE(summary.ok());
        EXPECT_NE(summary->layers[0].layouts.find("csr"), std::string::npos) << summary->layers[0].layouts;
        expect_same_outputs(p, {test::random_f32({9, g.c, g.h, g.w}, seed)}, "nine images");
      }
      seed += 10;
    }
}

TEST(Engine, GroupedConvolutionsRunOnTheEngineAndMatchDense) {
  // Each group's filters read their own input channels: in place (1x1), from the padded planes
  // (3x3, strided, dilated; 1-D) and gathered (small planes); threads whose row ranges cross the
  // groups' borders.
  const std::vector<ConvGeometry> grid = {
      {16, 9, 9, 32, 3, 3, 1, 1, {1, 1, 1, 1}, 4},    // a grouped Tucker-2 core
      {12, 10, 11, 24, 3, 3, 2, 1, {1, 1, 1, 1}, 3},  // stride 2, odd width, 3 groups
      {48, 24, 24, 64, 1, 1, 1, 1, {0, 0, 0, 0}, 2},  // 1x1 read in place, large enough for threads
      {32, 24, 24, 48, 3, 3, 1, 1, {1, 1, 1, 1}, 4},  // padded planes, large enough for threads
      {64, 3, 3, 64, 3, 3, 1, 1, {1, 1, 1, 1}, 8},    // gathered, large enough for threads
      {8, 12, 13, 8, 3, 3, 1, 2, {2, 0, 1, 3}, 2},    // dilated, asymmetric pads
      {8, 4, 4, 4, 3, 3, 1, 1, {1, 1, 1, 1}, 2},      // a 4x4 plane, gathered even for one image
      {12, 1, 30, 24, 1, 5, 1, 1, {0, 2, 0, 2}, 3},   // a 1-D window (height 1)
      {8, 7, 100, 8, 3, 3, 1, 1, {1, 1, 1, 1}, 2},    // rows 100 wide, multiplied into the output
  };
  uint32_t seed = 700;
  for (const ConvGeometry& g : grid)
    for (int threads : {1, 2}) {
      Pair p = executors(one_conv(g, seed), 0.6, threads);
      const std::string what =
          fmt::format("c{} m{} k{} s{} groups {} threads {}", g.c, g.m, g.kh, g.stride, g.group, threads);
      EXPECT_EQ(sparse_layers(*p.sparse, {{1, g.c, g.h, g.w}}), 1) << what;
      for (int64_t images : {1, 3, 16})
        expect_same_outputs(p, {test::random_f32({images, g.c, g.h, g.w}, seed + 7)},
                            what + fmt::format(" images {}", images));
      seed += 10;
    }
  // Pruned in 4x1 blocks, groups of whole blocks run on the row blocks, each group's from its
  // channels.
  for (const ConvGeometry& g : {ConvGeometry{16, 9, 9, 32, 3, 3, 1, 1, {1, 1, 1, 1}, 4},
                                ConvGeometry{48, 24, 24, 64, 1, 1, 1, 1, {0, 0, 0, 0}, 2},
                                ConvGeometry{64, 3, 3, 64, 3, 3, 1, 1, {1, 1, 1, 1}, 8},
                                ConvGeometry{16, 5, 100, 32, 3, 3, 1, 1, {1, 1, 1, 1}, 4}}) {
    for (int threads : {1, 2}) {
      Pair p = executors(one_conv(g, seed), 0.75, threads, 1, BlockShape{4, 1});
      const std::string what =
          fmt::format("row blocks c{} k{} groups {} threads {}", g.c, g.kh, g.group, threads);
      auto summary = p.sparse->summarize({{1, g.c, g.h, g.w}});
      ASSERT_TRUE(summary.ok());
      EXPECT_EQ(summary->layers[0].layouts, "row blocks") << what;
      for (int64_t images : {1, 16})
        expect_same_outputs(p, {test::random_f32({images, g.c, g.h, g.w}, seed + 3)}, what);
      seed += 10;
    }
  }
  // Depthwise runs dense; so do groups of filters that are not whole row blocks when the weights
  // are pruned in 4x1 blocks (pruned one by one, they run on the engine).
  const ConvGeometry depthwise{8, 6, 6, 8, 3, 3, 1, 1, {1, 1, 1, 1}, 8};
  const ConvGeometry uneven{12, 6, 6, 18, 3, 3, 1, 1, {1, 1, 1, 1}, 3};
  for (const auto& [g, block, on_engine] :
       {std::tuple{depthwise, BlockShape{}, 0}, std::tuple{uneven, BlockShape{4, 1}, 0},
        std::tuple{uneven, BlockShape{}, 1}}) {
    for (int threads : {1, 2}) {
      Pair p = executors(one_conv(g, seed), 0.6, threads, 1, block);
      const std::string what =
          fmt::format("groups {} block rows {} threads {}", g.group, block.rows, threads);
      EXPECT_EQ(sparse_layers(*p.sparse, {{1, g.c, g.h, g.w}}), on_engine) << what;
      for (int64_t images : {1, 16})
        expect_same_outputs(p, {test::random_f32({images, g.c, g.h, g.w}, seed)}, what);
    }
  }
}

TEST(Engine, LayersPrunedInRowBlocksMatchDense) {
  // 4x1 blocks: convolutions (any image count) and batches run four rows at a time; output
  // channels not a multiple of four (7, 5, 10) leave a short last group.
  const std::vector<ConvGeometry> grid = {
      {16, 9, 9, 20, 3, 3, 1, 1, {1, 1, 1, 1}},    // 3x3 stride 1
      {16, 10, 11, 7, 3, 3, 2, 1, {1, 1, 1, 1}},   // 3x3 stride 2, 7 filters
      {48, 24, 24, 64, 1, 1, 1, 1, {0, 0, 0, 0}},  // 1x1 read in place, large enough for threads
      {64, 15, 13, 16, 1, 1, 1, 1, {0, 0, 0, 0}},  // 1x1 narrowing: 195 positions split over the threads
      {64, 3, 3, 64, 3, 3, 1, 1, {1, 1, 1, 1}},    // gathered images, large enough for threads
      {4, 11, 9, 5, 5, 5, 3, 1, {2, 1, 0, 2}},     // 5x5 stride 3, 5 filters
  };
  uint32_t seed = 900;
  for (const ConvGeometry& g : grid)
    for (int threads : {1, 2}) {
      Pair p = executors(one_conv(g, seed), 0.75, threads, 1, BlockShape{4, 1});
      const std::string what = fmt::format("c{} m{} k{} s{} threads {}", g.c, g.m, g.kh, g.stride, threads);
      for (int64_t images : {1, 3, 16})
        expect_same_outputs(p, {test::random_f32({images, g.c, g.h, g.w}, seed + 7)},
                            what + fmt::format(" images {}", images));
      seed += 10;
    }
  // The summary names the layouts each sparse layer runs on: the 4-filter convolution, batched over
  // its output positions, on row blocks.
  Pair blocked = executors(test::small_cnn(), 0.5, 1, 1, BlockShape{4, 1});
  auto summary = blocked.sparse->summarize({{1, 1, 8, 8}});
  ASSERT_TRUE(summary.ok());
  for (const LayerInfo& l : summary->layers) {
    EXPECT_EQ(l.layouts.empty(), !l.sparse) << l.name;
    if (l.op_type.starts_with("Conv")) {
      EXPECT_EQ(l.layouts, "row blocks");
    }
  }
  auto dense_summary = blocked.dense->summarize({{1, 1, 8, 8}});  // held: the loop reads its layers
  ASSERT_TRUE(dense_summary.ok());
  for (const LayerInfo& l : dense_summary->layers) EXPECT_EQ(l.layouts, "") << l.name;
  for (int threads : {1, 2}) {
    Pair p = executors(test::small_cnn(), 0.5, threads, 1, BlockShape{4, 1});
    for (int64_t batch : {1, 4, 17, 64})
      expect_same_outputs(p, {test::random_f32({batch, 1, 8, 8}, static_cast<uint32_t>(batch))},
                          fmt::format("small cnn threads {} batch {}", threads, batch));
  }
}

// x [N, 256] -> fc1 [300 x 256] -> Relu -> fc2 [10 x 300].
Model mlp() {
  Model m;
  m.source = "mlp";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 256}, {"N", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w1"] = test::random_f32({300, 256}, 21);
  m.initializers["b1"] = test::random_f32({300}, 22);
  m.initializers["w2"] = test::random_f32({10, 300}, 23);
  m.initializers["b2"] = test::random_f32({10}, 24);
  m.nodes.push_back(Node{"fc1", "Gemm", "", {"x", "w1", "b1"}, {"h"}, {{"transB", int64_t{1}}}});
  m.nodes.push_back(Node{"relu", "Relu", "", {"h"}, {"r"}, {}});
  m.nodes.push_back(Node{"fc2", "Gemm", "", {"r", "w2", "b2"}, {"y"}, {{"transB", int64_t{1}}}});
  return m;
}

int count_layers(Executor& ex, const Shape& input, const std::string& op_type) {
  auto s = ex.summarize({input});
  int n = 0;
  for (const auto& l : s->layers) n += l.op_type == op_type;
  return n;
}

TEST(Engine, APlanWithTooLittleWorkForThreadsRunsOnTheCallingThread) {
  // The MLP at 60% sparsity: about 31 K multiply-adds per sample, so one sample is below
  // ExecOptions::one_thread_below_work and 64 samples are above; both give the dense executor's
  // outputs. The same on a plan: one below the threshold opens no parallel region on its pool.
  CompressOptions o;
  o.float_fallback = false;
  o.all.prune.sparsity = 0.6;
  auto r = compress_model(mlp(), o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ExecOptions on{2}, off{2};
  off.sparse = false;
  Pair p{std::move(Executor::create(r->spw, on)).value(), std::move(Executor::create(r->spw, off)).value()};
  for (int64_t batch : {1, 64}) {
    auto summary = p.sparse->summarize({{batch, 256}});
    ASSERT_TRUE(summary.ok()) << summary.status().message();
    EXPECT_EQ(summary->one_thread, batch == 1) << "batch " << batch << ": " << summary->macs << " MACs";
    expect_same_outputs(p, {test::random_f32({batch, 256}, static_cast<uint32_t>(90 + batch))},
                        "batch " + std::to_string(batch));
  }
  ThreadPool pool(2);
  const Model model = mlp();  // the plan reads its weights in place
  for (int64_t batch : {1, 64}) {
    auto plan = Plan::build(model, {{batch, 256}}, pool, int64_t{1} << 30, nullptr, true, false,
                            ExecOptions{}.one_thread_below_work);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    EXPECT_EQ((*plan)->one_thread(), batch == 1) << (*plan)->work();
    const uint64_t regions = pool.regions();
    const std::vector<Tensor> x = {test::random_f32({batch, 256}, 95)};
    ASSERT_TRUE((*plan)->run(x, pool).ok());
    EXPECT_EQ(pool.regions() == regions, batch == 1) << "batch " << batch;
  }
}

TEST(Engine, BatchedProductsApplyBiasBetaAndActivationOnEveryThreadSplit) {
  // fc1 with Gemm's beta and a fused Relu: the epilogue runs on the transposed panel's rows, on one
  // thread (batch 4: too little work to split), split over the threads' own copies of one or two
  // panels (fewer panels than threads), and on whole panels per thread.
  Model m = mlp();
  m.nodes[0].attrs["beta"] = 0.5f;
  CompressOptions o;
  o.float_fallback = false;
  o.all.prune.sparsity = 0.6;
  o.all.bits = 4;
  auto r = compress_model(m, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  for (int threads : {1, 2, 3}) {
    ExecOptions on = test::threaded(threads), off = on;
    off.sparse = false;
    Pair p{std::move(Executor::create(r->spw, on)).value(), std::move(Executor::create(r->spw, off)).value()};
    ASSERT_EQ(count_layers(*p.sparse, {8, 256}, "Gemm+Relu"), 1);
    for (int64_t batch : {4, 5, 20, 32, 33, 64, 65, 100}) {
      Tensor x = test::random_f32({batch, 256}, static_cast<uint32_t>(60 + batch));
      for (int run = 0; run < 2; ++run)  // the second run on the same buffers: no state left behind
        expect_same_outputs(p, {x}, fmt::format("threads {} batch {} run {}", threads, batch, run));
    }
  }
}

TEST(Engine, FourBitLayersDenseEnoughForColumnTilesMatchDense) {
  // 40% of the weights kept, 4-bit codebooks: one sample runs on the column tiles where the CPU
  // has AVX-512 (on the CSC walk elsewhere); batches on the blocked CSR.
  CompressOptions o;
  o.float_fallback = false;  // small layers too: the point is to run them on the engine
  o.all.prune.sparsity = 0.6;
  o.all.bits = 4;
  auto r = compress_model(mlp(), o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto fc1 = std::find_if(r->spw.tensors.begin(), r->spw.tensors.end(),
                          [](const auto& t) { return t.name == "w1"; });
  ASSERT_NE(fc1, r->spw.tensors.end());
  auto engine = build_sparse_matrix(*fc1, 1);
  ASSERT_TRUE(engine.ok());
  EXPECT_EQ(!engine->tiles.empty(), sparse_kernels().isa == Isa::avx512) << engine->batch1_layout();
  for (int threads : {1, 2}) {
    ExecOptions on = test::threaded(threads), off = on;
    off.sparse = false;
    Pair p{std::move(Executor::create(r->spw, on)).value(), std::move(Executor::create(r->spw, off)).value()};
    EXPECT_EQ(sparse_layers(*p.sparse, {{1, 256}}), 2);
    // 130 and 300: several panels of 32 samples, one thread's each or all threads' in turn.
    for (int64_t batch : {1, 2, 5, 130, 300})
      expect_same_outputs(p, {test::random_f32({batch, 256}, static_cast<uint32_t>(30 + batch))},
                          "threads " + std::to_string(threads) + " batch " + std::to_string(batch));
    expect_same_outputs(p, {Tensor(DType::f32, {1, 256})}, "all-zero input");
  }
}

TEST(Engine, ReluAfterASparseLayerIsFusedIntoIt) {
  CompressOptions o;
  o.float_fallback = false;  // small layers too: the point is to run them on the engine
  o.all.prune.sparsity = 0.8;
  auto r = compress_model(mlp(), o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ExecOptions off{1};
  off.sparse = false;
  off.keep_values = true;  // the unfused dense graph
  Pair p{std::move(Executor::create(r->spw, ExecOptions{1})).value(),
         std::move(Executor::create(r->spw, off)).value()};
  EXPECT_EQ(count_layers(*p.sparse, {1, 256}, "Gemm+Relu"), 1);
  EXPECT_EQ(count_layers(*p.sparse, {1, 256}, "Relu"), 0);
  EXPECT_EQ(count_layers(*p.dense, {1, 256}, "Relu"), 1);
  for (int64_t batch : {1, 6}) {
    expect_same_outputs(p, {test::random_f32({batch, 256}, 42)}, "batch " + std::to_string(batch));
    Tensor negative = test::random_f32({batch, 256}, 41);
    for (float& v : negative.f32_span()) v = -std::fabs(v);
    expect_same_outputs(p, {negative}, "negative inputs, batch " + std::to_string(batch));
  }
  std::vector<Tensor> one = {test::random_f32({1, 256}, 43)};
  ASSERT_TRUE(p.sparse->run(one).ok());
  EXPECT_EQ(p.sparse->value("h"), nullptr) << "the pre-activation is not kept once fused";
  EXPECT_NE(p.sparse->value("y"), nullptr);
}

TEST(Engine, ReluIsNotFusedWhenThePreActivationIsReadElsewhere) {
  Model m = mlp();
  m.outputs.push_back(ValueInfo{"h"});  // the Gemm's own output is a graph output
  CompressOptions o;
  o.float_fallback = false;  // small layers too: the point is to run them on the engine
  o.all.prune.sparsity = 0.8;
  auto r = compress_model(m, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto ex = Executor::create(r->spw, ExecOptions{1});
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(count_layers(**ex, {1, 256}, "Relu"), 1);
  EXPECT_EQ(count_layers(**ex, {1, 256}, "Gemm+Relu"), 0);
}

TEST(Engine, ZeroAndDenseInputsAndAllPrunedLayers) {
  Pair p = executors(test::small_cnn(), 0.5, 2);
  expect_same_outputs(p, {Tensor(DType::f32, {2, 1, 8, 8})}, "all-zero input");
  Tensor ones(DType::f32, {5, 1, 8, 8});
  for (float& v : ones.f32_span()) v = 1.0f;
  expect_same_outputs(p, {ones}, "dense input");
  Pair empty = executors(test::small_cnn(), 0.9999, 2);
  expect_same_outputs(empty, {test::random_f32({4, 1, 8, 8}, 3)}, "every weight pruned");
}

TEST(Engine, GemmWithAFullBiasMatrixFallsBackToDense) {
  // C of shape [M, N] is valid ONNX but not a per-output bias: the layer must run dense, not fail.
  Model m;
  m.source = "full_c";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {2, 64}, {"", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w"] = test::random_f32({10, 64}, 1);
  m.initializers["c"] = test::random_f32({2, 10}, 2);
  m.nodes.push_back(Node{"fc", "Gemm", "", {"x", "w", "c"}, {"y"}, {{"transB", int64_t{1}}}});
  Pair p = executors(m, 0.7, 2);
  EXPECT_EQ(sparse_layers(*p.sparse, {{2, 64}}), 0);
  expect_same_outputs(p, {test::random_f32({2, 64}, 3)}, "full C");
}

// An LSTM with compressed W and R: at batch 1 the recurrent product goes sample by sample, at
// larger batches every step runs in the transposed layout on the CSR kernel; all three outputs.
TEST(Engine, LstmMatchesDenseAtEveryBatchSize) {
  const int64_t seq = 5, in = 24, hid = 32, G = 4 * hid;
  Model m;
  m.source = "lstm";
  m.opset = 14;
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {seq, -1, in}, {"", "N", ""}, true});
  for (const char* out : {"y", "y_h", "y_c"}) m.outputs.push_back(ValueInfo{out});
  m.initializers["w"] = test::random_f32({1, G, in}, 61);
  m.initializers["r"] = test::random_f32({1, G, hid}, 62);
  m.initializers["b"] = test::random_f32({1, 2 * G}, 63);
  m.nodes.push_back(
      Node{"lstm", "LSTM", "", {"x", "w", "r", "b"}, {"y", "y_h", "y_c"}, {{"hidden_size", hid}}});
  for (int threads : {1, 2}) {
    Pair p = executors(m, 0.7, threads);
    EXPECT_EQ(sparse_layers(*p.sparse, {{seq, 3, in}}), 1) << "the LSTM runs on the engine";
    for (int64_t batch : {1, 3, 16})
      expect_same_outputs(p, {test::random_f32({seq, batch, in}, static_cast<uint32_t>(batch))},
                          "threads " + std::to_string(threads) + " batch " + std::to_string(batch));
  }
}

TEST(Engine, CorpusModelsMatchDense) {
  std::string dir = SPARROW_CORPUS_DIR;
  std::ifstream in(dir + "/manifest.json");
  if (!in) GTEST_SKIP() << "no model corpus at " << dir;
  auto manifest = nlohmann::json::parse(in);
  if (manifest.contains("skipped")) GTEST_SKIP() << "model corpus unavailable";
  int checked = 0;
  for (const auto& c : manifest["cases"]) {
    std::string name = c["name"];
    if (name.find("lstm") == std::string::npos && name.find("mlp") == std::string::npos &&
        name.find("lenet5") == std::string::npos && name.find("batch_matmul") == std::string::npos &&
        name.find("view_flatten") == std::string::npos)
      continue;
    SCOPED_TRACE(name);
    auto model = load_onnx(dir + "/" + c["model"].get<std::string>());
    ASSERT_TRUE(model.ok());
    std::vector<Tensor> inputs;
    for (const auto& n : c["inputs"]) inputs.push_back(*read_npy(dir + "/" + n.get<std::string>()));
    Pair p = executors(*model, 0.6, 2);
    std::vector<Shape> shapes;
    for (const auto& t : inputs) shapes.push_back(t.shape());
    EXPECT_GT(sparse_layers(*p.sparse, shapes), 0) << "some layers run on the engine";
    if (name.find("lstm") != std::string::npos) {
      auto s = p.sparse->summarize(shapes);
      bool lstm_sparse = false;
      for (const auto& l : s->layers) lstm_sparse |= l.op_type == "LSTM" && l.sparse;
      EXPECT_TRUE(lstm_sparse) << "the LSTM runs on the engine";
      Tensor one(DType::f32, {1, 1, 28, 28});  // batch 1: the recurrent product goes sample by sample
      std::memcpy(one.raw(), inputs[0].raw(), one.bytes());
      expect_same_outputs(p, {one}, name + " batch 1");
    }
    expect_same_outputs(p, inputs, name);
    ++checked;
  }
  EXPECT_GE(checked, 6);
}

// x [4, batch, 8] (batch on axis 1, as an LSTM's [seq, batch, features]) -> MatMul [8, 6].
std::string sequence_model(const std::string& dir, const std::string& batch_dim_name,
                           Shape dims = {4, -1, 8}) {
  Model m;
  m.source = "seq";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, dims, {"", batch_dim_name, ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w"] = test::random_f32({8, 6}, 77);
  m.nodes.push_back(Node{"mm", "MatMul", "", {"x", "w"}, {"y"}, {}});
  CompressOptions o;
  o.float_fallback = false;  // small layers too: the point is to run them on the engine
  o.all.prune.sparsity = 0.5;
  auto r = compress_model(m, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  const std::string path = dir + "/seq_" + (batch_dim_name.empty() ? "unnamed" : batch_dim_name) +
                           (dims[1] < 0 ? "" : "_fixed") + ".spw";
  EXPECT_TRUE(write_spw(r->spw, path, true).ok());
  return path;
}

TEST(Engine, BenchFillsABatchAxisThatIsNotFirstAndProfilesLayers) {
#ifndef SPARROW_WITH_BENCHMARKS
  GTEST_SKIP() << "this build has no bench command (configure with -DSPARROW_WITH_BENCHMARKS=ON)";
#endif
  const std::string dir = test::temp_dir("bench_axis");
  auto r = test::run_cli("bench " + sequence_model(dir, "batch") +
                         " --batch 1,3 --threads 1,2 --repeats 2 --profile --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_NE(j["machine"].get<std::string>().find("hardware thread"), std::string::npos);
  ASSERT_EQ(j["runs"].size(), 4u) << "two batch sizes on each of two thread counts";
  std::vector<int> threads;
  for (const auto& run : j["runs"]) threads.push_back(run["threads"].get<int>());
  const int two = static_cast<int>(std::min(2u, std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_EQ(threads, (std::vector<int>{1, 1, two, two})) << "at most one thread per hardware thread";
  for (const auto& run : j["runs"]) {
    EXPECT_LE(run["sparrow_min_us"].get<double>(), run["sparrow_us"].get<double>());
    EXPECT_LE(run["sparrow_us"].get<double>(), run["sparrow_p90_us"].get<double>());
    EXPECT_LE(run["sparrow_p90_us"].get<double>(), run["sparrow_max_us"].get<double>());
    ASSERT_EQ(run["layers"].size(), 1u);
    EXPECT_EQ(run["layers"][0]["op"], "MatMul");
    EXPECT_GT(run["layers"][0]["sparrow_us"].get<double>(), 0);
  }
  // The global --threads before the command (how bench/compare_ort.py calls it) times that count.
  auto global =
      test::run_cli("--threads 1 bench " + sequence_model(dir, "batch") + " --batch 2 --repeats 1 --json");
  ASSERT_EQ(global.exit_code, 0) << global.output;
  auto g = nlohmann::json::parse(global.output.substr(global.output.find('{')));
  ASSERT_EQ(g["runs"].size(), 1u);
  EXPECT_EQ(g["runs"][0]["threads"], 1);
  auto unnamed = test::run_cli("bench " + sequence_model(dir, "") + " --batch 2 --repeats 1");
  EXPECT_EQ(unnamed.exit_code, 1);
  EXPECT_NE(unnamed.output.find("cannot tell from the batch"), std::string::npos) << unnamed.output;
  // Every dimension known: by default the model's own batch, and no other.
  const std::string fixed = sequence_model(dir, "batch", {3, 2, 8});
  auto own = test::run_cli("bench " + fixed + " --repeats 1 --json");
  ASSERT_EQ(own.exit_code, 0) << own.output;
  auto o = nlohmann::json::parse(own.output.substr(own.output.find('{')));
  ASSERT_EQ(o["runs"].size(), 1u);
  EXPECT_EQ(o["runs"][0]["batch"], 3);
  auto other = test::run_cli("bench " + fixed + " --batch 3,1 --repeats 1");
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.output.find("fixes the batch at 3; --batch 1 cannot run"), std::string::npos)
      << other.output;
}

TEST(Engine, InfoShowsDeclaredShapesBesideThePlannedOnes) {
  const std::string dir = test::temp_dir("info_declared");
  const std::string model = sequence_model(dir, "batch");
  auto r = test::run_cli("info --batch 3 --json " + model);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["inputs"][0]["declared_shape"], nlohmann::json::parse(R"([4, "batch", 8])"));
  EXPECT_EQ(j["inputs"][0]["shape"], nlohmann::json::parse("[4, 3, 8]"));
  EXPECT_TRUE(j["outputs"][0]["declared_shape"].is_null()) << "the model declares no output shape";
  EXPECT_EQ(j["outputs"][0]["shape"], nlohmann::json::parse("[4, 3, 6]"));
  auto text = test::run_cli("info --batch 3 " + model);
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("'x' [4, batch, 8] float32; [4, 3, 8] at batch 3"), std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("'y' [4, 3, 6] at batch 3"), std::string::npos) << text.output;
  // The layer under the weight name `inspect` and --layer use, beside its node.
  ASSERT_EQ(j["layers"].size(), 1u);
  EXPECT_EQ(j["layers"][0]["weight"], "w");
  EXPECT_EQ(j["layers"][0]["name"], "mm");
}

// The contract of `bench --eie --json` that scripts and docs read: per layer and configuration the
// times of Sparrow and its peers, and with several threads the one-thread time and the machine's
// scaling, timed in the same window; geometric means per configuration.
TEST(Engine, EieBenchJsonHasEveryPeerAndTheScalingMeasures) {
#ifndef SPARROW_WITH_BENCHMARKS
  GTEST_SKIP() << "this build has no benchmark harness (configure with -DSPARROW_WITH_BENCHMARKS=ON)";
#endif
  auto r = test::run_cli("bench --eie --layers NT-LSTM --batch 1,4 --threads 1,2 --repeats 3 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_NE(j["machine"].get<std::string>().find("hardware thread"), std::string::npos)
      << "the machine beside the figures";
  ASSERT_EQ(j["layers"].size(), 4u);
  for (const auto& l : j["layers"]) {
    EXPECT_EQ(l["name"], "NT-LSTM");
    for (const char* key : {"sparrow_us", "dense_us", "eigen_us", "plain_us"})
      EXPECT_GT(l[key].get<double>(), 0) << key;
    if (l["batch"] == 1) {
      EXPECT_EQ(l.contains("row_walk_from_active_share"), sparse_kernels().isa == Isa::avx512)
          << "sliced rows built";
    }
    bool several = l["threads"].get<int>() > 1;
    EXPECT_EQ(l.contains("one_thread_us"), several);
    if (several) {
      EXPECT_NEAR(l["speedup_vs_one_thread"].get<double>(),
                  l["one_thread_us"].get<double>() / l["sparrow_us"].get<double>(), 1e-9);
      EXPECT_GT(l["machine_scaling"].get<double>(), 0);
      EXPECT_NEAR(l["machine_scaling"].get<double>(),
                  2 * l["one_thread_us"].get<double>() / l["concurrent_one_thread_us"].get<double>(), 1e-9);
    }
  }
  for (const char* config :
       {"batch 1, 1 thread", "batch 1, 2 threads", "batch 4, 1 thread", "batch 4, 2 threads"})
    EXPECT_GT(j["geomean"][config]["speedup_vs_dense"].get<double>(), 0) << config;
}

TEST(Engine, ThreadsAreCappedAtTheHardwareThreads) {
  // Spinning workers beyond the cores only take turns (1024 threads made a 26 ms job take minutes).
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto ex = Executor::create(mlp(), ExecOptions{1024});
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ((*ex)->threads(), hardware);
  EXPECT_EQ((*std::move(Executor::create(mlp(), ExecOptions{1})))->threads(), 1);
}

TEST(Engine, AGraphOutputThatIsACompressedWeightIsDecompressed) {
  // Legal, if odd: the weight itself is an output. Planning used to look it up among computed values.
  CompressOptions o;
  o.float_fallback = false;  // small layers too: the point is to run them on the engine
  o.all.prune.sparsity = 0.8;
  auto r = compress_model(mlp(), o);
  ASSERT_TRUE(r.ok());
  r->spw.graph.outputs.push_back(ValueInfo{"w2"});
  auto ex = Executor::create(r->spw);
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  Tensor x = test::random_f32({1, 256}, 3);
  auto y = (*ex)->run({&x, 1});
  ASSERT_TRUE(y.ok()) << y.status().message();
  ASSERT_EQ(y->size(), 2u);
  auto w2 = std::find_if(r->spw.tensors.begin(), r->spw.tensors.end(),
                         [](const auto& t) { return t.name == "w2"; });
  ASSERT_NE(w2, r->spw.tensors.end());
  auto want = decompress(*w2);
  EXPECT_EQ(std::memcmp((*y)[1]->raw(), want->raw(), want->bytes()), 0);
}

}  // namespace
}  // namespace sparrow
