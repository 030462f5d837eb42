// A Plan is a model specialized to one set of input shapes: every value has a concrete shape and
// a preallocated tensor, nodes whose inputs are known at plan time (constants, shape chains) have
// been computed once, and the remaining steps run in order.
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
  bool relu_fused = false;            // the op also applies the Relu that followed its node
};

class Plan {
 public:
  // Builds the plan. Errors name the node and what does not fit.
  // Fails if activations and scratch would exceed `memory_limit` bytes.
  // `weights` holds the compressed weights (none for a dense model): with `sparse`, nodes that read
  // them run on the sparse kernels where those gain, and the others get the weight decompressed.
  static Result<std::unique_ptr<Plan>> build(const Model& model, const std::vector<Shape>& input_shapes,
                                             ThreadPool& pool, int64_t memory_limit,
                                             WeightStore* weights = nullptr, bool sparse = true);
  // Copies the inputs in and runs every step.
  Status run(std::span<const Tensor> inputs, ThreadPool& pool);

  const std::vector<Shape>& input_shapes() const { return input_shapes_; }
  const std::vector<const Tensor*>& outputs() const { return output_tensors_; }
  const Tensor* value(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : it->second;
  }
  ModelSummary summary(const Model& model) const;

 private:
  Status bind_graph_inputs(const Model& model);
  // Plans `nodes[i]`; returns how many nodes it consumed (2 when a sparse op fused the next Relu).
  Result<size_t> plan_at(const Model& model, size_t i, ThreadPool& pool);
  Status plan_node(const Model& model, const Node& node, ThreadPool& pool);
  // `sparse_inputs[i]` marks the inputs the op reads as engine matrices (no tensor is bound).
  Status plan_step(const Node& node, std::unique_ptr<Op> op, const std::vector<bool>& sparse_inputs,
                   bool relu_fused, ThreadPool& pool);
  // The Relu right after nodes[i] that only it reads, when its output may be fused away.
  const Node* fusable_relu(const Model& model, size_t i) const;
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
  // Records which outputs of a planned node come from a ReLU.
  void note_zeros(const Node& node, bool relu_fused);
  // The bound tensor of input `name`: a compressed weight is decompressed now (its node runs dense).
  Result<const Tensor*> bind_input(const std::string& name);
  Result<Tensor*> new_value(const std::string& name, const ValueDesc& desc);
  Status reserve(int64_t bytes, const std::string& what);

  std::vector<Shape> input_shapes_;
  std::vector<std::unique_ptr<Tensor>> owned_;   // values computed by the plan
  std::map<std::string, const Tensor*> values_;  // every known value by name
  std::map<std::string, ValueDesc> descs_;
  std::vector<Tensor*> input_tensors_;
  std::vector<const Tensor*> output_tensors_;
  std::vector<PlanStep> steps_;
  std::vector<std::unique_ptr<Node>> fused_nodes_;  // nodes rewritten to write a fused Relu's output
  std::vector<float> scratch_;
  int64_t folded_ = 0;
  int64_t memory_limit_ = 0;
  int64_t planned_bytes_ = 0;
  WeightStore* weights_ = nullptr;
  bool sparse_ = false;
  std::set<const Op*> sparse_steps_;
  std::set<std::string> graph_inputs_;
  std::set<std::string> relu_values_;  // outputs of a ReLU, or views and max-pools of one
};

}  // namespace sparrow
