#include "api/compress.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "compress/recipe.h"
#include "core/file.h"
#include "core/hash.h"
#include "core/timer.h"
#include "sparrow/executor.h"
#include "sparrow/onnx.h"
#include "sparrow/version.h"

namespace sparrow::api {

Result<ModelSummary> one_sample_summary(const Model& model) {
  ExecOptions o{1};
  o.sparse = false;
  SP_ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, Executor::create(model, o));
  SP_ASSIGN_OR_RETURN(std::vector<Shape> shapes, ex->default_input_shapes(1));
  return ex->summarize(shapes);
}

Result<ReshapedModel> reshape_checked(const Model& source, const CompressOptions& options,
                                      const std::string& metadata_json) {
  SP_ASSIGN_OR_RETURN(ReshapedModel r, reshape_model(source, options, metadata_json));
  auto before = one_sample_summary(source);
  if (!before.ok()) return r;  // nothing to compare with (e.g. a fixed batch of another size)
  auto after = one_sample_summary(r.model);
  const char* done = options.prunes_channels() && options.factorizes()
                         ? "structured pruning and factorization"
                     : options.prunes_channels() ? "structured pruning"
                                                 : "factorization";
  if (!after.ok()) return errorf("the model after {} cannot run: {}", done, after.status().message());
  for (size_t k = 0; k < before->output_shapes.size(); ++k)
    if (k >= after->output_shapes.size() || after->output_shapes[k] != before->output_shapes[k])
      return errorf("{} changed output {}'s shape from {} to {}", done, k,
                    shape_str(before->output_shapes[k]),
                    k < after->output_shapes.size() ? shape_str(after->output_shapes[k]) : "none");
  r.metadata_json =
      with_metadata(r.metadata_json, "macs", {{"before", before->macs}, {"after", after->macs}});
  return r;
}

namespace {

// The file's META record: the tool, the format, the source (path, bytes, hash) and the options as a
// recipe, plus the retraining settings when there was retraining.
nlohmann::json compression_metadata(const CompressRequest& r, std::string_view source) {
  nlohmann::json meta = {{"tool", std::string("sparrow ") + SPARROW_VERSION},
                         {"format", fmt::format("1.{}", kSpwVersionMinor)},
                         {"source", r.model},
                         {"source_bytes", source.size()},
                         {"source_fnv1a64", fmt::format("{:016x}", fnv1a64(source))},
                         {"options", recipe_json(r.options)}};
  if (r.train != nullptr) meta["retrain"] = retrain_recipe_json(r.retrain, r.data_source);
  return meta;
}

// Adds "results" to the metadata: the accuracy or agreement measured and the seconds it all took.
void record_results(const CompressOutcome& out, double seconds, std::string& metadata_json) {
  nlohmann::json results = results_json(out);
  results["seconds"] = seconds;
  metadata_json = with_metadata(metadata_json, "results", results);
}

// Compression with retraining on r.train (the source model teaching, with distillation), measured
// on r.test before and after; `reshaped` is the model to compress (smaller when the options prune
// channels or factorize) with the options left to apply.
Status retrain_from_data(const CompressRequest& r, const Model& model, ReshapedModel& reshaped,
                         CompressOutcome& out) {
  const bool distill = r.retrain.retrain.distill.enabled || r.retrain.finetune.distill.enabled;
  if (!r.train->labeled() && !distill)
    return errorf("{}: the data has no labels; retraining without them needs distillation (--distill)",
                  r.model);
  if (distill) {
    SP_RETURN_IF_ERROR(add_teacher_outputs(model, *r.train, r.threads).prefixed("teacher"));
    if (r.val != nullptr)
      SP_RETURN_IF_ERROR(add_teacher_outputs(model, *r.val, r.threads).prefixed("teacher"));
  }
  const LabeledData* test = r.test != nullptr && r.test->size() > 0 ? r.test : nullptr;
  const bool labeled_test = test != nullptr && test->labeled();
  if (labeled_test) {
    SP_ASSIGN_OR_RETURN(out.accuracy_before, classification_accuracy(model, *test, r.threads));
  }
  auto result = compress_with_retraining(std::move(reshaped.model), reshaped.options, *r.train, r.val,
                                         r.retrain, reshaped.metadata_json);
  if (!result.ok()) return result.status().prefixed(r.model);
  out.result = std::move(*result);
  if (test == nullptr) return {};
  SP_ASSIGN_OR_RETURN(Model dense, out.result.spw.to_dense_model());
  if (labeled_test) {
    SP_ASSIGN_OR_RETURN(out.accuracy_after, classification_accuracy(std::move(dense), *test, r.threads));
  } else {
    SP_ASSIGN_OR_RETURN(out.agreement, output_agreement(model, dense, test->inputs, r.threads));
  }
  return {};
}

Result<Distillation> distillation_recipe(const nlohmann::json& j) {
  Distillation d;
  if (j.is_boolean()) {
    d.enabled = j.get<bool>();
    return d;
  }
  if (!j.is_object()) return errorf("retrain.distill: expected true, false or an object");
  d.enabled = true;
  for (const auto& [key, v] : j.items()) {
    if (key == "loss" && v.is_string() && (v == "kl" || v == "mse"))
      d.loss = v == "kl" ? DistillLoss::kl : DistillLoss::mse;
    else if (key == "temperature" && v.is_number() && v.get<double>() > 0)
      d.temperature = v.get<double>();
    else if (key == "weight" && v.is_number() && v.get<double>() >= 0 && v.get<double>() <= 1)
      d.weight = v.get<double>();
    else
      return errorf(
          "retrain.distill.{} = {}: expected loss \"kl\" or \"mse\", temperature > 0, weight in [0, 1]", key,
          v.dump());
  }
  return d;
}

}  // namespace

