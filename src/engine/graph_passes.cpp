#include "engine/graph_passes.h"

#include <algorithm>
#include <cmath>
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
// Node j's other inputs are constants or formed before node i, so node i's place in the order still
// suits every reader.
void absorb(Model& m, size_t i, size_t j) {
  m.nodes[i].outputs[0] = m.nodes[j].outputs[0];
  m.nodes.erase(m.nodes.begin() + static_cast<std::ptrdiff_t>(j));
}

// Every node that reads `value` (empty when it is a graph output: it must stay formed).
std::vector<size_t> readers(const Model& m, const std::string& value) {
  for (const auto& out : m.outputs)
    if (out.name == value) return {};
  std::vector<size_t> found;
  for (size_t j = 0; j < m.nodes.size(); ++j)
    if (std::find(m.nodes[j].inputs.begin(), m.nodes[j].inputs.end(), value) != m.nodes[j].inputs.end())
      found.push_back(j);
  return found;
}

// The one-value float constant `name` holds, if it is one.
std::optional<float> scalar_constant(const Model& m, const std::string& name) {
  const Tensor* t = float_initializer(m, name);
  if (t == nullptr || t->numel() != 1) return std::nullopt;
  return t->f32_data()[0];
}

// The node at `i` if it is `op_type` reading `in` (as input `index`, or either of two inputs when
// index is -1).
const Node* node_reading(const Model& m, std::optional<size_t> i, const char* op_type, const std::string& in,
                         int index = 0) {
  if (!i) return nullptr;
  const Node& n = m.nodes[*i];
  if (n.op_type != op_type || n.outputs.size() != 1 || n.inputs.empty()) return nullptr;
  const bool reads = index >= 0 ? static_cast<size_t>(index) < n.inputs.size() && n.inputs[index] == in
                                : std::find(n.inputs.begin(), n.inputs.end(), in) != n.inputs.end();
  return reads ? &n : nullptr;
}

// A ReduceMean over the last axis keeping it (opset < 18: axes as an attribute).
bool mean_over_last_axis(const Node& n) {
  auto axes = n.attr_ints("axes", std::vector<int64_t>{});
  auto keep = n.attr_int("keepdims", 1);
  return n.inputs.size() == 1 && axes.ok() && *axes == std::vector<int64_t>{-1} && keep.ok() && *keep == 1;
}

