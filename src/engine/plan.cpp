#include "engine/plan.h"

#include "engine/sparse/layout_table.h"

#include "engine/batch_split.h"

#include "engine/ops/expand_depthwise.h"
#include "engine/ops/sparse_ops.h"
#include "sparrow/weight_roles.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace sparrow {

Status Plan::reserve(int64_t bytes, const std::string& what) {
  planned_bytes_ += bytes;
  if (planned_bytes_ > memory_limit_)
    return errorf("{} brings the plan to {} bytes, over the memory limit of {} bytes", what, planned_bytes_,
                  memory_limit_);
  return {};
}

Result<Tensor*> Plan::new_value(const std::string& name, const ValueDesc& desc) {
  int64_t bytes = shape_numel(desc.shape) * static_cast<int64_t>(dtype_size(desc.dtype));
  SP_RETURN_IF_ERROR(reserve(bytes, fmt::format("value '{}' of shape {}", name, shape_str(desc.shape))));
  owned_.push_back(std::make_unique<Tensor>(desc.dtype, desc.shape));
  Tensor* t = owned_.back().get();
  values_[name] = t;
  descs_[name] = ValueDesc{desc.dtype, desc.shape};
  return t;
}

Result<Tensor*> Plan::new_arena_value(const std::string& name, const ValueDesc& desc) {
  int64_t bytes = shape_numel(desc.shape) * static_cast<int64_t>(dtype_size(desc.dtype));
  if (bytes > memory_limit_ - planned_bytes_)
    return errorf("value '{}' of shape {} ({} bytes) does not fit the memory limit of {} bytes", name,
                  shape_str(desc.shape), bytes, memory_limit_);
  owned_.push_back(std::make_unique<Tensor>(Tensor::view(desc.dtype, desc.shape, nullptr)));
  Tensor* t = owned_.back().get();
  buffers_.push_back(Buffer{bytes, steps_.size(), steps_.size()});
  buffer_of_[t] = Slot{buffers_.size() - 1, 0};
  bound_.emplace_back(t, Slot{buffers_.size() - 1, 0});
  values_[name] = t;
  descs_[name] = ValueDesc{desc.dtype, desc.shape};
  return t;
}

Result<Tensor*> Plan::new_view(const std::string& name, const ValueDesc& desc, const Tensor* input) {
  auto it = buffer_of_.find(input);
  // A graph input has storage of its own for the plan's lifetime.
  void* data = it == buffer_of_.end() ? const_cast<void*>(input->raw()) : nullptr;
  owned_.push_back(std::make_unique<Tensor>(Tensor::view(desc.dtype, desc.shape, data)));
  Tensor* t = owned_.back().get();
  if (it != buffer_of_.end()) {
    buffer_of_[t] = it->second;
    bound_.emplace_back(t, it->second);
  }
  values_[name] = t;
  descs_[name] = ValueDesc{desc.dtype, desc.shape};
  return t;
}

bool Plan::concat_in_place(const Node& node, const std::vector<const Tensor*>& inputs,
                           const Shape& out) const {
  if (keep_values_ || node.op_type != "Concat" || node.outputs.size() != 1) return false;
  auto attr = node.attr_int("axis");
  const int64_t rank = static_cast<int64_t>(out.size());
  if (!attr.ok() || *attr < -rank || *attr >= rank) return false;
  for (int64_t d = 0; d < (*attr < 0 ? *attr + rank : *attr); ++d)
    if (out[d] != 1) return false;
  std::set<size_t> own;
  for (const Tensor* t : inputs) {
    auto it = t ? buffer_of_.find(t) : buffer_of_.end();
    if (it == buffer_of_.end() || !own.insert(it->second.buffer).second) return false;
    const auto sharers = std::count_if(bound_.begin(), bound_.end(),
                                       [&](const auto& b) { return b.second.buffer == it->second.buffer; });
    if (sharers != 1) return false;
  }
  return true;
}

