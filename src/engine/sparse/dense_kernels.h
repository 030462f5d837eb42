// The dense kernels of the table (depthwise convolution and MaxPool planes, tiled transposes, the
// LSTM cell), written once and compiled by each ISA's translation unit (kernels_ref/avx2/
// avx512.cpp) with its own flags, so the compiler puts their inner loops in that ISA's lanes. Everything here
// has internal linkage: each translation unit keeps its own copy (one built for AVX-512 must never stand in
// for another).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "engine/sparse/kernels.h"

namespace sparrow::kernels {
namespace {

// TransposeArgs in 8 x 8 tiles: small tiles keep both sides in L1 even when a power-of-two stride
// maps a tile's lines to one cache set. `tile` transposes one full tile; the edges go element by
// element.
template <class Tile>
inline void transpose_tiles(const TransposeArgs& a, Tile&& tile) {
  constexpr int64_t kTile = 8;
  for (int64_t r0 = a.row_begin; r0 < a.row_end; r0 += kTile)
    for (int64_t c0 = 0; c0 < a.cols; c0 += kTile) {
      const int64_t r1 = std::min(a.row_end, r0 + kTile), c1 = std::min(a.cols, c0 + kTile);
      if (r1 - r0 == kTile && c1 - c0 == kTile) {
        tile(a.src + r0 * a.cols + c0, a.cols, a.dst + c0 * a.rows + r0, a.rows, a.add);
        continue;
      }
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          float& d = a.dst[c * a.rows + r];
          d = a.add ? d + a.src[r * a.cols + c] : a.src[r * a.cols + c];
        }
    }
}
inline void transpose_tiles(const TransposeArgs& a) {
  transpose_tiles(a, [](const float* src, int64_t lds, float* dst, int64_t ldd, bool add) {
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t c = 0; c < 8; ++c)
        dst[c * ldd + r] = add ? dst[c * ldd + r] + src[r * lds + c] : src[r * lds + c];
  });
}

// e^x without a call or a branch, so loops over it vectorize: x = k ln 2 + r with |r| <= ln 2 / 2
// (k rounded by adding 1.5 * 2^23, which leaves it in the low mantissa bits; ln 2 split in two so
// k ln 2 is exact), e^r by its Taylor series to r^7 (relative error below 1e-8 on that range, so a
// few float ulps in all), times 2^k built in the exponent bits. Inputs are clamped to [-87, 88],
// where 2^k stays a normal float; NaN stays NaN.
inline float exp_lanes(float x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float t = xc * 1.44269504f + kRound;
  const float k = t - kRound;
  const int32_t ki = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  const float r = (xc - k * 0.693359375f) + k * 2.12194440e-4f;
  const float p = ((((((r * (1.0f / 5040.0f) + 1.0f / 720.0f) * r + 1.0f / 120.0f) * r + 1.0f / 24.0f) * r +
                     1.0f / 6.0f) *
                        r +
                    0.5f) *
                       r +
                   1.0f) *
                      r +
                  1.0f;
  const float scale = std::bit_cast<float>((ki + 127) << 23);
  return x == x ? p * scale : x;
}
inline float sigmoid_lanes(float x) {
  return 1.0f / (1.0f + exp_lanes(-x));
}
// Near 0, where 2 / (1 + e^-2x) - 1 cancels, its series x - x^3/3 + 2x^5/15 (error below 1e-10
// relative for |x| < 0.05); both are computed and one is kept, so the loop stays branch-free.
inline float tanh_lanes(float x) {
  const float x2 = x * x;
  const float series = x * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f)));
  const float wide = 2.0f / (1.0f + exp_lanes(-2.0f * x)) - 1.0f;
  return std::abs(x) < 0.05f ? series : wide;
}

// SmoothActivationArgs: one branch-free loop per function, so each runs in vector lanes.
inline void smooth_activation(const SmoothActivationArgs& a) {
  const float* x = a.x;
  float* y = a.y;
  if (a.f == SmoothActivation::sigmoid)
    for (int64_t i = 0; i < a.n; ++i) y[i] = sigmoid_lanes(x[i]);
  else
    for (int64_t i = 0; i < a.n; ++i) y[i] = tanh_lanes(x[i]);
}

