// fuse_residual_adds: a Conv whose output only an Add reads takes the Add's other operand into its
// epilogue. The pass's choices on small graphs, and the fused convolutions on every path (dense and
// compressed, depthwise, grouped, gathered, per position, pointwise, direct) against the unfused graph.
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "engine/epilogue.h"
#include "engine/graph_passes.h"
#include "test_util.h"

namespace sparrow {
namespace {

Node conv_node(const std::string& name, const std::string& x, const std::string& w, const std::string& y) {
  return Node{name, "Conv", "", {x, w}, {y}, {{"pads", std::vector<int64_t>{1, 1, 1, 1}}}};
}

// x [1, 4, 6, 6] -> conv a -> Relu -> conv b, both 3x3 with 4 filters, then Add(b, `residual`) -> Relu.
Model block(const std::string& residual) {
  Model m;
  m.source = "block";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {1, 4, 6, 6}, {}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["wa"] = test::random_f32({4, 4, 3, 3}, 1);
  m.initializers["wb"] = test::random_f32({4, 4, 3, 3}, 2);
  m.initializers["k"] = test::random_f32({1, 4, 6, 6}, 3);
  m.nodes = {conv_node("a", "x", "wa", "ca"), Node{"ra", "Relu", "", {"ca"}, {"ha"}, {}},
             conv_node("b", "ha", "wb", "cb"), Node{"add", "Add", "", {"cb", residual}, {"s"}, {}},
             Node{"relu", "Relu", "", {"s"}, {"y"}, {}}};
  return m;
}

int count_ops(const Model& m, const std::string& op_type) {
  int n = 0;
  for (const auto& node : m.nodes) n += node.op_type == op_type;
  return n;
}

TEST(ResidualAdd, TheConvTakesAValueFormedBeforeItAndItsActivation) {
  for (const char* residual : {"x", "ha", "ca"}) {
    Model m = block(residual);
    // a + ra (unless the Add reads ca too), b + add, then + relu.
    const bool a_read_twice = std::string(residual) == "ca";
    EXPECT_EQ(run_graph_passes(m, test::initializer_shapes(m)), a_read_twice ? 2 : 3) << residual;
    ASSERT_EQ(m.nodes.size(), a_read_twice ? 3u : 2u) << residual;
    const Node& b = m.nodes.back();
    EXPECT_EQ(b.inputs, (std::vector<std::string>{"ha", "wb", "", residual})) << "the bias stays omitted";
    EXPECT_EQ(b.outputs, std::vector<std::string>{"y"});
    EXPECT_TRUE(b.attrs.count(kFusedResidualAttr));
    auto act = fused_activation(b);
    ASSERT_TRUE(act.ok());
    EXPECT_EQ(act->lo, 0.0f);
  }
}

TEST(ResidualAdd, NotFusedWhereTheOperandIsConstantLaterOrTheSameValue) {
  Model constant = block("k");
  // Listed among the graph inputs too, as exporters of IR version 3 write initializers.
  constant.inputs.push_back(ValueInfo{"k", ElemType::f32, {1, 4, 6, 6}, {}, true});
  EXPECT_EQ(fuse_residual_adds(constant, test::initializer_shapes(constant)), 0)
      << "a constant is a bias, not a residual";
  Model twice = block("cb");
  EXPECT_EQ(fuse_residual_adds(twice, test::initializer_shapes(twice)), 0);
  Model read_elsewhere = block("x");
  read_elsewhere.outputs.push_back(ValueInfo{"cb"});
  EXPECT_EQ(fuse_residual_adds(read_elsewhere, test::initializer_shapes(read_elsewhere)), 0);

  // A downsampling block: Add(b's output, d's output) with d after b. b cannot take d's output
  // (not formed when b runs); d takes b's.
  Model down = block("cd");
  down.initializers["wd"] = test::random_f32({4, 4, 1, 1}, 4);
  down.nodes.insert(down.nodes.begin() + 3, Node{"d", "Conv", "", {"x", "wd"}, {"cd"}, {}});
  EXPECT_EQ(fuse_residual_adds(down, test::initializer_shapes(down)), 1);
  EXPECT_EQ(count_ops(down, "Add"), 0);
  const Node& d = down.nodes[3];
  EXPECT_EQ(d.name, "d");
  EXPECT_EQ(d.inputs.back(), "cb");
  EXPECT_EQ(d.outputs[0], "s");
}

// One Conv of the given geometry, its output plus `r` (a second graph input of shape r_shape, -1:
// the batch), then optionally Relu.
struct Geometry {
  int64_t c, h, w, m, k, stride, pad, group;
};

Model conv_plus(const Geometry& g, Shape r_shape, bool relu, bool conv_first, uint32_t seed) {
  Model m;
  m.source = "conv_plus";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, g.c, g.h, g.w}, {"N", "", "", ""}, true});
  std::vector<std::string> dims(r_shape.size());
  if (r_shape[0] < 0) dims[0] = "N";
  m.inputs.push_back(ValueInfo{"r", ElemType::f32, r_shape, dims, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w"] = test::random_f32({g.m, g.c / g.group, g.k, g.k}, seed);
  m.initializers["b"] = test::random_f32({g.m}, seed + 1);
  const std::vector<int64_t> pads(4, g.pad);
  m.nodes.push_back(
      Node{"conv",
           "Conv",
           "",
           {"x", "w", "b"},
           {"c"},
           {{"pads", pads}, {"strides", std::vector<int64_t>{g.stride, g.stride}}, {"group", g.group}}});
  m.nodes.push_back(Node{"add", "Add", "", {conv_first ? "c" : "r", conv_first ? "r" : "c"}, {"s"}, {}});
  if (relu)
    m.nodes.push_back(Node{"relu", "Relu", "", {"s"}, {"y"}, {}});
  else
    m.nodes.back().outputs = {"y"};
  return m;
}

int64_t out_size(const Geometry& g, int64_t in) {
  return (in + 2 * g.pad - g.k) / g.stride + 1;
}

// The compressed engine, the dense executor (both fused) and the unfused dense graph.
struct Executors {
  std::unique_ptr<Executor> sparse, dense, unfused;
};

Executors executors(const Model& model, int threads) {
  const SpwModel spw = test::compressed_spw(model, 0.7);
  ExecOptions sparse = test::threaded(threads), dense = sparse, unfused = sparse;
  dense.sparse = unfused.sparse = false;
  unfused.keep_values = true;
  auto a = Executor::create(spw, sparse), b = Executor::create(spw, dense),
       c = Executor::create(spw, unfused);
  EXPECT_TRUE(a.ok() && b.ok() && c.ok());
  return {std::move(a).value(), std::move(b).value(), std::move(c).value()};
}

int layers_of(Executor& ex, const std::vector<Shape>& shapes, const std::string& op_type) {
  auto s = ex.summarize(shapes);
  EXPECT_TRUE(s.ok()) << s.status().message();
  int n = 0;
  for (const auto& l : s->layers) n += l.op_type == op_type;
  return n;
}

// Runs both fused executors against the unfused graph: the dense executor computes the same sums in
// the same order (bit for bit), the engine within 1e-5.
void expect_fused_matches(Executors& e, const std::vector<Tensor>& inputs, const std::string& what) {
  auto want = e.unfused->run(inputs);
  ASSERT_TRUE(want.ok()) << what << ": " << want.status().message();
  const Tensor expected = *want->back();
  auto dense = e.dense->run(inputs);
  ASSERT_TRUE(dense.ok()) << what << ": " << dense.status().message();
  ASSERT_EQ((*dense)[0]->shape(), expected.shape()) << what;
  EXPECT_EQ(test::max_relative_error(*(*dense)[0], expected), 0.0) << what << " (dense)";
  auto sparse = e.sparse->run(inputs);
  ASSERT_TRUE(sparse.ok()) << what << ": " << sparse.status().message();
  ASSERT_EQ((*sparse)[0]->shape(), expected.shape()) << what;
  EXPECT_LT(test::max_relative_error(*(*sparse)[0], expected), 1e-5) << what << " (engine)";
}

TEST(ResidualAdd, FusedConvolutionsMatchTheUnfusedGraphOnEveryPath) {
  const std::vector<Geometry> grid = {
      {16, 9, 9, 16, 3, 1, 1, 1},     // direct on padded planes; dense im2col
      {16, 10, 11, 12, 3, 2, 1, 1},   // stride 2
      {8, 4, 4, 16, 3, 1, 1, 1},      // a 4x4 plane: gathered images
      {32, 2, 2, 16, 3, 1, 1, 1},     // at most 8 positions: each one sample
      {48, 24, 24, 64, 1, 1, 0, 1},   // pointwise, read in place, large enough for threads
      {64, 15, 13, 16, 1, 1, 0, 1},   // pointwise narrowing: positions split over the threads
      {12, 8, 8, 6, 1, 2, 0, 1},      // 1x1 stride 2
      {8, 6, 6, 8, 3, 1, 1, 2},       // grouped
      {16, 7, 7, 16, 3, 1, 1, 16},    // depthwise 3x3
      {32, 10, 10, 32, 5, 1, 2, 32},  // depthwise 5x5, channels in lanes
      {3, 20, 20, 3, 3, 2, 1, 3},     // depthwise, a plane at a time
  };
  uint32_t seed = 10;
  for (const Geometry& g : grid)
    for (int threads : {1, 2})
      for (bool relu : {true, false}) {
        const int64_t oh = out_size(g, g.h), ow = out_size(g, g.w);
        Executors e = executors(conv_plus(g, {-1, g.m, oh, ow}, relu, seed % 2 == 0, seed), threads);
        const std::string what = fmt::format("c{} {}x{} k{} s{} group {} threads {}{}", g.c, g.h, g.w, g.k,
                                             g.stride, g.group, threads, relu ? " relu" : "");
        const std::string fused = relu ? "Conv+Add+Relu" : "Conv+Add";
        EXPECT_EQ(layers_of(*e.sparse, {{1, g.c, g.h, g.w}, {1, g.m, oh, ow}}, fused), 1) << what;
        EXPECT_EQ(layers_of(*e.dense, {{1, g.c, g.h, g.w}, {1, g.m, oh, ow}}, fused), 1) << what;
        EXPECT_EQ(layers_of(*e.sparse, {{1, g.c, g.h, g.w}, {1, g.m, oh, ow}}, "Add"), 0) << what;
        for (int64_t images : {1, 3, 17}) {
          Tensor r = test::random_f32({images, g.m, oh, ow}, seed + 5);
          r.f32_data()[r.numel() - 1] = std::numeric_limits<float>::infinity();
          expect_fused_matches(e, {test::random_f32({images, g.c, g.h, g.w}, seed + 3), r},
                               what + fmt::format(" images {}", images));
        }
        ++seed;
      }
}

TEST(ResidualAdd, AResidualThatBroadcastsIsAddedAsTheAddWould) {
  for (const Geometry& g : {Geometry{16, 9, 9, 16, 3, 1, 1, 1}, Geometry{16, 7, 7, 16, 3, 1, 1, 16},
                            Geometry{32, 3, 3, 16, 3, 1, 1, 1}}) {
    const int64_t oh = out_size(g, g.h), ow = out_size(g, g.w);
    const std::string what = fmt::format("c{} k{} group {}", g.c, g.k, g.group);
    // One value per channel, the same for every image.
    Executors per_channel = executors(conv_plus(g, {1, g.m, 1, 1}, true, true, 60), 2);
    for (int64_t images : {1, 3})
      expect_fused_matches(
          per_channel, {test::random_f32({images, g.c, g.h, g.w}, 61), test::random_f32({1, g.m, 1, 1}, 62)},
          what + fmt::format(" per channel, images {}", images));
    // A residual with more images than the input: the output takes its shape.
    Executors wider = executors(conv_plus(g, {3, g.m, oh, ow}, false, false, 63), 1);
    expect_fused_matches(wider,
                         {test::random_f32({1, g.c, g.h, g.w}, 64), test::random_f32({3, g.m, oh, ow}, 65)},
                         what + " three residuals for one image");
  }
}

TEST(ResidualAdd, AResidualThatDoesNotBroadcastIsAnErrorNamingTheNode) {
  const Geometry g{16, 9, 9, 16, 3, 1, 1, 1};
  Executors e = executors(conv_plus(g, {-1, -1, -1, -1}, true, true, 70), 1);
  const std::vector<Tensor> inputs = {test::random_f32({1, g.c, g.h, g.w}, 71),
                                      test::random_f32({1, g.m, 8, 9}, 72)};
  for (Executor* ex : {e.sparse.get(), e.dense.get(), e.unfused.get()}) {
    auto y = ex->run(inputs);
    ASSERT_FALSE(y.ok());
    EXPECT_NE(y.status().message().find("node '"), std::string::npos) << y.status().message();
  }
}

TEST(ResidualAdd, AConvWithAFourthInputAndNoResidualAttributeIsRefused) {
  Model m = block("x");
  m.nodes[2].inputs = {"ha", "wb", "", "x"};  // as a file might hold it: no sparrow.residual
  auto ex = Executor::create(m, ExecOptions{1});
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  const std::vector<Tensor> x = {test::random_f32({1, 4, 6, 6}, 1)};
  auto y = (*ex)->run(x);
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.status().message().find("node 'b' (Conv): takes at most 3 inputs"), std::string::npos)
      << y.status().message();
}

