// Training with LibTorch: the IR round trip, learning a separable task, masks through momentum,
// and trained quantization.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <png.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

#include "api/compress.h"
#include "sparrow/compress.h"
#include "sparrow/dataset.h"
#include "sparrow/format.h"
#include "sparrow/onnx.h"
#include "sparrow/retrain.h"
#include "sparrow/train.h"

namespace sparrow {
namespace {

// Ten classes, each a fixed random pattern of 28x28 pixels, plus noise: easy to learn.
LabeledData separable_digits(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  std::mt19937 pattern_rng(99);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<std::vector<float>> patterns(10, std::vector<float>(784));
  for (auto& p : patterns)
    for (auto& v : p) v = u(pattern_rng) < 0.2f ? 1.0f : 0.0f;
  LabeledData d{Tensor(DType::f32, {n, 1, 28, 28}), {}};
  for (int64_t i = 0; i < n; ++i) {
    int64_t label = static_cast<int64_t>(rng() % 10);
    d.labels.push_back(label);
    for (int j = 0; j < 784; ++j) d.inputs.f32_data()[i * 784 + j] = patterns[label][j] + noise(rng);
  }
  return d;
}

TrainOptions quick(int epochs) {
  TrainOptions o;
  o.epochs = epochs;
  o.lr = 0.05;
  o.threads = 2;
  return o;
}

TEST(Train, ArchitecturesHaveThePapersSizes) {
  auto l300 = make_architecture("lenet300", 1);
  auto l5 = make_architecture("lenet5", 1);
  ASSERT_TRUE(l300.ok() && l5.ok());
  EXPECT_EQ(l300->parameter_count(), 266610);
  EXPECT_EQ(l5->parameter_count(), 431080);
  EXPECT_FALSE(make_architecture("resnet", 1).ok());
}

TEST(Train, ZeroEpochsLeaveTheWeightsBitIdentical) {
  Model m = *make_architecture("lenet5", 3);
  Model copy = m;
  auto r = train_model(m, separable_digits(64, 1), nullptr, quick(0));
  ASSERT_TRUE(r.ok()) << r.status().message();
  for (const auto& [name, t] : copy.initializers)
    EXPECT_EQ(std::memcmp(t.raw(), m.initializers.at(name).raw(), t.bytes()), 0) << name;
}

TEST(Train, DivergenceStopsWithAnErrorAndKeepsTheLastFiniteWeights) {
  Model m = *make_architecture("lenet300", 5);
  TrainOptions o = quick(2);
  o.lr = 1e30;
  auto r = train_model(m, separable_digits(256, 6), nullptr, o);
  ASSERT_FALSE(r.ok()) << "a learning rate of 1e30 diverges";
  EXPECT_NE(r.status().message().find("diverged in epoch 1 of 2"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("--lr"), std::string::npos) << r.status().message();
  for (const auto& [name, t] : m.initializers)
    for (int64_t i = 0; i < t.numel(); ++i)
      ASSERT_TRUE(std::isfinite(t.f32_data()[i])) << name << "[" << i << "]";
}

TEST(Train, LearnsASeparableTask) {
  Model m = *make_architecture("lenet300", 2);
  auto train = separable_digits(2000, 3), val = separable_digits(500, 4);
  auto r = train_model(m, train, &val, quick(3));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(r->back().val_accuracy, 0.95);
  EXPECT_LT(r->back().loss, r->front().loss);
  // The trained IR gives the same answers on the dense executor.
  auto ex = Executor::create(m);
  auto out = (*ex)->run({&val.inputs, 1});
  int64_t correct = 0;
  for (int64_t i = 0; i < val.size(); ++i) {
    const float* row = (*out)[0]->f32_data() + i * 10;
    correct += std::max_element(row, row + 10) - row == val.labels[i];
  }
  EXPECT_NEAR(static_cast<double>(correct) / val.size(), r->back().val_accuracy, 0.01);
}

// A token model with every kind of learnt tensor besides the Gemm's: a position embedding (Add), a
// MatMul and its bias Add, a per-channel scale (Mul), a LayerNormalization and a BatchNormalization;
// and the constants that must stay: an additive attention mask before a Softmax, a scalar scale and
// the normalization's running statistics.
Model token_model_with_every_parameter_kind() {
  Model m;
  m.source = "tokens";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 4, 8}, {"N", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  auto& init = m.initializers;
  init["position"] = test::random_f32({4, 8}, 11);
  init["proj.weight"] = test::random_f32({8, 8}, 12);
  init["proj.bias"] = test::random_f32({8}, 13);
  init["mask"] = test::make_f32({4, 4}, {0, -2, -2, -2, 0, 0, -2, -2, 0, 0, 0, -2, 0, 0, 0, 0});
  init["gamma"] = test::random_f32({8}, 14);
  init["half"] = test::make_f32({}, {0.5f});
  init["ln.scale"] = test::random_f32({8}, 15);
  init["ln.bias"] = test::random_f32({8}, 16);
  init["bn.scale"] = test::random_f32({4}, 17);
  init["bn.bias"] = test::random_f32({4}, 18);
  init["bn.mean"] = test::random_f32({4}, 19);
  init["bn.var"] = test::make_f32({4}, {1.0f, 2.0f, 0.5f, 1.5f});
  init["fc.weight"] = test::random_f32({10, 32}, 20);
  init["fc.bias"] = test::random_f32({10}, 21);
  auto node = [&](std::string op, std::vector<std::string> in, std::string out,
                  std::map<std::string, AttrValue> attrs = {}) {
    m.nodes.push_back(Node{out, std::move(op), "", std::move(in), {out}, std::move(attrs)});
  };
  node("Add", {"x", "position"}, "placed");
  node("MatMul", {"placed", "proj.weight"}, "projected");
  node("Add", {"projected", "proj.bias"}, "biased");
  node("Transpose", {"biased"}, "keys", {{"perm", std::vector<int64_t>{0, 2, 1}}});
  node("MatMul", {"biased", "keys"}, "scores");
  node("Add", {"scores", "mask"}, "masked");
  node("Add", {"scores", "mask"}, "unused_sum");  // the mask used again, not before a Softmax
  node("Softmax", {"masked"}, "weights", {{"axis", int64_t{-1}}});
  node("MatMul", {"weights", "biased"}, "attended");
  node("Mul", {"attended", "gamma"}, "scaled");
  node("Mul", {"scaled", "half"}, "halved");
  node("LayerNormalization", {"halved", "ln.scale", "ln.bias"}, "normed", {{"axis", int64_t{-1}}});
  node("BatchNormalization", {"normed", "bn.scale", "bn.bias", "bn.mean", "bn.var"}, "channels");
  node("Flatten", {"channels"}, "flat");
  node("Gemm", {"flat", "fc.weight", "fc.bias"}, "y", {{"transB", int64_t{1}}});
  return m;
}

TEST(Train, EveryLearntTensorTrainsAndTheConstantsStay) {
  const Model original = token_model_with_every_parameter_kind();
  LabeledData data{test::random_f32({200, 4, 8}, 5), {}};
  for (int64_t i = 0; i < data.size(); ++i) data.labels.push_back(i % 10);
  Model m = original;
  auto r = train_model(m, data, nullptr, quick(2));
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto moved = [&](const std::string& name) {
    const Tensor &a = original.initializers.at(name), &b = m.initializers.at(name);
    return std::memcmp(a.raw(), b.raw(), a.bytes()) != 0;
  };
  for (const char* learnt : {"position", "proj.weight", "proj.bias", "gamma", "ln.scale", "ln.bias",
                             "bn.scale", "bn.bias", "fc.weight", "fc.bias"})
    EXPECT_TRUE(moved(learnt)) << learnt << " was not trained";
  for (const char* constant : {"mask", "half", "bn.mean", "bn.var"})
    EXPECT_FALSE(moved(constant)) << constant << " was trained";
}

// PyTorch's nn.TransformerEncoder as exported (shape arithmetic on Shape, Gather, Unsqueeze, Concat
// and integer Div; Slices of a fused projection; LayerNorm spelled out in ReduceMean, Pow, Sqrt):
// training computes what the engine does, and after its heads are removed it still learns.
TEST(Train, APyTorchTransformerEncoderTrainsAsTheEngineRunsIt) {
  for (const char* opset : {"op13", "op11"}) {  // op11: Unsqueeze's axes and Softmax's axis differ
    SCOPED_TRACE(opset);
    const std::string path = std::string(SPARROW_CORPUS_DIR) + "/transformer_dead_heads_" + opset + ".onnx";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "corpus model not generated (needs torch): " << path;
    Model m = *load_onnx(path);
    LabeledData data{test::random_f32({256, 6, 32}, 5), {}};
    const Tensor y = test::run_dense(m, data.inputs);
    for (int64_t i = 0; i < data.size(); ++i) {
      const float* row = y.f32_data() + i * 10;
      data.labels.push_back(std::max_element(row, row + 10) - row);
    }
    TrainOptions still = quick(1);
    still.lr = 1e-9;
    Model same = m;
    auto r = train_model(same, data, &data, still);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_GE(r->back().val_accuracy, 0.99) << "the trainer's forward pass agrees with the engine's";

    Model pruned = m;
    auto groups = prune_channels(pruned, StructuredRule{StructuredRule::Norm::l1, 0.5});
    ASSERT_TRUE(groups.ok()) << groups.status().message();
    ASSERT_TRUE(std::any_of(groups->begin(), groups->end(),
                            [](const ChannelGroup& g) { return g.head_width > 0 && g.kept < g.channels; }));
    TrainOptions learn = quick(4);
    learn.lr = 0.02;
    r = train_model(pruned, data, &data, learn);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_LT(r->back().loss, r->front().loss);
  }
}

// Before opset 13 Softmax normalizes over all axes from `axis` on, flattened: the trainer's
// forward pass must agree with the engine's on a rank-4 input with axis 1.
TEST(Train, SoftmaxBeforeOpset13SpansTheAxesFromItsAxisOn) {
  Model m;
  m.opset = 11;
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, 2, 3, 4}, {"N", "", "", ""}, true}};
  m.outputs = {ValueInfo{"y"}};
  m.initializers["w"] = test::random_f32({24, 10}, 3);
  m.initializers["scale"] = test::make_f32({}, {40.0f});
  m.nodes = {Node{"sm", "Softmax", "", {"x"}, {"p"}, {{"axis", int64_t{1}}}},
             Node{"flat", "Flatten", "", {"p"}, {"f"}, {}}, Node{"big", "Mul", "", {"f", "scale"}, {"g"}, {}},
             Node{"fc", "MatMul", "", {"g", "w"}, {"y"}, {}}};
  LabeledData data{test::random_f32({200, 2, 3, 4}, 4), {}};
  const Tensor y = test::run_dense(m, data.inputs);
  for (int64_t i = 0; i < data.size(); ++i)
    data.labels.push_back(std::max_element(y.f32_data() + i * 10, y.f32_data() + (i + 1) * 10) -
                          (y.f32_data() + i * 10));
  TrainOptions still = quick(1);
  still.lr = 1e-9;
  auto r = train_model(m, data, &data, still);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GE(r->back().val_accuracy, 0.99);
}

