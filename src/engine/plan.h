// A Plan is a model specialized to one set of input shapes: every value has a concrete shape and
// a preallocated tensor, nodes whose inputs are known at plan time (constants, shape chains) have
// been computed once, and the remaining steps run in order.
//
// Memory plan: the values the steps compute live in one arena. A value occupies its bytes from the
// step that writes it to the last step that reads it (graph outputs: always), and values whose
// lifetimes do not overlap share bytes. Shape-only ops (Op::output_is_view) become views of their
// input, extending its lifetime, and run nothing. A Concat whose inputs are each one contiguous
// block of its output (every axis before the joined one of length 1) and own their buffers runs
// nothing either: its inputs are written straight into their places in its buffer.
#pragma once

#include <memory>
#include <set>
#include <vector>

#include "engine/op.h"
#include "engine/weight_store.h"
#include "sparrow/executor.h"

namespace sparrow {

struct PlanStep {
  std::unique_ptr<Op> op;
  std::vector<const Tensor*> inputs;  // nullptr for omitted optional inputs
  std::vector<Tensor*> outputs;       // nullptr for unused outputs
};

class Plan {
 public:
  // Builds the plan. Errors name the node and what does not fit.
  // Fails if activations and scratch would exceed `memory_limit` bytes.
  // `weights` holds the compressed weights (none for a dense model): with `sparse`, nodes that read
  // them run on the sparse kernels where those gain, and the others get the weight decompressed.
  // With `keep_values`, no buffer is reused, so every value stays readable after a run. A plan
  // whose work() is below `one_thread_below_work` runs every step on the calling thread
  // (ExecOptions::one_thread_below_work).
  static Result<std::unique_ptr<Plan>> build(const Model& model, const std::vector<Shape>& input_shapes,
                                             ThreadPool& pool, int64_t memory_limit,
                                             WeightStore* weights = nullptr, bool sparse = true,
                                             bool keep_values = false, int64_t one_thread_below_work = 0);
  // Copies the inputs in and runs every step.
  Status run(std::span<const Tensor> inputs, ThreadPool& pool);
  // The tensors run() copies the graph inputs into; run_steps() runs every step on what they hold.
  const std::vector<Tensor*>& input_tensors() { return input_tensors_; }
  // Runs every step on `pool`, or on the calling thread alone (one_thread()).
  Status run_steps(ThreadPool& pool);
  // Per step its multiply-adds, or the values it reads and writes where those are more, summed.
  int64_t work() const;
  bool one_thread() const { return one_thread_; }
  // Whether every input has the same length along axis 0 and every node computes each sample from
  // that sample alone (computes_per_sample), keeping the samples along axis 0 of every output.
  bool samples_independent() const { return samples_independent_; }

  const std::vector<Shape>& input_shapes() const { return input_shapes_; }
  const std::vector<const Tensor*>& outputs() const { return output_tensors_; }
  // A value after the last run; nullptr for unknown names and for values whose bytes were reused.
  const Tensor* value(const std::string& name) const;
  ModelSummary summary(const Model& model) const;

  // Bytes of the arena that holds the values computed per run, and what those values would take
  // without reuse.
  int64_t arena_bytes() const { return arena_.bytes(); }
  int64_t value_bytes() const;
  // Bytes of the tensors the steps read that are known at plan time (float32 weights, constants,
  // values folded at plan time), each counted once: what every run streams besides activations.
  // The sparse engine's layouts are not among them.
  int64_t constant_bytes() const;
  // Output positions per image (the plane) of the plan's smallest convolution; 0 without one.
  int64_t smallest_conv_plane() const;
  // With `poison`, run() fills each arena buffer with NaN bytes right after its value's last reader
  // ran, so a plan that reads a value after its bytes were handed on gives wrong results (tests).
  void set_poison_freed(bool poison) { poison_freed_ = poison; }
  // With `profile`, run() adds each step's wall time to the step's total (summary() reports the
  // mean per run).
  void set_profiling(bool profile);

