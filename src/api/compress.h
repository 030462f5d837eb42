// Compressing a model file into a .spw file, with or without retraining: what `sparrow compress`
// and the Python package's compress() share.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "sparrow/compress.h"
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
  // model's agreement with the source. `data_description` goes into the file's metadata.
  LabeledData* train = nullptr;
  LabeledData* val = nullptr;
  const LabeledData* test = nullptr;
  RetrainOptions retrain;
  std::string data_description;
  int threads = 0;  // for measuring accuracy
};

struct CompressOutcome {
  CompressResult result;
  std::optional<double> accuracy_before, accuracy_after;  // with a labeled `test`: top-1 on it
  std::optional<Agreement> agreement;                     // with an unlabeled `test`: against the source
};

// The options a recipe (a JSON object, as `--recipe` files hold) asks for; errors name `where`.
Result<CompressOptions> options_from_recipe(const nlohmann::json& recipe, const std::string& where);

// [{layer, reason}] for each layer that was to be compressed but stays float32.
nlohmann::json kept_float_json(const CompressResult& result);

// Compresses request.model and writes request.output, unless the engine could not run the result
// (an operator or attribute it does not know); errors name the files.
Result<CompressOutcome> compress_file(const CompressRequest& request);

}  // namespace sparrow::api
