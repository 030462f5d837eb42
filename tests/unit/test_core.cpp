#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "core/file.h"
#include "core/finite.h"
#include "core/half.h"
#include "core/machine.h"
#include "core/svg_plot.h"
#include "core/thread_pool.h"
#include "sparrow/dataset.h"
#include "sparrow/train.h"
#include "test_util.h"

namespace sparrow {
namespace {

TEST(Tensor, ShapesAndStorage) {
  Tensor t(DType::f32, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.bytes(), 96u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (float v : t.f32_span()) EXPECT_EQ(v, 0.0f);
  t.f32_data()[5] = 2.5f;
  Tensor copy = t;
  copy.f32_data()[5] = 1.0f;
  EXPECT_EQ(t.f32_data()[5], 2.5f) << "copies are deep";
  t.reshape({4, 6});
  EXPECT_EQ(t.shape(), (Shape{4, 6}));
  Tensor scalar = Tensor::scalar_f32(3.0f);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.rank(), 0);
}

TEST(Tensor, KeepingLeadingRowsKeepsTheirDataInPlace) {
  Tensor t(DType::f32, {4, 3});
  for (int64_t i = 0; i < 12; ++i) t.f32_data()[i] = static_cast<float>(i);
  const void* storage = t.raw();
  t.keep_leading(3);
  EXPECT_EQ(t.shape(), (Shape{3, 3}));
  EXPECT_EQ(t.numel(), 9);
  EXPECT_EQ(t.raw(), storage) << "no copy";
  EXPECT_EQ(t.f32_data()[8], 8.0f);
  Tensor copy = t;
  EXPECT_EQ(copy.bytes(), 36u) << "a copy holds the kept rows only";
  t.keep_leading(0);
  EXPECT_EQ(t.numel(), 0);
  LabeledData d;
  d.inputs = Tensor(DType::f32, {5, 2});
  d.inputs.f32_data()[3] = 7.0f;
  d.labels = {0, 1, 2, 3, 4};
  d.teacher = Tensor(DType::f32, {5, 10});
  keep_leading_rows(d, 2);
  EXPECT_EQ(d.size(), 2);
  EXPECT_EQ(d.inputs.f32_data()[3], 7.0f);
  EXPECT_EQ(d.labels, (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(d.taught()) << "the teacher's outputs shrink with the rows";
}

TEST(Tensor, NumelGuardsOverflowAndNegatives) {
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({3, 0, 5}), 0);
  EXPECT_EQ(shape_numel({-1, 2}), -1);
  EXPECT_EQ(shape_numel({int64_t{1} << 20, int64_t{1} << 20}), -1);
  EXPECT_EQ(shape_numel({int64_t{1} << 40, 0}), 0);
  EXPECT_EQ(shape_str({2, 3}), "[2, 3]");
}

TEST(Status, ResultAndContext) {
  Result<int> good = 4;
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 4);
  Result<int> bad = errorf("field {} out of range", "x");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().prefixed("model.onnx").message(), "model.onnx: field x out of range");
  auto chain = [&]() -> Result<int> {
    SP_ASSIGN_OR_RETURN(int v, bad);
    return v + 1;
  };
  EXPECT_FALSE(chain().ok());
}

TEST(ThreadPool, RunsEveryTaskOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int round = 0; round < 200; ++round) {
      std::vector<std::atomic<int>> hits(37);
      pool.parallel_for(37, [&](int64_t i) { hits[i]++; });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    }
    std::atomic<int64_t> sum{0};
    pool.parallel_range(1000, 10, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  }
}

TEST(ThreadPool, TasksNameTheThreadRunningThem) {
  // Every task runs once, on a thread index in [0, size()), and no two tasks run at the same time
  // on one index (a per-thread counter is written without atomics); tasks in per-thread blocks and
  // from one queue in order.
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int round = 0; round < 1000; ++round) {
      std::vector<std::atomic<int>> hits(41);
      std::vector<int64_t> per_thread(static_cast<size_t>(threads) * 16, 0);  // 16 apart: own lines
      std::atomic<bool> bad_index{false};
      auto task = [&](int64_t i, int t) {
        if (t < 0 || t >= threads) {
          bad_index = true;
          return;
        }
        hits[i]++;
        per_thread[static_cast<size_t>(t) * 16] += i + 1;
      };
      if (round % 2 == 0)
        pool.parallel_tasks(41, task);
      else
        pool.parallel_tasks_in_order(41, task);
      ASSERT_FALSE(bad_index.load());
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      int64_t sum = 0;
      for (int t = 0; t < threads; ++t) sum += per_thread[static_cast<size_t>(t) * 16];
      ASSERT_EQ(sum, 41 * 42 / 2);
    }
  }
}

