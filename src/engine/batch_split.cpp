#include "engine/batch_split.h"

#include "core/machine.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "engine/ops/sparse_ops.h"
#include "engine/plan.h"

namespace sparrow {

namespace {

// An axis attribute normalized to [0, rank), or -1 when it is missing and has no default, or is out
// of range.
int64_t axis_attr(const Node& node, int64_t fallback, size_t rank) {
  auto axis = node.attr_int("axis", fallback);
  if (!axis.ok()) return -1;
  int64_t a = *axis < 0 ? *axis + static_cast<int64_t>(rank) : *axis;
  return a >= 0 && a < static_cast<int64_t>(rank) ? a : -1;
}

size_t output_rank(const PlannedNode& n) {
  return n.out.empty() ? 0 : n.out[0].shape.size();
}

bool present_constant(const PlannedNode& n, size_t k) {
  return k < n.in.size() && n.in[k].present && !n.per_run[k];
}

// Operators that compute every element from the same sample's elements, whatever their attributes,
// given constant weights, statistics or bounds (inputs 1 and later).
bool per_sample_data(const PlannedNode& n) {
  for (size_t k = 1; k < n.in.size(); ++k)
    if (n.per_run[k]) return false;
  return true;
}

// A convolution: constant weights and bias; a residual a pass fused into it (FusedResidual) is an
// Add's operand, held to the elementwise rule below (and input 0 has the output's rank, so the
// residual cannot broadcast the samples into another axis).
bool conv(const PlannedNode& n) {
  const size_t rank = output_rank(n);
  for (size_t k = 1; k < n.in.size(); ++k) {
    if (k == kFusedResidualInput && n.in[k].present) {
      const Shape& s = n.in[k].shape;
      if (n.in[0].shape.size() != rank) return false;
      if (n.per_run[k] ? s.size() != rank : s.size() == rank && s[0] != 1) return false;
      continue;
    }
    if (n.per_run[k]) return false;
  }
  return true;
}

// Broadcasting operators: per-run operands line up with the output along axis 0, and constants
// broadcast the same values to every sample.
bool elementwise(const PlannedNode& n) {
  const size_t rank = output_rank(n);
  for (size_t k = 0; k < n.in.size(); ++k) {
    if (!n.in[k].present) continue;
    const Shape& s = n.in[k].shape;
    if (n.per_run[k] ? s.size() != rank : s.size() == rank && s[0] != 1) return false;
  }
  return true;
}

// Y = A * B + C with A's rows the samples: B and C constant, C the same for every row.
bool gemm(const PlannedNode& n) {
  auto trans_a = n.node.attr_int("transA", 0);
  if (!trans_a.ok() || *trans_a != 0 || !n.per_run[0]) return false;
  if (n.in.size() > 1 && !present_constant(n, 1)) return false;
  return n.in.size() < 3 || !n.in[2].present ||
         (present_constant(n, 2) && (n.in[2].shape.size() < 2 || n.in[2].shape[0] == 1));
}

// A (per-run, samples along axis 0, rank >= 2) times a constant matrix, plus a constant bias row.
bool matmul_by_constant(const PlannedNode& n) {
  if (!n.per_run[0] || n.in[0].shape.size() < 2 || !present_constant(n, 1) || n.in[1].shape.size() != 2)
    return false;
  return n.in.size() < 3 || !n.in[2].present || (present_constant(n, 2) && n.in[2].shape.size() == 1);
}

// Flatten's axis lies in [-rank, rank]; 0 (or -rank) would fold the samples into one row.
bool flatten(const PlannedNode& n) {
  if (n.in.size() != 1) return false;
  const auto rank = static_cast<int64_t>(n.in[0].shape.size());
  auto axis = n.node.attr_int("axis", 1);
  if (!axis.ok()) return false;
  const int64_t a = *axis < 0 ? *axis + rank : *axis;
  return a >= 1 && a <= rank;
}

// The target shape keeps axis 0 as it is: 0 (copy), -1 (inferred; the output's axis 0 is checked
// against the batch), or the batch computed from the graph's shapes (never a literal of the file).
bool reshape(const PlannedNode& n, int64_t batch) {
  if (n.in.size() < 2 || !present_constant(n, 1) || n.in[1].constant == nullptr) return false;
  const Tensor& shape = *n.in[1].constant;
  if (shape.dtype() != DType::i64 || shape.numel() < 1) return false;
  const int64_t first = shape.i64_data()[0];
  return first == 0 || first == -1 || (first == batch && n.from_batch[1]);
}

// Joined away from axis 0, from per-run inputs only (a constant would give every chunk its rows).
bool concat(const PlannedNode& n) {
  for (size_t k = 0; k < n.in.size(); ++k)
    if (!n.per_run[k]) return false;
  return axis_attr(n.node, -1, output_rank(n)) >= 1;
}

bool softmax(const PlannedNode& n) {
  const int64_t fallback = n.model.opset < 13 ? 1 : -1;
  return n.in.size() == 1 && axis_attr(n.node, fallback, output_rank(n)) >= 1;
}

using Rule = bool (*)(const PlannedNode&);

const std::map<std::string, Rule>& rules() {
  static const std::map<std::string, Rule> table = {
      {"Conv", conv},
      {"MaxPool", per_sample_data},
      {"AveragePool", per_sample_data},
      {"GlobalAveragePool", per_sample_data},
      {"GlobalMaxPool", per_sample_data},
      {"BatchNormalization", per_sample_data},
      {"Relu", per_sample_data},
      {"LeakyRelu", per_sample_data},
      {"Sigmoid", per_sample_data},
      {"Tanh", per_sample_data},
      {"Exp", per_sample_data},
      {"Log", per_sample_data},
      {"Sqrt", per_sample_data},
      {"Neg", per_sample_data},
      {"Abs", per_sample_data},
      {"Clip", per_sample_data},
      {"Cast", per_sample_data},
      {"Identity", per_sample_data},
      {"Dropout", per_sample_data},
      {"Add", elementwise},
      {"Sub", elementwise},
      {"Mul", elementwise},
      {"Div", elementwise},
      {"Pow", elementwise},
      {"Max", elementwise},
      {"Min", elementwise},
      {"Gemm", gemm},
      {"MatMul", matmul_by_constant},
      {"Flatten", flatten},
      {"Concat", concat},
      {"Softmax", softmax},
      {"LogSoftmax", softmax},
  };
  return table;
}

bool leads_with(const Shape& s, int64_t batch) {
  return !s.empty() && s[0] == batch;
}

}  // namespace

bool computes_per_sample(const PlannedNode& n, int64_t batch) {
  if (!n.node.domain.empty()) return false;
  if (std::count_if(n.node.outputs.begin(), n.node.outputs.end(), [](const auto& o) { return !o.empty(); }) >
      1)
    return false;
  for (size_t k = 0; k < n.in.size(); ++k)
    if (n.from_batch[k] && !(n.node.op_type == "Reshape" && k == 1)) return false;
  for (size_t k = 0; k < n.in.size(); ++k)
    if (n.per_run[k] && !leads_with(n.in[k].shape, batch)) return false;
  for (const ValueDesc& out : n.out)
    if (!leads_with(out.shape, batch)) return false;
  if (n.node.op_type == "Reshape") return reshape(n, batch);
  auto it = rules().find(n.node.op_type);
  return it != rules().end() && it->second(n);
}

int64_t samples_per_chunk(int64_t batch, int64_t bytes_per_sample, int64_t cache_bytes) {
  const int64_t fit = bytes_per_sample > 0 ? cache_bytes / bytes_per_sample : batch;
  for (int64_t c = std::min(batch, fit); c > 1; --c)
    if (batch % c == 0) return c;
  return 1;
}

int64_t samples_for_small_planes(int64_t batch, int threads, int64_t plane) {
  if (plane <= 0 || plane > kSmallConvPlane) return 1;
  const int64_t wanted = std::min((kConvGatherBelowPositions + plane - 1) / plane,
                                  std::max<int64_t>(1, batch / std::max(threads, 1)));
  for (int64_t c = wanted; c < batch; ++c)
    if (batch % c == 0) return c;
  return batch;
}

int64_t samples_per_thread(int64_t batch, int threads) {
  threads = std::max(threads, 1);
  for (int64_t c = batch / threads; c > 0; --c)
    if (batch % c == 0 && (batch / c) % threads == 0) return c;
  return batch;
}

bool chunks_gain(int64_t batch, int64_t activation_bytes_per_sample, int64_t constant_bytes) {
  return constant_bytes <= batch * activation_bytes_per_sample;
}

int64_t chunk_cache_bytes() {
  return l2_cache_bytes();
}

namespace {

std::vector<Shape> with_batch(std::vector<Shape> shapes, int64_t batch) {
  for (auto& s : shapes) s[0] = batch;
  return shapes;
}

// Axis 0 of every input, when all inputs have one of the same length; else 0.
int64_t common_batch(const std::vector<Shape>& shapes) {
  int64_t batch = 0;
  for (const auto& s : shapes) {
    if (s.empty() || (batch != 0 && s[0] != batch)) return 0;
    batch = s[0];
  }
  return batch;
}

}  // namespace

BatchSplit::~BatchSplit() = default;

bool BatchSplit::choose_chunk(int64_t batch, int threads, int64_t samples, const PlanBuilder& build_plan) {
  // A plan of two samples checks the graph (one sample cannot tell the batch axis from a dim of 1)
  // and tells the activation bytes per sample.
  auto probe = build_plan(with_batch(input_shapes_, 2), *worker_pools_[0]);
  if (!probe.ok() || !(*probe)->samples_independent()) return false;
  if (samples > 0) {
    chunk_ = sparrow::samples_per_chunk(batch, 1, samples);
  } else {
    const int64_t per_sample = (*probe)->arena_bytes() / 2;
    const int64_t by_cache = sparrow::samples_per_chunk(batch, per_sample, chunk_cache_bytes()),
                  by_planes = samples_for_small_planes(batch, threads, (*probe)->smallest_conv_plane());
    chunk_ = std::max(by_cache, by_planes);
    if (by_cache == batch && by_planes < batch)
      chunk_ = std::max(samples_per_thread(batch, threads), by_planes);
    if (batch / chunk_ < threads) return false;  // some threads would sit idle
    if (!chunks_gain(batch, per_sample, (*probe)->constant_bytes())) return false;
  }
  if (chunk_ == batch) return false;
  if (chunk_ == 2) {
    plans_.push_back(std::move(*probe));
    return true;
  }
  auto plan = build_plan(with_batch(input_shapes_, chunk_), *worker_pools_[0]);
  if (!plan.ok()) return false;
  plans_.push_back(std::move(*plan));
  return true;
}

std::unique_ptr<BatchSplit> BatchSplit::build(const std::vector<Shape>& input_shapes, int threads,
                                              int64_t samples, const PlanBuilder& build_plan) {
  const int64_t batch = common_batch(input_shapes);
  if (batch < 2) return nullptr;
  auto split = std::unique_ptr<BatchSplit>(new BatchSplit());
  split->input_shapes_ = input_shapes;
  split->worker_pools_.push_back(std::make_unique<ThreadPool>(1));
  if (!split->choose_chunk(batch, threads, samples, build_plan)) return nullptr;
  split->chunks_ = batch / split->chunk_;
  const auto workers = static_cast<size_t>(std::min<int64_t>(std::max(threads, 1), split->chunks_));
  const auto chunk_shapes = with_batch(input_shapes, split->chunk_);
  while (split->plans_.size() < workers) {
    split->worker_pools_.push_back(std::make_unique<ThreadPool>(1));
    auto plan = build_plan(chunk_shapes, *split->worker_pools_.back());
    if (!plan.ok()) return nullptr;
    split->plans_.push_back(std::move(*plan));
  }
  for (const Tensor* out : split->plans_[0]->outputs()) {
    Shape shape = out->shape();
    shape[0] = batch;
    split->outputs_.emplace_back(out->dtype(), shape);
  }
  for (const Tensor& out : split->outputs_) split->output_views_.push_back(&out);
  return split;
}

Status BatchSplit::run_chunk(int64_t chunk, size_t worker, std::span<const Tensor> inputs) {
  Plan& plan = *plans_[worker];
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor* in = plan.input_tensors()[k];
    const auto* from = static_cast<const std::byte*>(inputs[k].raw());
    std::memcpy(in->raw(), from + static_cast<size_t>(chunk) * in->bytes(), in->bytes());
  }
  SP_RETURN_IF_ERROR(plan.run_steps(*worker_pools_[worker]));
  for (size_t o = 0; o < outputs_.size(); ++o) {
    const Tensor* part = plan.outputs()[o];
    auto* to = static_cast<std::byte*>(outputs_[o].raw());
    std::memcpy(to + static_cast<size_t>(chunk) * part->bytes(), part->raw(), part->bytes());
  }
  return {};
}

