// What the structured passes share: the axes of a producer's weight, slices of tensors along an
// axis, their norms, and the slicing of a node's initializers without touching other readers.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "sparrow/compress.h"

namespace sparrow {

// The axis of a producer's weight (Conv, Gemm, MatMul, at input 1) that holds its output channels;
// the other (input_axis) holds its inputs.
int output_axis(const Node& node);
int input_axis(const Node& node);

// The entries of float32 `t` whose index along `axis` is in `keep` (ascending), in order.
Tensor take(const Tensor& t, int axis, const std::vector<int64_t>& keep);

// The L1 or L2 norm of each slice of float32 `t` along `axis`.
std::vector<double> axis_norms(const Tensor& t, int axis, StructuredRule::Norm norm);

// The structured rule for a group of producers (node indices with their weight at input 1).
struct GroupRule {
  StructuredRule rule;
  std::string key;  // the layer whose own rule it is, or empty for the model's rule
  // Why the group stays whole because of a layer's own rule "none" (or its exclusion), else empty.
  std::string why_whole() const;
};
// The producers' own rule (by weight name over node name, as other settings resolve), else `rule`. Where
// the producers' rules differ, none (an excluded layer's) wins; two different rules that both
// prune are refused.
Result<GroupRule> group_rule(const Model& model, const std::vector<size_t>& producers,
                             const StructuredRule& rule,
                             const std::map<std::string, StructuredRule>& per_layer);

// Slices the initializers nodes read. One that other nodes read too (an exporter's sharing of equal
// tensors, such as zero biases) is copied under a fresh name for the node whose slice differs.
class InitializerSlicer {
 public:
  explicit InitializerSlicer(Model& model);

  // Input k of `n` keeps the entries at `keep` along `axis`.
  void slice(Node& n, size_t k, int axis, const std::vector<int64_t>& keep);
  // Input k of `n` (added where the node has fewer inputs) becomes a new int64 initializer holding
  // `values`, named after the node.
  void set_ints(Node& n, size_t k, const std::vector<int64_t>& values);
  // Input k of `n` is no longer read; an initializer that nothing reads any more goes.
  void drop(Node& n, size_t k);

 protected:
  Model& model_;
  std::map<std::string, int> readers_;
  std::set<std::string> used_;
};

}  // namespace sparrow
