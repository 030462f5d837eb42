// Graph passes (bias and activation fusion) and the memory plan (buffers shared by liveness, shape-only
// ops as views): fused graphs against the unfused dense executor, freed buffers poisoned.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/epilogue.h"
#include "engine/graph_passes.h"
#include "engine/plan.h"
#include "test_util.h"

namespace sparrow {
namespace {

int count_ops(const Model& m, const std::string& op_type) {
  int n = 0;
  for (const auto& node : m.nodes) n += node.op_type == op_type;
  return n;
}

// x [N, 64] -> MatMul W1 -> Add b1 -> Relu -> MatMul W2 -> Add b2 -> (+ x residual) -> Relu -> Clip(0, 6)
// -> Flatten -> Reshape -> y; the residual Add reads x again.
Model residual_mlp() {
  Model m;
  m.source = "residual_mlp";
  m.opset = 13;
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 64}, {"N", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w1"] = test::random_f32({64, 48}, 1);
  m.initializers["b1"] = test::random_f32({48}, 2);
  m.initializers["w2"] = test::random_f32({48, 64}, 3);
  m.initializers["b2"] = test::random_f32({64}, 4);
  m.initializers["lo"] = Tensor::scalar_f32(0.0f);
  m.initializers["hi"] = Tensor::scalar_f32(0.5f);
  m.initializers["shape"] = test::make_i64({2}, {-1, 64});
  m.nodes.push_back(Node{"mm1", "MatMul", "", {"x", "w1"}, {"h1"}, {}});
  m.nodes.push_back(Node{"add1", "Add", "", {"b1", "h1"}, {"a1"}, {}});
  m.nodes.push_back(Node{"relu1", "Relu", "", {"a1"}, {"r1"}, {}});
  m.nodes.push_back(Node{"mm2", "MatMul", "", {"r1", "w2"}, {"h2"}, {}});
  m.nodes.push_back(Node{"add2", "Add", "", {"h2", "b2"}, {"a2"}, {}});
  m.nodes.push_back(Node{"res", "Add", "", {"a2", "x"}, {"s"}, {}});
  m.nodes.push_back(Node{"relu2", "Relu", "", {"s"}, {"r2"}, {}});
  m.nodes.push_back(Node{"clip", "Clip", "", {"r2", "lo", "hi"}, {"c"}, {}});
  m.nodes.push_back(Node{"flat", "Flatten", "", {"c"}, {"f"}, {}});
  m.nodes.push_back(Node{"reshape", "Reshape", "", {"f", "shape"}, {"y"}, {}});
  return m;
}

TEST(GraphPasses, FuseMatMulBiasAndActivationsIntoTheirProducers) {
  Model m = residual_mlp();
  EXPECT_EQ(fuse_matmul_bias(m, test::initializer_shapes(m)), 2);
  EXPECT_EQ(count_ops(m, "Add"), 1) << "only the residual Add is left";
  EXPECT_EQ(fuse_activations(m, test::initializer_shapes(m)), 2)
      << "relu1 into mm1, relu2 into the residual Add";
  EXPECT_EQ(count_ops(m, "Relu"), 0);
  EXPECT_EQ(count_ops(m, "Clip"), 1) << "the Clip reads an output that already carries an activation";
  EXPECT_TRUE(m.validate().ok());
  ASSERT_EQ(m.nodes[0].op_type, "MatMul");
  EXPECT_EQ(m.nodes[0].inputs.size(), 3u);
  EXPECT_EQ(m.nodes[0].outputs[0], "r1");
}

TEST(GraphPasses, LeaveValuesOthersReadOrTheGraphOutputs) {
  Model m = residual_mlp();
  m.outputs.push_back(ValueInfo{"h1"});                           // the MatMul's output is wanted as it is
  m.nodes.push_back(Node{"tap", "Relu", "", {"a2"}, {"t"}, {}});  // a2 gets a second reader
  m.outputs.push_back(ValueInfo{"t"});
  EXPECT_EQ(fuse_matmul_bias(m, test::initializer_shapes(m)), 1) << "mm2 + add2 only: h1 is a graph output";
  EXPECT_EQ(fuse_activations(m, test::initializer_shapes(m)), 2)
      << "add1 + relu1, res + relu2; a2 has two readers";
  EXPECT_EQ(count_ops(m, "Relu"), 1) << "only the tap's Relu remains";
  EXPECT_TRUE(m.validate().ok());
  // The Clip reading the residual Add directly: fused with constant bounds, not with bounds known
  // only at run time.
  for (bool constant_bounds : {true, false}) {
    Model c = residual_mlp();
    c.nodes.erase(c.nodes.begin() + 6);  // relu2
    c.nodes[6].inputs[0] = "s";
    if (!constant_bounds) {
      c.inputs.push_back(ValueInfo{"hi_in", ElemType::f32, {}, {}, true});
      c.nodes[6].inputs[2] = "hi_in";
    }
    fuse_activations(c, test::initializer_shapes(c));
    EXPECT_EQ(count_ops(c, "Clip"), constant_bounds ? 0 : 1);
  }
  // Crossed or NaN bounds are left to the Clip op, which reports them.
  for (float hi : {-1.0f, std::nanf("")}) {
    Model c = residual_mlp();
    c.nodes.erase(c.nodes.begin() + 6);
    c.nodes[6].inputs[0] = "s";
    c.initializers["hi"] = Tensor::scalar_f32(hi);
    fuse_activations(c, test::initializer_shapes(c));
    EXPECT_EQ(count_ops(c, "Clip"), 1) << hi;
  }
}

TEST(GraphPasses, FusedActivationsApplyAsTheReluAndClipOpsDo) {
  // apply() over a buffer gives, element by element, what one value's activation gives: NaN becomes
  // the lower bound, infinities and values at the bounds are kept or capped, at every length.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  const std::vector<float> values = {nan, -inf, inf, -1.0f, 0.0f, -0.0f, 0.5f, 6.0f, 6.5f, 1e30f, -1e-30f};
  for (const Activation act :
       {Activation{0.0f, inf}, Activation{0.0f, 6.0f}, Activation{-1.0f, 1.0f}, Activation{}})
    for (int64_t n = 0; n <= 37; ++n) {
      std::vector<float> y(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        y[i] = values[static_cast<size_t>(i) % values.size()] * (i % 3 ? 1.0f : 2.0f);
      std::vector<float> want = y;
      for (float& v : want) v = act(v);
      act.apply(y.data(), n);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_TRUE(y[i] == want[i] || (std::isnan(y[i]) && std::isnan(want[i])))
            << "[" << act.lo << ", " << act.hi << "] n " << n << " at " << i << ": " << y[i] << " vs "
            << want[i];
    }
  EXPECT_EQ(Activation({0.0f, 6.0f})(nan), 0.0f) << "Relu and Clip make NaN their lower bound";
}

void expect_close(std::span<const Tensor* const> a, std::span<const Tensor* const> b, double tol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i]->shape(), b[i]->shape()) << what;
    EXPECT_LE(test::max_relative_error(*a[i], *b[i]), tol) << what << " output " << i;
  }
}

