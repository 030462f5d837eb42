// sparrow sensitivity MODEL --data DIR: prunes each layer alone over a range of sparsities, records
// the validation accuracy, and proposes per-layer sparsities for an allowed accuracy drop; with
// --lowrank, factorizes each layer alone to fractions of its weights and proposes per-layer ranks;
// with --structured, removes fractions of each channel group's filters and proposes per-group ones.
#include <algorithm>
#include <cmath>

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
  std::vector<double> low_rank;            // weight fractions: a rank scan instead of the pruning scan
  std::string low_rank_method = "tucker";  // convolutions in the rank scan: tucker, cp or groups=G
  std::vector<double> structured;          // channel fractions: a channel scan instead
  double drop = 0.5;                       // points
  bool json = false;
};

// One scan, as it is printed and written. Each row (a layer or channel group) has the accuracy at
// each scanned value (NaN where the row has no point), its proposal as printed, and the `--layer`
// option that applies it (empty: nothing proposed).
struct ScanLabels {
  std::string kind;  // the JSON's "scan" (none for the pruning scan)
  std::string alone, x_label, plot_title, row_header, recipe_note, nothing_proposed;
};
struct ScanReport {
  ScanLabels labels;
  std::vector<double> values;
  double baseline = 0;
  nlohmann::json rows = nlohmann::json::array();
  std::string csv;
  struct Row {
    std::string name;
    std::vector<double> accuracy;
    std::string proposed, option;
  };
  std::vector<Row> table;
};

// The accuracy of each of `values` among points (value_of, accuracy), NaN where there is none.
template <class Point, class Value>
std::vector<double> accuracy_at(const std::vector<double>& values, const std::vector<Point>& points,
                                Value value_of) {
  std::vector<double> out;
  for (double v : values) {
    auto p = std::find_if(points.begin(), points.end(), [&](const Point& q) { return value_of(q) == v; });
    out.push_back(p == points.end() ? std::nan("") : p->accuracy);
  }
  return out;
}

