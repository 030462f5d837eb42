// A sparse pointwise expansion and the depthwise convolution that alone reads it, fused into one plan
// step run in bands of output rows (engine/ops/expand_depthwise.h): against the unfused graph on the
// dense executor over windows, strides, paddings, images and threads; where the plan must not fuse;
// and the expanded value's bytes gone from the plan.
#include <fmt/format.h>

#include "engine/ops/expand_depthwise.h"
#include "test_util.h"

namespace sparrow {
namespace {

struct Block {
  int64_t c, expanded, h, w, k, stride, dilation;
  std::vector<int64_t> pads;  // ONNX order: top, left, bottom, right
};

// x [N, c, h, w] -> (Relu unless `plain`) -> 1x1 Conv to `expanded` channels (bias) -> Clip(0, 6) unless
// `plain` -> depthwise k x k Conv (bias unless `plain`) -> Relu unless `plain` -> y; with `expansion_out`,
// the expansion's output is a graph output too.
Model inverted_block(const Block& b, bool plain, bool expansion_out, uint32_t seed) {
  Model m;
  m.source = "inverted_block";
  m.opset = 13;
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, b.c, b.h, b.w}, {"N", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  if (expansion_out) m.outputs.push_back(ValueInfo{"e"});
  m.initializers["we"] = test::random_f32({b.expanded, b.c, 1, 1}, seed);
  m.initializers["be"] = test::random_f32({b.expanded}, seed + 1);
  m.initializers["wd"] = test::random_f32({b.expanded, 1, b.k, b.k}, seed + 2);
  m.initializers["bd"] = test::random_f32({b.expanded}, seed + 3);
  m.initializers["lo"] = test::make_f32({}, {0.0f});
  m.initializers["hi"] = test::make_f32({}, {6.0f});
  // Without `plain`, a Relu first: the expansion then reads a value of the plan's arena, whose bytes
  // the fused step's output must not share.
  if (!plain) m.nodes.push_back(Node{"relu_in", "Relu", "", {"x"}, {"xr"}, {}});
  m.nodes.push_back(Node{"expand", "Conv", "", {plain ? "x" : "xr", "we", "be"}, {plain ? "e" : "ec"}, {}});
  if (!plain) m.nodes.push_back(Node{"clip", "Clip", "", {"ec", "lo", "hi"}, {"e"}, {}});
  std::vector<std::string> dw_inputs = {"e", "wd"};
  if (!plain) dw_inputs.push_back("bd");
  m.nodes.push_back(Node{"depthwise",
                         "Conv",
                         "",
                         dw_inputs,
                         {plain ? "y" : "d"},
                         {{"group", b.expanded},
                          {"pads", b.pads},
                          {"strides", std::vector<int64_t>{b.stride, b.stride}},
                          {"dilations", std::vector<int64_t>{b.dilation, b.dilation}}}});
  if (!plain) m.nodes.push_back(Node{"relu", "Relu", "", {"d"}, {"y"}, {}});
  return m;
}

struct Executors {
  std::unique_ptr<Executor> engine, unfused;
};

// The compressed model on the engine, and on the dense executor with every value kept (no pass,
// no fusion).
Executors executors(const Model& model, int threads) {
  const SpwModel spw = test::compressed_spw(model, 0.7);
  ExecOptions engine = test::threaded(threads), unfused = engine;
  unfused.sparse = false;
  unfused.keep_values = true;
  auto a = Executor::create(spw, engine), b = Executor::create(spw, unfused);
  EXPECT_TRUE(a.ok() && b.ok());
  return {std::move(a).value(), std::move(b).value()};
}

// Steps of the plan for `shape` whose op type joins two ops with '>' (a fused step).
int fused_steps(Executor& ex, const Shape& shape) {
  auto s = ex.summarize({shape});
  EXPECT_TRUE(s.ok()) << s.status().message();
  int n = 0;
  for (const auto& layer : s->layers) n += layer.op_type.find('>') != std::string::npos;
  return n;
}

void expect_matches(Executors& e, const Tensor& x, const std::string& what) {
  const std::vector<Tensor> inputs = {x};
  auto want = e.unfused->run(inputs);
  ASSERT_TRUE(want.ok()) << what << ": " << want.status().message();
  const Tensor expected = *(*want)[0];
  auto got = e.engine->run(inputs);
  ASSERT_TRUE(got.ok()) << what << ": " << got.status().message();
  ASSERT_EQ((*got)[0]->shape(), expected.shape()) << what;
  EXPECT_LT(test::max_relative_error(*(*got)[0], expected), 1e-5) << what;
}

TEST(ExpandDepthwise, FusedBlocksMatchTheUnfusedGraph) {
  const std::vector<Block> grid = {
      {8, 64, 32, 32, 3, 1, 1, {1, 1, 1, 1}},  // MobileNetV2's stride-1 block
      {6, 48, 45, 37, 3, 2, 1, {1, 1, 1, 1}},  // stride 2, odd sizes
      {8, 48, 41, 41, 3, 2, 1, {0, 0, 0, 0}},  // stride 2 without padding: the last row unread
      {8, 40, 50, 35, 3, 1, 1, {0, 0, 0, 0}},  // no padding
      {8, 64, 32, 33, 3, 1, 1, {0, 1, 2, 1}},  // padding below only: the last windows reach past
      {4, 32, 64, 40, 5, 1, 1, {2, 2, 2, 2}},  // 5x5 (the padded-plane kernels)
      {4, 36, 40, 48, 3, 1, 2, {2, 2, 2, 2}},  // dilated
      {8, 64, 32, 32, 3, 1, 1, {1, 1, 6, 1}},  // the last bands' windows read padding only
  };
  uint32_t seed = 40;
  for (const Block& b : grid)
    for (bool plain : {false, true}) {
      const std::string block =
          fmt::format("c{}->{} {}x{} k{} s{} d{} pads {}{}", b.c, b.expanded, b.h, b.w, b.k, b.stride,
                      b.dilation, fmt::join(b.pads, ","), plain ? " no activations" : "");
      for (int threads : {1, 2, 3}) {
        Executors e = executors(inverted_block(b, plain, false, seed), threads);
        EXPECT_EQ(fused_steps(*e.engine, {1, b.c, b.h, b.w}), 1) << block;
        for (int64_t images : {1, 2, 5})
          expect_matches(e, test::random_f32({images, b.c, b.h, b.w}, seed + 7),
                         fmt::format("{} threads {} images {}", block, threads, images));
      }
      ++seed;
    }
}

TEST(ExpandDepthwise, NotFusedWhereTheExpansionIsReadElsewhereSmallOrDense) {
  const Block big = {8, 64, 32, 32, 3, 1, 1, {1, 1, 1, 1}};
  {  // the expansion is a graph output as well: it must be written
    Executors e = executors(inverted_block(big, true, true, 3), 2);
    EXPECT_EQ(fused_steps(*e.engine, {1, 8, 32, 32}), 0);
    const std::vector<Tensor> inputs = {test::random_f32({2, 8, 32, 32}, 4)};
    auto got = e.engine->run(inputs);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_EQ((*got)[1]->shape(), (Shape{2, 64, 32, 32}));
  }
  {  // another node reads the expansion too
    Model m = inverted_block(big, false, false, 10);
    m.nodes.push_back(Node{"other", "Relu", "", {"e"}, {"z"}, {}});
    m.outputs.push_back(ValueInfo{"z"});
    Executors e = executors(m, 2);
    EXPECT_EQ(fused_steps(*e.engine, {1, 8, 32, 32}), 0);
    expect_matches(e, test::random_f32({2, 8, 32, 32}, 11), "a second reader");
  }
  {  // an expansion below kExpandFuseFromBytes per image
    const Block small = {8, 32, 24, 24, 3, 1, 1, {1, 1, 1, 1}};
    ASSERT_LT(32 * 24 * 24 * 4, kExpandFuseFromBytes);
    Executors e = executors(inverted_block(small, false, false, 5), 2);
    EXPECT_EQ(fused_steps(*e.engine, {1, 8, 24, 24}), 0);
  }
  {  // fewer than kExpandFuseFromOutputRows output rows (stride 2 over 30 rows), a wide plane
    const Block short_rows = {8, 64, 30, 64, 3, 2, 1, {1, 1, 1, 1}};
    Executors e = executors(inverted_block(short_rows, false, false, 6), 2);
    EXPECT_EQ(fused_steps(*e.engine, {1, 8, 30, 64}), 0);
    expect_matches(e, test::random_f32({1, 8, 30, 64}, 7), "15 output rows");
  }
  {  // the dense executor keeps both convolutions
    Executors e = executors(inverted_block(big, false, false, 8), 2);
    EXPECT_EQ(fused_steps(*e.unfused, {1, 8, 32, 32}), 0);
  }
}

TEST(ExpandDepthwise, TheExpandedValueTakesNoBytes) {
  const Block b = {8, 64, 32, 32, 3, 2, 1, {1, 1, 1, 1}};
  const SpwModel spw = test::compressed_spw(inverted_block(b, true, false, 9), 0.7);
  ExecOptions engine_options = test::threaded(1), dense_options = engine_options;
  dense_options.sparse = false;
  auto engine = Executor::create(spw, engine_options), dense = Executor::create(spw, dense_options);
  ASSERT_TRUE(engine.ok() && dense.ok());
  auto fused = (*engine)->summarize({{3, 8, 32, 32}});
  auto unfused = (*dense)->summarize({{3, 8, 32, 32}});
  ASSERT_TRUE(fused.ok() && unfused.ok());
  const int64_t expanded = 3 * 64 * 32 * 32 * 4, output = 3 * 64 * 16 * 16 * 4;
  EXPECT_EQ(unfused->activation_bytes_unshared, expanded + output);
  EXPECT_EQ(fused->activation_bytes_unshared, output);
  EXPECT_EQ(fused->layers.size(), 1u);
  EXPECT_EQ(fused->layers[0].op_type, "Conv>Conv");
  EXPECT_EQ(fused->layers[0].params, 64 * 8 + 64 + 64 * 9);  // both weights and the expansion's bias
  const int64_t depthwise_macs = 3 * 64 * 16 * 16 * 9, dense_expansion_macs = 3 * 64 * 8 * 32 * 32;
  EXPECT_GT(fused->layers[0].macs, depthwise_macs);  // and the expansion's non-zeros over the positions
  EXPECT_LT(fused->layers[0].macs, depthwise_macs + dense_expansion_macs);
  EXPECT_EQ(unfused->macs, depthwise_macs + dense_expansion_macs);
}

}  // namespace
}  // namespace sparrow
