#include "sparrow/executor.h"

#include <thread>

#include "engine/batch_split.h"
#include "engine/blas.h"
#include "engine/graph_passes.h"
#include "engine/plan.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

namespace {
constexpr size_t kMaxCachedPlans = 4;
constexpr size_t kMaxCachedSplits = 4;
constexpr size_t kMaxRememberedWholeBatches = 16;

template <class Shapes>
bool same_shapes(const std::vector<Shape>& shapes, const Shapes& inputs) {
  if (shapes.size() != inputs.size()) return false;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (shapes[i] != inputs[i].shape()) return false;
  return true;
}
}  // namespace

struct Executor::Impl {
  explicit Impl(const ExecOptions& o) : options(o), pool(o.threads) {}
  ExecOptions options;
  ThreadPool pool;
  std::unique_ptr<WeightStore> weights;      // compressed weights (.spw models)
  std::vector<std::unique_ptr<Plan>> plans;  // most recently used last
  bool splits_batches = false;               // ExecOptions::samples_per_chunk applies
  std::vector<std::unique_ptr<BatchSplit>> splits;
  std::vector<std::vector<Shape>> whole_batches;  // input shapes found to run whole
  const BatchSplit* last_split = nullptr;         // when the last run was split
};

Executor::Executor(Model model, ExecOptions options)
    : model_(std::move(model)), impl_(std::make_unique<Impl>(options)) {
  const bool convolves = std::any_of(model_.nodes.begin(), model_.nodes.end(),
                                     [](const Node& n) { return n.op_type == "Conv"; });
  impl_->splits_batches =
      !options.keep_values && options.samples_per_chunk >= 0 && (options.samples_per_chunk > 0 || convolves);
}
Executor::~Executor() = default;

int Executor::threads() const {
  return impl_->pool.size();
}

uint64_t Executor::stalls() const {
  return impl_->pool.stalls();
}

namespace {

// Every operator and attribute can be run, and every input type is computed with.
Status check_model(const Model& model, const std::vector<std::string>& held_weights) {
  SP_RETURN_IF_ERROR(model.validate(held_weights).prefixed(model.source));
  for (const Node& node : model.nodes) {
    auto op = create_op(node, model.opset);
    if (!op.ok()) return op.status().prefixed(model.source);
  }
  for (const auto& in : model.inputs)
    if (!compute_dtype(in.elem_type))
      return errorf("{}: input '{}' has unsupported type {}", model.source, in.name,
                    elem_type_name(in.elem_type));
  return {};
}

ExecOptions resolved(ExecOptions options) {
  // The pool's workers spin between parallel regions, so more threads than hardware threads only
  // take turns on the cores: capped.
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (options.threads <= 0 || options.threads > hardware) options.threads = hardware;
  return options;
}

// Runs the graph passes unless every value is to stay readable.
void optimize(Model& model, const ExecOptions& options, const WeightStore* weights) {
  if (options.keep_values) return;
  run_graph_passes(model, [&](const std::string& name) -> std::optional<Shape> {
    if (auto it = model.initializers.find(name); it != model.initializers.end()) return it->second.shape();
    if (weights && weights->holds(name)) return weights->shape(name);
    return std::nullopt;
  });
}

}  // namespace

Result<std::unique_ptr<Executor>> Executor::create(Model model, ExecOptions options) {
  SP_RETURN_IF_ERROR(check_model(model, {}));
  optimize(model, options, nullptr);
  return std::unique_ptr<Executor>(new Executor(std::move(model), resolved(options)));
}

Result<std::unique_ptr<Executor>> Executor::create(SpwModel&& spw, ExecOptions options) {
  std::vector<int64_t> section_bytes;
  for (const auto& s : spw.storage) section_bytes.push_back(static_cast<int64_t>(s.section_bytes));
  auto weights = WeightStore::create(std::move(spw.tensors), section_bytes, sparse_kernels().isa,
                                     options.weight_memory_ratio, options.weight_memory_floor_bytes);
  if (!weights.ok()) return weights.status().prefixed(spw.graph.source);
  SP_RETURN_IF_ERROR(check_model(spw.graph, (*weights)->names()));
  optimize(spw.graph, options, weights->get());
  auto ex = std::unique_ptr<Executor>(new Executor(std::move(spw.graph), resolved(options)));
  ex->impl_->weights = std::move(*weights);
  return ex;
}

Result<std::unique_ptr<Executor>> Executor::create(const SpwModel& spw, ExecOptions options) {
  return create(SpwModel(spw), options);
}

WeightMemory Executor::weight_memory() const {
  WeightMemory m;
  if (impl_->weights) m = impl_->weights->memory();
  for (const auto& [name, t] : model_.initializers)
    if (t.dtype() == DType::f32) m.initializers += static_cast<int64_t>(t.bytes());
  return m;
}

Result<Plan*> Executor::plan_for(const std::vector<Shape>& input_shapes) {
  auto& plans = impl_->plans;
  for (size_t i = 0; i < plans.size(); ++i) {
    if (plans[i]->input_shapes() == input_shapes) {
      std::rotate(plans.begin() + static_cast<std::ptrdiff_t>(i),
                  plans.begin() + static_cast<std::ptrdiff_t>(i) + 1, plans.end());
      return plans.back().get();
    }
  }
  auto plan =
      Plan::build(model_, input_shapes, impl_->pool, impl_->options.memory_limit_bytes, impl_->weights.get(),
                  impl_->options.sparse, impl_->options.keep_values, impl_->options.one_thread_below_work);
  if (!plan.ok()) return plan.status().prefixed(model_.source);
  (*plan)->set_profiling(impl_->options.profile_layers);
  if (plans.size() == kMaxCachedPlans) plans.erase(plans.begin());
  plans.push_back(std::move(*plan));
  return plans.back().get();
}

