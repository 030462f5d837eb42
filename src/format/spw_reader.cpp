// Reads and validates a .spw file (layout in spw_format.h). Every offset, length and count is
// checked before it is used; checksums are verified before a section is parsed.
#include <zlib.h>

#include <cmath>
#include <limits>
#include <set>

#include "core/file.h"
#include "format/bitstream.h"
#include "format/graph_section.h"
#include "format/huffman.h"
#include "format/spw_account.h"
#include "format/spw_format.h"
#include "sparrow/format.h"

namespace sparrow {

namespace {

using spw::ByteReader;
using spw::Coding;

// The section table, checked; `minor` gets the file's minor version.
Result<std::vector<spw::SectionEntry>> read_table(std::string_view file, uint16_t& minor) {
  if (file.size() < sizeof(spw::SpwHeader))
    return errorf("file is {} bytes, smaller than the 64-byte header", file.size());
  spw::SpwHeader h;
  std::memcpy(&h, file.data(), sizeof h);
  if (std::memcmp(h.magic, spw::kMagic, 4) != 0) return errorf("not a .spw file (magic 'SPRW' missing)");
  if (spw::crc32_of(file.substr(0, 60)) != h.header_crc)
    return errorf("checksum mismatch in the file header");
  if (h.version_major != spw::kVersionMajor)
    return errorf("field version_major: file format {}.{}, this reader reads {}.x", h.version_major,
                  h.version_minor, spw::kVersionMajor);
  minor = h.version_minor;
  if (minor > spw::kVersionMinor)
    return errorf("field version_minor: file format {}.{} is newer than this reader reads ({}.{})",
                  h.version_major, minor, spw::kVersionMajor, spw::kVersionMinor);
  if (h.file_bytes != file.size())
    return errorf("field file_bytes: header says {} bytes, the file has {} (truncated or extended?)",
                  h.file_bytes, file.size());
  if (h.section_count < 3 || h.section_count > spw::kMaxSections)
    return errorf("field section_count: {} is outside 3..{}", h.section_count, spw::kMaxSections);
  uint64_t table_end = h.table_offset + uint64_t{h.section_count} * sizeof(spw::SectionEntry);
  if (h.table_offset != sizeof(spw::SpwHeader) || table_end > file.size())
    return errorf("field table_offset: section table does not fit in the file");
  std::string_view table_bytes = file.substr(h.table_offset, table_end - h.table_offset);
  if (spw::crc32_of(table_bytes) != h.table_crc) return errorf("checksum mismatch in the section table");
  std::vector<spw::SectionEntry> table(h.section_count);
  std::memcpy(table.data(), table_bytes.data(), table_bytes.size());
  uint64_t prev_end = table_end;
  for (uint32_t i = 0; i < h.section_count; ++i) {
    const auto& s = table[i];
    uint32_t want = i == 0 ? spw::kMeta : i == 1 ? spw::kGraph : i == 2 ? spw::kDense : spw::kWeight;
    if (s.kind != want)
      return errorf("section {}: kind '{}', expected '{}'", i, spw::kind_name(s.kind), spw::kind_name(want));
    if (s.offset % spw::kSectionAlignment || s.offset < prev_end || s.bytes > file.size() ||
        s.offset > file.size() - s.bytes)
      return errorf("section {} ({}): offset {} and size {} do not fit the file", i, spw::kind_name(s.kind),
                    s.offset, s.bytes);
    if (file.substr(prev_end, s.offset - prev_end).find_first_not_of('\0') != std::string_view::npos)
      return errorf("padding before section {} ({}) holds non-zero bytes", i, spw::kind_name(s.kind));
    if (spw::crc32_of(file.substr(s.offset, s.bytes)) != s.crc)
      return errorf("checksum mismatch in section {} ({})", i, spw::kind_name(s.kind));
    prev_end = s.offset + s.bytes;
  }
  if (prev_end != file.size()) return errorf("{} bytes follow the last section", file.size() - prev_end);
  return table;
}

Result<std::string> read_name(ByteReader& r, uint32_t n) {
  if (n == 0 || n > spw::kMaxNameBytes)
    return errorf("name length {} is outside 1..{}", n, spw::kMaxNameBytes);
  SP_ASSIGN_OR_RETURN(std::string_view name, r.get_bytes(n, "name"));
  SP_RETURN_IF_ERROR(r.skip_pad(8));
  return std::string(name);
}

Result<Shape> read_dims(ByteReader& r, int rank) {
  if (rank > spw::kMaxRank) return errorf("rank {} exceeds {}", rank, spw::kMaxRank);
  Shape shape;
  for (int i = 0; i < rank; ++i) {
    SP_ASSIGN_OR_RETURN(uint64_t d, r.get<uint64_t>("dims"));
    if (d > static_cast<uint64_t>(kMaxTensorElements)) return errorf("dimension {} is too large", d);
    shape.push_back(static_cast<int64_t>(d));
  }
  if (shape_numel(shape) < 0) return errorf("shape {} has too many elements", shape_str(shape));
  return shape;
}

Status read_dense(std::string_view bytes, Model& graph) {
  ByteReader r(bytes);
  SP_ASSIGN_OR_RETURN(uint64_t count, r.get<uint64_t>("tensor count"));
  if (count > bytes.size() / sizeof(spw::DenseRecord))
    return errorf("field count: {} tensors cannot fit", count);
  for (uint64_t i = 0; i < count; ++i) {
    SP_ASSIGN_OR_RETURN(auto rec, r.get<spw::DenseRecord>("tensor record"));
    if (rec.dtype > 1) return errorf("tensor {}: field dtype: {} is not 0 (f32) or 1 (i64)", i, rec.dtype);
    SP_ASSIGN_OR_RETURN(Shape shape, read_dims(r, rec.rank));
    SP_ASSIGN_OR_RETURN(std::string name, read_name(r, rec.name_bytes));
    uint64_t nbytes = static_cast<uint64_t>(shape_numel(shape)) * (rec.dtype == 0 ? 4 : 8);
    SP_ASSIGN_OR_RETURN(std::string_view data, r.get_bytes(nbytes, "tensor data"));
    SP_RETURN_IF_ERROR(r.skip_pad(8));
    Tensor t(rec.dtype == 0 ? DType::f32 : DType::i64, shape);
    std::memcpy(t.raw(), data.data(), data.size());
    if (!graph.initializers.emplace(name, std::move(t)).second)
      return errorf("tensor '{}' appears twice", name);
  }
  if (r.remaining() != 0) return errorf("{} unexpected bytes after the last tensor", r.remaining());
  return {};
}

Status check_record(const spw::WeightRecord& rec) {
  bool sparse = rec.layout == static_cast<uint8_t>(WeightLayout::sparse);
  if (rec.layout > 1) return errorf("field layout: {} is not 0 (sparse) or 1 (dense)", rec.layout);
  if (rec.weight_bits < 1 || rec.weight_bits > 8)
    return errorf("field weight_bits: {} is outside 1..8", rec.weight_bits);
  if (sparse && (rec.index_bits < 2 || rec.index_bits > 8))
    return errorf("field index_bits: {} is outside 2..8", rec.index_bits);
  if (!sparse && (rec.index_bits != 0 || rec.partitions != 1 || rec.count_bits != 0))
    return errorf("fields index_bits/partitions/count_bits: a dense tensor has 0, 1 and 0");
  if (rec.transposed > 1 || rec.codes_coding > 1 || rec.gaps_coding > 1 || rec.count_bits > 32)
    return errorf("fields transposed/codes_coding/gaps_coding/count_bits hold invalid values");
  if (rec.partitions < 1 || rec.partitions > spw::kMaxPartitions)
    return errorf("field partitions: {} is outside 1..{}", rec.partitions, spw::kMaxPartitions);
  if (rec.rows == 0 || rec.cols == 0 || rec.rows > static_cast<uint64_t>(kMaxTensorElements) ||
      rec.cols > static_cast<uint64_t>(kMaxTensorElements) / rec.rows)
    return errorf("fields rows/cols: {} x {} is empty or too large", rec.rows, rec.cols);
  if (rec.count_stream_bits != uint64_t{rec.count_bits} * rec.partitions * rec.cols)
    return errorf("field count_stream_bits: {} does not match {} counts of {} bits", rec.count_stream_bits,
                  uint64_t{rec.partitions} * rec.cols, rec.count_bits);
  return {};
}

Result<std::vector<uint8_t>> read_lengths(ByteReader& r, Coding coding, int width, const char* what) {
  if (coding != Coding::huffman) return std::vector<uint8_t>{};
  SP_ASSIGN_OR_RETURN(std::string_view b, r.get_bytes(size_t{1} << width, what));
  SP_RETURN_IF_ERROR(r.skip_pad(8));
  std::vector<uint8_t> lengths(b.begin(), b.end());
  auto s = validate_huffman_lengths(lengths);
  if (!s.ok()) return s.prefixed(what);
  return lengths;
}

Result<BitReader> read_stream(ByteReader& r, uint64_t bits, const char* what) {
  SP_ASSIGN_OR_RETURN(std::string_view b, r.get_bytes((bits + 7) / 8, what));
  SP_RETURN_IF_ERROR(r.skip_pad(8));
  return BitReader(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), b.size()), bits);
}

