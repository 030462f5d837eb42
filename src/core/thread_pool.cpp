#include "core/thread_pool.h"

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
    ++generation_;
  }
  wake_.notify_all();
  drain();
  std::unique_lock lock(mutex_);
  // Wait until all tasks are finished and every worker has left this generation, so the
  // next call cannot race with a worker still reading call_/ctx_.
  done_.wait(lock, [&] { return finished_.load() == count_ && active_workers_ == 0; });
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
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
    }
    done_.notify_one();
  }
}

}  // namespace sparrow
