// Simulator results as JSON, CSV and SVG line plots (sweeps).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/svg_plot.h"
#include "sim/simulator.h"

namespace sparrow::sim {

using sparrow::Series;
using sparrow::svg_line_plot;

nlohmann::json stats_json(const LayerStats& s);
std::string stats_csv(const std::vector<LayerStats>& rows, const std::string& sweep_key = "",
                      const std::vector<int>& sweep_values = {});

}  // namespace sparrow::sim