// One LSTM cell update (LstmCellArgs) for every hidden unit, in lanes.
template <bool kPeephole>
inline void lstm_cell_units(const LstmCellArgs& a) {
  const int64_t H = a.hidden;
  const float* __restrict g = a.gates;
  const float* __restrict p = a.peephole;
  float* __restrict cs = a.c;
  float* __restrict hs = a.h;
  const float lim = a.clip > 0 ? a.clip : std::numeric_limits<float>::infinity();
  auto clip = [lim](float v) { return std::min(std::max(v, -lim), lim); };
  for (int64_t j = 0; j < H; ++j) {
    const float c = cs[j];
    const float ig = sigmoid_lanes(clip(g[j] + (kPeephole ? p[j] * c : 0.0f)));
    const float fg = sigmoid_lanes(clip(g[2 * H + j] + (kPeephole ? p[2 * H + j] * c : 0.0f)));
    const float cand = tanh_lanes(clip(g[3 * H + j]));
    const float cn = fg * c + ig * cand;
    const float og = sigmoid_lanes(clip(g[H + j] + (kPeephole ? p[H + j] * cn : 0.0f)));
    cs[j] = cn;
    hs[j] = og * tanh_lanes(cn);
  }
}
inline void lstm_cell(const LstmCellArgs& a) {
  if (a.peephole)
    lstm_cell_units<true>(a);
  else
    lstm_cell_units<false>(a);
}

// As the Relu/Clip a fused activation stands for: NaN becomes lo, then capped at hi.
inline void clamp_row(float* row, int64_t n, float lo, float hi) {
  if (lo == -std::numeric_limits<float>::infinity() && hi == std::numeric_limits<float>::infinity()) return;
  for (int64_t i = 0; i < n; ++i) {
    float v = row[i] > lo ? row[i] : lo;
    row[i] = v < hi ? v : hi;
  }
}

// A K x K undilated window at stride S over the padded plane: the taps unrolled, the output
// columns in vector lanes.
template <int K, int S>
inline void window_rows(const float* __restrict in, int64_t cols, const float* w, float bias,
                        const Window2d& win, float lo, float hi, float* __restrict y) {
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
    clamp_row(row, win.out_w, lo, hi);
  }
}

// A K x K undilated window at stride 1, the plane as one vector: output (oh, ow) is wide[oh * cols +
// ow], and every wide index reads the padded plane at itself plus the tap's offset, so one loop
// covers all rows (the cols - out_w entries between rows are computed and dropped). Small planes
// (7x7, 14x14) keep their lanes full this way.
template <int K>
inline void window_plane(const float* __restrict in, int64_t cols, const float* w, float bias,
                         const Window2d& win, float lo, float hi, float* __restrict wide,
                         float* __restrict y) {
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
    clamp_row(row, win.out_w, lo, hi);
  }
}

// Any window: one tap at a time over each output row.
void window_taps(const float* in, int64_t cols, const float* w, float bias, const Window2d& win, float lo,
                 float hi, float* y) {
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
    clamp_row(row, win.out_w, lo, hi);
  }
}

