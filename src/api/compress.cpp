#include "api/compress.h"

#include "compress/recipe.h"
#include "core/file.h"
#include "core/hash.h"
#include "sparrow/executor.h"
#include "sparrow/onnx.h"
#include "sparrow/version.h"

namespace sparrow::api {

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
  if (r.train != nullptr) {
    meta["retrain"] = {{"data", r.data_description},
                       {"prune_steps", r.retrain.prune_steps},
                       {"retrain_epochs", r.retrain.retrain.epochs},
                       {"retrain_lr", r.retrain.retrain.lr},
                       {"finetune_epochs", r.retrain.finetune.epochs},
                       {"finetune_lr", r.retrain.finetune.lr}};
    if (const Distillation& d = r.retrain.retrain.distill; d.enabled)
      meta["retrain"]["distill"] = {{"loss", d.loss == DistillLoss::kl ? "kl" : "mse"},
                                    {"temperature", d.temperature},
                                    {"weight", d.weight}};
  }
  return meta;
}

// Compression with retraining on r.train (the source model teaching, with distillation), measured
// on r.test before and after.
Status retrain_from_data(const CompressRequest& r, const Model& model, const std::string& meta,
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
  const bool labeled_test = r.test != nullptr && r.test->labeled();
  if (labeled_test) {
    SP_ASSIGN_OR_RETURN(out.accuracy_before, classification_accuracy(model, *r.test, r.threads));
  }
  auto result = compress_with_retraining(model, r.options, *r.train, r.val, r.retrain, meta);
  if (!result.ok()) return result.status().prefixed(r.model);
  out.result = std::move(*result);
  if (r.test == nullptr) return {};
  SP_ASSIGN_OR_RETURN(Model dense, out.result.spw.to_dense_model());
  if (labeled_test) {
    SP_ASSIGN_OR_RETURN(out.accuracy_after, classification_accuracy(std::move(dense), *r.test, r.threads));
  } else {
    SP_ASSIGN_OR_RETURN(out.agreement, output_agreement(model, dense, r.test->inputs, r.threads));
  }
  return {};
}

}  // namespace

Result<CompressOptions> options_from_recipe(const nlohmann::json& recipe, const std::string& where) {
  CompressOptions o;
  SP_RETURN_IF_ERROR(apply_recipe(recipe, o).prefixed(where));
  SP_RETURN_IF_ERROR(o.validate().prefixed(where));
  return o;
}

nlohmann::json kept_float_json(const CompressResult& result) {
  nlohmann::json j = nlohmann::json::array();
  for (const LayerReport& l : result.layers)
    if (!l.kept_float.empty()) j.push_back({{"layer", l.weight}, {"reason", l.kept_float}});
  return j;
}

Result<CompressOutcome> compress_file(const CompressRequest& r) {
  if (same_file(r.output, r.model)) return errorf("output {} would overwrite the input", r.output);
  SP_RETURN_IF_ERROR(r.options.validate());
  SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(r.model));
  std::string_view source(bytes.data(), bytes.size());
  SP_ASSIGN_OR_RETURN(Model model, parse_onnx(source, r.model));
  const std::string meta = compression_metadata(r, source).dump();
  CompressOutcome out;
  if (r.train == nullptr) {
    auto result = compress_model(model, r.options, meta);
    if (!result.ok()) return result.status().prefixed(r.model);
    out.result = std::move(*result);
  } else {
    SP_RETURN_IF_ERROR(retrain_from_data(r, model, meta, out));
  }
  // A file the engine cannot run is not written: every operator and attribute is checked now.
  ExecOptions check{1};
  if (auto runnable = Executor::create(out.result.spw, check); !runnable.ok())
    return errorf("{}: the engine cannot run the compressed model, so {} was not written: {}", r.model,
                  r.output, runnable.status().message());
  SP_RETURN_IF_ERROR(write_spw(out.result.spw, r.output, r.options.huffman));
  return out;
}

}  // namespace sparrow::api
