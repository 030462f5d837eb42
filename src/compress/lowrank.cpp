// Low-rank factorization of fully connected layers by truncated SVD (Eigen does the SVD).
#include <Eigen/SVD>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <set>

#include "core/finite.h"
#include "sparrow/compress.h"
#include "sparrow/weight_roles.h"

namespace sparrow {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

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

Tensor tensor_of(const RowMajor& m) {
  Tensor t(DType::f32, {m.rows(), m.cols()});
  std::copy_n(m.data(), m.size(), t.f32_data());
  return t;
}

// How many nodes read each value.
std::map<std::string, int> readers(const Model& model) {
  std::map<std::string, int> n;
  for (const Node& node : model.nodes)
    for (const std::string& in : node.inputs) ++n[in];
  return n;
}

// Every name in use: values, initializers, graph inputs and node names.
std::set<std::string> names_in_use(const Model& model) {
  std::set<std::string> used;
  for (const auto& [name, t] : model.initializers) used.insert(name);
  for (const ValueInfo& v : model.inputs) used.insert(v.name);
  for (const Node& n : model.nodes) {
    used.insert(n.name);
    used.insert(n.outputs.begin(), n.outputs.end());
  }
  return used;
}

// `base`, or base_2, base_3... whichever is not in `used` yet; it is then.
std::string claim_name(std::set<std::string>& used, const std::string& base) {
  std::string name = base;
  for (int k = 2; used.count(name); ++k) name = base + "_" + std::to_string(k);
  used.insert(name);
  return name;
}

// The fully connected node at `index`, or nullopt when it is not one the factorization takes.
std::optional<CompressibleLayer> factorizable(const Model& model, const Node& node,
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

// The two nodes that replace `node`: first = input x Q, second = hidden x P (+ bias).
std::pair<Node, Node> factor_nodes(const Node& node, const FactorizedLayer& f, const std::string& hidden) {
  Node first, second;
  first.name = node.name + "/lowrank_q";
  second.name = node.name + "/lowrank_p";
  first.op_type = second.op_type = node.op_type;
  first.domain = second.domain = node.domain;
  first.inputs = {node.inputs[0], f.first_weight};
  first.outputs = {hidden};
  second.inputs = {hidden, f.second_weight};
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

}  // namespace

Result<LowRankRule> parse_low_rank_rule(const std::string& text) {
  if (text == "none") return LowRankRule{LowRankRule::By::none, 0};
  const size_t eq = text.find('=');
  const std::string key = text.substr(0, eq == std::string::npos ? 0 : eq);
  LowRankRule rule;
  if (key == "energy")
    rule.by = LowRankRule::By::energy;
  else if (key == "rank")
    rule.by = LowRankRule::By::rank;
  else if (key == "params")
    rule.by = LowRankRule::By::params;
  else
    return errorf("low rank '{}': expected energy=F, rank=N, params=F or none", text);
  const std::string value = text.substr(eq + 1);
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
  return rule;
}

std::string low_rank_rule_text(const LowRankRule& rule) {
  if (rule.by == LowRankRule::By::none) return "none";
  const char* key = rule.by == LowRankRule::By::energy ? "energy"
                    : rule.by == LowRankRule::By::rank ? "rank"
                                                       : "params";
  return fmt::format("{}={}", key, rule.value);
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

Result<std::vector<FactorizedLayer>> factorize_fully_connected(
    Model& model, const LowRankRule& global, const std::map<std::string, LowRankRule>& per_layer) {
  std::vector<FactorizedLayer> done;
  const std::map<std::string, int> read_by = readers(model);
  std::set<std::string> used = names_in_use(model);
  std::vector<Node> nodes;
  for (const Node& node : model.nodes) {
    auto layer = factorizable(model, node, read_by);
    LowRankRule rule = global;
    for (const std::string& key : {node.name, layer ? layer->weight : std::string()})
      if (auto it = per_layer.find(key); it != per_layer.end()) rule = it->second;
    if (!layer || rule.by == LowRankRule::By::none) {
      nodes.push_back(node);
      continue;
    }
    const Tensor& weight = model.initializers.at(layer->weight);
    SP_RETURN_IF_ERROR(require_finite(weight.f32_span(),
                                      fmt::format("layer '{}' (weight '{}')", node.name, layer->weight),
                                      "; only finite weights can be factorized"));
    const RowMajor w = view_matrix(weight, layer->view);
    Eigen::BDCSVD<Eigen::MatrixXf> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Eigen::VectorXd s = svd.singularValues().cast<double>();
    const int64_t rows = layer->view.rows, cols = layer->view.cols;
    const int64_t rank = choose_rank({s.data(), static_cast<size_t>(s.size())}, rows, cols, rule);
    if (rank * (rows + cols) >= rows * cols) {  // no smaller than the layer: left as it is
      nodes.push_back(node);
      continue;
    }
    FactorizedLayer f{layer->weight, node.name, "", "", rows, cols, rank, 0};
    const double total = s.squaredNorm();
    f.relative_error = total > 0 ? std::sqrt(s.tail(s.size() - rank).squaredNorm() / total) : 0.0;
    const Eigen::VectorXf root = svd.singularValues().head(rank).cwiseSqrt();
    RowMajor p = svd.matrixU().leftCols(rank) * root.asDiagonal();              // [out, rank]
    RowMajor q = root.asDiagonal() * svd.matrixV().leftCols(rank).transpose();  // [rank, in]
    f.first_weight = claim_name(used, layer->weight + ".lowrank_q");
    f.second_weight = claim_name(used, layer->weight + ".lowrank_p");
    // MatMul multiplies by weights stored [in, out]; Gemm's factors are stored [out, in] (transB = 1).
    const bool matmul = node.op_type == "MatMul";
    model.initializers[f.first_weight] = tensor_of(matmul ? RowMajor(q.transpose()) : q);
    model.initializers[f.second_weight] = tensor_of(matmul ? RowMajor(p.transpose()) : p);
    model.initializers.erase(layer->weight);
    auto [first, second] = factor_nodes(node, f, claim_name(used, node.name + "/lowrank_hidden"));
    first.name = claim_name(used, first.name);
    second.name = claim_name(used, second.name);
    nodes.push_back(std::move(first));
    nodes.push_back(std::move(second));
    done.push_back(std::move(f));
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
  return factorize_fully_connected(model, options.low_rank.value_or(LowRankRule{LowRankRule::By::none, 0}),
                                   per_layer);
}

CompressOptions options_after_factorizing(const CompressOptions& options,
                                          const std::vector<FactorizedLayer>& factorized) {
  CompressOptions o = options;
  o.low_rank.reset();
  for (auto& [name, s] : o.layers) s.low_rank.reset();
  for (const FactorizedLayer& f : factorized) {
    // As resolve_layer_settings reads them: the node's settings, then the weight's over them.
    std::optional<LayerSettings> merged;
    for (const std::string& key : {f.node, f.weight}) {
      auto it = o.layers.find(key);
      if (it == o.layers.end()) continue;
      const LayerSettings& s = it->second;
      if (!merged) {
        merged = s;
      } else {
        if (s.prune.sparsity || s.prune.quality) merged->prune = s.prune;
        if (s.bits) merged->bits = s.bits;
        merged->exclude = merged->exclude || s.exclude;
      }
      o.layers.erase(it);
    }
    if (merged) o.layers[f.first_weight] = o.layers[f.second_weight] = *merged;
  }
  return o;
}

}  // namespace sparrow
