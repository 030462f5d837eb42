// The CSR peer has an AVX-512 body (the instructions Sparrow's own AVX-512 kernel uses) and a
// portable body for CPUs without AVX-512; it walks column panels as Sparrow's CSR blocks do.
#include "harness/fp32_peers.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace sparrow {

PlainCsc plain_csc(const std::vector<float>& w, int64_t rows, int64_t cols) {
  PlainCsc m{rows, cols, std::vector<uint32_t>(static_cast<size_t>(cols + 1), 0), {}, {}};
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r)
      if (float v = w[r * cols + c]; v != 0.0f) {
        m.row_index.push_back(static_cast<int32_t>(r));
        m.values.push_back(v);
      }
    m.col_ptr[c + 1] = static_cast<uint32_t>(m.values.size());
  }
  return m;
}

PlainCsr plain_csr(const std::vector<float>& w, int64_t rows, int64_t cols) {
  PlainCsr m{rows, cols, std::vector<uint32_t>(static_cast<size_t>(rows + 1), 0), {}, {}};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      if (float v = w[r * cols + c]; v != 0.0f) {
        m.col_index.push_back(static_cast<int32_t>(c));
        m.values.push_back(v);
      }
    m.row_ptr[r + 1] = static_cast<uint32_t>(m.values.size());
  }
  return m;
}

std::vector<PlainCsr> plain_csr_panels(const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<PlainCsr> panels;
  for (int64_t c0 = 0; c0 < cols; c0 += kPeerPanelColumns) {
    PlainCsr m{rows, cols, std::vector<uint32_t>(static_cast<size_t>(rows + 1), 0), {}, {}};
    const int64_t c1 = std::min(cols, c0 + kPeerPanelColumns);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = c0; c < c1; ++c)
        if (float v = w[r * cols + c]; v != 0.0f) {
          m.col_index.push_back(static_cast<int32_t>(c));
          m.values.push_back(v);
        }
      m.row_ptr[r + 1] = static_cast<uint32_t>(m.values.size());
    }
    panels.push_back(std::move(m));
  }
  return panels;
}

std::vector<PlainBlocks> plain_block_panels(const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<PlainBlocks> panels;
  const int64_t groups = (rows + kPlainBlockRows - 1) / kPlainBlockRows;
  for (int64_t c0 = 0; c0 < cols; c0 += kPeerPanelColumns) {
    PlainBlocks m{rows, cols, std::vector<uint32_t>(static_cast<size_t>(groups + 1), 0), {}, {}};
    const int64_t c1 = std::min(cols, c0 + kPeerPanelColumns);
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t c = c0; c < c1; ++c) {
        float v[kPlainBlockRows] = {};
        bool any = false;
        for (int64_t k = 0; k < kPlainBlockRows && g * kPlainBlockRows + k < rows; ++k) {
          v[k] = w[(g * kPlainBlockRows + k) * cols + c];
          any = any || v[k] != 0.0f;
        }
        if (!any) continue;
        m.col_index.push_back(static_cast<int32_t>(c));
        m.values.insert(m.values.end(), v, v + kPlainBlockRows);
      }
      m.group_ptr[g + 1] = static_cast<uint32_t>(m.col_index.size());
    }
    panels.push_back(std::move(m));
  }
  return panels;
}

void plain_csc_spmv(const PlainCsc& m, const float* x, float* y) {
  std::memset(y, 0, sizeof(float) * static_cast<size_t>(m.rows));
  for (int64_t j = 0; j < m.cols; ++j) {
    float xj = x[j];
    if (xj == 0.0f) continue;
    for (uint32_t e = m.col_ptr[j]; e < m.col_ptr[j + 1]; ++e) y[m.row_index[e]] += m.values[e] * xj;
  }
}

void plain_csc_spmv(const PlainCsc& m, const int32_t* active, int64_t n_active, const float* x, float* y) {
  std::memset(y, 0, sizeof(float) * static_cast<size_t>(m.rows));
  for (int64_t k = 0; k < n_active; ++k) {
    int32_t j = active[k];
    float xj = x[j];
    for (uint32_t e = m.col_ptr[j]; e < m.col_ptr[j + 1]; ++e) y[m.row_index[e]] += m.values[e] * xj;
  }
}