Status BatchSplit::run(std::span<const Tensor> inputs, ThreadPool& pool) {
  const size_t workers = plans_.size();
  std::vector<Status>& status = worker_status_;
  status.assign(workers, Status{});
  if (workers == static_cast<size_t>(pool.size())) {
    // Every thread has a plan: chunks are claimed one at a time, so a slower thread runs fewer.
    pool.parallel_tasks(chunks_, [&](int64_t c, int thread) {
      const auto worker = static_cast<size_t>(thread);
      if (status[worker].ok()) status[worker] = run_chunk(c, worker, inputs);
    });
  } else {
    pool.parallel_for(static_cast<int64_t>(workers), [&](int64_t w) {
      const auto worker = static_cast<size_t>(w);
      for (int64_t c = w; c < chunks_ && status[worker].ok(); c += static_cast<int64_t>(workers))
        status[worker] = run_chunk(c, worker, inputs);
    });
  }
  for (const Status& s : status) SP_RETURN_IF_ERROR(s);
  ++runs_;
  return {};
}

ModelSummary BatchSplit::summary(const Model& model) const {
  ModelSummary s = plans_[0]->summary(model);
  s.input_shapes = input_shapes_;
  s.output_shapes.clear();
  for (const Tensor& out : outputs_) s.output_shapes.push_back(out.shape());
  s.macs *= chunks_;
  s.activation_bytes = 0;
  s.activation_bytes_unshared = 0;
  for (auto& plan : plans_) {
    s.activation_bytes += plan->arena_bytes();
    s.activation_bytes_unshared += plan->value_bytes();
  }
  for (auto& layer : s.layers) {
    layer.macs *= chunks_;
    for (auto& shape : layer.output_shapes) shape[0] *= chunks_;
    layer.seconds_per_run = 0;
  }
  // Each layer's time per run of the whole batch: its time over every worker's chunks.
  for (auto& plan : plans_) {
    ModelSummary part = plan->summary(model);
    for (size_t i = 0; i < s.layers.size() && runs_ > 0; ++i)
      s.layers[i].seconds_per_run += part.layers[i].seconds_per_run *
                                     static_cast<double>(part.profiled_runs) / static_cast<double>(runs_);
  }
  s.profiled_runs = s.profiled_runs > 0 ? runs_ : 0;
  s.samples_per_chunk = chunk_;
  s.one_thread = plans_.size() == 1 && s.one_thread;  // chunks on several workers: every thread ran
  return s;
}

void BatchSplit::set_profiling(bool profile) {
  for (auto& plan : plans_) plan->set_profiling(profile);
  runs_ = 0;
}

}  // namespace sparrow
