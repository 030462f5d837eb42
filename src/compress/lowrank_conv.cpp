// Low-rank factorization of convolutions: Tucker-2 (also with a grouped core, as a sum of Tucker-2
// terms) and CP by alternating least squares. Eigen does the SVDs and the small solves.
#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <random>

#include "compress/graph_names.h"
#include "compress/lowrank_parts.h"

namespace sparrow::lowrank {

namespace {

// A convolution weight [M, C, k] (k taps of the window, the fastest axis) as the matrix [M, C k].
struct ConvTensor {
  int64_t M = 0, C = 0, k = 0;
  RowMajor by_out;  // [M, C k]
};

// [A, C k] -> [C, A k]: the same entries unfolded along the input channels.
RowMajor unfold_in(const RowMajor& x, int64_t C, int64_t k) {
  const int64_t A = x.rows();
  RowMajor out(C, A * k);
  for (int64_t a = 0; a < A; ++a)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < k; ++t) out(c, a * k + t) = x(a, c * k + t);
  return out;
}

// [A, in k] -> [A, out k]: each row's [in, k] block multiplied by m ([out, in]) on the left.
RowMajor times_each_row_block(const RowMajor& x, const Eigen::MatrixXf& m, int64_t k) {
  const int64_t A = x.rows(), in = m.cols(), out_rows = m.rows();
  RowMajor out(A, out_rows * k);
  for (int64_t a = 0; a < A; ++a) {
    const Eigen::Map<const RowMajor> block(x.row(a).data(), in, k);
    Eigen::Map<RowMajor>(out.row(a).data(), out_rows, k) = m * block;
  }
  return out;
}

// [A, C k] -> [A, r k]: each row's [C, k] block multiplied by u^T (u: [C, r]).
RowMajor project_in(const RowMajor& x, const Eigen::MatrixXf& u, int64_t k) {
  return times_each_row_block(x, u.transpose(), k);
}

// [A, r k] -> [A, C k]: each row's [r, k] block multiplied by u (u: [C, r]).
RowMajor expand_in(const RowMajor& x, const Eigen::MatrixXf& u, int64_t k) {
  return times_each_row_block(x, u, k);
}

double relative_error_of(const RowMajor& w, const RowMajor& approx) {
  const double norm = w.cast<double>().norm();
  return norm > 0 ? (w - approx).cast<double>().norm() / norm : 0.0;
}

// ---- Tucker-2 ----

// One Tucker-2 term: W ~ u_out x core x u_in over the channel axes.
struct TuckerTerm {
  Eigen::MatrixXf u_out;  // [M, r_out]
  Eigen::MatrixXf u_in;   // [C, r_in]
  RowMajor core;          // [r_out, r_in k]
};

// The core that fits `e` best for the term's two bases (e projected on both).
void fit_core(TuckerTerm& term, const RowMajor& e, int64_t k) {
  term.core = project_in(term.u_out.transpose() * e, term.u_in, k);
}

RowMajor rebuild(const TuckerTerm& term, int64_t k) {
  return term.u_out * expand_in(term.core, term.u_in, k);
}

// The term of ranks (r_out, r_in) from the leading left singular vectors of `e`'s two unfoldings
// (given where they are known already).
TuckerTerm hosvd_term(const RowMajor& e, int64_t C, int64_t k, int64_t r_out, int64_t r_in,
                      const LeftSvd* out = nullptr, const LeftSvd* in = nullptr) {
  const LeftSvd own_out = out ? LeftSvd{} : left_svd(e),
                own_in = in ? LeftSvd{} : left_svd(unfold_in(e, C, k));
  TuckerTerm term{(out ? *out : own_out).u.leftCols(r_out), (in ? *in : own_in).u.leftCols(r_in), {}};
  fit_core(term, e, k);
  return term;
}

// One alternating step for `term` on `e`: each basis the best for the other, then the core. The
// error never grows.
void refine_term(TuckerTerm& term, const RowMajor& e, int64_t C, int64_t k) {
  // A basis stays where the other leaves fewer directions than it has columns.
  const LeftSvd out = left_svd(project_in(e, term.u_in, k));
  if (out.u.cols() >= term.u_out.cols()) term.u_out = out.u.leftCols(term.u_out.cols());
  const LeftSvd in = left_svd(unfold_in(term.u_out.transpose() * e, C, k));
  if (in.u.cols() >= term.u_in.cols()) term.u_in = in.u.leftCols(term.u_in.cols());
  fit_core(term, e, k);
}

// The Tucker-2 ranks (output side, input side), multiples of `groups`, of a [M, C, k] weight under
// `rule`, from the singular values of its two unfoldings.
std::pair<int64_t, int64_t> tucker_ranks(const LeftSvd& out, const LeftSvd& in, int64_t M, int64_t C,
                                         int64_t k, const LowRankRule& rule) {
  const int64_t G = rule.groups;
  auto span = [](const LeftSvd& d) {
    return std::span<const double>(d.s.data(), static_cast<size_t>(d.s.size()));
  };
  // Whole groups, at least one channel each. The rank rule caps at N (rounded down to whole
  // groups, but at least G) and at the unfolding's rank.
  auto up_to_groups = [G](int64_t r) { return std::max<int64_t>(G, (r + G - 1) / G * G); };
  auto capped = [&](int64_t most) {
    return std::max<int64_t>(G, std::min<int64_t>(static_cast<int64_t>(rule.value), most) / G * G);
  };
  if (rule.by == LowRankRule::By::rank) return {capped(out.s.size()), capped(in.s.size())};
  if (rule.by != LowRankRule::By::params)
    return {up_to_groups(choose_rank(span(out), M, C * k, rule)),
            up_to_groups(choose_rank(span(in), C, M * k, rule))};
  // params: the largest t whose ranks t M and t C (whole groups) fit the budget, in steps of 1/1024.
  const double budget = rule.value * static_cast<double>(M * C * k);
  std::pair<int64_t, int64_t> best{G, G};
  for (int step = 1; step <= 1024; ++step) {
    const double t = step / 1024.0;
    const int64_t r = std::max<int64_t>(G, static_cast<int64_t>(t * M) / G * G),
                  q = std::max<int64_t>(G, static_cast<int64_t>(t * C) / G * G);
    if (static_cast<double>(C * q + q * r * k / G + r * M) > budget) break;
    best = {r, q};
  }
  return best;
}

// The `groups` terms of ranks (r_out / groups, r_in / groups), each fitted to what the others
// leave: first one after another, then each refitted while the whole error falls.
std::vector<TuckerTerm> fit_tucker_terms(const ConvTensor& w, const LeftSvd& out, const LeftSvd& in,
                                         int64_t r_out, int64_t r_in, int64_t groups) {
  const int64_t ro = r_out / groups, ri = r_in / groups;
  std::vector<TuckerTerm> terms;
  if (groups == 1) {
    terms.push_back(hosvd_term(w.by_out, w.C, w.k, ro, ri, &out, &in));
    return terms;
  }
  RowMajor residual = w.by_out;
  for (int64_t g = 0; g < groups; ++g) {
    terms.push_back(hosvd_term(residual, w.C, w.k, ro, ri, g == 0 ? &out : nullptr, g == 0 ? &in : nullptr));
    residual -= rebuild(terms.back(), w.k);
  }
  constexpr int kSweeps = 8;
  constexpr double kLeastGain = 1e-4;  // a sweep that lowers the relative error by less ends them
  double error = residual.cast<double>().norm();
  for (int sweep = 0; sweep < kSweeps && error > 0; ++sweep) {
    for (TuckerTerm& term : terms) {
      const RowMajor others_leave = residual + rebuild(term, w.k);
      refine_term(term, others_leave, w.C, w.k);
      residual = others_leave - rebuild(term, w.k);
    }
    const double now = residual.cast<double>().norm();
    const bool small_gain = error - now < kLeastGain * w.by_out.cast<double>().norm();
    error = now;
    if (small_gain) break;
  }
  return terms;
}

// ---- CP ----

// W [M, C, k] ~ sum over r of a_r (x) b_r (x) d_r.
struct CpFactors {
  Eigen::MatrixXf a;  // [M, R]
  Eigen::MatrixXf b;  // [C, R]
  Eigen::MatrixXf d;  // [k, R]
};

// `columns` columns: the leading left singular vectors of `m`, then seeded Gaussian ones.
Eigen::MatrixXf leading_or_random(const RowMajor& m, int64_t columns, std::mt19937& rng) {
  const LeftSvd svd = left_svd(m);
  Eigen::MatrixXf out(m.rows(), columns);
  const int64_t known = std::min<int64_t>(columns, svd.u.cols());
  out.leftCols(known) = svd.u.leftCols(known);
  std::normal_distribution<float> gauss(0.0f, 1.0f / std::sqrt(static_cast<float>(m.rows())));
  for (int64_t c = known; c < columns; ++c)
    for (int64_t r = 0; r < m.rows(); ++r) out(r, c) = gauss(rng);
  return out;
}

// x G^-1 for a Gram product G (symmetric, maybe singular: least squares).
Eigen::MatrixXf solve_gram(const Eigen::MatrixXf& x, const Eigen::MatrixXf& gram) {
  return gram.completeOrthogonalDecomposition().solve(x.transpose()).transpose();
}

// The window slices of W: slices[t] = W[:, :, t] as [M, C].
std::vector<Eigen::MatrixXf> window_slices(const ConvTensor& w) {
  std::vector<Eigen::MatrixXf> slices(static_cast<size_t>(w.k), Eigen::MatrixXf(w.M, w.C));
  for (int64_t m = 0; m < w.M; ++m)
    for (int64_t c = 0; c < w.C; ++c)
      for (int64_t t = 0; t < w.k; ++t) slices[static_cast<size_t>(t)](m, c) = w.by_out(m, c * w.k + t);
  return slices;
}

RowMajor rebuild(const CpFactors& f, int64_t k) {
  RowMajor out = RowMajor::Zero(f.a.rows(), f.b.rows() * k);
  for (int64_t t = 0; t < k; ++t) {
    const Eigen::MatrixXf slice = f.a * f.d.row(t).asDiagonal() * f.b.transpose();  // [M, C]
    for (int64_t c = 0; c < f.b.rows(); ++c) out.col(c * k + t) = slice.col(c);
  }
  return out;
}

// Rank-R CP of `w` by alternating least squares from the leading singular vectors of its three
// unfoldings (seeded Gaussian columns past them). Stops when an iteration lowers the relative
// error by less than 1e-7, or after kCpMostIterations, or when the next iteration would pass
// kCpMostFlops (the first always runs). The columns' norms are shared equally by the three factors.
CpFactors fit_cp(const ConvTensor& w, int64_t R) {
  constexpr int kCpMostIterations = 500;
  constexpr double kCpMostFlops = 1e11, kLeastGain = 1e-7;
  std::mt19937 rng(1);
  const std::vector<Eigen::MatrixXf> slices = window_slices(w);
  RowMajor by_tap(w.k, w.M * w.C);
  for (int64_t t = 0; t < w.k; ++t)
    Eigen::Map<Eigen::MatrixXf>(by_tap.row(t).data(), w.M, w.C) = slices[static_cast<size_t>(t)];
  CpFactors f{leading_or_random(w.by_out, R, rng), leading_or_random(unfold_in(w.by_out, w.C, w.k), R, rng),
              leading_or_random(by_tap, R, rng)};
  const double norm2 = w.by_out.cast<double>().squaredNorm();
  const double flops_per_iteration = 6.0 * static_cast<double>(w.M * w.C * w.k * R);
  double error = 1.0;
  for (int it = 0; it < kCpMostIterations && (it == 0 || (it + 1) * flops_per_iteration <= kCpMostFlops);
       ++it) {
    const Eigen::MatrixXf btb = f.b.transpose() * f.b, dtd = f.d.transpose() * f.d;
    Eigen::MatrixXf mttkrp = Eigen::MatrixXf::Zero(w.M, R);
    for (int64_t t = 0; t < w.k; ++t)
      mttkrp += (slices[static_cast<size_t>(t)] * f.b) * f.d.row(t).asDiagonal();
    f.a = solve_gram(mttkrp, btb.cwiseProduct(dtd));
    const Eigen::MatrixXf ata2 = f.a.transpose() * f.a;
    mttkrp = Eigen::MatrixXf::Zero(w.C, R);
    for (int64_t t = 0; t < w.k; ++t)
      mttkrp += (slices[static_cast<size_t>(t)].transpose() * f.a) * f.d.row(t).asDiagonal();
    f.b = solve_gram(mttkrp, ata2.cwiseProduct(dtd));
    const Eigen::MatrixXf btb2 = f.b.transpose() * f.b;
    Eigen::MatrixXf by_d(w.k, R);
    for (int64_t t = 0; t < w.k; ++t)
      by_d.row(t) = (f.a.cwiseProduct(slices[static_cast<size_t>(t)] * f.b)).colwise().sum();
    const Eigen::MatrixXf gram = ata2.cwiseProduct(btb2);
    f.d = solve_gram(by_d, gram);
    // ||W - X||^2 = ||W||^2 - 2 <W, X> + ||X||^2, all from R x R products.
    const double inner = f.d.cast<double>().cwiseProduct(by_d.cast<double>()).sum();
    const double x2 = gram.cast<double>().cwiseProduct((f.d.transpose() * f.d).cast<double>()).sum();
    const double now = norm2 > 0 ? std::sqrt(std::max(0.0, norm2 - 2 * inner + x2) / norm2) : 0.0;
    const bool small_gain = error - now < kLeastGain;
    error = now;
    if (small_gain || now < 1e-6) break;
  }
  for (int64_t r = 0; r < R; ++r) {
    const double na = f.a.col(r).norm(), nb = f.b.col(r).norm(), nd = f.d.col(r).norm();
    if (na == 0 || nb == 0 || nd == 0) continue;
    const double each = std::cbrt(na * nb * nd);
    f.a.col(r) *= static_cast<float>(each / na);
    f.b.col(r) *= static_cast<float>(each / nb);
    f.d.col(r) *= static_cast<float>(each / nd);
  }
  return f;
}

// The CP rank `rule` gives (rank or params; factorize_cp refuses energy).
int64_t cp_rank(int64_t M, int64_t C, int64_t k, const LowRankRule& rule) {
  if (rule.by == LowRankRule::By::rank) return static_cast<int64_t>(rule.value);
  return std::max<int64_t>(
      1, static_cast<int64_t>(std::floor(rule.value * static_cast<double>(M * C * k) / (M + C + k))));
}

// ---- the nodes ----

// Whether `weights` in the factors exceed a params rule's share of the layer. Plain Tucker-2, like
// the SVD, takes at least rank 1 whatever the share; a grouped core's or CP's smallest ranks hold
// more, and a layer they do not fit stays as it is.
bool over_budget(int64_t weights, const ConvTensor& w, const LowRankRule& rule) {
  const bool at_least_rank_one = rule.groups == 1 && rule.conv == LowRankRule::Conv::tucker;
  return rule.by == LowRankRule::By::params && !at_least_rank_one &&
         static_cast<double>(weights) > rule.value * static_cast<double>(w.M * w.C * w.k);
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

// The three nodes of a factorized convolution, NODE/METHOD_reduce, NODE/METHOD_MIDDLE and
// NODE/METHOD_expand: a 1x1 convolution, `node`'s window (its strides, pads and dilations) in
// `window_groups` groups, and a 1x1 convolution to the original outputs with the bias. Their
// weights are f.factors, from the input side.
void push_three_convs(const Node& node, const FactorizedLayer& f, const std::string& method,
                      const std::string& middle_word, int64_t window_groups, size_t spatial,
                      std::set<std::string>& used, std::vector<Node>& nodes) {
  const std::string h1 = claim_name(used, node.name + "/" + method + "_reduced"),
                    h2 = claim_name(used, node.name + "/" + method + "_" + middle_word + "ed");
  Node first = pointwise_conv(node, claim_name(used, node.name + "/" + method + "_reduce"), node.inputs[0],
                              f.factors[0], h1, spatial);
  Node middle = node;
  middle.name = claim_name(used, node.name + "/" + method + "_" + middle_word);
  middle.inputs = {h1, f.factors[1]};
  middle.outputs = {h2};
  if (window_groups > 1)
    middle.attrs["group"] = AttrValue(window_groups);
  else
    middle.attrs.erase("group");
  Node last = pointwise_conv(node, claim_name(used, node.name + "/" + method + "_expand"), h2, f.factors[2],
                             node.outputs[0], spatial);
  if (node.has_input(2)) last.inputs.push_back(node.inputs[2]);
  last.outputs = node.outputs;
  nodes.push_back(std::move(first));
  nodes.push_back(std::move(middle));
  nodes.push_back(std::move(last));
}

// A weight shape [rows, cols, then `window` or 1 per spatial axis].
Shape conv_shape(int64_t rows, int64_t cols, const Shape& original, bool window) {
  Shape s = {rows, cols};
  for (size_t d = 2; d < original.size(); ++d) s.push_back(window ? original[d] : 1);
  return s;
}

Result<std::optional<FactorizedLayer>> factorize_tucker(Model& model, const Node& node,
                                                        const std::string& name, const ConvTensor& w,
                                                        const LowRankRule& given, std::set<std::string>& used,
                                                        std::vector<Node>& nodes) {
  const Shape shape = model.initializers.at(name).shape();
  // Fewer channels than groups on either side: plain Tucker-2 (a group per channel would not reduce).
  const int64_t G = std::min({w.C, w.M}) < given.groups ? 1 : given.groups;
  LowRankRule rule = given;
  rule.groups = G;
  const LeftSvd out = left_svd(w.by_out), in = left_svd(unfold_in(w.by_out, w.C, w.k));
  const auto [r_out, r_in] = tucker_ranks(out, in, w.M, w.C, w.k, rule);
  const int64_t after = w.C * r_in + r_in * r_out * w.k / G + r_out * w.M;
  if (after >= w.M * w.C * w.k || over_budget(after, w, rule)) return std::optional<FactorizedLayer>();
  const std::vector<TuckerTerm> terms = fit_tucker_terms(w, out, in, r_out, r_in, G);
  const int64_t ro = r_out / G, ri = r_in / G;
  RowMajor reduce(r_in, w.C), core(r_out, ri * w.k), expand(w.M, r_out);
  RowMajor approx = RowMajor::Zero(w.M, w.C * w.k);
  for (int64_t g = 0; g < G; ++g) {
    const TuckerTerm& term = terms[static_cast<size_t>(g)];
    reduce.middleRows(g * ri, ri) = term.u_in.transpose();
    core.middleRows(g * ro, ro) = term.core;
    expand.middleCols(g * ro, ro) = term.u_out;
    approx += rebuild(term, w.k);
  }
  FactorizedLayer f{
      name,      node.name, {}, w.M, w.C * w.k, r_out, r_in, after, relative_error_of(w.by_out, approx),
      "tucker2", G};
  f.factors = {claim_name(used, name + ".tucker_reduce"), claim_name(used, name + ".tucker_core"),
               claim_name(used, name + ".tucker_expand")};
  model.initializers[f.factors[0]] = tensor_of(reduce, conv_shape(r_in, w.C, shape, false));
  model.initializers[f.factors[1]] = tensor_of(core, conv_shape(r_out, ri, shape, true));
  model.initializers[f.factors[2]] = tensor_of(expand, conv_shape(w.M, r_out, shape, false));
  push_three_convs(node, f, "tucker", "core", G, shape.size() - 2, used, nodes);
  return std::optional<FactorizedLayer>(std::move(f));
}

Result<std::optional<FactorizedLayer>> factorize_cp(Model& model, const Node& node, const std::string& name,
                                                    const ConvTensor& w, const LowRankRule& rule,
                                                    std::set<std::string>& used, std::vector<Node>& nodes) {
  if (rule.by == LowRankRule::By::energy)
    return errorf("layer '{}': CP takes rank=N or params=F, not energy", node.name);
  const Shape shape = model.initializers.at(name).shape();
  const int64_t R = cp_rank(w.M, w.C, w.k, rule);
  const int64_t after = R * (w.C + w.k + w.M);
  if (after >= w.M * w.C * w.k || over_budget(after, w, rule)) return std::optional<FactorizedLayer>();
  const CpFactors cp = fit_cp(w, R);
  FactorizedLayer f{
      name, node.name, {}, w.M, w.C * w.k, R, R, after, relative_error_of(w.by_out, rebuild(cp, w.k)),
      "cp", 1};
  f.factors = {claim_name(used, name + ".cp_reduce"), claim_name(used, name + ".cp_window"),
               claim_name(used, name + ".cp_expand")};
  model.initializers[f.factors[0]] = tensor_of(RowMajor(cp.b.transpose()), conv_shape(R, w.C, shape, false));
  model.initializers[f.factors[1]] = tensor_of(RowMajor(cp.d.transpose()), conv_shape(R, 1, shape, true));
  model.initializers[f.factors[2]] = tensor_of(RowMajor(cp.a), conv_shape(w.M, R, shape, false));
  push_three_convs(node, f, "cp", "window", R, shape.size() - 2, used, nodes);
  return std::optional<FactorizedLayer>(std::move(f));
}

}  // namespace

Result<std::optional<FactorizedLayer>> factorize_conv(Model& model, const Node& node,
                                                      const std::string& weight, const LowRankRule& rule,
                                                      std::set<std::string>& used, std::vector<Node>& nodes) {
  const Tensor& t = model.initializers.at(weight);
  ConvTensor w;
  w.M = t.shape()[0];
  w.C = t.shape()[1];
  w.k = shape_numel(t.shape()) / (w.M * w.C);
  w.by_out = Eigen::Map<const RowMajor>(t.f32_data(), w.M, w.C * w.k);
  return rule.conv == LowRankRule::Conv::cp ? factorize_cp(model, node, weight, w, rule, used, nodes)
                                            : factorize_tucker(model, node, weight, w, rule, used, nodes);
}

}  // namespace sparrow::lowrank