TEST(ThreadPool, PreparedTasksFindTheirThreadPreparedOnceFirst) {
  // Each thread that runs a task of the region calls prepare once, before its first task; a thread
  // that runs none never calls it; the next region prepares again.
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int round = 0; round < 2000; ++round) {
      const int64_t count = 1 + round % 9;
      std::vector<int> prepared(static_cast<size_t>(threads) * 16, 0), ran(prepared.size(), 0);  // own lines
      std::atomic<int> unprepared_tasks{0};
      std::vector<std::atomic<int>> hits(static_cast<size_t>(count));
      pool.parallel_tasks_prepared(
          count, [&](int t) { ++prepared[static_cast<size_t>(t) * 16]; },
          [&](int64_t i, int t) {
            if (prepared[static_cast<size_t>(t) * 16] != 1) ++unprepared_tasks;
            ++ran[static_cast<size_t>(t) * 16];
            hits[static_cast<size_t>(i)]++;
          });
      ASSERT_EQ(unprepared_tasks.load(), 0);
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
      for (int t = 0; t < threads; ++t)
        ASSERT_EQ(prepared[static_cast<size_t>(t) * 16], ran[static_cast<size_t>(t) * 16] > 0 ? 1 : 0)
            << "thread " << t << " of " << threads;
    }
  }
}

TEST(ThreadPool, BackToBackRegionsNeverMixTheirTasks) {
  // Many short regions with different functions and counts: a worker that wakes late must not run
  // a task of one region with another's function, and every task runs exactly once.
  // Block ends move between regions (counts 5, 2 and 7 in three blocks, 7 in one queue).
  ThreadPool pool(3);
  std::vector<std::atomic<int>> a(5), b(2), c(7);
  for (int round = 0; round < 30000; ++round) {
    if (round % 3 == 0)
      pool.parallel_for(5, [&](int64_t i) { a[i]++; });
    else if (round % 3 == 1)
      pool.parallel_for(2, [&](int64_t i) { b[i]++; });
    else
      pool.parallel_tasks_in_order(7, [&](int64_t i, int) { c[i]++; });
  }
  for (auto& h : a) EXPECT_EQ(h.load(), 10000);
  for (auto& h : b) EXPECT_EQ(h.load(), 10000);
  for (auto& h : c) EXPECT_EQ(h.load(), 10000);
}

TEST(StallGuard, ACallerWaitingFarLongerThanItWorkedRunsAloneForABackOffThatGrowsWhileStallsRecur) {
  using namespace std::chrono_literals;
  using Clock = StallGuard::Clock;
  const Clock::time_point t0 = Clock::now();
  StallGuard guard;
  EXPECT_FALSE(guard.runs_alone(t0));
  // A slower worker or one longer task: the caller waits less than twice its own work and the slack.
  guard.record(100us, 150us, t0);
  guard.record(10ms, 20ms, t0);
  guard.record(0us, StallGuard::kStallSlack, t0);
  EXPECT_FALSE(guard.runs_alone(t0));
  EXPECT_EQ(guard.stalls(), 0u);
  // A worker taken off its core mid-task: alone for kFirstBackoff.
  guard.record(50us, 3ms, t0);
  EXPECT_EQ(guard.stalls(), 1u);
  EXPECT_TRUE(guard.runs_alone(t0 + StallGuard::kFirstBackoff - 1us));
  EXPECT_FALSE(guard.runs_alone(t0 + StallGuard::kFirstBackoff));
  // Stalls again soon after: the back-off doubles each time, up to kMostBackoff.
  Clock::time_point t = t0;
  Clock::duration expected = StallGuard::kFirstBackoff;
  for (int k = 0; k < 12; ++k) {
    t += expected;  // the back-off just ran out; the next parallel region stalls at once
    guard.record(50us, 3ms, t);
    expected = std::min<Clock::duration>(2 * expected, StallGuard::kMostBackoff);
    EXPECT_TRUE(guard.runs_alone(t + expected - 1us)) << k;
    EXPECT_FALSE(guard.runs_alone(t + expected)) << k;
  }
  EXPECT_EQ(expected, StallGuard::kMostBackoff);
  // A stall four back-offs after the last is after a calm spell: it starts again from kFirstBackoff.
  t += 4 * StallGuard::kMostBackoff;
  guard.record(50us, 3ms, t);
  EXPECT_TRUE(guard.runs_alone(t + StallGuard::kFirstBackoff - 1us));
  EXPECT_FALSE(guard.runs_alone(t + StallGuard::kFirstBackoff));
}

