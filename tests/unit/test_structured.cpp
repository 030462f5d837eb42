// Structured pruning: channel groups traced through the graph, every tensor sliced consistently.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "compress/recipe.h"
#include "sparrow/sparrow.h"
#include "test_util.h"

namespace sparrow {
namespace {

using Ints = std::vector<int64_t>;

// Zeroes the slices of `t` at `channels` along axis 0 (or along `axis`).
void zero_channels(Tensor& t, const Ints& channels, int axis = 0) {
  const Shape& s = t.shape();
  int64_t outer = 1, inner = 1;
  for (int a = 0; a < axis; ++a) outer *= s[static_cast<size_t>(a)];
  for (size_t a = static_cast<size_t>(axis) + 1; a < s.size(); ++a) inner *= s[a];
  const int64_t dim = s[static_cast<size_t>(axis)];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c : channels) std::fill_n(t.f32_data() + (o * dim + c) * inner, inner, 0.0f);
}

// x [N, 3, 8, 8] -> conv_a (8) -> BatchNormalization -> Relu = r
//   r -> conv_b (8, 3x3) and r -> conv_c (8, 1x1), added (one group of two producers)
//     -> depthwise 3x3 with bias -> Relu
//   r -> conv_d (4, 1x1); Concat with the depthwise branch (12 channels) -> MaxPool 2x2 -> Flatten
//   -> fc1 Gemm (16 units) -> Relu -> mm MatMul (10) -> Add a [10] bias -> y (graph output).
// With `dead` the channels a 0.5 l1 rule removes carry nothing (zero weights, biases and BN
// shift): the pruned model then computes exactly what the original does.
Model residual_net(bool dead) {
  Model m;
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, 3, 8, 8}, {"N", "", "", ""}, true}};
  m.outputs = {ValueInfo{"y"}};
  auto& init = m.initializers;
  init["wa"] = test::random_f32({8, 3, 3, 3}, 1);
  init["ba"] = test::random_f32({8}, 2);
  init["bn_scale"] = test::random_f32({8}, 3);
  init["bn_b"] = test::random_f32({8}, 4);
  init["bn_mean"] = test::random_f32({8}, 5);
  init["bn_var"] = test::make_f32({8}, std::vector<float>(8, 1.5f));
  init["wb"] = test::random_f32({8, 8, 3, 3}, 6);
  init["bb"] = test::random_f32({8}, 7);
  init["wc"] = test::random_f32({8, 8, 1, 1}, 8);
  init["wdw"] = test::random_f32({8, 1, 3, 3}, 9);
  init["bdw"] = test::random_f32({8}, 10);
  init["wd"] = test::random_f32({4, 8, 1, 1}, 11);
  init["w1"] = test::random_f32({16, 12 * 16}, 12);
  init["b1"] = test::random_f32({16}, 13);
  init["wm"] = test::random_f32({16, 10}, 14);
  init["bm"] = test::random_f32({10}, 15);
  const AttrValue pad1 = Ints{1, 1, 1, 1};
  m.nodes = {
      Node{"conv_a", "Conv", "", {"x", "wa", "ba"}, {"a"}, {{"pads", pad1}}},
      Node{"bn", "BatchNormalization", "", {"a", "bn_scale", "bn_b", "bn_mean", "bn_var"}, {"an"}, {}},
      Node{"relu_a", "Relu", "", {"an"}, {"r"}, {}},
      Node{"conv_b", "Conv", "", {"r", "wb", "bb"}, {"b"}, {{"pads", pad1}}},
      Node{"conv_c", "Conv", "", {"r", "wc"}, {"c"}, {}},
      Node{"add", "Add", "", {"b", "c"}, {"s"}, {}},
      Node{"dw", "Conv", "", {"s", "wdw", "bdw"}, {"d"}, {{"pads", pad1}, {"group", int64_t{8}}}},
      Node{"relu_d", "Relu", "", {"d"}, {"dr"}, {}},
      Node{"conv_d", "Conv", "", {"r", "wd"}, {"e"}, {}},
      Node{"cat", "Concat", "", {"dr", "e"}, {"ce"}, {{"axis", int64_t{1}}}},
      Node{"pool", "MaxPool", "", {"ce"}, {"p"}, {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}},
      Node{"flat", "Flatten", "", {"p"}, {"f"}, {}},
      Node{"fc1", "Gemm", "", {"f", "w1", "b1"}, {"h"}, {{"transB", int64_t{1}}}},
      Node{"relu_h", "Relu", "", {"h"}, {"hr"}, {}},
      Node{"mm", "MatMul", "", {"hr", "wm"}, {"o"}, {}},
      Node{"bias", "Add", "", {"o", "bm"}, {"y"}, {}},
  };
  if (dead) {
    const Ints a{1, 4, 6, 7}, bc{0, 2, 3, 5}, d{1, 2}, h{0, 3, 4, 7, 9, 10, 12, 15};
    for (const char* t : {"wa", "ba", "bn_b", "bn_mean"}) zero_channels(init[t], a);
    for (const char* t : {"wb", "bb", "wc", "bdw"}) zero_channels(init[t], bc);
    zero_channels(init["wd"], d);
    for (const char* t : {"w1", "b1"}) zero_channels(init[t], h);
  }
  return m;
}

