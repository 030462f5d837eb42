// sparrow repro lenet300|lenet5 --data DIR: trains the baseline, compresses it with [DC]'s per-layer
// sparsities and bit widths (iterative pruning with retraining, trained quantization, Huffman), and
// prints Sparrow's per-layer table next to the paper's (Tables 2 and 3 of [DC]).
#include <chrono>

#include <nlohmann/json.hpp>

#include "api/inspect.h"
#include "cli/commands.h"
#include "cli/spw_report.h"
#include "cli/train_data.h"
#include "core/file.h"
#include "sparrow/onnx.h"
#include "sparrow/retrain.h"
#include "sparrow/version.h"

namespace sparrow::cli {

namespace {

// Sparrow's target fraction of weights kept, and [DC]'s published per-layer figures (fraction kept,
// size as % of float32 before and after Huffman coding).
struct PaperLayer {
  const char* weight;
  double target_kept;
  const char* paper_name;
  double kept, pq_percent, h_percent;
};

struct Recipe {
  std::vector<PaperLayer> layers;
  double paper_ratio, paper_error_ref, paper_error;
  int baseline_epochs, conv_bits, fc_bits;
  int retrain_epochs;  // per pruning step (5 steps)
  double retrain_lr;
  int finetune_epochs;  // trained quantization, at 0.001
};

const Recipe& recipe_for(const std::string& arch) {
  // Both networks keep a little less of their largest layer than the paper: with everything in the
  // file counted (biases, codebooks, graph, headers), that is what 40x and 39x take. LeNet-5 keeps
  // [DC]'s 12% of conv2 and retrains more (3 epochs per step at 0.02, 2 of trained quantization).
  static const Recipe lenet300{{{"fc1.weight", 0.06, "ip1", 0.08, 3.1, 2.32},
                                {"fc2.weight", 0.08, "ip2", 0.09, 3.8, 3.04},
                                {"fc3.weight", 0.26, "ip3", 0.26, 15.7, 12.70}},
                               40,
                               0.0164,
                               0.0158,
                               12,
                               8,
                               6,
                               5,
                               0.01,
                               3};
  static const Recipe lenet5{{{"conv1.weight", 0.66, "conv1", 0.66, 78.5, 67.45},
                              {"conv2.weight", 0.12, "conv2", 0.12, 6.0, 5.28},
                              {"fc1.weight", 0.06, "ip1", 0.08, 2.7, 2.45},
                              {"fc2.weight", 0.19, "ip2", 0.19, 6.9, 6.13}},
                             39,
                             0.0080,
                             0.0074,
                             10,
                             8,
                             5,
                             3,
                             0.02,
                             2};
  return arch == "lenet5" ? lenet5 : lenet300;
}

struct ReproArgs {
  std::string arch, output, baseline_output;
  DataArgs data;
  bool json = false;
};

int run(const ReproArgs& a, const GlobalOptions& global) {
  if (a.arch != "lenet300" && a.arch != "lenet5")
    return report_error(errorf("repro: unknown network '{}'", a.arch));
  if (!a.baseline_output.empty() && same_file(a.baseline_output, a.output))
    return report_error(errorf("--baseline {} and -o {} name the same file", a.baseline_output, a.output));
  const Recipe& recipe = recipe_for(a.arch);
  auto clock = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - clock).count();
  };
  auto model = make_architecture(a.arch, 1);
  if (!model.ok()) return report_error(model.status());
  auto data = load_splits(*model, a.data);
  if (!data.ok()) return report_error(data.status());
  TrainOptions base;
  base.epochs = recipe.baseline_epochs;
  base.threads = global.threads;
  base.progress = !global.quiet;
  if (auto r = train_model(*model, data->train, &data->val, base); !r.ok()) return report_error(r.status());
  if (!a.baseline_output.empty())
    if (auto s = save_onnx(*model, a.baseline_output); !s.ok()) return report_error(s);
  auto base_acc = classification_accuracy(*model, data->test, global.threads);
  if (!base_acc.ok()) return report_error(base_acc.status());
  double train_seconds = seconds();