TEST(ThreadPool, AWorkerHeldUpMidTaskLeavesTheNextRegionsToTheCaller) {
  // The worker sleeps in the middle of its task (as when taken off its core) while the caller has
  // finished its own: one stall. A region right after runs every task on the caller, prepared once,
  // and counts as a region; its tasks last long enough that the worker, spinning after its sleep,
  // would otherwise take those of its block.
  using Clock = StallGuard::Clock;
  ThreadPool pool(2);
  std::atomic<bool> worker_started{false};
  std::atomic<Clock::rep> woke{0};  // when the worker's sleep ended
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  pool.parallel_tasks(2, [&](int64_t, int thread) {
    if (thread == 1) {
      worker_started = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      woke = Clock::now().time_since_epoch().count();
    } else {
      while (!worker_started && Clock::now() < deadline) std::this_thread::yield();
    }
  });
  if (!worker_started) GTEST_SKIP() << "the worker never started a task within 10 s";
  EXPECT_EQ(pool.stalls(), 1u);
  const uint64_t regions = pool.regions();
  std::vector<int> threads_seen(6, -1);
  int prepared = 0;
  pool.parallel_tasks_prepared(
      6, [&](int) { ++prepared; },
      [&](int64_t i, int thread) {
        threads_seen[static_cast<size_t>(i)] = thread;
        const auto until = Clock::now() + std::chrono::microseconds(200);
        while (Clock::now() < until) {
        }
      });
  EXPECT_EQ(pool.regions(), regions + 1);
  // The back-off runs from the end of the stalled region, after the worker woke.
  if (Clock::now() - Clock::time_point(Clock::duration(woke.load())) >= StallGuard::kFirstBackoff)
    GTEST_SKIP() << "the next region may have started after the back-off";
  EXPECT_EQ(threads_seen, std::vector<int>(6, 0));
  EXPECT_EQ(prepared, 1);
}

TEST(SvgPlot, HistogramCountsEveryValueInRangeOnce) {
  Histogram h = make_histogram({-1.0f, -0.5f, 0.0f, 0.49f, 1.0f, 2.0f, std::nanf("")}, -1.0, 1.0, 4);
  EXPECT_EQ(h.counts, (std::vector<int64_t>{1, 1, 2, 1}))
      << "the top edge falls in the last bin; out of range and NaN are left out";
  std::string svg = svg_weight_sharing_plot("t", &h, {-0.5f, 0.5f}, {3, 4});
  EXPECT_NE(svg.find("source model"), std::string::npos);
  EXPECT_EQ(svg.find("<svg"), 0u);
  EXPECT_NE(svg.rfind("</svg>"), std::string::npos);
  EXPECT_EQ(svg_weight_sharing_plot("t", nullptr, {}, {}).find("source model"), std::string::npos);
}

TEST(SvgPlot, RoundTicksStepByOneTwoOrFiveAndCoverTheRange) {
  EXPECT_EQ(round_ticks(0, 107), (std::vector<double>{0, 50, 100, 150}));
  EXPECT_EQ(round_ticks(0, 100), (std::vector<double>{0, 20, 40, 60, 80, 100}));
  EXPECT_EQ(round_ticks(0, 99.2), (std::vector<double>{0, 20, 40, 60, 80, 100}));
  EXPECT_EQ(round_ticks(0, 4, 4), (std::vector<double>{0, 1, 2, 3, 4}));
  std::vector<double> t = round_ticks(-0.37, 0.41, 6);
  ASSERT_GE(t.size(), 2u);
  EXPECT_LE(t.front(), -0.37);
  EXPECT_GE(t.back(), 0.41);
  EXPECT_NEAR(t[1] - t[0], 0.2, 1e-12);
  t = round_ticks(5, 5);
  ASSERT_GE(t.size(), 2u) << "an empty range still gets an axis";
  EXPECT_LE(t.front(), 5);
  EXPECT_GT(t.back(), 5);
}

