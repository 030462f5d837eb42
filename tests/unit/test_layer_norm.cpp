// LayerNormalization: the op against a double-precision loop, and fuse_layer_norm, which turns the
// decomposition exporters write at opsets below 17 into one such node, against the unfused graph.
#include <algorithm>
#include <cmath>

#include "engine/graph_passes.h"
#include "test_util.h"

namespace sparrow {
namespace {

// Rows of the last `width` elements of x, normalized in double precision, then scaled and shifted.
std::vector<float> layer_norm_reference(const Tensor& x, int64_t width, const float* scale, const float* bias,
                                        double epsilon) {
  std::vector<float> y(static_cast<size_t>(x.numel()));
  for (int64_t r = 0; r < x.numel() / width; ++r) {
    const float* row = x.f32_data() + r * width;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < width; ++i) mean += row[i];
    mean /= static_cast<double>(width);
    for (int64_t i = 0; i < width; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= static_cast<double>(width);
    for (int64_t i = 0; i < width; ++i)
      y[static_cast<size_t>(r * width + i)] = static_cast<float>(
          (row[i] - mean) / std::sqrt(var + epsilon) * (scale ? scale[i] : 1.0f) + (bias ? bias[i] : 0.0f));
  }
  return y;
}

void expect_near_all(const Tensor& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got.f32_data()[i], want[i], 1e-5 * (1.0 + std::abs(want[i]))) << what << " at " << i;
}

TEST(LayerNorm, OpMatchesADoublePrecisionLoop) {
  const Tensor x = test::random_f32({3, 4, 37}, 1);
  const Tensor scale = test::random_f32({37}, 2), bias = test::random_f32({37}, 3);
  auto y = test::run_op("LayerNormalization", {{"epsilon", 1e-3f}}, {x, scale, bias}, 17);
  ASSERT_TRUE(y.ok()) << y.status().message();
  expect_near_all((*y)[0], layer_norm_reference(x, 37, scale.f32_data(), bias.f32_data(), 1e-3), "axis -1");

  const Tensor wide_scale = test::random_f32({4, 37}, 4);
  auto two_axes = test::run_op("LayerNormalization", {{"axis", int64_t{1}}}, {x, wide_scale}, 17);
  ASSERT_TRUE(two_axes.ok()) << two_axes.status().message();
  expect_near_all((*two_axes)[0], layer_norm_reference(x, 4 * 37, wide_scale.f32_data(), nullptr, 1e-5),
                  "axis 1, no bias");
}

TEST(LayerNorm, OpRefusesWhatItDoesNotCompute) {
  const Tensor x = test::random_f32({2, 8}, 5);
  auto wrong_scale = test::run_op("LayerNormalization", {}, {x, test::random_f32({7}, 6)}, 17);
  ASSERT_FALSE(wrong_scale.ok());
  EXPECT_NE(wrong_scale.status().message().find("one value per normalized element (8)"), std::string::npos)
      << wrong_scale.status().message();
  auto statistics = test::run_op("LayerNormalization", {}, {x, test::random_f32({8}, 7)}, 17, 2);
  ASSERT_FALSE(statistics.ok());
  EXPECT_NE(statistics.status().message().find("Mean and InvStdDev"), std::string::npos);
  auto stash =
      test::run_op("LayerNormalization", {{"stash_type", int64_t{10}}}, {x, test::random_f32({8}, 8)}, 17);
  EXPECT_FALSE(stash.ok());
}

// x [N, 5, 12] -> the decomposition torch exports for nn.LayerNorm(12) at opset 13, then Relu -> y.
Model decomposed_layer_norm(bool affine) {
  Model m;
  m.source = "decomposed_layer_norm";
  m.opset = 13;
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 5, 12}, {"N", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["two"] = Tensor::scalar_f32(2.0f);
  m.initializers["eps"] = Tensor::scalar_f32(1e-5f);
  m.initializers["gamma"] = test::random_f32({12}, 11);
  m.initializers["beta"] = test::random_f32({12}, 12);
  const std::map<std::string, AttrValue> last = {{"axes", std::vector<int64_t>{-1}}};
  m.nodes.push_back(Node{"mean", "ReduceMean", "", {"x"}, {"mu"}, last});
  m.nodes.push_back(Node{"sub", "Sub", "", {"x", "mu"}, {"d"}, {}});
  m.nodes.push_back(Node{"pow", "Pow", "", {"d", "two"}, {"d2"}, {}});
  m.nodes.push_back(Node{"var", "ReduceMean", "", {"d2"}, {"v"}, last});
  m.nodes.push_back(Node{"add", "Add", "", {"v", "eps"}, {"ve"}, {}});
  m.nodes.push_back(Node{"sqrt", "Sqrt", "", {"ve"}, {"s"}, {}});
  m.nodes.push_back(Node{"div", "Div", "", {"d", "s"}, {"n"}, {}});
  std::string out = "n";
  if (affine) {
    m.nodes.push_back(Node{"scale", "Mul", "", {"n", "gamma"}, {"ng"}, {}});
    m.nodes.push_back(Node{"shift", "Add", "", {"ng", "beta"}, {"nb"}, {}});
    out = "nb";
  }
  m.nodes.push_back(Node{"relu", "Relu", "", {out}, {"y"}, {}});
  return m;
}

int count_ops(const Model& m, const std::string& op_type) {
  return static_cast<int>(
      std::count_if(m.nodes.begin(), m.nodes.end(), [&](const Node& n) { return n.op_type == op_type; }));
}

// Runs `m` with the graph passes and without (keep_values), checks they agree, and returns how many
// LayerNormalization nodes the passes made.
int fused_and_checked(const Model& m, const std::string& what) {
  ExecOptions plain;
  plain.keep_values = true;
  auto fused = Executor::create(m);
  auto unfused = Executor::create(m, plain);
  EXPECT_TRUE(fused.ok() && unfused.ok()) << what;
  if (!fused.ok() || !unfused.ok()) return -1;
  const Tensor x = test::random_f32({3, 5, 12}, 21);
  auto a = (*fused)->run(std::span<const Tensor>(&x, 1));
  auto b = (*unfused)->run(std::span<const Tensor>(&x, 1));
  EXPECT_TRUE(a.ok() && b.ok()) << what;
  if (a.ok() && b.ok()) {
    EXPECT_LT(test::max_relative_error(*(*a)[0], *(*b)[0]), 1e-5) << what;
  }
  return count_ops((*fused)->model(), "LayerNormalization");
}

TEST(LayerNorm, TheExportedDecompositionBecomesOneNode) {
  EXPECT_EQ(fused_and_checked(decomposed_layer_norm(true), "with scale and bias"), 1);
  EXPECT_EQ(fused_and_checked(decomposed_layer_norm(false), "without"), 1);
  Model m = decomposed_layer_norm(true);
  EXPECT_EQ(fuse_layer_norm(m, [](const std::string&) { return std::nullopt; }), 1);
  EXPECT_TRUE(m.validate().ok());
  EXPECT_EQ(m.nodes.size(), 2u) << "the fused node and the Relu";
  EXPECT_EQ(m.nodes[0].inputs, (std::vector<std::string>{"x", "gamma", "beta"}));
  EXPECT_EQ(m.nodes[0].outputs[0], "nb");
}

TEST(LayerNorm, VariantsThatAreNotALayerNormStayAsTheyAre) {
  Model squared_thrice = decomposed_layer_norm(true);
  squared_thrice.initializers["two"] = Tensor::scalar_f32(3.0f);
  EXPECT_EQ(fused_and_checked(squared_thrice, "a cube instead of a square"), 0);

  Model other_axis = decomposed_layer_norm(true);
  other_axis.nodes[3].attrs["axes"] = std::vector<int64_t>{1};
  EXPECT_EQ(fused_and_checked(other_axis, "variance over another axis"), 0);

  Model difference_read = decomposed_layer_norm(true);
  difference_read.nodes.push_back(Node{"tap", "Relu", "", {"d"}, {"t"}, {}});
  difference_read.outputs.push_back(ValueInfo{"t"});
  EXPECT_EQ(fused_and_checked(difference_read, "the centered values read elsewhere"), 0);

  Model varying_epsilon = decomposed_layer_norm(true);
  varying_epsilon.initializers["eps"] = test::random_f32({12}, 13);
  EXPECT_EQ(fused_and_checked(varying_epsilon, "an epsilon per element"), 0);

  Model matrix_scale = decomposed_layer_norm(true);
  matrix_scale.initializers["gamma"] = test::random_f32({5, 12}, 14);
  EXPECT_EQ(fused_and_checked(matrix_scale, "a scale per row"), 1) << "the normalization alone is fused";
}

}  // namespace
}  // namespace sparrow
