// The post-training pipeline: prune -> share weights -> encode, per compressible layer.
#include <algorithm>
#include <cmath>
#include <functional>
// GCC 12 under the sanitizers reports libstdc++'s own <regex> internals (std::function moved in
// its automaton) as maybe used uninitialized, a false positive; off for that header alone.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop
#include <set>

#include <nlohmann/json.hpp>

#include "sparrow/compress.h"

#include "compress/recipe.h"
#include "core/finite.h"
#include "sparrow/weight_roles.h"

namespace sparrow {

namespace {

Status check_settings(const LayerSettings& s, const std::string& where) {
  if (s.prune.sparsity && s.prune.quality)
    return errorf("{}: give either sparsity or quality, not both", where);
  if (s.prune.sparsity && !(*s.prune.sparsity >= 0.0 && *s.prune.sparsity < 1.0))
    return errorf("{}: sparsity {} is outside [0, 1)", where, *s.prune.sparsity);
  if (s.prune.quality && !(*s.prune.quality >= 0.0 && std::isfinite(*s.prune.quality)))
    return errorf("{}: quality {} must be a finite number >= 0", where, *s.prune.quality);
  if (s.bits && (*s.bits < 1 || *s.bits > 8)) return errorf("{}: bits {} is outside 1..8", where, *s.bits);
  if (s.low_rank)
    SP_RETURN_IF_ERROR(parse_low_rank_rule(low_rank_rule_text(*s.low_rank)).status().prefixed(where));
  if (s.structured)
    SP_RETURN_IF_ERROR(parse_structured_rule(structured_rule_text(*s.structured)).status().prefixed(where));
  if (s.prune.balance < 0 || s.prune.balance > kMaxBalancePartitions)
    return errorf("{}: balance {} is outside 1..{} (row partitions)", where, s.prune.balance,
                  kMaxBalancePartitions);
  if (s.prune.block.size() > 1 && s.prune.balance > 1)
    return errorf("{}: block {} and balance {} cannot be combined (blocks span the interleaved partitions)",
                  where, block_shape_text(s.prune.block), s.prune.balance);
  return {};
}

// The compressible layer of a weight read by `node` as input `index` (see weight_roles.h), or
// nullopt if that input is no compressible float32 weight.
std::optional<CompressibleLayer> layer_of(const Node& node, size_t index, const Tensor& w) {
  const WeightRole* role = weight_role(node, index);
  if (role == nullptr || w.dtype() != DType::f32) return std::nullopt;
  auto view = weight_view(node, *role, w.shape());
  if (!view) return std::nullopt;
  return CompressibleLayer{node.inputs[index], node.name, role->kind == WeightKind::convolution, *view};
}

}  // namespace

namespace {

constexpr std::string_view kOpPattern = "op:", kRegexPattern = "re:";

bool is_pattern(const std::string& key) {
  return key.starts_with(kOpPattern) || key.starts_with(kRegexPattern);
}

}  // namespace

namespace {

// `over`'s pruning rule over `into`'s: its target where it gives one, and each of balance, its
// scope and block where it sets them (else `into`'s stay).
void merge_prune_rule(PruneRule& into, const PruneRule& over) {
  const int balance = over.balance ? over.balance : into.balance;
  const BlockShape block = over.block.set() ? over.block : into.block;
  const BalanceScope scope =
      over.balance_scope != BalanceScope::unset ? over.balance_scope : into.balance_scope;
  if (over.sparsity || over.quality) into = over;
  into.balance = balance;
  into.block = block;
  into.balance_scope = scope;
}

}  // namespace

void merge_layer_settings(LayerSettings& into, const LayerSettings& over) {
  merge_prune_rule(into.prune, over.prune);
  if (over.bits) into.bits = over.bits;
  into.exclude = into.exclude || over.exclude;
  if (over.low_rank) into.low_rank = over.low_rank;
  if (over.structured) into.structured = over.structured;
}

namespace {

// What the pattern `key` selects: a layer, given the node that reads it. The regular expression is
// compiled once here.
using Selector = std::function<bool(const CompressibleLayer&, const Node&)>;
Result<Selector> selector_for(const std::string& key) {
  if (key.starts_with(kOpPattern))
    return Selector([type = key.substr(kOpPattern.size())](const CompressibleLayer&, const Node& node) {
      return node.op_type == type;
    });
  try {
    return Selector([re = std::regex(key.substr(kRegexPattern.size()), std::regex::ECMAScript)](
                        const CompressibleLayer& layer, const Node&) {
      return std::regex_match(layer.weight, re) || std::regex_match(layer.node, re);
    });
  } catch (const std::regex_error& e) {
    return errorf("layer pattern '{}': not a valid regular expression ({})", key, e.what());
  }
}

}  // namespace

Result<CompressOptions> expand_layer_patterns(const Model& model, const CompressOptions& options) {
  if (std::none_of(options.layers.begin(), options.layers.end(),
                   [](const auto& kv) { return is_pattern(kv.first); }))
    return options;
  CompressOptions out = options;
  std::erase_if(out.layers, [](const auto& kv) { return is_pattern(kv.first); });
  const std::vector<CompressibleLayer> layers = find_compressible_layers(model);
  std::map<std::string, const Node*> node_by_name;
  for (const Node& n : model.nodes) node_by_name.emplace(n.name, &n);
  std::map<std::string, LayerSettings> from_patterns;  // by weight name
  for (std::string_view kind : {kOpPattern, kRegexPattern})
    for (const auto& [key, settings] : options.layers) {
      if (!key.starts_with(kind)) continue;
      SP_ASSIGN_OR_RETURN(const Selector selects, selector_for(key));
      bool any = false;
      for (const CompressibleLayer& l : layers) {
        if (!selects(l, *node_by_name.at(l.node))) continue;
        any = true;
        merge_layer_settings(from_patterns[l.weight], settings);
      }
      if (!any) {
        std::string names;
        for (const auto& l : layers)
          names +=
              fmt::format("{}{} ({})", names.empty() ? "" : ", ", l.weight, node_by_name.at(l.node)->op_type);
        return errorf("layer pattern '{}' selects no compressible layer (layers: {})", key, names);
      }
    }
  for (const CompressibleLayer& l : layers) {
    auto it = from_patterns.find(l.weight);
    if (it == from_patterns.end()) continue;
    // The node's own rule stays for the node's other weights (an LSTM's W and R); the weight's
    // rule becomes the merge.
    LayerSettings merged = it->second;
    for (const std::string& own : {l.node, l.weight})
      if (auto o = options.layers.find(own); o != options.layers.end())
        merge_layer_settings(merged, o->second);
    out.layers[l.weight] = merged;
  }
  return out;
}

LayerSettings resolve_layer_settings(const CompressOptions& o, const CompressibleLayer& l) {
  LayerSettings s = o.all;
  for (const std::string& key : {l.node, l.weight}) {
    auto it = o.layers.find(key);
    if (it == o.layers.end()) continue;
    merge_prune_rule(s.prune, it->second.prune);
    if (it->second.bits) s.bits = it->second.bits;
    s.exclude = s.exclude || it->second.exclude;
  }
  if (!s.bits) s.bits = l.conv ? o.conv_bits : o.fc_bits;
  s.prune.index_bits = o.index_bits;  // the fillers balance_scope entries counts
  return s;
}

namespace {

// Values of the weight tensor in matrix-view order (row-major over [rows, cols]).
std::vector<float> view_values(const Tensor& w, const MatrixView& v) {
  std::vector<float> out(static_cast<size_t>(w.numel()));
  const float* p = w.f32_data();
  for (int64_t r = 0; r < v.rows; ++r)
    for (int64_t c = 0; c < v.cols; ++c)
      out[r * v.cols + c] = v.transposed ? p[c * v.rows + r] : p[r * v.cols + c];
  return out;
}

// Picks the smaller of the sparse and dense layouts (before Huffman coding).
CompressedTensor encode_smaller(const std::vector<uint8_t>& codes, const MatrixView& view,
                                const CompressOptions& o, int bits) {
  CompressedTensor sparse = encode_sparse(codes, view, o.partitions, o.index_bits);
  uint32_t max_count = 0;
  for (const auto& p : sparse.partitions)
    for (uint32_t c : p.col_counts) max_count = std::max(max_count, c);
  int count_bits = 0;
  while ((uint64_t{max_count} >> count_bits) != 0) ++count_bits;
  double sparse_bits = static_cast<double>(sparse.entries()) * (bits + o.index_bits) +
                       static_cast<double>(o.partitions) * static_cast<double>(view.cols) * count_bits;
  double dense_bits = static_cast<double>(view.rows) * static_cast<double>(view.cols) * bits;
  return sparse_bits <= dense_bits ? std::move(sparse) : encode_dense(codes, view);
}

// Bits of the encoding before Huffman coding: codes (and relative indices) of every entry, column
// counts, and the codebook (32 bits per value).
double encoded_bits(const CompressedTensor& t) {
  const double codebook = 32.0 * static_cast<double>(t.codebook.size());
  if (t.layout == WeightLayout::dense) return static_cast<double>(t.numel()) * t.weight_bits + codebook;
  uint32_t max_count = 0;
  size_t columns = 0;
  for (const auto& p : t.partitions) {
    columns += p.col_counts.size();
    for (uint32_t c : p.col_counts) max_count = std::max(max_count, c);
  }
  int count_bits = 0;
  while ((uint64_t{max_count} >> count_bits) != 0) ++count_bits;
  return static_cast<double>(t.entries()) * (t.weight_bits + t.index_bits) +
         static_cast<double>(columns) * count_bits + codebook;
}

Result<CompressedTensor> compress_layer(const Tensor& weight, const CompressibleLayer& layer,
                                        const LayerSettings& s, const CompressOptions& o,
                                        LayerReport& report) {
  std::vector<float> values = view_values(weight, layer.view);
  prune_layer(values, MatrixView{layer.view.rows, layer.view.cols, false}, s.prune);
  std::vector<float> survivors;
  for (float v : values)
    if (v != 0.0f) survivors.push_back(v);
  int k = (1 << *s.bits) - 1;  // code 0 is reserved for exact zero
  Codebook cb = o.quantizer == Quantizer::kmeans ? kmeans_1d(survivors, k, o.init, o.seed)
                                                 : uniform_levels(survivors, k);
  std::vector<uint8_t> nearest = assign_nearest(values, cb);
  std::vector<uint8_t> codes(values.size(), 0);
  double err = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] == 0.0f) continue;
    codes[i] = static_cast<uint8_t>(1 + nearest[i]);
    double d = values[i] - cb.centroids[nearest[i]];
    err += d * d;
  }
  CompressedTensor t = encode_smaller(codes, layer.view, o, *s.bits);
  t.name = layer.weight;
  t.shape = weight.shape();
  t.weight_bits = *s.bits;
  if (t.layout == WeightLayout::dense) t.index_bits = 0;
  t.codebook.assign(size_t{1} << *s.bits, 0.0f);
  std::copy(cb.centroids.begin(), cb.centroids.end(), t.codebook.begin() + 1);
  report.kept = static_cast<int64_t>(survivors.size());
  report.rms_error = values.empty() ? 0 : std::sqrt(err / static_cast<double>(values.size()));
  return t;
}

}  // namespace