#if defined(__AVX512F__)
// Lanes [0, n) of a 16-lane mask (none for n <= 0).
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}
// Lanes l of x[begin + l] with begin + l in [0, in_w).
inline __mmask16 lanes_inside(int64_t begin, int64_t in_w) {
  return static_cast<__mmask16>(first_lanes(in_w - begin) & ~first_lanes(-begin));
}
// Columns 2l, 2l + 1 and 2l + 2 (l < 16) of a stretch of 33, from low = its columns [0, 16), high =
// [16, 32) and last = column 32: two lane permutes and a one-lane shift (a width-3 window at stride 2).
inline void stride2_columns(__m512 low, __m512 high, float last, __m512 (&col)[3]) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  col[0] = _mm512_permutex2var_ps(low, even, high);
  col[1] = _mm512_permutex2var_ps(low, odd, high);
  col[2] = _mm512_castsi512_ps(
      _mm512_alignr_epi32(_mm512_castps_si512(_mm512_set1_ps(last)), _mm512_castps_si512(col[0]), 1));
}
// A 3x3 undilated window's input columns for 16 outputs from output column ow0 at stride S (1 or
// 2): what to load from each window row, and which lanes lie inside the row (the others are the
// zero padding; their addresses are formed as integers and never read).
template <int S>
struct Window3Columns {
  int64_t begin;        // input column of lane 0's first tap: S * ow0 - pad_l
  __mmask16 inside[3];  // S = 1: lanes of tap j = 0, 1, 2 (columns begin + j + l)
                        // S = 2: lanes of columns begin + l, begin + 16 + l
  bool last_inside;     // S = 2: column begin + 32, lane 15's third tap
  Window3Columns(int64_t ow0, int64_t pad_l, int64_t in_w) : begin(S * ow0 - pad_l) {
    for (int j = 0; j < (S == 1 ? 3 : 2); ++j) inside[j] = lanes_inside(begin + (S == 1 ? j : 16 * j), in_w);
    last_inside = begin + 32 >= 0 && begin + 32 < in_w;
  }
  static __m512 load(const float* row, int64_t at, __mmask16 lanes) {
    const auto address = reinterpret_cast<uintptr_t>(row) + static_cast<uintptr_t>(at) * sizeof(float);
    return _mm512_maskz_loadu_ps(lanes, reinterpret_cast<const float*>(address));
  }
  // The three taps of one window row, each as the vector of its input columns.
  void taps(const float* row, __m512 (&col)[3]) const {
    if constexpr (S == 1) {
      for (int j = 0; j < 3; ++j) col[j] = load(row, begin + j, inside[j]);
    } else {
      stride2_columns(load(row, begin, inside[0]), load(row, begin + 16, inside[1]),
                      last_inside ? row[begin + 32] : 0.0f, col);
    }
  }
};
// Output rows [oh0, oh0 + R) of 16 columns (from `columns`' first output column) of a 3x3
// undilated window at stride S: each of the (R - 1) S + 3 input rows they read is loaded once and
// multiplied into every output row whose window holds it (a row at stride 1 serves three), in the
// order of one window alone (bias, then window rows top to bottom); rows above or below the plane
// are zero vectors. Then the clamp and masked stores, `y` at output (oh0, first column).
template <int S, int R>
[[gnu::always_inline]] inline void window3_row_block(const Window3Columns<S>& columns, const float* x,
                                                     const Window2d& win, const __m512 (&taps)[9], float bias,
                                                     int64_t oh0, bool clamp, __m512 low, __m512 high,
                                                     __mmask16 stores, float* y) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_set1_ps(bias);
  for (int i = 0; i < (R - 1) * S + 3; ++i) {
    const int64_t ih = oh0 * S - win.pad_t + i;
    // A row of padding multiplies zeros too, so that a weight of inf or NaN gives NaN there as on
    // the padded copy the other kernels read.
    __m512 col[3] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    if (ih >= 0 && ih < win.in_h) columns.taps(x + ih * win.in_w, col);
    for (int r = 0; r < R; ++r) {
      const int t = i - r * S;  // the window row of output row oh0 + r that input row i is
      if (t < 0 || t > 2) continue;
      for (int j = 0; j < 3; ++j) acc[r] = _mm512_fmadd_ps(taps[t * 3 + j], col[j], acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    // max(acc, lo) gives lo for NaN (the second operand wins), as the Relu does.
    const __m512 v = clamp ? _mm512_min_ps(_mm512_max_ps(acc[r], low), high) : acc[r];
    _mm512_mask_storeu_ps(y + r * win.out_w, stores, v);
  }
}
// Output rows a block of window3_row_block holds: four at stride 1 read six input rows for twelve
// window rows, twice fewer loads than row by row, and fit the registers with the taps.
inline constexpr int kWindow3BlockRows = 4;
// A 3x3 undilated window at stride S (1 or 2) straight over the unpadded plane, 16 output columns
// to a vector, a column of vectors at a time in blocks of kWindow3BlockRows output rows (then the
// rows left one at a time): taps in the zero padding are lanes that load zeros (whole rows of it
// are zero vectors), so no padded copy is made; a row's last, partial vector is stored under a mask.
template <int S>
inline void window3_masked(const float* x, const float* w, float bias, const Window2d& win, float lo,
                           float hi, float* y) {
  constexpr int R = kWindow3BlockRows;
  __m512 taps[9];
  for (int t = 0; t < 9; ++t) taps[t] = _mm512_set1_ps(w[t]);
  const bool clamp =
      lo != -std::numeric_limits<float>::infinity() || hi != std::numeric_limits<float>::infinity();
  const __m512 low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi);
  for (int64_t ow0 = 0; ow0 < win.out_w; ow0 += 16) {
    const Window3Columns<S> columns(ow0, win.pad_l, win.in_w);
    const __mmask16 stores = first_lanes(win.out_w - ow0);
    int64_t oh = 0;
    for (; oh + R <= win.out_h; oh += R)
      window3_row_block<S, R>(columns, x, win, taps, bias, oh, clamp, low, high, stores,
                              y + oh * win.out_w + ow0);
    for (; oh < win.out_h; ++oh)
      window3_row_block<S, 1>(columns, x, win, taps, bias, oh, clamp, low, high, stores,
                              y + oh * win.out_w + ow0);
  }
}
#endif

