// Parallel drivers of the sparse kernels, shared by the executor's ops and the benchmarks.
//
// Batch 1 (y = W x over the CSC layout, walking only the columns of non-zero inputs):
//   - columns: the active columns are cut into chunks that shrink towards the end of the list
//     (guided scheduling), which the threads claim one at a time; each thread adds its chunks into a private
//     y over all rows, and the private results are summed. Every thread pays the per-column overhead only for
//     its own columns, and a thread slowed by other work claims fewer chunks. Which thread sums
//     which chunk varies between calls, so with several threads y may differ between calls in the
//     last bits (one thread is reproducible). Runs on the layout the matrix has for one sample:
//     column tiles, banded CSC or CSC.
//   - rows: EIE's scheme, one interleaved row partition per thread (needs a matrix built with
//     partitions == threads); every thread walks every active column.
//   When the matrix has the sliced rows and the sample enough non-zero inputs that walking every
//   row costs less (SparseMatrix::row_walk_pays), the columns scheme walks the rows instead: ranges
//   of slices of about equal entry counts, several per thread, claimed one at a time; each row is
//   written once by one thread, so the result does not depend on the thread count.
// Batches (Y = W Xt over the row blocks where the matrix has them, else the blocked CSR layout):
//   contiguous row ranges of about equal entry counts, several per thread, claimed one at a time.
#pragma once

#include <vector>

#include "core/thread_pool.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

enum class SpmvScheme { columns, rows };

// Buffers for one matrix, sized once (no allocation per run).
struct SpmvWorkspace {
  std::vector<int32_t> active;  // indices of non-zero inputs
  std::vector<float> partial;   // one private y per thread (columns) or partition (rows)
  int64_t partial_stride = 0;   // floats per thread's y: whole 64-byte lines, so that two threads
                                // never write one cache line (false sharing)
  // Thread (or partition) t's private y, 64-byte aligned.
  float* partial_for(int64_t t);
  std::vector<char> started;    // columns: whether thread t has written its private y this call
  std::vector<int64_t> bounds;  // columns: bounds of the chunks of the active list
  void reserve(const SparseMatrix& m, int threads);
};

// y[rows] = W x. Work below kParallelFromNonzeros non-zeros runs on the calling thread. `ws` must
// have been reserved for `m` and at least pool.size() threads.
void sparse_matvec(ThreadPool& pool, const SparseMatrix& m, const float* x, float* y, SpmvWorkspace& ws,
                   SpmvScheme scheme);

// Row ranges for batches on `threads` threads: one range, or kRowChunksPerThread per thread of
// about equal CSR entry counts, starting at multiples of kBlockRows (the row blocks' groups), which the
// threads claim one at a time (a thread slowed by other work on the machine claims fewer). Returned as ranges
// + 1 bounds.
inline constexpr int kRowChunksPerThread = 4;
std::vector<int64_t> balanced_row_bounds(const SparseMatrix& m, int threads);
// sparse_matmat's rows_done: a reference to the caller's callable (none by default), meant only to
// be passed as an argument (the callable, often a temporary lambda, must outlive the call); nothing
// is allocated.
class RowsDone {
 public:
  RowsDone() = default;
  template <class F>
  RowsDone(const F& f)  // NOLINT(google-explicit-constructor): passed as a lambda
      : fn_(&f),
        call_([](const void* fn, int64_t begin, int64_t end) { (*static_cast<const F*>(fn))(begin, end); }) {}
  explicit operator bool() const { return call_ != nullptr; }
  void operator()(int64_t begin, int64_t end) const { call_(fn_, begin, end); }

 private:
  const void* fn_ = nullptr;
  void (*call_)(const void*, int64_t, int64_t) = nullptr;
};

// The rows of W in groups that read Xt at different places (a grouped convolution's filters, each
// group over its own input channels): rows [g rows, (g + 1) rows) read Xt from xt + g x_stride.
// `rows` is a multiple of kBlockRows where W runs on row blocks. No groups (rows 0): every row
// reads xt.
struct RowGroups {
  int64_t rows = 0;
  int64_t x_stride = 0;
};

// Y[rows, ldy] = W Xt over the row ranges in `bounds`, one per pool task; with `x_rows`, column j
// multiplies the row at xt + x_rows[j] (SpmmArgs::x_rows). `rows_done(begin, end)`, where given,
// runs on the thread that wrote rows [begin, end), right after it wrote them (an epilogue that finds
// them in cache and is split as the product is): a range is then run in pieces of at most
// kRowsDonePieceBytes of Y (at least kBlockRows rows), each followed by its rows_done. With
// `groups`, a range is run group by group. The kernels apply `epilogue` to each row as they store
// it (before rows_done).
inline constexpr int64_t kRowsDonePieceBytes = 256 * 1024;
void sparse_matmat(ThreadPool& pool, const SparseMatrix& m, const std::vector<int64_t>& bounds,
                   const float* xt, int64_t ldx, int64_t batch, float* y, int64_t ldy,
                   const int64_t* x_rows = nullptr, RowsDone rows_done = {}, RowGroups groups = {},
                   const RowEpilogue& epilogue = {});

// The same for rows [row_begin, row_end), on the calling thread. row_begin is a multiple of
// kBlockRows (the row blocks' groups), as balanced_row_bounds gives.
void sparse_matmat_rows(const SparseMatrix& m, int64_t row_begin, int64_t row_end, const float* xt,
                        int64_t ldx, int64_t batch, float* y, int64_t ldy, const int64_t* x_rows = nullptr,
                        const RowEpilogue& epilogue = {});

// Fewest active columns in one chunk of the columns scheme (the last chunk may have fewer).
inline constexpr int64_t kMinChunkColumns = 32;

// Below these a product runs on the calling thread, where a parallel region (a few microseconds
// with the pool's workers spinning, and the rows' inputs and outputs moving between cores) costs
// more than it saves: non-zeros for one sample, non-zeros times samples for batches.
inline constexpr int64_t kParallelFromNonzeros = int64_t{1} << 14;
inline constexpr int64_t kParallelFromProducts = int64_t{1} << 17;

}  // namespace sparrow
