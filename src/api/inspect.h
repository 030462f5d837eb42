// What `inspect` reports about a .spw file, as data: per layer its shape, kept weights, bits, layout
// and bytes, and where every byte of the file goes. Shared by the CLI and the Python package.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "sparrow/format.h"

namespace sparrow::api {

// Bytes of every float32 parameter of the source model when stored densely: as the file's metadata
// records them ("source_fp32_bytes"; the model before channel pruning or factorization shrank
// it), else those of the model the file holds.
int64_t dense_fp32_bytes(const SpwModel& m);
// A count recorded in a file's metadata: the non-negative integer below 2^50 under `key` of the
// JSON object `j`, else 0 (missing, malformed or out of range).
int64_t metadata_count(const nlohmann::json& j, const char* key);

// Bytes of every float32 parameter of the model the file holds, stored densely.
int64_t held_fp32_bytes(const SpwModel& m);

// How evenly a layer's non-zero weights spread over `partitions` interleaved row partitions (row r
// in partition r % partitions: EIE's PEs; at most one partition per row): the fullest
// partition's count, the mean, and their ratio mean / max (1: every partition holds as many);
// and the same within each column (input), summed over the columns: sum of the columns' means over
// sum of their fullest partitions' counts (1: every column's non-zeros spread evenly; the share
// of EIE's broadcast cycles in which all PEs work, when every input is active and no FIFO evens
// the columns out).
struct LayerBalance {
  int partitions = 0;
  int64_t max_nonzeros = 0;
  double mean_nonzeros = 0, load_balance = 1, column_balance = 1;
};
Result<LayerBalance> layer_balance(const CompressedTensor& t, int partitions);

// EIE's processing elements: the partitions inspect reports balance over by default.
inline constexpr int kEiePes = 64;
// The partitions the file's recipe balanced its pruning over (2 or more), else kEiePes.
int default_balance_partitions(const SpwModel& m);

// {file, file_bytes, dense_fp32_bytes, ratio, balance_partitions, layers: [...], breakdown: {...},
// metadata}; each layer's "balance" over `balance_partitions` (0: default_balance_partitions).
nlohmann::json spw_report_json(const SpwModel& m, const std::string& path, int balance_partitions = 0);

}  // namespace sparrow::api
