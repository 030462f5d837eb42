#include "engine/sparse/sparse_run.h"

#include "engine/sparse/layout_table.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace sparrow {

void SpmvWorkspace::reserve(const SparseMatrix& m, int threads) {
  active.resize(static_cast<size_t>(m.cols));
  constexpr int64_t kLineFloats = 16;
  partial_stride = (m.rows + kLineFloats - 1) / kLineFloats * kLineFloats;
  partial.resize(static_cast<size_t>(partial_stride * std::max({threads, m.partitions(), 1}) + kLineFloats));
  started.assign(static_cast<size_t>(std::max(threads, 1)), 0);
  // At most cols / kMinChunkColumns + 1 chunks, and one bound more.
  bounds.resize(static_cast<size_t>(m.cols / kMinChunkColumns + 2));
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
  sparse_kernels().list_nonzero(NonzeroArgs{x, n, active, &count});
  return count;
}

// The active list is cut into chunks that shrink as the list is used up (guided scheduling): each
// is a 1/(2 * threads) share of the columns not yet in a chunk, rounded to whole groups of four
// (the tile kernel's passes) and at least kMinChunkColumns. Early chunks are large (few claims),
// the last ones small, so the threads finish within a small chunk of each other even when one of
// them runs slower. Writes the chunk bounds (count + 1 values) and returns the count.
int64_t guided_chunks(int64_t n, int threads, int64_t* bounds) {
  int64_t count = 0, begin = 0;
  bounds[0] = 0;
  while (begin < n) {
    int64_t size = std::max(kMinChunkColumns, (n - begin) / (2 * int64_t{threads}) / 4 * 4);
    begin = std::min(n, begin + size);
    bounds[++count] = begin;
  }
  return count;
}

// y = W x over the n listed active columns, on the one-sample layout the matrix has; adds to y
// when `accumulate`.
void matvec_chunk(const SparseMatrix& m, const float* x, const int32_t* active, int64_t n, float* y,
                  bool accumulate) {
  column_walk_of(m).run(
      m, sparse_kernels(),
      LayoutProduct{.x = x, .active = active, .n_active = n, .y = y, .accumulate = accumulate});
}

// Threads claim chunks of the active columns one at a time and add them into their private y;
// the private results are summed at the end. A thread slowed by other work on the machine simply
// claims fewer chunks (a fixed half each made the pair wait for the slower one).
void matvec_columns(ThreadPool& pool, const SparseMatrix& m, const float* x, float* y, SpmvWorkspace& ws,
                    int64_t n) {
  int threads = m.nonzeros < kParallelFromNonzeros ? 1 : pool.size();
  if (threads == 1 || n == 0) {
    matvec_chunk(m, x, ws.active.data(), n, y, false);
    return;
  }
  int64_t chunks = guided_chunks(n, threads, ws.bounds.data());
  std::fill(ws.started.begin(), ws.started.end(), 0);
  pool.parallel_tasks_in_order(chunks, [&](int64_t c, int t) {
    int64_t begin = ws.bounds[c], end = ws.bounds[c + 1];
    matvec_chunk(m, x, ws.active.data() + begin, end - begin, ws.partial_for(t), ws.started[t] != 0);
    ws.started[t] = 1;
  });
  // The reduction is a few microseconds: cheaper on this thread than another parallel region.
  bool first = true;
  for (int t = 0; t < threads; ++t) {
    if (!ws.started[t]) continue;
    const float* part = ws.partial_for(t);
    if (first)
      std::memcpy(y, part, sizeof(float) * static_cast<size_t>(m.rows));
    else
      for (int64_t r = 0; r < m.rows; ++r) y[r] += part[r];
    first = false;
  }
}

