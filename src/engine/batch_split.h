// Running a batch as chunks of samples.
//
// A batch of B samples can run as B/c chunks of c samples, each through a plan for the chunk's
// shapes: a chunk's values stay in cache where the whole batch's would not, and on several threads
// each thread runs whole chunks, so no layer waits for another thread. Only graphs that compute
// every sample on its own are split: computes_per_sample() is checked on every node as it is
// planned, and the outputs are the chunks' outputs laid end to end along axis 0.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "engine/op.h"
#include "sparrow/executor.h"

namespace sparrow {

class Plan;

// One node as planned: its inputs and outputs with their shapes. `per_run[k]` is false for inputs
// known at plan time (constants, compressed weights) and omitted ones; `from_batch[k]` marks inputs
// known at plan time that were computed from the shapes of per-run values (so from the batch size).
struct PlannedNode {
  const Model& model;
  const Node& node;
  std::span<const ValueDesc> in;
  const std::vector<bool>& per_run;
  const std::vector<bool>& from_batch;
  std::span<const ValueDesc> out;
};

// Whether the node computes each of the `batch` samples along axis 0 of its per-run inputs from that
// sample alone, and its outputs keep the samples along axis 0. False for operators the table does
// not know, for nodes with more than one output in use, and for nodes reading a value computed from
// the batch size (except a Reshape's target whose first entry is the batch). Plans of one sample
// cannot tell a batch axis from a dim of 1: check plans of 2 samples or more.
bool computes_per_sample(const PlannedNode& n, int64_t batch);

// The samples per chunk for a batch whose plan takes `bytes_per_sample` of activations per sample:
// the largest divisor of `batch` whose chunk's activations fit in `cache_bytes` (at least 1).
int64_t samples_per_chunk(int64_t batch, int64_t bytes_per_sample, int64_t cache_bytes);

// Output planes of at most this many positions (VGG-11's 4x4 and 2x2 on 32x32 inputs) fill less
// than one vector of the batched kernels per image.
inline constexpr int64_t kSmallConvPlane = 16;
// The fewest samples per chunk for a plan whose smallest convolution plane holds `plane` positions:
// where that plane is small, enough images for kConvGatherBelowPositions positions in one product,
// or the batch's share of one of `threads` threads if that is fewer; the smallest divisor of
// `batch` from there. 1 when the planes are large enough (or there is no convolution).
int64_t samples_for_small_planes(int64_t batch, int threads, int64_t plane);

// The samples per chunk when the whole batch fits in the cache: the largest divisor of `batch` that
// gives every one of `threads` threads the same number of chunks, so that each runs whole chunks
// instead of every layer waking the threads; `batch` itself (no split) for one thread or where no
// divisor shares the batch evenly (a batch smaller than the threads, 9 on 2).
int64_t samples_per_thread(int64_t batch, int threads);

// Whether running a batch as chunks can gain, by bytes moved: each chunk streams the plan's
// constants (float32 weights) again, the whole batch spills its activations out of the cache once.
// Chunks gain while the constants take no more than the whole batch's activations.
bool chunks_gain(int64_t batch, int64_t activation_bytes_per_sample, int64_t constant_bytes);

// Bytes of the cache a chunk's activations should fit in: the level-2 cache of one core.
int64_t chunk_cache_bytes();

class BatchSplit {
 public:
  // Builds a plan for `input_shapes` with its threads' pool.
  using PlanBuilder = std::function<Result<std::unique_ptr<Plan>>(const std::vector<Shape>&, ThreadPool&)>;

  // The split of a batch of `input_shapes` (axis 0 of every input) over `threads` threads, or
  // nullptr where the batch runs whole: the graph does not compute its samples independently, a plan
  // for a chunk cannot be built, or one chunk would hold the whole batch. `samples` > 0 asks for
  // chunks of at most that many samples (the batch's largest divisor up to it: a prime batch runs
  // one sample per chunk); 0 chooses them by chunk_cache_bytes() and splits only into at least
  // `threads` chunks. Whether the graph computes its samples independently is checked on a plan of
  // two samples.
  static std::unique_ptr<BatchSplit> build(const std::vector<Shape>& input_shapes, int threads,
                                           int64_t samples, const PlanBuilder& build_plan);
  ~BatchSplit();

  const std::vector<Shape>& input_shapes() const { return input_shapes_; }
  int64_t samples_per_chunk() const { return chunk_; }
  // Runs every chunk: one worker per thread of `pool`, each running its share of the chunks.
  Status run(std::span<const Tensor> inputs, ThreadPool& pool);
  // The whole batch's outputs after the last run.
  const std::vector<const Tensor*>& outputs() const { return output_views_; }
  // The chunk plan's layers, with their cost per run of the whole batch and their profiled time per
  // run summed over every worker's chunks (so over threads: it can exceed the run's wall time).
  ModelSummary summary(const Model& model) const;
  void set_profiling(bool profile);

 private:
  BatchSplit() = default;
  // Chooses chunk_ and leaves its first worker's plan in plans_; false where the batch runs whole.
  bool choose_chunk(int64_t batch, int threads, int64_t samples, const PlanBuilder& build_plan);
  Status run_chunk(int64_t chunk, size_t worker, std::span<const Tensor> inputs);

  std::vector<Shape> input_shapes_;
  int64_t chunk_ = 0, chunks_ = 0;
  std::vector<std::unique_ptr<ThreadPool>> worker_pools_;  // one thread each
  std::vector<std::unique_ptr<Plan>> plans_;               // one per worker, for one chunk's shapes
  std::vector<Tensor> outputs_;
  std::vector<const Tensor*> output_views_;
  std::vector<Status> worker_status_;  // per worker, of the last run
  int64_t runs_ = 0;
};

}  // namespace sparrow
