// Attention heads as structured groups: whole heads removed from multi-head attention blocks, the
// model then computing what the original does with those heads' value rows zeroed.
#include <gtest/gtest.h>

#include <filesystem>

#include "sparrow/sparrow.h"
#include "test_util.h"

namespace sparrow {
namespace {

using Ints = std::vector<int64_t>;

constexpr int64_t kSeq = 5, kHeads = 4, kWidth = 3, kChannels = kHeads * kWidth, kEmbed = 10;

// Zeroes the slices of `t` along `axis` that belong to `heads` (blocks of kWidth from `offset`).
void zero_heads(Tensor& t, const Ints& heads, int axis, int64_t offset = 0) {
  const Shape& s = t.shape();
  const int64_t dim = s[static_cast<size_t>(axis)];
  int64_t outer = 1, inner = 1;
  for (int a = 0; a < axis; ++a) outer *= s[static_cast<size_t>(a)];
  for (size_t a = static_cast<size_t>(axis) + 1; a < s.size(); ++a) inner *= s[a];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t h : heads)
      for (int64_t c = offset + h * kWidth; c < offset + (h + 1) * kWidth; ++c)
        std::fill_n(t.f32_data() + (o * dim + c) * inner, inner, 0.0f);
}

// Separate projections, as BERT-style exports write them: x [N, 5, 10] -> q, k, v (MatMul + Add
// bias -> Reshape [0, 0, 4, 3] -> Transpose) -> scores (k transposed to [N, 4, 3, 5]) / 2 + a
// [5, 5] mask -> Softmax -> times v -> Transpose -> Reshape [0, 0, 12] -> out MatMul + Add -> y.
Model separate_projections(uint32_t seed) {
  Model m;
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, kSeq, kEmbed}, {"N", "", ""}, true}};
  m.outputs = {ValueInfo{"y"}};
  auto& init = m.initializers;
  for (const char* p : {"q", "k", "v"}) {
    init[std::string("w") + p] = test::random_f32({kEmbed, kChannels}, seed++);
    init[std::string("b") + p] = test::random_f32({kChannels}, seed++);
  }
  init["wo"] = test::random_f32({kChannels, kEmbed}, seed++);
  init["bo"] = test::random_f32({kEmbed}, seed++);
  init["mask"] = test::random_f32({kSeq, kSeq}, seed++);
  init["two"] = test::make_f32({}, {2.0f});
  init["split"] = test::make_i64({4}, {0, 0, kHeads, kWidth});
  init["join"] = test::make_i64({3}, {0, 0, kChannels});
  const AttrValue heads_first = Ints{0, 2, 1, 3};
  m.nodes = {
      Node{"q_mm", "MatMul", "", {"x", "wq"}, {"q0"}, {}},
      Node{"q_add", "Add", "", {"q0", "bq"}, {"q1"}, {}},
      Node{"q_split", "Reshape", "", {"q1", "split"}, {"q2"}, {}},
      Node{"q_t", "Transpose", "", {"q2"}, {"q3"}, {{"perm", heads_first}}},
      Node{"k_mm", "MatMul", "", {"x", "wk"}, {"k0"}, {}},
      Node{"k_add", "Add", "", {"bk", "k0"}, {"k1"}, {}},
      Node{"k_split", "Reshape", "", {"k1", "split"}, {"k2"}, {}},
      Node{"k_t", "Transpose", "", {"k2"}, {"k3"}, {{"perm", Ints{0, 2, 3, 1}}}},
      Node{"v_mm", "MatMul", "", {"x", "wv"}, {"v0"}, {}},
      Node{"v_add", "Add", "", {"v0", "bv"}, {"v1"}, {}},
      Node{"v_split", "Reshape", "", {"v1", "split"}, {"v2"}, {}},
      Node{"v_t", "Transpose", "", {"v2"}, {"v3"}, {{"perm", heads_first}}},
      Node{"scores", "MatMul", "", {"q3", "k3"}, {"s0"}, {}},
      Node{"scale", "Div", "", {"s0", "two"}, {"s1"}, {}},
      Node{"masked", "Add", "", {"mask", "s1"}, {"s2"}, {}},
      Node{"softmax", "Softmax", "", {"s2"}, {"p"}, {{"axis", int64_t{-1}}}},
      Node{"mix", "MatMul", "", {"p", "v3"}, {"a0"}, {}},
      Node{"a_t", "Transpose", "", {"a0"}, {"a1"}, {{"perm", heads_first}}},
      Node{"join", "Reshape", "", {"a1", "join"}, {"a2"}, {}},
      Node{"out_mm", "MatMul", "", {"a2", "wo"}, {"o0"}, {}},
      Node{"out_add", "Add", "", {"o0", "bo"}, {"y"}, {}},
  };
  return m;
}

