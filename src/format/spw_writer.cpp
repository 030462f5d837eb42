// Writes SpwModel to the .spw layout described in spw_format.h.
#include <zlib.h>

#include <cmath>

#include "core/file.h"
#include "core/finite.h"
#include "format/bitstream.h"
#include "format/graph_section.h"
#include "format/huffman.h"
#include "format/spw_account.h"
#include "format/spw_format.h"
#include "sparrow/format.h"
#include "sparrow/version.h"

namespace sparrow {

namespace spw {

uint32_t crc32_of(std::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes 32-bit lengths: feed large sections in pieces.
  for (size_t pos = 0; pos < bytes.size(); pos += 1u << 30) {
    size_t n = std::min<size_t>(bytes.size() - pos, 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + pos), static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

std::string kind_name(uint32_t kind) {
  std::string s(4, ' ');
  for (int i = 0; i < 4; ++i) {
    char c = static_cast<char>((kind >> (8 * i)) & 0xff);
    s[i] = (c >= 32 && c < 127) ? c : '?';
  }
  return s;
}

std::string codebook_problem(std::span<const float> codebook) {
  if (codebook.empty() || codebook[0] != 0.0f)
    return codebook.empty() ? "the codebook is empty"
                            : fmt::format("codebook entry 0 is {}, must be 0", codebook[0]);
  if (const int64_t bad = first_nonfinite(codebook); bad >= 0)
    return fmt::format("codebook entry {} is {}", bad, codebook[static_cast<size_t>(bad)]);
  return {};
}

}  // namespace spw

namespace {

using spw::ByteWriter;
using spw::Coding;

// One value stream (codes or gaps) of a tensor, packed or Huffman-coded.
struct Stream {
  Coding coding = Coding::packed;
  std::vector<uint8_t> lengths;  // Huffman lengths when coding == huffman
  BitWriter bits;
};

size_t padded8(size_t n) {
  return (n + 7) / 8 * 8;
}

// Encodes `values` (each < 2^width) as the smaller of packed and Huffman (if allowed).
Stream encode_stream(const std::vector<const std::vector<uint8_t>*>& parts, int width, bool allow_huffman) {
  std::vector<uint64_t> counts(size_t{1} << width, 0);
  uint64_t n = 0;
  for (const auto* p : parts)
    for (uint8_t v : *p) ++counts[v], ++n;
  Stream s;
  bool use_huffman = false;
  std::vector<uint8_t> lengths;
  if (allow_huffman && n > 0) {
    lengths = huffman_lengths(counts);
    uint64_t huff_bits = 0;
    for (size_t v = 0; v < counts.size(); ++v) huff_bits += counts[v] * lengths[v];
    size_t huff_bytes = padded8((huff_bits + 7) / 8) + padded8(lengths.size());
    use_huffman = huff_bytes < padded8((n * static_cast<uint64_t>(width) + 7) / 8);
  }
  if (use_huffman) {
    s.coding = Coding::huffman;
    s.lengths = lengths;
    HuffmanEncoder enc(lengths);
    for (const auto* p : parts)
      for (uint8_t v : *p) enc.encode(s.bits, v);
  } else {
    for (const auto* p : parts)
      for (uint8_t v : *p) s.bits.write(v, width);
  }
  return s;
}

// Bits spent on filler entries in a stream: fillers carry code 0 and the maximal gap.
uint64_t symbol_bits(const Stream& s, uint32_t symbol, int width, uint64_t count) {
  return count * static_cast<uint64_t>(s.coding == Coding::huffman ? s.lengths[symbol] : width);
}

void put_padded(ByteWriter& w, const void* data, size_t n) {
  w.put_bytes(data, n);
  w.pad_to(8);
}

std::string weight_section(const CompressedTensor& t, bool huffman, TensorStorage& st) {
  std::vector<const std::vector<uint8_t>*> codes, gaps;
  uint32_t max_count = 0;
  for (const auto& p : t.partitions) {
    codes.push_back(&p.codes);
    gaps.push_back(&p.gaps);
    for (uint32_t c : p.col_counts) max_count = std::max(max_count, c);
  }
  bool sparse = t.layout == WeightLayout::sparse;
  Stream code_stream = encode_stream(codes, t.weight_bits, huffman);
  Stream gap_stream = sparse ? encode_stream(gaps, t.index_bits, huffman) : Stream{};
  BitWriter counts;
  st.count_bits = sparse ? bits_for(max_count) : 0;
  for (const auto& p : t.partitions)
    for (uint32_t c : p.col_counts) counts.write(c, st.count_bits);

  spw::WeightRecord rec{};
  rec.name_bytes = static_cast<uint32_t>(t.name.size());
  rec.rank = static_cast<uint8_t>(t.shape.size());
  rec.layout = static_cast<uint8_t>(t.layout);
  rec.weight_bits = static_cast<uint8_t>(t.weight_bits);
  rec.index_bits = static_cast<uint8_t>(sparse ? t.index_bits : 0);
  rec.transposed = t.view.transposed;
  rec.codes_coding = static_cast<uint8_t>(code_stream.coding);
  rec.gaps_coding = static_cast<uint8_t>(gap_stream.coding);
  rec.count_bits = static_cast<uint8_t>(st.count_bits);
  rec.partitions = static_cast<uint32_t>(t.partitions.size());
  rec.rows = static_cast<uint64_t>(t.view.rows);
  rec.cols = static_cast<uint64_t>(t.view.cols);
  rec.code_stream_bits = code_stream.bits.bit_count();
  rec.gap_stream_bits = gap_stream.bits.bit_count();
  rec.count_stream_bits = counts.bit_count();

  ByteWriter w;
  w.put(rec);
  for (int64_t d : t.shape) w.put(static_cast<uint64_t>(d));
  put_padded(w, t.name.data(), t.name.size());
  w.put_bytes(t.codebook.data(), t.codebook.size() * sizeof(float));
  for (const auto& p : t.partitions) w.put(static_cast<uint64_t>(p.codes.size()));
  if (code_stream.coding == Coding::huffman)
    put_padded(w, code_stream.lengths.data(), code_stream.lengths.size());
  if (gap_stream.coding == Coding::huffman)
    put_padded(w, gap_stream.lengths.data(), gap_stream.lengths.size());
  put_padded(w, counts.bytes().data(), counts.bytes().size());
  put_padded(w, code_stream.bits.bytes().data(), code_stream.bits.bytes().size());
  put_padded(w, gap_stream.bits.bytes().data(), gap_stream.bits.bytes().size());

  int64_t fillers = t.fillers();
  st.huffman_codes = code_stream.coding == Coding::huffman;
  st.huffman_gaps = gap_stream.coding == Coding::huffman;
  st.code_bits = rec.code_stream_bits;
  st.gap_bits = rec.gap_stream_bits;
  st.count_stream_bits = rec.count_stream_bits;
  st.filler_code_bits = symbol_bits(code_stream, 0, t.weight_bits, fillers);
  st.filler_gap_bits = sparse ? symbol_bits(gap_stream, (1u << t.index_bits) - 1, t.index_bits, fillers) : 0;
  st.table_bytes = padded8(code_stream.lengths.size()) * st.huffman_codes +
                   padded8(gap_stream.lengths.size()) * st.huffman_gaps;
  st.section_bytes = w.size();
  return std::move(w.str());
}

std::string dense_section(const Model& graph) {
  ByteWriter w;
  w.put(static_cast<uint64_t>(graph.initializers.size()));
  for (const auto& [name, t] : graph.initializers) {
    spw::DenseRecord rec{static_cast<uint32_t>(name.size()),
                         static_cast<uint8_t>(t.dtype() == DType::f32 ? 0 : 1),
                         static_cast<uint8_t>(t.rank()), 0};
    w.put(rec);
    for (int64_t d : t.shape()) w.put(static_cast<uint64_t>(d));
    put_padded(w, name.data(), name.size());
    put_padded(w, t.raw(), t.bytes());
  }
  return std::move(w.str());
}

// Format 1.2's graph section: the encoding's length (u64), then the encoding as one zlib stream.
Result<std::string> deflated(const std::string& encoded) {
  if (encoded.size() > spw::kMaxGraphBytes)
    return errorf("the graph encodes to {} bytes, more than the {} a reader accepts", encoded.size(),
                  spw::kMaxGraphBytes);
  uLongf bound = compressBound(static_cast<uLong>(encoded.size()));
  std::string out(sizeof(uint64_t) + bound, '\0');
  const uint64_t size = encoded.size();
  std::memcpy(out.data(), &size, sizeof size);
  if (compress2(reinterpret_cast<Bytef*>(out.data() + sizeof size), &bound,
                reinterpret_cast<const Bytef*>(encoded.data()), static_cast<uLong>(encoded.size()),
                Z_BEST_COMPRESSION) != Z_OK)
    return errorf("the graph section could not be deflated");
  out.resize(sizeof size + bound);
  return out;
}

}  // namespace

Result<std::string> serialize_spw(SpwModel& model, bool huffman, int minor_version) {
  // Nothing is written that the reader would refuse.
  for (const CompressedTensor& t : model.tensors)
    if (std::string problem = spw::codebook_problem(t.codebook); !problem.empty())
      return errorf("tensor '{}': {}, which the reader refuses", t.name, problem);
  Model graph_only = model.graph;
  graph_only.initializers.clear();
  std::string graph;
  if (minor_version == 0) {
    const auto& onnx = spw::onnx_graph_codec();
    if (!onnx.serialize) return errorf("writing .spw format 1.0 stores the graph as ONNX: link ONNX support");
    SP_ASSIGN_OR_RETURN(graph, onnx.serialize(graph_only));
  } else if (minor_version == 1 || minor_version == 2) {
    graph_only.producer_name = "sparrow";  // as format 1.0's ONNX export stamps it
    graph_only.producer_version = SPARROW_VERSION;
    graph = spw::encode_graph(graph_only);
    if (minor_version == 2) {
      SP_ASSIGN_OR_RETURN(graph, deflated(graph));
    }
  } else {
    return errorf("cannot write .spw format 1.{}: this build writes 1.0 to 1.{}", minor_version,
                  kSpwVersionMinor);
  }
  std::vector<std::pair<uint32_t, std::string>> sections;
  sections.emplace_back(spw::kMeta, model.metadata_json);
  sections.emplace_back(spw::kGraph, std::move(graph));
  sections.emplace_back(spw::kDense, dense_section(model.graph));
  model.storage.assign(model.tensors.size(), TensorStorage{});
  for (size_t i = 0; i < model.tensors.size(); ++i)
    sections.emplace_back(spw::kWeight, weight_section(model.tensors[i], huffman, model.storage[i]));

  // Lay out: header, table, then sections at 64-byte boundaries.
  uint64_t offset = sizeof(spw::SpwHeader) + sections.size() * sizeof(spw::SectionEntry);
  std::vector<spw::SectionEntry> table;
  for (const auto& [kind, bytes] : sections) {
    offset = (offset + spw::kSectionAlignment - 1) / spw::kSectionAlignment * spw::kSectionAlignment;
    table.push_back({kind, spw::crc32_of(bytes), offset, bytes.size(), 0});
    offset += bytes.size();
  }
  spw::SpwHeader header{};
  std::memcpy(header.magic, spw::kMagic, 4);
  header.version_major = spw::kVersionMajor;
  header.version_minor = static_cast<uint16_t>(minor_version);
  header.section_count = static_cast<uint32_t>(sections.size());
  header.table_crc = spw::crc32_of(std::string_view(reinterpret_cast<const char*>(table.data()),
                                                    table.size() * sizeof(spw::SectionEntry)));
  header.file_bytes = offset;
  header.table_offset = sizeof(spw::SpwHeader);
  header.header_crc = spw::crc32_of(std::string_view(reinterpret_cast<const char*>(&header), 60));

  std::string out;
  out.reserve(offset);
  out.append(reinterpret_cast<const char*>(&header), sizeof header);
  out.append(reinterpret_cast<const char*>(table.data()), table.size() * sizeof(spw::SectionEntry));
  for (size_t i = 0; i < sections.size(); ++i) {
    out.resize(table[i].offset, '\0');
    out += sections[i].second;
  }
  model.file_bytes = static_cast<int64_t>(out.size());
  model.breakdown = account_bytes(model, sections[1].second.size());
  return out;
}

Status write_spw(SpwModel& model, const std::string& path, bool huffman) {
  SP_ASSIGN_OR_RETURN(std::string bytes, serialize_spw(model, huffman));
  return write_file_atomic(path, bytes);
}

}  // namespace sparrow
