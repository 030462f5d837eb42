// Low-rank factorization: the rules, fully connected layers and LSTM input weights by the truncated SVD
// (Eigen), and the pass over the graph (convolutions are in lowrank_conv.cpp).
#include <Eigen/SVD>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <set>

#include "compress/graph_names.h"
#include "compress/lowrank_parts.h"
#include "core/finite.h"
#include "sparrow/compress.h"
#include "sparrow/weight_roles.h"

namespace sparrow {

namespace {

using lowrank::RowMajor;

// The largest rank a rule may name.
constexpr double kMaxRank = 2147483648.0;

// The weight as the matrix [out, in] (see MatrixView).
RowMajor view_matrix(const Tensor& w, const MatrixView& v) {
  RowMajor m(v.rows, v.cols);
  const float* p = w.f32_data();
  for (int64_t r = 0; r < v.rows; ++r)
    for (int64_t c = 0; c < v.cols; ++c) m(r, c) = v.transposed ? p[c * v.rows + r] : p[r * v.cols + c];
  return m;
}

// The Gemm or MatMul weight `node` multiplies by, or nullopt when the factorization does not take
// it (not a 2-D float32 initializer read by this node only).
std::optional<CompressibleLayer> fc_layer(const Model& model, const Node& node,
                                          const std::map<std::string, int>& read_by) {
  if (node.op_type != "Gemm" && node.op_type != "MatMul") return std::nullopt;
  if (!node.has_input(1)) return std::nullopt;
  const WeightRole* role = weight_role(node, 1);
  auto it = model.initializers.find(node.inputs[1]);
  if (role == nullptr || it == model.initializers.end() || it->second.dtype() != DType::f32 ||
      it->second.shape().size() != 2 || read_by.at(node.inputs[1]) != 1)
    return std::nullopt;
  auto view = weight_view(node, *role, it->second.shape());
  if (!view) return std::nullopt;
  return CompressibleLayer{node.inputs[1], node.name, false, *view};
}

// The weight of a Conv the factorization takes: group 1, 1-D or 2-D, a window of more than one
// tap, a float32 initializer read by this node only.
std::optional<std::string> conv_weight(const Model& model, const Node& node,
                                       const std::map<std::string, int>& read_by) {
  if (node.op_type != "Conv" || !node.has_input(1)) return std::nullopt;
  auto group = node.attr_int("group", 1);
  auto it = model.initializers.find(node.inputs[1]);
  if (!group.ok() || *group != 1 || it == model.initializers.end() || it->second.dtype() != DType::f32 ||
      read_by.at(node.inputs[1]) != 1)
    return std::nullopt;
  const Shape& shape = it->second.shape();
  if (shape.size() < 3 || shape.size() > 4 || shape_numel(shape) == 0 ||
      shape_numel(shape) == shape[0] * shape[1])
    return std::nullopt;
  return node.inputs[1];
}

// The two nodes that replace a Gemm or MatMul: first = input x Q, second = hidden x P (+ bias).
std::pair<Node, Node> fc_factor_nodes(const Node& node, const FactorizedLayer& f, const std::string& hidden) {
  Node first, second;
  first.name = node.name + "/lowrank_q";
  second.name = node.name + "/lowrank_p";
  first.op_type = second.op_type = node.op_type;
  first.domain = second.domain = node.domain;
  first.inputs = {node.inputs[0], f.factors[0]};
  first.outputs = {hidden};
  second.inputs = {hidden, f.factors[1]};
  second.outputs = node.outputs;
  if (node.op_type == "Gemm") {
    if (node.has_input(2)) second.inputs.push_back(node.inputs[2]);
    second.attrs = node.attrs;  // alpha, beta
    second.attrs.erase("transA");
    second.attrs["transB"] = AttrValue(int64_t{1});
    if (auto a = node.attrs.find("transA"); a != node.attrs.end()) first.attrs["transA"] = a->second;
    first.attrs["transB"] = AttrValue(int64_t{1});
  }
  return {first, second};
}

// The convolution method after a rule's '+' ("cp", "groups=G"), set in `rule`.
Status parse_conv_method(const std::string& text, const std::string& method, LowRankRule& rule) {
  if (method == "cp") {
    if (rule.by == LowRankRule::By::energy)
      return errorf("low rank '{}': CP takes rank=N or params=F (it has no spectrum to keep energy of)",
                    text);
    rule.conv = LowRankRule::Conv::cp;
    return {};
  }
  const std::string prefix = "groups=";
  if (method.rfind(prefix, 0) == 0) {
    const std::string value = method.substr(prefix.size());
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), rule.groups);
    if (ec != std::errc() || p != value.data() + value.size() || rule.groups < 1 || rule.groups > 4096)
      return errorf("low rank '{}': groups must be a whole number in 1..4096", text);
    return {};
  }
  return errorf("low rank '{}': after '+' expected cp or groups=G", text);
}

}  // namespace

