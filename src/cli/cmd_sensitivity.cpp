// sparrow sensitivity MODEL --data DIR: prunes each layer alone over a range of sparsities, records
// the validation accuracy, and proposes per-layer sparsities for an allowed accuracy drop.
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/train_data.h"
#include "core/file.h"
#include "core/svg_plot.h"
#include "sparrow/onnx.h"
#include "sparrow/retrain.h"

namespace sparrow::cli {

namespace {

struct SensitivityArgs {
  std::string model, csv, plot;
  DataArgs data;
  std::vector<double> sparsities = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95};
  double drop = 0.5;  // points
  bool json = false;
};

int run(const SensitivityArgs& a, const GlobalOptions& global) {
  auto model = load_onnx(a.model);
  if (!model.ok()) return report_error(model.status());
  auto data = load_splits(*model, a.data);
  if (!data.ok()) return report_error(data.status());
  auto r = sensitivity_scan(*model, data->val, a.sparsities, a.drop / 100.0, global.threads,
                            show_progress(global));
  if (!r.ok()) return report_error(r.status());
  nlohmann::json layers = nlohmann::json::array();
  std::string csv = "layer,weights,sparsity,accuracy\n";
  std::vector<Series> series;
  for (const auto& l : r->layers) {
    nlohmann::json points = nlohmann::json::array();
    Series s{l.weight, {}};
    for (const auto& p : l.points) {
      points.push_back({{"sparsity", p.sparsity}, {"accuracy", p.accuracy}});
      csv += fmt::format("{},{},{},{}\n", l.weight, l.weights, p.sparsity, p.accuracy);
      s.y.push_back(100 * p.accuracy);
    }
    series.push_back(s);
    layers.push_back({{"name", l.weight},
                      {"weights", l.weights},
                      {"points", points},
                      {"proposed_sparsity", l.proposed_sparsity}});
  }
  OutputSet files;  // the table and the plot, or neither
  if (!a.csv.empty())
    if (auto s = files.add(a.csv, csv); !s.ok()) return report_error(s);
  if (!a.plot.empty()) {
    std::vector<double> x;
    for (double v : a.sparsities) x.push_back(100 * v);
    const ReferenceLine allowed{100 * r->baseline_accuracy - a.drop,
                                fmt::format("allowed: -{:g} points", a.drop)};
    auto svg = svg_line_plot("Sensitivity: each layer pruned alone (no retraining)", "sparsity (%)",
                             "validation accuracy (%)", x, series, false, false, {allowed});
    if (auto s = files.add(a.plot, svg); !s.ok()) return report_error(s);
    if (auto s = files.add(csv_beside(a.plot), line_plot_csv("sparsity (%)", x, series)); !s.ok())
      return report_error(s);
  }
  if (auto s = files.commit_all(); !s.ok()) return report_error(s);
  if (a.json) {
    fmt::print("{}\n", nlohmann::json{{"model", a.model},
                                      {"baseline_accuracy", r->baseline_accuracy},
                                      {"allowed_drop_points", a.drop},
                                      {"layers", layers}}
                           .dump(2));
    return 0;
  }
  fmt::print("validation accuracy {:.4f} unpruned; accuracy with one layer pruned alone:\n{:<24}",
             r->baseline_accuracy, "layer \\ sparsity");
  for (double s : a.sparsities) fmt::print(" {:>6.0f}%", 100 * s);
  fmt::print(" {:>9}\n", "proposed");
  std::string recipe;
  for (const auto& l : r->layers) {
    fmt::print("{:<24}", l.weight.substr(0, 24));
    for (const auto& p : l.points) fmt::print(" {:>7.4f}", p.accuracy);
    fmt::print(" {:>8.0f}%\n", 100 * l.proposed_sparsity);
    recipe += fmt::format(" --layer {}:sparsity={}", l.weight, l.proposed_sparsity);
  }
  fmt::print("proposed for a drop of at most {} points per layer:{}\n", a.drop, recipe);
  return 0;
}

}  // namespace

Command add_sensitivity(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<SensitivityArgs>();
  auto* cmd = app.add_subcommand("sensitivity",
                                 "Prune each layer alone over sparsities and propose per-layer targets");
  cmd->add_option("model", a->model, "Model (.onnx)")->required();
  cmd->add_option("--data", a->data.dir, "IDX data (the validation split is used)")->required();
  add_data_options(cmd, a->data);
  cmd->add_option("--sparsities", a->sparsities, "Sparsities to try, e.g. 0.5,0.8,0.9")->delimiter(',');
  cmd->add_option("--drop", a->drop, "Allowed accuracy drop per layer, in points (default 0.5)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--csv", a->csv, "Write the curves as CSV");
  cmd->add_option("--plot", a->plot, "Write the curves as an SVG plot");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a, &global]() { return run(*a, global); }};
}

}  // namespace sparrow::cli