TEST(Structured, RulesParseAndBadOnesAreNamed) {
  auto l2 = parse_structured_rule("l2=0.25");
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(l2->norm, StructuredRule::Norm::l2);
  EXPECT_DOUBLE_EQ(l2->fraction, 0.25);
  EXPECT_EQ(structured_rule_text(*l2), "l2=0.25");
  EXPECT_EQ(parse_structured_rule("none")->norm, StructuredRule::Norm::none);
  for (const char* bad : {"l1", "l1=1", "l1=-0.1", "l3=0.5", "l1=0.5x", ""}) {
    auto r = parse_structured_rule(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("structured rule '" + std::string(bad) + "'"), std::string::npos);
  }
}

TEST(Structured, NothingRemovedLeavesTheModelAsItWas) {
  const Model original = residual_net(false);
  Model same = original;
  const auto groups = test::prune_structured(same, "l1=0");
  ASSERT_EQ(groups.size(), 5u);
  for (const auto& [name, t] : original.initializers)
    EXPECT_EQ(same.initializers.at(name).shape(), t.shape()) << name;
  const Tensor x = test::random_f32({2, 3, 8, 8}, 20);
  EXPECT_EQ(test::max_relative_error(test::run_dense(same, x), test::run_dense(original, x)), 0.0);
}

TEST(Structured, GroupsFollowResidualsConcatAndFlatten) {
  Model m = residual_net(false);
  const auto groups = test::prune_structured(m, "l1=0.5");
  ASSERT_EQ(groups.size(), 5u);
  EXPECT_EQ(groups[0].producers, std::vector<std::string>{"conv_a"});
  EXPECT_EQ(groups[1].producers, (std::vector<std::string>{"conv_b", "conv_c"}))
      << "the residual Add joins them";
  EXPECT_EQ(groups[2].producers, std::vector<std::string>{"conv_d"});
  EXPECT_EQ(groups[3].producers, std::vector<std::string>{"fc1"});
  EXPECT_EQ(groups[4].producers, std::vector<std::string>{"mm"});
  const Ints kept{4, 4, 2, 8, 10};
  for (size_t g = 0; g < groups.size(); ++g) EXPECT_EQ(groups[g].kept, kept[g]) << g;
  EXPECT_NE(groups[4].kept_whole.find("graph output 'y'"), std::string::npos) << groups[4].kept_whole;
  const std::map<std::string, Shape> shapes{{"wa", {4, 3, 3, 3}}, {"bn_var", {4}},       {"wb", {4, 4, 3, 3}},
                                            {"wc", {4, 4, 1, 1}}, {"wdw", {4, 1, 3, 3}}, {"bdw", {4}},
                                            {"wd", {2, 4, 1, 1}}, {"w1", {8, 6 * 16}},   {"b1", {8}},
                                            {"wm", {8, 10}},      {"bm", {10}}};
  for (const auto& [name, shape] : shapes) EXPECT_EQ(m.initializers.at(name).shape(), shape) << name;
  EXPECT_EQ(std::get<int64_t>(m.nodes[6].attrs.at("group")), 4);
  const Tensor y = test::run_dense(m, test::random_f32({3, 3, 8, 8}, 21));
  EXPECT_EQ(y.shape(), (Shape{3, 10}));
}

