#include "engine/graph_passes.h"

#include <set>

#include "core/log.h"
#include "engine/epilogue.h"

namespace sparrow {

namespace {

// The index of the only node that reads `value` when nothing else does (nor is it a graph output).
std::optional<size_t> sole_reader(const Model& m, const std::string& value) {
  for (const auto& out : m.outputs)
    if (out.name == value) return std::nullopt;
  std::optional<size_t> reader;
  for (size_t j = 0; j < m.nodes.size(); ++j)
    for (const auto& in : m.nodes[j].inputs)
      if (in == value) {
        if (reader && *reader != j) return std::nullopt;
        reader = j;
      }
  return reader;
}

const Tensor* float_initializer(const Model& m, const std::string& name) {
  auto it = m.initializers.find(name);
  return it != m.initializers.end() && it->second.dtype() == DType::f32 ? &it->second : nullptr;
}

// The bounds of a Relu or constant-bounded Clip node, nullopt for any other node.
std::optional<Activation> activation_of(const Model& m, const Node& node) {
  if (node.inputs.empty() || node.outputs.size() != 1) return std::nullopt;
  if (node.op_type == "Relu") return Activation{0.0f};
  if (node.op_type != "Clip") return std::nullopt;
  Activation a;
  if (m.opset < 11) {
    auto lo = node.attr_float("min", a.lo), hi = node.attr_float("max", a.hi);
    if (!lo.ok() || !hi.ok() || !(*lo <= *hi)) return std::nullopt;
    return Activation{*lo, *hi};
  }
  float* bound[2] = {&a.lo, &a.hi};
  for (size_t i = 1; i < node.inputs.size() && i < 3; ++i) {
    if (node.inputs[i].empty()) continue;
    const Tensor* t = float_initializer(m, node.inputs[i]);
    if (t == nullptr || t->numel() != 1) return std::nullopt;
    *bound[i - 1] = t->f32_data()[0];
  }
  if (!(a.lo <= a.hi)) return std::nullopt;  // NaN or crossed bounds: left to the Clip op to report
  return a;
}

// Node `i` takes over the output of node `j` (which read only node i's output) and node j is dropped.
// Node j's other inputs are constants, so node i's place in the order still suits every reader.
void absorb(Model& m, size_t i, size_t j) {
  m.nodes[i].outputs[0] = m.nodes[j].outputs[0];
  m.nodes.erase(m.nodes.begin() + static_cast<std::ptrdiff_t>(j));
}

}  // namespace

Result<Activation> fused_activation(const Node& node) {
  if (!node.attrs.count(kFusedActivationAttr)) return Activation{};
  SP_ASSIGN_OR_RETURN(auto bounds, node.attr_floats(kFusedActivationAttr));
  if (bounds.size() != 2 || !(bounds[0] <= bounds[1]))
    return errorf("{}: attribute '{}' must hold two bounds lo <= hi", node.describe(), kFusedActivationAttr);
  return Activation{bounds[0], bounds[1]};
}

bool takes_fused_activation(const std::string& op_type) {
  static const std::set<std::string> kTakes = {"Conv", "Gemm", "MatMul", "Add"};
  return kTakes.count(op_type) > 0;
}

int fuse_matmul_bias(Model& m, const ConstantShape& constant_shape) {
  int fused = 0;
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    Node& mm = m.nodes[i];
    if (mm.op_type != "MatMul" || mm.inputs.size() != 2 || mm.outputs.size() != 1) continue;
    auto w = constant_shape(mm.inputs[1]);
    auto j = sole_reader(m, mm.outputs[0]);
    if (!w || w->size() != 2 || !j || m.nodes[*j].op_type != "Add" || m.nodes[*j].inputs.size() != 2)
      continue;
    const Node& add = m.nodes[*j];
    const std::string other = add.inputs[add.inputs[0] == mm.outputs[0] ? 1 : 0];
    const Tensor* b = float_initializer(m, other);
    if (b == nullptr || b->rank() != 1 || b->dim(0) != (*w)[1] || other == mm.outputs[0]) continue;
    mm.inputs.push_back(other);
    absorb(m, i, *j);
    ++fused;
  }
  return fused;
}

int fuse_activations(Model& m, const ConstantShape&) {
  int fused = 0;
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    Node& node = m.nodes[i];
    if (!takes_fused_activation(node.op_type) || node.outputs.size() != 1 ||
        node.attrs.count(kFusedActivationAttr))
      continue;
    auto j = sole_reader(m, node.outputs[0]);
    if (!j || m.nodes[*j].inputs[0] != node.outputs[0]) continue;
    auto act = activation_of(m, m.nodes[*j]);
    if (!act) continue;
    node.attrs[kFusedActivationAttr] = std::vector<float>{act->lo, act->hi};
    log(LogLevel::debug, "fused {} into {}", m.nodes[*j].describe(), node.describe());
    absorb(m, i, *j);
    ++fused;
  }
  return fused;
}

int run_graph_passes(Model& model, const ConstantShape& constant_shape) {
  return fuse_matmul_bias(model, constant_shape) + fuse_activations(model, constant_shape);
}

}  // namespace sparrow