// The first slice that starts at or after part / parts of the sliced rows' entries (slices() when
// none does).
int64_t slice_at(const SlicedRows& s, int64_t part, int64_t parts) {
  const uint64_t target =
      static_cast<uint64_t>(s.entries()) * static_cast<uint64_t>(part) / static_cast<uint64_t>(parts);
  int64_t lo = 0, hi = s.slices();
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (s.slice_ptr[static_cast<size_t>(mid)] < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  return part == parts ? s.slices() : lo;
}

// Every row, in kRowChunksPerThread ranges of slices per thread of about equal entry counts,
// claimed one at a time. On several threads the slices' sums go to their sorted positions in
// ws.partial_for(0), whole lines per slice (the rows of a slice are scattered over y, and two
// threads storing into the same lines of y slowed the walk on two threads to that on one), then to
// their rows on this thread.
void matvec_row_walk(ThreadPool& pool, const SparseMatrix& m, const float* x, float* y, SpmvWorkspace& ws) {
  const LayoutRow& walk = layout_row(kLayoutSlicedRows);
  const SlicedRows& s = m.sliced_rows;
  auto slices = [&](int64_t begin, int64_t end, float* sorted) {
    walk.run(m, sparse_kernels(),
             LayoutProduct{.x = x, .slice_begin = begin, .slice_end = end, .y = y, .y_sorted = sorted});
  };
  if (m.nonzeros < kParallelFromNonzeros || pool.size() == 1) {
    slices(0, s.slices(), nullptr);
    return;
  }
  float* sorted = ws.partial_for(0);  // at least slices() * 16 floats: rows rounded up to lines
  const int64_t parts = int64_t{pool.size()} * kRowChunksPerThread;
  pool.parallel_for(parts,
                    [&](int64_t t) { slices(slice_at(s, t, parts), slice_at(s, t + 1, parts), sorted); });
  for (int64_t pos = 0; pos < s.rows(); ++pos) y[s.order[static_cast<size_t>(pos)]] = sorted[pos];
}

void matvec_rows(ThreadPool& pool, const SparseMatrix& m, const float* x, float* y, SpmvWorkspace& ws,
                 int64_t n) {
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
  if (scheme == SpmvScheme::columns && m.row_walk_pays(n))
    matvec_row_walk(pool, m, x, y, ws);
  else if (scheme == SpmvScheme::columns && m.partitions() == 1)
    matvec_columns(pool, m, x, y, ws, n);
  else
    matvec_rows(pool, m, x, y, ws, n);
}

std::vector<int64_t> balanced_row_bounds(const SparseMatrix& m, int threads) {
  const int parts = threads > 1 ? threads * kRowChunksPerThread : 1;
  uint64_t total = 0;
  for (uint64_t e : m.row_entries) total += e;
  std::vector<int64_t> bounds = {0};
  uint64_t seen = 0;
  int64_t r = 0;
  for (int p = 1; p < parts; ++p) {
    uint64_t target = total * static_cast<uint64_t>(p) / static_cast<uint64_t>(parts);
    while (r < m.rows && (seen < target || r % kBlockRows != 0)) seen += m.row_entries[r++];
    bounds.push_back(r);
  }
  bounds.push_back(m.rows);
  return bounds;
}

void sparse_matmat_rows(const SparseMatrix& m, int64_t row_begin, int64_t row_end, const float* xt,
                        int64_t ldx, int64_t batch, float* y, int64_t ldy, const int64_t* x_rows,
                        const RowEpilogue& epilogue) {
  batched_walk_of(m).run(m, sparse_kernels(),
                         LayoutProduct{.x = xt,
                                       .row_begin = row_begin,
                                       .row_end = row_end,
                                       .batch = batch,
                                       .ldx = ldx,
                                       .ldy = ldy,
                                       .y = y,
                                       .x_rows = x_rows,
                                       .epilogue = &epilogue});
}

void sparse_matmat(ThreadPool& pool, const SparseMatrix& m, const std::vector<int64_t>& bounds,
                   const float* xt, int64_t ldx, int64_t batch, float* y, int64_t ldy, const int64_t* x_rows,
                   RowsDone rows_done, RowGroups groups, const RowEpilogue& epilogue) {
  auto product = [&](int64_t begin, int64_t end) {
    if (groups.rows == 0) {
      sparse_matmat_rows(m, begin, end, xt, ldx, batch, y, ldy, x_rows, epilogue);
      return;
    }
    for (int64_t r = begin; r < end;) {
      const int64_t g = r / groups.rows, group_end = std::min(end, (g + 1) * groups.rows);
      sparse_matmat_rows(m, r, group_end, xt + g * groups.x_stride, ldx, batch, y, ldy, x_rows, epilogue);
      r = group_end;
    }
  };
  // With rows_done, a range goes in pieces of about kRowsDonePieceBytes of y, each followed by
  // its rows_done, so that the epilogue reads them from cache.
  const int64_t row_bytes = std::max<int64_t>(1, ldy * static_cast<int64_t>(sizeof(float)));
  const int64_t piece = rows_done
                            ? std::max<int64_t>(1, kRowsDonePieceBytes / row_bytes / kBlockRows) * kBlockRows
                            : std::numeric_limits<int64_t>::max();
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end;) {
      const int64_t q = end - p > piece ? p + piece : end;
      product(p, q);
      if (rows_done) rows_done(p, q);
      p = q;
    }
  };

  if (m.nonzeros * batch < kParallelFromProducts) {
    rows(0, m.rows);
    return;
  }
  int parts = static_cast<int>(bounds.size()) - 1;
  pool.parallel_for(parts, [&](int64_t t) { rows(bounds[t], bounds[t + 1]); });
}

}  // namespace sparrow
