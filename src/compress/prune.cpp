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

// How many weights the rule keeps over the whole layer (what prune_weights would keep).
int64_t weights_to_keep(std::span<const float> w, const PruneRule& rule) {
  const auto n = static_cast<int64_t>(w.size());
  if (rule.sparsity) return n - static_cast<int64_t>(std::llround(static_cast<double>(n) * *rule.sparsity));
  if (!rule.quality) return n;
  const auto threshold = static_cast<float>(*rule.quality * population_std(w));
  return std::count_if(w.begin(), w.end(), [&](float v) { return !(std::fabs(v) < threshold); });
}

// The matrix row of element i of a tensor seen through `view`.
int64_t row_of(int64_t i, const MatrixView& view) {
  return view.transposed ? i % view.rows : i / view.cols;
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

int64_t prune_layer(std::span<float> w, const MatrixView& view, const PruneRule& rule) {
  const int partitions = static_cast<int>(std::min<int64_t>(rule.balance, view.rows));
  if (partitions < 2 || (!rule.sparsity && !rule.quality)) return prune_weights(w, rule);
  const int64_t kept = weights_to_keep(w, rule), share = kept / partitions, extra = kept % partitions;
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(partitions));
  for (int64_t i = 0; i < std::ssize(w); ++i)
    members[static_cast<size_t>(row_of(i, view) % partitions)].push_back(i);
  std::vector<float> part;
  for (size_t p = 0; p < members.size(); ++p) {
    const std::vector<int64_t>& indices = members[p];
    part.resize(indices.size());
    for (size_t k = 0; k < indices.size(); ++k) part[k] = w[static_cast<size_t>(indices[k])];
    keep_top_k(part, share + (static_cast<int64_t>(p) < extra ? 1 : 0));
    for (size_t k = 0; k < indices.size(); ++k) w[static_cast<size_t>(indices[k])] = part[k];
  }
  return std::count(w.begin(), w.end(), 0.0f);
}

std::vector<int64_t> partition_nonzeros(std::span<const float> w, const MatrixView& view, int partitions) {
  std::vector<int64_t> counts(static_cast<size_t>(std::max(partitions, 1)), 0);
  for (int64_t i = 0; i < std::ssize(w); ++i)
    if (w[static_cast<size_t>(i)] != 0.0f)
      ++counts[static_cast<size_t>(row_of(i, view) % std::ssize(counts))];
  return counts;
}

}  // namespace sparrow
