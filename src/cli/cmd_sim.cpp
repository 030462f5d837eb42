// sparrow sim: the cycle-level EIE simulator, on [EIE]'s nine benchmark layers (--eie, optionally
// sweeping one architecture parameter) or on the compressed FC layers of a .spw model.
#include <fstream>
#include <random>

#include "api/simulate.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/timer.h"
#include "sim/model_layers.h"
#include "sim/report.h"
#include "sim/workload.h"
#include "sparrow/compress.h"
#include "sparrow/dataset.h"

namespace sparrow::cli {

namespace {

using json = nlohmann::json;

struct SimArgs {
  std::string model, config, sweep, plot, csv, input;
  std::vector<std::string> layers;
  int balance = 0;  // --eie layers: 0 random masks, else magnitude pruning over this many partitions
  std::string balance_scope = "layer";
  bool eie = false, json_out = false, print_config = false;
};

// "fifo=1,2,4" -> ("fifo", {1, 2, 4}); the key names a config field.
Result<std::pair<std::string, std::vector<int>>> parse_sweep(const std::string& text) {
  size_t eq = text.find('=');
  if (eq == std::string::npos)
    return errorf("--sweep '{}': expected key=v1,v2,... (keys: fifo, pes, width)", text);
  std::string key = text.substr(0, eq);
  if (key != "fifo" && key != "pes" && key != "width")
    return errorf("--sweep: unknown key '{}' (use fifo, pes or width)", key);
  std::vector<int> values;
  std::string rest = text.substr(eq + 1);
  for (size_t pos = 0; pos <= rest.size();) {
    size_t comma = std::min(rest.find(',', pos), rest.size());
    try {
      values.push_back(std::stoi(rest.substr(pos, comma - pos)));
    } catch (...) {
      return errorf("--sweep {}: '{}' is not an integer", key, rest.substr(pos, comma - pos));
    }
    pos = comma + 1;
  }
  return std::make_pair(key, values);
}

Result<sim::Config> with_value(sim::Config c, const std::string& key, int v) {
  if (key == "fifo")
    c.fifo_depth = v;
  else if (key == "pes")
    c.pes = v;
  else
    c.spmat_width_bits = v;
  SP_RETURN_IF_ERROR(sim::validate(c).prefixed("--sweep " + key + "=" + std::to_string(v)));
  return c;
}

Result<std::vector<sim::LayerStats>> run_eie_layers(const sim::Config& c, const SimArgs& a) {
  SP_ASSIGN_OR_RETURN(const BalanceScope scope, parse_balance_scope(a.balance_scope));
  std::vector<sim::LayerStats> out;
  for (const auto& spec : kEieLayers) {
    if (!a.layers.empty() && std::find(a.layers.begin(), a.layers.end(), spec.name) == a.layers.end())
      continue;
    SP_ASSIGN_OR_RETURN(sim::SimLayer layer, sim::synthetic_layer(spec, c, 1, a.balance, scope));
    out.push_back(sim::simulate_layer(c, layer, sim::synthetic_input(spec, c, 2)).stats);
  }
  if (out.empty()) return errorf("--layers: no [EIE] layer matches");
  return out;
}

const EieLayer* paper_layer(const std::string& name) {
  for (const auto& l : kEieLayers)
    if (name == l.name) return &l;
  return nullptr;
}

void print_layers(const sim::Config& c, const std::vector<sim::LayerStats>& rows) {
  fmt::print("{} PEs at {} MHz, FIFO depth {}, {}-bit SRAM words; times in microseconds\n", c.pes,
             c.clock_mhz, c.fifo_depth, c.spmat_width_bits);
  fmt::print("{:<9} {:>9} {:>8} {:>12} {:>8} {:>12} {:>7} {:>8} {:>6} {:>9} {:>8} {:>7}\n", "layer", "cycles",
             "time", "(paper, dev)", "theory", "(paper, dev)", "balance", "imbal cy", "idle", "energy uJ",
             "power W", "GOP/s");
  for (const auto& s : rows) {
    const EieLayer* p = c.pes == 64 && c.clock_mhz == 800 ? paper_layer(s.name) : nullptr;
    auto dev = [](double ours, double paper) {
      return fmt::format("({:.1f}, {:+.0f}%)", paper, 100 * (ours / paper - 1));
    };
    fmt::print(
        "{:<9} {:>9} {:>8.1f} {:>12} {:>8.1f} {:>12} {:>7.3f} {:>8} {:>6.2f} {:>9.3f} {:>8.3f} {:>7.1f}\n",
        s.name, s.cycles, s.time_us, p ? dev(s.time_us, p->actual_us) : "", s.theoretical_us,
        p ? dev(s.theoretical_us, p->theoretical_us) : "", s.load_balance, s.imbalance_cycles,
        s.idle_fraction, s.energy_uj, s.power_w, s.gops);
  }
  for (const auto& s : rows)
    if (!s.fits_on_chip)
      fmt::print(
          "note: {} needs {} B of sparse-matrix SRAM, {} B of pointers and {} B of activations per PE; the "
          "config has {}, {} and {} (register file: {} entries)\n",
          s.name, s.spmat_bytes_per_pe, s.pointer_bytes_per_pe, s.activation_bytes_per_pe, c.spmat_sram_bytes,
          c.pointer_sram_bytes, c.act_sram_bytes, c.act_regfile_entries);
}

int run_sweep(const sim::Config& base, const SimArgs& a) {
  auto sweep = parse_sweep(a.sweep);
  if (!sweep.ok()) return report_error(sweep.status());
  const auto& [key, values] = *sweep;
  std::vector<sim::LayerStats> all;
  std::vector<int> all_values;
  std::map<std::string, std::vector<double>> idle, time_us, energy;
  std::vector<std::string> order;
  for (int v : values) {
    auto c = with_value(base, key, v);
    if (!c.ok()) return report_error(c.status());
    auto rows = run_eie_layers(*c, a);
    if (!rows.ok()) return report_error(rows.status());
    for (const auto& s : *rows) {
      if (!idle.count(s.name)) order.push_back(s.name);
      idle[s.name].push_back(100 * s.idle_fraction);
      time_us[s.name].push_back(s.time_us);
      energy[s.name].push_back(s.energy_uj);
      all.push_back(s);
      all_values.push_back(v);
    }
  }
  // fifo: idle PE cycles; pes: speedup over the first value; width: energy.
  std::vector<sim::Series> series;
  for (const auto& name : order) {
    sim::Series s{name, {}};
    for (size_t i = 0; i < values.size(); ++i)
      s.y.push_back(key == "fifo"  ? idle[name][i]
                    : key == "pes" ? time_us[name][0] / time_us[name][i]
                                   : energy[name][i]);
    series.push_back(s);
  }
  std::string y_label = key == "fifo"  ? "idle PE cycles (%)"
                        : key == "pes" ? "speedup over " + std::to_string(values[0]) + " PE(s)"
                                       : "energy (uJ)";
  std::string x_label = key == "fifo"  ? "activation FIFO depth"
                        : key == "pes" ? "processing elements"
                                       : "sparse-matrix SRAM width (bits)";
  if (a.json_out) {
    json j = json::array();
    for (size_t i = 0; i < all.size(); ++i)
      j.push_back({{key, all_values[i]}, {"stats", sim::stats_json(all[i])}});
    fmt::print("{}\n", json{{"sweep", key}, {"values", values}, {"layers", j}}.dump(2));
  } else {
    fmt::print("{} sweep: {}\n{:<9}", key, y_label, "layer");
    for (int v : values) fmt::print(" {:>8}", v);
    fmt::print("\n");
    for (const auto& s : series) {
      fmt::print("{:<9}", s.name);
      for (double y : s.y) fmt::print(" {:>8.2f}", y);
      fmt::print("\n");
    }
  }
  OutputSet files;  // the table and the plot, or neither
  if (!a.csv.empty())
    if (auto s = files.add(a.csv, sim::stats_csv(all, key, all_values)); !s.ok()) return report_error(s);
  if (!a.plot.empty()) {
    std::vector<double> x(values.begin(), values.end());
    std::string svg = sim::svg_line_plot("EIE simulator: " + key + " sweep", x_label, y_label, x, series,
                                         key != "width", key == "pes");
    if (auto s = files.add(a.plot, svg); !s.ok()) return report_error(s);
    if (auto s = files.add(csv_beside(a.plot), line_plot_csv(key, x, series)); !s.ok())
      return report_error(s);
  }
  if (auto s = files.commit_all(); !s.ok()) return report_error(s);
  return 0;
}

// The compressed FC layers of a .spw model, each fed the activations the dense executor computes.
int run_model(const sim::Config& c, const SimArgs& a, const GlobalOptions& global) {
  std::optional<Tensor> input;
  if (!a.input.empty()) {
    auto t = read_npy(a.input);
    if (!t.ok()) return report_error(t.status());
    input = std::move(*t);
  }
  auto layers = api::simulate_spw(a.model, c, input ? &*input : nullptr, global.threads);
  if (!layers.ok()) return report_error(layers.status());
  if (a.json_out) {
    fmt::print("{}\n", api::simulation_json(a.model, c, *layers).dump(2));
    return 0;
  }
  std::vector<sim::LayerStats> rows;
  for (const auto& l : *layers) rows.push_back(l.stats);
  if (!a.csv.empty())
    if (auto s = write_file_atomic(a.csv, sim::stats_csv(rows)); !s.ok()) return report_error(s);
  print_layers(c, rows);
  int64_t cycles = 0;
  double energy = 0;
  for (const auto& s : rows) cycles += s.cycles, energy += s.energy_uj;
  fmt::print("whole model (layers in sequence): {} cycles, {:.2f} us, {:.3f} uJ\n", cycles,
             cycles / c.clock_mhz, energy);
  for (const auto& l : *layers)
    fmt::print("{}: {} the fixed-point reference; relative error vs the float executor {:.2e}\n", l.name,
               l.bit_exact ? "bit-exact with" : "DIFFERS from", l.relative_error);
  return 0;
}

int run_sim(const SimArgs& a, const GlobalOptions& global) {
  sim::Config c;
  if (!a.config.empty()) {
    auto loaded = sim::read_config(a.config);
    if (!loaded.ok()) return report_error(loaded.status());
    c = *loaded;
  }
  if (a.print_config) {
    fmt::print("{}\n", sim::config_to_json(c).dump(2));
    return 0;
  }
  if (a.eie == !a.model.empty()) return report_error(errorf("sim: give either --eie or a .spw model"));
  if (!a.model.empty()) return run_model(c, a, global);
  if (!a.sweep.empty()) return run_sweep(c, a);
  Timer timer;
  auto rows = run_eie_layers(c, a);
  if (!rows.ok()) return report_error(rows.status());
  if (a.json_out) {
    json j = json::array();
    for (const auto& s : *rows) j.push_back(sim::stats_json(s));
    fmt::print("{}\n", json{{"config", sim::config_to_json(c)}, {"layers", j}}.dump(2));
  } else {
    print_layers(c, *rows);
    fmt::print("simulated in {:.2f} s\n", timer.seconds());
  }
  if (!a.csv.empty())
    if (auto s = write_file_atomic(a.csv, sim::stats_csv(*rows)); !s.ok()) return report_error(s);
  return 0;
}

}  // namespace

Command add_sim(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<SimArgs>();
  auto* cmd = app.add_subcommand("sim", "Cycle-level simulation of the EIE accelerator");
  auto* model =
      cmd->add_option("model", a->model, "Compressed model (.spw): simulate its compressed FC layers");
  auto* eie = cmd->add_flag("--eie", a->eie, "The nine benchmark layers of [EIE]")->excludes(model);
  cmd->add_option("--config", a->config,
                  "Architecture config (JSON); default: the paper's 64-PE, 800 MHz design");
  cmd->add_option("--layers", a->layers, "Only these --eie layers")->delimiter(',')->needs(eie);
  cmd->add_option("--balance", a->balance,
                  "--eie layers pruned by magnitude from Gaussian weights instead of random masks: 1 as a "
                  "whole, N >= 2 balanced over N row partitions (load-balance-aware pruning)")
      ->check(CLI::Range(1, kMaxBalancePartitions))
      ->needs(eie);
  cmd->add_option("--balance-scope", a->balance_scope,
                  "With --balance N: layer (each PE's total equal), column (each input's weights spread "
                  "evenly over the PEs too) or entries (each input's entries, fillers included, equal "
                  "on every PE)")
      ->check(CLI::IsMember({"layer", "column", "entries"}))
      ->needs("--balance");
  auto* sweep = cmd->add_option("--sweep", a->sweep,
                                "Sweep one parameter: fifo=1,2,4,... | pes=1,2,4,... | width=32,64,...")
                    ->needs(eie);
  cmd->add_option("--plot", a->plot, "With --sweep: write an SVG plot here")->needs(sweep);
  cmd->add_option("--csv", a->csv, "Write per-layer statistics as CSV here");
  cmd->add_option("--input", a->input, "With a model: .npy input (default: uniform random)")->needs(model);
  cmd->add_flag("--json", a->json_out, "Print one JSON object");
  cmd->add_flag("--print-config", a->print_config, "Print the configuration in use and exit");
  return {cmd, [a, &global]() { return run_sim(*a, global); }};
}

}  // namespace sparrow::cli