Status check_layer_settings(const Model& model, const CompressOptions& options) {
  for (const CompressibleLayer& layer : find_compressible_layers(model))
    SP_RETURN_IF_ERROR(check_settings(resolve_layer_settings(options, layer),
                                      fmt::format("layer '{}' (weight '{}')", layer.node, layer.weight)));
  return {};
}

bool gives_pruning_target(const LayerSettings& s) {
  return s.prune.sparsity || s.prune.quality;
}

bool balances_partitions(const LayerSettings& s) {
  return s.prune.balance >= 2;
}

bool balances_by_column(const LayerSettings& s) {
  return s.prune.balance_scope == BalanceScope::column || s.prune.balance_scope == BalanceScope::entries;
}

bool prunes_in_blocks(const LayerSettings& s) {
  return s.prune.block.size() > 1;
}

bool CompressOptions::any_rule(bool (*test)(const LayerSettings&)) const {
  return test(all) ||
         std::any_of(layers.begin(), layers.end(), [&](const auto& l) { return test(l.second); });
}

Status CompressOptions::validate() const {
  if (low_rank)
    SP_RETURN_IF_ERROR(parse_low_rank_rule(low_rank_rule_text(*low_rank)).status().prefixed("options"));
  if (structured)
    SP_RETURN_IF_ERROR(parse_structured_rule(structured_rule_text(*structured)).status().prefixed("options"));
  SP_RETURN_IF_ERROR(check_settings(all, "options"));
  for (const auto& [name, s] : layers) SP_RETURN_IF_ERROR(check_settings(s, "layer '" + name + "'"));
  if (any_rule(balances_by_column) && !any_rule(balances_partitions))
    return errorf(
        "balance_scope column or entries says what balance makes equal: give a balance N >= 2 (globally "
        "or for a layer)");
  if (any_rule(prunes_in_blocks) && !any_rule(gives_pruning_target))
    return errorf("block shapes what is pruned: give a sparsity or quality (globally or for a layer)");
  if (conv_bits < 1 || conv_bits > 8 || fc_bits < 1 || fc_bits > 8)
    return errorf("bits: conv={} fc={} must be within 1..8", conv_bits, fc_bits);
  if (index_bits < 2 || index_bits > 8) return errorf("index-bits {} is outside 2..8", index_bits);
  if (min_weights < 0) return errorf("min_weights must be >= 0, got {}", min_weights);
  if (channel_multiple < 1 || channel_multiple > kMaxChannelMultiple)
    return errorf("channel_multiple {} is outside 1..{}", channel_multiple, kMaxChannelMultiple);
  if (channel_multiple != 1 && !prunes_channels())
    return errorf("channel_multiple rounds what structured pruning keeps: give a structured rule");
  if (partitions < 1 || partitions > 65536) return errorf("partitions {} is outside 1..65536", partitions);
  return {};
}