// Conv(x) + r run whole and in chunks of one sample: the same outputs (the split is refused
// where a chunk would not compute its own samples).
void expect_chunks_match_whole(const Model& m, const std::vector<Tensor>& inputs, const std::string& what) {
  ExecOptions chunks{1}, whole{1};
  chunks.samples_per_chunk = 1;
  whole.samples_per_chunk = -1;
  auto a = Executor::create(m, chunks), b = Executor::create(m, whole);
  ASSERT_TRUE(a.ok() && b.ok());
  auto want = (*b)->run(inputs);
  ASSERT_TRUE(want.ok()) << what << ": " << want.status().message();
  const Tensor expected = *(*want)[0];
  auto got = (*a)->run(inputs);
  ASSERT_TRUE(got.ok()) << what << ": " << got.status().message();
  ASSERT_EQ((*got)[0]->shape(), expected.shape()) << what;
  EXPECT_EQ(test::max_relative_error(*(*got)[0], expected), 0.0) << what;
}

TEST(ResidualAdd, TheBatchSplitRefusesResidualsThatAreNotPerSample) {
  {  // A residual known at plan time with two samples of its own (not an initializer: fused).
    Model m;
    m.source = "constant_residual";
    m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 4, 6, 6}, {"N", "", "", ""}, true});
    m.outputs.push_back(ValueInfo{"y"});
    m.initializers["w"] = test::random_f32({4, 4, 3, 3}, 1);
    m.initializers["k"] = test::random_f32({2, 4, 6, 6}, 2);
    m.nodes = {Node{"id", "Identity", "", {"k"}, {"kk"}, {}}, conv_node("conv", "x", "w", "c"),
               Node{"add", "Add", "", {"c", "kk"}, {"y"}, {}}};
    expect_chunks_match_whole(m, {test::random_f32({2, 4, 6, 6}, 3)}, "a constant [2, 4, 6, 6] residual");
  }
  {  // A 1-D convolution [N, 4, 8] plus [N, 1, 4, 8]: the output [N, N, 4, 8] mixes the samples.
    Model m;
    m.source = "rank_raising_residual";
    m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 4, 8}, {"N", "", ""}, true});
    m.inputs.push_back(ValueInfo{"r", ElemType::f32, {-1, 1, 4, 8}, {"N", "", "", ""}, true});
    m.outputs.push_back(ValueInfo{"y"});
    m.initializers["w"] = test::random_f32({4, 4, 3}, 1);
    m.nodes = {Node{"conv", "Conv", "", {"x", "w"}, {"c"}, {{"pads", std::vector<int64_t>{1, 1}}}},
               Node{"add", "Add", "", {"c", "r"}, {"y"}, {}}};
    expect_chunks_match_whole(m, {test::random_f32({2, 4, 8}, 5), test::random_f32({2, 1, 4, 8}, 6)},
                              "a rank-raising residual");
  }
  // A per-sample residual splits and matches.
  Model per_sample = block("x");
  per_sample.inputs[0].dims = {-1, 4, 6, 6};
  per_sample.inputs[0].dim_names = {"N", "", "", ""};
  expect_chunks_match_whole(per_sample, {test::random_f32({5, 4, 6, 6}, 7)}, "a per-sample residual");
}