// Reads `count` values of `width` bits, packed or Huffman-coded, each checked < 2^width.
Status read_values(BitReader& in, Coding coding, const std::vector<uint8_t>& lengths, int width,
                   uint64_t count, std::vector<uint8_t>& out) {
  // Every value takes at least one bit (a Huffman code) or `width` bits (packed).
  const uint64_t min_bits = count * static_cast<uint64_t>(coding == Coding::huffman ? 1 : width);
  if (in.remaining() < min_bits) return errorf("stream holds fewer than {} values", count);
  out.resize(count);
  if (coding == Coding::huffman) {
    HuffmanDecoder dec(lengths);
    for (uint64_t i = 0; i < count; ++i) {
      SP_ASSIGN_OR_RETURN(uint32_t v, dec.decode(in));
      out[i] = static_cast<uint8_t>(v);
    }
  } else {
    for (uint64_t i = 0; i < count; ++i) {
      SP_ASSIGN_OR_RETURN(uint32_t v, in.read(width));
      out[i] = static_cast<uint8_t>(v);
    }
  }
  return {};  // leftover bits are checked once all partitions are read
}

Result<CompressedTensor> read_weight(std::string_view bytes, TensorStorage& st) {
  ByteReader r(bytes);
  SP_ASSIGN_OR_RETURN(auto rec, r.get<spw::WeightRecord>("weight record"));
  SP_RETURN_IF_ERROR(check_record(rec));
  CompressedTensor t;
  bool sparse = rec.layout == 0;
  SP_ASSIGN_OR_RETURN(t.shape, read_dims(r, rec.rank));
  SP_ASSIGN_OR_RETURN(t.name, read_name(r, rec.name_bytes));
  auto fail = [&](const Status& s) { return s.prefixed(fmt::format("tensor '{}'", t.name)); };
  t.view = MatrixView{static_cast<int64_t>(rec.rows), static_cast<int64_t>(rec.cols), rec.transposed != 0};
  if (shape_numel(t.shape) != t.numel() ||
      (t.view.transposed && (t.shape.size() != 2 || t.shape[1] != t.view.rows)))
    return fail(
        errorf("fields rows/cols: {} x {} does not match shape {}", rec.rows, rec.cols, shape_str(t.shape)));
  t.layout = static_cast<WeightLayout>(rec.layout);
  t.weight_bits = rec.weight_bits;
  t.index_bits = rec.index_bits;
  SP_ASSIGN_OR_RETURN(std::string_view cb, r.get_bytes(sizeof(float) << rec.weight_bits, "codebook"));
  t.codebook.resize(size_t{1} << rec.weight_bits);
  std::memcpy(t.codebook.data(), cb.data(), cb.size());
  if (std::string problem = spw::codebook_problem(t.codebook); !problem.empty())
    return fail(errorf("{}", problem));
  // Sizes are checked against the weights and the streams present before anything is allocated.
  std::vector<uint64_t> entries(rec.partitions);
  uint64_t total_entries = 0;
  for (uint64_t& n : entries) {
    SP_ASSIGN_OR_RETURN(n, r.get<uint64_t>("entry count"));
    total_entries += std::min(n, static_cast<uint64_t>(t.numel()) + 1);  // cannot overflow: P <= 2^16
    if (total_entries > static_cast<uint64_t>(t.numel()))
      return fail(errorf("field entries: entry counts sum past the matrix's {} weights", t.numel()));
  }
  if (!sparse && total_entries != static_cast<uint64_t>(t.numel()))
    return fail(errorf("entry counts sum to {}, the matrix has {} weights", total_entries, t.numel()));
  if (total_entries > rec.code_stream_bits || (sparse && total_entries > rec.gap_stream_bits))
    return fail(errorf("fields code_stream_bits/gap_stream_bits: {} and {} bits cannot hold {} entries",
                       rec.code_stream_bits, rec.gap_stream_bits, total_entries));
  // Column counts: the count stream holds them, except that zero-bit counts (an all-pruned matrix)
  // are implicit; those are capped so that a tiny file cannot ask for gigabytes of zeros.
  const uint64_t column_counts = uint64_t{rec.partitions} * rec.cols;
  if (sparse && rec.count_bits == 0 && (total_entries != 0 || column_counts > spw::kMaxImplicitColumnCounts))
    return fail(
        errorf("field count_bits: zero-bit column counts need an empty matrix of at most {} columns "
               "(here {} entries, {} columns in {} partitions)",
               spw::kMaxImplicitColumnCounts, total_entries, rec.cols, rec.partitions));
  t.partitions.resize(rec.partitions);
  auto codes_coding = static_cast<Coding>(rec.codes_coding),
       gaps_coding = static_cast<Coding>(rec.gaps_coding);
  SP_ASSIGN_OR_RETURN(auto code_lengths,
                      read_lengths(r, codes_coding, rec.weight_bits, "code Huffman table"));
  SP_ASSIGN_OR_RETURN(auto gap_lengths, read_lengths(r, gaps_coding, rec.index_bits, "gap Huffman table"));
  SP_ASSIGN_OR_RETURN(BitReader counts, read_stream(r, rec.count_stream_bits, "count stream"));
  SP_ASSIGN_OR_RETURN(BitReader code_in, read_stream(r, rec.code_stream_bits, "code stream"));
  SP_ASSIGN_OR_RETURN(BitReader gap_in, read_stream(r, rec.gap_stream_bits, "gap stream"));
  if (r.remaining() != 0) return fail(errorf("{} unexpected bytes at the end of the section", r.remaining()));
  for (size_t p = 0; p < t.partitions.size(); ++p) {
    Partition& part = t.partitions[p];
    const uint64_t n = entries[p];
    if (sparse) {
      part.col_counts.resize(static_cast<size_t>(t.view.cols));
      for (auto& c : part.col_counts) c = *counts.read(rec.count_bits);  // stream length checked above
    }
    auto s = read_values(code_in, codes_coding, code_lengths, rec.weight_bits, n, part.codes);
    if (s.ok() && sparse) s = read_values(gap_in, gaps_coding, gap_lengths, rec.index_bits, n, part.gaps);
    if (s.ok() && sparse) s = check_partition(t, static_cast<int>(p));
    if (!s.ok()) return fail(s);
  }
  if (code_in.remaining() != 0 || gap_in.remaining() != 0)
    return fail(errorf("code or gap stream is longer than its entries"));
  st = TensorStorage{codes_coding == Coding::huffman,
                     gaps_coding == Coding::huffman,
                     rec.count_bits,
                     rec.code_stream_bits,
                     rec.gap_stream_bits,
                     rec.count_stream_bits,
                     0,
                     0,
                     0,
                     bytes.size()};
  int64_t fillers = t.fillers();
  st.filler_code_bits =
      static_cast<uint64_t>(fillers) * (st.huffman_codes ? code_lengths[0] : rec.weight_bits);
  if (sparse) {
    uint32_t max_gap = (1u << rec.index_bits) - 1;
    st.filler_gap_bits =
        static_cast<uint64_t>(fillers) * (st.huffman_gaps ? gap_lengths[max_gap] : rec.index_bits);
  }
  auto pad8 = [](size_t n) { return (n + 7) / 8 * 8; };
  st.table_bytes = pad8(code_lengths.size()) + pad8(gap_lengths.size());
  return t;
}