TEST(GraphPasses, FusedGraphMatchesTheUnfusedDenseExecutor) {
  ExecOptions fused{1}, unfused{1};
  unfused.keep_values = true;
  auto a = Executor::create(residual_mlp(), fused);
  auto b = Executor::create(residual_mlp(), unfused);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT((*a)->model().nodes.size(), (*b)->model().nodes.size());
  for (int64_t batch : {1, 5}) {
    Tensor x = test::random_f32({batch, 64}, 9);
    auto ya = (*a)->run({&x, 1});
    std::vector<Tensor> keep;
    for (const Tensor* t : *ya) keep.push_back(*t);
    auto yb = (*b)->run({&x, 1});
    ASSERT_TRUE(ya.ok() && yb.ok());
    std::vector<const Tensor*> ka;
    for (const Tensor& t : keep) ka.push_back(&t);
    expect_close(ka, *yb, 1e-5, "batch " + std::to_string(batch));
  }
  Tensor x = test::random_f32({2, 64}, 10);
  ASSERT_TRUE((*b)->run({&x, 1}).ok());
  EXPECT_NE((*b)->value("h1"), nullptr) << "keep_values keeps intermediates";
  ASSERT_TRUE((*a)->run({&x, 1}).ok());
  EXPECT_EQ((*a)->value("h1"), nullptr) << "fused away";
  EXPECT_NE((*a)->value("y"), nullptr);
}