Result<LowRankRule> parse_low_rank_rule(const std::string& text) {
  if (text == "none") return LowRankRule{LowRankRule::By::none, 0};
  if (text.find("+cp") != std::string::npos && text.find("+groups=") != std::string::npos)
    return errorf("low rank '{}': +cp or +groups=G, not both", text);
  const size_t plus = std::min(text.rfind("+cp"), text.rfind("+groups="));
  const std::string head = text.substr(0, plus);
  const size_t eq = head.find('=');
  const std::string key = head.substr(0, eq == std::string::npos ? 0 : eq);
  LowRankRule rule;
  if (key == "energy")
    rule.by = LowRankRule::By::energy;
  else if (key == "rank")
    rule.by = LowRankRule::By::rank;
  else if (key == "params")
    rule.by = LowRankRule::By::params;
  else
    return errorf("low rank '{}': expected energy=F, rank=N, params=F or none (then +cp or +groups=G)", text);
  const std::string value = head.substr(eq + 1);
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), rule.value);
  if (ec != std::errc() || p != value.data() + value.size() || !std::isfinite(rule.value))
    return errorf("low rank '{}': '{}' is not a number", text, value);
  const bool ok = rule.by == LowRankRule::By::energy ? rule.value > 0 && rule.value <= 1
                  : rule.by == LowRankRule::By::params
                      ? rule.value > 0 && rule.value < 1
                      : rule.value >= 1 && rule.value <= kMaxRank && rule.value == std::floor(rule.value);
  if (!ok)
    return errorf("low rank '{}': {} must be {}", text, key,
                  rule.by == LowRankRule::By::energy   ? "in (0, 1]"
                  : rule.by == LowRankRule::By::params ? "in (0, 1)"
                                                       : "a whole number in 1..2^31");
  if (plus != std::string::npos) SP_RETURN_IF_ERROR(parse_conv_method(text, text.substr(plus + 1), rule));
  return rule;
}

std::string low_rank_rule_text(const LowRankRule& rule) {
  if (rule.by == LowRankRule::By::none) return "none";
  const char* key = rule.by == LowRankRule::By::energy ? "energy"
                    : rule.by == LowRankRule::By::rank ? "rank"
                                                       : "params";
  const std::string method = rule.conv == LowRankRule::Conv::cp ? "+cp"
                             : rule.groups > 1                  ? fmt::format("+groups={}", rule.groups)
                                                                : "";
  return fmt::format("{}={}{}", key, rule.value, method);
}

