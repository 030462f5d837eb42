// Synthetic digits: an MNIST-shaped dataset that Sparrow writes itself, so the training and
// compression pipelines run on machines without MNIST. Each class is three random strokes on a
// 28x28 canvas; every sample moves the stroke ends a little, shifts the drawing, scales its ink and
// adds noise, so the classes overlap slightly and a classifier's error is small but not zero.
#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <random>

#include "sparrow/dataset.h"
#include "sparrow/train.h"

namespace sparrow {

namespace {

constexpr int kSide = 28;
constexpr int kClasses = 10;
constexpr int kStrokes = 3;

struct Stroke {
  double r0, c0, r1, c1;
};
using ClassTemplate = std::array<Stroke, kStrokes>;
using Canvas = std::array<float, kSide * kSide>;

std::array<ClassTemplate, kClasses> make_templates(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> end(5.0, 22.0);
  std::array<ClassTemplate, kClasses> t;
  for (auto& strokes : t)
    for (auto& s : strokes) s = {end(rng), end(rng), end(rng), end(rng)};
  return t;
}

// Draws a line about 3 pixels wide with soft edges; ink only adds up to 1.
void draw_stroke(const Stroke& s, double dr, double dc, Canvas& canvas) {
  constexpr int kSteps = 48;
  for (int k = 0; k <= kSteps; ++k) {
    double t = static_cast<double>(k) / kSteps;
    double r = s.r0 + t * (s.r1 - s.r0) + dr, c = s.c0 + t * (s.c1 - s.c0) + dc;
    for (int y = static_cast<int>(r) - 2; y <= static_cast<int>(r) + 2; ++y)
      for (int x = static_cast<int>(c) - 2; x <= static_cast<int>(c) + 2; ++x) {
        if (y < 0 || y >= kSide || x < 0 || x >= kSide) continue;
        double ink = std::clamp(1.8 - std::hypot(y - r, x - c), 0.0, 1.0);
        float& v = canvas[y * kSide + x];
        v = std::max(v, static_cast<float>(ink));
      }
  }
}

void make_split(const std::array<ClassTemplate, kClasses>& templates, int64_t count, std::mt19937_64& rng,
                std::vector<uint8_t>& images, std::vector<uint8_t>& labels) {
  std::uniform_int_distribution<int> label(0, kClasses - 1), shift(-2, 2);
  std::normal_distribution<double> jitter(0.0, 1.0), noise(0.0, 0.15);
  std::uniform_real_distribution<double> ink(0.6, 1.0);
  images.assign(static_cast<size_t>(count) * kSide * kSide, 0);
  labels.assign(static_cast<size_t>(count), 0);
  for (int64_t i = 0; i < count; ++i) {
    int k = label(rng);
    labels[i] = static_cast<uint8_t>(k);
    Canvas canvas{};
    double dr = shift(rng), dc = shift(rng);
    for (Stroke s : templates[k]) {
      s = {s.r0 + jitter(rng), s.c0 + jitter(rng), s.r1 + jitter(rng), s.c1 + jitter(rng)};
      draw_stroke(s, dr, dc, canvas);
    }
    double scale = ink(rng);
    uint8_t* out = &images[static_cast<size_t>(i) * kSide * kSide];
    for (int p = 0; p < kSide * kSide; ++p)
      out[p] =
          static_cast<uint8_t>(std::lround(255.0 * std::clamp(canvas[p] * scale + noise(rng), 0.0, 1.0)));
  }
}

Status write_split(const std::string& dir, const std::string& prefix, const std::vector<uint8_t>& images,
                   const std::vector<uint8_t>& labels) {
  auto n = static_cast<int64_t>(labels.size());
  SP_RETURN_IF_ERROR(write_idx_u8(dir + "/" + prefix + "-images-idx3-ubyte.gz", {n, kSide, kSide}, images));
  return write_idx_u8(dir + "/" + prefix + "-labels-idx1-ubyte.gz", {n}, labels);
}

}  // namespace

Status write_synthetic_digits(const std::string& dir, const SyntheticDigitsOptions& options) {
  if (options.train < 1 || options.test < 1 || options.train > 1000000 || options.test > 1000000)
    return errorf("synthetic digits: --train and --test must be 1..1000000 (got {} and {})", options.train,
                  options.test);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return errorf("{}: cannot create the directory ({})", dir, ec.message());
  std::mt19937_64 rng(options.seed);
  auto templates = make_templates(rng);
  std::vector<uint8_t> images, labels;
  make_split(templates, options.train, rng, images, labels);
  SP_RETURN_IF_ERROR(write_split(dir, "train", images, labels));
  make_split(templates, options.test, rng, images, labels);
  return write_split(dir, "t10k", images, labels);
}

}  // namespace sparrow