TEST(Train, ChannelSensitivityScanTakesAttentionHeadsAsGroups) {
  const std::string path = std::string(SPARROW_CORPUS_DIR) + "/transformer_dead_heads_op13.onnx";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "corpus model not generated (needs torch): " << path;
  const Model m = *load_onnx(path);
  LabeledData val{test::random_f32({64, 6, 32}, 8), {}};
  const Tensor y = test::run_dense(m, val.inputs);
  for (int64_t i = 0; i < val.size(); ++i)
    val.labels.push_back(std::max_element(y.f32_data() + i * 10, y.f32_data() + (i + 1) * 10) -
                         (y.f32_data() + i * 10));
  auto r = channel_sensitivity_scan(m, val, {0.5}, 0.0, 1, false);
  ASSERT_TRUE(r.ok()) << r.status().message();
  int heads = 0;
  for (const auto& g : r->groups) {
    if (g.head_width == 0) continue;
    ++heads;
    EXPECT_EQ(g.channels, 4);
    EXPECT_EQ(g.head_width, 8);
    ASSERT_EQ(g.points.size(), 1u);
    EXPECT_EQ(g.points[0].kept, 2);
    EXPECT_DOUBLE_EQ(g.points[0].accuracy, 1.0) << g.producers.front();
    EXPECT_DOUBLE_EQ(g.proposed_fraction, 0.5);
  }
  EXPECT_EQ(heads, 2);
}

TEST(Train, SyntheticDigitsAreDeterministicAndLearnable) {
  std::string a = test::temp_dir("digits_a"), b = test::temp_dir("digits_b"), c = test::temp_dir("digits_c");
  ASSERT_TRUE(write_synthetic_digits(a, {.train = 3000, .test = 500, .seed = 5}).ok());
  ASSERT_TRUE(write_synthetic_digits(b, {.train = 3000, .test = 500, .seed = 5}).ok());
  ASSERT_TRUE(write_synthetic_digits(c, {.train = 3000, .test = 500, .seed = 6}).ok());
  auto images = [](const std::string& dir) { return *read_idx(dir + "/train-images-idx3-ubyte.gz"); };
  Tensor ia = images(a), ib = images(b), ic = images(c);
  EXPECT_EQ(ia.shape(), (Shape{3000, 28, 28}));
  EXPECT_EQ(std::memcmp(ia.raw(), ib.raw(), ia.bytes()), 0);
  EXPECT_NE(std::memcmp(ia.raw(), ic.raw(), ia.bytes()), 0);
  auto train = load_labeled_idx(a + "/train-images-idx3-ubyte.gz", a + "/train-labels-idx1-ubyte.gz",
                                {1, 28, 28}, 1.0f / 255, 0, 0);
  auto test = load_labeled_idx(a + "/t10k-images-idx3-ubyte.gz", a + "/t10k-labels-idx1-ubyte.gz",
                               {1, 28, 28}, 1.0f / 255, 0, 0);
  ASSERT_TRUE(train.ok() && test.ok());
  std::set<int64_t> classes(train->labels.begin(), train->labels.end());
  EXPECT_EQ(classes.size(), 10u);
  Model m = *make_architecture("lenet300", 2);
  auto r = train_model(m, *train, &*test, quick(3));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(r->back().val_accuracy, 0.9);
  EXPECT_FALSE(write_synthetic_digits(a, {.train = 0, .test = 1, .seed = 1}).ok());
}

// `d`'s images mirrored left to right, or moved right and down by `shift` pixels (zeros move in).
LabeledData transformed(const LabeledData& d, bool mirror, int64_t shift) {
  LabeledData out = d;
  for (int64_t i = 0; i < d.size(); ++i)
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x) {
        const int64_t sy = y - shift, sx = mirror ? 27 - x : x - shift;
        out.inputs.f32_data()[i * 784 + y * 28 + x] =
            sy >= 0 && sx >= 0 ? d.inputs.f32_data()[i * 784 + sy * 28 + sx] : 0.0f;
      }
  return out;
}

// Flips teach mirrored images and crops moved ones (an MLP learns neither from the images as
// given); the same seed draws the same augmentation.
TEST(Train, AugmentationTeachesMirroredAndMovedImagesDeterministically) {
  const LabeledData train = separable_digits(2000, 3), val = separable_digits(500, 4);
  const LabeledData mirrored = transformed(val, true, 0), moved = transformed(val, false, 2);
  auto trained = [&](Augmentation augment) {
    Model m = *make_architecture("lenet300", 2);
    TrainOptions o = quick(3);
    o.augment = augment;
    auto r = train_model(m, train, nullptr, o);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return m;
  };
  auto accuracy_on = [](const Model& m, const LabeledData& d) {
    auto ex = Executor::create(m);
    auto out = (*ex)->run({&d.inputs, 1});
    int64_t correct = 0;
    for (int64_t i = 0; i < d.size(); ++i) {
      const float* row = (*out)[0]->f32_data() + i * 10;
      correct += std::max_element(row, row + 10) - row == d.labels[static_cast<size_t>(i)];
    }
    return static_cast<double>(correct) / static_cast<double>(d.size());
  };
  const Model plain = trained({}), flipped = trained({.flip = true}), cropped = trained({.crop_padding = 3});
  EXPECT_LT(accuracy_on(plain, mirrored), 0.5);
  EXPECT_GT(accuracy_on(flipped, mirrored), 0.9);
  EXPECT_GT(accuracy_on(cropped, moved), accuracy_on(plain, moved) + 0.2)
      << accuracy_on(cropped, moved) << " against " << accuracy_on(plain, moved);
  const Model again = trained({.flip = true});
  for (const auto& [name, t] : flipped.initializers)
    EXPECT_EQ(std::memcmp(t.raw(), again.initializers.at(name).raw(), t.bytes()), 0) << name << ": same seed";
  Model m = *make_architecture("lenet300", 2);
  TrainOptions o = quick(1);
  o.augment.flip = true;
  LabeledData rows{Tensor(DType::f32, {8, 784}), std::vector<int64_t>(8, 1)};
  auto flat = train_model(m, rows, nullptr, o);
  ASSERT_FALSE(flat.ok());
  EXPECT_NE(flat.status().message().find("needs images [N, C, H, W]"), std::string::npos)
      << flat.status().message();
}

TEST(Train, MaskedWeightsStayZeroThroughMomentum) {
  Model m = *make_architecture("lenet300", 4);
  Tensor& w = m.initializers.at("fc1.weight");
  prune_weights(w.f32_span(), PruneRule{0.8, std::nullopt});
  Tensor mask(DType::f32, w.shape());
  for (int64_t i = 0; i < w.numel(); ++i) mask.f32_data()[i] = w.f32_data()[i] != 0.0f;
  std::map<std::string, Tensor> masks{{"fc1.weight", mask}};
  TrainOptions o = quick(2);
  o.momentum = 0.99;  // large momentum: any leak would show
  ASSERT_TRUE(train_model(m, separable_digits(512, 5), nullptr, o, &masks).ok());
  int64_t zeros = 0, revived = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    zeros += mask.f32_data()[i] == 0.0f;
    revived += mask.f32_data()[i] == 0.0f && w.f32_data()[i] != 0.0f;
  }
  EXPECT_EQ(revived, 0);
  EXPECT_NEAR(static_cast<double>(zeros) / w.numel(), 0.8, 0.01);
}

TEST(Train, TrainedQuantizationKeepsTheCodebookAndLowersTheLoss) {
  Model m = *make_architecture("lenet300", 5);
  auto train = separable_digits(1500, 6);
  ASSERT_TRUE(train_model(m, train, nullptr, quick(2)).ok());
  CompressOptions co;
  co.all.prune.sparsity = 0.8;
  co.fc_bits = 3;  // coarse: fine-tuning has something to recover
  auto r = compress_model(m, co);
  ASSERT_TRUE(r.ok());
  auto codes_before = decode_codes(r->spw.tensors[0]);
  TrainOptions o = quick(3);
  o.lr = 0.01;
  auto epochs = finetune_codebooks(r->spw, train, nullptr, o);
  ASSERT_TRUE(epochs.ok()) << epochs.status().message();
  EXPECT_LT(epochs->back().loss, epochs->front().loss);
  EXPECT_EQ(*decode_codes(r->spw.tensors[0]), *codes_before) << "assignments stay fixed";
  for (const auto& t : r->spw.tensors) {
    EXPECT_EQ(t.codebook[0], 0.0f);
    auto w = decompress(t);
    std::set<float> distinct(w->f32_span().begin(), w->f32_span().end());
    EXPECT_LE(distinct.size(), size_t{1} << t.weight_bits) << t.name;
  }
}

TEST(Train, IterativePruningReachesTheTargets) {
  EXPECT_DOUBLE_EQ(sparsity_ramp(3, 3), 1.0);
  EXPECT_GT(sparsity_ramp(1, 3), 1.0 / 3) << "the cubic ramp prunes most in the first step";
  Model m = *make_architecture("lenet300", 6);
  auto train = separable_digits(800, 7);
  CompressOptions co;
  co.all.prune.sparsity = 0.9;
  co.layers["fc3.weight"].exclude = true;
  RetrainOptions r;
  r.prune_steps = 2;
  r.retrain = quick(1);
  r.finetune = quick(1);
  RetrainReport report;
  auto result = compress_with_retraining(m, co, train, nullptr, r, "{}", &report);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(report.steps.size(), 2u);
  EXPECT_EQ(report.finetune.size(), 1u);
  for (const auto& t : result->spw.tensors)
    EXPECT_NEAR(static_cast<double>(t.nonzeros()) / t.numel(), 0.1, 0.01) << t.name;
  EXPECT_TRUE(result->spw.graph.initializers.count("fc3.weight")) << "excluded layers stay dense";
}