  CompressOptions o;
  o.conv_bits = recipe.conv_bits;
  o.fc_bits = recipe.fc_bits;
  o.index_bits = 5;
  for (const auto& l : recipe.layers) o.layers[l.weight].prune.sparsity = 1.0 - l.target_kept;
  RetrainOptions r;
  r.prune_steps = 5;
  r.retrain = base;
  r.retrain.epochs = recipe.retrain_epochs;
  r.retrain.lr = recipe.retrain_lr;
  r.finetune = base;
  r.finetune.epochs = recipe.finetune_epochs;
  r.finetune.lr = 0.001;
  nlohmann::json meta = {{"tool", std::string("sparrow ") + SPARROW_VERSION}, {"repro", a.arch}};
  auto result = compress_with_retraining(*model, o, data->train, &data->val, r, meta.dump());
  if (!result.ok()) return report_error(result.status());
  if (auto s = write_spw(result->spw, a.output, true); !s.ok()) return report_error(s);
  auto dense = result->spw.to_dense_model();
  auto acc = dense.ok() ? classification_accuracy(*dense, data->test, global.threads)
                        : Result<double>(dense.status());
  if (!acc.ok()) return report_error(acc.status());
  double ratio =
      static_cast<double>(api::dense_fp32_bytes(result->spw)) / static_cast<double>(result->spw.file_bytes);

  nlohmann::json layers = nlohmann::json::array();
  for (size_t i = 0; i < result->spw.tensors.size(); ++i) {
    const CompressedTensor& t = result->spw.tensors[i];
    TensorSizes z = tensor_sizes(t, result->spw.storage[i]);
    const PaperLayer* p = nullptr;
    for (const auto& l : recipe.layers)
      if (t.name == l.weight) p = &l;
    layers.push_back({{"name", t.name},
                      {"weights", z.weights},
                      {"kept", static_cast<double>(z.nonzeros) / z.weights},
                      {"pq_percent", 100 * z.pq_bits / z.dense_bits()},
                      {"huffman_percent", 100 * z.stored_bits / z.dense_bits()},
                      {"paper", p ? nlohmann::json{{"name", p->paper_name},
                                                   {"kept", p->kept},
                                                   {"pq_percent", p->pq_percent},
                                                   {"huffman_percent", p->h_percent}}
                                  : nlohmann::json()}});
  }
  nlohmann::json j{{"network", a.arch},
                   {"file", a.output},
                   {"file_bytes", result->spw.file_bytes},
                   {"ratio", ratio},
                   {"baseline_error", 1 - *base_acc},
                   {"compressed_error", 1 - *acc},
                   {"paper",
                    {{"ratio", recipe.paper_ratio},
                     {"baseline_error", recipe.paper_error_ref},
                     {"compressed_error", recipe.paper_error}}},
                   {"data",
                    {{"dir", a.data.dir},
                     {"train", data->train.size()},
                     {"validation", data->val.size()},
                     {"test", data->test.size()}}},
                   {"train_seconds", train_seconds},
                   {"total_seconds", seconds()},
                   {"layers", layers}};
  if (a.json) {
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("\n{:<14} {:>9} {:>15} {:>17} {:>17}\n", "layer", "weights", "kept (paper)", "P+Q % (paper)",
             "+H % (paper)");
  for (const auto& l : layers) {
    const auto& p = l["paper"];
    fmt::print("{:<14} {:>9} {:>6.1f}% ({:>4.0f}%) {:>8.2f}% ({:>5.1f}%) {:>8.2f}% ({:>5.2f}%)\n",
               l["name"].get<std::string>(), l["weights"].get<int64_t>(), 100 * l["kept"].get<double>(),
               100 * p["kept"].get<double>(), l["pq_percent"].get<double>(), p["pq_percent"].get<double>(),
               l["huffman_percent"].get<double>(), p["huffman_percent"].get<double>());
  }
  fmt::print("\ndata {}: {} training, {} validation, {} test images (the paper's figures are for MNIST)\n",
             a.data.dir, data->train.size(), data->val.size(), data->test.size());
  fmt::print(
      "whole file {} bytes: {:.1f}x smaller than the float32 parameters (paper: {}x)\n"
      "test error {:.2f}% -> {:.2f}% (paper: {:.2f}% -> {:.2f}%); {:.0f} s in all\n",
      result->spw.file_bytes, ratio, recipe.paper_ratio, 100 * (1 - *base_acc), 100 * (1 - *acc),
      100 * recipe.paper_error_ref, 100 * recipe.paper_error, seconds());
  return 0;
}

}  // namespace

Command add_repro(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<ReproArgs>();
  auto* cmd =
      app.add_subcommand("repro", "Reproduce [DC]'s LeNet results: train, compress with retraining, compare");
  cmd->add_option("network", a->arch, "lenet300 or lenet5")->required();
  cmd->add_option("--data", a->data.dir, "MNIST directory (IDX files)")->required();
  cmd->add_option("-o,--output", a->output, "Where to write the compressed model")->default_val("repro.spw");
  cmd->add_option("--baseline", a->baseline_output, "Also write the trained dense baseline as ONNX");
  add_data_options(cmd, a->data);
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a, &global]() { return run(*a, global); }};
}

}  // namespace sparrow::cli
