// IDX format (MNIST): bytes 0-1 zero, byte 2 element type (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
// 0x0D f32, 0x0E f64), byte 3 number of dimensions, then one big-endian u32 per dimension, then the
// data, big-endian. Files may be gzip-compressed; zlib reads plain files transparently.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include <zlib.h>

#include "core/file.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

// A gzip (or plain) file read in order, exactly as many bytes as asked for at a time.
class GzipReader {
 public:
  explicit GzipReader(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    if (f_) note_input_file(path);
  }
  ~GzipReader() {
    if (f_) gzclose(f_);
  }
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  bool opened() const { return f_ != nullptr; }
  // Reads up to n bytes into out; returns how many were read (fewer at the end of the data).
  Result<size_t> read(unsigned char* out, size_t n) {
    size_t got = 0;
    while (got < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, size_t{1} << 30));
      int r = gzread(f_, out + got, chunk);
      if (r < 0) {
        int err = 0;
        return errorf("{}: gzip stream is corrupt or truncated ({})", path_, gzerror(f_, &err));
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    return got;
  }

 private:
  std::string path_;
  gzFile f_;
};

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
    case 0x09:
      return 1;
    case 0x0B:
      return 2;
    case 0x0C:
    case 0x0D:
      return 4;
    case 0x0E:
      return 8;
    default:
      return 0;
  }
}

double load_be_element(const unsigned char* p, unsigned char type) {
  uint64_t bits = 0;
  int w = element_width(type);
  for (int i = 0; i < w; ++i) bits = (bits << 8) | p[i];
  switch (type) {
    case 0x08:
      return static_cast<double>(bits);
    case 0x09:
      return static_cast<int8_t>(bits);
    case 0x0B:
      return static_cast<int16_t>(bits);
    case 0x0C:
      return static_cast<int32_t>(bits);
    case 0x0D:
      return std::bit_cast<float>(static_cast<uint32_t>(bits));
    default:
      return std::bit_cast<double>(bits);
  }
}

// An IDX file's header: element type and width, and the dimensions.
struct IdxHeader {
  unsigned char type = 0;
  int width = 0;
  Shape dims;
};

Result<IdxHeader> read_header(GzipReader& in) {
  unsigned char head[4];
  SP_ASSIGN_OR_RETURN(size_t got, in.read(head, 4));
  if (got < 4 || head[0] != 0 || head[1] != 0) return errorf("not an IDX file (magic bytes 0 0 missing)");
  IdxHeader h;
  h.type = head[2];
  h.width = element_width(h.type);
  if (h.width == 0) return errorf("field type: unknown element type 0x{:02x}", h.type);
  const int rank = head[3];
  if (rank < 1) return errorf("field rank: must be at least 1");
  std::vector<unsigned char> dims(4 * static_cast<size_t>(rank));
  SP_ASSIGN_OR_RETURN(got, in.read(dims.data(), dims.size()));
  if (got < dims.size())
    return errorf("header truncated: {} dimensions need {} bytes", rank, 4 + dims.size());
  for (int i = 0; i < rank; ++i) h.dims.push_back(load_be32(&dims[4 * static_cast<size_t>(i)]));
  return h;
}

// `n` big-endian elements of `type` as float32.
void to_float(const unsigned char* data, int64_t n, const IdxHeader& h, float* out) {
  if (h.type == 0x08) {
    for (int64_t i = 0; i < n; ++i) out[i] = data[i];
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(load_be_element(&data[i * h.width], h.type));
  }
}

Status data_size_error(const IdxHeader& h, size_t need, size_t got, bool more) {
  return errorf("field dims: {} needs {} bytes of data, file has {}", shape_str(h.dims), need,
                more ? "more" : std::to_string(got));
}

// Reads the header, checks it, then exactly the data it declares: nothing is decompressed or
// allocated past what a valid header asks for.
Result<Tensor> parse_idx(GzipReader& in) {
  SP_ASSIGN_OR_RETURN(IdxHeader h, read_header(in));
  const int64_t numel = shape_numel(h.dims);
  // The data, and the float32 tensor made of it, within the input budget.
  const uint64_t limit = static_cast<uint64_t>(input_byte_limit());
  if (numel < 0 || static_cast<uint64_t>(numel) > limit / static_cast<uint64_t>(std::max(h.width, 4)))
    return errorf("field dims: {} is too large (at most {} bytes of data: the input limit, --max-input)",
                  shape_str(h.dims), limit);
  const size_t need = static_cast<size_t>(numel) * static_cast<size_t>(h.width);
  // Grown as the data arrives, so a small file that declares a large size allocates little.
  std::vector<unsigned char> data;
  size_t got = 0;
  while (got < need) {
    const size_t chunk = std::min<size_t>(need - got, size_t{1} << 20);
    data.resize(got + chunk);
    SP_ASSIGN_OR_RETURN(size_t n, in.read(data.data() + got, chunk));
    got += n;
    if (n < chunk) break;
  }
  unsigned char extra = 0;
  SP_ASSIGN_OR_RETURN(size_t more, in.read(&extra, 1));
  if (got != need || more != 0) return data_size_error(h, need, got, more != 0);
  Tensor t(DType::f32, h.dims);
  to_float(data.data(), numel, h, t.f32_data());
  return t;
}