int64_t choose_rank(std::span<const double> s, int64_t rows, int64_t cols, const LowRankRule& rule) {
  const auto full = static_cast<int64_t>(s.size());
  if (full == 0) return 0;
  switch (rule.by) {
    case LowRankRule::By::none:
      return full;
    case LowRankRule::By::rank:
      return rule.value >= static_cast<double>(full) ? full : static_cast<int64_t>(rule.value);
    case LowRankRule::By::params:
      return std::clamp<int64_t>(
          static_cast<int64_t>(std::floor(rule.value * static_cast<double>(rows * cols) / (rows + cols))), 1,
          full);
    case LowRankRule::By::energy:
      break;
  }
  const double total = std::inner_product(s.begin(), s.end(), s.begin(), 0.0);
  double kept = 0;
  for (int64_t r = 0; r < full; ++r) {
    kept += s[r] * s[r];
    if (kept >= rule.value * total * (1 - 1e-12)) return r + 1;
  }
  return full;
}

namespace {

// W [rows, cols] ~ P [rows, rank] Q [rank, cols] by the truncated SVD at the rank `rule` gives, or
// nullopt where the factors would hold as many weights as W.
struct SvdFactors {
  RowMajor p, q;
  int64_t rank = 0;
  double relative_error = 0;
};
std::optional<SvdFactors> svd_factors(const RowMajor& w, const LowRankRule& rule) {
  Eigen::BDCSVD<Eigen::MatrixXf> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd s = svd.singularValues().cast<double>();
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t rank = choose_rank({s.data(), static_cast<size_t>(s.size())}, rows, cols, rule);
  if (rank * (rows + cols) >= rows * cols) return std::nullopt;
  SvdFactors f;
  f.rank = rank;
  const double total = s.squaredNorm();
  f.relative_error = total > 0 ? std::sqrt(s.tail(s.size() - rank).squaredNorm() / total) : 0.0;
  const Eigen::VectorXf root = svd.singularValues().head(rank).cwiseSqrt();
  f.p = svd.matrixU().leftCols(rank) * root.asDiagonal();
  f.q = root.asDiagonal() * svd.matrixV().leftCols(rank).transpose();
  return f;
}

// The record of `weight` [rows, cols] of `node` factorized by `svd`.
FactorizedLayer svd_layer(const std::string& weight, const std::string& node, int64_t rows, int64_t cols,
                          const SvdFactors& svd) {
  FactorizedLayer f;
  f.weight = weight;
  f.node = node;
  f.rows = rows;
  f.cols = cols;
  f.rank = f.rank_in = svd.rank;
  f.weights_after = svd.rank * (rows + cols);
  f.relative_error = svd.relative_error;
  return f;
}

// One Gemm or MatMul factorized by the truncated SVD, or nullopt where that would not save weights.
Result<std::optional<FactorizedLayer>> factorize_fc(Model& model, const Node& node,
                                                    const CompressibleLayer& layer, const LowRankRule& rule,
                                                    std::set<std::string>& used, std::vector<Node>& nodes) {
  const int64_t rows = layer.view.rows, cols = layer.view.cols;
  const auto svd = svd_factors(view_matrix(model.initializers.at(layer.weight), layer.view), rule);
  if (!svd) return std::optional<FactorizedLayer>();
  FactorizedLayer f = svd_layer(layer.weight, node.name, rows, cols, *svd);
  f.factors = {claim_name(used, layer.weight + ".lowrank_q"), claim_name(used, layer.weight + ".lowrank_p")};
  // MatMul multiplies by weights stored [in, out]; Gemm's factors are stored [out, in] (transB = 1).
  const bool matmul = node.op_type == "MatMul";
  const RowMajor q = matmul ? RowMajor(svd->q.transpose()) : svd->q,
                 p = matmul ? RowMajor(svd->p.transpose()) : svd->p;
  model.initializers[f.factors[0]] = lowrank::tensor_of(q, {q.rows(), q.cols()});
  model.initializers[f.factors[1]] = lowrank::tensor_of(p, {p.rows(), p.cols()});
  auto [first, second] = fc_factor_nodes(node, f, claim_name(used, node.name + "/lowrank_hidden"));
  first.name = claim_name(used, first.name);
  second.name = claim_name(used, second.name);
  nodes.push_back(std::move(first));
  nodes.push_back(std::move(second));
  return std::optional<FactorizedLayer>(std::move(f));
}

// The input weights of an LSTM the factorization takes: W [dirs, 4 H, I], a float32 initializer
// read by this node only.
std::optional<std::string> lstm_input_weight(const Model& model, const Node& node,
                                             const std::map<std::string, int>& read_by) {
  if (node.op_type != "LSTM") return std::nullopt;
  if (!node.has_input(0) || !node.has_input(1)) return std::nullopt;
  auto it = model.initializers.find(node.inputs[1]);
  if (it == model.initializers.end() || it->second.dtype() != DType::f32 || it->second.shape().size() != 3 ||
      shape_numel(it->second.shape()) == 0 || read_by.at(node.inputs[1]) != 1)
    return std::nullopt;
  return node.inputs[1];
}

// One LSTM's input weights factorized: a MatMul by Q^T before it, W replaced by P.
Result<std::optional<FactorizedLayer>> factorize_lstm(Model& model, const Node& node,
                                                      const std::string& weight, const LowRankRule& rule,
                                                      std::set<std::string>& used, std::vector<Node>& nodes) {
  const Tensor& w = model.initializers.at(weight);
  const Shape shape = w.shape();
  const int64_t rows = shape[0] * shape[1], cols = shape[2];  // every direction's gates, stacked
  const auto svd = svd_factors(Eigen::Map<const RowMajor>(w.f32_data(), rows, cols), rule);
  if (!svd) return std::optional<FactorizedLayer>();
  FactorizedLayer f = svd_layer(weight, node.name, rows, cols, *svd);
  f.node_kept = true;
  f.factors = {claim_name(used, weight + ".lowrank_q"), claim_name(used, weight + ".lowrank_p")};
  model.initializers[f.factors[0]] = lowrank::tensor_of(RowMajor(svd->q.transpose()), {cols, svd->rank});
  model.initializers[f.factors[1]] = lowrank::tensor_of(svd->p, {shape[0], shape[1], svd->rank});
  Node project;
  project.name = claim_name(used, node.name + "/lowrank_q");
  project.op_type = "MatMul";
  project.inputs = {node.inputs[0], f.factors[0]};
  project.outputs = {claim_name(used, node.name + "/lowrank_hidden")};
  Node lstm = node;
  lstm.inputs[0] = project.outputs[0];
  lstm.inputs[1] = f.factors[1];
  nodes.push_back(std::move(project));
  nodes.push_back(std::move(lstm));
  return std::optional<FactorizedLayer>(std::move(f));
}

// What the factorization takes from a node: the kind of layer and its weight.
enum class FactorKind { fc, lstm, conv };
struct FactorCandidate {
  FactorKind kind;
  std::string weight;
  std::optional<CompressibleLayer> fc;
};
std::optional<FactorCandidate> factor_candidate(const Model& model, const Node& node,
                                                const std::map<std::string, int>& read_by) {
  if (auto fc = fc_layer(model, node, read_by)) return FactorCandidate{FactorKind::fc, fc->weight, fc};
  if (auto w = lstm_input_weight(model, node, read_by))
    return FactorCandidate{FactorKind::lstm, *w, std::nullopt};
  if (auto w = conv_weight(model, node, read_by)) return FactorCandidate{FactorKind::conv, *w, std::nullopt};
  return std::nullopt;
}

Result<std::optional<FactorizedLayer>> factorize_candidate(Model& model, const Node& node,
                                                           const FactorCandidate& c, const LowRankRule& rule,
                                                           std::set<std::string>& used,
                                                           std::vector<Node>& nodes) {
  switch (c.kind) {
    case FactorKind::fc:
      return factorize_fc(model, node, *c.fc, rule, used, nodes);
    case FactorKind::lstm:
      return factorize_lstm(model, node, c.weight, rule, used, nodes);
    case FactorKind::conv:
      break;
  }
  return lowrank::factorize_conv(model, node, c.weight, rule, used, nodes);
}

}  // namespace

