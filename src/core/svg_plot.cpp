#include "core/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

namespace sparrow {

std::vector<double> round_ticks(double lo, double hi, int max_ticks) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / std::max(max_ticks, 1);
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * power;
  for (double m : {1.0, 2.0, 5.0})
    if (m * power >= raw * (1 - 1e-9)) {
      step = m * power;
      break;
    }
  const double first = std::floor(lo / step + 1e-9) * step;
  std::vector<double> ticks;
  for (double t = first; ticks.empty() || ticks.back() < hi - step * 1e-9; t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

std::string svg_line_plot(const std::string& title, const std::string& x_label, const std::string& y_label,
                          const std::vector<double>& x, const std::vector<Series>& series, bool log_x,
                          bool log_y, const std::vector<ReferenceLine>& references) {
  const double W = 760, H = 460, left = 70, right = 170, top = 40, bottom = 60;
  auto fx = [&](double v) { return log_x ? std::log2(v) : v; };
  double x0 = fx(x.front()), x1 = fx(x.back());
  double ymax = 0, ymin = 1e300;
  for (const auto& s : series)
    for (double v : s.y) ymax = std::max(ymax, v), ymin = std::min(ymin, v);
  for (const auto& r : references) ymax = std::max(ymax, r.y), ymin = std::min(ymin, r.y);
  auto fy = [&](double v) { return log_y ? std::log2(std::max(v, 1e-12)) : v; };
  std::vector<double> linear_ticks = round_ticks(std::min(ymin, 0.0), ymax > 0 ? ymax : 1.0);
  double y0 = log_y ? std::floor(fy(ymin)) : linear_ticks.front();
  double y1 = log_y ? std::ceil(fy(ymax)) : linear_ticks.back();
  if (y1 <= y0) y1 = y0 + 1;
  auto px = [&](double v) { return left + (fx(v) - x0) / std::max(x1 - x0, 1e-9) * (W - left - right); };
  auto py = [&](double v) { return H - bottom - (fy(v) - y0) / (y1 - y0) * (H - top - bottom); };
  static const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
      W, H, (W - right + left) / 2, title);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", left,
                     H - bottom, W - right);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", left, top,
                     H - bottom);
  for (double v : x)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", px(v),
                       H - bottom + 18, v);
  std::vector<double> y_ticks = linear_ticks;
  if (log_y) {
    y_ticks.clear();
    for (int k = 0; k <= static_cast<int>(y1 - y0); ++k) y_ticks.push_back(std::exp2(y0 + k));
  }
  for (double v : y_ticks) {
    svg += fmt::format(
        "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.3g}</text>\n"
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n",
        left - 6, py(v) + 4, v, left, py(v), W - right, py(v));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (W - right + left) / 2,
                     H - 18, x_label);
  svg += fmt::format(
      "<text x=\"18\" y=\"{}\" transform=\"rotate(-90 18 {})\" text-anchor=\"middle\">{}</text>\n",
      (H - bottom + top) / 2, (H - bottom + top) / 2, y_label);
  for (const auto& r : references)
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"black\" "
        "stroke-dasharray=\"6,4\"/>\n<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>\n",
        left, py(r.y), W - right, W - right - 4, py(r.y) + 14, r.label);
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[i % 10];
    std::string points;
    for (size_t k = 0; k < x.size() && k < series[i].y.size(); ++k)
      points += fmt::format("{:.1f},{:.1f} ", px(x[k]), py(series[i].y[k]));
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", color,
                       points);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", W - right + 10, top + 16 * (i + 1),
                       color, series[i].name);
  }
  return svg + "</svg>\n";
}

namespace {

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string quoted;
  quoted.push_back('"');
  for (char c : text) {
    if (c == '"') quoted.push_back('"');
    quoted.push_back(c);
  }
  quoted.push_back('"');
  return quoted;
}

}  // namespace

std::string line_plot_csv(const std::string& x_label, const std::vector<double>& x,
                          const std::vector<Series>& series) {
  std::string csv = csv_field(x_label);
  for (const auto& s : series) {
    csv.push_back(',');
    csv += csv_field(s.name);
  }
  csv += "\n";
  for (size_t k = 0; k < x.size(); ++k) {
    csv += fmt::format("{:.6g}", x[k]);
    for (const auto& s : series) csv += k < s.y.size() ? fmt::format(",{:.6g}", s.y[k]) : std::string(",");
    csv += "\n";
  }
  return csv;
}

std::string csv_beside(const std::string& svg_path) {
  const std::string ext = ".svg";
  if (svg_path.size() > ext.size() && svg_path.compare(svg_path.size() - ext.size(), ext.size(), ext) == 0)
    return svg_path.substr(0, svg_path.size() - ext.size()) + ".csv";
  return svg_path + ".csv";
}

Histogram make_histogram(const std::vector<float>& values, double lo, double hi, int bins) {
  Histogram h{lo, hi, std::vector<int64_t>(static_cast<size_t>(std::max(bins, 1)), 0)};
  double width = (hi - lo) / static_cast<double>(h.counts.size());
  for (float v : values) {
    if (!(v >= lo && v <= hi) || width <= 0) continue;
    auto bin = static_cast<size_t>((v - lo) / width);
    ++h.counts[std::min(bin, h.counts.size() - 1)];
  }
  return h;
}