Result<Tensor*> Plan::new_concat_value(const std::string& name, const ValueDesc& desc,
                                       const std::vector<const Tensor*>& inputs) {
  SP_ASSIGN_OR_RETURN(Tensor * t, new_arena_value(name, desc));
  const size_t whole = buffer_of_.at(t).buffer;
  int64_t offset = 0;
  for (const Tensor* in : inputs) {
    Slot& slot = buffer_of_.at(in);
    buffers_[whole].first = std::min(buffers_[whole].first, buffers_[slot.buffer].first);
    buffers_[slot.buffer].bytes = 0;  // its value now lives in `whole`
    slot = Slot{whole, offset};
    for (auto& [bound, at] : bound_)
      if (bound == in) at = slot;
    offset += static_cast<int64_t>(in->bytes());
  }
  return t;
}

namespace {

constexpr int64_t kBufferAlign = 64;
// Two buffers alive at once keep their offsets at least this far apart modulo 4 KiB: a store and a
// later load whose addresses agree in their low 12 bits stall the load (4K aliasing), which slows
// every op that streams one buffer into another (docs/engine.md, "The memory plan").
constexpr int64_t kAliasPage = 4096, kAliasWindow = 256;

bool aliases_4k(int64_t a, int64_t b) {
  int64_t d = ((a - b) % kAliasPage + kAliasPage) % kAliasPage;
  return d < kAliasWindow || d > kAliasPage - kAliasWindow;
}

int64_t align_up(int64_t n) {
  return (n + kBufferAlign - 1) / kBufferAlign * kBufferAlign;
}

}  // namespace

int64_t Plan::lowest_free_offset(int64_t bytes, const std::vector<const Buffer*>& live) {
  // Candidates: the arena's start and the end of every live buffer; from each, step one alignment
  // at a time past offsets that would 4K-alias a live buffer.
  std::vector<int64_t> starts = {0};
  for (const Buffer* other : live) starts.push_back(align_up(other->offset + other->bytes));
  std::sort(starts.begin(), starts.end());
  for (int64_t start : starts)
    for (int64_t offset = start; offset < start + kAliasPage; offset += kBufferAlign) {
      bool fits = true, aliases = false;
      for (const Buffer* other : live) {
        fits = fits && (offset + bytes <= other->offset || other->offset + other->bytes <= offset);
        aliases = aliases || aliases_4k(offset, other->offset);
      }
      if (!fits) break;  // a later candidate start covers what lies past this buffer
      if (!aliases) return offset;
    }
  return starts.back() + kAliasWindow;  // past every live buffer and out of the window of the last
}

Status Plan::assign_buffers(bool keep_values) {
  for (size_t s = 0; s < steps_.size(); ++s)
    for (const Tensor* in : steps_[s].inputs)
      if (auto it = buffer_of_.find(in); it != buffer_of_.end())
        buffers_[it->second.buffer].last = std::max(buffers_[it->second.buffer].last, s);
  for (const Tensor* out : output_tensors_)
    if (auto it = buffer_of_.find(out); it != buffer_of_.end()) buffers_[it->second.buffer].last = kLiveToEnd;
  if (keep_values)
    for (Buffer& b : buffers_) b.last = kLiveToEnd;

  std::vector<size_t> order(buffers_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return buffers_[a].bytes > buffers_[b].bytes; });
  int64_t arena = 0;
  std::vector<size_t> placed;
  for (size_t id : order) {
    Buffer& b = buffers_[id];
    if (b.bytes == 0) continue;  // empty, or joined into a Concat's buffer
    std::vector<const Buffer*> live;
    for (size_t p : placed)
      if (buffers_[p].first <= b.last && b.first <= buffers_[p].last) live.push_back(&buffers_[p]);
    b.offset = lowest_free_offset(b.bytes, live);
    arena = std::max(arena, b.offset + b.bytes);
    placed.push_back(id);
  }
  SP_RETURN_IF_ERROR(reserve(arena, "the values computed per run"));
  arena_ = Tensor(DType::f32, {(arena + 3) / 4});
  scratch_ = Tensor(DType::f32, {static_cast<int64_t>(scratch_floats_)});
  auto* base = static_cast<std::byte*>(arena_.raw());
  for (auto& [t, slot] : bound_)
    *t = Tensor::view(t->dtype(), t->shape(), base + buffers_[slot.buffer].offset + slot.offset);
  freed_after_.assign(steps_.size(), {});
  for (size_t id = 0; id < buffers_.size(); ++id)
    if (buffers_[id].last != kLiveToEnd && buffers_[id].last < steps_.size())
      freed_after_[buffers_[id].last].push_back(id);
  return {};
}