// The right-aligned texts of a plot, in order: the y tick labels, then any reference line's label.
std::vector<std::string> y_tick_labels(const std::string& svg) {
  std::vector<std::string> labels;
  for (size_t at = svg.find("text-anchor=\"end\">"); at != std::string::npos;
       at = svg.find("text-anchor=\"end\">", at + 1)) {
    size_t begin = svg.find('>', at) + 1;
    labels.push_back(svg.substr(begin, svg.find('<', begin) - begin));
  }
  return labels;
}

TEST(SvgPlot, AccuracyAxisEndsAtARoundTickAndShowsTheReferenceLine) {
  std::string svg =
      svg_line_plot("t", "sparsity (%)", "accuracy (%)", {0, 50, 90}, {{"fc1", {99.2, 98.0, 60.0}}}, false,
                    false, {{98.7, "allowed: -0.5 points"}});
  EXPECT_EQ(y_tick_labels(svg),
            (std::vector<std::string>{"0", "20", "40", "60", "80", "100", "allowed: -0.5 points"}))
      << "the ticks, then the reference line's label (right-aligned inside the plot)";
  EXPECT_NE(svg.find("allowed: -0.5 points"), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray=\"6,4\""), std::string::npos);
}

TEST(SvgPlot, ManySharedValuesBecomeARugInsteadOfDashedLines) {
  Histogram h = make_histogram({-1.0f, 0.0f, 1.0f}, -1.0, 1.0, 8);
  std::vector<float> few(16), many(255);
  for (size_t i = 0; i < few.size(); ++i) few[i] = -1.0f + 2.0f * i / few.size();
  for (size_t i = 0; i < many.size(); ++i) many[i] = -1.0f + 2.0f * i / many.size();
  auto count = [](const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
  };
  std::string dashed = svg_weight_sharing_plot("t", &h, few, std::vector<int64_t>(few.size(), 1));
  std::string rug = svg_weight_sharing_plot("t", &h, many, std::vector<int64_t>(many.size(), 1));
  EXPECT_EQ(count(dashed, "stroke-dasharray=\"3,3\""), few.size());
  EXPECT_EQ(count(rug, "stroke-dasharray"), 0u);
  EXPECT_NE(rug.find("ticks below the axis"), std::string::npos);
  for (const auto& label : y_tick_labels(rug)) EXPECT_EQ(label.find('.'), std::string::npos) << label;
}

TEST(SvgPlot, LinePlotCsvHoldsThePlottedNumbersAndQuotesNames) {
  EXPECT_EQ(line_plot_csv("sparsity (%)", {0, 50}, {{"fc1", {99.5, 98}}, {"a,\"b\"", {97, 1.25}}}),
            "sparsity (%),fc1,\"a,\"\"b\"\"\"\n0,99.5,97\n50,98,1.25\n");
  EXPECT_EQ(line_plot_csv("x", {1, 2}, {{"short", {3}}}), "x,short\n1,3\n2,\n")
      << "missing points stay empty";
  EXPECT_EQ(csv_beside("out/plot.svg"), "out/plot.csv");
  EXPECT_EQ(csv_beside("out/plot"), "out/plot.csv");
  EXPECT_EQ(csv_beside(".svg"), ".svg.csv");
}

