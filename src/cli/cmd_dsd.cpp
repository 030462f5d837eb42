// sparrow dsd MODEL --data DIR -o OUT.onnx: Dense-Sparse-Dense training, optionally next to a
// baseline that trains the same model densely for the same number of epochs.
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/train_data.h"
#include "core/file.h"
#include "sparrow/onnx.h"
#include "sparrow/retrain.h"

namespace sparrow::cli {

namespace {

struct DsdArgs {
  std::string model, output;
  DataArgs data;
  DsdOptions dsd;
  TrainOptions train;  // sparse-phase settings; the re-dense phase runs at lr / 10
  bool baseline = false, json = false;
};

int run(DsdArgs& a, const GlobalOptions& global) {
  if (same_file(a.model, a.output))
    return report_error(errorf("output {} would overwrite the input", a.output));
  auto model = load_onnx(a.model);
  if (!model.ok()) return report_error(model.status());
  auto data = load_splits(*model, a.data);
  if (!data.ok()) return report_error(data.status());
  a.train.threads = global.threads;
  a.train.progress = !global.quiet;
  a.dsd.sparse = a.train;
  a.dsd.redense = a.train;
  a.dsd.redense.lr = a.train.lr / 10;
  auto before = classification_accuracy(*model, data->test, global.threads);
  if (!before.ok()) return report_error(before.status());
  Model dsd_model = *model;
  auto report = dsd_train(dsd_model, data->train, &data->val, a.dsd);
  if (!report.ok()) return report_error(report.status());
  if (auto s = save_onnx(dsd_model, a.output); !s.ok()) return report_error(s);
  auto after = classification_accuracy(dsd_model, data->test, global.threads);
  if (!after.ok()) return report_error(after.status());
  nlohmann::json j{{"model", a.output},
                   {"test_error_before", 1 - *before},
                   {"test_error_dsd", 1 - *after},
                   {"sparsity", a.dsd.sparsity},
                   {"iterations", a.dsd.iterations},
                   {"epochs_per_phase", a.train.epochs},
                   {"zeros_after_sparse_phase", report->sparse_fraction_after_sparse},
                   {"zeros_after_redense", report->sparse_fraction_after_redense}};
  if (a.baseline) {  // the same total epochs, dense, at the sparse phase's rate
    Model base = *model;
    TrainOptions b = a.train;
    b.epochs = 2 * a.train.epochs * a.dsd.iterations;
    if (!global.quiet) fmt::print(stderr, "baseline: {} dense epochs\n", b.epochs);
    auto r = train_model(base, data->train, &data->val, b);
    if (!r.ok()) return report_error(r.status());
    auto acc = classification_accuracy(base, data->test, global.threads);
    if (!acc.ok()) return report_error(acc.status());
    j["test_error_baseline"] = 1 - *acc;
  }
  if (a.json) {
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("test error: {:.2f}% before, {:.2f}% after DSD", 100 * (1 - *before), 100 * (1 - *after));
  if (a.baseline)
    fmt::print(", {:.2f}% for the dense baseline with the same epochs",
               100 * j["test_error_baseline"].get<double>());
  fmt::print("\nwrote {}\n", a.output);
  return 0;
}

}  // namespace

Command add_dsd(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<DsdArgs>();
  a->train.epochs = 2;
  a->train.lr = 0.01;
  auto* cmd = app.add_subcommand("dsd", "Dense-Sparse-Dense training of a trained model");
  cmd->add_option("model", a->model, "Trained dense model (.onnx)")->required();
  cmd->add_option("--data", a->data.dir, "IDX data directory")->required();
  cmd->add_option("-o,--output", a->output, "Output .onnx")->required();
  cmd->add_option("--sparsity", a->dsd.sparsity, "Sparsity of the sparse phase (default 0.3)")
      ->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--iterations", a->dsd.iterations, "Sparse + dense rounds (2: DSDSD)")
      ->check(CLI::Range(1, 100));
  cmd->add_flag("--baseline", a->baseline, "Also train a dense baseline for the same number of epochs");
  add_data_options(cmd, a->data);
  add_train_options(cmd, a->train, "");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a, &global]() { return run(*a, global); }};
}

}  // namespace sparrow::cli
