// Internal: ONNX parsing of a graph whose initializers live elsewhere (the .spw GRPH section).
#pragma once

#include <string>
#include <string_view>

#include "sparrow/model.h"

namespace sparrow {

// Converts an ONNX ModelProto without validating or simplifying it.
Result<Model> parse_onnx_graph(std::string_view bytes, const std::string& source);

}  // namespace sparrow
