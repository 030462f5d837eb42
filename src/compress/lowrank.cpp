// Low-rank factorization: fully connected layers by truncated SVD, convolutions by Tucker-2 (Eigen
// does the SVDs).
#include <Eigen/SVD>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <set>

#include "compress/graph_names.h"
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

// A 1x1 (or 1) convolution node reading `in` with `weight`, writing `out`.
Node pointwise_conv(const Node& like, const std::string& name, const std::string& in,
                    const std::string& weight, const std::string& out, size_t spatial_dims) {
  Node n;
  n.name = name;
  n.op_type = "Conv";
  n.domain = like.domain;
  n.inputs = {in, weight};
  n.outputs = {out};
  n.attrs["kernel_shape"] = AttrValue(std::vector<int64_t>(spatial_dims, 1));
  return n;
}

// The leading left singular vectors and the singular values of `m`.
struct LeftSvd {
  Eigen::MatrixXf u;
  Eigen::VectorXd s;
};
LeftSvd left_svd(const RowMajor& m) {
  Eigen::BDCSVD<Eigen::MatrixXf> svd(m, Eigen::ComputeThinU);
  return {svd.matrixU(), svd.singularValues().cast<double>()};
}

// The Tucker-2 ranks (output side, input side) of a [M, C, k] weight under `rule`.
std::pair<int64_t, int64_t> tucker_ranks(const LeftSvd& out, const LeftSvd& in, int64_t M, int64_t C,
                                         int64_t k, const LowRankRule& rule) {
  auto span = [](const LeftSvd& d) {
    return std::span<const double>(d.s.data(), static_cast<size_t>(d.s.size()));
  };
  if (rule.by != LowRankRule::By::params)
    return {choose_rank(span(out), M, C * k, rule), choose_rank(span(in), C, M * k, rule)};
  // params: the largest t whose ranks t M and t C (at least 1) fit the budget, in steps of 1/1024.
  const double budget = rule.value * static_cast<double>(M * C * k);
  std::pair<int64_t, int64_t> best{1, 1};
  for (int step = 1; step <= 1024; ++step) {
    const double t = step / 1024.0;
    const int64_t r = std::max<int64_t>(1, static_cast<int64_t>(t * M)),
                  q = std::max<int64_t>(1, static_cast<int64_t>(t * C));
    if (static_cast<double>(C * q + q * r * k + r * M) > budget) break;
    best = {r, q};
  }
  return best;
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

namespace {

// One Gemm or MatMul factorized by the truncated SVD, or nullopt where that would not save weights.
Result<std::optional<FactorizedLayer>> factorize_fc(Model& model, const Node& node,
                                                    const CompressibleLayer& layer, const LowRankRule& rule,
                                                    std::set<std::string>& used, std::vector<Node>& nodes) {
  const RowMajor w = view_matrix(model.initializers.at(layer.weight), layer.view);
  Eigen::BDCSVD<Eigen::MatrixXf> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd s = svd.singularValues().cast<double>();
  const int64_t rows = layer.view.rows, cols = layer.view.cols;
  const int64_t rank = choose_rank({s.data(), static_cast<size_t>(s.size())}, rows, cols, rule);
  if (rank * (rows + cols) >= rows * cols) return std::optional<FactorizedLayer>();
  FactorizedLayer f{layer.weight, node.name, {}, rows, cols, rank, rank, rank * (rows + cols), 0};
  const double total = s.squaredNorm();
  f.relative_error = total > 0 ? std::sqrt(s.tail(s.size() - rank).squaredNorm() / total) : 0.0;
  const Eigen::VectorXf root = svd.singularValues().head(rank).cwiseSqrt();
  RowMajor p = svd.matrixU().leftCols(rank) * root.asDiagonal();              // [out, rank]
  RowMajor q = root.asDiagonal() * svd.matrixV().leftCols(rank).transpose();  // [rank, in]
  f.factors = {claim_name(used, layer.weight + ".lowrank_q"), claim_name(used, layer.weight + ".lowrank_p")};
  // MatMul multiplies by weights stored [in, out]; Gemm's factors are stored [out, in] (transB = 1).
  const bool matmul = node.op_type == "MatMul";
  model.initializers[f.factors[0]] = tensor_of(matmul ? RowMajor(q.transpose()) : q);
  model.initializers[f.factors[1]] = tensor_of(matmul ? RowMajor(p.transpose()) : p);
  auto [first, second] = fc_factor_nodes(node, f, claim_name(used, node.name + "/lowrank_hidden"));
  first.name = claim_name(used, first.name);
  second.name = claim_name(used, second.name);
  nodes.push_back(std::move(first));
  nodes.push_back(std::move(second));
  return std::optional<FactorizedLayer>(std::move(f));
}

// One Conv factorized by Tucker-2, or nullopt where that would not save weights.
Result<std::optional<FactorizedLayer>> factorize_conv(Model& model, const Node& node, const std::string& name,
                                                      const LowRankRule& rule, std::set<std::string>& used,
                                                      std::vector<Node>& nodes) {
  const Tensor& weight = model.initializers.at(name);
  const Shape shape = weight.shape();
  const int64_t M = shape[0], C = shape[1], k = shape_numel(shape) / (M * C);
  const float* w = weight.f32_data();
  RowMajor by_out = Eigen::Map<const RowMajor>(w, M, C * k);  // [M, C k]
  RowMajor by_in(C, M * k);                                   // [C, M k]
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < k; ++t) by_in(c, m * k + t) = w[(m * C + c) * k + t];
  const LeftSvd out = left_svd(by_out), in = left_svd(by_in);
  const auto [r_out, r_in] = tucker_ranks(out, in, M, C, k, rule);
  const int64_t after = C * r_in + r_in * r_out * k + r_out * M;
  if (after >= M * C * k) return std::optional<FactorizedLayer>();
  const Eigen::MatrixXf u_out = out.u.leftCols(r_out), u_in = in.u.leftCols(r_in);
  // core[a, b, t] = sum over m, c of u_out[m, a] u_in[c, b] W[m, c, t]: first over m, then over c.
  const RowMajor over_out = u_out.transpose() * by_out;  // [r_out, C k]
  RowMajor core(r_out, r_in * k);
  for (int64_t a = 0; a < r_out; ++a) {
    const Eigen::Map<const RowMajor> slice(over_out.row(a).data(), C, k);
    Eigen::Map<RowMajor>(core.row(a).data(), r_in, k) = u_in.transpose() * slice;
  }
  // The reconstruction, back through the same two products, for the relative error.
  RowMajor rebuilt_in(r_out, C * k);
  for (int64_t a = 0; a < r_out; ++a) {
    const Eigen::Map<const RowMajor> g(core.row(a).data(), r_in, k);
    Eigen::Map<RowMajor>(rebuilt_in.row(a).data(), C, k) = u_in * g;
  }
  const double norm = by_out.cast<double>().norm();
  const double error = (by_out - u_out * rebuilt_in).cast<double>().norm();
  FactorizedLayer f{name, node.name, {}, M, C * k, r_out, r_in, after, norm > 0 ? error / norm : 0.0};
  f.factors = {claim_name(used, name + ".tucker_reduce"), claim_name(used, name + ".tucker_core"),
               claim_name(used, name + ".tucker_expand")};
  const size_t spatial = shape.size() - 2;
  Shape reduce_shape = {r_in, C}, core_shape = {r_out, r_in}, expand_shape = {M, r_out};
  for (size_t d = 0; d < spatial; ++d) {
    reduce_shape.push_back(1);
    core_shape.push_back(shape[2 + d]);
    expand_shape.push_back(1);
  }
  Tensor reduce(DType::f32, reduce_shape), core_t(DType::f32, core_shape), expand(DType::f32, expand_shape);
  const RowMajor u_in_t = u_in.transpose();  // [r_in, C]
  std::copy_n(u_in_t.data(), u_in_t.size(), reduce.f32_data());
  std::copy_n(core.data(), core.size(), core_t.f32_data());
  const RowMajor u_out_rows = u_out;  // [M, r_out]
  std::copy_n(u_out_rows.data(), u_out_rows.size(), expand.f32_data());
  model.initializers[f.factors[0]] = std::move(reduce);
  model.initializers[f.factors[1]] = std::move(core_t);
  model.initializers[f.factors[2]] = std::move(expand);
  const std::string h1 = claim_name(used, node.name + "/tucker_reduced"),
                    h2 = claim_name(used, node.name + "/tucker_cored");
  Node first = pointwise_conv(node, claim_name(used, node.name + "/tucker_reduce"), node.inputs[0],
                              f.factors[0], h1, spatial);
  Node middle = node;
  middle.name = claim_name(used, node.name + "/tucker_core");
  middle.inputs = {h1, f.factors[1]};
  middle.outputs = {h2};
  Node last = pointwise_conv(node, claim_name(used, node.name + "/tucker_expand"), h2, f.factors[2],
                             node.outputs[0], spatial);
  if (node.has_input(2)) last.inputs.push_back(node.inputs[2]);
  last.outputs = node.outputs;
  nodes.push_back(std::move(first));
  nodes.push_back(std::move(middle));
  nodes.push_back(std::move(last));
  return std::optional<FactorizedLayer>(std::move(f));
}

}  // namespace