TEST(Train, DsdRestoresDenseConnectivity) {
  Model m = *make_architecture("lenet300", 8);
  auto train = separable_digits(800, 9);
  ASSERT_TRUE(train_model(m, train, nullptr, quick(1)).ok());
  DsdOptions o;
  o.sparsity = 0.5;
  o.sparse = quick(1);
  o.redense = quick(1);
  o.redense.lr = 0.005;
  auto r = dsd_train(m, train, nullptr, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->phases.size(), 2u);
  EXPECT_NEAR(r->sparse_fraction_after_sparse, 0.5, 0.01);
  EXPECT_LT(r->sparse_fraction_after_redense, 0.01) << "re-densing brings the pruned weights back";
}

// A LeNet-300-100 trained two epochs on the separable task, for the sensitivity scans.
Model scanned_lenet300() {
  Model m = *make_architecture("lenet300", 10);
  EXPECT_TRUE(train_model(m, separable_digits(1000, 11), nullptr, quick(2)).ok());
  return m;
}

TEST(Train, SensitivityScanProposesPerLayerSparsities) {
  const Model m = scanned_lenet300();
  const auto val = separable_digits(300, 12);
  auto r = sensitivity_scan(m, val, {0.5, 0.9, 0.99}, 0.02, 2, false);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->layers.size(), 3u);
  for (const auto& l : r->layers) {
    ASSERT_EQ(l.points.size(), 3u);
    EXPECT_LE(l.points.back().accuracy, l.points.front().accuracy + 1e-9) << l.weight;
    for (const auto& p : l.points) {
      if (p.sparsity <= l.proposed_sparsity) {
        EXPECT_GE(p.accuracy, r->baseline_accuracy - 0.02 - 1e-9);
      }
    }
  }
  EXPECT_FALSE(sensitivity_scan(m, val, {1.5}, 0.01, 1, false).ok());
}

// The rank scan factorizes one layer at a time: each point keeps at most its fraction of the
// layer's weights (from rank 2), the factors' error shrinks as the fraction grows (a truncated SVD keeps more
// of the spectrum), and a proposed fraction stays within the allowed drop.
TEST(Train, RankSensitivityScanProposesPerLayerFractions) {
  const Model m = scanned_lenet300();
  const auto val = separable_digits(300, 12);
  auto r = rank_sensitivity_scan(m, val, {0.05, 0.2, 0.5}, 0.02, 2, false);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->layers.size(), 3u);
  for (const auto& l : r->layers) {
    ASSERT_FALSE(l.points.empty()) << l.weight;
    for (size_t i = 0; i < l.points.size(); ++i) {
      const RankPoint& p = l.points[i];
      if (p.rank > 1) {  // rank 1 is the least, even above the fraction
        EXPECT_LE(p.weights_after, p.params * static_cast<double>(l.weights)) << l.weight;
      }
      EXPECT_GE(p.rank, 1);
      if (i > 0) {
        EXPECT_GE(p.rank, l.points[i - 1].rank) << l.weight;
        EXPECT_LE(p.relative_error, l.points[i - 1].relative_error + 1e-9) << l.weight;
      }
      if (p.params == l.proposed_params) {
        EXPECT_GE(p.accuracy, r->baseline_accuracy - 0.02 - 1e-9) << l.weight << " " << p.params;
      }
    }
    if (l.proposed_params == 1) {  // whole: no point was within the drop
      for (const auto& p : l.points) EXPECT_LT(p.accuracy, r->baseline_accuracy - 0.02) << l.weight;
    }
  }
  EXPECT_FALSE(rank_sensitivity_scan(m, val, {1.0}, 0.01, 1, false).ok());
  EXPECT_FALSE(rank_sensitivity_scan(m, val, {0.0}, 0.01, 1, false).ok());
}

// The channel scan removes each group's weakest filters alone: fewer channels at larger fractions,
// the output layer's group (it reaches the graph output) not scanned, and a proposed fraction
// within the allowed drop.
TEST(Train, ChannelSensitivityScanProposesPerGroupFractions) {
  const Model m = scanned_lenet300();
  const auto val = separable_digits(300, 12);
  auto r = channel_sensitivity_scan(m, val, {0.25, 0.5, 0.9}, 0.02, 2, false);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->groups.size(), 2u);  // fc1 (300 units) and fc2 (100); fc3 writes the output
  EXPECT_EQ(r->groups[0].channels, 300);
  EXPECT_EQ(r->groups[1].channels, 100);
  for (const auto& g : r->groups) {
    ASSERT_EQ(g.points.size(), 3u);
    EXPECT_EQ(g.points[0].kept, g.channels - g.channels / 4) << g.producers.front();
    for (size_t i = 1; i < g.points.size(); ++i) EXPECT_LT(g.points[i].kept, g.points[i - 1].kept);
    for (const auto& p : g.points)
      if (p.fraction <= g.proposed_fraction) {
        EXPECT_GE(p.accuracy, r->baseline_accuracy - 0.02 - 1e-9) << g.producers.front() << " " << p.fraction;
      }
  }
  EXPECT_FALSE(channel_sensitivity_scan(m, val, {1.0}, 0.01, 1, false).ok());
}

// A LeNet-300-100 trained on the separable task: a teacher that knows it.
Model trained_teacher() {
  Model teacher = *make_architecture("lenet300", 5);
  auto r = train_model(teacher, separable_digits(800, 11), nullptr, quick(2));
  EXPECT_TRUE(r.ok()) << r.status().message();
  return teacher;
}

LabeledData without_labels(LabeledData d) {
  d.labels.clear();
  return d;
}

