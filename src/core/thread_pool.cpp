#include "core/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPARROW_PAUSE() _mm_pause()
#else
#define SPARROW_PAUSE() ((void)0)
#endif

namespace sparrow {

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::drain() {
  int64_t i;
  while ((i = next_.fetch_add(1, std::memory_order_relaxed)) < count_) {
    call_(ctx_, i);
    finished_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int64_t count, Call call, void* ctx) {
  {
    std::lock_guard lock(mutex_);
    call_ = call;
    ctx_ = ctx;
    count_ = count;
    next_.store(0);
    finished_.store(0);
    active_workers_ = static_cast<int>(workers_.size());
    active_.store(active_workers_);
    ++generation_;
    published_.store(generation_, std::memory_order_release);
  }
  wake_.notify_all();
  drain();
  // Short spin before blocking: parallel regions of a few hundred microseconds are common.
  for (int spin = 0; spin < kSpinIterations && (finished_.load() != count_ || active_.load() != 0); ++spin)
    SPARROW_PAUSE();
  std::unique_lock lock(mutex_);
  // Wait until all tasks are finished and every worker has left this generation, so the
  // next call cannot race with a worker still reading call_/ctx_.
  done_.wait(lock, [&] { return finished_.load() == count_ && active_workers_ == 0; });
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little on the generation counter, then sleep until woken.
    for (int spin = 0; spin < kSpinIterations && published_.load(std::memory_order_acquire) == seen; ++spin)
      SPARROW_PAUSE();
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    drain();
    {
      std::lock_guard lock(mutex_);
      --active_workers_;
      active_.fetch_sub(1);
    }
    done_.notify_one();
  }
}

}  // namespace sparrow
