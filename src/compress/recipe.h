// Compression recipes: CompressOptions as JSON, read from --recipe files and stored in the
// metadata of every .spw file.
//
// {"sparsity": 0.9 | "quality": 1.2, "balance": 64, "balance_scope": "layer|column|entries",
//  "bits": 6 | {"conv": 8, "fc": 5}, "index_bits": 5,
//  "init": "linear|density|random", "quantizer": "kmeans|uniform", "huffman": true,
//  "partitions": 1, "seed": 1, "lowrank": "energy=0.9 | rank=64 | params=0.33",
//  "structured": "l1=0.5 | l2=0.3 | none", "channel_multiple": 16,
//  "layers": {"fc3": {"sparsity": 0.7, "bits": 6, "balance": 1, "lowrank": "none"},
//             "conv1": {"exclude": true, "structured": "none"}}}
#pragma once

#include <nlohmann/json.hpp>

#include "sparrow/compress.h"

namespace sparrow {

// Applies the recipe's keys to `options`; unknown keys and wrong types are errors naming the key.
Status apply_recipe(const nlohmann::json& recipe, CompressOptions& options);
nlohmann::json recipe_json(const CompressOptions& options);

// Parses "key=value,key=value" (keys sparsity, quality, balance, bits, lowrank, structured,
// exclude) into layer settings.
Status apply_layer_override(const std::string& text, CompressOptions& options);
// Parses "--bits" text: "6" (every layer) or "conv=8,fc=5".
Status apply_bits(const std::string& text, CompressOptions& options);

const char* init_name(KmeansInit init);

// The metadata JSON object with `key` set to `value` (unchanged if it is not a JSON object).
std::string with_metadata(const std::string& metadata_json, const std::string& key,
                          const nlohmann::json& value);

}  // namespace sparrow