// Writes the table (--csv) and the plot (--plot, the rows with a point at every value) with the CSV
// of its numbers beside it, those asked for, all or none; then prints the JSON or the table.
int emit(const SensitivityArgs& a, const ScanReport& r) {
  std::vector<double> x;
  for (double v : r.values) x.push_back(100 * v);
  std::vector<Series> series;
  for (const auto& row : r.table) {
    Series s{row.name, {}};
    for (double acc : row.accuracy) s.y.push_back(100 * acc);
    if (std::none_of(s.y.begin(), s.y.end(), [](double v) { return std::isnan(v); })) series.push_back(s);
  }
  OutputSet files;
  if (!a.csv.empty())
    if (auto s = files.add(a.csv, r.csv); !s.ok()) return report_error(s);
  if (!a.plot.empty()) {
    const ReferenceLine allowed{100 * r.baseline - a.drop, fmt::format("allowed: -{:g} points", a.drop)};
    const std::string svg = svg_line_plot(r.labels.plot_title, r.labels.x_label, "validation accuracy (%)", x,
                                          series, false, false, {allowed});
    if (auto s = files.add(a.plot, svg); !s.ok()) return report_error(s);
    if (auto s = files.add(csv_beside(a.plot), line_plot_csv(r.labels.x_label, x, series)); !s.ok())
      return report_error(s);
  }
  if (auto s = files.commit_all(); !s.ok()) return report_error(s);
  if (a.json) {
    nlohmann::json j{{"model", a.model},
                     {"baseline_accuracy", r.baseline},
                     {"allowed_drop_points", a.drop},
                     {"layers", r.rows}};
    if (!r.labels.kind.empty()) j["scan"] = r.labels.kind;
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("validation accuracy {:.4f} whole; accuracy with one {} alone:\n{:<24}", r.baseline,
             r.labels.alone, r.labels.row_header);
  for (double v : r.values) fmt::print(" {:>6.0f}%", 100 * v);
  fmt::print(" {:>9}\n", "proposed");
  std::string options;
  for (const auto& row : r.table) {
    fmt::print("{:<24}", row.name.substr(0, 24));
    for (double acc : row.accuracy)
      if (std::isnan(acc))
        fmt::print(" {:>7}", "-");
      else
        fmt::print(" {:>7.4f}", acc);
    fmt::print(" {:>9}\n", row.proposed);
    options += row.option;
  }
  fmt::print("proposed for a drop of at most {} points per {}:{}\n", a.drop, r.labels.recipe_note,
             options.empty() ? r.labels.nothing_proposed : options);
  return 0;
}

std::string percent(double fraction) {
  return fmt::format("{:.0f}%", 100 * fraction);
}

Result<ScanReport> pruning_report(const SensitivityArgs& a, const Model& model, const LabeledData& val,
                                  const GlobalOptions& global) {
  SP_ASSIGN_OR_RETURN(auto r, sensitivity_scan(model, val, a.sparsities, a.drop / 100.0, global.threads,
                                               show_progress(global)));
  ScanReport out;
  out.labels = {"",
                "layer pruned",
                "sparsity (%)",
                "Sensitivity: each layer pruned alone (no retraining)",
                "layer \\ sparsity",
                "layer",
                ""};
  out.values = a.sparsities;
  out.baseline = r.baseline_accuracy;
  out.csv = "layer,weights,sparsity,accuracy\n";
  for (const auto& l : r.layers) {
    nlohmann::json points = nlohmann::json::array();
    for (const auto& p : l.points) {
      points.push_back({{"sparsity", p.sparsity}, {"accuracy", p.accuracy}});
      out.csv += fmt::format("{},{},{},{}\n", l.weight, l.weights, p.sparsity, p.accuracy);
    }
    out.rows.push_back({{"name", l.weight},
                        {"weights", l.weights},
                        {"points", points},
                        {"proposed_sparsity", l.proposed_sparsity}});
    out.table.push_back(
        {l.weight, accuracy_at(a.sparsities, l.points, [](const SensitivityPoint& p) { return p.sparsity; }),
         percent(l.proposed_sparsity),
         fmt::format(" --layer {}:sparsity={}", l.weight, l.proposed_sparsity)});
  }
  return out;
}

Result<ScanReport> rank_report(const SensitivityArgs& a, const Model& model, const LabeledData& val,
                               const GlobalOptions& global) {
  // The method as a rule's suffix ("+cp", "+groups=4"), checked by the rule parser.
  const std::string suffix = a.low_rank_method == "tucker" ? "" : "+" + a.low_rank_method;
  auto method = parse_low_rank_rule("params=0.5" + suffix);
  if (!method.ok())
    return errorf("--lowrank-method '{}': expected tucker, cp or groups=G", a.low_rank_method);
  SP_ASSIGN_OR_RETURN(auto r, rank_sensitivity_scan(model, val, a.low_rank, a.drop / 100.0, global.threads,
                                                    show_progress(global), *method));
  ScanReport out;
  out.labels = {"lowrank",
                "layer factorized",
                "weights kept in the factors (%)",
                "Rank sensitivity: each layer factorized alone (no fine-tuning)",
                "layer \\ weights kept",
                "layer (before fine-tuning)",
                " no layer factorized"};
  out.values = a.low_rank;
  out.baseline = r.baseline_accuracy;
  out.csv = "layer,weights,params,rank,rank_in,weights_after,relative_error,accuracy\n";
  for (const auto& l : r.layers) {
    nlohmann::json points = nlohmann::json::array();
    for (const auto& p : l.points) {
      points.push_back({{"params", p.params},
                        {"rank", p.rank},
                        {"rank_in", p.rank_in},
                        {"weights_after", p.weights_after},
                        {"relative_error", p.relative_error},
                        {"accuracy", p.accuracy}});
      out.csv += fmt::format("{},{},{},{},{},{},{},{}\n", l.weight, l.weights, p.params, p.rank, p.rank_in,
                             p.weights_after, p.relative_error, p.accuracy);
    }
    out.rows.push_back({{"name", l.weight},
                        {"weights", l.weights},
                        {"points", points},
                        {"proposed_params", l.proposed_params},
                        {"method", a.low_rank_method}});
    const bool factorized = l.proposed_params < 1;
    out.table.push_back(
        {l.weight, accuracy_at(a.low_rank, l.points, [](const RankPoint& p) { return p.params; }),
         factorized ? percent(l.proposed_params) : "whole",
         factorized ? fmt::format(" --layer {}:lowrank=params={}{}", l.weight, l.proposed_params, suffix)
                    : ""});
  }
  return out;
}

Result<ScanReport> channel_report(const SensitivityArgs& a, const Model& model, const LabeledData& val,
                                  const GlobalOptions& global) {
  SP_ASSIGN_OR_RETURN(auto r, channel_sensitivity_scan(model, val, a.structured, a.drop / 100.0,
                                                       global.threads, show_progress(global)));
  ScanReport out;
  out.labels = {"structured",
                "channel group pruned (L1)",
                "output channels removed (%)",
                "Channel sensitivity: each channel group pruned alone (no retraining)",
                "layer \\ removed",
                "group (before retraining)",
                " no channels removed"};
  out.values = a.structured;
  out.baseline = r.baseline_accuracy;
  out.csv = "layer,channels,fraction,kept,accuracy\n";
  for (const auto& g : r.groups) {
    const std::string& name = g.producers.front();
    nlohmann::json points = nlohmann::json::array();
    for (const auto& p : g.points) {
      points.push_back({{"fraction", p.fraction}, {"kept", p.kept}, {"accuracy", p.accuracy}});
      out.csv += fmt::format("{},{},{},{},{}\n", name, g.channels, p.fraction, p.kept, p.accuracy);
    }
    out.rows.push_back({{"name", name},
                        {"producers", g.producers},
                        {"channels", g.channels},
                        {"head_width", g.head_width},
                        {"points", points},
                        {"proposed_fraction", g.proposed_fraction}});
    out.table.push_back(
        {g.head_width > 0 ? name + " (heads)" : name,
         accuracy_at(a.structured, g.points, [](const ChannelPoint& p) { return p.fraction; }),
         percent(g.proposed_fraction),
         g.proposed_fraction > 0 ? fmt::format(" --layer {}:structured=l1={}", name, g.proposed_fraction)
                                 : ""});
  }
  return out;
}

int run(const SensitivityArgs& a, const GlobalOptions& global) {
  auto model = load_onnx(a.model);
  if (!model.ok()) return report_error(model.status());
  auto data = load_splits(*model, a.data);
  if (!data.ok()) return report_error(data.status());
  auto report = !a.low_rank.empty()     ? rank_report(a, *model, data->val, global)
                : !a.structured.empty() ? channel_report(a, *model, data->val, global)
                                        : pruning_report(a, *model, data->val, global);
  if (!report.ok()) return report_error(report.status());
  return emit(a, *report);
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
  cmd->add_option("--lowrank-method", a->low_rank_method,
                  "With --lowrank: how convolutions are factorized, tucker (default), cp or groups=G "
                  "(Tucker-2 with a grouped core); the proposals carry it")
      ->needs("--lowrank");
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
