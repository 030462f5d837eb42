#include "test_util.h"

namespace sparrow {
namespace {

// Conv -> BatchNormalization, optionally with the conv output also exposed (which blocks folding).
Model conv_bn_model(bool expose_conv) {
  Model m;
  m.source = "conv_bn";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 3, 6, 6}, {"N", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  if (expose_conv) m.outputs.push_back(ValueInfo{"c"});
  m.initializers["w"] = test::random_f32({4, 3, 3, 3}, 1);
  m.initializers["b"] = test::random_f32({4}, 2);
  m.initializers["g"] = test::make_f32({4}, {0.5f, 1.5f, 1.0f, 2.0f});
  m.initializers["beta"] = test::random_f32({4}, 3);
  m.initializers["mean"] = test::random_f32({4}, 4);
  m.initializers["var"] = test::make_f32({4}, {0.5f, 1.0f, 2.0f, 0.25f});
  m.nodes.push_back(
      Node{"conv", "Conv", "", {"x", "w", "b"}, {"c"}, {{"pads", std::vector<int64_t>{1, 1, 1, 1}}}});
  m.nodes.push_back(Node{"bn", "BatchNormalization", "", {"c", "g", "beta", "mean", "var"}, {"y"}, {}});
  return m;
}

TEST(Passes, FoldsBatchNormIntoConvWithSameOutputs) {
  Model folded = conv_bn_model(false), kept = conv_bn_model(true);
  ASSERT_TRUE(simplify_model(folded).ok());
  ASSERT_TRUE(simplify_model(kept).ok());
  ASSERT_EQ(folded.nodes.size(), 1u);
  EXPECT_EQ(folded.nodes[0].op_type, "Conv");
  ASSERT_EQ(kept.nodes.size(), 2u) << "a BN whose input is also a graph output must stay";
  Tensor x = test::random_f32({2, 3, 6, 6}, 5);
  auto a = Executor::create(std::move(folded));
  auto b = Executor::create(std::move(kept));
  auto ya = (*a)->run({&x, 1});
  auto yb = (*b)->run({&x, 1});
  ASSERT_TRUE(ya.ok() && yb.ok());
  EXPECT_LT(test::max_relative_error(*(*ya)[0], *(*yb)[0]), 1e-5);
}

TEST(Passes, RemovesIdentityAndDropoutAndFoldsConstants) {
  Model m;
  m.source = "ids";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {2}, {""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.nodes.push_back(Node{"c", "Constant", "", {}, {"k"}, {{"value_floats", std::vector<float>{1, 2}}}});
  m.nodes.push_back(Node{"i", "Identity", "", {"x"}, {"a"}, {}});
  m.nodes.push_back(Node{"d", "Dropout", "", {"a"}, {"b"}, {{"ratio", 0.5f}}});
  m.nodes.push_back(Node{"add", "Add", "", {"b", "k"}, {"y"}, {}});
  ASSERT_TRUE(simplify_model(m).ok());
  ASSERT_EQ(m.nodes.size(), 1u);
  EXPECT_EQ(m.nodes[0].inputs[0], "x");
  EXPECT_TRUE(m.initializers.count("k"));
}

TEST(Passes, ValidateNamesUndefinedInputs) {
  Model m;
  m.outputs.push_back(ValueInfo{"y"});
  m.nodes.push_back(Node{"relu", "Relu", "", {"ghost"}, {"y"}, {}});
  auto s = m.validate();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("node 'relu' (Relu): input 0 'ghost'"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace sparrow