TEST(Structured, RemovingChannelsThatCarryNothingKeepsTheOutputs) {
  const Model original = residual_net(true);
  Model pruned = original;
  const auto groups = test::prune_structured(pruned, "l1=0.5");
  ASSERT_EQ(groups.size(), 5u);
  EXPECT_LT(pruned.parameter_count(), original.parameter_count() / 2);
  const Tensor x = test::random_f32({2, 3, 8, 8}, 22);
  EXPECT_LT(test::max_relative_error(test::run_dense(pruned, x), test::run_dense(original, x)), 1e-5);
}

TEST(Structured, PerLayerRulesAndTheL2Norm) {
  Model m = residual_net(true);
  const auto groups = test::prune_structured(
      m, "l2=0.5",
      {{"conv_c", StructuredRule{StructuredRule::Norm::none, 0}}, {"w1", *parse_structured_rule("l1=0.25")}});
  ASSERT_EQ(groups.size(), 5u);
  EXPECT_EQ(groups[0].kept, 4);
  EXPECT_EQ(groups[1].kept, 8) << "a rule for one producer holds for its whole group";
  EXPECT_EQ(groups[3].kept, 12) << "by weight name";
  const Tensor x = test::random_f32({1, 3, 8, 8}, 23);
  EXPECT_LT(test::max_relative_error(test::run_dense(m, x), test::run_dense(residual_net(true), x)), 1e-5);
}

TEST(Structured, ChannelsThisPassCannotFollowAreKeptWhole) {
  Model m = residual_net(false);
  // conv_d's output also feeds a Softmax over channels, a graph output of its own.
  m.nodes.push_back(Node{"soft", "Softmax", "", {"e"}, {"z"}, {{"axis", int64_t{1}}}});
  m.outputs.push_back(ValueInfo{"z"});
  // conv_a's weight is read by a second node (tied weights): neither may change its channels.
  m.nodes.push_back(Node{"twin", "Conv", "", {"x", "wa"}, {"t"}, {}});
  m.outputs.push_back(ValueInfo{"t"});
  const auto groups = test::prune_structured(m, "l1=0.5");
  ASSERT_EQ(groups.size(), 6u);
  EXPECT_EQ(groups[0].producers, std::vector<std::string>{"conv_a"});
  EXPECT_EQ(groups[0].kept, 8);
  EXPECT_NE(groups[0].kept_whole.find("shares its weight 'wa'"), std::string::npos) << groups[0].kept_whole;
  EXPECT_EQ(groups[1].producers, (std::vector<std::string>{"conv_b", "conv_c"}));
  EXPECT_EQ(groups[1].kept, 4);
  EXPECT_EQ(groups[2].producers, std::vector<std::string>{"conv_d"});
  EXPECT_EQ(groups[2].kept, 4);
  EXPECT_NE(groups[2].kept_whole.find("node 'soft' (Softmax)"), std::string::npos) << groups[2].kept_whole;
  EXPECT_EQ(groups[5].producers, std::vector<std::string>{"twin"});
  EXPECT_EQ(groups[5].kept, 8);
  EXPECT_EQ(m.initializers.at("wa").shape(), (Shape{8, 3, 3, 3}));
  EXPECT_EQ(m.initializers.at("wb").shape(), (Shape{4, 8, 3, 3})) << "its input channels stay";
  const Tensor x = test::random_f32({1, 3, 8, 8}, 24);
  EXPECT_EQ(test::run_dense(m, x).shape(), (Shape{1, 10}));
}