namespace {

// One panel of the weight-sharing plot: axes, y ticks from 0 to y_max, and a title line.
struct Panel {
  double left, right, top, bottom;  // pixel box of the plotting area
  double lo, hi, y_max;
  double px(double v) const { return left + (v - lo) / std::max(hi - lo, 1e-30) * (right - left); }
  double py(double v) const { return bottom - v / std::max(y_max, 1e-30) * (bottom - top); }
};

// A panel of counts whose y axis runs from 0 to the first round tick at or above `most` (at least
// 4, so the ticks are whole numbers).
Panel make_panel(double left, double right, double top, double height, double lo, double hi, int64_t most) {
  const double y_max = round_ticks(0, static_cast<double>(std::max<int64_t>(most, 4)), 4).back();
  return {left, right, top, top + height, lo, hi, y_max};
}

std::string panel_axes(const Panel& p, const std::string& label) {
  std::string svg = fmt::format(
      "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n"
      "<line x1=\"{0}\" y1=\"{3}\" x2=\"{0}\" y2=\"{1}\" stroke=\"black\"/>\n"
      "<text x=\"{4}\" y=\"{5}\" text-anchor=\"middle\">{6}</text>\n",
      p.left, p.bottom, p.right, p.top, (p.left + p.right) / 2, p.top - 6, label);
  for (double v : round_ticks(0, p.y_max, 4))
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.6g}</text>\n", p.left - 6,
                       p.py(v) + 4, v);
  return svg;
}

// The shared values on the source histogram: dashed lines, or a rug below the axis when many.
std::string mark_shared_values(const Panel& p, const std::vector<float>& centroids) {
  std::string svg;
  const bool rug = centroids.size() > kMaxMarkedValues;
  for (float c : centroids)
    svg +=
        rug ? fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#d62728\"/>\n",
                          p.px(c), p.bottom + 2, p.bottom + 9)
            : fmt::format(
                  "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#d62728\" "
                  "stroke-dasharray=\"3,3\"/>\n",
                  p.px(c), p.top, p.bottom);
  return svg;
}

}  // namespace

std::string svg_weight_sharing_plot(const std::string& title, const Histogram* dense,
                                    const std::vector<float>& centroids,
                                    const std::vector<int64_t>& centroid_counts) {
  const double W = 760, left = 70, right = 730, panel_h = 200, gap = 50;
  double lo = dense ? dense->lo : 0, hi = dense ? dense->hi : 0;
  for (float c : centroids)
    lo = std::min(lo, static_cast<double>(c)), hi = std::max(hi, static_cast<double>(c));
  if (hi <= lo) hi = lo + 1;
  int panels = dense ? 2 : 1;
  double H = 50 + panels * (panel_h + gap) + 20;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
      W, H, (left + right) / 2, title);
  double top = 60;
  if (dense) {
    Panel p = make_panel(left, right, top, panel_h, lo, hi,
                         *std::max_element(dense->counts.begin(), dense->counts.end()));
    svg += panel_axes(p, centroids.size() > kMaxMarkedValues
                             ? "source model: weights per bin (ticks below the axis: the shared values)"
                             : "source model: weights per bin (dashed: the shared values)");
    double width = (dense->hi - dense->lo) / static_cast<double>(dense->counts.size());
    for (size_t b = 0; b < dense->counts.size(); ++b) {
      double x0 = p.px(dense->lo + width * b), x1 = p.px(dense->lo + width * (b + 1));
      svg +=
          fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"#999\"/>\n",
                      x0, p.py(dense->counts[b]), std::max(x1 - x0, 0.5), p.bottom - p.py(dense->counts[b]));
    }
    svg += mark_shared_values(p, centroids);
    top += panel_h + gap;
  }
  int64_t most =
      centroid_counts.empty() ? 1 : *std::max_element(centroid_counts.begin(), centroid_counts.end());
  Panel p = make_panel(left, right, top, panel_h, lo, hi, most);
  svg += panel_axes(
      p, fmt::format("compressed: non-zero weights per shared value ({} values)", centroids.size()));
  for (size_t k = 0; k < centroids.size() && k < centroid_counts.size(); ++k)
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#d62728\" "
        "stroke-width=\"2\"/>\n<circle cx=\"{0:.1f}\" cy=\"{1:.1f}\" r=\"2.5\" fill=\"#d62728\"/>\n",
        p.px(centroids[k]), p.py(centroid_counts[k]), p.bottom);
  for (double v : round_ticks(lo, hi, 6))
    if (v >= lo - (hi - lo) * 1e-9 && v <= hi + (hi - lo) * 1e-9)
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.6g}</text>\n", p.px(v),
                         p.bottom + 16, v);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">weight value</text>\n",
                     (left + right) / 2, p.bottom + 34);
  return svg + "</svg>\n";
}

}  // namespace sparrow