TEST(Distill, AStudentLearnsTheTeacherFromUnlabeledInputs) {
  const Model teacher = trained_teacher();
  const LabeledData held_out = separable_digits(300, 12);
  for (DistillLoss loss : {DistillLoss::kl, DistillLoss::mse}) {
    Model student = *make_architecture("lenet300", 9);  // untrained
    LabeledData inputs = without_labels(separable_digits(800, 13));
    ASSERT_TRUE(add_teacher_outputs(teacher, inputs, 2).ok());
    TrainOptions o = quick(3);
    o.distill.enabled = true;
    o.distill.loss = loss;
    o.lr = loss == DistillLoss::kl ? 0.05 : 0.01;
    auto before = output_agreement(teacher, student, held_out.inputs, 2);
    auto r = train_model(student, inputs, nullptr, o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    auto after = output_agreement(teacher, student, held_out.inputs, 2);
    ASSERT_TRUE(before.ok() && after.ok());
    EXPECT_LT(before->top1, 0.5);
    EXPECT_GT(after->top1, 0.95) << "loss " << static_cast<int>(loss);
    EXPECT_GT(*classification_accuracy(student, held_out, 2), 0.95) << "it learned the task without a label";
    if (loss == DistillLoss::mse) {  // about 0.5x after 3 epochs; hard labels alone give about 0.9x
      EXPECT_LT(after->mean_abs_difference, 0.65 * before->mean_abs_difference)
          << "MSE matches the teacher's raw outputs, not only its answers: " << before->mean_abs_difference
          << " -> " << after->mean_abs_difference;
    }
  }
}

TEST(Distill, UnlabeledDataNeedsDistillationAndDistillationNeedsTeacherOutputs) {
  Model m = *make_architecture("lenet300", 1);
  auto unlabeled = train_model(m, without_labels(separable_digits(64, 1)), nullptr, quick(1));
  ASSERT_FALSE(unlabeled.ok());
  EXPECT_NE(unlabeled.status().message().find("no labels"), std::string::npos)
      << unlabeled.status().message();
  TrainOptions o = quick(1);
  o.distill.enabled = true;
  auto untaught = train_model(m, separable_digits(64, 1), nullptr, o);
  ASSERT_FALSE(untaught.ok());
  EXPECT_NE(untaught.status().message().find("teacher outputs"), std::string::npos)
      << untaught.status().message();
  auto accuracy = classification_accuracy(m, without_labels(separable_digits(8, 1)), 1);
  EXPECT_FALSE(accuracy.ok());
}

TEST(Distill, CompressionRetrainsFromTheSourceAndReportsAgreementWithIt) {
  const std::string dir = test::temp_dir("distill_compress");
  ASSERT_TRUE(save_onnx(trained_teacher(), dir + "/teacher.onnx").ok());
  LabeledData train = without_labels(separable_digits(800, 21));
  LabeledData test = without_labels(separable_digits(300, 22));
  auto compress = [&](int epochs) {
    api::CompressRequest r;
    r.model = dir + "/teacher.onnx";
    r.output = dir + "/student.spw";
    r.options.all.prune = PruneRule{0.97, std::nullopt};
    r.options.all.bits = 4;
    r.train = &train;
    r.test = &test;
    r.threads = 2;
    r.retrain.prune_steps = 2;
    r.retrain.retrain = quick(epochs);
    r.retrain.finetune = quick(epochs);
    r.retrain.finetune.lr = 0.001;
    r.retrain.retrain.distill.enabled = r.retrain.finetune.distill.enabled = true;
    return api::compress_file(r);
  };
  auto untrained = compress(0);
  auto distilled = compress(2);
  ASSERT_TRUE(untrained.ok()) << untrained.status().message();
  ASSERT_TRUE(distilled.ok()) << distilled.status().message();
  ASSERT_TRUE(untrained->agreement && distilled->agreement);
  EXPECT_FALSE(distilled->accuracy_before) << "no labels: agreement instead of accuracy";
  EXPECT_GT(distilled->agreement->top1, untrained->agreement->top1 + 0.02);
  EXPECT_GT(distilled->agreement->top1, 0.9);
  auto spw = read_spw(dir + "/student.spw");
  ASSERT_TRUE(spw.ok());
  EXPECT_NE(spw->metadata_json.find("\"distill\""), std::string::npos) << spw->metadata_json;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Starts `sparrow ARGS` (its output into LOG), waits for `file` to appear (a checkpoint), sends
// `signal` and returns the wait status.
int stop_cli_once_written(const std::string& args, const std::string& log, const std::string& file,
                          int signal) {
  const std::string command = "exec " + std::string(SPARROW_CLI) + " " + args + " > " + log + " 2>&1";
  const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
  pid_t pid = 0;
  if (::posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) return -1;
  for (int i = 0; i < 6000 && !std::filesystem::exists(file); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(pid, signal);
  int status = 0;
  return ::waitpid(pid, &status, 0) == pid ? status : -1;
}

// `sparrow train` stopped by Ctrl-C (SIGINT) or killed (SIGKILL) once its first epoch is
// checkpointed, then resumed, writes the same model as a run never stopped.
TEST(TrainCli, InterruptedOrKilledTrainingResumesToTheSameModel) {
  const std::string dir = test::temp_dir("resume");
  ASSERT_TRUE(write_synthetic_digits(dir + "/d", {.train = 8000, .test = 200, .seed = 2}).ok());
  const std::string train =
      "--threads 1 -q train --arch lenet300 --data " + dir + "/d --epochs 3 --seed 3 -o ";
  ASSERT_EQ(test::run_cli(train + dir + "/full.onnx").exit_code, 0);
  const std::string full = file_bytes(dir + "/full.onnx");
  ASSERT_FALSE(full.empty());
  EXPECT_FALSE(std::filesystem::exists(dir + "/full.onnx.ckpt")) << "removed once the output is written";
  for (int signal : {SIGINT, SIGKILL}) {
    const std::string out = dir + "/stopped" + std::to_string(signal) + ".onnx";
    const int status = stop_cli_once_written(train + out, out + ".log", out + ".ckpt", signal);
    ASSERT_NE(status, -1);
    ASSERT_TRUE(std::filesystem::exists(out + ".ckpt")) << "no checkpoint after the first epoch";
    EXPECT_FALSE(std::filesystem::exists(out)) << "stopped before the end: " << file_bytes(out + ".log");
    if (signal == SIGINT) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << "Ctrl-C: a clean exit with an error";
      EXPECT_NE(file_bytes(out + ".log").find("continue with --resume"), std::string::npos)
          << file_bytes(out + ".log");
      auto other = test::run_cli("--threads 1 -q train --arch lenet300 --data " + dir +
                                 "/d --epochs 4 --seed 3 --resume -o " + out);
      EXPECT_EQ(other.exit_code, 1);
      EXPECT_NE(
          other.output.find("written for another model, data size, batch, epoch count or optimizer setting"),
          std::string::npos)
          << other.output;
    }
    auto resumed = test::run_cli(train + out + " --resume");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_TRUE(file_bytes(out) == full) << "signal " << signal << ": the resumed run differs";
  }
  std::ofstream(dir + "/garbage.onnx.ckpt") << "not a checkpoint";
  auto garbage = test::run_cli(train + dir + "/garbage.onnx --resume");
  EXPECT_EQ(garbage.exit_code, 1);
  EXPECT_NE(garbage.output.find(dir + "/garbage.onnx.ckpt: not a readable checkpoint"), std::string::npos)
      << garbage.output;
  auto nothing = test::run_cli(train + dir + "/none.onnx --resume");
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_NE(nothing.output.find("no checkpoint at " + dir + "/none.onnx.ckpt"), std::string::npos)
      << nothing.output;
}

// The .spw's bytes without its metadata (which records the run's seconds).
std::string spw_without_metadata(const std::string& path) {
  auto spw = read_spw(path);
  if (!spw.ok()) return "unreadable: " + spw.status().message();
  spw->metadata_json.clear();
  auto bytes = serialize_spw(*spw, true);
  return bytes.ok() ? *bytes : "unserializable: " + bytes.status().message();
}

// `sparrow compress --data` stopped in its second pruning step (after the first step and one epoch
// of the second are checkpointed) by Ctrl-C or SIGKILL, then resumed, writes the same file as a run
// never stopped; a resume with another recipe is refused.
TEST(CompressResume, InterruptedOrKilledRetrainingResumesToTheSameFile) {
  const std::string dir = test::temp_dir("compress_resume");
  ASSERT_TRUE(write_synthetic_digits(dir + "/d", {.train = 6000, .test = 200, .seed = 4}).ok());
  ASSERT_TRUE(save_onnx(*make_architecture("lenet300", 5), dir + "/source.onnx").ok());
  const std::string compress = "--threads 1 -q compress " + dir +
                               "/source.onnx --sparsity 0.9 --bits 4 --data " + dir +
                               "/d --prune-steps 2 --retrain-epochs 2 --finetune-epochs 2 -o ";
  ASSERT_EQ(test::run_cli(compress + dir + "/full.spw").exit_code, 0);
  const std::string full = spw_without_metadata(dir + "/full.spw");
  ASSERT_EQ(full.find("unreadable"), std::string::npos) << full;
  for (const char* left : {".ckpt", ".ckpt.step1", ".ckpt.step2", ".ckpt.finetune"})
    EXPECT_FALSE(std::filesystem::exists(dir + "/full.spw" + left))
        << left << " removed once the output is written";
  for (int signal : {SIGINT, SIGKILL}) {
    const std::string out = dir + "/stopped" + std::to_string(signal) + ".spw";
    const int status = stop_cli_once_written(compress + out, out + ".log", out + ".ckpt.step2", signal);
    ASSERT_NE(status, -1);
    ASSERT_TRUE(std::filesystem::exists(out + ".ckpt.step1")) << file_bytes(out + ".log");
    EXPECT_FALSE(std::filesystem::exists(out)) << "stopped before the end: " << file_bytes(out + ".log");
    if (signal == SIGINT) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << "Ctrl-C: a clean exit with an error";
      EXPECT_NE(file_bytes(out + ".log").find("continue with --resume"), std::string::npos)
          << file_bytes(out + ".log");
      auto other =
          test::run_cli("--threads 1 -q compress " + dir + "/source.onnx --sparsity 0.8 --bits 4 --data " +
                        dir + "/d --prune-steps 2 --retrain-epochs 2 --finetune-epochs 2 --resume -o " + out);
      EXPECT_EQ(other.exit_code, 1);
      EXPECT_NE(other.output.find(out + ".ckpt: written for another source model, recipe"), std::string::npos)
          << other.output;
    }
    auto resumed = test::run_cli("--threads 1 " + compress.substr(std::string("--threads 1 -q ").size()) +
                                 out + " --resume");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("pruning step 1/2: resuming"), std::string::npos) << resumed.output;
    EXPECT_NE(resumed.output.find("resuming from " + out + ".ckpt.step2 after epoch"), std::string::npos)
        << resumed.output;
    EXPECT_TRUE(spw_without_metadata(out) == full) << "signal " << signal << ": the resumed run differs";
    EXPECT_FALSE(std::filesystem::exists(out + ".ckpt.step1"));
  }
  auto nothing = test::run_cli(compress + dir + "/none.spw --resume");
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_NE(nothing.output.find("no checkpoint at " + dir + "/none.spw.ckpt"), std::string::npos)
      << nothing.output;
}

// compress_with_retraining with a checkpoint path, interrupted (after `batches` batches) or not.
struct ResumableRun {
  double sparsity = 0.9;
  int retrain_epochs = 2, finetune_epochs = 1;
  std::string checkpoint, record;
  bool resume = false;
  int64_t interrupt_after = -1;  // batches before the interruption; -1: never
  int64_t batches = 0;           // batches asked about (trained, and the one interrupted)
};
Result<std::string> compress_resumable(ResumableRun& run) {
  CompressOptions o;
  o.all.prune = PruneRule{run.sparsity, std::nullopt};
  o.all.bits = 4;
  RetrainOptions r;
  r.prune_steps = 2;
  r.retrain = quick(run.retrain_epochs);
  r.finetune = quick(run.finetune_epochs);
  r.finetune.lr = 0.001;
  r.retrain.threads = r.finetune.threads = 1;
  r.checkpoint = run.checkpoint;
  r.resume = run.resume;
  r.retrain.interrupted = r.finetune.interrupted = [&run] { return ++run.batches == run.interrupt_after; };
  SP_ASSIGN_OR_RETURN(CompressResult result,
                      compress_with_retraining(*make_architecture("lenet300", 3), o,
                                               separable_digits(640, 31), nullptr, r, run.record));
  return serialize_spw(result.spw, true);
}