int64_t Plan::value_bytes() const {
  int64_t sum = 0;
  for (const Buffer& b : buffers_) sum += b.bytes;
  return sum;
}

int64_t Plan::smallest_conv_plane() const {
  int64_t smallest = 0;
  for (const PlanStep& step : steps_) {
    if (step.op->node().op_type != "Conv" || step.outputs.empty() || step.outputs[0] == nullptr) continue;
    const Shape& y = step.outputs[0]->shape();
    if (y.size() < 3) continue;
    const int64_t plane = shape_numel(Shape(y.begin() + 2, y.end()));
    if (plane > 0 && (smallest == 0 || plane < smallest)) smallest = plane;
  }
  return smallest;
}

int64_t Plan::constant_bytes() const {
  // Graph inputs and views of them share the inputs' storage.
  std::set<const void*> input_data;
  for (const Tensor* t : input_tensors_) input_data.insert(t->raw());
  std::map<const void*, int64_t> constants;  // by storage, so a view is not counted again
  for (const PlanStep& step : steps_)
    for (const Tensor* t : step.inputs)
      if (t != nullptr && !buffer_of_.contains(t) && !input_data.contains(t->raw()))
        constants[t->raw()] = std::max(constants[t->raw()], static_cast<int64_t>(t->bytes()));
  int64_t sum = 0;
  for (const auto& [data, bytes] : constants) sum += bytes;
  return sum;
}

const Tensor* Plan::value(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return nullptr;
  auto b = buffer_of_.find(it->second);
  return b == buffer_of_.end() || buffers_[b->second.buffer].last == kLiveToEnd ? it->second : nullptr;
}

Status Plan::bind_graph_inputs(const Model& model) {
  if (input_shapes_.size() != model.inputs.size())
    return errorf("the model has {} inputs, {} were given", model.inputs.size(), input_shapes_.size());
  for (size_t i = 0; i < model.inputs.size(); ++i) {
    const ValueInfo& vi = model.inputs[i];
    const Shape& s = input_shapes_[i];
    if (shape_numel(s) < 0)
      return errorf("input '{}': shape {} is invalid or too large", vi.name, shape_str(s));
    bool mismatch = vi.has_shape && vi.dims.size() != s.size();
    for (size_t d = 0; vi.has_shape && !mismatch && d < s.size(); ++d)
      mismatch = vi.dims[d] >= 0 && vi.dims[d] != s[d];
    if (mismatch)
      return errorf("input {} expects shape {}, got {}", vi.describe(), shape_str(vi.dims), shape_str(s));
    SP_ASSIGN_OR_RETURN(Tensor * t, new_value(vi.name, ValueDesc{*compute_dtype(vi.elem_type), s}));
    input_tensors_.push_back(t);
    if (s.empty() || (i > 0 && s[0] != batch_)) samples_independent_ = false;
    if (!s.empty()) batch_ = s[0];
    graph_inputs_.insert(vi.name);
  }
  for (const auto& [name, t] : model.initializers) {
    values_[name] = &t;
    descs_[name] = ValueDesc{t.dtype(), t.shape(), &t};
  }
  // Compressed weights: shapes known now; a tensor is bound only where a node runs them dense.
  if (weights_)
    for (const auto& name : weights_->names()) descs_[name] = ValueDesc{DType::f32, weights_->shape(name)};
  return {};
}

bool Plan::gains_sparse(const Node& node, size_t index, bool one_sample) const {
  if (!sparse_ || !weights_ || !node.has_input(index) || !weights_->holds(node.inputs[index]) ||
      weight_role(node, index) == nullptr)
    return false;
  const SparseMatrix& m = weights_->header(node.inputs[index]);
  // Measured crossovers differ for one sample on the column walk, on the column tiles, and for batches.
  double limit = !one_sample                         ? kSparseMaxDensityBatched
                 : tiles_pay_off(m, weights_->isa()) ? kSparseMaxDensityOneSampleTiles
                                                     : kSparseMaxDensityOneSample;
  return m.density() <= limit;
}

namespace {
// Operators whose output keeps the zeros of their first input.
const std::set<std::string> kKeepsZeros = {"Flatten",   "Reshape",   "Squeeze",
                                           "Unsqueeze", "Transpose", "MaxPool"};
}  // namespace