std::vector<CompressibleLayer> find_compressible_layers(const Model& model) {
  std::vector<CompressibleLayer> out;
  std::set<std::string> seen;
  for (const auto& node : model.nodes)
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      auto it = model.initializers.find(node.inputs[i]);
      if (it == model.initializers.end() || seen.count(node.inputs[i])) continue;
      if (auto l = layer_of(node, i, it->second)) {
        seen.insert(l->weight);
        out.push_back(*l);
      }
    }
  return out;
}

std::string record_factorized(const std::string& metadata_json,
                              const std::vector<FactorizedLayer>& factorized) {
  nlohmann::json list = nlohmann::json::array();
  for (const FactorizedLayer& f : factorized)
    list.push_back({{"weight", f.weight},
                    {"factors", f.factors},
                    {"rows", f.rows},
                    {"cols", f.cols},
                    {"rank", f.rank},
                    {"rank_in", f.rank_in},
                    {"weights_after", f.weights_after},
                    {"relative_error", f.relative_error},
                    {"method", f.method},
                    {"groups", f.groups}});
  return with_metadata(metadata_json, "factorized", list);
}

Result<ReshapedModel> reshape_model(Model model, const CompressOptions& given,
                                    const std::string& metadata_json) {
  SP_ASSIGN_OR_RETURN(const CompressOptions options, expand_layer_patterns(model, given));
  ReshapedModel r;
  r.metadata_json = metadata_json;
  if (!nlohmann::json::parse(metadata_json, nullptr, false).contains("source_fp32_bytes"))
    r.metadata_json = with_metadata(metadata_json, "source_fp32_bytes", 4 * model.parameter_count());
  if (options.prunes_channels()) {
    SP_ASSIGN_OR_RETURN(r.channel_groups, prune_channel_groups(model, options));
    r.metadata_json = record_channel_groups(r.metadata_json, r.channel_groups);
  }
  CompressOptions rest = options_after_channel_pruning(options);
  if (rest.factorizes()) {
    SP_ASSIGN_OR_RETURN(r.factorized, factorize_layers(model, rest));
    r.metadata_json = record_factorized(r.metadata_json, r.factorized);
  }
  r.options = options_after_factorizing(rest, r.factorized);
  r.model = std::move(model);
  return r;
}

