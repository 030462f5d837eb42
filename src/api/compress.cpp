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
  if (r.train != nullptr)
    meta["retrain"] = {{"data", r.data_description},
                       {"prune_steps", r.retrain.prune_steps},
                       {"retrain_epochs", r.retrain.retrain.epochs},
                       {"retrain_lr", r.retrain.retrain.lr},
                       {"finetune_epochs", r.retrain.finetune.epochs},
                       {"finetune_lr", r.retrain.finetune.lr}};
  return meta;
}

}  // namespace

Result<CompressOptions> options_from_recipe(const nlohmann::json& recipe, const std::string& where) {
  CompressOptions o;
  SP_RETURN_IF_ERROR(apply_recipe(recipe, o).prefixed(where));
  SP_RETURN_IF_ERROR(o.validate().prefixed(where));
  return o;
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
    if (r.test != nullptr) {
      SP_ASSIGN_OR_RETURN(out.accuracy_before, classification_accuracy(model, *r.test, r.threads));
    }
    auto result = compress_with_retraining(std::move(model), r.options, *r.train, r.val, r.retrain, meta);
    if (!result.ok()) return result.status().prefixed(r.model);
    out.result = std::move(*result);
    if (r.test != nullptr) {
      SP_ASSIGN_OR_RETURN(Model dense, out.result.spw.to_dense_model());
      SP_ASSIGN_OR_RETURN(out.accuracy_after, classification_accuracy(std::move(dense), *r.test, r.threads));
    }
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