// One depthwise output plane (DepthwiseArgs).
inline void depthwise_plane(const DepthwiseArgs& a) {
  const float *x = a.x, *w = a.w;
  const float bias = a.bias, lo = a.lo, hi = a.hi;
  const Window2d& win = *a.win;
  float *scratch = a.scratch, *y = a.y;
#if defined(__AVX512F__)
  if (depthwise_plane_masked(Isa::avx512, win))
    return win.s_w == 1 ? window3_masked<1>(x, w, bias, win, lo, hi, y)
                        : window3_masked<2>(x, w, bias, win, lo, hi, y);
#endif
  const auto [rows, cols] = window_reach(win);
  pad_plane(x, win, rows, cols, scratch);
  const bool undilated = win.d_h == 1 && win.d_w == 1 && win.s_h == win.s_w && win.k_h == win.k_w;
  const int64_t k = undilated ? win.k_h : 0, stride = win.s_w;
  float* wide = scratch + rows * cols;
  // Rows narrower than two AVX-512 vectors waste lanes and loop overhead row by row.
  const bool narrow = win.out_w < 32;
  if (k == 3 && stride == 1 && narrow)
    window_plane<3>(scratch, cols, w, bias, win, lo, hi, wide, y);
  else if (k == 3 && stride == 1)
    window_rows<3, 1>(scratch, cols, w, bias, win, lo, hi, y);
  else if (k == 3 && stride == 2)
    window_rows<3, 2>(scratch, cols, w, bias, win, lo, hi, y);
  else if (k == 5 && stride == 1 && narrow)
    window_plane<5>(scratch, cols, w, bias, win, lo, hi, wide, y);
  else if (k == 5 && stride == 1)
    window_rows<5, 1>(scratch, cols, w, bias, win, lo, hi, y);
  else if (k == 5 && stride == 2)
    window_rows<5, 2>(scratch, cols, w, bias, win, lo, hi, y);
  else
    window_taps(scratch, cols, w, bias, win, lo, hi, y);
}

// The input of DepthwiseLanesArgs placed at (pad_t, pad_l) of out[rows, cols] (kDepthwiseLanes
// floats to a position), zero around it: pad_plane on rows kDepthwiseLanes times as wide.
inline void pad_lanes(const float* x, const Window2d& w, int64_t rows, int64_t cols, float* out) {
  Window2d wide = w;
  wide.in_w *= kDepthwiseLanes;
  wide.pad_l *= kDepthwiseLanes;
  pad_plane(x, wide, rows, cols * kDepthwiseLanes, out);
}

// kQ consecutive output positions of the interleaved depthwise kernel: acc[q][c] (holding the
// bias) += the taps of a K_H x K_W window whose top-left input is at + q * step, its rows `row`
// floats apart and columns `col` apart. Each tap is read once for the kQ positions.
template <int K_H, int K_W, int kQ>
inline void add_windows_lanes(const float* __restrict at, int64_t step, int64_t row, int64_t col,
                              const float* __restrict taps, int64_t k_h, int64_t k_w,
                              float (*__restrict acc)[kDepthwiseLanes]) {
  constexpr int64_t L = kDepthwiseLanes;
  const int64_t kh = K_H > 0 ? K_H : k_h, kw = K_W > 0 ? K_W : k_w;
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j) {
      const float* __restrict tap = taps + (i * kw + j) * L;
      for (int q = 0; q < kQ; ++q) {
        const float* __restrict in = at + q * step + i * row + j * col;
        for (int64_t c = 0; c < L; ++c) acc[q][c] += tap[c] * in[c];
      }
    }
}

// kQ output positions from output (oh, ow) on: bias, window, clamp (unless there is no activation).
template <int K, int S, int kQ>
inline void depthwise_lanes_positions(const float* __restrict padded, int64_t cols,
                                      const float* __restrict taps, const float* __restrict bias,
                                      const Window2d& win, float lo, float hi, bool clamp, int64_t oh,
                                      int64_t ow, float* __restrict y) {
  constexpr int64_t L = kDepthwiseLanes;
  const int64_t s_h = S > 0 ? S : win.s_h, s_w = S > 0 ? S : win.s_w;
  const int64_t d_h = K > 0 ? 1 : win.d_h, d_w = K > 0 ? 1 : win.d_w;
  float acc[kQ][L];
  for (int q = 0; q < kQ; ++q) std::copy_n(bias, L, acc[q]);
  add_windows_lanes<K, K, kQ>(padded + (oh * s_h * cols + ow * s_w) * L, s_w * L, d_h * cols * L, d_w * L,
                              taps, win.k_h, win.k_w, acc);
  for (int q = 0; q < kQ; ++q) {
    float* __restrict out = y + (oh * win.out_w + ow + q) * L;
    for (int64_t c = 0; c < L; ++c) {
      const float v = acc[q][c] > lo ? acc[q][c] : lo;
      out[c] = clamp ? (v < hi ? v : hi) : acc[q][c];
    }
  }
}