// A chain of elementwise ops on [1, 1000]: two buffers suffice.
Model chain(int length) {
  Model m;
  m.source = "chain";
  m.inputs.push_back(ValueInfo{"v0", ElemType::f32, {1, 1000}, {"", ""}, true});
  const char* ops[] = {"Tanh", "Sigmoid", "Neg", "Abs"};
  for (int i = 0; i < length; ++i)
    m.nodes.push_back(Node{
        fmt::format("n{}", i), ops[i % 4], "", {fmt::format("v{}", i)}, {fmt::format("v{}", i + 1)}, {}});
  m.outputs.push_back(ValueInfo{fmt::format("v{}", length)});
  return m;
}

std::unique_ptr<Plan> plan_of(const Model& m, const Shape& input, ThreadPool& pool,
                              bool keep_values = false) {
  auto plan = Plan::build(m, {input}, pool, int64_t{1} << 30, nullptr, false, keep_values);
  EXPECT_TRUE(plan.ok()) << plan.status().message();
  return plan.ok() ? std::move(*plan) : nullptr;
}

// x [N, 16] -> Flatten (a view of the input) -> Gemm (w, b) -> Relu -> Add b: the constants are
// w and b, b counted once though two steps read it; neither the input nor its view is one.
TEST(MemoryPlan, ConstantBytesCountEachWeightOnceAndNoActivation) {
  Model m;
  m.opset = 13;
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 16}, {"N", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w"] = test::random_f32({16, 8}, 1);
  m.initializers["b"] = test::random_f32({8}, 2);
  m.nodes.push_back(Node{"flat", "Flatten", "", {"x"}, {"f"}, {}});
  m.nodes.push_back(Node{"fc", "Gemm", "", {"f", "w", "b"}, {"g"}, {}});
  m.nodes.push_back(Node{"relu", "Relu", "", {"g"}, {"r"}, {}});
  m.nodes.push_back(Node{"shift", "Add", "", {"r", "b"}, {"y"}, {}});
  ThreadPool pool(1);
  for (int64_t batch : {1, 4}) {
    auto plan = plan_of(m, {batch, 16}, pool);
    ASSERT_TRUE(plan);
    EXPECT_EQ(plan->constant_bytes(), (16 * 8 + 8) * 4) << "batch " << batch;
  }
  auto weightless = plan_of(chain(3), {1, 1000}, pool);
  ASSERT_TRUE(weightless);
  EXPECT_EQ(weightless->constant_bytes(), 0);
}

TEST(MemoryPlan, AChainOfOpsTakesTwoBuffers) {
  ThreadPool pool(1);
  Model m = chain(8);
  auto plan = plan_of(m, {1, 1000}, pool);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->value_bytes(), 8 * 4000);
  EXPECT_LE(plan->arena_bytes(), 2 * 4000 + 512)
      << "ping-pong between two buffers, apart by the 4K-alias padding";
  auto kept = plan_of(m, {1, 1000}, pool, true);
  EXPECT_GE(kept->arena_bytes(), 8 * 4000) << "keep_values reuses nothing";
  // Buffers alive together never agree in their low 12 address bits to within 256 bytes.
  Tensor x = test::random_f32({1, 1000}, 3);
  ASSERT_TRUE(kept->run({&x, 1}, pool).ok());
  for (int i = 1; i <= 8; ++i)
    for (int j = i + 1; j <= 8; ++j) {
      auto a = reinterpret_cast<intptr_t>(kept->value(fmt::format("v{}", i))->raw());
      auto b = reinterpret_cast<intptr_t>(kept->value(fmt::format("v{}", j))->raw());
      int64_t d = ((a - b) % 4096 + 4096) % 4096;
      EXPECT_TRUE(d >= 256 && d <= 4096 - 256) << "v" << i << " and v" << j << " 4K-alias";
    }
}

TEST(MemoryPlan, ShapeOnlyOpsAreViewsOfTheirInput) {
  ThreadPool pool(1);
  Model m = residual_mlp();
  auto plan = plan_of(m, {3, 64}, pool, true);
  ASSERT_TRUE(plan);
  Tensor x = test::random_f32({3, 64}, 5);
  ASSERT_TRUE(plan->run({&x, 1}, pool).ok());
  ASSERT_NE(plan->value("f"), nullptr);
  EXPECT_EQ(plan->value("f")->raw(), plan->value("c")->raw()) << "Flatten shares the Clip's bytes";
  EXPECT_EQ(plan->value("y")->raw(), plan->value("c")->raw());
  EXPECT_EQ(plan->value("y")->shape(), (Shape{3, 64}));
  for (const auto& layer : plan->summary(m).layers)
    EXPECT_NE(layer.op_type, "Flatten") << "a view runs nothing";
}

