#include "api/report_page.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "api/inspect.h"
#include "core/file.h"
#include "core/svg_plot.h"
#include "sparrow/format.h"
#include "sparrow/onnx.h"

namespace sparrow::api {

namespace {

std::string file_name_for(const std::string& layer) {
  std::string s = layer;
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  return s + ".svg";
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// How many non-zero weights of the decompressed tensor equal each codebook entry (entry 0 is zero).
Result<std::vector<int64_t>> code_counts(const CompressedTensor& t) {
  SP_ASSIGN_OR_RETURN(std::vector<uint8_t> codes, decode_codes(t));
  std::vector<int64_t> counts(t.codebook.size(), 0);
  for (uint8_t c : codes)
    if (c != 0 && c < counts.size()) ++counts[c];
  return counts;
}

// The histogram of the source model's weights for this tensor, when the source has them.
std::optional<Histogram> source_histogram(const CompressedTensor& t, const Model* source, int bins) {
  if (source == nullptr) return std::nullopt;
  auto it = source->initializers.find(t.name);
  if (it == source->initializers.end() || it->second.dtype() != DType::f32 || it->second.numel() == 0)
    return std::nullopt;
  std::vector<float> w(it->second.f32_data(), it->second.f32_data() + it->second.numel());
  auto [lo, hi] = std::minmax_element(w.begin(), w.end());
  return make_histogram(w, *lo, *hi, bins);
}

// The weight-sharing plot of one compressed tensor, with the source's weights when it has them.
Result<std::string> layer_plot(const CompressedTensor& t, const Model* source, int bins) {
  SP_ASSIGN_OR_RETURN(std::vector<int64_t> counts, code_counts(t));
  std::vector<float> centroids(t.codebook.begin() + 1, t.codebook.end());
  counts.erase(counts.begin());
  std::optional<Histogram> dense = source_histogram(t, source, bins);
  std::string title =
      fmt::format("{}: {} weights, {:.1f}% kept, {} bits", t.name, t.numel(),
                  100.0 * static_cast<double>(t.nonzeros()) / static_cast<double>(t.numel()), t.weight_bits);
  return svg_weight_sharing_plot(title, dense ? &*dense : nullptr, centroids, counts);
}

// The numbers of a layer's plot: one row per shared value (index in the codebook, value, weights
// that use it) and, with the source model, one per histogram bin of its weights (value 0 stands
// for the pruned weights; the bins count every source weight).
Result<std::string> layer_plot_csv(const CompressedTensor& t, const Model* source, int bins) {
  SP_ASSIGN_OR_RETURN(std::vector<int64_t> counts, code_counts(t));
  std::string csv = "series,index,value,low,high,weights\n";
  for (size_t k = 1; k < t.codebook.size(); ++k)
    csv += fmt::format("shared value,{},{},,,{}\n", k, t.codebook[k], counts[k]);
  if (std::optional<Histogram> h = source_histogram(t, source, bins)) {
    const double width = (h->hi - h->lo) / static_cast<double>(h->counts.size());
    for (size_t b = 0; b < h->counts.size(); ++b)
      csv += fmt::format("source bin,{},,{},{},{}\n", b, h->lo + width * b, h->lo + width * (b + 1),
                         h->counts[b]);
  }
  return csv;
}

// What the compression achieved and how (from the file's metadata): accuracy or agreement before
// and after retraining, and the recipe that replays it.
std::string results_section(const nlohmann::json& meta) {
  // A number recorded under `key`, or NaN when it is missing or not a number (non-finite values
  // are stored as null).
  auto number = [](const nlohmann::json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::nan("");
  };
  std::string h;
  if (meta.contains("results") && meta["results"].is_object()) {
    const nlohmann::json& r = meta["results"];
    const double before = number(r, "accuracy_before"), after = number(r, "accuracy_after");
    if (!std::isnan(before) && !std::isnan(after))
      h += fmt::format(
          "<p>Accuracy on the held-out data: {:.2f}% before, {:.2f}% after ({:+.2f} points).</p>\n",
          100 * before, 100 * after, 100 * (after - before));
    if (r.contains("agreement")) {
      const nlohmann::json& g = r["agreement"];
      h += fmt::format(
          "<p>Agreement with the original on the held-out data: top-1 {:.2f}%, output difference max {:.4g}, "
          "mean {:.4g}.</p>\n",
          100 * number(g, "top1"), number(g, "max_abs_difference"), number(g, "mean_abs_difference"));
    }
    if (!std::isnan(number(r, "seconds")))
      h += fmt::format("<p>Compressed in {:.1f} s.</p>\n", number(r, "seconds"));
  }
  if (meta.contains("options") && meta["options"].is_object()) {
    nlohmann::json recipe = meta["options"];
    if (meta.contains("retrain")) recipe["retrain"] = meta["retrain"];
    h += "<h2>Recipe</h2>\n<p>Replay with <code>sparrow compress SOURCE -o OUT.spw --recipe "
         "THIS.spw</code>.</p>\n";
    h += fmt::format("<pre>{}</pre>\n", html_escape(recipe.dump(2)));
  }
  return h;
}

// How the model was reshaped before its weights were pruned (from the file's metadata): multiply-adds
// per sample before and after, the channel groups structured pruning went through, the layers
// low-rank factorization replaced.
std::string reshaping_section(const nlohmann::json& meta) {
  auto text = [](const nlohmann::json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_string() ? html_escape(j[key].get<std::string>())
                                                                  : std::string();
  };
  if (!meta.is_object()) return "";
  std::string h;
  const nlohmann::json macs = meta.value("macs", nlohmann::json());
  if (metadata_count(macs, "before") > 0 && metadata_count(macs, "after") > 0)
    h += fmt::format("<p>Multiply-adds per sample: {} before, {} after ({:.2f}x fewer).</p>\n",
                     metadata_count(macs, "before"), metadata_count(macs, "after"),
                     static_cast<double>(metadata_count(macs, "before")) /
                         static_cast<double>(metadata_count(macs, "after")));
  if (meta.contains("structured") && meta["structured"].is_array()) {
    h += "<table>\n<tr><th>channels of</th><th>channels (or heads)</th><th>kept</th><th>kept whole "
         "because</th></tr>\n";
    for (const auto& g : meta["structured"]) {
      if (!g.is_object()) continue;
      std::string producers;
      for (const auto& p : g.value("producers", nlohmann::json::array()))
        if (p.is_string()) producers += (producers.empty() ? "" : ", ") + html_escape(p.get<std::string>());
      const int64_t head_width = metadata_count(g, "head_width");
      const std::string heads = head_width > 0 ? fmt::format(" heads of {}", head_width) : "";
      h +=
          fmt::format("<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>\n", producers,
                      metadata_count(g, "channels"), heads, metadata_count(g, "kept"), text(g, "kept_whole"));
    }
    h += "</table>\n";
  }
  if (meta.contains("factorized") && meta["factorized"].is_array()) {
    h += "<table>\n<tr><th>factorized</th><th>method</th><th>rows</th><th>columns</th><th>rank</th>"
         "<th>weights after</th><th>relative error</th></tr>\n";
    for (const auto& f : meta["factorized"])
      h += fmt::format(
          "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4f}</td></tr>\n",
          text(f, "weight"), text(f, "method"), metadata_count(f, "rows"), metadata_count(f, "cols"),
          metadata_count(f, "rank"), metadata_count(f, "weights_after"),
          f.is_object() && f.contains("relative_error") && f["relative_error"].is_number()
              ? f["relative_error"].get<double>()
              : std::nan(""));
    h += "</table>\n";
  }
  return h.empty() ? h : "<h2>Reshaping</h2>\n" + h;
}

// A sensitivity scan as `sparrow sensitivity --json` prints it, checked: every layer tried at the
// same sparsities.
struct SensitivityScan {
  double baseline_accuracy = 0, allowed_drop_points = 0;
  std::vector<double> sparsities;
  struct Layer {
    std::string name;
    std::vector<double> accuracy;
    double proposed = 0;
  };
  std::vector<Layer> layers;
};

Result<SensitivityScan> read_sensitivity(const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::vector<char> text, read_file(path));
  const auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return errorf("{}: not valid JSON", path);
  if (j.is_object() && j.contains("scan")) {  // the other scans of `sparrow sensitivity`
    const std::string kind = j["scan"].is_string() ? j["scan"].get<std::string>() : "";
    const char* what = kind == "lowrank"      ? "a rank scan (`sensitivity --lowrank`)"
                       : kind == "structured" ? "a channel scan (`sensitivity --structured`)"
                                              : "not a pruning scan";
    return errorf("{}: {}; the report plots pruning scans (`sensitivity --sparsities`)", path, what);
  }
  SensitivityScan scan;
  try {
    scan.baseline_accuracy = j.at("baseline_accuracy").get<double>();
    scan.allowed_drop_points = j.at("allowed_drop_points").get<double>();
    for (const auto& l : j.at("layers")) {
      SensitivityScan::Layer layer{
          l.at("name").get<std::string>(), {}, l.at("proposed_sparsity").get<double>()};
      std::vector<double> sparsities;
      for (const auto& p : l.at("points")) {
        sparsities.push_back(p.at("sparsity").get<double>());
        layer.accuracy.push_back(p.at("accuracy").get<double>());
      }
      if (scan.layers.empty()) scan.sparsities = sparsities;
      if (sparsities != scan.sparsities)
        return errorf("{}: layer '{}' was tried at other sparsities than '{}'", path, layer.name,
                      scan.layers.front().name);
      scan.layers.push_back(std::move(layer));
    }
  } catch (const nlohmann::json::exception& e) {
    return errorf("{}: not a sensitivity scan (`sparrow sensitivity --json`): {}", path, e.what());
  }
  if (scan.layers.empty()) return errorf("{}: the scan holds no layers", path);
  return scan;
}

// The scan's curves: sparsity (%) along x, one series of accuracies (%) per layer.
std::pair<std::vector<double>, std::vector<Series>> scan_curves(const SensitivityScan& scan) {
  std::vector<double> x;
  for (double s : scan.sparsities) x.push_back(100 * s);
  std::vector<Series> series;
  for (const auto& l : scan.layers) {
    Series s{l.name, {}};
    for (double a : l.accuracy) s.y.push_back(100 * a);
    series.push_back(std::move(s));
  }
  return {x, series};
}

std::string sensitivity_plot(const SensitivityScan& scan) {
  const auto [x, series] = scan_curves(scan);
  const ReferenceLine allowed{100 * scan.baseline_accuracy - scan.allowed_drop_points,
                              fmt::format("allowed: -{:g} points", scan.allowed_drop_points)};
  return svg_line_plot("Sensitivity: each layer pruned alone (no retraining)", "sparsity (%)",
                       "validation accuracy (%)", x, series, false, false, {allowed});
}

// The scan's proposal beside what the file keeps, per layer of the scan.
std::string sensitivity_section(const SensitivityScan& scan, const nlohmann::json& report,
                                const std::string& plot) {
  std::string h = fmt::format(
      "<h2>Sensitivity</h2>\n<p>Each layer of the source pruned alone, without retraining: validation "
      "accuracy {:.2f}% unpruned, {:g} points allowed per layer.</p>\n<p><img src=\"{}\"></p>\n"
      "<table>\n<tr><th>layer</th><th>proposed sparsity</th><th>sparsity in this file</th></tr>\n",
      100 * scan.baseline_accuracy, scan.allowed_drop_points, html_escape(plot));
  for (const auto& l : scan.layers) {
    std::string in_file = "-";
    for (const auto& r : report["layers"])
      if (r["name"] == l.name) in_file = fmt::format("{:.1f}%", 100 * (1 - r["kept_fraction"].get<double>()));
    h += fmt::format("<tr><td>{}</td><td>{:.1f}%</td><td>{}</td></tr>\n", html_escape(l.name),
                     100 * l.proposed, in_file);
  }
  return h + "</table>\n";
}

std::string html_page(const nlohmann::json& j, const std::vector<std::string>& plots,
                      const std::string& sensitivity = "") {
  std::string h =
      "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sparrow report</title>\n"
      "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}"
      "td:first-child,th:first-child{text-align:left}</style></head><body>\n";
  h += fmt::format("<h1>{}</h1>\n<p>{} bytes, {:.1f}x smaller than {} bytes of float32 parameters.</p>\n",
                   html_escape(j["file"].get<std::string>()), j["file_bytes"].get<int64_t>(),
                   j["ratio"].get<double>(), j["dense_fp32_bytes"].get<int64_t>());
  h += "<table>\n<tr><th>layer</th><th>weights</th><th>kept</th><th>weight bits</th><th>index bits</th>"
       "<th>layout</th><th>fillers</th><th>bytes</th><th>% of float32</th></tr>\n";
  for (const auto& l : j["layers"])
    h += fmt::format(
        "<tr><td>{}</td><td>{}</td><td>{:.2f}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{:.2f}%</td></tr>\n",
        html_escape(l["name"].get<std::string>()), l["weights"].get<int64_t>(),
        100 * l["kept_fraction"].get<double>(), l["weight_bits"].get<int>(), l["index_bits"].get<int>(),
        l["layout"].get<std::string>(), l["fillers"].get<int64_t>(), l["stored_bytes"].get<int64_t>(),
        100.0 * l["stored_bytes"].get<double>() / std::max(l["dense_bytes"].get<double>(), 1.0));
  h += "</table>\n<p>Bytes of the file:";
  for (const auto& [key, value] : j["breakdown"].items())
    h += fmt::format(" {} {},", key, value.get<int64_t>());
  h.back() = '.';
  h += "</p>\n";
  h += reshaping_section(j.value("metadata", nlohmann::json::object()));
  h += results_section(j.value("metadata", nlohmann::json::object()));
  h += sensitivity;
  for (const auto& p : plots) h += fmt::format("<p><img src=\"{}\"></p>\n", html_escape(p));
  return h + "</body></html>\n";
}

}  // namespace

Result<ReportFiles> write_report(const ReportRequest& request) {
  SP_ASSIGN_OR_RETURN(SpwModel m, read_spw(request.model));
  std::optional<Model> source;
  if (!request.source.empty()) {
    SP_ASSIGN_OR_RETURN(Model s, load_onnx(request.source));
    source = std::move(s);
  }
  ReportFiles out;
  out.directory = request.dir.empty() ? request.model + ".report" : request.dir;
  const std::string& dir = out.directory;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return errorf("{}: cannot create the directory ({})", dir, ec.message());
  std::vector<std::string> plots;
  OutputSet files;  // the page, its JSON and every plot, or none of them
  for (const CompressedTensor& t : m.tensors) {
    auto svg = layer_plot(t, source ? &*source : nullptr, request.bins);
    if (!svg.ok()) return svg.status().prefixed(request.model);
    // Names that differ only in characters a file name cannot hold get a number.
    std::string name = file_name_for(t.name);
    for (int k = 2; std::find(plots.begin(), plots.end(), name) != plots.end(); ++k)
      name = file_name_for(t.name + "_" + std::to_string(k));
    plots.push_back(name);
    SP_ASSIGN_OR_RETURN(std::string csv, layer_plot_csv(t, source ? &*source : nullptr, request.bins));
    SP_RETURN_IF_ERROR(files.add(csv_beside(dir + "/" + plots.back()), csv));
    SP_RETURN_IF_ERROR(files.add(dir + "/" + plots.back(), *svg));
  }
  nlohmann::json j = spw_report_json(m, request.model);
  std::string sensitivity;
  if (!request.sensitivity.empty()) {
    SP_ASSIGN_OR_RETURN(SensitivityScan scan, read_sensitivity(request.sensitivity));
    const std::string plot = "sensitivity.svg";
    SP_RETURN_IF_ERROR(files.add(dir + "/" + plot, sensitivity_plot(scan)));
    const auto [x, series] = scan_curves(scan);
    SP_RETURN_IF_ERROR(files.add(csv_beside(dir + "/" + plot), line_plot_csv("sparsity (%)", x, series)));
    out.plots.push_back(dir + "/" + plot);
    out.tables.push_back(csv_beside(out.plots.back()));
    sensitivity = sensitivity_section(scan, j, plot);
  }
  out.page = dir + "/index.html";
  out.json = dir + "/report.json";
  SP_RETURN_IF_ERROR(files.add(out.json, j.dump(2) + "\n"));
  SP_RETURN_IF_ERROR(files.add(out.page, html_page(j, plots, sensitivity)));
  SP_RETURN_IF_ERROR(files.commit_all());
  for (const auto& p : plots) {
    out.plots.push_back(dir + "/" + p);
    out.tables.push_back(csv_beside(out.plots.back()));
  }
  return out;
}

}  // namespace sparrow::api
