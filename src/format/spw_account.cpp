#include "format/spw_account.h"

namespace sparrow {

TensorSizes tensor_sizes(const CompressedTensor& t, const TensorStorage& s) {
  TensorSizes z;
  z.weights = t.numel();
  z.nonzeros = t.nonzeros();
  z.entries = t.entries();
  z.fillers = t.fillers();
  double codebook_bits = 32.0 * static_cast<double>(t.codebook.size());
  double index_bits = t.layout == WeightLayout::sparse ? t.index_bits : 0;
  z.pq_bits = static_cast<double>(z.entries) * (t.weight_bits + index_bits) +
              static_cast<double>(s.count_stream_bits) + codebook_bits;
  z.stored_bits = static_cast<double>(s.code_bits + s.gap_bits + s.count_stream_bits) + codebook_bits +
                  8.0 * static_cast<double>(s.table_bytes);
  if (z.entries > 0) {
    z.code_bits_per_entry = static_cast<double>(s.code_bits) / static_cast<double>(z.entries);
    z.gap_bits_per_entry = static_cast<double>(s.gap_bits) / static_cast<double>(z.entries);
  }
  return z;
}

ByteBreakdown account_bytes(const SpwModel& model, size_t graph_section_bytes) {
  uint64_t codes = 0, gaps = 0, fillers = 0, pointers = 0, codebooks = 0;  // in bits
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    const TensorStorage& s = model.storage[i];
    codes += s.code_bits - s.filler_code_bits;
    gaps += s.gap_bits - s.filler_gap_bits;
    fillers += s.filler_code_bits + s.filler_gap_bits;
    pointers += s.count_stream_bits;
    codebooks += (model.tensors[i].codebook.size() * sizeof(float) + s.table_bytes) * 8;
  }
  ByteBreakdown b;
  b.codes = static_cast<int64_t>(codes / 8);
  b.gaps = static_cast<int64_t>(gaps / 8);
  b.fillers = static_cast<int64_t>(fillers / 8);
  b.pointers = static_cast<int64_t>(pointers / 8);
  b.codebooks = static_cast<int64_t>(codebooks / 8);
  for (const auto& [name, t] : model.graph.initializers) {
    if (t.dtype() == DType::f32 && t.rank() <= 1)
      b.biases += static_cast<int64_t>(t.bytes());
    else
      b.dense_weights += static_cast<int64_t>(t.bytes());
  }
  b.graph = static_cast<int64_t>(graph_section_bytes);
  b.headers = model.file_bytes - (b.total() - b.headers);
  return b;
}

}  // namespace sparrow
