// The per-layer table and byte breakdown of a .spw file as text, shown by `inspect` and `compress`
// (api/inspect.h has the same as JSON).
#pragma once

#include "sparrow/compress.h"
#include "sparrow/format.h"

namespace sparrow::cli {

// The layer table (with each layer's load balance over `balance_partitions` interleaved row
// partitions, mean / max non-zeros; 0: api::default_balance_partitions) and the byte breakdown.
void print_spw_report(const SpwModel& m, const std::string& path, int balance_partitions = 0);

// "factorized W: ROWS x COLS at rank N (A -> B weights), relative error E" ("by Tucker-2 at ranks
// ..." or "by CP at rank N" for a convolution).
std::string factorization_text(const FactorizedLayer& f);

}  // namespace sparrow::cli