TEST(Half, ConvertsSpecialAndOrdinaryValues) {
  EXPECT_EQ(half_to_float(0x3C00), 1.0f);
  EXPECT_EQ(half_to_float(0xC000), -2.0f);
  EXPECT_EQ(half_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(half_to_float(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(half_to_float(0x8000), -0.0f);
  EXPECT_TRUE(std::isinf(half_to_float(0x7C00)));
  EXPECT_TRUE(std::isnan(half_to_float(0x7E00)));
  EXPECT_EQ(half_to_float(0x3555), 0.333251953125f);
}

TEST(File, AtomicWritesReplaceRegularFilesAndCleanUpAfterKilledWriters) {
  namespace fs = std::filesystem;
  const std::string dir = test::temp_dir("atomic");
  const std::string out = dir + "/out.bin";
  // Temporaries of a writer that was killed (no process has that id) five minutes ago and just now,
  // one of a live process (this one's parent), and an unrelated file.
  const std::string stale = out + ".tmp.999999999", live = out + fmt::format(".tmp.{}", ::getppid());
  const std::string fresh = out + ".tmp.999999998";  // dead writer, but written just now: kept
  for (const auto& p : {stale, fresh, live, dir + "/other.tmp.1"}) {
    std::ofstream(p) << "x";
    if (p != fresh) fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::minutes(5));
  }
  ASSERT_NE(::kill(999999999, 0), 0);
  ASSERT_TRUE(write_file_atomic(out, "new").ok());
  std::ifstream in(out);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "new");
  EXPECT_FALSE(fs::exists(stale)) << "the killed writer's temporary is removed";
  EXPECT_TRUE(fs::exists(live)) << "a running writer's temporary is left alone";
  EXPECT_TRUE(fs::exists(fresh)) << "a temporary under a minute old is left alone";
  EXPECT_TRUE(fs::exists(dir + "/other.tmp.1"));
  EXPECT_FALSE(fs::exists(out + fmt::format(".tmp.{}", ::getpid()))) << "no temporary of ours remains";
  // Inputs, once protected, are never replaced; neither is a directory.
  protect_inputs(true);
  ASSERT_TRUE(read_file(out).ok());
  auto refused = write_file_atomic(dir + "/./out.bin", "overwrite");
  protect_inputs(false);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("is an input of this command"), std::string::npos) << refused.message();
  EXPECT_TRUE(write_file_atomic(out, "again").ok()) << "protection off: a library call may replace it";
  EXPECT_FALSE(write_file_atomic(dir, "x").ok());
}

TEST(File, TheInputBudgetBoundsFilesAndDeclaredData) {
  const std::string dir = test::temp_dir("input_budget");
  std::ofstream(dir + "/big.bin") << std::string(2048, 'x');
  ASSERT_TRUE(write_idx_u8(dir + "/images.idx.gz", {4, 16, 16}, std::vector<uint8_t>(1024, 1)).ok());
  const int64_t saved = input_byte_limit();
  set_input_byte_limit(1024);
  auto big = read_file(dir + "/big.bin");
  auto images = read_idx(dir + "/images.idx.gz");  // 1024 bytes of data, 4096 as floats
  set_input_byte_limit(saved);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("--max-input"), std::string::npos) << big.status().message();
  ASSERT_FALSE(images.ok());
  EXPECT_NE(images.status().message().find("input limit"), std::string::npos) << images.status().message();
  EXPECT_TRUE(read_file(dir + "/big.bin").ok());
  EXPECT_TRUE(read_idx(dir + "/images.idx.gz").ok());
}

TEST(File, OutputSetsAreWrittenAllOrNothing) {
  namespace fs = std::filesystem;
  const std::string dir = test::temp_dir("output_set");
  auto text = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::ofstream(dir + "/a.txt") << "old a";
  fs::create_directory(dir + "/b.txt");  // the second output cannot be written
  {
    OutputSet files;
    ASSERT_TRUE(files.add(dir + "/a.txt", "new a").ok());
    EXPECT_FALSE(files.add(dir + "/b.txt", "new b").ok());
    EXPECT_FALSE(files.add(dir + "/./a.txt", "twice").ok()) << "one path named twice";
  }  // dropped without commit_all: nothing replaced, no temporary left
  EXPECT_EQ(text(dir + "/a.txt"), "old a");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 2) << "a.txt and the b.txt folder only";

  OutputSet files;
  ASSERT_TRUE(files.add(dir + "/a.txt", "new a").ok());
  ASSERT_TRUE(files.add(dir + "/c.txt", "new c").ok());
  EXPECT_EQ(text(dir + "/a.txt"), "old a") << "nothing is replaced before commit_all";
  ASSERT_TRUE(files.commit_all().ok());
  EXPECT_EQ(text(dir + "/a.txt"), "new a");
  EXPECT_EQ(text(dir + "/c.txt"), "new c");
}

