// What `inspect` reports about a .spw file, as data: per layer its shape, kept weights, bits, layout
// and bytes, and where every byte of the file goes. Shared by the CLI and the Python package.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "sparrow/format.h"

namespace sparrow::api {

// Bytes of every float32 parameter of the model when stored densely.
int64_t dense_fp32_bytes(const SpwModel& m);

// {file, file_bytes, dense_fp32_bytes, ratio, layers: [...], breakdown: {...}, metadata}.
nlohmann::json spw_report_json(const SpwModel& m, const std::string& path);

}  // namespace sparrow::api