// One fused projection, as PyTorch's nn.MultiheadAttention exports: x [5, 2, 10] (sequence first,
// a batch of 2 fixed) -> MatMul [10, 36] + Add bias -> three Slices of 12 (value, query, key: the
// order is the Slices' bounds, not the graph's) -> Reshape [5, 8, 3] (batch x heads on one axis)
// -> Transpose -> scores * 0.5 -> Softmax -> times v -> Transpose -> Reshape [10, 12] -> Gemm
// (transB) -> y [10, 10].
Model fused_projection(uint32_t seed) {
  constexpr int64_t batch = 2;
  Model m;
  m.inputs = {ValueInfo{"x", ElemType::f32, {kSeq, batch, kEmbed}, {"", "", ""}, true}};
  m.outputs = {ValueInfo{"y"}};
  auto& init = m.initializers;
  init["w_in"] = test::random_f32({kEmbed, 3 * kChannels}, seed++);
  init["b_in"] = test::random_f32({3 * kChannels}, seed++);
  init["w_out"] = test::random_f32({kEmbed, kChannels}, seed++);
  init["b_out"] = test::random_f32({kEmbed}, seed++);
  init["half"] = test::make_f32({1}, {0.5f});
  init["split"] = test::make_i64({3}, {kSeq, batch * kHeads, kWidth});
  init["join"] = test::make_i64({2}, {kSeq * batch, kChannels});
  init["last"] = test::make_i64({1}, {-1});
  for (int64_t s = 0; s < 3; ++s) {
    init["start" + std::to_string(s)] = test::make_i64({1}, {s * kChannels});
    init["end" + std::to_string(s)] = test::make_i64({1}, {s == 2 ? INT64_MAX : (s + 1) * kChannels});
  }
  const AttrValue heads_first = Ints{1, 0, 2};
  m.nodes = {
      Node{"in_proj", "MatMul", "", {"x", "w_in"}, {"f0"}, {}},
      Node{"in_bias", "Add", "", {"b_in", "f0"}, {"f1"}, {}},
      Node{"take_v", "Slice", "", {"f1", "start0", "end0", "last"}, {"v0"}, {}},
      Node{"take_q", "Slice", "", {"f1", "start1", "end1", "last"}, {"q0"}, {}},
      Node{"take_k", "Slice", "", {"f1", "start2", "end2", "last"}, {"k0"}, {}},
      Node{"q_split", "Reshape", "", {"q0", "split"}, {"q1"}, {}},
      Node{"q_t", "Transpose", "", {"q1"}, {"q2"}, {{"perm", heads_first}}},
      Node{"q_scale", "Mul", "", {"half", "q2"}, {"q3"}, {}},
      Node{"k_split", "Reshape", "", {"k0", "split"}, {"k1"}, {}},
      Node{"k_t", "Transpose", "", {"k1"}, {"k2"}, {{"perm", Ints{1, 2, 0}}}},
      Node{"v_split", "Reshape", "", {"v0", "split"}, {"v1"}, {}},
      Node{"v_t", "Transpose", "", {"v1"}, {"v2"}, {{"perm", heads_first}}},
      Node{"scores", "MatMul", "", {"q3", "k2"}, {"s"}, {}},
      Node{"softmax", "Softmax", "", {"s"}, {"p0"}, {{"axis", int64_t{2}}}},
      Node{"dropout", "Dropout", "", {"p0"}, {"p"}, {}},
      Node{"mix", "MatMul", "", {"p", "v2"}, {"a0"}, {}},
      Node{"a_t", "Transpose", "", {"a0"}, {"a1"}, {{"perm", heads_first}}},
      Node{"join", "Reshape", "", {"a1", "join"}, {"a2"}, {}},
      Node{"out_proj", "Gemm", "", {"a2", "w_out", "b_out"}, {"y"}, {{"transB", int64_t{1}}}},
  };
  return m;
}

