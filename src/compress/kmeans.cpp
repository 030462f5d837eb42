// 1-D k-means for weight sharing. Values are sorted once; with prefix sums each Lloyd iteration
// finds every cluster (a contiguous range of the sorted values between centroid midpoints) by
// binary search and its mean in O(1), so an iteration costs O(k log n).
#include <algorithm>
#include <cmath>
#include <random>

#include "sparrow/compress.h"

namespace sparrow {

namespace {

std::vector<double> initial_centroids(const std::vector<float>& sorted, int k, KmeansInit init,
                                      uint64_t seed) {
  std::vector<double> c(static_cast<size_t>(k));
  double lo = sorted.front(), hi = sorted.back();
  size_t n = sorted.size();
  switch (init) {
    case KmeansInit::linear:  // evenly spaced over [min, max]
      for (int j = 0; j < k; ++j) c[j] = k == 1 ? (lo + hi) / 2 : lo + (hi - lo) * j / (k - 1);
      break;
    case KmeansInit::density:  // quantiles of the value distribution
      for (int j = 0; j < k; ++j) c[j] = sorted[std::min(n - 1, static_cast<size_t>((j + 0.5) / k * n))];
      break;
    case KmeansInit::random: {  // Forgy: k values drawn at random
      std::mt19937_64 rng(seed);
      for (int j = 0; j < k; ++j) c[j] = sorted[rng() % n];
      break;
    }
  }
  std::sort(c.begin(), c.end());
  return c;
}

// First index of `sorted` that belongs to the cluster right of the midpoint of a and b.
size_t split_index(const std::vector<float>& sorted, double a, double b) {
  float mid = static_cast<float>((a + b) / 2);
  return static_cast<size_t>(std::upper_bound(sorted.begin(), sorted.end(), mid) - sorted.begin());
}

}  // namespace

Codebook kmeans_1d(std::span<const float> values, int k, KmeansInit init, uint64_t seed, int max_iterations) {
  Codebook cb;
  if (values.empty() || k <= 0) return cb;
  std::vector<float> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<double> prefix(sorted.size() + 1, 0.0);
  for (size_t i = 0; i < sorted.size(); ++i) prefix[i + 1] = prefix[i] + sorted[i];
  std::vector<double> c = initial_centroids(sorted, k, init, seed);
  for (int it = 0; it < max_iterations; ++it) {
    std::vector<double> next = c;
    size_t begin = 0;
    for (int j = 0; j < k; ++j) {
      size_t end = j + 1 < k ? split_index(sorted, c[j], c[j + 1]) : sorted.size();
      if (end > begin) next[j] = (prefix[end] - prefix[begin]) / static_cast<double>(end - begin);
      begin = std::max(begin, end);
    }
    std::sort(next.begin(), next.end());
    if (next == c) break;
    c = std::move(next);
  }
  for (double v : c) cb.centroids.push_back(static_cast<float>(v));
  cb.centroids.erase(std::unique(cb.centroids.begin(), cb.centroids.end()), cb.centroids.end());
  return cb;
}

Codebook uniform_levels(std::span<const float> values, int k) {
  Codebook cb;
  if (values.empty() || k <= 0) return cb;
  auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  for (int j = 0; j < k; ++j)
    cb.centroids.push_back(k == 1 ? (*lo + *hi) / 2
                                  : *lo + (*hi - *lo) * static_cast<float>(j) / static_cast<float>(k - 1));
  cb.centroids.erase(std::unique(cb.centroids.begin(), cb.centroids.end()), cb.centroids.end());
  return cb;
}

std::vector<uint8_t> assign_nearest(std::span<const float> values, const Codebook& codebook) {
  const auto& c = codebook.centroids;
  std::vector<float> mids;
  for (size_t j = 0; j + 1 < c.size(); ++j) mids.push_back(static_cast<float>((double(c[j]) + c[j + 1]) / 2));
  std::vector<uint8_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    out[i] = static_cast<uint8_t>(std::lower_bound(mids.begin(), mids.end(), values[i]) - mids.begin());
  return out;
}

}  // namespace sparrow