// Runs `m` (after the graph passes) on a plan that poisons each buffer once its last reader ran, and
// compares with the unfused graph that keeps every value.
void expect_poisoned_plan_matches(const Model& original, const std::vector<Tensor>& inputs,
                                  const std::string& what) {
  SCOPED_TRACE(what);
  ThreadPool pool(2);
  Model fused = original;
  run_graph_passes(fused, test::initializer_shapes(fused));
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  auto plan = Plan::build(fused, shapes, pool, int64_t{1} << 32);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  (*plan)->set_poison_freed(true);
  // At most the values without reuse, plus alignment and 4K-alias padding per value.
  EXPECT_LE((*plan)->arena_bytes(), (*plan)->value_bytes() + 576 * static_cast<int64_t>(fused.nodes.size()));
  ExecOptions unfused = test::threaded(2);
  unfused.keep_values = true;
  auto reference = Executor::create(original, unfused);
  ASSERT_TRUE(reference.ok()) << reference.status().message();
  auto want = (*reference)->run(inputs);
  ASSERT_TRUE(want.ok()) << want.status().message();
  for (int round = 0; round < 2; ++round) {  // the second run starts from poisoned buffers
    ASSERT_TRUE((*plan)->run(inputs, pool).ok());
    expect_close((*plan)->outputs(), *want, 1e-5, "round " + std::to_string(round));
  }
}

// x [N, 4, 6, 6] -> Conv 1x1 (a, 3 filters) + Relu and Conv 3x3 (b, 5 filters) -> Concat -> Conv 1x1
// (2 filters) -> c; `a` is read again after the Concat (Conv 1x1, 2 filters -> d), y = c + d. With
// `odd_concats`, three more Concats whose inputs cannot move: of the graph input and `b`, of `a`
// twice, and of `b` again (already joined into the first).
Model concat_net(bool odd_concats) {
  Model m;
  m.source = "concat_net";
  m.opset = 13;
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 4, 6, 6}, {"N", "", "", ""}, true});
  m.initializers["wa"] = test::random_f32({3, 4, 1, 1}, 1);
  m.initializers["wb"] = test::random_f32({5, 4, 3, 3}, 2);
  m.initializers["wc"] = test::random_f32({2, 8, 1, 1}, 3);
  m.initializers["wd"] = test::random_f32({2, 3, 1, 1}, 4);
  using Ints = std::vector<int64_t>;
  const Ints one{1, 1}, pads{1, 1, 1, 1};
  m.nodes.push_back(Node{"conv_a", "Conv", "", {"x", "wa"}, {"a0"}, {{"kernel_shape", one}}});
  m.nodes.push_back(Node{"relu_a", "Relu", "", {"a0"}, {"a"}, {}});
  m.nodes.push_back(
      Node{"conv_b", "Conv", "", {"x", "wb"}, {"b"}, {{"kernel_shape", Ints{3, 3}}, {"pads", pads}}});
  m.nodes.push_back(Node{"join", "Concat", "", {"a", "b"}, {"ab"}, {{"axis", int64_t{1}}}});
  m.nodes.push_back(Node{"conv_c", "Conv", "", {"ab", "wc"}, {"c"}, {{"kernel_shape", one}}});
  m.nodes.push_back(Node{"conv_d", "Conv", "", {"a", "wd"}, {"d"}, {{"kernel_shape", one}}});
  m.nodes.push_back(Node{"sum", "Add", "", {"c", "d"}, {"y"}, {}});
  m.outputs.push_back(ValueInfo{"y"});
  if (odd_concats) {
    m.nodes.push_back(Node{"join_x", "Concat", "", {"x", "b"}, {"xb"}, {{"axis", int64_t{1}}}});
    m.nodes.push_back(Node{"join_aa", "Concat", "", {"a", "a"}, {"aa"}, {{"axis", int64_t{-3}}}});
    m.nodes.push_back(Node{"join_b", "Concat", "", {"b", "c"}, {"bc"}, {{"axis", int64_t{1}}}});
    for (const char* out : {"xb", "aa", "bc"}) m.outputs.push_back(ValueInfo{out});
  }
  return m;
}