InputZeros Plan::zeros_of(const std::string& name) const {
  if (graph_inputs_.count(name)) return InputZeros::unknown;
  return relu_values_.count(name) ? InputZeros::expected : InputZeros::unlikely;
}

void Plan::note_zeros(const Node& node, const Activation& activation) {
  const bool joins_relus = node.op_type == "Concat" && !node.inputs.empty() &&
                           std::all_of(node.inputs.begin(), node.inputs.end(),
                                       [&](const std::string& in) { return relu_values_.count(in) > 0; });
  bool relu = activation.makes_zeros() || node.op_type == "Relu" || joins_relus ||
              (kKeepsZeros.count(node.op_type) && node.has_input(0) && relu_values_.count(node.inputs[0]));
  if (relu) relu_values_.insert(node.outputs.begin(), node.outputs.end());
  // A view or max-pool of a graph input is as unknown as the input.
  if (kKeepsZeros.count(node.op_type) && node.has_input(0) && graph_inputs_.count(node.inputs[0]))
    graph_inputs_.insert(node.outputs.begin(), node.outputs.end());
}

Result<Plan::MadeOp> Plan::make_sparse_op(const Model& model, const Node& node, int threads) {
  MadeOp made{nullptr, std::vector<bool>(node.inputs.size(), false)};
  if (!node.has_input(0)) return made;  // the dense op reports the missing input
  if (node.op_type == "LSTM") {
    const Shape& x = descs_.at(node.inputs[0]).shape;
    auto layout = node.attr_int("layout", 0);
    bool one_sample =
        x.size() == 3 && layout.ok() && x[*layout == 0 ? 1 : 0] == 1;  // recurrent product per sample
    bool w = gains_sparse(node, 1, false), r = gains_sparse(node, 2, one_sample);
    if (!w && !r) return made;
    const SparseMatrix* w_matrix = w ? weights_->request(node.inputs[1], false) : nullptr;
    const SparseMatrix* r_matrix =
        r ? weights_->request(node.inputs[2], one_sample, InputZeros::unlikely) : nullptr;
    SP_ASSIGN_OR_RETURN(made.op, create_sparse_lstm_op(node, model.opset, w_matrix, r_matrix, threads));
    made.sparse_inputs[1] = w;
    made.sparse_inputs[2] = r;
    return made;
  }
  if (!sparse_ || !weights_ || !node.has_input(1) || !weights_->holds(node.inputs[1])) return made;
  const SparseMatrix& header = weights_->header(node.inputs[1]);
  if (!sparse_op_supports(node, descs_.at(node.inputs[0]).shape, header)) return made;
  // A fully connected layer fed fewer than kSparseFcBatchedFrom rows runs them one at a time.
  const int64_t rows_in = header.cols > 0 ? shape_numel(descs_.at(node.inputs[0]).shape) / header.cols : 0;
  const bool one_sample = node.op_type == "Conv"
                              ? sparse_conv_per_position(node, descs_.at(node.inputs[0]).shape)
                              : rows_in < kSparseFcBatchedFrom;
  if (!gains_sparse(node, 1, one_sample)) return made;
  // The sparse ops add a bias of one value per output; any other Gemm C runs dense.
  if (node.has_input(2) && shape_numel(descs_.at(node.inputs[2]).shape) != header.rows) return made;
  const SparseMatrix* m = weights_->request(node.inputs[1], one_sample, zeros_of(node.inputs[0]));
  SP_ASSIGN_OR_RETURN(made.op, create_sparse_op(node, model.opset, *m, threads));
  made.sparse_inputs[1] = made.op != nullptr;
  return made;
}

Result<Plan::MadeOp> Plan::make_op(const Model& model, const Node& node, int threads) {
  SP_ASSIGN_OR_RETURN(MadeOp made, make_sparse_op(model, node, threads));
  if (made.op) {
    sparse_steps_.insert(made.op.get());
    return made;
  }
  SP_ASSIGN_OR_RETURN(made.op, create_op(node, model.opset));
  return made;
}