// The rows of the data after the header, one at a time (see for_each_idx_row); the reader's errors
// name `path`, the callbacks' pass through as they are.
Status walk_rows(GzipReader& in, const std::string& path, int64_t limit,
                 const std::function<Status(const Shape&)>& start,
                 const std::function<Status(int64_t, const float*)>& each) {
  auto header = read_header(in);
  if (!header.ok()) return header.status().prefixed(path);
  const IdxHeader& h = *header;
  const int64_t rows = h.dims[0], row_values = shape_numel(Shape(h.dims.begin() + 1, h.dims.end()));
  // One row's bytes and floats within the input budget (the rows themselves are not held).
  const uint64_t budget = static_cast<uint64_t>(input_byte_limit());
  if (row_values < 0 ||
      static_cast<uint64_t>(row_values) > budget / static_cast<uint64_t>(std::max(h.width, 4)))
    return errorf("{}: field dims: rows of {} are too large (at most {} bytes: the input limit, --max-input)",
                  path, shape_str(Shape(h.dims.begin() + 1, h.dims.end())), budget);
  const int64_t used = limit > 0 ? std::min(rows, limit) : rows;
  SP_RETURN_IF_ERROR(start(h.dims));
  std::vector<unsigned char> bytes(static_cast<size_t>(row_values * h.width));
  std::vector<float> values(static_cast<size_t>(row_values));
  const size_t need = static_cast<size_t>(rows) * bytes.size();
  for (int64_t r = 0; r < used; ++r) {
    auto got = in.read(bytes.data(), bytes.size());
    if (!got.ok()) return got.status();  // names the file
    if (*got < bytes.size())
      return data_size_error(h, need, static_cast<size_t>(r) * bytes.size() + *got, false).prefixed(path);
    to_float(bytes.data(), row_values, h, values.data());
    SP_RETURN_IF_ERROR(each(r, values.data()));
  }
  if (used < rows) return {};  // the rest is not read
  unsigned char extra = 0;
  auto more = in.read(&extra, 1);
  if (!more.ok()) return more.status();
  if (*more != 0) return data_size_error(h, need, need, true).prefixed(path);
  return {};
}

}  // namespace

Result<Tensor> read_idx(const std::string& path) {
  GzipReader in(path);
  if (!in.opened()) return errorf("{}: cannot open (missing file?)", path);
  auto t = parse_idx(in);
  if (!t.ok()) return t.status().prefixed(path);
  return t;
}

Status for_each_idx_row(const std::string& path, int64_t limit,
                        const std::function<Status(const Shape&)>& start,
                        const std::function<Status(int64_t, const float*)>& each) {
  GzipReader in(path);
  if (!in.opened()) return errorf("{}: cannot open (missing file?)", path);
  return walk_rows(in, path, limit, start, each);
}

Result<std::vector<int64_t>> read_idx_labels(const std::string& path) {
  SP_ASSIGN_OR_RETURN(Tensor t, read_idx(path));
  if (t.rank() != 1) return errorf("{}: labels must be 1-D, file has shape {}", path, shape_str(t.shape()));
  std::vector<int64_t> labels(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = t.f32_data()[i];
    if (!(v >= 0.0f && v < 2147483648.0f) || v != std::floor(v))  // also refuses NaN
      return errorf("{}: label {} is {}, not a class index (a whole number from 0)", path, i, v);
    labels[i] = static_cast<int64_t>(v);
  }
  return labels;
}

Status write_idx_u8(const std::string& path, const Shape& dims, const std::vector<uint8_t>& values) {
  if (dims.empty() || dims.size() > 255)
    return errorf("{}: IDX needs 1 to 255 dimensions, got {}", path, dims.size());
  int64_t numel = 1;
  for (int64_t d : dims) {
    if (d < 0 || d > int64_t{0xffffffff})
      return errorf("{}: dimension {} does not fit IDX's 32 bits", path, d);
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
