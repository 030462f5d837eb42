// Simulator results as JSON, CSV and SVG line plots (sweeps).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/simulator.h"

namespace sparrow::sim {

nlohmann::json stats_json(const LayerStats& s);
std::string stats_csv(const std::vector<LayerStats>& rows, const std::string& sweep_key = "",
                      const std::vector<int>& sweep_values = {});

// One line per series over shared x values (log2 axes when `log_x` / `log_y`; log_y needs y > 0).
struct Series {
  std::string name;
  std::vector<double> y;
};
std::string svg_line_plot(const std::string& title, const std::string& x_label, const std::string& y_label,
                          const std::vector<double>& x, const std::vector<Series>& series, bool log_x,
                          bool log_y = false);

}  // namespace sparrow::sim