Result<const Tensor*> Plan::bind_input(const std::string& name) {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  if (!weights_ || !weights_->holds(name)) return errorf("value '{}' is not known to the plan", name);
  SP_ASSIGN_OR_RETURN(const Tensor* w, weights_->dense(name));
  values_[name] = w;
  descs_[name].constant = w;
  return w;
}

void Plan::note_per_sample(const Model& model, const Node& node, std::span<const ValueDesc> in,
                           const std::vector<bool>& sparse_inputs, std::span<const ValueDesc> out,
                           bool folded) {
  std::vector<bool> per_run(in.size()), from_batch(in.size());
  bool reads_batch = false;
  for (size_t k = 0; k < in.size(); ++k) {
    per_run[k] =
        in[k].present && in[k].constant == nullptr && !(k < sparse_inputs.size() && sparse_inputs[k]);
    from_batch[k] = in[k].present && batch_dependent_.count(node.inputs[k]) > 0;
    reads_batch = reads_batch || per_run[k] || from_batch[k];
  }
  if (folded) {
    // Computed now from the shapes of per-run values (Shape -> Gather -> Concat chains): constants
    // of this plan that another batch size would change.
    if (reads_batch)
      for (const auto& name : node.outputs) batch_dependent_.insert(name);
    return;
  }
  if (samples_independent_)
    samples_independent_ =
        computes_per_sample(PlannedNode{model, node, in, per_run, from_batch, out}, batch_);
}

Status Plan::plan_node(const Model& model, const Node& node, ThreadPool& pool) {
  SP_ASSIGN_OR_RETURN(MadeOp made, make_op(model, node, pool.size()));
  // A ReLU's output (or a view, max-pool or Concat of such values) holds no NaN: the activation
  // makes NaN 0.
  if (node.has_input(0) && relu_values_.count(node.inputs[0])) made.op->input_is_nan_free();
  SP_RETURN_IF_ERROR(plan_step(model, node, std::move(made.op), made.sparse_inputs, pool));
  return fuse_expansion(node, pool.size());
}

const SparseMatrix* Plan::expansion_before(const Node& node) const {
  if (keep_values_ || steps_.size() < 2 || &steps_.back().op->node() != &node) return nullptr;
  const PlanStep& expand = steps_[steps_.size() - 2];
  const PlanStep& depthwise = steps_.back();
  const auto readers = readers_.find(node.inputs[0]);
  const bool alone = readers != readers_.end() && readers->second == 1;
  const bool reads_expansion = expand.outputs.size() == 1 && expand.outputs[0] != nullptr &&
                               depthwise.inputs.size() >= 2 && depthwise.inputs.size() <= 3 &&
                               depthwise.inputs[0] == expand.outputs[0] && depthwise.inputs[1] != nullptr &&
                               depthwise.outputs.size() == 1;
  return alone && reads_expansion ? sparse_pointwise_matrix(*expand.op) : nullptr;
}

