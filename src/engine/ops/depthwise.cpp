#include "engine/ops/depthwise.h"

#include <algorithm>

namespace sparrow {

__attribute__((target_clones("avx512f", "avx2,fma", "default"))) void depthwise_conv_plane(
    const float* x, const float* w, float bias, const Window2d& win, const Activation& act, float* y) {
  for (int64_t oh = 0; oh < win.out_h; ++oh) {
    float* row = y + oh * win.out_w;
    std::fill(row, row + win.out_w, bias);
    for (int64_t i = 0; i < win.k_h; ++i) {
      const int64_t ih = oh * win.s_h - win.pad_t + i * win.d_h;
      if (ih < 0 || ih >= win.in_h) continue;
      const float* in = x + ih * win.in_w;
      for (int64_t j = 0; j < win.k_w; ++j) {
        const float wv = w[i * win.k_w + j];
        const int64_t offset = j * win.d_w - win.pad_l;
        const auto [begin, end] = valid_columns(offset, win.s_w, win.in_w, win.out_w);
        if (win.s_w == 1) {
          for (int64_t ow = begin; ow < end; ++ow) row[ow] += wv * in[ow + offset];
        } else {
          for (int64_t ow = begin; ow < end; ++ow) row[ow] += wv * in[ow * win.s_w + offset];
        }
      }
    }
    act.apply(row, win.out_w);
  }
}

}  // namespace sparrow
