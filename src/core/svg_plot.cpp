#include "core/svg_plot.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace sparrow {

std::string svg_line_plot(const std::string& title, const std::string& x_label, const std::string& y_label,
                          const std::vector<double>& x, const std::vector<Series>& series, bool log_x, bool log_y) {
  const double W = 760, H = 460, left = 70, right = 170, top = 40, bottom = 60;
  auto fx = [&](double v) { return log_x ? std::log2(v) : v; };
  double x0 = fx(x.front()), x1 = fx(x.back());
  double ymax = 0, ymin = 1e300;
  for (const auto& s : series)
    for (double v : s.y) ymax = std::max(ymax, v), ymin = std::min(ymin, v);
  auto fy = [&](double v) { return log_y ? std::log2(std::max(v, 1e-12)) : v; };
  double y0 = log_y ? std::floor(fy(ymin)) : 0.0;
  double y1 = log_y ? std::ceil(fy(ymax)) : (ymax > 0 ? ymax * 1.08 : 1.0);
  if (y1 <= y0) y1 = y0 + 1;
  auto px = [&](double v) { return left + (fx(v) - x0) / std::max(x1 - x0, 1e-9) * (W - left - right); };
  auto py = [&](double v) { return H - bottom - (fy(v) - y0) / (y1 - y0) * (H - top - bottom); };
  static const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
      W, H, (W - right + left) / 2, title);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", left, H - bottom, W - right);
  svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", left, top, H - bottom);
  for (double v : x)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", px(v), H - bottom + 18, v);
  int ticks = log_y ? static_cast<int>(y1 - y0) : 5;
  for (int k = 0; k <= ticks; ++k) {
    double v = log_y ? std::exp2(y0 + k) : y1 * k / 5;
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:.3g}</text>\n"
                       "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n",
                       left - 6, py(v) + 4, v, left, py(v), W - right, py(v));
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (W - right + left) / 2, H - 18, x_label);
  svg += fmt::format("<text x=\"18\" y=\"{}\" transform=\"rotate(-90 18 {})\" text-anchor=\"middle\">{}</text>\n",
                     (H - bottom + top) / 2, (H - bottom + top) / 2, y_label);
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[i % 10];
    std::string points;
    for (size_t k = 0; k < x.size() && k < series[i].y.size(); ++k)
      points += fmt::format("{:.1f},{:.1f} ", px(x[k]), py(series[i].y[k]));
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", color, points);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", W - right + 10, top + 16 * (i + 1), color,
                       series[i].name);
  }
  return svg + "</svg>\n";
}

}  // namespace sparrow
