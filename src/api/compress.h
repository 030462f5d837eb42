// Compressing a model file into a .spw file, with or without retraining: what `sparrow compress`
// and the Python package's compress() share.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "sparrow/compress.h"
#include "sparrow/executor.h"
#include "sparrow/retrain.h"

namespace sparrow::api {

struct CompressRequest {
  std::string model;   // the source .onnx
  std::string output;  // the .spw to write (atomically)
  CompressOptions options;
  // With `train`: pruning steps with masked retraining, then trained quantization (`retrain`). With
  // distillation (retrain.retrain.distill / retrain.finetune.distill) the source model is the
  // teacher: its outputs are added to `train` and `val` first, and labels are optional. On `test`
  // (when given) the accuracy is measured before and after, or, without labels, the compressed
  // model's agreement with the source. `data_source` (where the data came from: data, labels,
  // scale, shift, validation, limit) goes into the file's metadata beside the retraining settings,
  // as the recipe's "retrain" block that replays it.
  LabeledData* train = nullptr;
  LabeledData* val = nullptr;
  const LabeledData* test = nullptr;
  RetrainOptions retrain;
  nlohmann::json data_source = nlohmann::json::object();
  int threads = 0;  // for measuring accuracy
  // Asked after each training epoch and before writing, when set: true stops the compression with
  // an error and nothing written.
  std::function<bool()> cancelled;
};

struct CompressOutcome {
  CompressResult result;
  std::optional<double> accuracy_before, accuracy_after;  // with a labeled `test`: top-1 on it
  std::optional<Agreement> agreement;                     // with an unlabeled `test`: against the source
};

// A recipe is one JSON object: the compression settings (compress/recipe.h) and, optionally, a
// "retrain" block: {data, labels, scale, shift, validation, limit (where the data comes from),
// prune_steps, retrain_epochs, retrain_lr, finetune_epochs, finetune_lr, batch, seed,
// distill: {loss: "kl" | "mse", temperature, weight} (or true)}.

// The recipe in a .json file, or the one a .spw file records in its metadata (its options and
// retraining), so that `compress --recipe OLD.spw` replays a compression.
Result<nlohmann::json> read_recipe(const std::string& path);

// The compression settings of a recipe (its "retrain" block aside); errors name `where`.
Result<CompressOptions> options_from_recipe(const nlohmann::json& recipe, const std::string& where);

// Applies a "retrain" block's training settings to `r` and copies its data-source keys into
// `data_source` (when given; otherwise they are refused). Errors name the key.
Status apply_retrain_recipe(const nlohmann::json& block, RetrainOptions& r, nlohmann::json* data_source);
// The "retrain" block of these settings and data source (what the file's metadata records).
nlohmann::json retrain_recipe_json(const RetrainOptions& r, const nlohmann::json& data_source);

// {accuracy_before, accuracy_after} and/or {agreement: {top1, max_abs_difference,
// mean_abs_difference}}: what was measured (also recorded, with the seconds taken, as the file's
// metadata "results").
nlohmann::json results_json(const CompressOutcome& outcome);

// [{layer, reason}] for each layer that was to be compressed but stays float32.
nlohmann::json kept_float_json(const CompressResult& result);

// The dense executor's summary of `model` planned for one sample (unknown dims 1).
Result<ModelSummary> one_sample_summary(const Model& model);

// reshape_model, then a check that the smaller model plans for one sample with the source's output
// shapes (when the source plans), with "macs": {before, after} (one sample, every weight counted)
// added to its metadata. Errors say what went wrong.
Result<ReshapedModel> reshape_checked(const Model& source, const CompressOptions& options,
                                      const std::string& metadata_json);

// Compresses request.model and writes request.output, unless the engine could not run the result
// (an operator or attribute it does not know); errors name the files.
Result<CompressOutcome> compress_file(const CompressRequest& request);

}  // namespace sparrow::api