int count_layers(const Plan& plan, const Model& m, const std::string& op_type) {
  int n = 0;
  for (const auto& layer : plan.summary(m).layers) n += layer.op_type == op_type;
  return n;
}

TEST(MemoryPlan, AConcatOfContiguousBlocksRunsNothing) {
  ThreadPool pool(1);
  Model m = concat_net(false);
  auto one = plan_of(m, {1, 4, 6, 6}, pool);
  ASSERT_TRUE(one);
  EXPECT_EQ(count_layers(*one, m, "Concat"), 0) << "a and b are written into their places in ab";
  EXPECT_EQ(one->value_bytes(), (3 + 8 + 2 + 2 + 2) * 36 * 4)
      << "a0 (no graph passes here), ab, c, d and y: a and b take no bytes of their own";
  auto two = plan_of(m, {2, 4, 6, 6}, pool);
  ASSERT_TRUE(two);
  EXPECT_EQ(count_layers(*two, m, "Concat"), 1) << "with two images, each input is two blocks apart";
  auto kept = plan_of(m, {1, 4, 6, 6}, pool, true);
  ASSERT_TRUE(kept);
  EXPECT_EQ(count_layers(*kept, m, "Concat"), 1) << "keep_values keeps every value in its own bytes";
  Model odd = concat_net(true);
  auto mixed = plan_of(odd, {1, 4, 6, 6}, pool);
  ASSERT_TRUE(mixed);
  EXPECT_EQ(count_layers(*mixed, odd, "Concat"), 3) << "only the first joins in place";
  // An input that is a graph output, a view of one made after the Concat, and the Concat's own
  // output as a graph output: still joined in place, each read where it lives.
  Model exposed = concat_net(false);
  exposed.nodes.push_back(Node{"flat_b", "Flatten", "", {"b"}, {"bf"}, {}});
  for (const char* out : {"a", "ab", "bf"}) exposed.outputs.push_back(ValueInfo{out});
  auto shown = plan_of(exposed, {1, 4, 6, 6}, pool);
  ASSERT_TRUE(shown);
  EXPECT_EQ(count_layers(*shown, exposed, "Concat"), 0);
  for (const int64_t batch : {1, 2, 3}) {
    expect_poisoned_plan_matches(exposed, {test::random_f32({batch, 4, 6, 6}, 40 + batch)},
                                 "exposed, batch " + std::to_string(batch));
    expect_poisoned_plan_matches(m, {test::random_f32({batch, 4, 6, 6}, 20 + batch)},
                                 "batch " + std::to_string(batch));
    expect_poisoned_plan_matches(odd, {test::random_f32({batch, 4, 6, 6}, 30 + batch)},
                                 "odd, batch " + std::to_string(batch));
  }
}

TEST(MemoryPlan, PoisonedFreedBuffersLeaveResultsUnchanged) {
  expect_poisoned_plan_matches(residual_mlp(), {test::random_f32({4, 64}, 11)}, "residual mlp");
  expect_poisoned_plan_matches(chain(7), {test::random_f32({1, 1000}, 12)}, "chain");
  expect_poisoned_plan_matches(test::small_cnn(), {test::random_f32({2, 1, 8, 8}, 13)}, "small cnn");
}

TEST(MemoryPlan, PoisonedFreedBuffersLeaveCorpusResultsUnchanged) {
  const std::string dir = SPARROW_CORPUS_DIR;
  std::ifstream in(dir + "/manifest.json");
  if (!in) GTEST_SKIP() << "model corpus unavailable: no manifest at " << dir;
  auto manifest = nlohmann::json::parse(in);
  for (const auto& c : manifest["cases"]) {
    auto model = load_onnx(dir + "/" + c["model"].get<std::string>());
    ASSERT_TRUE(model.ok()) << model.status().message();
    std::vector<Tensor> inputs;
    for (const auto& n : c["inputs"]) inputs.push_back(*read_npy(dir + "/" + n.get<std::string>()));
    expect_poisoned_plan_matches(*model, inputs, c["name"].get<std::string>());
  }
}

}  // namespace
}  // namespace sparrow
