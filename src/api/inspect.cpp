#include "api/inspect.h"

#include <algorithm>
#include <numeric>

#include "sparrow/compress.h"

namespace sparrow::api {

int64_t metadata_count(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer()) return 0;
  const auto& v = j[key];
  if (v.is_number_unsigned()) return v.get<uint64_t>() < (uint64_t{1} << 50) ? v.get<int64_t>() : 0;
  return v.get<int64_t>() >= 0 && v.get<int64_t>() < (int64_t{1} << 50) ? v.get<int64_t>() : 0;
}

int64_t dense_fp32_bytes(const SpwModel& m) {
  const int64_t source =
      metadata_count(nlohmann::json::parse(m.metadata_json, nullptr, false), "source_fp32_bytes");
  return source > 0 ? source : held_fp32_bytes(m);
}

int64_t held_fp32_bytes(const SpwModel& m) {
  int64_t n = 0;
  for (const auto& t : m.tensors) n += 4 * t.numel();
  for (const auto& [name, t] : m.graph.initializers)
    if (t.dtype() == DType::f32) n += static_cast<int64_t>(t.bytes());
  return n;
}

Result<LayerBalance> layer_balance(const CompressedTensor& t, int partitions) {
  SP_ASSIGN_OR_RETURN(std::vector<uint8_t> codes, decode_codes(t));
  const int64_t rows = t.view.rows, cols = t.view.cols;
  LayerBalance b;  // a layer of fewer rows than partitions is spread over one row each
  b.partitions = static_cast<int>(std::clamp<int64_t>(partitions, 1, std::max<int64_t>(rows, 1)));
  const auto parts = static_cast<size_t>(b.partitions);
  // Non-zeros per (column, partition), a block of columns at a time so the matrix is read row by
  // row; each partition's total, and the sum over columns of each column's fullest partition.
  constexpr int64_t kBlock = 64;
  std::vector<int64_t> in_block(static_cast<size_t>(kBlock) * parts), totals(parts, 0);
  int64_t fullest = 0;
  for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
    const int64_t width = std::min(kBlock, cols - c0);
    std::fill(in_block.begin(), in_block.end(), 0);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = codes.data() + r * cols + c0;
      const auto p = static_cast<size_t>(r % b.partitions);
      for (int64_t c = 0; c < width; ++c) in_block[static_cast<size_t>(c) * parts + p] += row[c] != 0;
    }
    for (int64_t c = 0; c < width; ++c) {
      const int64_t* column = in_block.data() + static_cast<size_t>(c) * parts;
      fullest += *std::max_element(column, column + parts);
      for (size_t p = 0; p < parts; ++p) totals[p] += column[p];
    }
  }
  const int64_t total = std::accumulate(totals.begin(), totals.end(), int64_t{0});
  b.max_nonzeros = *std::max_element(totals.begin(), totals.end());
  b.mean_nonzeros = static_cast<double>(total) / b.partitions;
  b.load_balance = b.max_nonzeros ? b.mean_nonzeros / static_cast<double>(b.max_nonzeros) : 1.0;
  b.column_balance = fullest ? b.mean_nonzeros / static_cast<double>(fullest) : 1.0;
  return b;
}

int default_balance_partitions(const SpwModel& m) {
  auto meta = nlohmann::json::parse(m.metadata_json, nullptr, false);
  if (meta.is_object() && meta.contains("options") && meta["options"].is_object()) {
    const auto& balance = meta["options"].value("balance", nlohmann::json());
    if (balance.is_number_integer() && balance.get<int64_t>() >= 2 &&
        balance.get<int64_t>() <= kMaxBalancePartitions)
      return balance.get<int>();
  }
  return kEiePes;
}

nlohmann::json spw_report_json(const SpwModel& m, const std::string& path, int balance_partitions) {
  if (balance_partitions <= 0) balance_partitions = default_balance_partitions(m);
  nlohmann::json j;
  int64_t dense = dense_fp32_bytes(m);
  j["file"] = path;
  j["file_bytes"] = m.file_bytes;
  j["dense_fp32_bytes"] = dense;
  j["ratio"] = m.file_bytes ? static_cast<double>(dense) / static_cast<double>(m.file_bytes) : 0.0;
  j["balance_partitions"] = balance_partitions;
  j["layers"] = nlohmann::json::array();
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const CompressedTensor& t = m.tensors[i];
    const TensorStorage& s = m.storage[i];
    TensorSizes z = tensor_sizes(t, s);
    nlohmann::json balance;  // null only if the encoding cannot be read (read_spw has checked it)
    if (auto b = layer_balance(t, balance_partitions); b.ok())
      balance = {{"max_nonzeros", b->max_nonzeros},
                 {"mean_nonzeros", b->mean_nonzeros},
                 {"load_balance", b->load_balance},
                 {"column_balance", b->column_balance}};
    j["layers"].push_back({{"name", t.name},
                           {"shape", t.shape},
                           {"weights", z.weights},
                           {"kept", z.nonzeros},
                           {"kept_fraction", z.weights ? static_cast<double>(z.nonzeros) / z.weights : 0.0},
                           {"layout", t.layout == WeightLayout::sparse ? "sparse" : "dense"},
                           {"partitions", t.partitions.size()},
                           {"weight_bits", t.weight_bits},
                           {"index_bits", t.index_bits},
                           {"huffman_codes", s.huffman_codes},
                           {"huffman_gaps", s.huffman_gaps},
                           {"stored_weight_bits", z.code_bits_per_entry},
                           {"stored_index_bits", z.gap_bits_per_entry},
                           {"entries", z.entries},
                           {"fillers", z.fillers},
                           {"pq_bytes", z.pq_bits / 8},
                           {"stored_bytes", z.stored_bits / 8},
                           {"dense_bytes", z.dense_bits() / 8},
                           {"balance", balance}});
  }
  const ByteBreakdown& b = m.breakdown;
  j["breakdown"] = {{"codes", b.codes},
                    {"gaps", b.gaps},
                    {"fillers", b.fillers},
                    {"pointers", b.pointers},
                    {"codebooks", b.codebooks},
                    {"biases", b.biases},
                    {"dense_weights", b.dense_weights},
                    {"graph", b.graph},
                    {"headers", b.headers}};
  auto meta = nlohmann::json::parse(m.metadata_json, nullptr, false);
  if (!meta.is_discarded()) j["metadata"] = meta;
  return j;
}

}  // namespace sparrow::api