const ChannelGroup* heads_group(const std::vector<ChannelGroup>& groups) {
  for (const ChannelGroup& g : groups)
    if (g.head_width > 0) return &g;
  return nullptr;
}

// Every pair of heads a fused block could have lost: the one whose zeroed value rows give the
// pruned model's outputs, or an empty list where none does.
Ints removed_pair(const Model& original, const Tensor& x, const Tensor& pruned_y) {
  for (int64_t a = 0; a < kHeads; ++a)
    for (int64_t b = a + 1; b < kHeads; ++b) {
      Model zeroed = original;
      zero_heads(zeroed.initializers["w_in"], {a, b}, 1, 0);  // the value's block comes first
      zero_heads(zeroed.initializers["b_in"], {a, b}, 0, 0);
      if (test::max_relative_error(test::run_dense(zeroed, x), pruned_y) < 1e-5) return {a, b};
    }
  return {};
}

TEST(AttentionHeads, HeadsThatCarryNothingGoAndTheOutputsStay) {
  Model original = separate_projections(1);
  for (const char* w : {"wq", "wk", "wv"}) zero_heads(original.initializers[w], {1, 3}, 1);
  for (const char* b : {"bq", "bk", "bv"}) zero_heads(original.initializers[b], {1, 3}, 0);
  zero_heads(original.initializers["wo"], {1, 3}, 0);
  Model pruned = original;
  const auto groups = test::prune_structured(pruned, "l1=0.5");
  const ChannelGroup* heads = heads_group(groups);
  ASSERT_NE(heads, nullptr);
  EXPECT_EQ(heads->producers, (std::vector<std::string>{"q_mm", "k_mm", "v_mm"}));
  EXPECT_EQ(heads->channels, kHeads);
  EXPECT_EQ(heads->kept, 2);
  EXPECT_EQ(heads->head_width, kWidth);
  EXPECT_TRUE(heads->kept_whole.empty()) << heads->kept_whole;
  for (const char* w : {"wq", "wk", "wv"})
    EXPECT_EQ(pruned.initializers.at(w).shape(), (Shape{kEmbed, 6})) << w;
  EXPECT_EQ(pruned.initializers.at("bv").shape(), (Shape{6}));
  EXPECT_EQ(pruned.initializers.at("wo").shape(), (Shape{6, kEmbed}));
  for (int64_t batch : {1, 3}) {
    const Tensor x = test::random_f32({batch, kSeq, kEmbed}, 40 + static_cast<uint32_t>(batch));
    EXPECT_LT(test::max_relative_error(test::run_dense(pruned, x), test::run_dense(original, x)), 1e-5)
        << batch;
  }
}

// A head is scored over all four parts: heads whose value rows alone, or whose output columns
// alone, are zero carry nothing and are the ones removed.
TEST(AttentionHeads, EachPartOfAHeadCountsInItsScore) {
  for (const bool value : {true, false}) {
    Model original = separate_projections(3);
    if (value) {
      zero_heads(original.initializers["wv"], {0, 2}, 1);
      zero_heads(original.initializers["bv"], {0, 2}, 0);
    } else {
      zero_heads(original.initializers["wo"], {0, 2}, 0);
    }
    Model pruned = original;
    const auto groups = test::prune_structured(pruned, "l1=0.5");
    ASSERT_NE(heads_group(groups), nullptr);
    EXPECT_EQ(heads_group(groups)->kept, 2);
    const Tensor x = test::random_f32({2, kSeq, kEmbed}, 45);
    EXPECT_LT(test::max_relative_error(test::run_dense(pruned, x), test::run_dense(original, x)), 1e-5)
        << (value ? "value rows" : "output columns");
  }
}

