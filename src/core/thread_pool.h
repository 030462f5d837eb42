// A fixed pool of worker threads for data-parallel loops.
// parallel_for blocks until every task has run; the calling thread works too, so a pool of
// size 1 runs everything inline. No allocation happens per call.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace sparrow {

// Whether a pool's next parallel region runs on the calling thread alone. A region in which the
// caller, done with its own tasks (at least one), waited for the workers longer than twice its own
// work plus kStallSlack is a stall: a worker taken off its core in the middle of a task, as when
// another process shares the core, holds the caller for the rest of that process's time slice
// (milliseconds). After a stall, regions run on the caller alone for a back-off time,
// kFirstBackoff, doubled (up to kMostBackoff) for a stall that comes within four back-off times of
// the last one, and back to kFirstBackoff after a calm spell. A worker that is merely slower waits
// the caller at most about one of its tasks; a region whose tasks are so uneven that the worker's
// one task outlasts twice the caller's work by kStallSlack counts as a stall too (the engine cuts
// its regions into tasks of about equal work).
class StallGuard {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kStallSlack = std::chrono::microseconds(500);
  static constexpr Clock::duration kFirstBackoff = std::chrono::milliseconds(10);
  static constexpr Clock::duration kMostBackoff = std::chrono::seconds(1);