// Format 1.2's graph section inflated back into the encoding: its declared length (u64), then one
// zlib stream that must hold exactly that many bytes and end where the section ends. The output
// grows as the stream inflates, so a declared length costs no memory the stream does not back.
Result<std::string> inflated_graph(std::string_view section) {
  uint64_t size = 0;
  if (section.size() < sizeof size)
    return errorf("section 1 (GRPH): {} bytes, too short for its u64 encoded_bytes", section.size());
  std::memcpy(&size, section.data(), sizeof size);
  const std::string_view stream = section.substr(sizeof size);
  if (size > spw::kMaxInflateRatio * stream.size() || size > spw::kMaxGraphBytes ||
      stream.size() > std::numeric_limits<uInt>::max())
    return errorf("section 1 (GRPH): field encoded_bytes: {} bytes cannot come from a {}-byte zlib stream",
                  size, stream.size());
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return errorf("section 1 (GRPH): zlib could not start inflating");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(stream.data()));
  z.avail_in = static_cast<uInt>(stream.size());
  std::string out;
  constexpr size_t kChunk = 64 << 10;
  int rc = Z_OK;
  while (rc == Z_OK && out.size() <= size) {
    const size_t have = out.size();
    out.resize(have + kChunk);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + have);
    z.avail_out = static_cast<uInt>(kChunk);
    rc = inflate(&z, Z_NO_FLUSH);
    out.resize(have + kChunk - z.avail_out);
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;  // the stream stopped short of its end
  }
  const bool whole = rc == Z_STREAM_END && z.avail_in == 0 && out.size() == size;
  inflateEnd(&z);
  if (!whole)
    return errorf(
        "section 1 (GRPH): the zlib stream is corrupt, has bytes after its end, or does not hold "
        "encoded_bytes ({}) bytes",
        size);
  return out;
}