TEST(AttentionHeads, AFusedProjectionLosesTheSameHeadsInItsThreeBlocks) {
  const Model original = fused_projection(11);
  Model pruned = original;
  const auto groups = test::prune_structured(pruned, "l2=0.5");
  const ChannelGroup* heads = heads_group(groups);
  ASSERT_NE(heads, nullptr);
  EXPECT_EQ(heads->producers, std::vector<std::string>{"in_proj"});
  EXPECT_EQ(heads->kept, 2);
  EXPECT_TRUE(heads->kept_whole.empty()) << heads->kept_whole;
  EXPECT_EQ(pruned.initializers.at("w_in").shape(), (Shape{kEmbed, 18}));
  EXPECT_EQ(pruned.initializers.at("w_out").shape(), (Shape{kEmbed, 6}));
  const Tensor x = test::random_f32({kSeq, 2, kEmbed}, 50);
  const Tensor y = test::run_dense(pruned, x);
  ASSERT_EQ(y.shape(), (Shape{kSeq * 2, kEmbed}));
  const Ints removed = removed_pair(original, x, y);
  ASSERT_EQ(removed.size(), 2u) << "no pair of heads with zeroed value rows gives the pruned outputs";
  Model zeroed = original;
  zero_heads(zeroed.initializers["w_in"], removed, 1, 0);
  zero_heads(zeroed.initializers["b_in"], removed, 0, 0);
  EXPECT_GT(test::max_relative_error(test::run_dense(zeroed, x), test::run_dense(original, x)), 1e-3)
      << "the removed heads carried something";
}

TEST(AttentionHeads, NothingRemovedLeavesTheModelAsItWas) {
  const Model original = fused_projection(12);
  Model same = original;
  const auto groups = test::prune_structured(same, "l1=0");
  ASSERT_NE(heads_group(groups), nullptr);
  EXPECT_EQ(heads_group(groups)->kept, kHeads);
  EXPECT_EQ(same.nodes.size(), original.nodes.size());
  for (const auto& [name, t] : original.initializers)
    EXPECT_EQ(same.initializers.at(name).shape(), t.shape());
}

TEST(AttentionHeads, BlocksThatCannotLoseHeadsSayWhy) {
  struct Case {
    const char* what;
    std::function<void(Model&)> change;
    const char* why;
  };
  const std::vector<Case> cases = {
      {"attention probabilities as a graph output", [](Model& m) { m.outputs.push_back(ValueInfo{"p"}); },
       "graph output"},
      {"a second reader of the scores",
       [](Model& m) {
         m.nodes.push_back(Node{"peek", "Relu", "", {"s1"}, {"peeked"}, {}});
         m.outputs.push_back(ValueInfo{"peeked"});
       },
       "read by node 'peek'"},
      {"the value weight shared",
       [](Model& m) {
         m.nodes.push_back(Node{"other", "MatMul", "", {"x", "wv"}, {"z"}, {}});
         m.outputs.push_back(ValueInfo{"z"});
       },
       "shares its weight 'wv'"},
      {"a mask that varies by head",
       [](Model& m) {
         m.initializers["mask"] = test::random_f32({1, kHeads, kSeq, kSeq}, 60);
       },
       "varies by head"},
      {"Softmax over another axis", [](Model& m) { m.nodes[15].attrs["axis"] = int64_t{2}; },
       "not over the last axis"},
      {"heads joined without moving them back beside their channels",
       [](Model& m) {  // [N, 4, 5, 3] read as [N, 5, 12]: a valid Reshape that mixes heads and tokens
         m.initializers["join"] = test::make_i64({3}, {0, kSeq, kChannels});
         m.nodes[18].inputs[0] = "a0";
         m.nodes.erase(m.nodes.begin() + 17);
       },
       "do not reach the merge"},
      {"the layer's own rule", [](Model&) {}, "rule none for 'k_mm'"},
  };
  for (const Case& c : cases) {
    Model m = separate_projections(20);
    c.change(m);
    const Model before = m;
    std::map<std::string, StructuredRule> per_layer;
    if (std::string(c.what) == "the layer's own rule") per_layer["k_mm"] = {StructuredRule::Norm::none, 0};
    const auto groups = test::prune_structured(m, "l1=0.5", per_layer);
    const ChannelGroup* heads = heads_group(groups);
    ASSERT_NE(heads, nullptr) << c.what;
    EXPECT_EQ(heads->kept, kHeads) << c.what;
    EXPECT_NE(heads->kept_whole.find(c.why), std::string::npos) << c.what << ": " << heads->kept_whole;
    EXPECT_EQ(m.initializers.at("wv").shape(), before.initializers.at("wv").shape()) << c.what;
  }
}

