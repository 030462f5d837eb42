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
  // With `train`: pruning steps with masked retraining, then trained quantization (`retrain`); the
  // accuracy on `test` (when given) is measured before and after. `data_description` goes into the
  // file's metadata (e.g. the data directory).
  const LabeledData* train = nullptr;
  const LabeledData* val = nullptr;
  const LabeledData* test = nullptr;
  RetrainOptions retrain;
  std::string data_description;
  int threads = 0;  // for measuring accuracy
};

struct CompressOutcome {
  CompressResult result;
  std::optional<double> accuracy_before, accuracy_after;  // with `test`: top-1 on it
};

// The options a recipe (a JSON object, as `--recipe` files hold) asks for; errors name `where`.
Result<CompressOptions> options_from_recipe(const nlohmann::json& recipe, const std::string& where);

// Compresses request.model and writes request.output, unless the engine could not run the result
// (an operator or attribute it does not know); errors name the files.
Result<CompressOutcome> compress_file(const CompressRequest& request);

}  // namespace sparrow::api