Result<std::vector<FactorizedLayer>> factorize_low_rank(Model& model, const LowRankRule& global,
                                                        const std::map<std::string, LowRankRule>& per_layer) {
  std::vector<FactorizedLayer> done;
  const std::map<std::string, int> read_by = value_readers(model);
  std::set<std::string> used = names_in_use(model);
  std::vector<Node> nodes;
  for (const Node& node : model.nodes) {
    const auto candidate = factor_candidate(model, node, read_by);
    const std::string weight = candidate ? candidate->weight : std::string();
    LowRankRule rule = global;
    for (const std::string& key : {node.name, weight})
      if (auto it = per_layer.find(key); it != per_layer.end()) rule = it->second;
    if (!candidate || rule.by == LowRankRule::By::none) {
      nodes.push_back(node);
      continue;
    }
    SP_RETURN_IF_ERROR(require_finite(model.initializers.at(weight).f32_span(),
                                      fmt::format("layer '{}' (weight '{}')", node.name, weight),
                                      "; only finite weights can be factorized"));
    const size_t before = nodes.size();
    SP_ASSIGN_OR_RETURN(std::optional<FactorizedLayer> f,
                        factorize_candidate(model, node, *candidate, rule, used, nodes));
    if (!f) {  // no smaller than the layer: left as it is
      nodes.resize(before);
      nodes.push_back(node);
      continue;
    }
    model.initializers.erase(weight);
    done.push_back(std::move(*f));
  }
  model.nodes = std::move(nodes);
  SP_RETURN_IF_ERROR(model.validate().prefixed("after low-rank factorization"));
  return done;
}

