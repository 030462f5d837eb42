// sparrow repro lenet300|lenet5 --data DIR: trains the baseline, compresses it with [DC]'s per-layer
// sparsities and bit widths (iterative pruning with retraining, trained quantization, Huffman) as
// configs/repro-NETWORK.json says, and prints Sparrow's per-layer table next to the paper's (Tables 2
// and 3 of [DC]).
#include <chrono>

#include <nlohmann/json.hpp>

#include "api/compress.h"
#include "api/inspect.h"
#include "cli/commands.h"
#include "cli/repro_configs.h"
#include "cli/spw_report.h"
#include "cli/train_data.h"
#include "core/file.h"
#include "sparrow/onnx.h"
#include "sparrow/retrain.h"
#include "sparrow/version.h"

namespace sparrow::cli {

namespace {

// A reproduction: the baseline's training, the compression recipe (as `compress --recipe` reads
// it, with its retrain block), and [DC]'s published figures: the whole file's ratio, the errors,
// and per layer the fraction kept and the size as % of float32 before and after Huffman coding.
struct ReproConfig {
  std::string network;
  int baseline_epochs = 0;
  CompressOptions options;
  RetrainOptions retrain;
  nlohmann::json paper;  // ratio, baseline_error, compressed_error, layers: {weight: {name, kept, ...}}
};

// The text of configs/repro-NETWORK.json as built in, or of `path` when given.
Result<std::pair<std::string, std::string>> config_text(const std::string& network, const std::string& path) {
  if (!path.empty()) {
    SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(path));
    return std::pair{path, std::string(bytes.begin(), bytes.end())};
  }
  if (network == "lenet300")
    return std::pair{std::string("configs/repro-lenet300.json"), std::string(kReproLenet300Config)};
  if (network == "lenet5")
    return std::pair{std::string("configs/repro-lenet5.json"), std::string(kReproLenet5Config)};
  return errorf("repro: unknown network '{}' (lenet300, lenet5, or a recipe file with --config)", network);
}

Result<ReproConfig> load_config(const std::string& network, const std::string& path) {
  SP_ASSIGN_OR_RETURN(auto text, config_text(network, path));
  const auto& [where, json_text] = text;
  ReproConfig c;
  try {
    const nlohmann::json j = nlohmann::json::parse(json_text);
    c.network = j.at("network").get<std::string>();
    c.baseline_epochs = j.at("baseline_epochs").get<int>();
    c.paper = j.at("paper");
    for (const char* key : {"ratio", "baseline_error", "compressed_error"}) c.paper.at(key).get<double>();
    for (const auto& [weight, l] : c.paper.at("layers").items())
      for (const char* key : {"kept", "pq_percent", "huffman_percent"}) l.at(key).get<double>();
    nlohmann::json settings = j.at("compress");
    const nlohmann::json retrain = settings.value("retrain", nlohmann::json::object());
    settings.erase("retrain");
    SP_ASSIGN_OR_RETURN(c.options, api::options_from_recipe(settings, where));
    SP_RETURN_IF_ERROR(api::apply_retrain_recipe(retrain, c.retrain, nullptr).prefixed(where));
  } catch (const nlohmann::json::exception& e) {
    return errorf(
        "{}: not a repro recipe (network, baseline_epochs, compress, paper: ratio, baseline_error, "
        "compressed_error, layers): {}",
        where, e.what());
  }
  if (network != c.network) return errorf("{}: the recipe is for '{}', not '{}'", where, c.network, network);
  return c;
}

struct ReproArgs {
  std::string arch, output, baseline_output, config;
  DataArgs data;
  bool json = false;
};

int run(const ReproArgs& a, const GlobalOptions& global) {
  if (!a.baseline_output.empty() && same_file(a.baseline_output, a.output))
    return report_error(errorf("--baseline {} and -o {} name the same file", a.baseline_output, a.output));
  auto config = load_config(a.arch, a.config);
  if (!config.ok()) return report_error(config.status());
  const nlohmann::json& paper = config->paper;
  auto clock = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - clock).count();
  };
  auto model = make_architecture(a.arch, 1);
  if (!model.ok()) return report_error(model.status());
  auto data = load_splits(*model, a.data);
  if (!data.ok()) return report_error(data.status());
  TrainOptions base;
  base.epochs = config->baseline_epochs;
  base.threads = global.threads;
  base.progress = !global.quiet;
  if (auto r = train_model(*model, data->train, &data->val, base); !r.ok()) return report_error(r.status());
  if (!a.baseline_output.empty())
    if (auto s = save_onnx(*model, a.baseline_output); !s.ok()) return report_error(s);
  auto base_acc = classification_accuracy(*model, data->test, global.threads);
  if (!base_acc.ok()) return report_error(base_acc.status());
  double train_seconds = seconds();

  const CompressOptions& o = config->options;
  RetrainOptions r = config->retrain;
  for (TrainOptions* phase : {&r.retrain, &r.finetune}) {
    phase->threads = base.threads;
    phase->progress = base.progress;
  }
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
    const nlohmann::json* p = paper["layers"].contains(t.name) ? &paper["layers"][t.name] : nullptr;
    layers.push_back({{"name", t.name},
                      {"weights", z.weights},
                      {"kept", static_cast<double>(z.nonzeros) / z.weights},
                      {"pq_percent", 100 * z.pq_bits / z.dense_bits()},
                      {"huffman_percent", 100 * z.stored_bits / z.dense_bits()},
                      {"paper", p ? *p : nlohmann::json()}});
  }
  nlohmann::json j{{"network", a.arch},
                   {"file", a.output},
                   {"file_bytes", result->spw.file_bytes},
                   {"ratio", ratio},
                   {"baseline_error", 1 - *base_acc},
                   {"compressed_error", 1 - *acc},
                   {"recipe", a.config.empty() ? "configs/repro-" + a.arch + ".json" : a.config},
                   {"paper",
                    {{"ratio", paper["ratio"]},
                     {"baseline_error", paper["baseline_error"]},
                     {"compressed_error", paper["compressed_error"]}}},
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
    // A layer the recipe's paper figures do not list shows "-" for them.
    const auto& p = l["paper"];
    auto paper_value = [&](const char* key, double scale, int width, int digits) {
      return p.is_object() ? fmt::format("{:>{}.{}f}%", scale * p[key].get<double>(), width, digits)
                           : fmt::format("{:>{}}", "-", width + 1);
    };
    fmt::print("{:<14} {:>9} {:>6.1f}% ({}) {:>8.2f}% ({}) {:>8.2f}% ({})\n", l["name"].get<std::string>(),
               l["weights"].get<int64_t>(), 100 * l["kept"].get<double>(), paper_value("kept", 100, 4, 0),
               l["pq_percent"].get<double>(), paper_value("pq_percent", 1, 5, 1),
               l["huffman_percent"].get<double>(), paper_value("huffman_percent", 1, 5, 2));
  }
  fmt::print("\ndata {}: {} training, {} validation, {} test images (the paper's figures are for MNIST)\n",
             a.data.dir, data->train.size(), data->val.size(), data->test.size());
  fmt::print(
      "whole file {} bytes: {:.1f}x smaller than the float32 parameters (paper: {}x)\n"
      "test error {:.2f}% -> {:.2f}% (paper: {:.2f}% -> {:.2f}%); {:.0f} s in all\n",
      result->spw.file_bytes, ratio, paper["ratio"].get<double>(), 100 * (1 - *base_acc), 100 * (1 - *acc),
      100 * paper["baseline_error"].get<double>(), 100 * paper["compressed_error"].get<double>(), seconds());
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
  cmd->add_option("--config", a->config,
                  "A repro recipe to use instead of the built-in configs/repro-NETWORK.json (same format)");
  add_data_options(cmd, a->data);
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a, &global]() { return run(*a, global); }};
}

}  // namespace sparrow::cli