// x [N, 6] -> first (MatMul [6, 8] + an [8] bias constant, or Gemm with transB 0 and a [1, 8] bias)
// -> Relu -> second (the same kind, 4 outputs) = y. Channels 1, 2, 5 and 6 of the hidden layer
// carry nothing.
Model hidden_layer_net(bool gemm) {
  Model m;
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, 6}, {"N", ""}, true}};
  m.outputs = {ValueInfo{"y"}};
  auto& init = m.initializers;
  init["w1"] = test::random_f32({6, 8}, 31);
  init["b1"] = test::random_f32(gemm ? Shape{1, 8} : Shape{8}, 32);
  init["w2"] = test::random_f32({8, 4}, 33);
  init["b2"] = test::random_f32({4}, 34);
  zero_channels(init["w1"], {1, 2, 5, 6}, 1);
  zero_channels(init["b1"], {1, 2, 5, 6}, gemm ? 1 : 0);
  if (gemm) {
    m.nodes = {Node{"first", "Gemm", "", {"x", "w1", "b1"}, {"h"}, {}},
               Node{"relu", "Relu", "", {"h"}, {"r"}, {}},
               Node{"second", "Gemm", "", {"r", "w2", "b2"}, {"y"}, {}}};
  } else {
    m.nodes = {Node{"first", "MatMul", "", {"x", "w1"}, {"h0"}, {}},
               Node{"bias", "Add", "", {"h0", "b1"}, {"h"}, {}}, Node{"relu", "Relu", "", {"h"}, {"r"}, {}},
               Node{"second", "MatMul", "", {"r", "w2"}, {"y0"}, {}},
               Node{"bias2", "Add", "", {"y0", "b2"}, {"y"}, {}}};
  }
  return m;
}

TEST(Structured, WeightsStoredInputMajorAndPerChannelConstantsFollow) {
  for (bool gemm : {false, true}) {
    const Model original = hidden_layer_net(gemm);
    Model pruned = original;
    const auto groups = test::prune_structured(pruned, "l1=0.5");
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_EQ(groups[0].kept, 4) << gemm;
    EXPECT_EQ(pruned.initializers.at("w1").shape(), (Shape{6, 4}));
    EXPECT_EQ(pruned.initializers.at("b1").shape(), (gemm ? Shape{1, 4} : Shape{4}));
    EXPECT_EQ(pruned.initializers.at("w2").shape(), (Shape{4, 4}));
    const Tensor x = test::random_f32({3, 6}, 35);
    EXPECT_LT(test::max_relative_error(test::run_dense(pruned, x), test::run_dense(original, x)), 1e-6)
        << gemm;
  }
}

TEST(Structured, OnlyAReshapeToBatchByRestFlattens) {
  for (int64_t first : {0, 2}) {
    Model m = test::small_cnn();
    m.nodes[3] = Node{"flat", "Reshape", "", {"p", "shape"}, {"f"}, {}};
    m.initializers["shape"] = test::make_i64({2}, {first, -1});
    const auto groups = test::prune_structured(m, "l1=0.5");
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_EQ(groups[0].kept, first == 0 ? 2 : 4) << "[" << first << ", -1]";
    EXPECT_EQ(m.initializers.at("fw").shape(), (Shape{10, first == 0 ? 32 : 64}));
    if (first == 0) {
      EXPECT_EQ(test::run_dense(m, test::random_f32({2, 1, 8, 8}, 36)).shape(), (Shape{2, 10}));
    }
  }
}

TEST(Structured, ASecondOutputKeepsTheChannelsWhole) {
  Model m = test::small_cnn();
  m.nodes.insert(m.nodes.begin() + 2, Node{"drop", "Dropout", "", {"r"}, {"rd", "mask"}, {}});
  m.nodes[3].inputs = {"rd"};
  m.outputs.push_back(ValueInfo{"mask"});
  const auto groups = test::prune_structured(m, "l1=0.5");
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].kept, 4);
  EXPECT_NE(groups[0].kept_whole.find("node 'drop' (Dropout)"), std::string::npos) << groups[0].kept_whole;
}

TEST(Structured, ASharedBiasIsCopiedOnlyWhereItsSlicesDiffer) {
  Model m = residual_net(true);
  m.initializers["ba"] = test::make_f32({8}, {1, 2, 3, 4, 5, 6, 7, 8});  // channel c holds c + 1
  m.nodes[3].inputs[2] = "ba";  // conv_b reads conv_a's bias, as exporters share equal tensors
  m.initializers.erase("bb");
  Model same = m;
  test::prune_structured(same, "l1=0");
  EXPECT_EQ(same.initializers.size(), m.initializers.size()) << "nothing removed: nothing copied";
  test::prune_structured(
      m, "l1=0.5");  // the weights decide: conv_a keeps 0, 2, 3, 5; conv_b and conv_c 1, 4, 6, 7
  ASSERT_NE(m.nodes[0].inputs[2], m.nodes[3].inputs[2]);
  const Tensor& a = m.initializers.at(m.nodes[0].inputs[2]);
  const Tensor& b = m.initializers.at(m.nodes[3].inputs[2]);
  EXPECT_EQ(std::vector<float>(a.f32_data(), a.f32_data() + a.numel()), (std::vector<float>{1, 3, 4, 6}));
  EXPECT_EQ(std::vector<float>(b.f32_data(), b.f32_data() + b.numel()), (std::vector<float>{2, 5, 7, 8}));
  EXPECT_EQ(test::run_dense(m, test::random_f32({1, 3, 8, 8}, 37)).shape(), (Shape{1, 10}));
}