  bool runs_alone(Clock::time_point now) const { return now < alone_until_; }
  // A region whose caller worked `own` on its tasks and then waited `waited`, ending at `now`.
  void record(Clock::duration own, Clock::duration waited, Clock::time_point now) {
    if (waited <= 2 * own + kStallSlack) return;
    const bool recent = stalls() > 0 && now - last_stall_ < 4 * backoff_;
    backoff_ = recent ? std::min<Clock::duration>(2 * backoff_, kMostBackoff) : kFirstBackoff;
    last_stall_ = now;
    alone_until_ = now + backoff_;
    stalls_.store(stalls_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // Readable from any thread; record() and runs_alone() are the caller's only.
  uint64_t stalls() const { return stalls_.load(std::memory_order_relaxed); }

 private:
  Clock::time_point alone_until_{};
  Clock::time_point last_stall_{};
  Clock::duration backoff_ = kFirstBackoff;
  std::atomic<uint64_t> stalls_{0};
};

class ThreadPool {
 public:
  // `threads` is the total parallelism including the caller; values < 1 mean 1.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Parallel regions asked for so far: tasks handed to the workers too, or run by the caller alone
  // while StallGuard says so. Work that parallel_for runs inline (one thread or one task) and work
  // on a pool of one thread is none. Readable from any thread.
  uint64_t regions() const { return regions_.load(std::memory_order_relaxed); }
  // Regions after which the caller waited on a worker taken off its core (StallGuard).
  uint64_t stalls() const { return stall_guard_.stalls(); }

  // How long an idle worker (and the caller waiting for the last task) spins before sleeping: long
  // enough to bridge the gap between one layer's parallel region and the next, so that waking a
  // sleeping thread is not paid per layer (docs/engine.md, "Measurements behind the code").
  static constexpr std::chrono::microseconds kSpinTime{2000};

  // Calls fn(i) for every i in [0, count). fn must not throw. Not reentrant: fn must not
  // call parallel_for on the same pool.
  template <class F>
  void parallel_for(int64_t count, F&& fn) {
    if (count <= 0) return;
    if (count == 1 || workers_.empty()) {
      for (int64_t i = 0; i < count; ++i) fn(i);
      return;
    }
    auto trampoline = [](void* ctx, int64_t i, int) { (*static_cast<std::remove_reference_t<F>*>(ctx))(i); };
    run(count, trampoline, const_cast<void*>(static_cast<const void*>(&fn)), size());
  }

  // Calls fn(i, thread) for every i in [0, count), where thread in [0, size()) names the thread
  // running the task (0 = the caller). Tasks are claimed one at a time. Thread t first runs the
  // t-th of size() contiguous blocks of tasks, so consecutive calls with the same count give each
  // thread the same tasks as long as none is held up and the stall guard lets the workers run
  // (and the data they write stays in its caches); a thread done with its block claims the remaining tasks of
  // the others, so one slowed by something else on the machine simply runs fewer of them. Same rules as
  // parallel_for, which claims its tasks the same way.
  template <class F>
  void parallel_tasks(int64_t count, F&& fn) {
    tasks(count, fn, size());
  }

  // As parallel_tasks, but each thread calls prepare(thread) before the first task it runs in this
  // region, at most once per region (a thread that finds no task does not call it): for per-thread
  // copies of the region's shared input, made only by the threads that will read them. prepare
  // must not throw.
  template <class P, class F>
  void parallel_tasks_prepared(int64_t count, P&& prepare, F&& fn) {
    if (count <= 0) return;
    if (workers_.empty()) {
      prepare(0);
      for (int64_t i = 0; i < count; ++i) fn(i, 0);
      return;
    }
    struct Both {
      std::remove_reference_t<P>* prepare;
      std::remove_reference_t<F>* fn;
    } both{&prepare, &fn};
    auto trampoline = [](void* ctx, int64_t i, int thread) { (*static_cast<Both*>(ctx)->fn)(i, thread); };
    auto prepare_trampoline = [](void* ctx, int64_t, int thread) {
      (*static_cast<Both*>(ctx)->prepare)(thread);
    };
    run(count, trampoline, &both, size(), prepare_trampoline);
  }

  // As parallel_tasks, but every thread claims from one queue in index order: for work cut into
  // pieces that shrink towards the end (guided scheduling), where whoever is free takes the next.
  template <class F>
  void parallel_tasks_in_order(int64_t count, F&& fn) {
    tasks(count, fn, 1);
  }

  // Splits [0, n) into at most size() contiguous chunks of at least `min_chunk` elements and
  // calls fn(begin, end) for each.
  template <class F>
  void parallel_range(int64_t n, int64_t min_chunk, F&& fn) {
    if (n <= 0) return;
    int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(size(), n / std::max<int64_t>(1, min_chunk)));
    int64_t step = (n + chunks - 1) / chunks;
    parallel_for(chunks, [&](int64_t c) {
      int64_t begin = c * step;
      int64_t end = std::min(n, begin + step);
      if (begin < end) fn(begin, end);
    });
  }

 private:
  template <class F>
  void tasks(int64_t count, F& fn, int blocks) {
    if (count <= 0) return;
    if (workers_.empty()) {
      for (int64_t i = 0; i < count; ++i) fn(i, 0);
      return;
    }
    auto trampoline = [](void* ctx, int64_t i, int thread) { (*static_cast<F*>(ctx))(i, thread); };
    run(count, trampoline, const_cast<void*>(static_cast<const void*>(&fn)), blocks);
  }

  using Call = void (*)(void*, int64_t, int);
  // Runs tasks [0, count) cut into `blocks` blocks (size() or 1, see parallel_tasks_in_order);
  // `prepare` (or null) is called by each thread before its first task of the region.
  void run(int64_t count, Call call, void* ctx, int blocks, Call prepare = nullptr);
  void worker_loop(int thread);
  // Claims and runs tasks of the published generation until none are left, as `thread`; returns
  // how many it ran.
  int64_t work(int thread);

  // Each thread's block has a ticket: (generation << kIndexBits) | its next task index. Threads
  // claim a task with a CAS on the whole ticket, so a worker that wakes late can never claim a task
  // of a newer generation with an older one's function, and the caller never waits for workers
  // that found no task: a descheduled worker (common on shared virtual machines) costs nothing.
  static constexpr int kIndexBits = 40;
  static constexpr uint64_t kIndexMask = (uint64_t{1} << kIndexBits) - 1;
  struct alignas(64) Ticket {
    std::atomic<uint64_t> value{kIndexMask};  // no task to claim
  };
  // First task of block b of `blocks` (b = blocks: the end of the last block).
  static int64_t block_begin(int b, int64_t count, int blocks) { return count * b / blocks; }
  // Claims and runs the tasks left in block b, as `thread`; returns how many it ran.
  int64_t work_block(int b, int thread);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  uint64_t generation_ = 0;  // under mutex_
  bool stopping_ = false;    // under mutex_
  std::atomic<Call> call_{nullptr};
  std::atomic<Call> prepare_{nullptr};
  // generation_ of the fields above and below, whole (a ticket holds only its low bits).
  std::atomic<uint64_t> region_{0};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> count_{0};
  std::atomic<int> blocks_{1};
  std::vector<Ticket> tickets_;  // one per thread, written under mutex_ when a region opens
  // The generation whose prepare each thread last called, written only by that thread: a worker
  // still in one region's work() may claim the next region's tasks, so a flag per work() call would
  // not do.
  struct alignas(64) Prepared {
    uint64_t generation = 0;
  };
  std::vector<Prepared> prepared_;
  // Written by the caller only, on a line of their own (the workers write the atomics below).
  alignas(64) std::atomic<uint64_t> regions_{0};
  StallGuard stall_guard_;
  alignas(64) std::atomic<int64_t> finished_{0};  // tasks of the current generation completed
  std::atomic<uint64_t> published_{0};            // generation_, readable without the lock for spinning
};

}  // namespace sparrow