// A fresh run removes the phase files an earlier run left, so resuming it never takes another run's
// steps for its own; a phase of no epochs leaves the next one resumable.
TEST(CompressResume, ResumingNeverTakesAnEarlierRunsPhasesAndSkipsEmptyPhases) {
  const std::string dir = test::temp_dir("resume_library");
  ResumableRun a{.checkpoint = dir + "/run.ckpt", .record = "run A"};
  ASSERT_TRUE(compress_resumable(a).ok());  // leaves every phase file (the caller removes them)
  ASSERT_TRUE(std::filesystem::exists(dir + "/run.ckpt.finetune"));
  ResumableRun want{.sparsity = 0.8, .checkpoint = dir + "/other.ckpt", .record = "run B"};
  auto b_whole = compress_resumable(want);
  ASSERT_TRUE(b_whole.ok()) << b_whole.status().message();
  // Run B on run A's path: interrupted in its first step's second epoch (10 batches an epoch).
  ResumableRun b{.sparsity = 0.8, .checkpoint = dir + "/run.ckpt", .record = "run B", .interrupt_after = 15};
  EXPECT_FALSE(compress_resumable(b).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/run.ckpt.finetune")) << "run A's files removed";
  ResumableRun resumed{.sparsity = 0.8, .checkpoint = dir + "/run.ckpt", .record = "run B", .resume = true};
  auto b_resumed = compress_resumable(resumed);
  ASSERT_TRUE(b_resumed.ok()) << b_resumed.status().message();
  EXPECT_TRUE(*b_resumed == *b_whole) << "run B resumed differs from run B";
  EXPECT_EQ(resumed.batches, 10 + 20 + 10) << "step 1's second epoch, step 2, the fine-tuning";

  // No retraining epochs, two of fine-tuning, interrupted in the second: it resumes there.
  ResumableRun tune_whole{
      .retrain_epochs = 0, .finetune_epochs = 2, .checkpoint = dir + "/t0.ckpt", .record = "tune"};
  auto tuned = compress_resumable(tune_whole);
  ASSERT_TRUE(tuned.ok()) << tuned.status().message();
  ResumableRun stopped{.retrain_epochs = 0,
                       .finetune_epochs = 2,
                       .checkpoint = dir + "/t1.ckpt",
                       .record = "tune",
                       .interrupt_after = 15};
  EXPECT_FALSE(compress_resumable(stopped).ok());
  ResumableRun tune_resumed{.retrain_epochs = 0,
                            .finetune_epochs = 2,
                            .checkpoint = dir + "/t1.ckpt",
                            .record = "tune",
                            .resume = true};
  auto retuned = compress_resumable(tune_resumed);
  ASSERT_TRUE(retuned.ok()) << retuned.status().message();
  EXPECT_TRUE(*retuned == *tuned);
  EXPECT_EQ(tune_resumed.batches, 10) << "only the second epoch of fine-tuning";
}

// `sparrow train --teacher`: a student learns from a teacher's outputs, with or without labels;
// without them it reports its agreement with the teacher.
// --limit keeps the leading rows of an .npy, whether it is mapped (float32, as numpy writes it) or
// read (converted from float64): the same model as from a file of only those rows, and the rows
// counted in --json.
TEST(TrainCli, LimitKeepsTheLeadingRowsOfMappedAndReadArrays) {
  const std::string dir = test::temp_dir("limit_rows");
  const LabeledData d = separable_digits(200, 8);
  Tensor y(DType::i64, {200}), y_lead(DType::i64, {60});
  std::copy(d.labels.begin(), d.labels.end(), y.i64_data());
  std::copy(d.labels.begin(), d.labels.begin() + 60, y_lead.i64_data());
  ASSERT_TRUE(write_npy(dir + "/x.npy", d.inputs).ok());
  ASSERT_TRUE(write_npy(dir + "/y.npy", y).ok());
  ASSERT_TRUE(write_npy(dir + "/y60.npy", y_lead).ok());
  ASSERT_TRUE(write_npy(dir + "/x60.npy", slice(d, 0, 60).inputs).ok());
  {  // the same rows as float64: read and converted, not mapped
    std::string f64 = npy_bytes(d.inputs);
    const size_t header = f64.size() - d.inputs.bytes();
    std::string body;
    for (float v : d.inputs.f32_span()) {
      const double w = v;
      body.append(reinterpret_cast<const char*>(&w), sizeof w);
    }
    f64 = f64.substr(0, header) + body;
    f64.replace(f64.find("<f4"), 3, "<f8");
    std::ofstream(dir + "/x64.npy", std::ios::binary) << f64;
  }
  auto train = [&](const std::string& x, const std::string& labels, const std::string& extra,
                   const std::string& out) {
    auto r = test::run_cli("-q --threads 1 train --arch lenet300 --epochs 1 --validation 10 --json --data " +
                           dir + x + " --labels " + dir + labels + extra + " -o " + dir + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output.substr(r.output.find('{')));
  };
  const auto mapped = train("/x.npy", "/y.npy", " --limit 60", "/mapped.onnx");
  const auto read = train("/x64.npy", "/y.npy", " --limit 60", "/read.onnx");
  const auto lead = train("/x60.npy", "/y60.npy", "", "/lead.onnx");
  for (const auto* j : {&mapped, &read, &lead}) {
    EXPECT_EQ((*j)["rows"]["train"], 50) << *j;
    EXPECT_EQ((*j)["rows"]["validation"], 10) << *j;
  }
  const auto bytes = [&](const std::string& name) {
    std::ifstream in(dir + name, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  EXPECT_EQ(bytes("/mapped.onnx"), bytes("/lead.onnx"));
  EXPECT_EQ(bytes("/read.onnx"), bytes("/lead.onnx"));
}

TEST(TrainCli, AStudentLearnsFromATeacherWithOrWithoutLabels) {
  const std::string dir = test::temp_dir("teacher");
  const LabeledData d = separable_digits(600, 8);
  Tensor y(DType::i64, {600});
  std::copy(d.labels.begin(), d.labels.end(), y.i64_data());
  ASSERT_TRUE(write_npy(dir + "/x.npy", d.inputs).ok());
  ASSERT_TRUE(write_npy(dir + "/y.npy", y).ok());
  const std::string data = " --data " + dir + "/x.npy --validation 100 --json -o ";
  ASSERT_EQ(test::run_cli("-q --threads 1 train --arch lenet300 --labels " + dir + "/y.npy --epochs 3" +
                          data + dir + "/teacher.onnx")
                .exit_code,
            0);
  auto json_of = [&](const std::string& args) {
    auto r = test::run_cli("-q --threads 1 train --arch lenet300 --seed 5 --epochs 8 --lr 0.02 --teacher " +
                           dir + "/teacher.onnx" + args);
    EXPECT_EQ(r.exit_code, 0) << args << ": " << r.output;
    return r.exit_code == 0 ? nlohmann::json::parse(r.output) : nlohmann::json();
  };
  auto unlabeled = json_of(data + dir + "/s1.onnx");
  EXPECT_FALSE(unlabeled.contains("test_accuracy")) << "no labels";
  EXPECT_GT(unlabeled["agreement_with_teacher"]["top1"].get<double>(), 0.8) << unlabeled;
  auto labeled =
      json_of(" --labels " + dir + "/y.npy --distill-weight 0.5 --temperature 2" + data + dir + "/s2.onnx");
  EXPECT_GT(labeled["test_accuracy"].get<double>(), 0.8) << labeled;
  Model five;
  five.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 1, 28, 28}, {"N", "", "", ""}, true});
  five.outputs.push_back(ValueInfo{"y"});
  five.initializers["w"] = test::random_f32({5, 784}, 1);
  five.nodes.push_back(Node{"flat", "Flatten", "", {"x"}, {"f"}, {}});
  five.nodes.push_back(Node{"fc", "Gemm", "", {"f", "w"}, {"y"}, {{"transB", int64_t{1}}}});
  ASSERT_TRUE(save_onnx(five, dir + "/five.onnx").ok());
  auto mismatch =
      test::run_cli("-q train --arch lenet300 --teacher " + dir + "/five.onnx" + data + dir + "/s3.onnx");
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_NE(mismatch.output.find("the teacher gives [500, 5] outputs per row, the student 10"),
            std::string::npos)
      << mismatch.output;
}

// `sparrow repro` runs from a recipe file (configs/repro-*.json are built in); a short one on
// synthetic digits runs the whole reproduction and reports the file's figures.
TEST(TrainCli, ReproRunsFromRecipeFiles) {
  const std::string dir = test::temp_dir("repro");
  ASSERT_TRUE(write_synthetic_digits(dir + "/d", {.train = 2000, .test = 200, .seed = 4}).ok());
  std::ifstream builtin(std::string(SPARROW_SOURCE_DIR) + "/configs/repro-lenet300.json");
  nlohmann::json recipe = nlohmann::json::parse(builtin);
  EXPECT_EQ(recipe["paper"]["ratio"], 40);
  recipe["baseline_epochs"] = 1;
  recipe["compress"]["retrain"] = {{"prune_steps", 1}, {"retrain_epochs", 1}, {"finetune_epochs", 0}};
  recipe["paper"]["ratio"] = 41;  // read from the file, not the built-in one
  std::ofstream(dir + "/short.json") << recipe.dump();
  auto r = test::run_cli("-q --threads 1 repro lenet300 --data " + dir + "/d --config " + dir +
                         "/short.json --json -o " + dir + "/r.spw");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["paper"]["ratio"], 41);
  EXPECT_EQ(j["recipe"], dir + "/short.json");
  ASSERT_EQ(j["layers"].size(), 3u);
  EXPECT_EQ(j["layers"][0]["paper"]["name"], "ip1");
  EXPECT_NEAR(j["layers"][0]["kept"].get<double>(), 0.06, 0.001) << "the recipe's fc1 sparsity of 0.94";
  auto other = test::run_cli("repro lenet5 --data " + dir + "/d --config " + dir + "/short.json");
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.output.find("the recipe is for 'lenet300', not 'lenet5'"), std::string::npos)
      << other.output;
  std::ofstream(dir + "/bad.json") << R"({"network": "lenet300", "baseline_epochs": 1, "compress": {}})";
  auto bad = test::run_cli("repro lenet300 --data " + dir + "/d --config " + dir + "/bad.json");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find(dir + "/bad.json: not a repro recipe"), std::string::npos) << bad.output;
  auto unknown = test::run_cli("repro alexnet --data " + dir + "/d");
  EXPECT_NE(unknown.output.find("unknown network 'alexnet'"), std::string::npos) << unknown.output;
}

TEST(RetrainRecipe, BlockRoundTripsAndRefusesUnknownKeys) {
  RetrainOptions r;
  nlohmann::json source;
  auto block =
      nlohmann::json::parse(R"({"data": "x.npy", "labels": "y.npy", "validation": 10, "prune_steps": 4,
      "retrain_epochs": 3, "retrain_lr": 0.01, "finetune_epochs": 2, "finetune_lr": 0.002, "batch": 32,
      "seed": 7, "distill": {"loss": "mse", "temperature": 2, "weight": 0.5}, "mean": [0.5, 0.25],
      "std": [0.2, 0.1], "flip": true, "crop_padding": 4})");
  ASSERT_TRUE(api::apply_retrain_recipe(block, r, &source).ok());
  EXPECT_TRUE(r.finetune.augment.flip);
  EXPECT_EQ(r.retrain.augment.crop_padding, 4);
  EXPECT_EQ(source["mean"], nlohmann::json::parse("[0.5, 0.25]"));
  EXPECT_EQ(r.prune_steps, 4);
  EXPECT_EQ(r.retrain.epochs, 3);
  EXPECT_EQ(r.finetune.batch, 32);
  EXPECT_TRUE(r.finetune.distill.enabled);
  EXPECT_EQ(r.retrain.distill.loss, DistillLoss::mse);
  EXPECT_EQ(source["labels"], "y.npy");
  EXPECT_EQ(api::retrain_recipe_json(r, source), block) << api::retrain_recipe_json(r, source).dump();
  for (const char* bad :
       {R"({"prune_step": 2})", R"({"prune_steps": 0})", R"({"retrain_lr": "fast"})",
        R"({"distill": {"temperature": -1}})", R"({"flip": 1})", R"({"crop_padding": -2})"}) {
    RetrainOptions x;
    auto s = api::apply_retrain_recipe(nlohmann::json::parse(bad), x, &source);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("retrain."), std::string::npos) << s.message();
  }
  RetrainOptions x;
  auto refused = api::apply_retrain_recipe(nlohmann::json::parse(R"({"data": "x.npy"})"), x, nullptr);
  EXPECT_FALSE(refused.ok());
}