TEST(Structured, AGroupTakesOneRuleAndAnExcludedLayerKeepsIt) {
  Model conflict = residual_net(false);
  auto bad = prune_channels(
      conflict, *parse_structured_rule("l1=0.5"),
      {{"conv_b", *parse_structured_rule("l1=0.25")}, {"wc", *parse_structured_rule("l2=0.5")}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'conv_b' (l1=0.25) and 'wc' (l2=0.5)"), std::string::npos)
      << bad.status().message();

  Model m = residual_net(false);
  CompressOptions o;
  o.structured = *parse_structured_rule("l1=0.5");
  o.layers["wc"].exclude = true;
  o.layers["conv_b"].structured = *parse_structured_rule("l1=0.25");
  auto groups = prune_channel_groups(m, o);
  ASSERT_TRUE(groups.ok()) << groups.status().message();
  EXPECT_EQ((*groups)[1].kept, 8) << "conv_c is excluded: its group stays whole, whatever conv_b's rule";
  EXPECT_NE((*groups)[1].kept_whole.find("rule none for 'wc'"), std::string::npos) << (*groups)[1].kept_whole;
  EXPECT_EQ((*groups)[0].kept, 4);
}

TEST(Structured, KeptCountsRoundToAChannelMultiple) {
  Model m = residual_net(false);
  auto groups = prune_channels(m, *parse_structured_rule("l1=0.3"), {}, 4);
  ASSERT_TRUE(groups.ok()) << groups.status().message();
  EXPECT_EQ((*groups)[0].kept, 8) << "6 of 8 rounds to 8";
  EXPECT_EQ((*groups)[2].kept, 3) << "a group of no more than 4 channels keeps what the rule says";
  EXPECT_EQ((*groups)[3].kept, 12) << "11 of 16 rounds to 12";
  EXPECT_EQ(test::run_dense(m, test::random_f32({1, 3, 8, 8}, 38)).shape(), (Shape{1, 10}));
  Model down = residual_net(false);
  auto nine = prune_channels(down, *parse_structured_rule("l1=0.45"), {}, 4);
  ASSERT_TRUE(nine.ok());
  EXPECT_EQ((*nine)[3].kept, 8) << "9 of 16 rounds to 8";
  Model other = residual_net(false);
  EXPECT_FALSE(prune_channels(other, *parse_structured_rule("l1=0.3"), {}, 0).ok());
}

// x [5, 2, 6] -> LSTM l1 (8 units; B; initial_h a ConstantOfShape of zeros, sliced; initial_c a
// constant) -> Squeeze axis 1 -> LSTM l2 (6 units; B, peepholes P) -> Squeeze -> Gather of the last
// step -> fc Gemm (3) -> y. With `dead` the odd units of both LSTMs carry nothing (their rows of W,
// R and B, and their initial cell state, are zero): they stay at zero, so removing them changes
// nothing.
Model lstm_net(bool dead) {
  Model m;
  m.inputs = {ValueInfo{"x", ElemType::f32, {5, 2, 6}, {"", "", ""}, true}};
  m.outputs = {ValueInfo{"y"}};
  auto& init = m.initializers;
  auto lstm = [&](const std::string& name, int64_t in, int64_t hidden, int seed) {
    Tensor w = test::random_f32({1, 4 * hidden, in}, seed),
           r = test::random_f32({1, 4 * hidden, hidden}, seed + 1);
    Tensor b = test::random_f32({1, 8 * hidden}, seed + 2);
    if (dead)
      for (int64_t unit = 1; unit < hidden; unit += 2) {
        for (int64_t gate = 0; gate < 4; ++gate) {
          zero_channels(w, {gate * hidden + unit}, 1);
          zero_channels(r, {gate * hidden + unit}, 1);
        }
        for (int64_t block = 0; block < 8; ++block) zero_channels(b, {block * hidden + unit}, 1);
      }
    init[name + "_w"] = w;
    init[name + "_r"] = r;
    init[name + "_b"] = b;
  };
  lstm("l1", 6, 8, 40);
  lstm("l2", 8, 6, 50);
  Tensor c0 = test::random_f32({1, 2, 8}, 60);
  if (dead) zero_channels(c0, {1, 3, 5, 7}, 2);
  init["c0"] = c0;
  init["p2"] = test::random_f32({1, 18}, 61);
  init["state_shape"] = test::make_i64({3}, {1, 2, 8});
  init["zero"] = test::make_i64({1}, {0});
  init["one"] = test::make_i64({1}, {1});
  init["last"] = test::make_i64({}, {4});
  init["wf"] = test::random_f32({3, 6}, 62);
  init["bf"] = test::random_f32({3}, 63);
  m.nodes = {
      Node{"zeros", "ConstantOfShape", "", {"state_shape"}, {"z"}, {}},
      Node{"h0", "Slice", "", {"z", "zero", "one", "zero"}, {"h0"}, {}},
      Node{"l1",
           "LSTM",
           "",
           {"x", "l1_w", "l1_r", "l1_b", "", "h0", "c0"},
           {"y1", "h1", "c1"},
           {{"hidden_size", int64_t{8}}}},
      Node{"sq1", "Squeeze", "", {"y1", "one"}, {"s1"}, {}},
      Node{"l2",
           "LSTM",
           "",
           {"s1", "l2_w", "l2_r", "l2_b", "", "", "", "p2"},
           {"y2"},
           {{"hidden_size", int64_t{6}}}},
      Node{"sq2", "Squeeze", "", {"y2", "one"}, {"s2"}, {}},
      Node{"step", "Gather", "", {"s2", "last"}, {"g"}, {{"axis", int64_t{0}}}},
      Node{"fc", "Gemm", "", {"g", "wf", "bf"}, {"y"}, {{"transB", int64_t{1}}}},
  };
  return m;
}

TEST(Structured, LstmHiddenUnitsGoFromEveryGateAndWhatReadsThem) {
  const Tensor x = test::random_f32({5, 2, 6}, 64);
  const Model original = lstm_net(true);
  Model same = original;
  test::prune_structured(same, "l1=0");
  EXPECT_EQ(test::max_relative_error(test::run_dense(same, x), test::run_dense(original, x)), 0.0);
  Model pruned = original;
  const auto groups = test::prune_structured(pruned, "l1=0.5");
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].producers, std::vector<std::string>{"l1"});
  EXPECT_EQ(groups[0].kept, 4);
  EXPECT_EQ(groups[1].kept, 3);
  EXPECT_NE(groups[2].kept_whole.find("graph output"), std::string::npos) << groups[2].kept_whole;
  auto& init = pruned.initializers;
  EXPECT_EQ(init.at("l1_w").shape(), (Shape{1, 16, 6}));
  EXPECT_EQ(init.at("l1_r").shape(), (Shape{1, 16, 4}));
  EXPECT_EQ(init.at("l1_b").shape(), (Shape{1, 32}));
  EXPECT_EQ(init.at("c0").shape(), (Shape{1, 2, 4}));
  EXPECT_EQ(init.at("l2_w").shape(), (Shape{1, 12, 4}));
  EXPECT_EQ(init.at("p2").shape(), (Shape{1, 9}));
  EXPECT_EQ(init.at("wf").shape(), (Shape{3, 3}));
  EXPECT_EQ(pruned.nodes[2].inputs[5], "") << "the zeros initial_h is dropped: LSTM's default";
  EXPECT_EQ(std::get<int64_t>(pruned.nodes[2].attrs.at("hidden_size")), 4);
  EXPECT_LT(test::max_relative_error(test::run_dense(pruned, x), test::run_dense(original, x)), 1e-5);
  // Without B (l2's), the rest slices the same.
  Model unbiased = lstm_net(true);
  unbiased.nodes[4].inputs[3] = "";
  unbiased.initializers.erase("l2_b");
  const Model unbiased_original = unbiased;
  ASSERT_EQ(test::prune_structured(unbiased, "l1=0.5").size(), 3u);
  EXPECT_EQ(unbiased.initializers.at("l2_r").shape(), (Shape{1, 12, 3}));
  EXPECT_LT(test::max_relative_error(test::run_dense(unbiased, x), test::run_dense(unbiased_original, x)),
            1e-5);
  // An initial state built of ones is not followed: l1's units stay, l2's still go.
  Model ones = lstm_net(true);
  ones.nodes[0].attrs["value"] = test::make_f32({1}, {1.0f});
  const auto kept = test::prune_structured(ones, "l1=0.5");
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_EQ(kept[0].kept, 8);
  EXPECT_NE(kept[0].kept_whole.find("node 'l1' (LSTM) starts from 'h0'"), std::string::npos)
      << kept[0].kept_whole;
  EXPECT_EQ(kept[1].kept, 3);
  EXPECT_EQ(test::run_dense(ones, x).shape(), (Shape{2, 3}));
  // The units axis squeezed or gathered is not followed: the units stay.
  for (const auto& [node, axis] : {std::pair<size_t, int64_t>{6, -1}, {3, -1}}) {
    Model m = lstm_net(false);
    if (m.nodes[node].op_type == "Gather")
      m.nodes[node].attrs["axis"] = axis;
    else
      m.initializers["minus_one"] = test::make_i64({1}, {axis}), m.nodes[node].inputs[1] = "minus_one";
    const auto whole = test::prune_structured(m, "l1=0.5");
    ASSERT_GE(whole.size(), 2u);
    EXPECT_EQ(whole[node == 6 ? 1 : 0].kept, node == 6 ? 6 : 8) << m.nodes[node].describe();
  }
}