Result<std::vector<FactorizedLayer>> factorize_low_rank(Model& model, const LowRankRule& global,
                                                        const std::map<std::string, LowRankRule>& per_layer) {
  std::vector<FactorizedLayer> done;
  const std::map<std::string, int> read_by = value_readers(model);
  std::set<std::string> used = names_in_use(model);
  std::vector<Node> nodes;
  for (const Node& node : model.nodes) {
    const auto fc = fc_layer(model, node, read_by);
    const auto conv = fc ? std::nullopt : conv_weight(model, node, read_by);
    const std::string weight = fc ? fc->weight : conv ? *conv : std::string();
    LowRankRule rule = global;
    for (const std::string& key : {node.name, weight})
      if (auto it = per_layer.find(key); it != per_layer.end()) rule = it->second;
    if (weight.empty() || rule.by == LowRankRule::By::none) {
      nodes.push_back(node);
      continue;
    }
    SP_RETURN_IF_ERROR(require_finite(model.initializers.at(weight).f32_span(),
                                      fmt::format("layer '{}' (weight '{}')", node.name, weight),
                                      "; only finite weights can be factorized"));
    const size_t before = nodes.size();
    SP_ASSIGN_OR_RETURN(std::optional<FactorizedLayer> f,
                        fc ? factorize_fc(model, node, *fc, rule, used, nodes)
                           : factorize_conv(model, node, weight, rule, used, nodes));
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
    // As resolve_layer_settings reads them: the node's settings, then the weight's over them.
    std::optional<LayerSettings> merged;
    for (const std::string& key : {f.node, f.weight}) {
      auto it = o.layers.find(key);
      if (it == o.layers.end()) continue;
      const LayerSettings& s = it->second;
      if (!merged)
        merged = s;
      else
        merge_layer_settings(*merged, s);
      o.layers.erase(it);
    }
    if (merged)
      for (const std::string& factor : f.factors) o.layers[factor] = *merged;
  }
  return o;
}

}  // namespace sparrow
