// The per-layer table and byte breakdown of a .spw file, shown by `inspect` and `compress`.
#pragma once

#include <nlohmann/json.hpp>

#include "sparrow/format.h"

namespace sparrow::cli {

// Bytes of every float32 parameter of the model when stored densely.
int64_t dense_fp32_bytes(const SpwModel& m);

void print_spw_report(const SpwModel& m, const std::string& path);
nlohmann::json spw_report_json(const SpwModel& m, const std::string& path);

}  // namespace sparrow::cli
