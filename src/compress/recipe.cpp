#include "compress/recipe.h"

#include <charconv>
#include <cstdint>

namespace sparrow {

namespace {

using json = nlohmann::json;

Result<double> number(const json& j, const std::string& key) {
  if (!j.is_number()) return errorf("recipe key '{}': expected a number, got {}", key, j.dump());
  return j.get<double>();
}

Result<int> integer(const json& j, const std::string& key) {
  if (!j.is_number_integer()) return errorf("recipe key '{}': expected an integer, got {}", key, j.dump());
  if (j.is_number_unsigned() ? j.get<uint64_t>() > uint64_t{INT32_MAX}
                             : j.get<int64_t>() > INT32_MAX || j.get<int64_t>() < INT32_MIN)
    return errorf("recipe key '{}': {} is out of range", key, j.dump());
  return j.get<int>();
}

// A pruning block given as text under `key`.
Result<BlockShape> block_shape(const json& j, const std::string& key) {
  if (!j.is_string()) return errorf("recipe key '{}': expected a string such as \"4x1\"", key);
  auto block = parse_block_shape(j.get<std::string>());
  if (!block.ok()) return block.status().prefixed("recipe key '" + key + "'");
  return block;
}

// A balance scope given as text under `key`.
Result<BalanceScope> balance_scope(const json& j, const std::string& key) {
  if (!j.is_string()) return errorf("recipe key '{}': expected \"layer\", \"column\" or \"entries\"", key);
  auto scope = parse_balance_scope(j.get<std::string>());
  if (!scope.ok()) return scope.status().prefixed("recipe key '" + key + "'");
  return scope;
}

// A low-rank rule given as text under `key`.
Result<LowRankRule> low_rank_rule(const json& j, const std::string& key) {
  if (!j.is_string()) return errorf("recipe key '{}': expected a string such as \"rank=8\" or \"none\"", key);
  auto rule = parse_low_rank_rule(j.get<std::string>());
  if (!rule.ok()) return rule.status().prefixed("recipe key '" + key + "'");
  return rule;
}

// A structured pruning rule given as text under `key`.
Result<StructuredRule> structured_rule(const json& j, const std::string& key) {
  if (!j.is_string()) return errorf("recipe key '{}': expected a string such as \"l1=0.5\" or \"none\"", key);
  auto rule = parse_structured_rule(j.get<std::string>());
  if (!rule.ok()) return rule.status().prefixed("recipe key '" + key + "'");
  return rule;
}

Status apply_layer(const json& j, const std::string& name, LayerSettings& s) {
  if (!j.is_object()) return errorf("recipe layer '{}': expected an object", name);
  for (const auto& [key, v] : j.items()) {
    std::string where = "layers." + name + "." + key;
    if (key == "sparsity") {
      SP_ASSIGN_OR_RETURN(s.prune.sparsity, number(v, where));
    } else if (key == "quality") {
      SP_ASSIGN_OR_RETURN(s.prune.quality, number(v, where));
    } else if (key == "bits") {
      SP_ASSIGN_OR_RETURN(s.bits, integer(v, where));
    } else if (key == "balance") {
      SP_ASSIGN_OR_RETURN(s.prune.balance, integer(v, where));
    } else if (key == "balance_scope") {
      SP_ASSIGN_OR_RETURN(s.prune.balance_scope, balance_scope(v, where));
    } else if (key == "block") {
      SP_ASSIGN_OR_RETURN(s.prune.block, block_shape(v, where));
    } else if (key == "lowrank") {
      SP_ASSIGN_OR_RETURN(s.low_rank, low_rank_rule(v, where));
    } else if (key == "structured") {
      SP_ASSIGN_OR_RETURN(s.structured, structured_rule(v, where));
    } else if (key == "exclude") {
      if (!v.is_boolean()) return errorf("recipe key '{}': expected true or false", where);
      s.exclude = v.get<bool>();
    } else {
      return errorf(
          "recipe key '{}': unknown (use sparsity, quality, balance, balance_scope, block, bits, lowrank, "
          "structured, exclude)",
          where);
    }
  }
  return {};
}

Result<double> parse_double(std::string_view text, const std::string& what) {
  double v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size())
    return errorf("{}: '{}' is not a number", what, text);
  return v;
}

Result<int> parse_int(std::string_view text, const std::string& what) {
  int v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size())
    return errorf("{}: '{}' is not an integer", what, text);
  return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == sep) {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  return parts;
}

// "key=value" split at its first '=' (a value may hold more: "lowrank=rank=8").
std::vector<std::string_view> split_first(std::string_view s, char sep) {
  const size_t at = s.find(sep);
  if (at == std::string_view::npos) return {s};
  return {s.substr(0, at), s.substr(at + 1)};
}

}  // namespace