Status Plan::fuse_expansion(const Node& node, int threads) {
  const SparseMatrix* m = expansion_before(node);
  if (m == nullptr) return {};
  PlanStep& expand = steps_[steps_.size() - 2];
  PlanStep& depthwise = steps_.back();
  const Tensor* mid = expand.outputs[0];
  const Op* expand_op = expand.op.get();
  const Op* depthwise_op = depthwise.op.get();
  // Fused, the plan never grows: the step's scratch stays within the memory limit and below the
  // expanded value's bytes, which it no longer holds.
  const int64_t room =
      std::max<int64_t>(0, memory_limit_ - planned_bytes_) / static_cast<int64_t>(sizeof(float));
  const int64_t most_scratch = std::min(mid->numel(), static_cast<int64_t>(scratch_floats_) + room);
  std::unique_ptr<Op> fused =
      fuse_expand_depthwise(expand.op, depthwise.op, *m, expand.inputs[0]->shape(), mid->shape(),
                            depthwise.inputs[1]->shape(), threads, most_scratch);
  if (!fused) return {};
  std::vector<const Tensor*> inputs(kExpandDepthwiseInputs, nullptr);
  inputs[kExpandX] = expand.inputs[0];
  inputs[kExpandBias] = expand.inputs.size() > 2 ? expand.inputs[2] : nullptr;
  inputs[kDepthwiseWeight] = depthwise.inputs[1];
  inputs[kDepthwiseBias] = depthwise.inputs.size() > 2 ? depthwise.inputs[2] : nullptr;
  std::vector<ValueDesc> in, out;
  for (const Tensor* t : inputs)
    in.push_back(t ? ValueDesc{DType::f32, t->shape()} : ValueDesc{DType::f32, {}, nullptr, false});
  SP_RETURN_IF_ERROR(fused->infer(in, out));
  if (out.size() != 1 || out[0].shape != depthwise.outputs[0]->shape())
    return errorf("{}: the fused expansion gives {}, the depthwise convolution {}", node.describe(),
                  out.empty() ? "nothing" : shape_str(out[0].shape),
                  shape_str(depthwise.outputs[0]->shape()));
  const size_t scratch = fused->scratch_floats(threads);
  SP_RETURN_IF_ERROR(reserve_scratch(node, scratch));
  scratch_floats_ = std::max(scratch_floats_, scratch);
  // The expanded value is never written: no bytes. The depthwise output is written from the fused
  // step on, which reads the expansion's input: their lifetimes overlap there.
  buffers_[buffer_of_.at(mid).buffer].bytes = 0;
  buffers_[buffer_of_.at(depthwise.outputs[0]).buffer].first = steps_.size() - 2;
  sparse_steps_.erase(expand_op);
  sparse_steps_.erase(depthwise_op);
  sparse_steps_.insert(fused.get());
  PlanStep step{std::move(fused), std::move(inputs), depthwise.outputs};
  steps_.pop_back();
  steps_.back() = std::move(step);
  return {};
}

Status Plan::reserve_scratch(const Node& node, size_t scratch) {
  // Checked in floats first: a scratch size near 2^62 would overflow the byte count.
  if (scratch > static_cast<size_t>(memory_limit_) / sizeof(float) ||
      scratch > static_cast<size_t>(kMaxTensorElements))
    return errorf("{} scratch of {} floats is over the memory limit of {} bytes or a tensor's {} elements",
                  node.describe(), scratch, memory_limit_, kMaxTensorElements);
  if (scratch > scratch_floats_)
    SP_RETURN_IF_ERROR(reserve(static_cast<int64_t>((scratch - scratch_floats_) * sizeof(float)),
                               node.describe() + " scratch"));
  return {};
}

Status Plan::plan_step(const Model& model, const Node& node, std::unique_ptr<Op> op,
                       const std::vector<bool>& sparse_inputs, ThreadPool& pool) {
  std::vector<ValueDesc> in;
  std::vector<const Tensor*> in_tensors;
  bool all_constant = true, reads_matrix = false;
  for (size_t k = 0; k < node.inputs.size(); ++k) {
    const std::string& name = node.inputs[k];
    if (name.empty()) {
      in.push_back(ValueDesc{DType::f32, {}, nullptr, false});
      in_tensors.push_back(nullptr);
      continue;
    }
    // An input the op reads as an engine matrix is constant, and bound to no tensor.
    const bool as_matrix = k < sparse_inputs.size() && sparse_inputs[k];
    const Tensor* t = nullptr;
    if (!as_matrix) {
      auto bound = bind_input(name);
      if (!bound.ok()) return bound.status().prefixed(node.describe());
      t = *bound;
    }
    const ValueDesc& d = descs_.at(name);
    all_constant = all_constant && (as_matrix || d.constant != nullptr);
    reads_matrix = reads_matrix || as_matrix;
    in.push_back(d);
    in_tensors.push_back(t);
  }
  std::vector<ValueDesc> out;
  SP_RETURN_IF_ERROR(op->infer(in, out));
  note_zeros(node, op->activation());
  if (out.size() < node.outputs.size())
    return errorf("{}: produces {} outputs, the node names {}", node.describe(), out.size(),
                  node.outputs.size());
  // Known at plan time: computed once now, into storage of their own, and treated as constants.
  // A step that reads an engine matrix is never folded: its layouts are built once the whole
  // graph is planned (WeightStore::build_requested).
  const bool fold = !reads_matrix && (all_constant || op->depends_only_on_shapes());
  const bool view = !fold && op->output_is_view() && node.outputs.size() == 1;
  const bool joined_in_place =
      !fold && !view && !out.empty() && concat_in_place(node, in_tensors, out[0].shape);
  note_per_sample(model, node, in, sparse_inputs, out, fold);
  std::vector<Tensor*> out_tensors;
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    if (node.outputs[i].empty()) {
      out_tensors.push_back(nullptr);
      continue;
    }
    if (shape_numel(out[i].shape) < 0)
      return errorf("{}: output '{}' would have shape {}, too large", node.describe(), node.outputs[i],
                    shape_str(out[i].shape));
    auto t = fold              ? new_value(node.outputs[i], out[i])
             : view            ? new_view(node.outputs[i], out[i], in_tensors[0])
             : joined_in_place ? new_concat_value(node.outputs[i], out[i], in_tensors)
                               : new_arena_value(node.outputs[i], out[i]);
    if (!t.ok()) return t.status().prefixed(node.describe());
    out_tensors.push_back(*t);
  }
  if (view || joined_in_place) return {};
  PlanStep step{std::move(op), std::move(in_tensors), std::move(out_tensors)};
  size_t scratch = step.op->scratch_floats(pool.size());
  SP_RETURN_IF_ERROR(reserve_scratch(node, scratch));
  if (fold) {
    // Known at plan time: compute once and treat the outputs as constants.
    std::vector<float> folding_scratch(scratch);
    SP_RETURN_IF_ERROR(step.op->run(RunArgs{step.inputs, step.outputs, pool, folding_scratch}));
    for (size_t i = 0; i < node.outputs.size(); ++i)
      if (step.outputs[i]) descs_[node.outputs[i]].constant = step.outputs[i];
    ++folded_;
    return {};
  }
  scratch_floats_ = std::max(scratch_floats_, scratch);
  steps_.push_back(std::move(step));
  return {};
}

