// sparrow sensitivity MODEL --data DIR: prunes each layer alone over a range of sparsities, records
// the validation accuracy, and proposes per-layer sparsities for an allowed accuracy drop; with
// --lowrank, factorizes each layer alone to fractions of its weights and proposes per-layer ranks;
// with --structured, removes fractions of each channel group's filters and proposes per-group ones.
#include <algorithm>

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
  std::vector<double> low_rank;    // weight fractions: a rank scan instead of the pruning scan
  std::vector<double> structured;  // channel fractions: a channel scan instead
  double drop = 0.5;               // points
  bool json = false;
};

// Writes the table (--csv) and the plot (--plot) with the CSV of its numbers beside it, those asked
// for, all or none.
Status write_scan_files(const SensitivityArgs& a, const std::string& csv, const std::string& plot,
                        const std::string& plot_csv) {
  OutputSet files;
  if (!a.csv.empty()) SP_RETURN_IF_ERROR(files.add(a.csv, csv));
  if (!a.plot.empty()) {
    SP_RETURN_IF_ERROR(files.add(a.plot, plot));
    SP_RETURN_IF_ERROR(files.add(csv_beside(a.plot), plot_csv));
  }
  return files.commit_all();
}

int run_ranks(const SensitivityArgs& a, const Model& model, const LabeledData& val,
              const GlobalOptions& global) {
  auto r =
      rank_sensitivity_scan(model, val, a.low_rank, a.drop / 100.0, global.threads, show_progress(global));
  if (!r.ok()) return report_error(r.status());
  nlohmann::json layers = nlohmann::json::array();
  std::string csv = "layer,weights,params,rank,rank_in,weights_after,relative_error,accuracy\n";
  std::vector<Series> series;  // the layers with a point at every fraction
  for (const auto& l : r->layers) {
    nlohmann::json points = nlohmann::json::array();
    Series s{l.weight, {}};
    for (const auto& p : l.points) {
      points.push_back({{"params", p.params},
                        {"rank", p.rank},
                        {"rank_in", p.rank_in},
                        {"weights_after", p.weights_after},
                        {"relative_error", p.relative_error},
                        {"accuracy", p.accuracy}});
      csv += fmt::format("{},{},{},{},{},{},{},{}\n", l.weight, l.weights, p.params, p.rank, p.rank_in,
                         p.weights_after, p.relative_error, p.accuracy);
      s.y.push_back(100 * p.accuracy);
    }
    if (s.y.size() == a.low_rank.size()) series.push_back(s);
    layers.push_back({{"name", l.weight},
                      {"weights", l.weights},
                      {"points", points},
                      {"proposed_params", l.proposed_params}});
  }
  std::vector<double> x;
  for (double v : a.low_rank) x.push_back(100 * v);
  const ReferenceLine allowed{100 * r->baseline_accuracy - a.drop,
                              fmt::format("allowed: -{:g} points", a.drop)};
  const std::string x_label = "weights kept in the factors (%)";
  const std::string plot =
      svg_line_plot("Rank sensitivity: each layer factorized alone (no fine-tuning)", x_label,
                    "validation accuracy (%)", x, series, false, false, {allowed});
  if (auto s = write_scan_files(a, csv, plot, line_plot_csv(x_label, x, series)); !s.ok())
    return report_error(s);
  if (a.json) {
    fmt::print("{}\n", nlohmann::json{{"model", a.model},
                                      {"scan", "lowrank"},
                                      {"baseline_accuracy", r->baseline_accuracy},
                                      {"allowed_drop_points", a.drop},
                                      {"layers", layers}}
                           .dump(2));
    return 0;
  }
  fmt::print("validation accuracy {:.4f} whole; accuracy with one layer factorized alone:\n{:<24}",
             r->baseline_accuracy, "layer \\ weights kept");
  for (double f : a.low_rank) fmt::print(" {:>6.0f}%", 100 * f);
  fmt::print(" {:>9}\n", "proposed");
  std::string recipe;
  for (const auto& l : r->layers) {
    fmt::print("{:<24}", l.weight.substr(0, 24));
    for (double f : a.low_rank) {
      auto p =
          std::find_if(l.points.begin(), l.points.end(), [&](const RankPoint& q) { return q.params == f; });
      if (p == l.points.end())
        fmt::print(" {:>7}", "-");
      else
        fmt::print(" {:>7.4f}", p->accuracy);
    }
    if (l.proposed_params < 1) {
      fmt::print(" {:>8.0f}%\n", 100 * l.proposed_params);
      recipe += fmt::format(" --layer {}:lowrank=params={}", l.weight, l.proposed_params);
    } else {
      fmt::print(" {:>9}\n", "whole");
    }
  }
  fmt::print("proposed for a drop of at most {} points per layer (before fine-tuning):{}\n", a.drop,
             recipe.empty() ? " no layer factorized" : recipe);
  return 0;
}