// x [N, 3, 32, 32] -> Conv 4x4 stride 4 -> Relu -> Flatten -> Gemm -> y [N, 10].
Model cifar_sized_cnn() {
  Model m;
  m.source = "cifar_sized_cnn";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 3, 32, 32}, {"N", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w"] = test::random_f32({4, 3, 4, 4}, 1);
  m.initializers["fw"] = test::random_f32({10, 256}, 2);
  m.initializers["fb"] = test::random_f32({10}, 3);
  m.nodes.push_back(Node{"conv", "Conv", "", {"x", "w"}, {"c"}, {{"strides", std::vector<int64_t>{4, 4}}}});
  m.nodes.push_back(Node{"relu", "Relu", "", {"c"}, {"r"}, {}});
  m.nodes.push_back(Node{"flat", "Flatten", "", {"r"}, {"f"}, {}});
  m.nodes.push_back(Node{"fc", "Gemm", "", {"f", "fw", "fb"}, {"y"}, {{"transB", int64_t{1}}}});
  return m;
}

// `sparrow compress DIR/m.onnx ARGS` into DIR/NAME.spw, then that file's outputs for DIR/probe.npy.
std::vector<float> compressed_outputs(const std::string& dir, const std::string& name,
                                      const std::string& args) {
  auto c =
      test::run_cli("-q --threads 1 compress " + dir + "/m.onnx -o " + dir + "/" + name + ".spw " + args);
  EXPECT_EQ(c.exit_code, 0) << name << ": " << c.output;
  auto r = test::run_cli("-q --threads 1 run " + dir + "/" + name + ".spw -i " + dir + "/probe.npy -o " +
                         dir + "/" + name + ".out.npy");
  EXPECT_EQ(r.exit_code, 0) << name << ": " << r.output;
  auto out = read_npy(dir + "/" + name + ".out.npy");
  return out.ok() ? std::vector<float>(out->f32_data(), out->f32_data() + out->numel())
                  : std::vector<float>();
}

// The same images as CIFAR-10 batches (pixel bytes normalized by --mean/--std), as an .npz and as
// .npy files (normalized the same way beforehand): the same training, so the same weights.
TEST(TrainingData, CifarBatchesNpzAndNpyTrainTheSameWeights) {
  const std::string dir = test::temp_dir("data_sources");
  ASSERT_TRUE(save_onnx(cifar_sized_cnn(), dir + "/m.onnx").ok());
  std::filesystem::create_directories(dir + "/cifar");
  ImageSet train, test_set;
  train.images = Tensor(DType::f32, {50, 3, 32, 32});
  test_set.images = Tensor(DType::f32, {10, 3, 32, 32});
  uint32_t state = 12345;
  for (ImageSet* set : {&train, &test_set}) {
    for (int64_t i = 0; i < set->images.numel(); ++i) {
      state = state * 1664525u + 1013904223u;
      set->images.f32_data()[i] = static_cast<float>(state >> 24);
    }
    for (int64_t i = 0; i < set->images.dim(0); ++i) set->labels.push_back(i % 10);
  }
  ASSERT_TRUE(write_cifar10(dir + "/cifar/data_batch_1.bin", train).ok());
  ASSERT_TRUE(write_cifar10(dir + "/cifar/test_batch.bin", test_set).ok());
  const float mean[] = {0.5f, 0.4f, 0.3f}, stdev[] = {0.2f, 0.25f, 0.3f};
  Tensor x(DType::f32, train.images.shape());
  for (int64_t n = 0; n < 50; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < 1024; ++i) {
        const int64_t at = (n * 3 + c) * 1024 + i;
        x.f32_data()[at] =
            (train.images.f32_data()[at] * (1.0f / 255.0f) + 0.0f - mean[c]) * (1.0f / stdev[c]);
      }
  Tensor y(DType::i64, {50});
  for (int64_t i = 0; i < 50; ++i) y.i64_data()[i] = train.labels[static_cast<size_t>(i)];
  ASSERT_TRUE(write_npy(dir + "/x.npy", x).ok());
  ASSERT_TRUE(write_npy(dir + "/y.npy", y).ok());
  ASSERT_TRUE(write_npz(dir + "/xy.npz", {{"x", x}, {"y", y}}, true).ok());
  ASSERT_TRUE(write_npy(dir + "/probe.npy", test::random_f32({4, 3, 32, 32}, 9)).ok());
  const std::string settings =
      " --sparsity 0.5 --bits 4 --encode-all --prune-steps 1 --retrain-epochs 1 --finetune-epochs 1 "
      "--validation 10";
  auto outputs_of = [&](const std::string& name, const std::string& data) {
    return compressed_outputs(dir, name, settings + " --data " + data);
  };
  const auto from_cifar = outputs_of("cifar", dir + "/cifar --mean 0.5,0.4,0.3 --std 0.2,0.25,0.3");
  ASSERT_EQ(from_cifar.size(), 40u);
  EXPECT_EQ(outputs_of("npz", dir + "/xy.npz"), from_cifar);
  EXPECT_EQ(outputs_of("npy", dir + "/x.npy --labels " + dir + "/y.npy"), from_cifar);
  const auto unnormalized = outputs_of("raw", dir + "/cifar");
  EXPECT_NE(unnormalized, from_cifar) << "--mean and --std were applied";

  // The same images as MNIST-named IDX files ([N, 3, 32, 32] bytes), and every decoded source
  // through --data-cache: the same weights; each source decoded once into an entry (inputs and
  // labels) that later runs map instead of writing again.
  std::filesystem::create_directories(dir + "/idx");
  auto idx_files = [&](const ImageSet& set, const std::string& prefix) {
    std::vector<uint8_t> pixels(set.images.f32_data(), set.images.f32_data() + set.images.numel());
    std::vector<uint8_t> labels(set.labels.begin(), set.labels.end());
    const int64_t n = set.images.dim(0);
    ASSERT_TRUE(write_idx_u8(dir + "/idx/" + prefix + "-images-idx3-ubyte.gz", {n, 3, 32, 32}, pixels).ok());
    ASSERT_TRUE(write_idx_u8(dir + "/idx/" + prefix + "-labels-idx1-ubyte.gz", {n}, labels).ok());
  };
  idx_files(train, "train");
  idx_files(test_set, "t10k");
  const std::string normalized = " --mean 0.5,0.4,0.3 --std 0.2,0.25,0.3";
  EXPECT_EQ(outputs_of("idx", dir + "/idx" + normalized), from_cifar);
  const std::string cache = dir + "/cache";
  auto entries = [&] {
    std::map<std::string, ino_t> found;  // name -> inode: a rewritten entry gets a new one
    for (const auto& e : std::filesystem::directory_iterator(cache)) {
      struct stat st {};
      ::stat(e.path().c_str(), &st);
      found[e.path().filename().string()] = st.st_ino;
    }
    return found;
  };
  EXPECT_EQ(outputs_of("idx_cached", dir + "/idx" + normalized + " --data-cache " + cache), from_cifar);
  const auto idx_entries = entries();
  ASSERT_EQ(idx_entries.size(), 4u) << "train and t10k, inputs and labels";
  EXPECT_TRUE(idx_entries.begin()->first.starts_with("t10k-images-idx3-ubyte-"))
      << idx_entries.begin()->first;
  EXPECT_EQ(outputs_of("idx_cached_again", dir + "/idx" + normalized + " --data-cache " + cache), from_cifar);
  EXPECT_EQ(entries(), idx_entries) << "mapped, not written again";
  EXPECT_EQ(outputs_of("cifar_cached", dir + "/cifar" + normalized + " --data-cache " + cache), from_cifar);
  EXPECT_EQ(entries().size(), 8u) << "the CIFAR-10 batches' entries beside the IDX ones";
  EXPECT_EQ(outputs_of("npz_cached", dir + "/xy.npz --data-cache " + cache), from_cifar);
  const auto all_entries = entries();
  EXPECT_EQ(all_entries.size(), 9u) << "the archive's inputs unpacked; its labels read from it";
  EXPECT_EQ(outputs_of("raw_cached", dir + "/cifar --data-cache " + cache), unnormalized);
  EXPECT_EQ(entries().size(), 13u) << "other settings, other entries";
  auto npz_entry = all_entries;
  for (const auto& [name, inode] : idx_entries) npz_entry.erase(name);
  std::erase_if(npz_entry, [](const auto& e) { return e.first.starts_with("cifar10-"); });
  ASSERT_EQ(npz_entry.size(), 1u);
  EXPECT_EQ(outputs_of("npz_again", dir + "/xy.npz --data-cache " + cache), from_cifar);  // used last
  // Past its limit, the cache drops the entries used least recently, never those of the run: a limit
  // that holds this run's (IDX) entries and the .npz's, used last, drops the CIFAR-10 ones.
  auto bytes_of = [&](const auto& names) {
    double bytes = 0;
    for (const auto& [name, inode] : names)
      bytes += static_cast<double>(std::filesystem::file_size(cache + "/" + name));
    return bytes;
  };
  const double keep_gib = (bytes_of(idx_entries) + bytes_of(npz_entry) + 4096) / (1 << 30);
  EXPECT_EQ(outputs_of("trimming", dir + "/idx" + normalized + " --data-cache " + cache +
                                       fmt::format(" --data-cache-limit {}", keep_gib)),
            from_cifar);
  auto kept = idx_entries;
  kept.insert(npz_entry.begin(), npz_entry.end());
  EXPECT_EQ(entries(), kept) << "the least recently used went first";
  std::ofstream(cache + "/notes.txt") << "mine";  // not entries: never removed
  std::ofstream(cache + "/cifar10-data_batch_1-0123456789abcdef.x.npy.tmp.99999") << "a temporary";
  EXPECT_EQ(outputs_of("evicting",
                       dir + "/idx" + normalized + " --data-cache " + cache + " --data-cache-limit 0.000001"),
            from_cifar);
  EXPECT_TRUE(std::filesystem::remove(cache + "/notes.txt"));
  EXPECT_TRUE(std::filesystem::remove(cache + "/cifar10-data_batch_1-0123456789abcdef.x.npy.tmp.99999"));
  EXPECT_EQ(entries(), idx_entries) << "only the IDX entries, which this run used, are left";
  auto eval_of = [&](const std::string& args) {
    auto r = test::run_cli("-q eval " + dir + "/idx.spw --json --data " + dir + "/idx" + normalized + args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.exit_code == 0 ? nlohmann::json::parse(r.output) : nlohmann::json();
  };
  const auto evaluated = eval_of("");
  EXPECT_EQ(evaluated["total"], 10);
  EXPECT_EQ(eval_of(" --data-cache " + cache)["accuracy"], evaluated["accuracy"]);
  auto npy_cached = test::run_cli("-q eval " + dir + "/idx.spw --data " + dir + "/x.npy --labels " + dir +
                                  "/y.npy --data-cache " + cache);
  EXPECT_EQ(npy_cached.exit_code, 1);
  EXPECT_NE(npy_cached.output.find("--data-cache keeps sources that must be decoded"), std::string::npos)
      << npy_cached.output;
}

// Replaces `from` by `to` (as long) in the one stored entry of a zip archive and mends the entry's
// CRC-32 in its local and central headers, so the archive stays valid. False if anything is missing.
bool rewrite_stored_entry(const std::string& path, const std::string& from, const std::string& to) {
  std::ifstream in(path, std::ios::binary);
  std::string zip((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const size_t at = zip.find(from), local = zip.find("PK\x03\x04"), central = zip.find("PK\x01\x02");
  if (at == std::string::npos || local == std::string::npos || central == std::string::npos ||
      from.size() != to.size())
    return false;
  zip.replace(at, from.size(), to);
  auto le = [&](size_t p, int bytes) {
    uint32_t v = 0;
    for (int b = bytes - 1; b >= 0; --b)
      v = v << 8 | static_cast<unsigned char>(zip[p + static_cast<size_t>(b)]);
    return v;
  };
  const size_t data = local + 30 + le(local + 26, 2) + le(local + 28, 2);
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(zip.data() + data), static_cast<uInt>(le(local + 18, 4))));
  for (size_t p : {local + 14, central + 16})
    for (int b = 0; b < 4; ++b) zip[p + static_cast<size_t>(b)] = static_cast<char>(crc >> (8 * b));
  std::ofstream(path, std::ios::binary | std::ios::trunc) << zip;
  return true;
}

// A source that fails while it is decoded into the data cache (label count, a truncated gzip file, a
// bad CIFAR-10 label) is a clear error, exit 1, and leaves no entry or temporary behind.
TEST(TrainingData, ASourceThatFailsWhileCachedLeavesNoEntry) {
  const std::string dir = test::temp_dir("cache_errors");
  ASSERT_TRUE(save_onnx(cifar_sized_cnn(), dir + "/m.onnx").ok());
  const std::string cache = dir + "/cache";
  auto train_on = [&](const std::string& data) {
    return test::run_cli("-q train " + dir + "/m.onnx -o " + dir +
                         "/t.onnx --epochs 1 --validation 2 --data " + data + " --data-cache " + cache);
  };
  auto cache_files = [&] {
    std::vector<std::string> names;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(cache, ec), end; !ec && it != end; it.increment(ec))
      names.push_back(it->path().filename().string());
    return names;
  };
  std::vector<uint8_t> pixels(10 * 3072);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7);
  std::filesystem::create_directories(dir + "/idx");
  const std::string images = dir + "/idx/train-images-idx3-ubyte.gz";
  ASSERT_TRUE(write_idx_u8(images, {10, 3, 32, 32}, pixels).ok());
  ASSERT_TRUE(write_idx_u8(dir + "/idx/train-labels-idx1-ubyte.gz", {9}, std::vector<uint8_t>(9, 1)).ok());
  auto mismatched = train_on(dir + "/idx");
  EXPECT_EQ(mismatched.exit_code, 1);
  EXPECT_NE(mismatched.output.find(images + " has 10 images but"), std::string::npos) << mismatched.output;
  EXPECT_NE(mismatched.output.find("has 9 labels"), std::string::npos) << mismatched.output;
  EXPECT_EQ(cache_files(), std::vector<std::string>{});
  ASSERT_TRUE(write_idx_u8(dir + "/idx/train-labels-idx1-ubyte.gz", {10}, std::vector<uint8_t>(10, 1)).ok());
  std::ifstream in(images, std::ios::binary);
  const std::string packed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  std::ofstream(images, std::ios::binary | std::ios::trunc) << packed.substr(0, packed.size() / 2);
  auto truncated = train_on(dir + "/idx");
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_NE(truncated.output.find(images + ": "), std::string::npos) << truncated.output;
  EXPECT_EQ(cache_files(), std::vector<std::string>{}) << "no entry and no temporary";
  std::filesystem::create_directories(dir + "/cifar");
  std::string records;
  for (int r = 0; r < 10; ++r) records += static_cast<char>(r == 7 ? 10 : r) + std::string(3072, '\x20');
  std::ofstream(dir + "/cifar/data_batch_1.bin", std::ios::binary) << records;
  auto bad_label = train_on(dir + "/cifar");
  EXPECT_EQ(bad_label.exit_code, 1);
  EXPECT_NE(bad_label.output.find(dir + "/cifar/data_batch_1.bin: record 7: label 10"), std::string::npos)
      << bad_label.output;
  EXPECT_EQ(cache_files(), std::vector<std::string>{});
  // IDX labels past the largest class index load_labeled_idx takes (int32 labels, one of 2,000,000).
  ASSERT_TRUE(write_idx_u8(images, {10, 3, 32, 32}, pixels).ok());
  std::string labels = {0, 0, 0x0C, 1, 0, 0, 0, 10};
  for (int i = 0; i < 10; ++i) {
    const uint32_t v = i == 4 ? 2000000u : 1u;
    labels += {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  }
  std::ofstream(dir + "/idx/train-labels-idx1-ubyte.gz", std::ios::binary | std::ios::trunc) << labels;
  auto big_label = train_on(dir + "/idx");
  EXPECT_EQ(big_label.exit_code, 1);
  EXPECT_NE(big_label.output.find("train-labels-idx1-ubyte.gz: label 2000000 is out of range"),
            std::string::npos)
      << big_label.output;
  EXPECT_EQ(cache_files(), std::vector<std::string>{});
  // An .npz whose 'x' passes its checksum but is no array Sparrow reads (Fortran order): the error
  // names the archive, and the unpacked entry is not kept.
  ASSERT_TRUE(write_npz(dir + "/xy.npz", {{"x", test::random_f32({4, 3, 32, 32}, 5)}}).ok());
  ASSERT_TRUE(rewrite_stored_entry(dir + "/xy.npz", "'fortran_order': False", "'fortran_order': True "));
  auto fortran = train_on(dir + "/xy.npz");
  EXPECT_EQ(fortran.exit_code, 1);
  EXPECT_NE(fortran.output.find(dir + "/xy.npz: array 'x': header field 'fortran_order'"), std::string::npos)
      << fortran.output;
  EXPECT_EQ(cache_files(), std::vector<std::string>{});
}

