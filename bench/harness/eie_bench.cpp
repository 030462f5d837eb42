#include "harness/eie_bench.h"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>

#include <fmt/format.h>

#include "core/eie_layers.h"
#include "core/machine.h"
#include "core/thread_pool.h"
#include "core/timer.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/layout_table.h"
#include "engine/sparse/sparse_run.h"
#include "harness/eigen_peer.h"
#include "harness/fp32_peers.h"

namespace sparrow::cli {

namespace {

using json = nlohmann::json;

// One layer's weights in every form the contenders use.
struct Workload {
  EieLayer layer;
  std::vector<uint8_t> codes;  // [out, in], 4-bit codes, 0 = zero weight
  std::vector<float> codebook;
  std::vector<float> dense;  // [out, in] float32
  PlainCsc csc;
  PlainCsr csr;
  std::vector<PlainCsr> csr_panels;
  std::vector<PlainBlocks> block_panels;  // with row blocks only
  std::unique_ptr<EigenPeer> eigen;
  std::map<int, SparseMatrix> sparrow;  // by partition count
};

Workload make_workload(const EieLayer& l, uint32_t seed, bool row_blocks) {
  Workload w{l,
             std::vector<uint8_t>(static_cast<size_t>(l.in * l.out), 0),
             std::vector<float>(16, 0.0f),
             {},
             {},
             {},
             {},
             {},
             {},
             {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  for (int i = 1; i < 16; ++i) w.codebook[i] = (u(rng) * 0.1f + 0.01f) * (i % 2 ? 1.0f : -1.0f);
  uint32_t threshold = static_cast<uint32_t>(l.weight_density * 4294967295.0);
  std::minstd_rand fast(seed);
  auto present = [&] {
    return (static_cast<uint32_t>(fast()) << 1 ^ static_cast<uint32_t>(fast())) < threshold;
  };
  if (row_blocks) {
    for (int64_t g = 0; g * kBlockRows < l.out; ++g)
      for (int64_t c = 0; c < l.in; ++c)
        if (present())
          for (int64_t r = g * kBlockRows; r < std::min<int64_t>(l.out, (g + 1) * kBlockRows); ++r)
            w.codes[static_cast<size_t>(r * l.in + c)] = static_cast<uint8_t>(1 + fast() % 15);
  } else {
    for (auto& c : w.codes)
      if (present()) c = static_cast<uint8_t>(1 + fast() % 15);
  }
  w.dense.resize(w.codes.size());
  for (size_t i = 0; i < w.codes.size(); ++i) w.dense[i] = w.codebook[w.codes[i]];
  w.csc = plain_csc(w.dense, l.out, l.in);
  w.csr = plain_csr(w.dense, l.out, l.in);
  w.csr_panels = plain_csr_panels(w.dense, l.out, l.in);
  if (row_blocks) w.block_panels = plain_block_panels(w.dense, l.out, l.in);
  w.eigen = make_eigen_peer(w.dense, l.out, l.in);
  return w;
}

// Inputs X [batch, in] at the layer's activation density (non-negative, as after ReLU).
std::vector<float> make_inputs(const EieLayer& l, int64_t batch, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(static_cast<size_t>(batch * l.in), 0.0f);
  for (auto& v : x)
    if (u(rng) < l.activation_density) v = u(rng) + 0.01f;
  return x;
}

// Median over at least `repeats` timed runs and at least kMinTimedSeconds of them (a short kernel
// timed over a few milliseconds would take its median from whatever else the machine was doing
// then), after two warm-up runs.
constexpr double kMinTimedSeconds = 0.2;
constexpr int kMaxTimedRuns = 20000;

double median_of(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <class F>
double median_us(F&& f, int repeats) {
  f();
  f();
  std::vector<double> t;
  double total = 0;
  while (static_cast<int>(t.size()) < repeats ||
         (total < kMinTimedSeconds && static_cast<int>(t.size()) < kMaxTimedRuns)) {
    Timer timer;
    f();
    double s = timer.seconds();
    total += s;
    t.push_back(s * 1e6);
  }
  return median_of(std::move(t));
}

// Measures timed together: call by call in one window, in an order drawn at random every round.
// On shared machines a slow spell lasts seconds; timing measures one after the other put a spell
// into some of them only. The random order keeps any one measure from always following the same
// other one. Only measures of one kernel on one matrix share a window: a peer walking its own
// layout in between evicts the weights of the next call, and on this machine that made every
// measure a cold-cache one (docs/engine.md).
class Window {
 public:
  // Adds a measure; returns its index in medians_us().
  size_t add(std::function<void()> run) {
    runs_.push_back(std::move(run));
    return runs_.size() - 1;
  }
  // Medians over at least `repeats` rounds and kMinTimedSeconds per measure in all, after one
  // warm-up round.
  std::vector<double> medians_us(int repeats) const {
    for (const auto& f : runs_) f();
    std::vector<std::vector<double>> t(runs_.size());
    std::vector<size_t> order(runs_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::mt19937 shuffle_rng(1);
    double total = 0;
    const double min_seconds = kMinTimedSeconds * static_cast<double>(runs_.size());
    int rounds = 0;
    while (rounds < repeats || (total < min_seconds && rounds < kMaxTimedRuns)) {
      std::shuffle(order.begin(), order.end(), shuffle_rng);
      for (size_t i : order) {
        Timer timer;
        runs_[i]();
        double s = timer.seconds();
        total += s;
        t[i].push_back(s * 1e6);
      }
      ++rounds;
    }
    std::vector<double> medians;
    for (auto& v : t) medians.push_back(median_of(std::move(v)));
    return medians;
  }

 private:
  std::vector<std::function<void()>> runs_;
};

// Sparrow's measures of one configuration: `run(pool, threads, copy)` on the benchmark's pool and,
// when that has several threads, two more in the same window, whose results fields() gives for the
// JSON row:
//  - one_thread_us, speedup_vs_one_thread: the same product on one thread;
//  - concurrent_one_thread_us, machine_scaling: `threads` independent one-thread products run at
//    once, one per thread (copy = 0, 1, ...: each with its own output, workspace and inputs), and
//    their throughput over one product alone. No work is split and nothing is coordinated, so this
//    is what the machine's shared parts (a second vCPU that can be slower than the first, shared
//    caches, memory) let that many threads gain on this kernel in this window. It is not a bound on
//    speedup_vs_one_thread: the copies read the weights `threads` times over, a split reads them
//    once.
class SparrowMeasures {
 public:
  template <class Run>
  SparrowMeasures(ThreadPool& pool, Run run) : threads_(pool.size()) {
    many_ = window_.add([&pool, run, this] { run(pool, threads_, 0); });
    if (threads_ == 1) return;
    for (int c = 0; c < threads_; ++c) singles_.push_back(std::make_unique<ThreadPool>(1));
    one_ = window_.add([run, this] { run(*singles_[0], 1, 0); });
    copies_ = window_.add([&pool, run, this] {
      pool.parallel_for(threads_, [&](int64_t c) { run(*singles_[c], 1, static_cast<int>(c)); });
    });
  }
  SparrowMeasures(const SparrowMeasures&) = delete;  // the measures point at this object
  SparrowMeasures& operator=(const SparrowMeasures&) = delete;

  // Times the window; returns Sparrow's time on the pool.
  double medians_us(int repeats) {
    t_ = window_.medians_us(repeats);
    return t_[many_];
  }
  json fields() const {
    if (threads_ == 1) return json::object();
    return {{"one_thread_us", t_[one_]},
            {"speedup_vs_one_thread", t_[one_] / t_[many_]},
            {"concurrent_one_thread_us", t_[copies_]},
            {"machine_scaling", threads_ * t_[one_] / t_[copies_]}};
  }

 private:
  int threads_;
  Window window_;
  std::vector<std::unique_ptr<ThreadPool>> singles_;
  size_t many_ = 0, one_ = 0, copies_ = 0;
  std::vector<double> t_;
};

// Contiguous row ranges of the plain CSR peer of about equal entry counts.
std::vector<int64_t> plain_balanced_rows(const std::vector<uint32_t>& row_ptr, int parts) {
  std::vector<int64_t> bounds = {0};
  for (int p = 1; p < parts; ++p) {
    uint64_t target = static_cast<uint64_t>(row_ptr.back()) * p / parts;
    bounds.push_back(std::lower_bound(row_ptr.begin(), row_ptr.end(), target) - row_ptr.begin());
  }
  bounds.push_back(static_cast<int64_t>(row_ptr.size()) - 1);
  return bounds;
}

const SparseMatrix& sparrow_matrix(Workload& w, int partitions) {
  auto [it, fresh] = w.sparrow.try_emplace(partitions);
  if (fresh) it->second = build_sparse_matrix(w.codes, w.layer.out, w.layer.in, w.codebook, partitions);
  return it->second;
}

// Entries each row partition walks for the active inputs: max over mean (1 = perfectly balanced).
double row_scheme_balance(const SparseMatrix& m, const std::vector<int32_t>& active) {
  int64_t max_part = 0, all = 0;
  for (const auto& part : m.csc) {
    int64_t e = 0;
    for (int32_t j : active) e += part.col_ptr[j + 1] - part.col_ptr[j];
    max_part = std::max(max_part, e);
    all += e;
  }
  return max_part ? static_cast<double>(all) / m.partitions() / max_part : 1.0;
}

// The inputs of a one-sample measurement: kStreamInputs vectors at the layer's activation density,
// each timed call taking the next one in turn. Timing one input over and over let the caches keep
// exactly the weight columns it touches, which no stream of real inputs allows, and which
// configuration then found them in its own core's cache depended on what ran just before it (a
// one-thread walk fills one core's L2, independent copies on every thread fill all of them).
constexpr int kStreamInputs = 16;

struct InputStream {
  std::vector<std::vector<float>> x;
  std::vector<std::vector<int32_t>> active;  // the non-zero inputs of each, for the listed peer

  InputStream(const EieLayer& l, uint32_t seed) {
    for (int i = 0; i < kStreamInputs; ++i) {
      x.push_back(make_inputs(l, 1, seed + static_cast<uint32_t>(i)));
      active.emplace_back();
      for (int64_t j = 0; j < l.in; ++j)
        if (x.back()[j] != 0.0f) active.back().push_back(static_cast<int32_t>(j));
    }
  }
};

// Index of the input a timed call uses: the one after the previous call's, per measurement.
struct Turn {
  size_t i = 0;
  size_t next() { return i = (i + 1) % kStreamInputs; }
};

json bench_batch1(Workload& w, int threads, ThreadPool& pool, int repeats) {
  const EieLayer& l = w.layer;
  const SparseMatrix& by_columns = sparrow_matrix(w, 1);
  const SparseMatrix& by_rows = sparrow_matrix(w, threads);
  const InputStream in(l, 7);
  std::vector<float> y(static_cast<size_t>(l.out));
  SpmvWorkspace ws_columns, ws_rows;
  ws_columns.reserve(by_columns, threads);
  ws_rows.reserve(by_rows, threads);
  // One workspace, output and turn per concurrent one-thread copy (see SparrowMeasures).
  std::vector<SpmvWorkspace> ws_one(static_cast<size_t>(threads));
  for (auto& ws : ws_one) ws.reserve(by_columns, 1);
  std::vector<std::vector<float>> y_copy(static_cast<size_t>(threads), y);
  std::vector<Turn> copy_turn(static_cast<size_t>(threads));
  Turn many_turn;
  SparrowMeasures sparrow(pool, [&](ThreadPool& p, int t, int copy) {
    if (t > 1)
      sparse_matvec(p, by_columns, in.x[many_turn.next()].data(), y.data(), ws_columns, SpmvScheme::columns);
    else
      sparse_matvec(p, by_columns, in.x[copy_turn[copy].next()].data(), y_copy[copy].data(), ws_one[copy],
                    SpmvScheme::columns);
  });
  double sparrow_us = sparrow.medians_us(repeats);
  Turn turn;
  double rows_us = median_us(
      [&] { sparse_matvec(pool, by_rows, in.x[turn.next()].data(), y.data(), ws_rows, SpmvScheme::rows); },
      repeats);
  double eigen_rm = median_us([&] { w.eigen->spmv_rowmajor(in.x[turn.next()].data(), y.data()); }, repeats);
  double eigen_sv =
      median_us([&] { w.eigen->spmv_sparse_vector(in.x[turn.next()].data(), y.data()); }, repeats);
  double plain_us = median_us([&] { plain_csc_spmv(w.csc, in.x[turn.next()].data(), y.data()); }, repeats);
  double plain_listed_us = median_us(
      [&] {
        size_t i = turn.next();
        plain_csc_spmv(w.csc, in.active[i].data(), static_cast<int64_t>(in.active[i].size()), in.x[i].data(),
                       y.data());
      },
      repeats);
  omp_set_num_threads(threads);
  double dense_us = median_us(
      [&] {
        dnnl_sgemm('N', 'N', l.out, 1, l.in, 1.0f, w.dense.data(), l.in, in.x[turn.next()].data(), 1, 0.0f,
                   y.data(), 1);
      },
      repeats);
  omp_set_num_threads(1);
  // Work done per call, averaged over the inputs: non-zeros in the active columns; bytes of
  // entries and pointers each walk reads.
  int64_t nnz = 0, entries = 0, active_columns = 0;
  double balance = 1.0;
  for (const auto& active : in.active) {
    for (int32_t j : active) {
      nnz += w.csc.col_ptr[j + 1] - w.csc.col_ptr[j];
      entries += by_columns.csc[0].col_ptr[j + 1] - by_columns.csc[0].col_ptr[j];
    }
    active_columns += static_cast<int64_t>(active.size());
    balance = std::min(balance, row_scheme_balance(by_rows, active));
  }
  nnz /= kStreamInputs;
  entries /= kStreamInputs;
  active_columns /= kStreamInputs;
  int64_t pointer_bytes = active_columns * 8;
  const bool row_walk = by_columns.row_walk_pays(active_columns);  // at the inputs' average share
  const LayoutRow& walked = row_walk ? layout_row(kLayoutSlicedRows) : column_walk_of(by_columns);
  int64_t sparrow_bytes = 0;
  for (const auto& active : in.active) sparrow_bytes += walked.bytes_touched(by_columns, active);
  sparrow_bytes /= kStreamInputs;
  const int64_t fillers = walked.layout == kLayoutCsc ? entries - nnz : 0;
  json row = {{"name", l.name},
              {"batch", 1},
              {"threads", threads},
              {"sparrow_us", sparrow_us},
              {"sparrow_rows_scheme_us", rows_us},
              {"dense_us", dense_us},
              {"eigen_us", std::min(eigen_rm, eigen_sv)},
              {"eigen_rowmajor_us", eigen_rm},
              {"eigen_sparse_vector_us", eigen_sv},
              {"plain_us", plain_us},
              {"plain_listed_us", plain_listed_us},
              {"nonzeros_per_second", nnz / (sparrow_us * 1e-6)},
              {"layout", row_walk ? "sliced rows" : by_columns.batch1_layout()},
              {"fillers", fillers},
              {"sparrow_bytes_touched", sparrow_bytes},
              {"plain_bytes_touched", nnz * 8 + pointer_bytes},
              {"rows_scheme_load_balance", balance}};
  // The share of non-zero inputs from which a sample takes the row walk (absent without one).
  if (!by_columns.sliced_rows.empty())
    row["row_walk_from_active_share"] =
        static_cast<double>(by_columns.row_walk_from_active) / static_cast<double>(l.in);
  row.update(sparrow.fields());
  return row;
}

json bench_batched(Workload& w, int batch, int threads, ThreadPool& pool, int repeats) {
  const EieLayer& l = w.layer;
  const SparseMatrix& m = sparrow_matrix(w, 1);
  // Xt and Y 64-byte aligned, as an engine's workspace and a tuned peer's buffers are (rows 16 bytes
  // off a line cost both kernels about a third more at batch 64).
  std::vector<float> x = make_inputs(l, batch, 9);
  Tensor xt_rows(DType::f32, {l.in, batch}), y_rows(DType::f32, {l.out, batch});
  float *xt = xt_rows.f32_data(), *y = y_rows.f32_data();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < l.in; ++j) xt[j * batch + b] = x[b * l.in + j];
  auto sparrow_bounds = balanced_row_bounds(m, threads);
  // The peer gets the same number of row ranges, claimed the same way.
  auto plain_bounds = plain_balanced_rows(w.csr.row_ptr, static_cast<int>(sparrow_bounds.size()) - 1);
  auto one_bounds = balanced_row_bounds(m, 1);
  std::vector<Tensor> y_copy(static_cast<size_t>(threads), y_rows);  // see SparrowMeasures
  SparrowMeasures sparrow(pool, [&](ThreadPool& p, int t, int copy) {
    if (t > 1)
      sparse_matmat(p, m, sparrow_bounds, xt, batch, batch, y, batch);
    else
      sparse_matmat(p, m, one_bounds, xt, batch, batch, y_copy[static_cast<size_t>(copy)].f32_data(), batch);
  });
  double sparrow_us = sparrow.medians_us(repeats);
  double eigen_us = median_us([&] { w.eigen->spmm(x.data(), batch, y); }, repeats);
  double plain_us = median_us(
      [&] {
        pool.parallel_for(static_cast<int64_t>(plain_bounds.size()) - 1, [&](int64_t t) {
          plain_csr_spmm(w.csr_panels, plain_bounds[t], plain_bounds[t + 1], xt, batch, batch, y, batch);
        });
      },
      repeats);
  // The row-block peer walks Sparrow's row ranges (they start at whole groups).
  const double blocks_us =
      w.block_panels.empty()
          ? 0.0
          : median_us(
                [&] {
                  pool.parallel_for(static_cast<int64_t>(sparrow_bounds.size()) - 1, [&](int64_t t) {
                    plain_blocks_spmm(w.block_panels, sparrow_bounds[t], sparrow_bounds[t + 1], xt, batch,
                                      batch, y, batch);
                  });
                },
                repeats);
  omp_set_num_threads(threads);
  double dense_us = median_us(
      [&] {
        dnnl_sgemm('N', 'T', batch, l.out, l.in, 1.0f, x.data(), l.in, w.dense.data(), l.in, 0.0f, y, l.out);
      },
      repeats);
  omp_set_num_threads(1);
  int64_t nnz = static_cast<int64_t>(w.csr.values.size());
  json row = {{"name", l.name},
              {"batch", batch},
              {"threads", threads},
              {"sparrow_us", sparrow_us},
              {"dense_us", dense_us},
              {"eigen_us", eigen_us},
              {"plain_us", plain_us},
              {"nonzeros_per_second", nnz * batch / (sparrow_us * 1e-6)},
              {"layout", batched_walk_of(m).name},
              {"sparrow_bytes_touched", batched_walk_of(m).bytes_touched(m, {})},
              {"plain_bytes_touched", nnz * 8 + (l.out + 1) * 4}};
  if (!w.block_panels.empty()) row["plain_blocks_us"] = blocks_us;
  row.update(sparrow.fields());
  return row;
}

double geomean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += std::log(x);
  return v.empty() ? 0 : std::exp(s / static_cast<double>(v.size()));
}

}  // namespace

json run_eie_bench(const EieBenchOptions& o) {
  json results{{"isa", isa_name(sparse_kernels().isa)},
               {"machine", machine_description()},
               {"repeats", o.repeats},
               {"layers", json::array()}};
  int max_threads = *std::max_element(o.threads.begin(), o.threads.end());
  ThreadPool pool(max_threads);
  for (const auto& layer : kEieLayers) {
    if (!o.layers.empty() && std::find(o.layers.begin(), o.layers.end(), layer.name) == o.layers.end())
      continue;
    if (o.progress) fmt::print(stderr, "\r\033[Kbench {}: preparing", layer.name);
    Workload w = make_workload(layer, 1, o.row_blocks);
    for (int batch : o.batches)
      for (int threads : o.threads) {
        if (o.progress)
          fmt::print(stderr, "\r\033[Kbench {}: batch {}, {} thread(s)", layer.name, batch, threads);
        ThreadPool local(threads);
        results["layers"].push_back(batch == 1 ? bench_batch1(w, threads, local, o.repeats)
                                               : bench_batched(w, batch, threads, local, o.repeats));
      }
  }
  if (o.progress) fmt::print(stderr, "\r\033[K");
  json geo = json::object();
  for (int batch : o.batches)
    for (int threads : o.threads) {
      std::vector<double> dense, eigen, plain, listed, blocks;
      for (const auto& r : results["layers"])
        if (r["batch"] == batch && r["threads"] == threads) {
          double s = r["sparrow_us"];
          dense.push_back(r["dense_us"].get<double>() / s);
          eigen.push_back(r["eigen_us"].get<double>() / s);
          plain.push_back(r["plain_us"].get<double>() / s);
          if (r.contains("plain_listed_us")) listed.push_back(r["plain_listed_us"].get<double>() / s);
          if (r.contains("plain_blocks_us")) blocks.push_back(r["plain_blocks_us"].get<double>() / s);
        }
      json& g = geo[fmt::format("batch {}, {} thread{}", batch, threads, threads > 1 ? "s" : "")];
      g = {{"speedup_vs_dense", geomean(dense)},
           {"speedup_vs_eigen", geomean(eigen)},
           {"speedup_vs_plain", geomean(plain)}};
      if (!listed.empty()) g["speedup_vs_plain_listed"] = geomean(listed);
      if (!blocks.empty()) g["speedup_vs_plain_blocks"] = geomean(blocks);
    }
  results["geomean"] = geo;
  results["weights"] = o.row_blocks ? "4x1 row blocks" : "unstructured";
  return results;
}

namespace {

// One sample through each batch-1 layout's kernel, whichever the matrix would choose: the CSC walk,
// the banded CSC, the column tiles and the row walk over the sliced rows. Fills csc_us, banded_us,
// tiles_us and row_walk_us.
void time_batch1_layouts(Workload& w, int repeats, json& row) {
  const EieLayer& l = w.layer;
  const SparseMatrix& m = sparrow_matrix(w, 1);
  ColumnTiles tiles = build_column_tiles(w.codes, l.out, l.in);
  BandedCsc banded = build_banded_csc(w.codes, l.out, l.in);
  SlicedRows sliced_rows = build_sliced_rows(w.codes, l.out, l.in);
  std::vector<float> x = make_inputs(l, 1, 7), y(static_cast<size_t>(l.out));
  std::vector<int32_t> active;
  for (int64_t j = 0; j < l.in; ++j)
    if (x[j] != 0.0f) active.push_back(static_cast<int32_t>(j));
  const SparseKernels& k = sparse_kernels();
  auto n = static_cast<int64_t>(active.size());
  row["csc_layout"] = m.e8 ? "csc8" : "csc16";
  row["csc_us"] = median_us(
      [&] {
        (m.e8 ? k.spmv_csc_e8 : k.spmv_csc_e16)(
            SpmvArgs{&m.csc[0], m.codebook.data(), m.small_codebook, active.data(), n, x.data(), y.data()});
      },
      repeats);
  row["banded_us"] = median_us(
      [&] {
        k.spmv_banded(SpmvBandArgs{&banded, l.out, m.codebook.data(), active.data(), n, x.data(), y.data()});
      },
      repeats);
  row["tiles_us"] = median_us(
      [&] {
        k.spmv_tiles(SpmvTileArgs{&tiles, l.out, m.codebook.data(), active.data(), n, x.data(), y.data()});
      },
      repeats);
  row["row_walk_us"] = median_us(
      [&] {
        k.spmv_rows_sliced(
            SpmvRowArgs{&sliced_rows, m.codebook.data(), x.data(), 0, sliced_rows.slices(), y.data()});
      },
      repeats);
  row["nonzeros_per_tile"] =
      static_cast<double>(m.nonzeros) / static_cast<double>(tiles.tiles_per_column * l.in);
}

}  // namespace

json run_crossover_bench(const EieBenchOptions& o) {
  json rows = json::array();
  ThreadPool pool(1);
  for (double density : {0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8}) {
    if (o.progress) fmt::print(stderr, "\r\033[Kcrossover: density {}", density);
    Workload w = make_workload(EieLayer{"4096x4096", 4096, 4096, density, 1.0, 0, 0}, 3, false);
    for (int batch : o.batches) {
      json r = batch == 1 ? bench_batch1(w, 1, pool, o.repeats) : bench_batched(w, batch, 1, pool, o.repeats);
      json row = {{"density", density},
                  {"batch", batch},
                  {"sparrow_us", r["sparrow_us"]},
                  {"dense_us", r["dense_us"]}};
      if (batch == 1) {
        row["layout"] = r["layout"];
        time_batch1_layouts(w, o.repeats, row);
      }
      rows.push_back(row);
    }
  }
  if (o.progress) fmt::print(stderr, "\r\033[K");
  return {{"isa", isa_name(sparse_kernels().isa)}, {"rows", rows}};
}

void print_crossover_bench(const json& r) {
  fmt::print("4096 x 4096 layer, dense inputs, 1 thread, sparse kernels {}: microseconds\n",
             r["isa"].get<std::string>());
  fmt::print("(batch 1: each layout's kernel timed alone; the engine runs the layout shown)\n");
  fmt::print("{:>8} {:>6} {:>10} {:>10} {:>8} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "density",
             "batch", "sparrow", "dense", "x dense", "layout", "csc", "banded", "tiles", "row walk",
             "nz/tile");
  for (const auto& row : r["rows"]) {
    fmt::print("{:>8.3f} {:>6} {:>10.1f} {:>10.1f} {:>8.2f}", row["density"].get<double>(),
               row["batch"].get<int>(), row["sparrow_us"].get<double>(), row["dense_us"].get<double>(),
               row["dense_us"].get<double>() / row["sparrow_us"].get<double>());
    if (row.contains("csc_us"))
      fmt::print(" {:>12} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.2f}",
                 row["layout"].get<std::string>(), row["csc_us"].get<double>(),
                 row["banded_us"].get<double>(), row["tiles_us"].get<double>(),
                 row["row_walk_us"].get<double>(), row["nonzeros_per_tile"].get<double>());
    fmt::print("\n");
  }
}

void print_eie_bench(const json& r) {
  fmt::print(
      "EIE benchmark layers, random weights at the paper's densities, 4-bit codes; sparse kernels: {}\n"
      "median of at least {} runs and 0.2 s; times in microseconds; x = peer time / Sparrow time\n"
      "peers: oneDNN dense sgemm (same thread count), Eigen sparse and plain float32 kernels\n"
      "(batch 1: each timed call takes the next of {} inputs at the layer's activation density)\n"
      "weights: {}\nmachine: {}\n",
      r["isa"].get<std::string>(), r["repeats"].get<int>(), kStreamInputs, r["weights"].get<std::string>(),
      r["machine"].get<std::string>());
  fmt::print(
      "(Eigen: 1 thread; plain CSC: 1 thread; plain CSR and row blocks: same threads as Sparrow)\n"
      "(batch 1: plain = the CSC loop skipping zero inputs; x listed = against its walk alone, over a\n"
      " list of the non-zero inputs made before the timing)\n"
      "(x 1 thr: Sparrow on one thread / on this many; machine: throughput of as many independent\n"
      " one-thread products run at once / of one alone, what the machine lets threads gain on this\n"
      " kernel without splitting work; Sparrow's measures are timed call by call in one window, in\n"
      " random order)\n");
  for (const auto& [config, g] : r["geomean"].items()) {
    fmt::print("\n{}\n{:<9} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10} {:>9} {:>8} {:>8}{}\n",
               config, "layer", "sparrow", "dense", "eigen", "plain", "x dense", "x eigen", "x plain",
               "Gnz/s", "x listed", "x 1 thr", "machine",
               g.contains("speedup_vs_plain_blocks") ? " x blocks" : "");
    for (const auto& l : r["layers"]) {
      std::string key = fmt::format("batch {}, {} thread{}", l["batch"].get<int>(), l["threads"].get<int>(),
                                    l["threads"].get<int>() > 1 ? "s" : "");
      if (key != config) continue;
      double s = l["sparrow_us"];
      fmt::print("{:<9} {:>10.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>8.2f} {:>8.2f} {:>8.2f} {:>10.2f}",
                 l["name"].get<std::string>(), s, l["dense_us"].get<double>(), l["eigen_us"].get<double>(),
                 l["plain_us"].get<double>(), l["dense_us"].get<double>() / s,
                 l["eigen_us"].get<double>() / s, l["plain_us"].get<double>() / s,
                 l["nonzeros_per_second"].get<double>() / 1e9);
      if (l.contains("plain_listed_us"))
        fmt::print(" {:>9.2f}", l["plain_listed_us"].get<double>() / s);
      else
        fmt::print(" {:>9}", "");
      if (l.contains("speedup_vs_one_thread"))
        fmt::print(" {:>8.2f} {:>8.2f}", l["speedup_vs_one_thread"].get<double>(),
                   l["machine_scaling"].get<double>());
      else
        fmt::print(" {:>8} {:>8}", "", "");
      if (l.contains("plain_blocks_us")) fmt::print(" {:>8.2f}", l["plain_blocks_us"].get<double>() / s);
      fmt::print("\n");
    }
    fmt::print("{:<9} {:>43} {:>8.2f} {:>8.2f} {:>8.2f}", "geomean", "", g["speedup_vs_dense"].get<double>(),
               g["speedup_vs_eigen"].get<double>(), g["speedup_vs_plain"].get<double>());
    if (g.contains("speedup_vs_plain_listed"))
      fmt::print(" {:>10} {:>9.2f}", "", g["speedup_vs_plain_listed"].get<double>());
    if (g.contains("speedup_vs_plain_blocks"))
      fmt::print(" {:>10} {:>9} {:>8} {:>8} {:>8.2f}", "", "", "", "",
                 g["speedup_vs_plain_blocks"].get<double>());
    fmt::print("\n");
  }
}

}  // namespace sparrow::cli