// Format 1.0 stored the graph as ONNX, 1.1 in Sparrow's encoding, 1.2 in that encoding deflated.
Result<Model> read_graph(std::string_view bytes, uint16_t minor) {
  if (minor >= 1) {
    std::string encoding;
    if (minor >= 2) {
      SP_ASSIGN_OR_RETURN(encoding, inflated_graph(bytes));
      bytes = encoding;
    }
    auto g = spw::decode_graph(bytes);
    if (!g.ok()) return g.status().prefixed("section 1 (GRPH)");
    return g;
  }
  const auto& onnx = spw::onnx_graph_codec();
  if (!onnx.parse)
    return errorf(
        "section 1 (GRPH): format 1.0 stores the graph as ONNX, which this program cannot read: read it "
        "with a program that links Sparrow's ONNX support (sparrow_io; the sparrow CLI does), or compress "
        "the model again to get format 1.{}",
        kSpwVersionMinor);
  return onnx.parse(bytes, "section 1 (GRPH)");
}

// Every tensor a node reads must come from a graph input, a node output, DENS or WGHT.
Status check_references(const SpwModel& m) {
  std::set<std::string> known;
  for (const auto& in : m.graph.inputs) known.insert(in.name);
  for (const auto& [name, t] : m.graph.initializers) known.insert(name);
  for (const auto& t : m.tensors)
    if (!known.insert(t.name).second) return errorf("tensor '{}' is stored twice", t.name);
  for (const auto& node : m.graph.nodes) {
    for (const auto& in : node.inputs)
      if (!in.empty() && !known.count(in))
        return errorf("{}: input '{}' is stored nowhere", node.describe(), in);
    for (const auto& out : node.outputs) known.insert(out);
  }
  return {};
}

