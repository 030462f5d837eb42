#include "cli/spw_report.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/inspect.h"
#include "cli/common.h"

namespace sparrow::cli {

namespace {

std::string percent(double part, double whole) {
  return whole > 0 ? fmt::format("{:.2f}%", 100 * part / whole) : "-";
}

void print_breakdown(const ByteBreakdown& b, int64_t file_bytes) {
  fmt::print(
      "\nbytes: codes {}  gaps {}  fillers {}  pointers {}  codebooks {}  biases {}  dense weights {}  "
      "graph {}  headers {}  = {} (file size {})\n",
      b.codes, b.gaps, b.fillers, b.pointers, b.codebooks, b.biases, b.dense_weights, b.graph, b.headers,
      b.total(), file_bytes);
}

// The layers low-rank factorization replaced (the metadata's "factorized"), if any.
void print_factorized(const SpwModel& m) {
  auto meta = nlohmann::json::parse(m.metadata_json, nullptr, false);
  if (!meta.is_object() || !meta.contains("factorized") || !meta["factorized"].is_array()) return;
  for (const auto& f : meta["factorized"]) {
    if (!f.is_object() || !f.value("weight", nlohmann::json()).is_string() ||
        !f.value("relative_error", nlohmann::json()).is_number() ||
        !f.value("factors", nlohmann::json()).is_array())
      continue;
    FactorizedLayer layer{f["weight"].get<std::string>(),
                          "",
                          {},
                          api::metadata_count(f, "rows"),
                          api::metadata_count(f, "cols"),
                          api::metadata_count(f, "rank"),
                          api::metadata_count(f, "rank_in"),
                          api::metadata_count(f, "weights_after"),
                          f["relative_error"].get<double>()};
    layer.factors.resize(f["factors"].size());
    // Files written before the method was recorded: Tucker-2 had three factors, the SVD two.
    const std::string method = f.value("method", nlohmann::json()).is_string()
                                   ? f["method"].get<std::string>()
                               : layer.factors.size() == 3 ? "tucker2"
                                                           : "svd";
    layer.method = method;
    layer.groups = std::max<int64_t>(1, api::metadata_count(f, "groups"));
    fmt::print("{}\n", factorization_text(layer));
  }
}

// The channel groups structured pruning went through (the metadata's "structured") and the MACs
// per sample before and after reshaping ("macs"), if any.
void print_channel_groups(const SpwModel& m) {
  auto meta = nlohmann::json::parse(m.metadata_json, nullptr, false);
  if (!meta.is_object()) return;
  if (meta.contains("macs") && meta["macs"].is_object()) {
    const int64_t before = api::metadata_count(meta["macs"], "before"),
                  after = api::metadata_count(meta["macs"], "after");
    const int64_t weights_before = api::dense_fp32_bytes(m) / 4, weights_after = api::held_fp32_bytes(m) / 4;
    if (before > 0 && after > 0 && weights_after > 0)
      fmt::print("\nreshaped: weights {} -> {} ({:.2f}x fewer), MACs per sample {} -> {} ({:.2f}x fewer)\n",
                 human_count(weights_before), human_count(weights_after),
                 static_cast<double>(weights_before) / static_cast<double>(weights_after),
                 human_count(before), human_count(after),
                 static_cast<double>(before) / static_cast<double>(after));
  }
  if (!meta.contains("structured") || !meta["structured"].is_array()) return;
  for (const auto& g : meta["structured"]) {
    if (!g.is_object() || !g.value("producers", nlohmann::json()).is_array()) continue;
    std::string producers;
    for (const auto& p : g["producers"]) {
      if (!p.is_string()) continue;
      if (!producers.empty()) producers += '+';
      producers += p.get<std::string>();
    }
    const std::string why =
        g.value("kept_whole", nlohmann::json()).is_string() ? g["kept_whole"].get<std::string>() : "";
    const int64_t channels = api::metadata_count(g, "channels"), kept = api::metadata_count(g, "kept");
    const int64_t head_width = api::metadata_count(g, "head_width");
    const std::string unit =
        head_width > 0 ? fmt::format("heads ({} channels each)", head_width) : "channels";
    if (!why.empty())
      fmt::print("{} of {}: {} kept whole ({})\n", unit, producers, channels, why);
    else if (kept < channels)
      fmt::print("{} of {}: {} -> {}\n", unit, producers, channels, kept);
  }
}

}  // namespace

std::string factorization_text(const FactorizedLayer& f) {
  std::string how;
  if (f.method == "tucker2")
    how = f.groups > 1 ? fmt::format("by Tucker-2 at ranks {} in, {} out, core in {} groups", f.rank_in,
                                     f.rank, f.groups)
                       : fmt::format("by Tucker-2 at ranks {} in, {} out", f.rank_in, f.rank);
  else if (f.method == "cp")
    how = fmt::format("by CP at rank {}", f.rank);
  else
    how = fmt::format("at rank {}", f.rank);
  return fmt::format("factorized {}: {} x {} {} ({} -> {} weights), relative error {:.4f}", f.weight, f.rows,
                     f.cols, how, human_count(f.rows * f.cols), human_count(f.weights_after),
                     f.relative_error);
}

void print_spw_report(const SpwModel& m, const std::string& path, int balance_partitions) {
  if (balance_partitions <= 0) balance_partitions = api::default_balance_partitions(m);
  int64_t dense = api::dense_fp32_bytes(m);
  fmt::print("file      {}: {} bytes, {:.1f}x smaller than {} bytes of float32 parameters\n", path,
             m.file_bytes,
             m.file_bytes ? static_cast<double>(dense) / static_cast<double>(m.file_bytes) : 0.0, dense);
  fmt::print("\n{:<24} {:>9} {:>7} {:>10} {:>10} {:>7} {:>8} {:>16} {:>13}\n", "layer", "weights", "kept",
             "w-bits", "idx-bits", "layout", "fillers", "size P+Q / +H", "balance");
  fmt::print("{:<24} {:>9} {:>7} {:>10} {:>10} {:>7} {:>8} {:>16} {:>13}\n", "", "", "", "P+Q / +H",
             "P+Q / +H", "", "", "(% of float32)", fmt::format("({} P) / col", balance_partitions));
  double pq = 0, stored = 0, dense_bits = 0;
  int64_t weights = 0, kept = 0;
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const CompressedTensor& t = m.tensors[i];
    TensorSizes z = tensor_sizes(t, m.storage[i]);
    bool sparse = t.layout == WeightLayout::sparse;
    auto balance = api::layer_balance(t, balance_partitions);
    fmt::print(
        "{:<24} {:>9} {:>7} {:>10} {:>10} {:>7} {:>8} {:>16} {:>13}\n", t.name.substr(0, 24),
        human_count(z.weights), percent(static_cast<double>(z.nonzeros), static_cast<double>(z.weights)),
        fmt::format("{} / {:.1f}", t.weight_bits, z.code_bits_per_entry),
        sparse ? fmt::format("{} / {:.1f}", t.index_bits, z.gap_bits_per_entry) : "-",
        sparse ? "sparse" : "dense", z.fillers,
        percent(z.pq_bits, z.dense_bits()) + " / " + percent(z.stored_bits, z.dense_bits()),
        balance.ok() ? fmt::format("{:.3f} / {:.3f}", balance->load_balance, balance->column_balance) : "-");
    pq += z.pq_bits;
    stored += z.stored_bits;
    dense_bits += z.dense_bits();
    weights += z.weights;
    kept += z.nonzeros;
  }
  fmt::print(
      "{:<24} {:>9} {:>7} {:>40} {:>16}\n", "total", human_count(weights),
      percent(static_cast<double>(kept), static_cast<double>(weights)),
      fmt::format("({:.1f}x / {:.1f}x)", pq > 0 ? dense_bits / pq : 0, stored > 0 ? dense_bits / stored : 0),
      percent(pq, dense_bits) + " / " + percent(stored, dense_bits));
  print_channel_groups(m);
  print_factorized(m);
  print_breakdown(m.breakdown, m.file_bytes);
}

}  // namespace sparrow::cli