namespace {

void csr_spmm_portable(const PlainCsr& m, bool first, int64_t row_begin, int64_t row_end, const float* xt,
                       int64_t ldx, int64_t batch, float* y, int64_t ldy) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* out = y + r * ldy;
    if (first) std::memset(out, 0, sizeof(float) * static_cast<size_t>(batch));
    for (uint32_t e = m.row_ptr[r]; e < m.row_ptr[r + 1]; ++e) {
      const float* x = xt + static_cast<int64_t>(m.col_index[e]) * ldx;
      for (int64_t b = 0; b < batch; ++b) out[b] += m.values[e] * x[b];
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void csr_spmm_avx512(
    const PlainCsr& m, bool first, int64_t row_begin, int64_t row_end, const float* xt, int64_t ldx,
    int64_t batch, float* y, int64_t ldy) {
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t b0 = 0; b0 < batch; b0 += 64) {
      int64_t n = std::min<int64_t>(64, batch - b0);
      __mmask16 masks[4];
      for (int t = 0; t < 4; ++t) {
        int64_t left = n - 16 * t;
        masks[t] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
      }
      float* out = y + r * ldy + b0;
      __m512 acc[4];
      for (int t = 0; t < 4; ++t)
        acc[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(masks[t], out + 16 * t);
      for (uint32_t e = m.row_ptr[r]; e < m.row_ptr[r + 1]; ++e) {
        __m512 w = _mm512_set1_ps(m.values[e]);
        const float* x = xt + static_cast<int64_t>(m.col_index[e]) * ldx + b0;
        for (int t = 0; t < 4; ++t)
          if (masks[t]) acc[t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(masks[t], x + 16 * t), acc[t]);
      }
      for (int t = 0; t < 4; ++t) _mm512_mask_storeu_ps(out + 16 * t, masks[t], acc[t]);
    }
}

void blocks_spmm_portable(const PlainBlocks& m, bool first, int64_t row_begin, int64_t row_end,
                          const float* xt, int64_t ldx, int64_t batch, float* y, int64_t ldy) {
  for (int64_t g = row_begin / kPlainBlockRows; g * kPlainBlockRows < row_end; ++g) {
    const int64_t rows = std::min(kPlainBlockRows, row_end - g * kPlainBlockRows);
    for (int64_t k = 0; k < rows && first; ++k)
      std::memset(y + (g * kPlainBlockRows + k) * ldy, 0, sizeof(float) * static_cast<size_t>(batch));
    for (uint32_t e = m.group_ptr[g]; e < m.group_ptr[g + 1]; ++e) {
      const float* x = xt + static_cast<int64_t>(m.col_index[e]) * ldx;
      for (int64_t k = 0; k < rows; ++k) {
        float* out = y + (g * kPlainBlockRows + k) * ldy;
        const float w = m.values[e * kPlainBlockRows + k];
        for (int64_t b = 0; b < batch; ++b) out[b] += w * x[b];
      }
    }
  }
}

// Whole groups of four rows in registers (a short last group goes to the portable loop: stores
// under a row count made GCC keep the accumulators in memory).
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void blocks_spmm_avx512(
    const PlainBlocks& m, bool first, int64_t row_begin, int64_t row_end, const float* xt, int64_t ldx,
    int64_t batch, float* y, int64_t ldy) {
  const int64_t whole_end = row_end / kPlainBlockRows;
  for (int64_t g = row_begin / kPlainBlockRows; g < whole_end; ++g) {
    for (int64_t b0 = 0; b0 < batch; b0 += 64) {
      const int64_t n = std::min<int64_t>(64, batch - b0);
      __mmask16 masks[4];
      for (int t = 0; t < 4; ++t) {
        const int64_t left = n - 16 * t;
        masks[t] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
      }
      float* out = y + g * kPlainBlockRows * ldy + b0;
      __m512 acc[kPlainBlockRows][4];
      for (int64_t k = 0; k < kPlainBlockRows; ++k)
        for (int t = 0; t < 4; ++t)
          acc[k][t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(masks[t], out + k * ldy + 16 * t);
      for (uint32_t e = m.group_ptr[g]; e < m.group_ptr[g + 1]; ++e) {
        const float* x = xt + static_cast<int64_t>(m.col_index[e]) * ldx + b0;
        __m512 xv[4];
        for (int t = 0; t < 4; ++t) xv[t] = _mm512_maskz_loadu_ps(masks[t], x + 16 * t);
        for (int64_t k = 0; k < kPlainBlockRows; ++k) {
          const __m512 w = _mm512_set1_ps(m.values[e * kPlainBlockRows + k]);
          for (int t = 0; t < 4; ++t) acc[k][t] = _mm512_fmadd_ps(w, xv[t], acc[k][t]);
        }
      }
      for (int64_t k = 0; k < kPlainBlockRows; ++k)
        for (int t = 0; t < 4; ++t) _mm512_mask_storeu_ps(out + k * ldy + 16 * t, masks[t], acc[k][t]);
    }
  }
  if (whole_end * kPlainBlockRows < row_end)
    blocks_spmm_portable(m, first, std::max(row_begin, whole_end * kPlainBlockRows), row_end, xt, ldx, batch,
                         y, ldy);
}

}  // namespace

void plain_csr_spmm(const std::vector<PlainCsr>& panels, int64_t row_begin, int64_t row_end, const float* xt,
                    int64_t ldx, int64_t batch, float* y, int64_t ldy) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  const auto kernel = avx512 ? csr_spmm_avx512 : csr_spmm_portable;
  for (size_t p = 0; p < panels.size(); ++p)
    kernel(panels[p], p == 0, row_begin, row_end, xt, ldx, batch, y, ldy);
}

void plain_blocks_spmm(const std::vector<PlainBlocks>& panels, int64_t row_begin, int64_t row_end,
                       const float* xt, int64_t ldx, int64_t batch, float* y, int64_t ldy) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  if (row_begin >= row_end) return;  // an empty range may start inside the last group
  const auto kernel = avx512 ? blocks_spmm_avx512 : blocks_spmm_portable;
  for (size_t p = 0; p < panels.size(); ++p)
    kernel(panels[p], p == 0, row_begin, row_end, xt, ldx, batch, y, ldy);
}

}  // namespace sparrow