// The other input of a two-input node than `known`.
std::string other_input(const Node& n, const std::string& known) {
  return n.inputs.size() == 2 ? (n.inputs[0] == known ? n.inputs[1] : n.inputs[0]) : std::string();
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

namespace {

// Whether `value` is known before node `i` runs: a graph input, or an output of an earlier node.
bool formed_before(const Model& m, const std::string& value, size_t i) {
  for (const auto& in : m.inputs)
    if (in.name == value) return true;
  for (size_t k = 0; k < i; ++k)
    if (std::find(m.nodes[k].outputs.begin(), m.nodes[k].outputs.end(), value) != m.nodes[k].outputs.end())
      return true;
  return false;
}

}  // namespace

int fuse_residual_adds(Model& m, const ConstantShape& constant_shape) {
  int fused = 0;
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    Node& conv = m.nodes[i];
    if (conv.op_type != "Conv" || conv.outputs.size() != 1 || conv.inputs.size() < 2 ||
        conv.inputs.size() > kFusedResidualInput || conv.attrs.count(kFusedResidualAttr) ||
        conv.attrs.count(kFusedActivationAttr))
      continue;
    auto j = sole_reader(m, conv.outputs[0]);
    if (!j || m.nodes[*j].op_type != "Add" || m.nodes[*j].inputs.size() != 2 ||
        m.nodes[*j].outputs.size() != 1)
      continue;
    const Node& add = m.nodes[*j];
    const std::string residual = other_input(add, conv.outputs[0]);
    if (residual.empty() || residual == conv.outputs[0] || constant_shape(residual) ||
        !formed_before(m, residual, i))
      continue;
    conv.inputs.resize(kFusedResidualInput);  // an omitted bias stays omitted ("")
    conv.inputs.push_back(residual);
    conv.attrs[kFusedResidualAttr] = int64_t{1};
    if (add.attrs.count(kFusedActivationAttr))
      conv.attrs[kFusedActivationAttr] = add.attrs.at(kFusedActivationAttr);
    log(LogLevel::debug, "fused {} into {}", add.describe(), conv.describe());
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

namespace {

// The nodes of one exported layer normalization, as fuse_layer_norm matches them.
struct LayerNormMatch {
  std::vector<size_t> nodes;  // every node of the pattern
  std::string x, scale, bias, out;
  float epsilon = 0.0f;
};

// Extends a match whose output `r.out` is read only by `op_type` with a constant rank-1 vector
// (recorded in `vector`): the node joins the match and its output becomes the match's output.
bool absorb_vector_op(const Model& m, const char* op_type, LayerNormMatch& r, std::string& vector) {
  auto at = sole_reader(m, r.out);
  const Node* n = node_reading(m, at, op_type, r.out, -1);
  if (!n) return false;
  const Tensor* t = float_initializer(m, other_input(*n, r.out));
  if (t == nullptr || t->rank() != 1) return false;
  vector = other_input(*n, r.out);
  r.nodes.push_back(*at);
  r.out = n->outputs[0];
  return true;
}

std::optional<LayerNormMatch> match_layer_norm(const Model& m, size_t i) {
  const Node& mean = m.nodes[i];
  if (mean.op_type != "ReduceMean" || mean.outputs.size() != 1 || !mean_over_last_axis(mean))
    return std::nullopt;
  LayerNormMatch r;
  r.nodes = {i};
  r.x = mean.inputs[0];
  auto sub_at = sole_reader(m, mean.outputs[0]);
  const Node* sub = node_reading(m, sub_at, "Sub", mean.outputs[0], 1);
  if (!sub || sub->inputs[0] != r.x) return std::nullopt;
  const std::string& d = sub->outputs[0];
  const auto d_readers = readers(m, d);
  if (d_readers.size() != 2) return std::nullopt;
  const size_t pow_at = m.nodes[d_readers[0]].op_type == "Pow" ? d_readers[0] : d_readers[1];
  const size_t div_at = pow_at == d_readers[0] ? d_readers[1] : d_readers[0];
  const Node* pow = node_reading(m, pow_at, "Pow", d);
  if (!pow || pow->inputs.size() != 2 || scalar_constant(m, pow->inputs[1]) != 2.0f) return std::nullopt;
  auto var_at = sole_reader(m, pow->outputs[0]);
  const Node* var = node_reading(m, var_at, "ReduceMean", pow->outputs[0]);
  if (!var || !mean_over_last_axis(*var)) return std::nullopt;
  auto add_at = sole_reader(m, var->outputs[0]);
  const Node* add = node_reading(m, add_at, "Add", var->outputs[0], -1);
  if (!add) return std::nullopt;
  auto epsilon = scalar_constant(m, other_input(*add, var->outputs[0]));
  if (!epsilon || !(*epsilon >= 0.0f) || !std::isfinite(*epsilon)) return std::nullopt;
  auto sqrt_at = sole_reader(m, add->outputs[0]);
  const Node* root = node_reading(m, sqrt_at, "Sqrt", add->outputs[0]);
  if (!root) return std::nullopt;
  const Node* div = node_reading(m, div_at, "Div", d, 0);
  if (!div || div->inputs.size() != 2 || div->inputs[1] != root->outputs[0] ||
      sole_reader(m, root->outputs[0]) != div_at)
    return std::nullopt;
  r.nodes.insert(r.nodes.end(), {*sub_at, pow_at, *var_at, *add_at, *sqrt_at, div_at});
  r.epsilon = *epsilon;
  r.out = div->outputs[0];
  // The affine part, when constant vectors follow: Mul by the scale, then Add the bias.
  if (absorb_vector_op(m, "Mul", r, r.scale)) absorb_vector_op(m, "Add", r, r.bias);
  return r;
}

}  // namespace

int fuse_layer_norm(Model& m, const ConstantShape&) {
  int fused = 0;
  for (size_t i = 0; i < m.nodes.size();) {
    auto match = match_layer_norm(m, i);
    if (!match) {
      ++i;
      continue;
    }
    std::vector<std::string> inputs{match->x};
    if (!match->scale.empty() || !match->bias.empty()) inputs.push_back(match->scale);
    if (!match->bias.empty()) inputs.push_back(match->bias);
    Node fused_node{m.nodes[i].name + "/LayerNormalization",
                    "LayerNormalization",
                    "",
                    inputs,
                    {match->out},
                    {{"axis", int64_t{-1}}, {"epsilon", match->epsilon}}};
    // The fused node takes the place of the pattern's last node; the others go.
    const size_t last = *std::max_element(match->nodes.begin(), match->nodes.end());
    m.nodes[last] = std::move(fused_node);
    std::vector<size_t> drop(match->nodes.begin(), match->nodes.end());
    std::sort(drop.rbegin(), drop.rend());
    for (size_t j : drop)
      if (j != last) m.nodes.erase(m.nodes.begin() + static_cast<std::ptrdiff_t>(j));
    log(LogLevel::debug, "fused a layer normalization into one node, output '{}'", match->out);
    ++fused;
  }
  return fused;
}

int run_graph_passes(Model& model, const ConstantShape& constant_shape) {
  // One statement each: the operands of + are evaluated in no fixed order.
  int rewrites = fuse_layer_norm(model, constant_shape);
  rewrites += fuse_matmul_bias(model, constant_shape);
  rewrites += fuse_residual_adds(model, constant_shape);
  rewrites += fuse_activations(model, constant_shape);
  return rewrites;
}

}  // namespace sparrow