TEST(Structured, RecipesAndLayerOverridesCarryTheRule) {
  CompressOptions o;
  ASSERT_TRUE(
      apply_recipe({{"structured", "l2=0.25"}, {"layers", {{"fc1", {{"structured", "none"}}}}}}, o).ok());
  ASSERT_TRUE(apply_layer_override("conv_a:structured=l1=0.75,bits=6", o).ok());
  EXPECT_EQ(structured_rule_text(*o.structured), "l2=0.25");
  EXPECT_EQ(structured_rule_text(*o.layers["fc1"].structured), "none");
  EXPECT_EQ(structured_rule_text(*o.layers["conv_a"].structured), "l1=0.75");
  EXPECT_TRUE(o.prunes_channels());
  ASSERT_TRUE(apply_recipe({{"channel_multiple", 16}}, o).ok());
  EXPECT_EQ(o.channel_multiple, 16);
  CompressOptions replay;
  ASSERT_TRUE(apply_recipe(recipe_json(o), replay).ok());
  EXPECT_EQ(recipe_json(replay), recipe_json(o));
  EXPECT_FALSE(apply_recipe({{"structured", 0.5}}, replay).ok());
  auto bad = apply_layer_override("conv_a:structured=l1=2", replay);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("--layer conv_a"), std::string::npos) << bad.message();
}

TEST(Structured, CompressRecordsTheGroupsAndRunsTheSmallerModel) {
  const Model original = residual_net(true);
  CompressOptions o;
  o.structured = *parse_structured_rule("l1=0.5");
  o.all.bits = 8;
  auto r = compress_model(original, o, "{}");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->channel_groups.size(), 5u);
  const auto meta = nlohmann::json::parse(r->spw.metadata_json);
  ASSERT_TRUE(meta.contains("structured"));
  EXPECT_EQ(meta["structured"][1]["producers"], nlohmann::json({"conv_b", "conv_c"}));
  EXPECT_EQ(meta["structured"][1]["kept"], 4);
  auto ex = Executor::create(r->spw);
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  const Tensor x = test::random_f32({2, 3, 8, 8}, 25);
  auto y = (*ex)->run({&x, 1});
  ASSERT_TRUE(y.ok()) << y.status().message();
  EXPECT_LT(test::max_relative_error(*(*y)[0], test::run_dense(original, x)), 0.05) << "8-bit codes";
}

}  // namespace
}  // namespace sparrow