// A streamed output replaces its path only when committed; dropped before, it leaves the old file
// and no temporary; a path that is not a regular file is refused at open.
TEST(File, StreamedOutputsReplaceTheirPathOnlyWhenCommitted) {
  namespace fs = std::filesystem;
  const std::string dir = test::temp_dir("streamed_output");
  auto text = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::ofstream(dir + "/a.bin") << "old";
  {
    StreamedOutput out;
    ASSERT_TRUE(out.open(dir + "/a.bin").ok());
    ASSERT_TRUE(out.append("part one, ").ok());
    ASSERT_TRUE(out.append("part two").ok());
    EXPECT_EQ(text(dir + "/a.bin"), "old");
  }
  EXPECT_EQ(text(dir + "/a.bin"), "old");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 1) << "no temporary left";
  StreamedOutput out;
  ASSERT_TRUE(out.open(dir + "/a.bin").ok());
  ASSERT_TRUE(out.append("part one, ").ok());
  ASSERT_TRUE(out.append("part two").ok());
  ASSERT_TRUE(out.commit().ok());
  EXPECT_EQ(text(dir + "/a.bin"), "part one, part two");
  EXPECT_FALSE(out.append("more").ok()) << "committed";
  EXPECT_FALSE(out.open(dir + "/b.bin").ok()) << "one open per writer";
  fs::create_directory(dir + "/folder");
  StreamedOutput refused;
  EXPECT_FALSE(refused.open(dir + "/folder").ok());
}

}  // namespace
}  // namespace sparrow

namespace sparrow {
namespace {

TEST(Finite, OnePolicyForNaNInfinityAndFloatRange) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> clean = {0.0f, -1.5f, 3e38f}, nan_at_2 = {1.0f, 2.0f, NAN, inf};
  EXPECT_EQ(first_nonfinite(clean), -1);
  EXPECT_EQ(first_nonfinite(nan_at_2), 2);
  EXPECT_EQ(first_nonfinite(std::vector<float>{-inf}), 0);
  EXPECT_EQ(first_nonfinite(std::span<const float>{}), -1);
  EXPECT_TRUE(finite_float(3.4e38));
  EXPECT_FALSE(finite_float(1e39)) << "finite as a double, not as a float";
  EXPECT_FALSE(finite_float(-1e39));
  EXPECT_FALSE(finite_float(std::nan("")));
  EXPECT_TRUE(require_finite(clean, "w").ok());
  Status s = require_finite(nan_at_2, "layer 'fc' (weight 'w')", "; did training diverge?");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "layer 'fc' (weight 'w'): element 2 is nan; did training diverge?");
}

}  // namespace
}  // namespace sparrow

namespace sparrow {
namespace {

TEST(Machine, DescribesTheCpuFromCpuinfo) {
  const std::string cpuinfo =
      "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
      "model name\t: AMD EPYC 9R45  \nflags\t\t: fpu avx512f\n\nprocessor\t: 1\nmodel name\t: other\n";
  EXPECT_EQ(machine_description(cpuinfo, 2, 1L << 20),
            "AMD EPYC 9R45 (family 26, model 2), 2 hardware threads, L2 1 MiB");
  EXPECT_EQ(machine_description(cpuinfo, 1, 2L << 20),
            "AMD EPYC 9R45 (family 26, model 2), 1 hardware thread, L2 2 MiB");
  EXPECT_EQ(machine_description("model name : Xeon\n", 4, 1280L << 10),
            "Xeon, 4 hardware threads, L2 1280 KiB");
  EXPECT_EQ(machine_description("", 8, 0), "unknown CPU, 8 hardware threads");
  EXPECT_NE(machine_description().find("hardware thread"), std::string::npos);
}

// MemAvailable: more than nothing, no more than the machine's memory.
TEST(Machine, AvailableMemoryIsWithinThePhysicalMemory) {
  const int64_t physical = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  EXPECT_GT(available_memory_bytes(), 0);
  EXPECT_LE(available_memory_bytes(), physical);
}

}  // namespace
}  // namespace sparrow
