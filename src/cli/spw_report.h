// The per-layer table and byte breakdown of a .spw file as text, shown by `inspect` and `compress`
// (api/inspect.h has the same as JSON).
#pragma once

#include "sparrow/format.h"

namespace sparrow::cli {

void print_spw_report(const SpwModel& m, const std::string& path);

}  // namespace sparrow::cli