int run_channels(const SensitivityArgs& a, const Model& model, const LabeledData& val,
                 const GlobalOptions& global) {
  auto r = channel_sensitivity_scan(model, val, a.structured, a.drop / 100.0, global.threads,
                                    show_progress(global));
  if (!r.ok()) return report_error(r.status());
  nlohmann::json groups = nlohmann::json::array();
  std::string csv = "layer,channels,fraction,kept,accuracy\n";
  std::vector<Series> series;
  for (const auto& g : r->groups) {
    nlohmann::json points = nlohmann::json::array();
    Series s{g.producers.front(), {}};
    for (const auto& p : g.points) {
      points.push_back({{"fraction", p.fraction}, {"kept", p.kept}, {"accuracy", p.accuracy}});
      csv += fmt::format("{},{},{},{},{}\n", g.producers.front(), g.channels, p.fraction, p.kept, p.accuracy);
      s.y.push_back(100 * p.accuracy);
    }
    series.push_back(s);
    groups.push_back({{"name", g.producers.front()},
                      {"producers", g.producers},
                      {"channels", g.channels},
                      {"points", points},
                      {"proposed_fraction", g.proposed_fraction}});
  }
  std::vector<double> x;
  for (double v : a.structured) x.push_back(100 * v);
  const ReferenceLine allowed{100 * r->baseline_accuracy - a.drop,
                              fmt::format("allowed: -{:g} points", a.drop)};
  const std::string x_label = "output channels removed (%)";
  const std::string plot =
      svg_line_plot("Channel sensitivity: each channel group pruned alone (no retraining)", x_label,
                    "validation accuracy (%)", x, series, false, false, {allowed});
  if (auto s = write_scan_files(a, csv, plot, line_plot_csv(x_label, x, series)); !s.ok())
    return report_error(s);
  if (a.json) {
    fmt::print("{}\n", nlohmann::json{{"model", a.model},
                                      {"scan", "structured"},
                                      {"baseline_accuracy", r->baseline_accuracy},
                                      {"allowed_drop_points", a.drop},
                                      {"layers", groups}}
                           .dump(2));
    return 0;
  }
  fmt::print("validation accuracy {:.4f} whole; accuracy with one channel group pruned alone (L1):\n{:<24}",
             r->baseline_accuracy, "layer \\ removed");
  for (double f : a.structured) fmt::print(" {:>6.0f}%", 100 * f);
  fmt::print(" {:>9}\n", "proposed");
  std::string recipe;
  for (const auto& g : r->groups) {
    fmt::print("{:<24}", g.producers.front().substr(0, 24));
    for (const auto& p : g.points) fmt::print(" {:>7.4f}", p.accuracy);
    fmt::print(" {:>8.0f}%\n", 100 * g.proposed_fraction);
    if (g.proposed_fraction > 0)
      recipe += fmt::format(" --layer {}:structured=l1={}", g.producers.front(), g.proposed_fraction);
  }
  fmt::print("proposed for a drop of at most {} points per group (before retraining):{}\n", a.drop,
             recipe.empty() ? " no channels removed" : recipe);
  return 0;
}

int run(const SensitivityArgs& a, const GlobalOptions& global) {
  auto model = load_onnx(a.model);
  if (!model.ok()) return report_error(model.status());
  auto data = load_splits(*model, a.data);
  if (!data.ok()) return report_error(data.status());
  if (!a.low_rank.empty()) return run_ranks(a, *model, data->val, global);
  if (!a.structured.empty()) return run_channels(a, *model, data->val, global);
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
  std::vector<double> x;
  for (double v : a.sparsities) x.push_back(100 * v);
  const ReferenceLine allowed{100 * r->baseline_accuracy - a.drop,
                              fmt::format("allowed: -{:g} points", a.drop)};
  const std::string plot =
      svg_line_plot("Sensitivity: each layer pruned alone (no retraining)", "sparsity (%)",
                    "validation accuracy (%)", x, series, false, false, {allowed});
  if (auto s = write_scan_files(a, csv, plot, line_plot_csv("sparsity (%)", x, series)); !s.ok())
    return report_error(s);
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

// Each value of a --lowrank or --structured list: a fraction strictly between 0 and 1.
const CLI::Validator kOpenFraction(
    [](const std::string& text) -> std::string {
      try {
        const double v = std::stod(text);
        return v > 0 && v < 1 ? "" : "'" + text + "' is not a fraction between 0 and 1 (exclusive)";
      } catch (const std::exception&) {
        return "'" + text + "' is not a number";
      }
    },
    "FRACTION in (0, 1)");

Command add_sensitivity(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<SensitivityArgs>();
  auto* cmd = app.add_subcommand("sensitivity",
                                 "Prune each layer alone over sparsities (or factorize it, or remove "
                                 "channels) and propose per-layer targets");
  cmd->add_option("model", a->model, "Model (.onnx)")->required();
  cmd->add_option("--data", a->data.dir, "IDX data (the validation split is used)")->required();
  add_data_options(cmd, a->data);
  auto* sparsities =
      cmd->add_option("--sparsities", a->sparsities, "Sparsities to try, e.g. 0.5,0.8,0.9")->delimiter(',');
  cmd->add_option("--lowrank", a->low_rank,
                  "Scan ranks instead: factorize each layer alone so that its factors keep these fractions "
                  "of its weights, e.g. 0.1,0.25,0.5")
      ->delimiter(',')
      ->check(kOpenFraction)
      ->excludes(sparsities);
  cmd->add_option("--structured", a->structured,
                  "Scan channels instead: remove these fractions of each channel group's output channels "
                  "(smallest L1 norms) alone, e.g. 0.25,0.5,0.75")
      ->delimiter(',')
      ->check(kOpenFraction)
      ->excludes(sparsities)
      ->excludes("--lowrank");
  cmd->add_option("--drop", a->drop, "Allowed accuracy drop per layer, in points (default 0.5)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--csv", a->csv, "Write the curves as CSV");
  cmd->add_option("--plot", a->plot, "Write the curves as an SVG plot");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a, &global]() { return run(*a, global); }};
}

}  // namespace sparrow::cli