namespace {

// A plain YAML scalar as JSON: true/false, null (~), an integer, a number, else a string; quoted
// scalars stay strings.
nlohmann::json yaml_scalar(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  if (text == "~" || text == "null" || text == "Null" || text == "NULL" || text.empty()) return nullptr;
  char* end = nullptr;
  errno = 0;
  const long long integer = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() + text.size() && errno == 0) return static_cast<int64_t>(integer);
  const double number = std::strtod(text.c_str(), &end);
  if (end == text.c_str() + text.size() && std::isfinite(number)) return number;
  return text;  // words, and nan / inf, which JSON cannot hold either
}

// Recipes nest a few levels; deeper documents (or aliases that refer to themselves) are refused.
constexpr int kMostYamlDepth = 32;

nlohmann::json yaml_to_json(const YAML::Node& node, int depth = 0) {
  if (depth > kMostYamlDepth)
    throw YAML::Exception(node.Mark(), fmt::format("nested deeper than {} levels", kMostYamlDepth));
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json j = nlohmann::json::object();
      for (const auto& kv : node) j[kv.first.as<std::string>()] = yaml_to_json(kv.second, depth + 1);
      return j;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& item : node) j.push_back(yaml_to_json(item, depth + 1));
      return j;
    }
    case YAML::NodeType::Scalar:
      return yaml_scalar(node);
    default:
      return nullptr;
  }
}

bool is_yaml(const std::string& path) {
  const auto extension = std::filesystem::path(path).extension();
  return extension == ".yaml" || extension == ".yml";
}

}  // namespace

Result<nlohmann::json> read_recipe(const std::string& path) {
  if (std::filesystem::path(path).extension() == ".spw") {
    SP_ASSIGN_OR_RETURN(SpwModel spw, read_spw(path));
    auto meta = nlohmann::json::parse(spw.metadata_json, nullptr, false);
    if (meta.is_discarded() || !meta.is_object() || !meta.contains("options") || !meta["options"].is_object())
      return errorf("{}: its metadata records no recipe (options)", path);
    nlohmann::json recipe = meta["options"];
    if (meta.contains("retrain")) recipe["retrain"] = meta["retrain"];
    return recipe;
  }
  SP_ASSIGN_OR_RETURN(std::vector<char> text, read_file(path));
  if (is_yaml(path)) {
    try {
      return yaml_to_json(YAML::Load(std::string(text.begin(), text.end())));
    } catch (const YAML::Exception& e) {
      return errorf("{}: not valid YAML: {}", path, e.what());
    }
  }
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return errorf("{}: not valid JSON", path);
  return j;
}

Result<CompressOptions> options_from_recipe(const nlohmann::json& recipe, const std::string& where) {
  CompressOptions o;
  nlohmann::json settings = recipe;
  if (settings.is_object()) settings.erase("retrain");
  SP_RETURN_IF_ERROR(apply_recipe(settings, o).prefixed(where));
  SP_RETURN_IF_ERROR(o.validate().prefixed(where));
  return o;
}

Status apply_retrain_recipe(const nlohmann::json& block, RetrainOptions& r, nlohmann::json* data_source) {
  if (!block.is_object()) return errorf("retrain: expected an object");
  static const char* kDataKeys[] = {"data", "labels",     "scale", "shift", "mean",
                                    "std",  "validation", "limit", "resize"};
  for (const auto& [key, v] : block.items()) {
    const std::string where = "retrain." + key;
    if (std::find(std::begin(kDataKeys), std::end(kDataKeys), key) != std::end(kDataKeys)) {
      if (data_source == nullptr) return errorf("{}: give the data itself here, not in the recipe", where);
      (*data_source)[key] = v;
      continue;
    }
    if (key == "distill") {
      SP_ASSIGN_OR_RETURN(r.retrain.distill, distillation_recipe(v));
      r.finetune.distill = r.retrain.distill;
      continue;
    }
    if (key == "flip") {
      if (!v.is_boolean()) return errorf("{}: expected true or false, got {}", where, v.dump());
      r.retrain.augment.flip = r.finetune.augment.flip = v.get<bool>();
      continue;
    }
    if (!v.is_number()) return errorf("{}: expected a number, got {}", where, v.dump());
    const bool integral = v.is_number_integer();
    if (key == "prune_steps" && integral && v.get<int>() >= 1 && v.get<int>() <= 100)
      r.prune_steps = v.get<int>();
    else if (key == "retrain_epochs" && integral && v.get<int>() >= 0)
      r.retrain.epochs = v.get<int>();
    else if (key == "finetune_epochs" && integral && v.get<int>() >= 0)
      r.finetune.epochs = v.get<int>();
    else if (key == "retrain_lr" && v.get<double>() > 0)
      r.retrain.lr = v.get<double>();
    else if (key == "finetune_lr" && v.get<double>() > 0)
      r.finetune.lr = v.get<double>();
    else if (key == "batch" && integral && v.get<int>() >= 1)
      r.retrain.batch = r.finetune.batch = v.get<int>();
    else if (key == "seed" && integral && v.get<int64_t>() >= 0)
      r.retrain.seed = r.finetune.seed = v.get<uint64_t>();
    else if (key == "crop_padding" && integral && v.get<int>() >= 0 && v.get<int>() <= 1024)
      r.retrain.augment.crop_padding = r.finetune.augment.crop_padding = v.get<int>();
    else
      return errorf(
          "{} = {}: unknown key or value out of range (known: prune_steps 1..100, retrain_epochs, "
          "finetune_epochs >= 0, retrain_lr, finetune_lr > 0, batch >= 1, seed, crop_padding 0..1024, flip, "
          "distill, and data, labels, scale, shift, mean, std, validation, limit, resize)",
          where, v.dump());
  }
  return {};
}