// An image folder (train/ and test/, a PNG per image) trains as the same images in an .npy in the
// folder's order (the classes in turn), normalized the same way.
TEST(TrainingData, AnImageFolderTrainsLikeTheSameImagesAsArrays) {
  const std::string dir = test::temp_dir("image_source");
  ASSERT_TRUE(save_onnx(cifar_sized_cnn(), dir + "/m.onnx").ok());
  const int classes = 3, per_class = 12;
  Tensor x(DType::f32, {classes * per_class, 3, 32, 32});
  Tensor y(DType::i64, {classes * per_class});
  uint32_t state = 99;
  for (int i = 0; i < per_class; ++i)
    for (int c = 0; c < classes; ++c) {
      const int row = i * classes + c;  // the classes in turn
      std::vector<unsigned char> rgb(32 * 32 * 3);
      for (auto& v : rgb) {
        state = state * 1664525u + 1013904223u;
        v = static_cast<unsigned char>((state >> 24) / 2 + 40 * c);
      }
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t p = 0; p < 32 * 32; ++p)
          x.f32_data()[(row * 3 + ch) * 1024 + p] =
              (static_cast<float>(rgb[p * 3 + ch]) * (1.0f / 255.0f) + 0.0f - 0.0f) * (1.0f / 1.0f);
      y.i64_data()[row] = c;
      const std::string folder = fmt::format("{}/images/train/class{}", dir, c);
      std::filesystem::create_directories(folder);
      png_image image;
      std::memset(&image, 0, sizeof image);
      image.version = PNG_IMAGE_VERSION;
      image.width = image.height = 32;
      image.format = PNG_FORMAT_RGB;
      ASSERT_TRUE(png_image_write_to_file(&image, fmt::format("{}/{:02}.png", folder, i).c_str(), 0,
                                          rgb.data(), 0, nullptr));
    }
  std::filesystem::create_directories(dir + "/images/test");
  std::filesystem::copy(dir + "/images/train", dir + "/images/test",
                        std::filesystem::copy_options::recursive);
  ASSERT_TRUE(write_npy(dir + "/x.npy", x).ok());
  ASSERT_TRUE(write_npy(dir + "/y.npy", y).ok());
  ASSERT_TRUE(write_npy(dir + "/probe.npy", test::random_f32({4, 3, 32, 32}, 9)).ok());
  auto outputs_of = [&](const std::string& name, const std::string& data) {
    return compressed_outputs(dir, name,
                              "--sparsity 0.5 --bits 4 --encode-all --prune-steps 1 --retrain-epochs 1 "
                              "--finetune-epochs 0 --validation 6 --data " +
                                  data);
  };
  const auto from_images = outputs_of("images", dir + "/images");
  ASSERT_EQ(from_images.size(), 40u);
  EXPECT_EQ(outputs_of("arrays", dir + "/x.npy --labels " + dir + "/y.npy"), from_images);
  // --data-cache: each folder's images decoded and normalized once into the cache, the same rows as
  // the arrays, the same outputs; later runs read the cache; a changed image gets a new entry.
  const std::string cache = dir + "/cache";
  auto cache_entries = [&] {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(cache))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  };
  EXPECT_EQ(outputs_of("cached", dir + "/images --data-cache " + cache), from_images);
  const auto entries = cache_entries();
  ASSERT_EQ(entries.size(), 4u) << "train and test, inputs and labels";
  const auto train_entry = std::find_if(entries.begin(), entries.end(), [](const std::string& n) {
    return n.starts_with("train-") && n.ends_with(".x.npy");
  });
  ASSERT_NE(train_entry, entries.end());
  auto cached_rows = read_npy(cache + "/" + *train_entry);
  ASSERT_TRUE(cached_rows.ok()) << cached_rows.status().message();
  ASSERT_EQ(cached_rows->shape(), x.shape());
  EXPECT_EQ(std::memcmp(cached_rows->raw(), x.raw(), x.bytes()), 0);
  EXPECT_EQ(outputs_of("cached_again", dir + "/images --data-cache " + cache), from_images);
  EXPECT_EQ(cache_entries(), entries) << "read from the cache, not written again";
  const std::string changed = dir + "/images/train/class0/00.png";
  std::filesystem::last_write_time(changed,
                                   std::filesystem::last_write_time(changed) + std::chrono::seconds(5));
  EXPECT_EQ(outputs_of("cached_changed", dir + "/images --data-cache " + cache), from_images);
  EXPECT_EQ(cache_entries().size(), 6u) << "a new entry for the changed train folder";
  std::filesystem::create_directory(dir + "/images/train/0_empty");  // a class first: labels shift
  EXPECT_EQ(outputs_of("cached_classes", dir + "/images --data-cache " + cache).size(), from_images.size());
  EXPECT_EQ(cache_entries().size(), 8u) << "the labels changed: a new entry";
  std::filesystem::remove(dir + "/images/train/0_empty");
  auto inside = test::run_cli("-q train " + dir + "/m.onnx -o " + dir + "/t.onnx --data " + dir +
                              "/images --data-cache " + dir + "/images/train/cache");
  EXPECT_EQ(inside.exit_code, 1);
  EXPECT_NE(inside.output.find("inside the image folder"), std::string::npos) << inside.output;
  auto not_images = test::run_cli("-q train " + dir + "/m.onnx -o " + dir + "/t.onnx --data " + dir +
                                  "/x.npy --labels " + dir + "/y.npy --data-cache " + cache);
  EXPECT_EQ(not_images.exit_code, 1);
  EXPECT_NE(not_images.output.find("--data-cache keeps sources that must be decoded"), std::string::npos)
      << not_images.output;
  auto augmented =
      test::run_cli("-q --threads 1 compress " + dir + "/m.onnx -o " + dir +
                    "/aug.spw --sparsity 0.5 --prune-steps 1 --retrain-epochs 1 --finetune-epochs 1 "
                    "--validation 6 --flip --crop-padding 2 --json --data " +
                    dir + "/images");
  ASSERT_EQ(augmented.exit_code, 0) << augmented.output;
  const auto recorded = nlohmann::json::parse(augmented.output)["metadata"]["retrain"];
  EXPECT_EQ(recorded["flip"], true);
  EXPECT_EQ(recorded["crop_padding"], 2);
  auto eval = test::run_cli("-q eval " + dir + "/images.spw --data " + dir + "/images --json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_EQ(nlohmann::json::parse(eval.output)["total"], classes * per_class) << "the test/ folder";
  // Through the data cache: the same result, written once, read after; refused for other sources.
  const std::string eval_cache = dir + "/eval_cache";
  for (int run = 0; run < 2; ++run) {
    auto cached = test::run_cli("-q eval " + dir + "/images.spw --data " + dir + "/images --data-cache " +
                                eval_cache + " --json");
    ASSERT_EQ(cached.exit_code, 0) << cached.output;
    EXPECT_EQ(nlohmann::json::parse(cached.output)["accuracy"],
              nlohmann::json::parse(eval.output)["accuracy"]);
    EXPECT_EQ(nlohmann::json::parse(cached.output)["total"], classes * per_class);
    int npy = 0;
    for (const auto& e : std::filesystem::directory_iterator(eval_cache))
      npy += e.path().extension() == ".npy";
    EXPECT_EQ(npy, 2) << "one entry (images and labels) for the test/ folder, run " << run;
  }
  auto cache_for_arrays = test::run_cli("-q eval " + dir + "/images.spw --data " + dir + "/x.npy --labels " +
                                        dir + "/y.npy --data-cache " + eval_cache);
  EXPECT_EQ(cache_for_arrays.exit_code, 1);
  EXPECT_NE(cache_for_arrays.output.find("--data-cache keeps sources that must be decoded"),
            std::string::npos)
      << cache_for_arrays.output;
  // --resize 32 keeps 32 x 32 images as they are, is recorded, and needs a shorter side that covers
  // the input and an image folder.
  auto resized = test::run_cli("-q eval " + dir + "/images.spw --data " + dir + "/images --resize 32 --json");
  ASSERT_EQ(resized.exit_code, 0) << resized.output;
  EXPECT_EQ(nlohmann::json::parse(resized.output)["accuracy"],
            nlohmann::json::parse(eval.output)["accuracy"]);
  auto recorded_resize = test::run_cli("-q --threads 1 compress " + dir + "/m.onnx -o " + dir +
                                       "/resized.spw --sparsity 0.5 --prune-steps 1 --retrain-epochs 1 "
                                       "--finetune-epochs 0 --validation 6 --resize 32 --json --data " +
                                       dir + "/images");
  ASSERT_EQ(recorded_resize.exit_code, 0) << recorded_resize.output;
  EXPECT_EQ(nlohmann::json::parse(recorded_resize.output)["metadata"]["retrain"]["resize"], 32);
  auto small = test::run_cli("-q eval " + dir + "/images.spw --data " + dir + "/images --resize 16");
  EXPECT_EQ(small.exit_code, 1);
  EXPECT_NE(small.output.find("a shorter side of 16 (--resize) cannot cover the 32 x 32 input"),
            std::string::npos)
      << small.output;
  auto arrays = test::run_cli("-q eval " + dir + "/images.spw --data " + dir + "/x.npy --labels " + dir +
                              "/y.npy --resize 40");
  EXPECT_EQ(arrays.exit_code, 1);
  EXPECT_NE(arrays.output.find("--resize goes with --data DIR of an image folder"), std::string::npos)
      << arrays.output;
  auto train_arrays = test::run_cli("-q train " + dir + "/m.onnx -o " + dir + "/t.onnx --data " + dir +
                                    "/x.npy --labels " + dir + "/y.npy --resize 40");
  EXPECT_EQ(train_arrays.exit_code, 1);
  EXPECT_NE(train_arrays.output.find("--resize scales the images of an image folder; " + dir + "/x.npy"),
            std::string::npos)
      << train_arrays.output;
}