TEST(ResidualAdd, ResidualsFromEarlierNodesMatchTheUnfusedGraph) {
  for (int threads : {1, 2})
    for (const char* residual : {"x", "ha", "ca"}) {
      // block(), then a 1x1 Conv whose output joins its own input (t + Conv(t)), both concatenated.
      Model m = block(residual);
      m.inputs[0].dims = {-1, 4, 6, 6};
      m.inputs[0].dim_names = {"N", "", "", ""};
      m.initializers["wc"] = test::random_f32({4, 4, 1, 1}, 5);
      m.nodes.back().outputs = {"t"};
      m.nodes.push_back(Node{"c", "Conv", "", {"t", "wc"}, {"cc"}, {}});
      m.nodes.push_back(Node{"add2", "Add", "", {"t", "cc"}, {"u"}, {}});
      m.nodes.push_back(Node{"cat", "Concat", "", {"t", "u"}, {"y"}, {{"axis", int64_t{1}}}});
      ExecOptions fused = test::threaded(threads), unfused = fused;
      unfused.keep_values = true;
      auto a = Executor::create(m, fused), b = Executor::create(m, unfused);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(layers_of(**a, {{1, 4, 6, 6}}, "Conv+Add"), 1) << residual;
      for (int64_t n : {1, 2, 5, 16}) {
        Tensor x = test::random_f32({n, 4, 6, 6}, 9);
        x.f32_data()[3] = std::numeric_limits<float>::quiet_NaN();  // through a Relu in both graphs
        const std::vector<Tensor> in = {x};
        auto want = b.value()->run(in);
        ASSERT_TRUE(want.ok()) << want.status().message();
        const Tensor expected = *want->back();
        auto got = a.value()->run(in);
        ASSERT_TRUE(got.ok()) << got.status().message();
        const Tensor& y = *(*got)[0];
        ASSERT_EQ(y.shape(), expected.shape());
        for (int64_t i = 0; i < y.numel(); ++i) {
          const float g = y.f32_data()[i], e = expected.f32_data()[i];
          ASSERT_TRUE(g == e || (std::isnan(g) && std::isnan(e)))
              << residual << " images " << n << " threads " << threads << " at " << i << ": " << g << " vs "
              << e;
        }
      }
    }
}

}  // namespace
}  // namespace sparrow