// Every output position of the interleaved depthwise kernel over the padded input, four at a time
// along each row; K > 0 fixes an undilated K x K window at stride S at compile time, K = 0 reads
// the window from `win`.
template <int K, int S>
inline void depthwise_lanes_windows(const float* padded, int64_t cols, const float* taps, const float* bias,
                                    const Window2d& win, float lo, float hi, float* y) {
  const bool clamp =
      !(lo == -std::numeric_limits<float>::infinity() && hi == std::numeric_limits<float>::infinity());
  for (int64_t oh = 0; oh < win.out_h; ++oh) {
    int64_t ow = 0;
    for (; ow + 4 <= win.out_w; ow += 4)
      depthwise_lanes_positions<K, S, 4>(padded, cols, taps, bias, win, lo, hi, clamp, oh, ow, y);
    for (; ow < win.out_w; ++ow)
      depthwise_lanes_positions<K, S, 1>(padded, cols, taps, bias, win, lo, hi, clamp, oh, ow, y);
  }
}

inline void depthwise_lanes(const DepthwiseLanesArgs& a) {
  constexpr int64_t L = kDepthwiseLanes;
  const Window2d& win = *a.win;
  const auto [rows, cols] = window_reach(win);
  const int64_t window = win.k_h * win.k_w;
  float* padded = a.scratch;
  float* taps = padded + rows * cols * L;
  pad_lanes(a.x, win, rows, cols, padded);
  for (int64_t t = 0; t < window; ++t)
    for (int64_t c = 0; c < L; ++c) taps[t * L + c] = a.w[c * window + t];
  float bias[L];
  for (int64_t c = 0; c < L; ++c) bias[c] = a.bias ? a.bias[c] : 0.0f;
  const bool square = win.d_h == 1 && win.d_w == 1 && win.s_h == win.s_w && win.k_h == win.k_w;
  const int64_t k = square ? win.k_h : 0, stride = win.s_w;
  if (k == 3 && stride == 1)
    depthwise_lanes_windows<3, 1>(padded, cols, taps, bias, win, a.lo, a.hi, a.y);
  else if (k == 3 && stride == 2)
    depthwise_lanes_windows<3, 2>(padded, cols, taps, bias, win, a.lo, a.hi, a.y);
  else if (k == 5 && stride == 1)
    depthwise_lanes_windows<5, 1>(padded, cols, taps, bias, win, a.lo, a.hi, a.y);
  else if (k == 5 && stride == 2)
    depthwise_lanes_windows<5, 2>(padded, cols, taps, bias, win, a.lo, a.hi, a.y);
  else
    depthwise_lanes_windows<0, 0>(padded, cols, taps, bias, win, a.lo, a.hi, a.y);
}

// Without short-circuit, so loops over it become compare-and-blend in vector lanes.
inline float max_or_nan(float a, float v) {
  const bool take = (v > a) | (v != v);
  return take ? v : a;
}
// The larger of a and v; with NanFree (neither is NaN) a plain compare, the vector max instruction's
// operand order, else max_or_nan. The MaxPool functions below take NanFree alike: for an input known
// to hold no NaN, what a NaN would change is not computed.
template <bool NanFree>
inline float max_of(float a, float v) {
  if constexpr (NanFree)
    return v > a ? v : a;
  else
    return max_or_nan(a, v);
}

// row[ow] = max over the window's columns j of rows_max[ow * s + j]: a stride known at compile time
// (S > 0; S = 0 takes s_w) lets the compiler gather the strided columns with in-register permutes;
// a width known at compile time (K > 0) reads each column once and stores each output once.
template <int S, int K, bool NanFree>
inline void columns_max(const float* __restrict rows_max, int64_t s_w, int64_t k_w, int64_t out_w,
                        float* __restrict row) {
  const int64_t s = S > 0 ? S : s_w;
  if constexpr (K > 0) {
    // The largest value and whether any is NaN, kept apart: max_or_nan's select compiled to
    // data-dependent branches here, which real activations mispredict.
    for (int64_t ow = 0; ow < out_w; ++ow) {
      float m = rows_max[ow * s];
      bool nan = !NanFree && m != m;
      for (int j = 1; j < K; ++j) {
        const float v = rows_max[ow * s + j];
        m = v > m ? v : m;
        if constexpr (!NanFree) nan |= v != v;
      }
      row[ow] = nan ? std::numeric_limits<float>::quiet_NaN() : m;
    }
  } else {
    std::fill(row, row + out_w, -std::numeric_limits<float>::infinity());
    for (int64_t j = 0; j < k_w; ++j)
      for (int64_t ow = 0; ow < out_w; ++ow) row[ow] = max_of<NanFree>(row[ow], rows_max[ow * s + j]);
  }
}