TEST(RetrainRecipe, ACompressionReplaysFromItsOwnFileAndFromAJsonRecipe) {
  const std::string dir = test::temp_dir("recipe_replay");
  ASSERT_TRUE(save_onnx(test::small_cnn(), dir + "/m.onnx").ok());
  Tensor x = test::random_f32({60, 1, 8, 8}, 3);
  Tensor y(DType::i64, {60});
  for (int64_t i = 0; i < 60; ++i) y.i64_data()[i] = i % 10;
  ASSERT_TRUE(write_npy(dir + "/x.npy", x).ok());
  ASSERT_TRUE(write_npy(dir + "/y.npy", y).ok());
  auto compress = [&](const std::string& args) {
    auto r = test::run_cli("-q --threads 1 compress " + dir + "/m.onnx " + args + " --json");
    EXPECT_EQ(r.exit_code, 0) << args << ": " << r.output;
    return r.exit_code == 0 ? nlohmann::json::parse(r.output) : nlohmann::json();
  };
  auto first =
      compress("-o " + dir + "/a.spw --sparsity 0.6 --bits 4 --encode-all --data " + dir +
               "/x.npy --labels " + dir + "/y.npy --prune-steps 2 --retrain-epochs 1 --finetune-epochs 1");
  ASSERT_TRUE(first["metadata"].contains("retrain"));
  EXPECT_EQ(first["metadata"]["results"]["accuracy_after"], first["accuracy_after"])
      << "recorded in the file";
  EXPECT_GT(first["metadata"]["results"]["seconds"].get<double>(), 0.0);
  ASSERT_EQ(test::run_cli("-q report " + dir + "/a.spw -o " + dir + "/report").exit_code, 0);
  std::ifstream page_file(dir + "/report/index.html");
  const std::string page((std::istreambuf_iterator<char>(page_file)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("Accuracy on the held-out data"), std::string::npos);
  EXPECT_NE(page.find("<h2>Recipe</h2>"), std::string::npos);
  EXPECT_NE(page.find("&quot;retrain_epochs&quot;"), std::string::npos) << "the recipe, escaped";
  auto replay = compress("-o " + dir + "/b.spw --recipe " + dir + "/a.spw");
  EXPECT_EQ(replay["metadata"]["options"], first["metadata"]["options"]);
  EXPECT_EQ(replay["metadata"]["retrain"], first["metadata"]["retrain"])
      << "retrained again, from the same data";
  EXPECT_EQ(replay["accuracy_after"], first["accuracy_after"]) << "the same seed, data and settings";
  // The command line wins over the recipe.
  auto more = compress("-o " + dir + "/c.spw --recipe " + dir + "/a.spw --data " + dir + "/x.npy --labels " +
                       dir + "/y.npy --retrain-epochs 2");
  EXPECT_EQ(more["metadata"]["retrain"]["retrain_epochs"], 2);
  EXPECT_EQ(more["metadata"]["retrain"]["prune_steps"], 2);
  auto longer = compress("-o " + dir + "/c2.spw --recipe " + dir + "/a.spw --finetune-epochs 2");
  EXPECT_EQ(longer["metadata"]["retrain"]["finetune_epochs"], 2)
      << "the recipe's data, the command line's epochs";
  EXPECT_EQ(longer["metadata"]["retrain"]["data"], dir + "/x.npy");
  // No rows held out: no accuracy to report, and no crash.
  auto none_held_out =
      compress("-o " + dir + "/e.spw --sparsity 0.5 --encode-all --data " + dir + "/x.npy --labels " + dir +
               "/y.npy --validation 0 --prune-steps 1 --retrain-epochs 1 --finetune-epochs 0");
  EXPECT_FALSE(none_held_out.contains("accuracy_after"));
  EXPECT_FALSE(none_held_out.contains("agreement"));
  // A recipe that retrains but records no data file (made from arrays in Python) asks for --data.
  std::ofstream(dir + "/nodata.json") << R"({"sparsity": 0.5, "retrain": {"prune_steps": 1}})";
  auto nodata =
      test::run_cli("-q compress " + dir + "/m.onnx -o " + dir + "/f.spw --recipe " + dir + "/nodata.json");
  EXPECT_EQ(nodata.exit_code, 1) << nodata.output;
  EXPECT_NE(nodata.output.find("give --data"), std::string::npos) << nodata.output;
  // A JSON recipe with a retrain block needs no --data.
  std::ofstream(dir + "/recipe.json")
      << R"({"sparsity": 0.5, "encode_all": true, "retrain": {"data": ")" << dir << R"(/x.npy", "labels": ")"
      << dir << R"(/y.npy", "prune_steps": 1, "retrain_epochs": 1, "finetune_epochs": 0}})";
  auto from_json = compress("-o " + dir + "/d.spw --recipe " + dir + "/recipe.json");
  EXPECT_EQ(from_json["metadata"]["retrain"]["prune_steps"], 1);
  EXPECT_TRUE(from_json.contains("accuracy_after"));
}

}  // namespace
}  // namespace sparrow
