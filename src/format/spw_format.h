// The .spw file format, version 1.2 (also documented in docs/format.md).
//
// All integers are little-endian; offsets count from the start of the file.
//
// File header, 64 bytes at offset 0 (SpwHeader):
//    0 u8[4]  magic "SPRW"
//    4 u16    version_major = 1 (readers reject other majors)
//    6 u16    version_minor = 2 (1: GRPH is not deflated; 0: GRPH is ONNX)
//    8 u32    section_count
//   12 u32    table_crc          CRC-32 of the section table
//   16 u64    file_bytes         size of the whole file
//   24 u64    table_offset       = 64
//   32 u8[28] reserved, zero
//   60 u32    header_crc         CRC-32 of bytes 0..59
// Section table at table_offset: section_count entries of 32 bytes (SectionEntry):
//    0 u32 kind    'META', 'GRPH', 'DENS' or 'WGHT' (the 4 ASCII bytes read as a u32)
//    4 u32 crc     CRC-32 of the section bytes
//    8 u64 offset  multiple of 64, after the table
//   16 u64 bytes
//   24 u64 reserved, zero
// Sections follow in table order, each at a multiple of 64, zero padding between them:
// one META, one GRPH, one DENS, then one WGHT per compressed tensor.
//
// META: a UTF-8 JSON object (tool version, format version, options used, source model and its
//       FNV-1a 64 hash).
// GRPH: the graph (nodes, attributes, inputs, outputs, opset) without initializers, in Sparrow's
//       own encoding (graph_section.h): u64 encoded_bytes, then that encoding as one zlib stream
//       (RFC 1950; deflated: names repeat along a graph); in format 1.1 the encoding itself; in
//       format 1.0 an ONNX ModelProto. Every tensor it reads is in DENS or WGHT.
// DENS: u64 count, then per tensor a DenseRecord (8 bytes: u32 name_bytes, u8 dtype 0=f32 1=i64,
//       u8 rank, u16 reserved), u64 dims[rank], the name (padded to 8), the data (padded to 8).
// WGHT: a WeightRecord (64 bytes, below), then
//         u64 dims[rank]; the name (padded to 8); f32 codebook[2^weight_bits] (entry 0 is 0.0);
//         u64 entries[partitions];
//         if codes are Huffman-coded: u8 code_lengths[2^weight_bits] (padded to 8);
//         if gaps are Huffman-coded:  u8 gap_lengths[2^index_bits] (padded to 8);
//         the count stream, then the code stream, then the gap stream, each padded to 8 bytes.
//       The section ends exactly there.
//       Streams are bit streams, least-significant bit first. Column counts: partitions x cols
//       values of count_bits bits (partition-major). Codes and gaps: one value per entry,
//       partition after partition, either packed (weight_bits / index_bits each) or canonical
//       Huffman codes (most-significant bit of each code first).
//       Sparse layout: partition p holds rows p, p+P, p+2P, ...; per column, each entry's gap is
//       the number of the partition's zero rows skipped since the previous entry; a code of 0 is
//       a filler (a stored zero). Dense layout: one partition, no counts or gaps, rows*cols codes.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparrow/status.h"

namespace sparrow::spw {

// What is wrong with a codebook as the reader and the writer both require it (entry 0 is 0, every
// entry finite), or "" when nothing is; the writer checks it so it never writes what the reader
// refuses.
std::string codebook_problem(std::span<const float> codebook);

inline constexpr char kMagic[4] = {'S', 'P', 'R', 'W'};
inline constexpr uint16_t kVersionMajor = 1;
inline constexpr uint16_t kVersionMinor = 2;  // the newest this build reads and writes
inline constexpr uint64_t kSectionAlignment = 64;
// Format 1.2's graph section: the most bytes its encoding may declare, and the most it may declare
// per byte of its zlib stream (more than deflate can expand).
inline constexpr uint64_t kMaxGraphBytes = uint64_t{1} << 30;
inline constexpr uint64_t kMaxInflateRatio = 1032;

constexpr uint32_t fourcc(const char (&s)[5]) {
  return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 |
         uint32_t(uint8_t(s[3])) << 24;
}
inline constexpr uint32_t kMeta = fourcc("META");
inline constexpr uint32_t kGraph = fourcc("GRPH");
inline constexpr uint32_t kDense = fourcc("DENS");
inline constexpr uint32_t kWeight = fourcc("WGHT");

enum class Coding : uint8_t { packed = 0, huffman = 1 };

struct SpwHeader {
  char magic[4];
  uint16_t version_major;
  uint16_t version_minor;
  uint32_t section_count;
  uint32_t table_crc;
  uint64_t file_bytes;
  uint64_t table_offset;
  uint8_t reserved[28];
  uint32_t header_crc;
};
static_assert(sizeof(SpwHeader) == 64, "SpwHeader is 64 bytes on disk");

struct SectionEntry {
  uint32_t kind;
  uint32_t crc;
  uint64_t offset;
  uint64_t bytes;
  uint64_t reserved;
};
static_assert(sizeof(SectionEntry) == 32, "SectionEntry is 32 bytes on disk");

struct DenseRecord {
  uint32_t name_bytes;
  uint8_t dtype;
  uint8_t rank;
  uint16_t reserved;
};
static_assert(sizeof(DenseRecord) == 8, "DenseRecord is 8 bytes on disk");

struct WeightRecord {
  uint32_t name_bytes;
  uint8_t rank;
  uint8_t layout;        // WeightLayout
  uint8_t weight_bits;   // 1..8
  uint8_t index_bits;    // 2..8 (sparse), 0 (dense)
  uint8_t transposed;    // 0 or 1
  uint8_t codes_coding;  // Coding
  uint8_t gaps_coding;   // Coding
  uint8_t count_bits;    // 0..32
  uint32_t partitions;
  uint64_t rows;
  uint64_t cols;
  uint64_t code_stream_bits;
  uint64_t gap_stream_bits;
  uint64_t count_stream_bits;
  uint64_t reserved;
};
static_assert(sizeof(WeightRecord) == 64, "WeightRecord is 64 bytes on disk");

// Limits a reader enforces before allocating.
inline constexpr uint32_t kMaxSections = 1 << 20;
inline constexpr uint32_t kMaxNameBytes = 4096;
inline constexpr uint32_t kMaxPartitions = 1 << 16;
inline constexpr int kMaxRank = 8;
// Most column counts a sparse tensor may leave implicit (zero-bit counts: nothing stored).
inline constexpr uint64_t kMaxImplicitColumnCounts = uint64_t{1} << 24;

// Appends little-endian values to a byte string.
class ByteWriter {
 public:
  template <class T>
  void put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void put_bytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  void pad_to(size_t alignment) { out_.append((alignment - out_.size() % alignment) % alignment, '\0'); }
  size_t size() const { return out_.size(); }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

// Reads little-endian values with bounds checks; every failure names what was being read.
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}
  template <class T>
  Result<T> get(const char* what) {
    if (remaining() < sizeof(T)) return errorf("truncated while reading {}", what);
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  Result<std::string_view> get_bytes(uint64_t n, const char* what) {
    if (remaining() < n)
      return errorf("truncated while reading {} ({} bytes needed, {} left)", what, n, remaining());
    std::string_view v = data_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  Status skip_pad(size_t alignment) {
    size_t pad = (alignment - pos_ % alignment) % alignment;
    if (remaining() < pad) return errorf("truncated in padding");
    pos_ += pad;
    return {};
  }
  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

uint32_t crc32_of(std::string_view bytes);
std::string kind_name(uint32_t kind);

}  // namespace sparrow::spw
