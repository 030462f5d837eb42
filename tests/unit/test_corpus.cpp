// Every model of the generated corpus (PyTorch exports and hand-built models) must reproduce the
// reference outputs within 1e-4 relative (max |diff| / max |reference| per output), at 1 and 2
// threads, and again after an ONNX export/import round trip (bit-identical).
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace sparrow {
namespace {

const std::string kDir = SPARROW_CORPUS_DIR;

nlohmann::json manifest() {
  std::ifstream in(kDir + "/manifest.json");
  if (!in)
    return nlohmann::json{{"skipped", "no manifest at " + kDir + " (run the corpus_generate test first)"}};
  return nlohmann::json::parse(in);
}

std::vector<Tensor> load_arrays(const nlohmann::json& names) {
  std::vector<Tensor> out;
  for (const auto& n : names) {
    auto t = read_npy(kDir + "/" + n.get<std::string>());
    EXPECT_TRUE(t.ok()) << t.status().message();
    if (t.ok()) out.push_back(std::move(*t));
  }
  return out;
}

TEST(Corpus, MatchesReferenceOutputs) {
  auto m = manifest();
  if (m.contains("skipped")) GTEST_SKIP() << "model corpus unavailable: " << m["skipped"].get<std::string>();
  ASSERT_GE(m["cases"].size(), 15u);
  for (const auto& c : m["cases"]) {
    std::string name = c["name"];
    SCOPED_TRACE(name);
    auto inputs = load_arrays(c["inputs"]);
    auto expected = load_arrays(c["outputs"]);
    for (int threads : {1, 2}) {
      auto model = load_onnx(kDir + "/" + c["model"].get<std::string>());
      ASSERT_TRUE(model.ok()) << model.status().message();
      auto ex = Executor::create(std::move(*model), test::threaded(threads));
      ASSERT_TRUE(ex.ok()) << ex.status().message();
      auto out = (*ex)->run(inputs);
      ASSERT_TRUE(out.ok()) << out.status().message();
      ASSERT_EQ(out->size(), expected.size());
      for (size_t i = 0; i < expected.size(); ++i)
        EXPECT_LT(test::max_relative_error(*(*out)[i], expected[i]), 1e-4)
            << "output " << i << " threads " << threads;
    }
  }
}

TEST(Corpus, ExportThenImportIsBitIdentical) {
  auto m = manifest();
  if (m.contains("skipped")) GTEST_SKIP() << "model corpus unavailable: " << m["skipped"].get<std::string>();
  for (const auto& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto inputs = load_arrays(c["inputs"]);
    auto model = load_onnx(kDir + "/" + c["model"].get<std::string>());
    ASSERT_TRUE(model.ok());
    auto bytes = serialize_onnx(*model);
    ASSERT_TRUE(bytes.ok());
    auto again = parse_onnx(*bytes, "exported");
    ASSERT_TRUE(again.ok()) << again.status().message();
    auto a = Executor::create(std::move(*model), ExecOptions{1});
    auto b = Executor::create(std::move(*again), ExecOptions{1});
    ASSERT_TRUE(a.ok()) << a.status().message();
    ASSERT_TRUE(b.ok()) << b.status().message();
    auto ya = (*a)->run(inputs);
    auto yb = (*b)->run(inputs);
    ASSERT_TRUE(ya.ok()) << ya.status().message();
    ASSERT_TRUE(yb.ok()) << yb.status().message();
    for (size_t i = 0; i < ya->size(); ++i)
      EXPECT_EQ(std::memcmp((*ya)[i]->raw(), (*yb)[i]->raw(), (*ya)[i]->bytes()), 0) << "output " << i;
  }
}

// Structured pruning on every model: nothing removed gives bit-identical outputs; half of each
// group's channels removed still runs, with the outputs' shapes unchanged.
TEST(Corpus, StructuredPruningKeepsModelsRunnable) {
  auto m = manifest();
  if (m.contains("skipped")) GTEST_SKIP() << "model corpus unavailable: " << m["skipped"].get<std::string>();
  int shrunk = 0;
  for (const auto& c : m["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto inputs = load_arrays(c["inputs"]);
    auto model = load_onnx(kDir + "/" + c["model"].get<std::string>());
    ASSERT_TRUE(model.ok());
    std::vector<std::vector<Tensor>> outputs;
    int64_t smaller = 0;
    for (const char* rule : {"", "l1=0", "l1=0.5"}) {
      Model pruned = *model;
      if (*rule) {
        ASSERT_TRUE(prune_channels(pruned, *parse_structured_rule(rule)).ok()) << rule;
      }
      smaller = pruned.parameter_count();
      auto ex = Executor::create(std::move(pruned), ExecOptions{1});
      ASSERT_TRUE(ex.ok()) << rule << ": " << ex.status().message();
      auto y = (*ex)->run(inputs);
      ASSERT_TRUE(y.ok()) << rule << ": " << y.status().message();
      outputs.emplace_back();
      for (const Tensor* t : *y) outputs.back().push_back(*t);
    }
    ASSERT_EQ(outputs[1].size(), outputs[0].size());
    ASSERT_EQ(outputs[2].size(), outputs[0].size());
    for (size_t i = 0; i < outputs[0].size(); ++i) {
      ASSERT_EQ(outputs[1][i].shape(), outputs[0][i].shape()) << "output " << i;
      EXPECT_EQ(std::memcmp(outputs[0][i].raw(), outputs[1][i].raw(), outputs[0][i].bytes()), 0)
          << "output " << i;
      EXPECT_EQ(outputs[2][i].shape(), outputs[0][i].shape()) << "output " << i;
    }
    shrunk += smaller < model->parameter_count() ? 1 : 0;
  }
  EXPECT_GE(shrunk, 3) << "models whose channels l1=0.5 removed";
}

TEST(Corpus, RunAtDifferentBatchSizesReusesPlans) {
  auto m = manifest();
  if (m.contains("skipped")) GTEST_SKIP() << "model corpus unavailable";
  auto model = load_onnx(kDir + "/lenet5_op13.onnx");
  ASSERT_TRUE(model.ok());
  auto ex = Executor::create(std::move(*model), test::threaded(2));
  ASSERT_TRUE(ex.ok());
  auto x = read_npy(kDir + "/lenet5_op13.in0.npy");
  auto y = read_npy(kDir + "/lenet5_op13.out0.npy");
  // Row k of a batch must not depend on the batch size.
  for (int64_t batch : {1, 3, 2, 3}) {
    Tensor part(DType::f32, {batch, 1, 28, 28});
    std::memcpy(part.raw(), x->raw(), part.bytes());
    auto out = (*ex)->run({&part, 1});
    ASSERT_TRUE(out.ok()) << out.status().message();
    for (int64_t i = 0; i < batch * 10; ++i) EXPECT_NEAR((*out)[0]->f32_data()[i], y->f32_data()[i], 1e-4);
  }
}

TEST(Corpus, CliRunWritesEveryOutput) {
  auto m = manifest();
  if (m.contains("skipped")) GTEST_SKIP() << "model corpus unavailable";
  std::string dir = test::temp_dir("cli_run");
  auto r = test::run_cli("-q run " + kDir + "/misc_ops_op13.onnx --input " + kDir +
                         "/misc_ops_op13.in0.npy -o " + dir + "/y.npy");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int i = 0; i < 11; ++i) {
    std::string path = dir + (i == 0 ? "/y.npy" : "/y." + std::to_string(i) + ".npy");
    auto got = read_npy(path);
    ASSERT_TRUE(got.ok()) << got.status().message();
    auto want = read_npy(kDir + "/misc_ops_op13.out" + std::to_string(i) + ".npy");
    EXPECT_LT(test::max_relative_error(*got, *want), 1e-4) << path;
  }
}

TEST(Corpus, CliInfoReportsLayersParamsAndFlops) {
  auto m = manifest();
  if (m.contains("skipped")) GTEST_SKIP() << "model corpus unavailable";
  auto r = test::run_cli("info --json " + kDir + "/lenet5_op13.onnx");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["params"], 431080);  // 20*25+20 + 50*500+50 + 800*500+500 + 500*10+10
  // conv1 24*24*20*25, conv2 8*8*50*500, fc1 800*500, fc2 500*10 multiply-accumulates, x2 FLOPs
  EXPECT_EQ(j["flops"], 2 * (288000 + 1600000 + 400000 + 5000));
  // Computed per run at batch 1: conv1 [20, 24, 24], pool [20, 12, 12], conv2 [50, 8, 8], pool [50, 4, 4],
  // fc1 [500] (its Relu fused), fc2 [10]; the Flatten is a view.
  const int64_t unshared = 4 * (11520 + 2880 + 3200 + 800 + 500 + 10);
  EXPECT_EQ(j["activation_bytes"]["unshared"], unshared);
  EXPECT_LT(j["activation_bytes"]["shared"], unshared) << "values share bytes by liveness";
  EXPECT_EQ(j["one_thread"], false) << "2.3 M multiply-adds a sample are worth a second thread";
  auto tiny = test::run_cli("--threads 2 info --json " + kDir + "/mlp_op13.onnx");
  ASSERT_EQ(tiny.exit_code, 0) << tiny.output;
  EXPECT_EQ(nlohmann::json::parse(tiny.output)["one_thread"], true) << "a few thousand are not";
}

}  // namespace
}  // namespace sparrow