// Query and key from one projection are not a block this pass follows: nothing changes.
TEST(AttentionHeads, QueryAndKeyFromOneProjectionAreLeftAlone) {
  Model m = separate_projections(21);
  m.nodes[5].inputs[1] = "q0";  // k_add reads the query's projection
  m.nodes.erase(m.nodes.begin() + 4);
  m.initializers.erase("wk");
  const Model before = m;
  const auto groups = test::prune_structured(m, "l1=0.5");
  EXPECT_EQ(heads_group(groups), nullptr);
  for (const auto& [name, t] : before.initializers)
    EXPECT_EQ(m.initializers.at(name).shape(), t.shape()) << name;
}

// A mask given with the batch ([N, 1, 1, tokens], as BERT's exports take it) does not vary by head;
// a [1, C] bias that the query and key share is copied where their slices would differ.
TEST(AttentionHeads, ABatchMaskAndASharedBiasStillLoseHeads) {
  Model original = separate_projections(22);
  original.initializers.erase("mask");
  original.inputs.push_back(ValueInfo{"mask", ElemType::f32, {-1, 1, 1, kSeq}, {"N", "", "", ""}, true});
  original.initializers["bq"].reshape({1, kChannels});
  original.nodes[5].inputs[0] = "bq";  // k_add
  original.initializers.erase("bk");
  for (const char* w : {"wq", "wk", "wv"}) zero_heads(original.initializers[w], {0, 3}, 1);
  zero_heads(original.initializers["bq"], {0, 3}, 1);
  zero_heads(original.initializers["bv"], {0, 3}, 0);
  zero_heads(original.initializers["wo"], {0, 3}, 0);
  Model pruned = original;
  const auto groups = test::prune_structured(pruned, "l1=0.5");
  ASSERT_NE(heads_group(groups), nullptr);
  EXPECT_EQ(heads_group(groups)->kept, 2) << heads_group(groups)->kept_whole;
  EXPECT_EQ(pruned.initializers.at("bq").shape(), (Shape{1, 6}));
  const std::vector<Tensor> inputs = {test::random_f32({2, kSeq, kEmbed}, 23),
                                      test::random_f32({2, 1, 1, kSeq}, 24)};
  auto run = [&](const Model& m) {
    auto ex = Executor::create(m);
    EXPECT_TRUE(ex.ok()) << ex.status().message();
    auto y = (*ex)->run(inputs);
    EXPECT_TRUE(y.ok()) << y.status().message();
    return y.ok() ? *(*y)[0] : Tensor();
  };
  EXPECT_LT(test::max_relative_error(run(pruned), run(original)), 1e-5);
}