Result<CompressResult> compress_model(const Model& model, const CompressOptions& given,
                                      const std::string& metadata_json) {
  SP_RETURN_IF_ERROR(given.validate());
  SP_ASSIGN_OR_RETURN(const CompressOptions options, expand_layer_patterns(model, given));
  if (options.prunes_channels() || options.factorizes()) {
    SP_ASSIGN_OR_RETURN(ReshapedModel reshaped, reshape_model(model, options, metadata_json));
    SP_ASSIGN_OR_RETURN(CompressResult result,
                        compress_model(reshaped.model, reshaped.options, reshaped.metadata_json));
    result.channel_groups = std::move(reshaped.channel_groups);
    result.factorized = std::move(reshaped.factorized);
    return result;
  }
  SP_RETURN_IF_ERROR(check_layer_settings(model, options));
  std::vector<CompressibleLayer> layers = find_compressible_layers(model);
  for (const auto& [name, s] : options.layers) {
    bool found = false;
    for (const auto& l : layers) found = found || l.node == name || l.weight == name;
    if (!found) {
      std::string names;
      for (const auto& l : layers) names += (names.empty() ? "" : ", ") + l.weight;
      return errorf("layer '{}': no compressible layer has that node or weight name (layers: {})", name,
                    names);
    }
  }
  CompressResult result;
  result.spw.graph = model;
  result.spw.metadata_json = metadata_json;
  for (const auto& layer : layers) {
    LayerSettings s = resolve_layer_settings(options, layer);
    const Tensor& w = model.initializers.at(layer.weight);
    SP_RETURN_IF_ERROR(require_finite(w.f32_span(),
                                      fmt::format("layer '{}' (weight '{}')", layer.node, layer.weight),
                                      "; only finite weights can be compressed (did training diverge?)"));
    LayerReport report{layer.weight, layer.node, layer.conv, w.numel(), w.numel(), *s.bits, s.exclude, "", 0};
    if (!s.exclude && w.numel() < options.min_weights)
      report.kept_float = fmt::format("fewer than min_weights = {} weights", options.min_weights);
    if (!s.exclude && report.kept_float.empty()) {
      SP_ASSIGN_OR_RETURN(CompressedTensor t, compress_layer(w, layer, s, options, report));
      if (options.float_fallback && encoded_bits(t) >= 32.0 * static_cast<double>(w.numel())) {
        report.kept_float = fmt::format("its encoding would take {:.0f} bytes, more than {} as float32",
                                        encoded_bits(t) / 8, 4 * w.numel());
        report.kept = w.numel();
      } else {
        result.spw.tensors.push_back(std::move(t));
        result.spw.graph.initializers.erase(layer.weight);
      }
    }
    result.layers.push_back(report);
    if (options.on_layer) options.on_layer(layer.weight, result.layers.size(), layers.size());
  }
  return result;
}

}  // namespace sparrow
