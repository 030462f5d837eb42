#include "compress/structured_common.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "compress/graph_names.h"

namespace sparrow {

namespace {

// A shape seen as [outer, dim, inner] around `axis`.
struct AxisSplit {
  int64_t outer = 1, dim = 1, inner = 1;
};
AxisSplit split_at(const Shape& shape, int axis) {
  AxisSplit s;
  s.dim = shape[static_cast<size_t>(axis)];
  for (int a = 0; a < axis; ++a) s.outer *= shape[static_cast<size_t>(a)];
  for (size_t a = static_cast<size_t>(axis) + 1; a < shape.size(); ++a) s.inner *= shape[a];
  return s;
}

}  // namespace

int output_axis(const Node& node) {
  if (node.op_type == "MatMul") return 1;
  if (node.op_type == "Gemm") {
    auto trans_b = node.attr_int("transB", 0);
    return trans_b.ok() && *trans_b != 0 ? 0 : 1;
  }
  return 0;
}

int input_axis(const Node& node) {
  return node.op_type == "Conv" ? 1 : 1 - output_axis(node);
}

Tensor take(const Tensor& t, int axis, const std::vector<int64_t>& keep) {
  const auto [outer, dim, inner] = split_at(t.shape(), axis);
  Shape out_shape = t.shape();
  out_shape[static_cast<size_t>(axis)] = static_cast<int64_t>(keep.size());
  Tensor out(DType::f32, out_shape);
  const float* src = t.f32_data();
  float* dst = out.f32_data();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k : keep) dst = std::copy_n(src + (o * dim + k) * inner, inner, dst);
  return out;
}

std::vector<double> axis_norms(const Tensor& t, int axis, StructuredRule::Norm norm) {
  const auto [outer, dim, inner] = split_at(t.shape(), axis);
  std::vector<double> sums(static_cast<size_t>(dim), 0.0);
  const float* p = t.f32_data();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t i = 0; i < inner; ++i) {
        const double v = p[(o * dim + d) * inner + i];
        sums[static_cast<size_t>(d)] += norm == StructuredRule::Norm::l1 ? std::abs(v) : v * v;
      }
  if (norm == StructuredRule::Norm::l2)
    for (double& s : sums) s = std::sqrt(s);
  return sums;
}

std::string GroupRule::why_whole() const {
  if (rule.norm != StructuredRule::Norm::none || key.empty()) return "";
  return fmt::format("rule none for '{}' (its own, or the layer is excluded)", key);
}

Result<GroupRule> group_rule(const Model& model, const std::vector<size_t>& producers,
                             const StructuredRule& rule,
                             const std::map<std::string, StructuredRule>& per_layer) {
  std::optional<GroupRule> own;
  for (size_t p : producers) {
    const Node& n = model.nodes[p];
    std::optional<GroupRule> layer;
    for (const std::string& key : {n.name, n.inputs[1]})
      if (auto it = per_layer.find(key); it != per_layer.end()) layer = GroupRule{it->second, key};
    if (!layer) continue;
    const auto prunes = [](const GroupRule& r) { return r.rule.norm != StructuredRule::Norm::none; };
    if (own && prunes(*own) && prunes(*layer) &&
        structured_rule_text(own->rule) != structured_rule_text(layer->rule))
      return errorf(
          "layers '{}' ({}) and '{}' ({}) share their output channels or heads (one group): give "
          "them one structured rule",
          own->key, structured_rule_text(own->rule), layer->key, structured_rule_text(layer->rule));
    if (!own || !prunes(*layer)) own = layer;
  }
  return own ? *own : GroupRule{rule, ""};
}

InitializerSlicer::InitializerSlicer(Model& model)
    : model_(model), readers_(value_readers(model)), used_(names_in_use(model)) {}

void InitializerSlicer::slice(Node& n, size_t k, int axis, const std::vector<int64_t>& keep) {
  const std::string name = n.inputs[k];
  Tensor& t = model_.initializers.at(name);
  if (t.shape()[static_cast<size_t>(axis)] == static_cast<int64_t>(keep.size())) return;
  if (readers_[name] == 1) {
    t = take(t, axis, keep);
    return;
  }
  const std::string copy = claim_name(used_, name + "/" + n.name);
  --readers_[name];
  ++readers_[copy];
  model_.initializers[copy] = take(t, axis, keep);
  n.inputs[k] = copy;
}

void InitializerSlicer::set_ints(Node& n, size_t k, const std::vector<int64_t>& values) {
  const std::string name = claim_name(used_, n.name + "/input" + std::to_string(k));
  if (n.inputs.size() <= k) n.inputs.resize(k + 1);
  if (n.has_input(k)) drop(n, k);
  model_.initializers[name] = Tensor::i64({static_cast<int64_t>(values.size())}, values);
  ++readers_[name];
  n.inputs[k] = name;
}

void InitializerSlicer::drop(Node& n, size_t k) {
  const std::string name = n.inputs[k];
  n.inputs[k].clear();
  if (--readers_[name] == 0 && model_.initializers.erase(name) > 0) readers_.erase(name);
}

}  // namespace sparrow
