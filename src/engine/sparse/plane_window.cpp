#include "engine/sparse/plane_window.h"

#include <algorithm>

namespace sparrow {

ColumnRange valid_columns(int64_t offset, int64_t stride, int64_t in_w, int64_t out_w) {
  const int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t end = in_w - 1 - offset < 0 ? 0 : (in_w - 1 - offset) / stride + 1;
  return {begin < out_w ? begin : out_w, end < out_w ? end : out_w};
}

namespace {

// dst[c] = src[c * kStep] for c in [0, n): a step known at compile time (1: a plain copy).
template <int64_t kStep>
void gather_columns(const float* src, int64_t n, float* dst) {
  for (int64_t c = 0; c < n; ++c) dst[c] = src[c * kStep];
}

// out[rows, cols][r, c] = the zero-padded input at row r * row_step + row_phase - pad_t and
// column c * col_step + col_phase - pad_l (zero outside the input).
void fill_phase(const float* x, const Window2d& w, int64_t row_step, int64_t col_step, int64_t row_phase,
                int64_t col_phase, int64_t rows, int64_t cols, float* out) {
  const auto [begin, end] = valid_columns(col_phase - w.pad_l, col_step, w.in_w, cols);
  const int64_t last = std::max(begin, end);
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = out + r * cols;
    const int64_t ih = r * row_step + row_phase - w.pad_t;
    if (ih < 0 || ih >= w.in_h) {
      std::fill(dst, dst + cols, 0.0f);
      continue;
    }
    const float* src = x + ih * w.in_w;
    const int64_t offset = col_phase - w.pad_l;
    std::fill(dst, dst + begin, 0.0f);
    if (col_step == 1 && last > begin)
      std::copy_n(src + begin + offset, last - begin, dst + begin);
    else if (col_step == 2 && last > begin)
      gather_columns<2>(src + begin * 2 + offset, last - begin, dst + begin);
    else
      for (int64_t c = begin; c < last; ++c) dst[c] = src[c * col_step + offset];
    std::fill(dst + last, dst + cols, 0.0f);
  }
}

}  // namespace

void pad_plane(const float* x, const Window2d& w, int64_t rows, int64_t cols, float* out) {
  fill_phase(x, w, 1, 1, 0, 0, rows, cols, out);
}

void pad_phases(const float* x, const Window2d& w, int64_t rows, int64_t cols, float* out) {
  for (int64_t a = 0; a < w.s_h; ++a)
    for (int64_t b = 0; b < w.s_w; ++b)
      fill_phase(x, w, w.s_h, w.s_w, a, b, rows, cols, out + (a * w.s_w + b) * rows * cols);
}

int64_t depthwise_scratch_floats(const Window2d& w) {
  const auto [rows, cols] = window_reach(w);
  return rows * cols + w.out_h * cols;
}

int64_t depthwise_lanes_scratch_floats(const Window2d& w) {
  const auto [rows, cols] = window_reach(w);
  return (rows * cols + w.k_h * w.k_w) * kDepthwiseLanes;
}

}  // namespace sparrow