// out[k] = the max of rows[0..n)[k] for k in [0, width), n >= 1: one pass for up to three rows, one
// more for each row after.
template <bool NanFree>
inline void rows_max_of(const float* const* rows, int64_t n, int64_t width, float* __restrict out) {
  const float* __restrict a = rows[0];
  const float* __restrict b = rows[n > 1 ? 1 : 0];
  const float* __restrict c = rows[n > 2 ? 2 : 0];
  if (n == 1)
    std::copy_n(a, width, out);
  else if (n == 2)
    for (int64_t k = 0; k < width; ++k) out[k] = max_of<NanFree>(a[k], b[k]);
  else
    for (int64_t k = 0; k < width; ++k) out[k] = max_of<NanFree>(max_of<NanFree>(a[k], b[k]), c[k]);
  for (int64_t i = 3; i < n; ++i)
    for (int64_t k = 0; k < width; ++k) out[k] = max_of<NanFree>(out[k], rows[i][k]);
}

#if defined(__AVX512F__)
// columns_max<2, 3> sixteen outputs at a time: the window's even, odd and next-even columns are
// two lane permutes and a one-lane shift of 32 loaded columns; NaN in any of the three wins (unless
// NanFree). The last, partial group loads and stores under masks. Reads rows_max[0, 2 * out_w]: the
// span of out_w windows of width 3 and stride 2.
template <bool NanFree>
inline void columns_max_stride2_width3(const float* rows_max, int64_t out_w, float* row) {
  const __m512 nan = _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN());
  for (int64_t ow = 0; ow < out_w; ow += 16) {
    const float* r = rows_max + 2 * ow;
    const int64_t outputs = std::min<int64_t>(16, out_w - ow), reads = 2 * outputs + 1;
    __m512 col[3];
    stride2_columns(_mm512_maskz_loadu_ps(first_lanes(reads), r),
                    _mm512_maskz_loadu_ps(first_lanes(reads - 16), r + 16), reads > 32 ? r[32] : 0.0f, col);
    __m512 m = _mm512_max_ps(_mm512_max_ps(col[0], col[1]), col[2]);
    if constexpr (!NanFree) {
      const __mmask16 any_nan =
          _mm512_cmp_ps_mask(col[0], col[1], _CMP_UNORD_Q) | _mm512_cmp_ps_mask(col[2], col[2], _CMP_UNORD_Q);
      m = _mm512_mask_mov_ps(m, any_nan, nan);
    }
    _mm512_mask_storeu_ps(row + ow, first_lanes(outputs), m);
  }
}
#endif

// The separable MaxPool row's columns pass, with the stride and a window width of 2 or 3 known at
// compile time where they are the common ones (on AVX-512, stride 2 and width 3 in vector lanes).
template <bool NanFree>
inline void columns_max_any(const float* rows_max, int64_t s_w, int64_t k_w, int64_t out_w, float* row) {
  if (s_w == 1 && k_w == 3)
    columns_max<1, 3, NanFree>(rows_max, s_w, k_w, out_w, row);
  else if (s_w == 2 && k_w == 3)
#if defined(__AVX512F__)
    columns_max_stride2_width3<NanFree>(rows_max, out_w, row);
#else
    columns_max<2, 3, NanFree>(rows_max, s_w, k_w, out_w, row);
#endif
  else if (s_w == 2 && k_w == 2)
    columns_max<2, 2, NanFree>(rows_max, s_w, k_w, out_w, row);
  else if (s_w == 1)
    columns_max<1, 0, NanFree>(rows_max, s_w, k_w, out_w, row);
  else if (s_w == 2)
    columns_max<2, 0, NanFree>(rows_max, s_w, k_w, out_w, row);
  else
    columns_max<0, 0, NanFree>(rows_max, s_w, k_w, out_w, row);
}

// One plane of MaxPool (MaxPoolArgs), a row of the output at a time. NaN
// wins, as in the ONNX reference; a window of padding only gives -inf. Rows undilated along the
// width, up to kRowFloats wide, with windows of at most kMaxSeparableRows rows are separable: the
// window's rows are reduced into one row first (unit stride, vector lanes), then its columns;
// other windows go tap by tap.
constexpr int64_t kRowFloats = 2048;
constexpr int64_t kMaxSeparableRows = 64;