Result<std::unique_ptr<Plan>> Plan::build(const Model& model, const std::vector<Shape>& input_shapes,
                                          ThreadPool& pool, int64_t memory_limit, WeightStore* weights,
                                          bool sparse, bool keep_values, int64_t one_thread_below_work) {
  auto plan = std::unique_ptr<Plan>(new Plan());
  plan->weights_ = weights;
  plan->sparse_ = sparse;
  plan->memory_limit_ = memory_limit;
  plan->keep_values_ = keep_values;
  plan->input_shapes_ = input_shapes;
  // A plan that fails leaves no layout requests behind for the next one.
  auto planned = [&]() -> Status {
    SP_RETURN_IF_ERROR(plan->bind_graph_inputs(model));
    for (const Node& node : model.nodes)
      for (const std::string& in : node.inputs)
        if (!in.empty()) ++plan->readers_[in];
    for (const auto& out : model.outputs) ++plan->readers_[out.name];
    for (const Node& node : model.nodes) SP_RETURN_IF_ERROR(plan->plan_node(model, node, pool));
    return weights ? weights->build_requested() : Status{};
  }();
  if (!planned.ok()) {
    if (weights) weights->cancel_requests();
    return planned;
  }
  for (const auto& out : model.outputs) {
    // A graph output may be a compressed weight itself: it is then decompressed.
    auto t = plan->bind_input(out.name);
    if (!t.ok()) return t.status().prefixed(fmt::format("graph output '{}'", out.name));
    plan->output_tensors_.push_back(*t);
    const ValueDesc& d = plan->descs_.at(out.name);
    if (d.constant != nullptr || d.shape.empty() || d.shape[0] != plan->batch_)
      plan->samples_independent_ = false;
  }
  SP_RETURN_IF_ERROR(plan->assign_buffers(keep_values));
  plan->one_thread_ = plan->work() < one_thread_below_work;
  return plan;
}

int64_t Plan::work() const {
  int64_t work = 0;
  for (const PlanStep& step : steps_) {
    int64_t values = 0;
    for (const Tensor* t : step.inputs)
      if (t) values += t->numel();
    for (const Tensor* t : step.outputs)
      if (t) values += t->numel();
    work += std::max(step.op->macs(), values);
  }
  return work;
}

Status Plan::run(std::span<const Tensor> inputs, ThreadPool& pool) {
  for (size_t i = 0; i < inputs.size(); ++i)
    std::memcpy(input_tensors_[i]->raw(), inputs[i].raw(), inputs[i].bytes());
  return run_steps(pool);
}

