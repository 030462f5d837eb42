// Minimal SVG line plots (sweeps, sensitivity curves): one polyline per series over shared x values.
#pragma once

#include <string>
#include <vector>

namespace sparrow {

struct Series {
  std::string name;
  std::vector<double> y;
};

// log2 axes when `log_x` / `log_y` (log_y needs y > 0).
std::string svg_line_plot(const std::string& title, const std::string& x_label, const std::string& y_label,
                          const std::vector<double>& x, const std::vector<Series>& series, bool log_x,
                          bool log_y = false);

}  // namespace sparrow