const char* init_name(KmeansInit init) {
  return init == KmeansInit::linear ? "linear" : init == KmeansInit::density ? "density" : "random";
}

Status apply_bits(const std::string& text, CompressOptions& o) {
  if (text.find('=') == std::string::npos) {
    SP_ASSIGN_OR_RETURN(int bits, parse_int(text, "--bits"));
    o.conv_bits = o.fc_bits = bits;
    return {};
  }
  for (auto part : split(text, ',')) {
    auto kv = split(part, '=');
    if (kv.size() != 2) return errorf("--bits: '{}' is not kind=bits", part);
    SP_ASSIGN_OR_RETURN(int bits, parse_int(kv[1], "--bits"));
    if (kv[0] == "conv")
      o.conv_bits = bits;
    else if (kv[0] == "fc")
      o.fc_bits = bits;
    else
      return errorf("--bits: unknown layer kind '{}' (use conv or fc)", kv[0]);
  }
  return {};
}

Status apply_layer_override(const std::string& text, CompressOptions& o) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return errorf("--layer '{}': expected NAME:key=value[,key=value]", text);
  std::string name = text.substr(0, colon);
  LayerSettings& s = o.layers[name];
  for (auto part : split(std::string_view(text).substr(colon + 1), ',')) {
    auto kv = split_first(part, '=');
    std::string where = "--layer " + name;
    if (kv.size() == 1 && kv[0] == "exclude") {
      s.exclude = true;
    } else if (kv.size() != 2) {
      return errorf("{}: '{}' is not key=value", where, part);
    } else if (kv[0] == "sparsity") {
      SP_ASSIGN_OR_RETURN(s.prune.sparsity, parse_double(kv[1], where + " sparsity"));
    } else if (kv[0] == "quality") {
      SP_ASSIGN_OR_RETURN(s.prune.quality, parse_double(kv[1], where + " quality"));
    } else if (kv[0] == "bits") {
      SP_ASSIGN_OR_RETURN(s.bits, parse_int(kv[1], where + " bits"));
    } else if (kv[0] == "balance") {
      SP_ASSIGN_OR_RETURN(s.prune.balance, parse_int(kv[1], where + " balance"));
    } else if (kv[0] == "balance_scope") {
      auto scope = parse_balance_scope(kv[1]);
      if (!scope.ok()) return scope.status().prefixed(where);
      s.prune.balance_scope = *scope;
    } else if (kv[0] == "block") {
      auto block = parse_block_shape(kv[1]);
      if (!block.ok()) return block.status().prefixed(where);
      s.prune.block = *block;
    } else if (kv[0] == "lowrank") {
      auto rule = parse_low_rank_rule(std::string(kv[1]));
      if (!rule.ok()) return rule.status().prefixed(where);
      s.low_rank = *rule;
    } else if (kv[0] == "structured") {
      auto rule = parse_structured_rule(std::string(kv[1]));
      if (!rule.ok()) return rule.status().prefixed(where);
      s.structured = *rule;
    } else if (kv[0] == "exclude") {
      s.exclude = kv[1] == "true" || kv[1] == "1";
    } else {
      return errorf(
          "{}: unknown key '{}' (use sparsity, quality, balance, balance_scope, block, bits, lowrank, "
          "structured, exclude)",
          where, kv[0]);
    }
  }
  return {};
}