Status Plan::run_steps(ThreadPool& given) {
  ThreadPool& pool = one_thread_ ? one_thread_pool_ : given;
  auto* arena = static_cast<std::byte*>(arena_.raw());
  const bool profiling = !step_seconds_.empty();
  for (size_t s = 0; s < steps_.size(); ++s) {
    PlanStep& step = steps_[s];
    const auto start = profiling ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    SP_RETURN_IF_ERROR(step.op->run(
        RunArgs{step.inputs, step.outputs, pool, std::span<float>(scratch_.f32_data(), scratch_floats_)}));
    if (profiling)
      step_seconds_[s] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (poison_freed_)
      for (size_t id : freed_after_[s])
        std::memset(arena + buffers_[id].offset, 0xFF, static_cast<size_t>(buffers_[id].bytes));
  }
  if (profiling) ++profiled_runs_;
  return {};
}

void Plan::set_profiling(bool profile) {
  step_seconds_.assign(profile ? steps_.size() : 0, 0.0);
  profiled_runs_ = 0;
}

namespace {
// The op type of a step's node, with "+Add" after it when it took over a residual Add and "+Relu"
// or "+Clip" when it applies a fused activation.
std::string fused_op_type(const Op& op) {
  std::string type = op.node().op_type;
  if (op.node().attrs.count(kFusedResidualAttr)) type += "+Add";
  const Activation& a = op.activation();
  if (a.none()) return type;
  return type + (a.lo == 0.0f && a.hi == std::numeric_limits<float>::infinity() ? "+Relu" : "+Clip");
}
}  // namespace

namespace {

// `a`, then `b` after `separator` when both are non-empty.
std::string joined(std::string a, std::string_view separator, std::string_view b) {
  if (!a.empty() && !b.empty()) a.append(separator);
  a.append(b);
  return a;
}

// The layouts `m` holds, by their table names joined with '+'.
std::string layout_names(const SparseMatrix& m) {
  std::string names;
  for (const LayoutRow& row : layout_rows())
    if (m.has(row.layout)) names = joined(std::move(names), "+", row.name);
  return names;
}

}  // namespace

ModelSummary Plan::summary(const Model& model) const {
  ModelSummary s;
  s.input_shapes = input_shapes_;
  for (const Tensor* t : output_tensors_) s.output_shapes.push_back(t->shape());
  s.folded_nodes = folded_;
  s.one_thread = one_thread_;
  s.activation_bytes = arena_bytes();
  s.activation_bytes_unshared = value_bytes();
  s.profiled_runs = profiled_runs_;
  for (size_t i = 0; i < steps_.size(); ++i) {
    const PlanStep& step = steps_[i];
    std::string op_type = fused_op_type(*step.op);
    for (const Op* next = step.op->next_in_step(); next; next = next->next_in_step())
      op_type.append(">").append(fused_op_type(*next));
    LayerInfo layer{step.op->node().name,
                    std::move(op_type),
                    {},
                    0,
                    step.op->macs(),
                    sparse_steps_.count(step.op.get()) > 0,
                    profiled_runs_ > 0 ? step_seconds_[i] / static_cast<double>(profiled_runs_) : 0.0,
                    {},
                    {}};
    for (const Tensor* t : step.outputs)
      if (t) layer.output_shapes.push_back(t->shape());
    for (const Op* op = step.op.get(); op; op = op->next_in_step()) {
      const Node& node = op->node();
      for (size_t k = 0; k < node.inputs.size(); ++k) {
        const std::string& name = node.inputs[k];
        auto it = model.initializers.find(name);
        const bool f32 = it != model.initializers.end() && it->second.dtype() == DType::f32;
        const bool held = !f32 && weights_ && weights_->holds(name);
        if (f32) layer.params += it->second.numel();
        if (held) layer.params += shape_numel(weights_->shape(name));
        if ((f32 || held) && layer.weight.empty() && weight_role(node, k)) layer.weight = name;
        if (held && layer.sparse)
          layer.layouts = joined(layer.layouts, ", ", layout_names(weights_->header(name)));
      }
    }
    s.params += layer.params;
    s.macs += layer.macs;
    s.layers.push_back(std::move(layer));
  }
  return s;
}

}  // namespace sparrow