template <bool NanFree>
inline void max_pool_rows(const MaxPoolArgs& a) {
  const float* x = a.x;
  const Window2d& w = *a.win;
  float* y = a.y;
  const int64_t span = (w.out_w - 1) * w.s_w + w.k_w;  // input columns the row's windows cover
  const bool separable = w.d_w == 1 && span <= kRowFloats && w.k_h <= kMaxSeparableRows;
  float rows_max[kRowFloats];
  for (int64_t oh = 0; oh < w.out_h; ++oh) {
    float* row = y + oh * w.out_w;
    if (separable) {
      // rows_max[k] covers input column k - pad_l; padding never wins, a window of padding only
      // gives -inf.
      const float* rows[kMaxSeparableRows];
      int64_t n = 0;
      for (int64_t i = 0; i < w.k_h; ++i) {
        const int64_t ih = oh * w.s_h - w.pad_t + i * w.d_h;
        if (ih >= 0 && ih < w.in_h) rows[n++] = x + ih * w.in_w;
      }
      const int64_t begin = std::min(w.pad_l, span), end = std::min(span, w.pad_l + w.in_w);
      std::fill(rows_max, rows_max + begin, -std::numeric_limits<float>::infinity());
      std::fill(rows_max + std::max(begin, end), rows_max + span, -std::numeric_limits<float>::infinity());
      if (n == 0)
        std::fill(rows_max, rows_max + span, -std::numeric_limits<float>::infinity());
      else if (end > begin)  // then begin == pad_l: rows_max[begin] is input column 0
        rows_max_of<NanFree>(rows, n, end - begin, rows_max + begin);
      columns_max_any<NanFree>(rows_max, w.s_w, w.k_w, w.out_w, row);
      continue;
    }
    std::fill(row, row + w.out_w, -std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < w.k_h; ++i) {
      const int64_t ih = oh * w.s_h - w.pad_t + i * w.d_h;
      if (ih < 0 || ih >= w.in_h) continue;
      const float* in = x + ih * w.in_w;
      for (int64_t j = 0; j < w.k_w; ++j) {
        const int64_t offset = j * w.d_w - w.pad_l;
        const auto [begin, end] = valid_columns(offset, w.s_w, w.in_w, w.out_w);
        for (int64_t ow = begin; ow < end; ++ow) row[ow] = max_of<NanFree>(row[ow], in[ow * w.s_w + offset]);
      }
    }
  }
}

inline void max_pool_plane(const MaxPoolArgs& a) {
  if (a.nan_free)
    max_pool_rows<true>(a);
  else
    max_pool_rows<false>(a);
}

// One row of BiasActivationArgs, with or without a residual and a clamp, each combination its own
// loop. `v > lo ? v : lo` and `v < hi ? v : hi` are exactly the vector max and min instructions'
// operand order, so the clamp is two instructions per vector.
template <bool kResidual, bool kClamp>
inline void bias_activation_loop(const float* x, int64_t n, float b, const float* residual, float lo,
                                 float hi, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] + b;
    if constexpr (kResidual) v += residual[i];
    if constexpr (kClamp) {
      v = v > lo ? v : lo;
      v = v < hi ? v : hi;
    }
    y[i] = v;
  }
}
inline void bias_activation_row(const float* x, int64_t n, float b, const float* residual, float lo, float hi,
                                float* y) {
  const bool clamp =
      lo != -std::numeric_limits<float>::infinity() || hi != std::numeric_limits<float>::infinity();
  if (residual)
    clamp ? bias_activation_loop<true, true>(x, n, b, residual, lo, hi, y)
          : bias_activation_loop<true, false>(x, n, b, residual, lo, hi, y);
  else
    clamp ? bias_activation_loop<false, true>(x, n, b, residual, lo, hi, y)
          : bias_activation_loop<false, false>(x, n, b, residual, lo, hi, y);
}

#if defined(__AVX512F__)
// The same, the row's last, partial vector under a mask: short rows (a 13x13 or 55x55 plane's) would
// otherwise spend much of their time in the compiler's scalar remainder loop.
inline void bias_activation_row_masked(const float* x, int64_t n, float b, const float* residual, float lo,
                                       float hi, float* y) {
  const bool clamp =
      lo != -std::numeric_limits<float>::infinity() || hi != std::numeric_limits<float>::infinity();
  const __m512 bias = _mm512_set1_ps(b), low = _mm512_set1_ps(lo), high = _mm512_set1_ps(hi);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 lanes = first_lanes(n - i);
    __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, x + i), bias);
    if (residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, residual + i));
    if (clamp) v = _mm512_min_ps(_mm512_max_ps(v, low), high);
    _mm512_mask_storeu_ps(y + i, lanes, v);
  }
}
#endif

inline void bias_activation(const BiasActivationArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* residual = a.residual ? a.residual + r * a.ldy : nullptr;
#if defined(__AVX512F__)
    bias_activation_row_masked(a.x + r * a.ldx, a.n, a.bias, residual, a.lo, a.hi, a.y + r * a.ldy);
#else
    bias_activation_row(a.x + r * a.ldx, a.n, a.bias, residual, a.lo, a.hi, a.y + r * a.ldy);
#endif
  }
}

