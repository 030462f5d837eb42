#include <algorithm>
#include <cmath>
#include <numeric>

#include "sparrow/compress.h"

namespace sparrow {

namespace {

double population_std(std::span<const float> w) {
  if (w.empty()) return 0;
  double mean = std::accumulate(w.begin(), w.end(), 0.0) / static_cast<double>(w.size());
  double var = 0;
  for (float v : w) var += (v - mean) * (v - mean);
  return std::sqrt(var / static_cast<double>(w.size()));
}

// Keeps the k weights of largest magnitude (earliest index first among ties).
void keep_top_k(std::span<float> w, int64_t k) {
  int64_t n = static_cast<int64_t>(w.size());
  if (k >= n) return;
  if (k <= 0) {
    std::fill(w.begin(), w.end(), 0.0f);
    return;
  }
  std::vector<float> mags(w.size());
  for (size_t i = 0; i < w.size(); ++i) mags[i] = std::fabs(w[i]);
  std::nth_element(mags.begin(), mags.begin() + (n - k), mags.end());
  float threshold = mags[static_cast<size_t>(n - k)];  // the k-th largest magnitude
  int64_t above = 0;
  for (float v : w) above += std::fabs(v) > threshold;
  int64_t ties_to_keep = k - above;
  for (float& v : w) {
    float m = std::fabs(v);
    if (m > threshold) continue;
    if (m == threshold && ties_to_keep > 0) {
      --ties_to_keep;
      continue;
    }
    v = 0.0f;
  }
}

}  // namespace

int64_t prune_weights(std::span<float> w, const PruneRule& rule) {
  if (rule.sparsity) {
    int64_t n = static_cast<int64_t>(w.size());
    keep_top_k(w, n - static_cast<int64_t>(std::llround(static_cast<double>(n) * *rule.sparsity)));
  } else if (rule.quality) {
    float threshold = static_cast<float>(*rule.quality * population_std(w));
    for (float& v : w)
      if (std::fabs(v) < threshold) v = 0.0f;
  }
  return std::count(w.begin(), w.end(), 0.0f);
}

}  // namespace sparrow
