#include "engine/ops/depthwise.h"

#include <algorithm>

namespace sparrow {

namespace {

// The input plane as the windows read it: rows and columns from -pad_t / -pad_l to the last one a
// window reaches, zero outside the input.
struct PaddedPlane {
  int64_t rows, cols;
};
PaddedPlane padded_extent(const Window2d& win) {
  return {(win.out_h - 1) * win.s_h + (win.k_h - 1) * win.d_h + 1,
          (win.out_w - 1) * win.s_w + (win.k_w - 1) * win.d_w + 1};
}

// A K x K undilated window at stride S over the padded plane: the taps unrolled, the output
// columns in vector lanes.
template <int K, int S>
[[gnu::always_inline]] inline void window_rows(const float* __restrict in, int64_t cols, const float* w,
                                               float bias, const Window2d& win, const Activation& act,
                                               float* __restrict y) {
  float taps[K * K];
  std::copy(w, w + K * K, taps);
  for (int64_t oh = 0; oh < win.out_h; ++oh) {
    const float* __restrict top = in + oh * S * cols;
    float* __restrict row = y + oh * win.out_w;
    for (int64_t ow = 0; ow < win.out_w; ++ow) {
      float acc = bias;
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) acc += taps[i * K + j] * top[i * cols + ow * S + j];
      row[ow] = acc;
    }
    act.apply(row, win.out_w);
  }
}

// A K x K undilated window at stride 1, the plane as one vector: output (oh, ow) is wide[oh * cols +
// ow], and every wide index reads the padded plane at itself plus the tap's offset, so one loop
// covers all rows (the cols - out_w entries between rows are computed and dropped). Small planes
// (7x7, 14x14) keep their lanes full this way.
template <int K>
[[gnu::always_inline]] inline void window_plane(const float* __restrict in, int64_t cols, const float* w,
                                                float bias, const Window2d& win, const Activation& act,
                                                float* __restrict wide, float* __restrict y) {
  float taps[K * K];
  std::copy(w, w + K * K, taps);
  const int64_t n = (win.out_h - 1) * cols + win.out_w;
  for (int64_t q = 0; q < n; ++q) {
    float acc = bias;
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < K; ++j) acc += taps[i * K + j] * in[q + i * cols + j];
    wide[q] = acc;
  }
  for (int64_t oh = 0; oh < win.out_h; ++oh) {
    float* row = y + oh * win.out_w;
    std::copy(wide + oh * cols, wide + oh * cols + win.out_w, row);
    act.apply(row, win.out_w);
  }
}

// Any window: one tap at a time over each output row.
void window_taps(const float* in, int64_t cols, const float* w, float bias, const Window2d& win,
                 const Activation& act, float* y) {
  for (int64_t oh = 0; oh < win.out_h; ++oh) {
    float* row = y + oh * win.out_w;
    std::fill(row, row + win.out_w, bias);
    for (int64_t i = 0; i < win.k_h; ++i) {
      const float* src = in + (oh * win.s_h + i * win.d_h) * cols;
      for (int64_t j = 0; j < win.k_w; ++j) {
        const float wv = w[i * win.k_w + j];
        for (int64_t ow = 0; ow < win.out_w; ++ow) row[ow] += wv * src[ow * win.s_w + j * win.d_w];
      }
    }
    act.apply(row, win.out_w);
  }
}

}  // namespace

int64_t depthwise_scratch_floats(const Window2d& win) {
  const PaddedPlane p = padded_extent(win);
  return p.rows * p.cols + win.out_h * p.cols;  // the padded plane, then window_plane's wide rows
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void depthwise_conv_plane(
    const float* x, const float* w, float bias, const Window2d& win, const Activation& act, float* scratch,
    float* y) {
  const PaddedPlane p = padded_extent(win);
  pad_plane(x, win, p.rows, p.cols, scratch);
  const bool undilated = win.d_h == 1 && win.d_w == 1 && win.s_h == win.s_w && win.k_h == win.k_w;
  const int64_t k = undilated ? win.k_h : 0, stride = win.s_w;
  float* wide = scratch + p.rows * p.cols;
  // Rows narrower than two AVX-512 vectors waste lanes and loop overhead row by row.
  const bool narrow = win.out_w < 32;
  if (k == 3 && stride == 1 && narrow)
    window_plane<3>(scratch, p.cols, w, bias, win, act, wide, y);
  else if (k == 3 && stride == 1)
    window_rows<3, 1>(scratch, p.cols, w, bias, win, act, y);
  else if (k == 3 && stride == 2)
    window_rows<3, 2>(scratch, p.cols, w, bias, win, act, y);
  else if (k == 5 && stride == 1 && narrow)
    window_plane<5>(scratch, p.cols, w, bias, win, act, wide, y);
  else if (k == 5 && stride == 1)
    window_rows<5, 1>(scratch, p.cols, w, bias, win, act, y);
  else if (k == 5 && stride == 2)
    window_rows<5, 2>(scratch, p.cols, w, bias, win, act, y);
  else
    window_taps(scratch, p.cols, w, bias, win, act, y);
}

}  // namespace sparrow