Plan* Executor::find_plan(std::span<const Tensor> inputs) {
  auto& plans = impl_->plans;
  for (auto it = plans.rbegin(); it != plans.rend(); ++it) {
    const auto& shapes = (*it)->input_shapes();
    bool match = shapes.size() == inputs.size();
    for (size_t i = 0; match && i < inputs.size(); ++i) match = shapes[i] == inputs[i].shape();
    if (match) {
      std::rotate(it.base() - 1, it.base(), plans.end());
      return plans.back().get();
    }
  }
  return nullptr;
}

// Allocation-free once a plan for these input shapes exists.
Result<std::span<const Tensor* const>> Executor::run(std::span<const Tensor> inputs) {
  if (inputs.size() != model_.inputs.size())
    return errorf("{}: the model has {} inputs, {} were given", model_.source, model_.inputs.size(),
                  inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    DType want = *compute_dtype(model_.inputs[i].elem_type);
    if (inputs[i].dtype() != want)
      return errorf("{}: input {} expects {} data, got {}", model_.source, model_.inputs[i].describe(),
                    dtype_name(want), dtype_name(inputs[i].dtype()));
  }
  impl_->last_split = nullptr;
  BatchSplit* split = find_split(inputs);
  Plan* plan = split ? nullptr : find_plan(inputs);
  if (split == nullptr && plan == nullptr) {
    std::vector<Shape> shapes;
    for (const Tensor& t : inputs) shapes.push_back(t.shape());
    split = split_for(shapes);
    if (split == nullptr) {
      SP_ASSIGN_OR_RETURN(plan, plan_for(shapes));
    }
  }
  if (split) {
    auto status = split->run(inputs, impl_->pool);
    if (!status.ok()) return status.prefixed(model_.source);
    impl_->last_split = split;
    return std::span<const Tensor* const>(split->outputs());
  }
  auto status = plan->run(inputs, impl_->pool);
  if (!status.ok()) return status.prefixed(model_.source);
  return std::span<const Tensor* const>(plan->outputs());
}

BatchSplit* Executor::find_split(std::span<const Tensor> inputs) {
  auto& splits = impl_->splits;
  for (auto it = splits.begin(); it != splits.end(); ++it)
    if (same_shapes((*it)->input_shapes(), inputs)) {
      std::rotate(it, it + 1, splits.end());
      return splits.back().get();
    }
  return nullptr;
}

BatchSplit* Executor::split_for(const std::vector<Shape>& input_shapes) {
  if (!impl_->splits_batches) return nullptr;
  for (auto& split : impl_->splits)
    if (split->input_shapes() == input_shapes) return split.get();
  for (const auto& whole : impl_->whole_batches)
    if (whole == input_shapes) return nullptr;
  auto build_plan = [&](const std::vector<Shape>& shapes, ThreadPool& pool) {
    return Plan::build(model_, shapes, pool, impl_->options.memory_limit_bytes, impl_->weights.get(),
                       impl_->options.sparse, false, impl_->options.one_thread_below_work);
  };
  auto split =
      BatchSplit::build(input_shapes, impl_->pool.size(), impl_->options.samples_per_chunk, build_plan);
  if (split == nullptr) {
    if (impl_->whole_batches.size() == kMaxRememberedWholeBatches)
      impl_->whole_batches.erase(impl_->whole_batches.begin());
    impl_->whole_batches.push_back(input_shapes);
    return nullptr;
  }
  split->set_profiling(impl_->options.profile_layers);
  if (impl_->splits.size() == kMaxCachedSplits) {
    if (impl_->last_split == impl_->splits.front().get()) impl_->last_split = nullptr;
    impl_->splits.erase(impl_->splits.begin());
  }
  impl_->splits.push_back(std::move(split));
  return impl_->splits.back().get();
}

const Tensor* Executor::value(const std::string& name) const {
  if (const BatchSplit* split = impl_->last_split) {
    for (size_t i = 0; i < model_.outputs.size(); ++i)
      if (model_.outputs[i].name == name) return split->outputs()[i];
    return nullptr;
  }
  return impl_->plans.empty() ? nullptr : impl_->plans.back()->value(name);
}

Result<std::vector<Shape>> Executor::default_input_shapes(int64_t batch) const {
  std::vector<Shape> shapes;
  for (const auto& in : model_.inputs) {
    if (!in.has_shape) return errorf("{}: input '{}' declares no shape", model_.source, in.name);
    Shape s = in.dims;
    for (auto& d : s)
      if (d < 0) d = batch;
    shapes.push_back(s);
  }
  return shapes;
}

void Executor::restart_layer_times() {
  for (auto& plan : impl_->plans) plan->set_profiling(impl_->options.profile_layers);
  for (auto& split : impl_->splits) split->set_profiling(impl_->options.profile_layers);
}

Result<ModelSummary> Executor::summarize(const std::vector<Shape>& input_shapes) {
  if (const BatchSplit* split = split_for(input_shapes)) return split->summary(model_);
  SP_ASSIGN_OR_RETURN(Plan * plan, plan_for(input_shapes));
  return plan->summary(model_);
}

}  // namespace sparrow
