#include "engine/sparse/sparse_run.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace sparrow {

void SpmvWorkspace::reserve(const SparseMatrix& m, int threads) {
  active.resize(static_cast<size_t>(m.cols));
  constexpr int64_t kLineFloats = 16;
  partial_stride = (m.rows + kLineFloats - 1) / kLineFloats * kLineFloats;
  partial.resize(static_cast<size_t>(partial_stride * std::max({threads, m.partitions(), 1}) + kLineFloats));
  bounds.resize(static_cast<size_t>(threads + 1));
}

float* SpmvWorkspace::partial_for(int64_t t) {
  auto address = reinterpret_cast<uintptr_t>(partial.data());
  auto aligned = reinterpret_cast<float*>((address + 63) & ~uintptr_t{63});
  return aligned + t * partial_stride;
}

namespace {

SpmvFn pick(const SparseMatrix& m) {
  const SparseKernels& k = sparse_kernels();
  return m.e8 ? k.spmv_csc_e8 : k.spmv_csc_e16;
}

int64_t list_active(const float* x, int64_t n, int32_t* active) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j)
    if (x[j] != 0.0f) active[count++] = static_cast<int32_t>(j);
  return count;
}

// Splits the active list into `parts` chunks of about equal entry counts.
void split_active(const CscPartition& p, const int32_t* active, int64_t n, int parts, int64_t* bounds) {
  uint64_t total = 0;
  for (int64_t k = 0; k < n; ++k) total += p.col_ptr[active[k] + 1] - p.col_ptr[active[k]];
  bounds[0] = 0;
  uint64_t seen = 0;
  int64_t k = 0;
  for (int t = 1; t < parts; ++t) {
    uint64_t target = total * static_cast<uint64_t>(t) / static_cast<uint64_t>(parts);
    for (; k < n && seen < target; ++k) seen += p.col_ptr[active[k] + 1] - p.col_ptr[active[k]];
    bounds[t] = k;
  }
  bounds[parts] = n;
}

// Splits the active list into `parts` chunks of equal column counts (every column of the tile
// layout costs the same number of tiles).
void split_evenly(int64_t n, int parts, int64_t* bounds) {
  for (int t = 0; t <= parts; ++t) bounds[t] = n * t / parts;
}

// y = W x over the n listed active columns, on the one-sample layout the matrix has.
void matvec_chunk(const SparseMatrix& m, const float* x, const int32_t* active, int64_t n, float* y) {
  if (!m.tiles.empty())
    sparse_kernels().spmv_tiles(SpmvTileArgs{&m.tiles, m.rows, m.codebook.data(), active, n, x, y});
  else if (!m.banded.empty())
    sparse_kernels().spmv_banded(SpmvBandArgs{&m.banded, m.rows, m.codebook.data(), active, n, x, y});
  else
    pick(m)(SpmvArgs{&m.csc[0], m.codebook.data(), m.small_codebook, active, n, x, y});
}

void matvec_columns(ThreadPool& pool, const SparseMatrix& m, const float* x, float* y, SpmvWorkspace& ws, int64_t n) {
  int threads = m.nonzeros < kParallelFromNonzeros ? 1 : pool.size();
  if (threads == 1) {
    matvec_chunk(m, x, ws.active.data(), n, y);
    return;
  }
  if (!m.tiles.empty()) split_evenly(n, threads, ws.bounds.data());
  else split_active(m.csc[0], ws.active.data(), n, threads, ws.bounds.data());
  pool.parallel_for(threads, [&](int64_t t) {
    matvec_chunk(m, x, ws.active.data() + ws.bounds[t], ws.bounds[t + 1] - ws.bounds[t],
                 ws.partial_for(t));
  });
  // The reduction is a few microseconds: cheaper on this thread than another parallel region.
  std::memcpy(y, ws.partial_for(0), sizeof(float) * static_cast<size_t>(m.rows));
  for (int t = 1; t < threads; ++t) {
    const float* part = ws.partial_for(t);
    for (int64_t r = 0; r < m.rows; ++r) y[r] += part[r];
  }
}

void matvec_rows(ThreadPool& pool, const SparseMatrix& m, const float* x, float* y, SpmvWorkspace& ws, int64_t n) {
  SpmvFn kernel = pick(m);
  int parts = m.partitions();
  auto partition = [&](int64_t p) {
    float* local = ws.partial_for(p);
    kernel(SpmvArgs{&m.csc[p], m.codebook.data(), m.small_codebook, ws.active.data(), n, x, local});
    for (int64_t r = 0; r < m.csc[p].local_rows; ++r) y[r * parts + p] = local[r];
  };
  if (m.nonzeros < kParallelFromNonzeros)
    for (int p = 0; p < parts; ++p) partition(p);
  else
    pool.parallel_for(parts, partition);
}

}  // namespace

void sparse_matvec(ThreadPool& pool, const SparseMatrix& m, const float* x, float* y, SpmvWorkspace& ws,
                   SpmvScheme scheme) {
  int64_t n = list_active(x, m.cols, ws.active.data());  // EIE's leading non-zero detection
  if (scheme == SpmvScheme::columns && m.partitions() == 1) matvec_columns(pool, m, x, y, ws, n);
  else matvec_rows(pool, m, x, y, ws, n);
}

std::vector<int64_t> balanced_row_bounds(const SparseMatrix& m, int parts) {
  uint64_t total = 0;
  for (uint64_t e : m.row_entries) total += e;
  std::vector<int64_t> bounds = {0};
  uint64_t seen = 0;
  int64_t r = 0;
  for (int p = 1; p < parts; ++p) {
    uint64_t target = total * static_cast<uint64_t>(p) / static_cast<uint64_t>(parts);
    while (r < m.rows && seen < target) seen += m.row_entries[r++];
    bounds.push_back(r);
  }
  bounds.push_back(m.rows);
  return bounds;
}

void sparse_matmat(ThreadPool& pool, const SparseMatrix& m, const std::vector<int64_t>& bounds, const float* xt,
                   int64_t ldx, int64_t batch, float* y, int64_t ldy) {
  const SparseKernels& k = sparse_kernels();
  if (m.nonzeros * batch < kParallelFromNonzeros) {
    k.spmm_csr_e16(SpmmArgs{&m, 0, m.rows, xt, ldx, batch, y, ldy});
    return;
  }
  int parts = static_cast<int>(bounds.size()) - 1;
  pool.parallel_for(parts, [&](int64_t t) {
    k.spmm_csr_e16(SpmmArgs{&m, bounds[t], bounds[t + 1], xt, ldx, batch, y, ldy});
  });
}

}  // namespace sparrow