 private:
  Status bind_graph_inputs(const Model& model);
  Status plan_node(const Model& model, const Node& node, ThreadPool& pool);
  // `sparse_inputs[i]` marks the inputs the op reads as engine matrices (no tensor is bound).
  Status plan_step(const Model& model, const Node& node, std::unique_ptr<Op> op,
                   const std::vector<bool>& sparse_inputs, ThreadPool& pool);
  // The step just planned for `node` (a depthwise convolution) and the one before it as one fused
  // step, when the one before is a sparse pointwise expansion whose output only `node` reads
  // (ops/expand_depthwise.h); the expanded value then takes no bytes. A planner's fusion, not a
  // graph pass: whether the expansion runs on the sparse engine is known only once it is planned.
  Status fuse_expansion(const Node& node, int threads);
  // The matrix of the step before the one just planned for `node` when that step is a sparse
  // pointwise expansion whose one output `node`'s step alone reads (and values need not be kept);
  // null otherwise.
  const SparseMatrix* expansion_before(const Node& node) const;
  // Grows the scratch every step shares to `scratch` floats, within the memory limit.
  Status reserve_scratch(const Node& node, size_t scratch);
  // Clears samples_independent_ unless the node computes each sample on its own; for a folded node,
  // records whether its outputs depend on the batch size.
  void note_per_sample(const Model& model, const Node& node, std::span<const ValueDesc> in,
                       const std::vector<bool>& sparse_inputs, std::span<const ValueDesc> out, bool folded);
  struct MadeOp {
    std::unique_ptr<Op> op;
    std::vector<bool> sparse_inputs;  // inputs read as engine matrices
  };
  Result<MadeOp> make_op(const Model& model, const Node& node, int threads);
  // The sparse-engine op for a node, or no op when the node runs dense.
  Result<MadeOp> make_sparse_op(const Model& model, const Node& node, int threads);
  // Whether input `index` is a compressed weight sparse enough to gain on the product's layouts.
  bool gains_sparse(const Node& node, size_t index, bool one_sample) const;
  // What a product reading `name` can expect of its zeros (see InputZeros).
  InputZeros zeros_of(const std::string& name) const;
  // Records which outputs of a planned node come from a ReLU (its own, or one fused into it).
  void note_zeros(const Node& node, const Activation& activation);
  // The bound tensor of input `name`: a compressed weight is decompressed now (its node runs dense).
  Result<const Tensor*> bind_input(const std::string& name);
  // A value with its own storage (graph inputs, values computed at plan time).
  Result<Tensor*> new_value(const std::string& name, const ValueDesc& desc);
  // A value computed per run: shaped now, given arena bytes by assign_buffers().
  Result<Tensor*> new_arena_value(const std::string& name, const ValueDesc& desc);
  // The output of a shape-only op over `input`: shares its bytes (or the graph input's).
  Result<Tensor*> new_view(const std::string& name, const ValueDesc& desc, const Tensor* input);
  // Whether the Concat `node` can take its inputs' places in its own buffer (see the file comment):
  // each input an arena value that owns its buffer alone, none of them twice.
  bool concat_in_place(const Node& node, const std::vector<const Tensor*>& inputs, const Shape& out) const;
  // The output of such a Concat: a buffer whose slices the inputs become, in order, alive from
  // the first input's writer on.
  Result<Tensor*> new_concat_value(const std::string& name, const ValueDesc& desc,
                                   const std::vector<const Tensor*>& inputs);
  // Lifetimes from the steps, offsets by greedy placement (largest first), then the arena.
  Status assign_buffers(bool keep_values);
  struct Buffer;
  // The lowest 64-byte aligned offset where `bytes` overlap none of `live`, nor 4K-alias them.
  static int64_t lowest_free_offset(int64_t bytes, const std::vector<const Buffer*>& live);
  Status reserve(int64_t bytes, const std::string& what);

  std::vector<Shape> input_shapes_;
  std::vector<std::unique_ptr<Tensor>> owned_;   // values computed by the plan
  std::map<std::string, const Tensor*> values_;  // every known value by name
  std::map<std::string, ValueDesc> descs_;
  std::vector<Tensor*> input_tensors_;
  std::vector<const Tensor*> output_tensors_;
  std::vector<PlanStep> steps_;
  bool one_thread_ = false;  // work below the build's one_thread_below_work: steps run on one_thread_pool_
  ThreadPool one_thread_pool_{1};
  Tensor scratch_;  // 64-byte aligned: the kernels' transposed panels and padded planes start it
  size_t scratch_floats_ = 0;
  int64_t folded_ = 0;
  int64_t memory_limit_ = 0;
  int64_t planned_bytes_ = 0;
  WeightStore* weights_ = nullptr;
  bool sparse_ = false;
  std::set<const Op*> sparse_steps_;
  std::set<std::string> graph_inputs_;
  std::map<std::string, int> readers_;  // per value, the node inputs and graph outputs naming it
  std::set<std::string> relu_values_;   // outputs of a ReLU, views and max-pools of one, Concats of
                                        // them: no NaN

  static constexpr size_t kLiveToEnd = SIZE_MAX;
  struct Buffer {
    int64_t bytes = 0;
    size_t first = 0, last = 0;  // steps that write it first and read it last
    int64_t offset = 0;          // in the arena
  };
  std::vector<Buffer> buffers_;
  struct Slot {
    size_t buffer = 0;
    int64_t offset = 0;  // bytes into the buffer
  };
  std::map<const Tensor*, Slot> buffer_of_;       // arena values and views of them -> their bytes
  std::vector<std::pair<Tensor*, Slot>> bound_;   // tensors to place over their buffer
  std::vector<std::vector<size_t>> freed_after_;  // per step, buffers whose last reader it is
  Tensor arena_;
  bool poison_freed_ = false;
  bool keep_values_ = false;
  int64_t batch_ = 0;  // axis 0 of the graph inputs
  bool samples_independent_ = true;
  std::set<std::string> batch_dependent_;  // folded values computed from per-run values' shapes
  std::vector<double> step_seconds_;       // per step, over the profiled runs; empty when not profiling
  int64_t profiled_runs_ = 0;
};

}  // namespace sparrow