Result<SpwModel> parse_inner(std::string_view file, const std::string& source) {
  uint16_t minor = 0;
  SP_ASSIGN_OR_RETURN(auto table, read_table(file, minor));
  auto section = [&](size_t i) { return file.substr(table[i].offset, table[i].bytes); };
  SpwModel m;
  m.metadata_json = std::string(section(0));
  SP_ASSIGN_OR_RETURN(m.graph, read_graph(section(1), minor));
  if (!m.graph.initializers.empty())
    return errorf("section 1 (GRPH): holds initializers, which belong in DENS");
  auto dense = read_dense(section(2), m.graph);
  if (!dense.ok()) return dense.prefixed("section 2 (DENS)");
  for (size_t i = 3; i < table.size(); ++i) {
    TensorStorage st;
    auto t = read_weight(section(i), st);
    if (!t.ok()) return t.status().prefixed(fmt::format("section {} (WGHT)", i));
    m.tensors.push_back(std::move(*t));
    m.storage.push_back(st);
  }
  SP_RETURN_IF_ERROR(check_references(m));
  m.graph.source = source;
  m.file_bytes = static_cast<int64_t>(file.size());
  m.breakdown = account_bytes(m, table[1].bytes);
  return m;
}

}  // namespace

Result<SpwModel> parse_spw(std::string_view bytes, const std::string& source) {
  auto m = parse_inner(bytes, source);
  if (!m.ok()) return m.status().prefixed(source);
  return m;
}

Result<SpwModel> read_spw(const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(path));
  return parse_spw(std::string_view(bytes.data(), bytes.size()), path);
}

Result<Model> SpwModel::to_dense_model() const {
  Model m = graph;
  for (const auto& t : tensors) {
    auto w = decompress(t);
    if (!w.ok()) return w.status().prefixed(graph.source);
    m.initializers[t.name] = std::move(*w);
  }
  auto s = m.validate();
  if (!s.ok()) return s.prefixed(graph.source);
  return m;
}

}  // namespace sparrow