// PyTorch's nn.TransformerEncoder as exported (shapes computed from Shape nodes, the batch
// dynamic), two of four heads in each layer dead: the pruned model gives PyTorch's outputs.
TEST(AttentionHeads, PyTorchTransformerEncoderLosesItsDeadHeads) {
  for (const std::string opset : {"op13", "op11"}) {
    SCOPED_TRACE(opset);
    const std::string dir = SPARROW_CORPUS_DIR;
    const std::string path = dir + "/transformer_dead_heads_" + opset + ".onnx";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "corpus model not generated (needs torch): " << path;
    auto model = load_onnx(path);
    ASSERT_TRUE(model.ok()) << model.status().message();
    auto x = read_npy(dir + "/transformer_dead_heads_" + opset + ".in0.npy");
    auto expected = read_npy(dir + "/transformer_dead_heads_" + opset + ".out0.npy");
    ASSERT_TRUE(x.ok() && expected.ok());
    Model pruned = *model;
    const StructuredRule none{StructuredRule::Norm::none, 0};  // the feed-forward units are alive
    const auto groups = test::prune_structured(
        pruned, "l1=0.5", {{"/enc/layers.0/linear1/MatMul", none}, {"/enc/layers.1/linear1/MatMul", none}});
    int blocks = 0;
    for (const ChannelGroup& g : groups) {
      if (g.head_width == 0) continue;
      ++blocks;
      EXPECT_EQ(g.channels, 4);
      EXPECT_EQ(g.kept, 2) << g.kept_whole;
    }
    EXPECT_EQ(blocks, 2);
    EXPECT_LT(pruned.nodes.size(), model->nodes.size()) << "the shape computations only the Reshapes read go";
    EXPECT_LT(test::max_relative_error(test::run_dense(pruned, *x), *expected), 1e-4);
    const Tensor x1 = test::random_f32({1, x->dim(1), x->dim(2)}, 70);
    EXPECT_LT(test::max_relative_error(test::run_dense(pruned, x1), test::run_dense(*model, x1)), 1e-4);
  }
}

// The CLI end to end: compress prints and records the heads, the file runs, and its dense export
// gives PyTorch's outputs within the 8-bit codes' error.
TEST(AttentionHeads, CompressInspectAndExportShowTheSmallerBlocks) {
  const std::string dir = SPARROW_CORPUS_DIR;
  const std::string model = dir + "/transformer_dead_heads_op13.onnx";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "corpus model not generated (needs torch): " << model;
  const std::string out = test::temp_dir("attention_heads");
  const auto compressed =
      test::run_cli("compress " + model + " -o " + out + "/t.spw --sparsity 0 --bits 8 " +
                    "--structured l1=0.5 --layer /enc/layers.0/linear1/MatMul:structured=none " +
                    "--layer /enc/layers.1/linear1/MatMul:structured=none");
  ASSERT_EQ(compressed.exit_code, 0) << compressed.output;
  EXPECT_NE(compressed.output.find("heads (8 channels each) of /enc/layers.1/self_attn/MatMul: 4 -> 2"),
            std::string::npos)
      << compressed.output;
  const auto inspected = test::run_cli("inspect " + out + "/t.spw --json");
  ASSERT_EQ(inspected.exit_code, 0) << inspected.output;
  EXPECT_NE(inspected.output.find("\"head_width\""), std::string::npos);
  ASSERT_EQ(test::run_cli("-q export " + out + "/t.spw -o " + out + "/t.onnx").exit_code, 0);
  auto exported = load_onnx(out + "/t.onnx");
  ASSERT_TRUE(exported.ok()) << exported.status().message();
  auto x = read_npy(dir + "/transformer_dead_heads_op13.in0.npy");
  auto expected = read_npy(dir + "/transformer_dead_heads_op13.out0.npy");
  ASSERT_TRUE(x.ok() && expected.ok());
  EXPECT_LT(test::max_relative_error(test::run_dense(*exported, *x), *expected), 0.05) << "8-bit codes";
}

}  // namespace
}  // namespace sparrow
