#include "core/thread_pool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPARROW_PAUSE() _mm_pause()
#else
#define SPARROW_PAUSE() ((void)0)
#endif

namespace sparrow {

namespace {

// Spins (pausing) until done() holds or kSpinTime has passed; returns done(). Timed rather than
// counted: one PAUSE lasts from a few to over a hundred cycles depending on the CPU.
template <class Done>
bool spin_until(Done done) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      SPARROW_PAUSE();
    }
    if (std::chrono::steady_clock::now() - start > ThreadPool::kSpinTime) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads)
    : tickets_(static_cast<size_t>(std::max(threads, 1))),
      prepared_(static_cast<size_t>(std::max(threads, 1))) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

int64_t ThreadPool::work_block(int b, int thread) {
  int64_t ran = 0;
  std::atomic<uint64_t>& ticket = tickets_[static_cast<size_t>(b)].value;
  for (;;) {
    uint64_t t = ticket.load(std::memory_order_acquire);
    auto index = static_cast<int64_t>(t & kIndexMask);
    // Acquire: a region's fields are stored after every ticket is closed, so a thread that sees a
    // newer region's fields with an older ticket value fails the CAS below.
    Call call = call_.load(std::memory_order_acquire);
    Call prepare = prepare_.load(std::memory_order_acquire);
    uint64_t region = region_.load(std::memory_order_acquire);
    void* ctx = ctx_.load(std::memory_order_acquire);
    int64_t count = count_.load(std::memory_order_acquire);
    int blocks = blocks_.load(std::memory_order_acquire);
    if (b >= blocks || index >= block_begin(b + 1, count, blocks)) return ran;
    // Succeeds only while the ticket is unchanged, so call/prepare/region/ctx/count are this
    // generation's.
    if (!ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) continue;
    uint64_t& prepared = prepared_[static_cast<size_t>(thread)].generation;
    if (prepare && prepared != region) {
      prepare(ctx, index, thread);
      prepared = region;
    }
    call(ctx, index, thread);
    ++ran;
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == count) {
      std::lock_guard lock(mutex_);
      done_.notify_one();
    }
  }
}

int64_t ThreadPool::work(int thread) {
  // Its own block first, then what the others have left.
  int64_t ran = 0;
  for (int k = 0; k < size(); ++k) ran += work_block((thread + k) % size(), thread);
  return ran;
}

void ThreadPool::run(int64_t count, Call call, void* ctx, int blocks, Call prepare) {
  regions_.store(regions_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  const auto start = StallGuard::Clock::now();
  if (stall_guard_.runs_alone(start)) {
    if (prepare) prepare(ctx, 0, 0);
    for (int64_t i = 0; i < count; ++i) call(ctx, i, 0);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    ++generation_;
    uint64_t gen = generation_ << kIndexBits;
    for (Ticket& t : tickets_) t.value.store(gen | kIndexMask, std::memory_order_release);  // close
    call_.store(call, std::memory_order_release);
    prepare_.store(prepare, std::memory_order_release);
    region_.store(generation_, std::memory_order_release);
    ctx_.store(ctx, std::memory_order_release);
    count_.store(count, std::memory_order_release);
    blocks_.store(blocks, std::memory_order_release);
    finished_.store(0, std::memory_order_relaxed);
    for (int b = 0; b < blocks; ++b)  // open each block at its first task; the others stay closed
      tickets_[static_cast<size_t>(b)].value.store(gen | static_cast<uint64_t>(block_begin(b, count, blocks)),
                                                   std::memory_order_release);
    published_.store(generation_, std::memory_order_release);
  }
  wake_.notify_all();
  const int64_t own_tasks = work(0);
  const auto own_done = StallGuard::Clock::now();
  // Short spin before blocking: parallel regions of a few hundred microseconds are common.
  if (!spin_until([&] { return finished_.load(std::memory_order_acquire) == count; })) {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return finished_.load(std::memory_order_acquire) == count; });
  }
  const auto end = StallGuard::Clock::now();
  if (own_tasks > 0) stall_guard_.record(own_done - start, end - own_done, end);
}

void ThreadPool::worker_loop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little on the generation counter, then sleep until woken.
    spin_until([&] { return published_.load(std::memory_order_acquire) != seen; });
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    work(thread);
  }
}

}  // namespace sparrow