bool CompressOptions::factorizes() const {
  const auto any = [](const std::optional<LowRankRule>& r) { return r && r->by != LowRankRule::By::none; };
  return any(low_rank) || std::any_of(layers.begin(), layers.end(),
                                      [&](const auto& layer) { return any(layer.second.low_rank); });
}

Result<std::vector<FactorizedLayer>> factorize_layers(Model& model, const CompressOptions& options) {
  std::map<std::string, LowRankRule> per_layer;
  for (const auto& [name, s] : options.layers)  // an excluded layer stays whole unless it has its own rule
    if (s.low_rank || s.exclude) per_layer[name] = s.low_rank.value_or(LowRankRule{LowRankRule::By::none, 0});
  return factorize_low_rank(model, options.low_rank.value_or(LowRankRule{LowRankRule::By::none, 0}),
                            per_layer);
}

CompressOptions options_after_factorizing(const CompressOptions& options,
                                          const std::vector<FactorizedLayer>& factorized) {
  CompressOptions o = options;
  o.low_rank.reset();
  for (auto& [name, s] : o.layers) s.low_rank.reset();
  for (const FactorizedLayer& f : factorized) {
    // As resolve_layer_settings reads them: the node's settings, then the weight's over them. A
    // node that stays (an LSTM) keeps its settings for its other weights.
    std::optional<LayerSettings> merged;
    for (const std::string& key : {f.node, f.weight}) {
      auto it = o.layers.find(key);
      if (it == o.layers.end()) continue;
      const LayerSettings& s = it->second;
      if (!merged)
        merged = s;
      else
        merge_layer_settings(*merged, s);
      if (key != f.node || !f.node_kept) o.layers.erase(it);
    }
    if (merged)
      for (const std::string& factor : f.factors) o.layers[factor] = *merged;
  }
  return o;
}

namespace lowrank {

Tensor tensor_of(const RowMajor& m, const Shape& shape) {
  Tensor t(DType::f32, shape);
  std::copy_n(m.data(), m.size(), t.f32_data());
  return t;
}

LeftSvd left_svd(const RowMajor& m) {
  Eigen::BDCSVD<Eigen::MatrixXf> svd(m, Eigen::ComputeThinU);
  return {svd.matrixU(), svd.singularValues().cast<double>()};
}

}  // namespace lowrank

}  // namespace sparrow
