// Minimal SVG plots: line plots (sweeps, sensitivity curves; one polyline per series over shared x
// values) and weight-sharing histograms.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sparrow {

struct Series {
  std::string name;
  std::vector<double> y;
};

// A horizontal line across a line plot at height y, labelled (e.g. the accuracy a scan may lose).
struct ReferenceLine {
  double y = 0;
  std::string label;
};

// Axis ticks at round values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi] with at
// most about `max_ticks` intervals; the first tick is <= lo and the last >= hi.
std::vector<double> round_ticks(double lo, double hi, int max_ticks = 5);

// log2 axes when `log_x` / `log_y` (log_y needs y > 0); linear y axes start at 0 (or the lowest
// value, if negative) and end at the first round tick at or above the highest value or reference.
std::string svg_line_plot(const std::string& title, const std::string& x_label, const std::string& y_label,
                          const std::vector<double>& x, const std::vector<Series>& series, bool log_x,
                          bool log_y = false, const std::vector<ReferenceLine>& references = {});

// The numbers a line plot draws, as CSV: a header (x_label, then each series' name) and one row per
// x value. Fields holding commas or quotes are quoted.
std::string line_plot_csv(const std::string& x_label, const std::vector<double>& x,
                          const std::vector<Series>& series);
// Where the CSV beside a plot goes: "dir/plot.svg" -> "dir/plot.csv" (other names get ".csv" added).
std::string csv_beside(const std::string& svg_path);

// Counts of values in `counts.size()` equal bins over [lo, hi].
struct Histogram {
  double lo = 0, hi = 0;
  std::vector<int64_t> counts;
};
Histogram make_histogram(const std::vector<float>& values, double lo, double hi, int bins);

// Weight sharing at a glance: one stem per shared value (height: how many weights share it) and,
// when `dense` is given, the histogram of the weights before sharing in a panel above, on the same
// x axis, with the shared values marked on it: dashed lines for up to kMaxMarkedValues values, a rug
// of short ticks below its axis for more. Both axes have round ticks.
inline constexpr size_t kMaxMarkedValues = 32;
std::string svg_weight_sharing_plot(const std::string& title, const Histogram* dense,
                                    const std::vector<float>& centroids,
                                    const std::vector<int64_t>& centroid_counts);

}  // namespace sparrow
