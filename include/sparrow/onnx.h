// ONNX model import and export.
#pragma once

#include <string>
#include <string_view>

#include "sparrow/model.h"

namespace sparrow {

// Reads an ONNX file, converts it to the IR, applies simplify_model and validates it.
// float16/float64 initializers become float32; integer initializers become int64.
// Errors start with the path and name the node, attribute or tensor at fault.
Result<Model> load_onnx(const std::string& path);
// Same, from bytes in memory; `source` names them in messages.
Result<Model> parse_onnx(std::string_view bytes, const std::string& source);

// Serializes the IR as a dense float32 ONNX model at the model's opset.
Result<std::string> serialize_onnx(const Model& model);
// Writes serialize_onnx(model) to `path` atomically.
Status save_onnx(const Model& model, const std::string& path);

}  // namespace sparrow