// SoftmaxRowArgs. The exponentials are summed in kSoftmaxLanes partial sums, so the loop runs in
// vector lanes (a single running sum would be a chain the compiler may not reorder).
constexpr int64_t kSoftmaxLanes = 16;
// e^d for d = x - max <= 0: exactly 0 below -87, where exp_lanes clamps (masked entries, -inf,
// give 0 as the exact exponential does); NaN stays NaN.
inline float softmax_exp(float d) {
  return d < -87.0f ? 0.0f : exp_lanes(d);
}
inline void softmax_row(const SoftmaxRowArgs& a) {
  const float* x = a.x;
  float* y = a.y;
  const int64_t n = a.n;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  float part[kSoftmaxLanes] = {};
  int64_t i = 0;
  for (; i + kSoftmaxLanes <= n; i += kSoftmaxLanes)
    for (int64_t j = 0; j < kSoftmaxLanes; ++j) {
      const float e = softmax_exp(x[i + j] - mx);
      if (!a.log) y[i + j] = e;
      part[j] += e;
    }
  for (; i < n; ++i) {
    const float e = softmax_exp(x[i] - mx);
    if (!a.log) y[i] = e;
    part[0] += e;
  }
  float sum = 0.0f;
  for (float p : part) sum += p;
  if (a.log) {
    const float log_sum = std::log(sum);
    for (int64_t k = 0; k < n; ++k) y[k] = (x[k] - mx) - log_sum;
    return;
  }
  const float inverse = 1.0f / sum;
  for (int64_t k = 0; k < n; ++k) y[k] *= inverse;
}

// The sum of x[0, n) in kSoftmaxLanes partial sums (vector lanes), of (x[i] - shift)^2 with `squares`.
template <bool kSquares>
inline float lane_sum(const float* x, int64_t n, float shift) {
  float part[kSoftmaxLanes] = {};
  int64_t i = 0;
  for (; i + kSoftmaxLanes <= n; i += kSoftmaxLanes)
    for (int64_t j = 0; j < kSoftmaxLanes; ++j) {
      const float d = x[i + j] - shift;
      part[j] += kSquares ? d * d : d;
    }
  for (; i < n; ++i) {
    const float d = x[i] - shift;
    part[0] += kSquares ? d * d : d;
  }
  float sum = 0.0f;
  for (float p : part) sum += p;
  return sum;
}

// LayerNormRowArgs: the mean, then the variance around it (two passes, as the ONNX definition).
inline void layer_norm_row(const LayerNormRowArgs& a) {
  const float* x = a.x;
  float* y = a.y;
  const int64_t n = a.n;
  if (n == 0) return;
  const float mean = lane_sum<false>(x, n, 0.0f) / static_cast<float>(n);
  const float var = lane_sum<true>(x, n, mean) / static_cast<float>(n);
  const float inv = 1.0f / std::sqrt(var + a.epsilon);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv;
  if (a.scale)
    for (int64_t i = 0; i < n; ++i) y[i] *= a.scale[i];
  if (a.bias)
    for (int64_t i = 0; i < n; ++i) y[i] += a.bias[i];
}

}  // namespace
}  // namespace sparrow::kernels

// Defines the table's entries for the kernels above in the including ISA's translation unit
// (transpose is defined by each, its tile being ISA-specific).
#define SPARROW_DEFINE_DENSE_KERNELS(isa)                        \
  void depthwise_plane__##isa(const DepthwiseArgs& a) {          \
    depthwise_plane(a);                                          \
  }                                                              \
  void depthwise_lanes__##isa(const DepthwiseLanesArgs& a) {     \
    depthwise_lanes(a);                                          \
  }                                                              \
  void max_pool_plane__##isa(const MaxPoolArgs& a) {             \
    max_pool_plane(a);                                           \
  }                                                              \
  void bias_activation__##isa(const BiasActivationArgs& a) {     \
    bias_activation(a);                                          \
  }                                                              \
  void softmax_row__##isa(const SoftmaxRowArgs& a) {             \
    softmax_row(a);                                              \
  }                                                              \
  void layer_norm_row__##isa(const LayerNormRowArgs& a) {        \
    layer_norm_row(a);                                           \
  }                                                              \
  void lstm_cell__##isa(const LstmCellArgs& a) {                 \
    lstm_cell(a);                                                \
  }                                                              \
  void smooth_activation__##isa(const SmoothActivationArgs& a) { \
    smooth_activation(a);                                        \
  }