Status apply_recipe(const json& r, CompressOptions& o) {
  if (!r.is_object()) return errorf("a recipe must be a JSON object");
  for (const auto& [key, v] : r.items()) {
    if (key == "sparsity") {
      SP_ASSIGN_OR_RETURN(o.all.prune.sparsity, number(v, key));
    } else if (key == "quality") {
      SP_ASSIGN_OR_RETURN(o.all.prune.quality, number(v, key));
    } else if (key == "balance") {
      SP_ASSIGN_OR_RETURN(o.all.prune.balance, integer(v, key));
    } else if (key == "balance_scope") {
      SP_ASSIGN_OR_RETURN(o.all.prune.balance_scope, balance_scope(v, key));
    } else if (key == "block") {
      SP_ASSIGN_OR_RETURN(o.all.prune.block, block_shape(v, key));
    } else if (key == "lowrank") {
      SP_ASSIGN_OR_RETURN(o.low_rank, low_rank_rule(v, key));
    } else if (key == "structured") {
      SP_ASSIGN_OR_RETURN(o.structured, structured_rule(v, key));
    } else if (key == "channel_multiple") {
      SP_ASSIGN_OR_RETURN(int multiple, integer(v, key));
      o.channel_multiple = multiple;
    } else if (key == "bits" && v.is_object()) {
      for (const auto& [kind, b] : v.items()) {
        SP_ASSIGN_OR_RETURN(int bits, integer(b, "bits." + kind));
        if (kind == "conv")
          o.conv_bits = bits;
        else if (kind == "fc")
          o.fc_bits = bits;
        else
          return errorf("recipe key 'bits.{}': unknown layer kind (use conv or fc)", kind);
      }
    } else if (key == "bits") {
      SP_ASSIGN_OR_RETURN(int bits, integer(v, key));
      o.conv_bits = o.fc_bits = bits;
    } else if (key == "index_bits") {
      SP_ASSIGN_OR_RETURN(o.index_bits, integer(v, key));
    } else if (key == "partitions") {
      SP_ASSIGN_OR_RETURN(o.partitions, integer(v, key));
    } else if (key == "encode_all") {
      if (!v.is_boolean()) return errorf("recipe key 'encode_all': expected true or false");
      o.float_fallback = !v.get<bool>();
    } else if (key == "min_weights") {
      SP_ASSIGN_OR_RETURN(int min_weights, integer(v, key));
      o.min_weights = min_weights;
    } else if (key == "seed") {
      SP_ASSIGN_OR_RETURN(int seed, integer(v, key));
      o.seed = static_cast<uint64_t>(seed);
    } else if (key == "huffman") {
      if (!v.is_boolean()) return errorf("recipe key 'huffman': expected true or false");
      o.huffman = v.get<bool>();
    } else if (key == "init") {
      std::string s = v.is_string() ? v.get<std::string>() : "";
      if (s == "linear")
        o.init = KmeansInit::linear;
      else if (s == "density")
        o.init = KmeansInit::density;
      else if (s == "random")
        o.init = KmeansInit::random;
      else
        return errorf("recipe key 'init': {} is not linear, density or random", v.dump());
    } else if (key == "quantizer") {
      std::string s = v.is_string() ? v.get<std::string>() : "";
      if (s == "kmeans")
        o.quantizer = Quantizer::kmeans;
      else if (s == "uniform")
        o.quantizer = Quantizer::uniform;
      else
        return errorf("recipe key 'quantizer': {} is not kmeans or uniform", v.dump());
    } else if (key == "layers") {
      if (!v.is_object()) return errorf("recipe key 'layers': expected an object of layer names");
      for (const auto& [name, l] : v.items()) SP_RETURN_IF_ERROR(apply_layer(l, name, o.layers[name]));
    } else {
      return errorf("recipe key '{}': unknown", key);
    }
  }
  return {};
}

json recipe_json(const CompressOptions& o) {
  auto settings = [](const LayerSettings& s) {
    json j = json::object();
    if (s.prune.sparsity) j["sparsity"] = *s.prune.sparsity;
    if (s.prune.quality) j["quality"] = *s.prune.quality;
    if (s.prune.balance) j["balance"] = s.prune.balance;
    if (s.prune.balance_scope != BalanceScope::unset)
      j["balance_scope"] = balance_scope_text(s.prune.balance_scope);
    if (s.prune.block.set()) j["block"] = block_shape_text(s.prune.block);
    if (s.low_rank) j["lowrank"] = low_rank_rule_text(*s.low_rank);
    if (s.structured) j["structured"] = structured_rule_text(*s.structured);
    if (s.bits) j["bits"] = *s.bits;
    if (s.exclude) j["exclude"] = true;
    return j;
  };
  json j = settings(o.all);
  if (!o.all.bits) j["bits"] = {{"conv", o.conv_bits}, {"fc", o.fc_bits}};
  j["index_bits"] = o.index_bits;
  j["init"] = init_name(o.init);
  j["quantizer"] = o.quantizer == Quantizer::kmeans ? "kmeans" : "uniform";
  j["huffman"] = o.huffman;
  j["partitions"] = o.partitions;
  if (o.min_weights > 0) j["min_weights"] = o.min_weights;
  if (o.low_rank) j["lowrank"] = low_rank_rule_text(*o.low_rank);
  if (o.structured) j["structured"] = structured_rule_text(*o.structured);
  if (o.channel_multiple != 1) j["channel_multiple"] = o.channel_multiple;
  if (!o.float_fallback) j["encode_all"] = true;
  j["seed"] = o.seed;
  json layers = json::object();
  for (const auto& [name, s] : o.layers) layers[name] = settings(s);
  if (!layers.empty()) j["layers"] = layers;
  return j;
}

std::string with_metadata(const std::string& metadata_json, const std::string& key,
                          const nlohmann::json& value) {
  auto meta = json::parse(metadata_json, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) return metadata_json;
  meta[key] = value;
  return meta.dump();
}

}  // namespace sparrow
