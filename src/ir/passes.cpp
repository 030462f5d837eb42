// Import-time graph simplification. See simplify_model in sparrow/model.h for the contract.
#include <cmath>
#include <set>

#include "core/log.h"
#include "sparrow/model.h"

namespace sparrow {

namespace {

// Number of nodes that read `value`, plus one if it is a graph output.
int count_uses(const Model& m, const std::string& value) {
  int uses = 0;
  for (const auto& node : m.nodes)
    for (const auto& in : node.inputs)
      if (in == value) ++uses;
  for (const auto& out : m.outputs)
    if (out.name == value) ++uses;
  return uses;
}

bool is_graph_output(const Model& m, const std::string& value) {
  for (const auto& out : m.outputs)
    if (out.name == value) return true;
  return false;
}

Result<Tensor> constant_value(const Node& node) {
  if (node.attrs.count("value")) return node.attr_tensor("value");
  if (node.attrs.count("value_float")) {
    SP_ASSIGN_OR_RETURN(float v, node.attr_float("value_float"));
    return Tensor::scalar_f32(v);
  }
  if (node.attrs.count("value_floats")) {
    SP_ASSIGN_OR_RETURN(auto v, node.attr_floats("value_floats"));
    return Tensor::f32({static_cast<int64_t>(v.size())}, v);
  }
  if (node.attrs.count("value_int")) {
    SP_ASSIGN_OR_RETURN(int64_t v, node.attr_int("value_int"));
    return Tensor::i64({}, std::span<const int64_t>(&v, 1));
  }
  if (node.attrs.count("value_ints")) {
    SP_ASSIGN_OR_RETURN(auto v, node.attr_ints("value_ints"));
    return Tensor::i64({static_cast<int64_t>(v.size())}, v);
  }
  return errorf(
      "{}: needs one of the attributes value, value_float(s), value_int(s) "
      "(sparse_value and value_string(s) are not supported)",
      node.describe());
}

Status constants_to_initializers(Model& m) {
  std::vector<Node> kept;
  for (auto& node : m.nodes) {
    if (node.op_type != "Constant") {
      kept.push_back(std::move(node));
      continue;
    }
    if (node.outputs.size() != 1) return errorf("{}: expected exactly one output", node.describe());
    SP_ASSIGN_OR_RETURN(Tensor value, constant_value(node));
    m.initializers[node.outputs[0]] = std::move(value);
  }
  m.nodes = std::move(kept);
  return {};
}

void rename_uses(Model& m, const std::string& from, const std::string& to) {
  for (auto& node : m.nodes)
    for (auto& in : node.inputs)
      if (in == from) in = to;
}

// Identity and Dropout pass their first input through at inference time.
void remove_pass_through_nodes(Model& m) {
  std::vector<Node> kept;
  for (auto& node : m.nodes) {
    bool pass_through = node.op_type == "Identity" || node.op_type == "Dropout";
    bool mask_used =
        node.outputs.size() > 1 && !node.outputs[1].empty() && count_uses(m, node.outputs[1]) > 0;
    if (!pass_through || mask_used || node.inputs.empty() || is_graph_output(m, node.outputs[0])) {
      kept.push_back(std::move(node));
      continue;
    }
    rename_uses(m, node.outputs[0], node.inputs[0]);
  }
  m.nodes = std::move(kept);
}

struct BnParams {
  std::vector<float> scale;  // gamma / sqrt(var + eps)
  std::vector<float> shift;  // beta - mean * scale
};

// Reads BN constants; returns nullopt (no folding) if any is not a float32 [C] initializer.
std::optional<BnParams> bn_params(const Model& m, const Node& bn) {
  if (bn.inputs.size() < 5) return std::nullopt;
  const Tensor* p[4];
  for (int i = 0; i < 4; ++i) {
    auto it = m.initializers.find(bn.inputs[i + 1]);
    if (it == m.initializers.end() || it->second.dtype() != DType::f32 || it->second.rank() != 1)
      return std::nullopt;
    p[i] = &it->second;
  }
  int64_t c = p[0]->numel();
  for (auto* t : p)
    if (t->numel() != c) return std::nullopt;
  auto eps = bn.attr_float("epsilon", 1e-5f);
  if (!eps.ok()) return std::nullopt;
  BnParams r;
  for (int64_t i = 0; i < c; ++i) {
    float s = p[0]->f32_data()[i] / std::sqrt(p[3]->f32_data()[i] + *eps);
    r.scale.push_back(s);
    r.shift.push_back(p[1]->f32_data()[i] - p[2]->f32_data()[i] * s);
  }
  return r;
}

// Folds BN into producer weights. `out_axis_stride` == elements per output channel in W,
// `channel_major`: W's first axis is the output channel (Conv, Gemm transB=1); else the last is.
bool fold_into_weights(Model& m, Node& producer, const BnParams& bn, bool channel_major) {
  Tensor& w = m.initializers.at(producer.inputs[1]);
  int64_t c = static_cast<int64_t>(bn.scale.size());
  int64_t outer = channel_major ? c : w.numel() / c;
  int64_t inner = channel_major ? w.numel() / c : c;
  if (outer * inner != w.numel()) return false;
  float* wd = w.f32_data();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) wd[o * inner + i] *= bn.scale[channel_major ? o : i];
  return true;
}

// Tries to fold one BN node into its producer; returns true if folded.
bool try_fold_batchnorm(Model& m, const Node& bn) {
  auto params = bn_params(m, bn);
  if (!params) return false;
  for (size_t i = 1; i < bn.outputs.size(); ++i)
    if (!bn.outputs[i].empty() && count_uses(m, bn.outputs[i]) > 0) return false;
  Node* producer = nullptr;
  for (auto& node : m.nodes)
    for (const auto& out : node.outputs)
      if (out == bn.inputs[0]) producer = &node;
  if (producer == nullptr || (producer->op_type != "Conv" && producer->op_type != "Gemm")) return false;
  if (count_uses(m, bn.inputs[0]) != 1 || producer->inputs.size() < 2) return false;
  const std::string& w_name = producer->inputs[1];
  auto w_it = m.initializers.find(w_name);
  if (w_it == m.initializers.end() || w_it->second.dtype() != DType::f32 || count_uses(m, w_name) != 1)
    return false;
  int64_t c = static_cast<int64_t>(params->scale.size());

  bool channel_major = true;
  float beta = 1.0f;
  if (producer->op_type == "Gemm") {
    auto trans_a = producer->attr_int("transA", 0);
    auto trans_b = producer->attr_int("transB", 0);
    auto b = producer->attr_float("beta", 1.0f);
    if (!trans_a.ok() || !trans_b.ok() || !b.ok() || w_it->second.rank() != 2) return false;
    channel_major = *trans_b != 0;
    if (w_it->second.dim(channel_major ? 0 : 1) != c) return false;
    beta = *b;
  } else if (w_it->second.rank() < 3 || w_it->second.dim(0) != c) {
    return false;
  }
  // Bias: present as an initializer of c values (not shared), or absent.
  std::vector<float> bias(static_cast<size_t>(c), 0.0f);
  bool has_bias = producer->has_input(2);
  if (has_bias) {
    auto b_it = m.initializers.find(producer->inputs[2]);
    if (b_it == m.initializers.end() || b_it->second.dtype() != DType::f32 || b_it->second.numel() != c ||
        count_uses(m, producer->inputs[2]) != 1)
      return false;
    if (producer->op_type == "Gemm" && beta == 0.0f) has_bias = false;  // C is ignored
    for (int64_t i = 0; i < c && has_bias; ++i) bias[i] = b_it->second.f32_data()[i] * beta;
  }
  if (!fold_into_weights(m, *producer, *params, channel_major)) return false;
  std::vector<float> folded(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) folded[i] = bias[i] * params->scale[i] + params->shift[i];
  std::string bias_name = producer->has_input(2) ? producer->inputs[2] : w_name + "_bn_bias";
  m.initializers[bias_name] = Tensor::f32({c}, folded);
  if (producer->inputs.size() < 3) producer->inputs.resize(3);
  producer->inputs[2] = bias_name;
  if (producer->op_type == "Gemm") producer->attrs["beta"] = 1.0f;
  producer->outputs[0] = bn.outputs[0];
  return true;
}

void fold_batchnorms(Model& m) {
  for (size_t i = 0; i < m.nodes.size();) {
    if (m.nodes[i].op_type == "BatchNormalization") {
      Node bn = m.nodes[i];
      if (try_fold_batchnorm(m, bn)) {
        log(LogLevel::debug, "folded {} into its producer", bn.describe());
        m.nodes.erase(m.nodes.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
    }
    ++i;
  }
}

void drop_unused_initializers(Model& m) {
  std::set<std::string> used;
  for (const auto& node : m.nodes)
    for (const auto& in : node.inputs) used.insert(in);
  for (const auto& out : m.outputs) used.insert(out.name);
  std::erase_if(m.initializers, [&](const auto& kv) { return !used.count(kv.first); });
}

}  // namespace

Status simplify_model(Model& model) {
  SP_RETURN_IF_ERROR(constants_to_initializers(model));
  remove_pass_through_nodes(model);
  fold_batchnorms(model);
  drop_unused_initializers(model);
  return model.validate();
}

}  // namespace sparrow