nlohmann::json retrain_recipe_json(const RetrainOptions& r, const nlohmann::json& data_source) {
  nlohmann::json j = data_source.is_object() ? data_source : nlohmann::json::object();
  j["prune_steps"] = r.prune_steps;
  j["retrain_epochs"] = r.retrain.epochs;
  j["retrain_lr"] = r.retrain.lr;
  j["finetune_epochs"] = r.finetune.epochs;
  j["finetune_lr"] = r.finetune.lr;
  j["batch"] = r.retrain.batch;
  j["seed"] = r.retrain.seed;
  if (r.retrain.augment.flip) j["flip"] = true;
  if (r.retrain.augment.crop_padding > 0) j["crop_padding"] = r.retrain.augment.crop_padding;
  if (const Distillation& d = r.retrain.distill; d.enabled)
    j["distill"] = {{"loss", d.loss == DistillLoss::kl ? "kl" : "mse"},
                    {"temperature", d.temperature},
                    {"weight", d.weight}};
  return j;
}

nlohmann::json results_json(const CompressOutcome& out) {
  nlohmann::json j = nlohmann::json::object();
  if (out.accuracy_before) {
    j["accuracy_before"] = *out.accuracy_before;
    j["accuracy_after"] = *out.accuracy_after;
  }
  if (const auto& g = out.agreement)
    j["agreement"] = {{"top1", g->top1},
                      {"max_abs_difference", g->max_abs_difference},
                      {"mean_abs_difference", g->mean_abs_difference}};
  return j;
}

nlohmann::json kept_float_json(const CompressResult& result) {
  nlohmann::json j = nlohmann::json::array();
  for (const LayerReport& l : result.layers)
    if (!l.kept_float.empty()) j.push_back({{"layer", l.weight}, {"reason", l.kept_float}});
  return j;
}

Result<CompressOutcome> compress_file(const CompressRequest& r) {
  Timer timer;
  if (same_file(r.output, r.model)) return errorf("output {} would overwrite the input", r.output);
  SP_RETURN_IF_ERROR(r.options.validate());
  SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(r.model));
  std::string_view source(bytes.data(), bytes.size());
  SP_ASSIGN_OR_RETURN(Model model, parse_onnx(source, r.model));
  const std::string meta = compression_metadata(r, source).dump();
  const bool reshapes = r.options.prunes_channels() || r.options.factorizes();
  ReshapedModel reshaped;
  if (reshapes) {
    auto done = reshape_checked(model, r.options, meta);
    if (!done.ok()) return done.status().prefixed(r.model);
    reshaped = std::move(*done);
  }
  CompressOutcome out;
  if (r.train != nullptr) {
    if (!reshapes) reshaped = ReshapedModel{model, r.options, {}, {}, meta};
    SP_RETURN_IF_ERROR(retrain_from_data(r, model, reshaped, out));
  } else {
    auto result = reshapes ? compress_model(reshaped.model, reshaped.options, reshaped.metadata_json)
                           : compress_model(model, r.options, meta);
    if (!result.ok()) return result.status().prefixed(r.model);
    out.result = std::move(*result);
  }
  out.result.channel_groups = std::move(reshaped.channel_groups);
  out.result.factorized = std::move(reshaped.factorized);
  // A file the engine cannot run is not written: every operator and attribute is checked now.
  ExecOptions check{1};
  if (auto runnable = Executor::create(out.result.spw, check); !runnable.ok())
    return errorf("{}: the engine cannot run the compressed model, so {} was not written: {}", r.model,
                  r.output, runnable.status().message());
  if (r.cancelled && r.cancelled()) return errorf("{}: stopped before writing {}", r.model, r.output);
  record_results(out, timer.seconds(), out.result.spw.metadata_json);
  SP_RETURN_IF_ERROR(write_spw(out.result.spw, r.output, r.options.huffman));
  return out;
}

}  // namespace sparrow::api
