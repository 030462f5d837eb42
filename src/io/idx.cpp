// IDX format (MNIST): bytes 0-1 zero, byte 2 element type (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
// 0x0D f32, 0x0E f64), byte 3 number of dimensions, then one big-endian u32 per dimension, then the
// data, big-endian. Files may be gzip-compressed; zlib reads plain files transparently.
#include <cstring>

#include <zlib.h>

#include "core/file.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

constexpr size_t kMaxIdxBytes = size_t{4} << 30;

Result<std::vector<unsigned char>> read_maybe_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return errorf("{}: cannot open (missing file?)", path);
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) {
    out.insert(out.end(), buf, buf + n);
    if (out.size() > kMaxIdxBytes) {
      gzclose(f);
      return errorf("{}: larger than {} bytes once decompressed", path, kMaxIdxBytes);
    }
  }
  int err = 0;
  const char* msg = gzerror(f, &err);
  bool failed = n < 0 || (err != Z_OK && err != Z_STREAM_END);
  std::string reason = failed ? msg : "";
  gzclose(f);
  if (failed) return errorf("{}: gzip stream is corrupt or truncated ({})", path, reason);
  return out;
}

// The whole of `data` as one gzip member (zlib's deflate with a gzip header).
Result<std::string> gzip_bytes(std::string_view data) {
  z_stream z{};
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return errorf("zlib: cannot start a gzip stream");
  std::string out(deflateBound(&z, static_cast<uLong>(data.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return errorf("zlib: gzip compression failed ({})", rc);
  return out;
}

uint32_t load_be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

int element_width(unsigned char type) {
  switch (type) {
    case 0x08:
    case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C:
    case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
  }
}

double load_be_element(const unsigned char* p, unsigned char type) {
  uint64_t bits = 0;
  int w = element_width(type);
  for (int i = 0; i < w; ++i) bits = (bits << 8) | p[i];
  switch (type) {
    case 0x08: return static_cast<double>(bits);
    case 0x09: return static_cast<int8_t>(bits);
    case 0x0B: return static_cast<int16_t>(bits);
    case 0x0C: return static_cast<int32_t>(bits);
    case 0x0D: return std::bit_cast<float>(static_cast<uint32_t>(bits));
    default: return std::bit_cast<double>(bits);
  }
}

Result<Tensor> parse_idx(const std::vector<unsigned char>& bytes) {
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0)
    return errorf("not an IDX file (magic bytes 0 0 missing)");
  unsigned char type = bytes[2];
  int width = element_width(type);
  if (width == 0) return errorf("field type: unknown element type 0x{:02x}", type);
  int rank = bytes[3];
  if (rank < 1) return errorf("field rank: must be at least 1");
  size_t header = 4 + 4 * static_cast<size_t>(rank);
  if (bytes.size() < header) return errorf("header truncated: {} dimensions need {} bytes", rank, header);
  Shape shape;
  for (int i = 0; i < rank; ++i) shape.push_back(load_be32(&bytes[4 + 4 * i]));
  int64_t numel = shape_numel(shape);
  if (numel < 0) return errorf("field dims: {} is too large", shape_str(shape));
  size_t need = header + static_cast<size_t>(numel) * width;
  if (bytes.size() != need)
    return errorf("field dims: {} needs {} bytes of data, file has {}", shape_str(shape), need - header,
                  bytes.size() - header);
  Tensor t(DType::f32, shape);
  float* out = t.f32_data();
  if (type == 0x08) {
    for (int64_t i = 0; i < numel; ++i) out[i] = bytes[header + i];
  } else {
    for (int64_t i = 0; i < numel; ++i)
      out[i] = static_cast<float>(load_be_element(&bytes[header + i * width], type));
  }
  return t;
}

}  // namespace

Result<Tensor> read_idx(const std::string& path) {
  SP_ASSIGN_OR_RETURN(auto bytes, read_maybe_gzip(path));
  auto t = parse_idx(bytes);
  if (!t.ok()) return t.status().prefixed(path);
  return t;
}

Result<std::vector<int64_t>> read_idx_labels(const std::string& path) {
  SP_ASSIGN_OR_RETURN(Tensor t, read_idx(path));
  if (t.rank() != 1) return errorf("{}: labels must be 1-D, file has shape {}", path, shape_str(t.shape()));
  std::vector<int64_t> labels(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) labels[i] = static_cast<int64_t>(t.f32_data()[i]);
  return labels;
}

Status write_idx_u8(const std::string& path, const Shape& dims, const std::vector<uint8_t>& values) {
  if (dims.empty() || dims.size() > 255) return errorf("{}: IDX needs 1 to 255 dimensions, got {}", path, dims.size());
  int64_t numel = 1;
  for (int64_t d : dims) {
    if (d < 0 || d > int64_t{0xffffffff}) return errorf("{}: dimension {} does not fit IDX's 32 bits", path, d);
    numel *= d;
  }
  if (numel != static_cast<int64_t>(values.size()))
    return errorf("{}: shape {} needs {} values, got {}", path, shape_str(dims), numel, values.size());
  std::string bytes{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  for (int64_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>((d >> shift) & 0xff));
  bytes.append(reinterpret_cast<const char*>(values.data()), values.size());
  if (!path.ends_with(".gz")) return write_file_atomic(path, bytes);
  SP_ASSIGN_OR_RETURN(std::string packed, gzip_bytes(bytes));
  return write_file_atomic(path, packed);
}

}  // namespace sparrow
