// NPY format: magic "\x93NUMPY", version (1|2|3).x, header length (u16 for v1, u32 after), then a
// Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded to 64 bytes.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/half.h"
#include "core/machine.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

struct NpyHeader {
  char kind = 0;  // 'f', 'i', 'u', 'b'
  int width = 0;  // bytes per element
  bool big_endian = false;
  Shape shape;
  size_t data_offset = 0;
};

// The value of `key` in the header's dict literal: a quoted string (quotes kept), True, False or a
// parenthesized tuple (parentheses kept). A linear scan: headers may hold any amount of whitespace.
Result<std::string> dict_field(const std::string& header, const std::string& key) {
  const std::string quoted = "'" + key + "'";
  size_t at = header.find(quoted);
  if (at == std::string::npos) return errorf("header field '{}' is missing", key);
  auto skip_space = [&](size_t i) {
    while (i < header.size() && std::isspace(static_cast<unsigned char>(header[i]))) ++i;
    return i;
  };
  size_t i = skip_space(at + quoted.size());
  if (i >= header.size() || header[i] != ':') return errorf("header field '{}': expected ':'", key);
  i = skip_space(i + 1);
  if (i >= header.size()) return errorf("header field '{}': value is missing", key);
  const char open = header[i];
  if (open == '\'' || open == '(') {
    size_t close = header.find(open == '(' ? ')' : '\'', i + 1);
    if (close == std::string::npos) return errorf("header field '{}': value is not closed", key);
    return header.substr(i, close - i + 1);
  }
  for (const char* word : {"True", "False"})
    if (header.compare(i, std::strlen(word), word) == 0) return std::string(word);
  return errorf("header field '{}': unsupported value", key);
}

Result<NpyHeader> parse_header(std::span<const char> bytes) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    return errorf("not an NPY file (magic \\x93NUMPY missing)");
  int major = static_cast<unsigned char>(bytes[6]);
  size_t len_size = major == 1 ? 2 : 4;
  if (major < 1 || major > 3) return errorf("unsupported NPY version {}", major);
  if (bytes.size() < 8 + len_size) return errorf("truncated header");
  uint32_t header_len = 0;
  std::memcpy(&header_len, bytes.data() + 8, len_size);
  NpyHeader h;
  h.data_offset = 8 + len_size + header_len;
  if (h.data_offset > bytes.size())
    return errorf("header length {} runs past the end of the file", header_len);
  std::string header(bytes.data() + 8 + len_size, header_len);

  SP_ASSIGN_OR_RETURN(std::string descr, dict_field(header, "descr"));
  // '<f4': byte order, kind, width in bytes.
  const bool descr_ok =
      descr.size() >= 5 && descr.size() <= 6 && descr.front() == '\'' && descr.back() == '\'' &&
      std::strchr("<>|=", descr[1]) && std::strchr("fiub", descr[2]) &&
      std::all_of(descr.begin() + 3, descr.end() - 1, [](char c) { return c >= '0' && c <= '9'; });
  if (!descr_ok) return errorf("header field 'descr': unsupported dtype {}", descr);
  h.big_endian = descr[1] == '>';
  h.kind = descr[2];
  h.width = std::stoi(descr.substr(3, descr.size() - 4));
  bool ok_width = (h.kind == 'f' && (h.width == 2 || h.width == 4 || h.width == 8)) ||
                  (h.kind != 'f' && (h.width == 1 || h.width == 2 || h.width == 4 || h.width == 8));
  if (!ok_width || h.big_endian) return errorf("header field 'descr': unsupported dtype {}", descr);

  SP_ASSIGN_OR_RETURN(std::string fortran, dict_field(header, "fortran_order"));
  if (fortran != "False")
    return errorf(
        "header field 'fortran_order': Fortran-order arrays are not supported (save a C-order copy)");

  SP_ASSIGN_OR_RETURN(std::string shape_text, dict_field(header, "shape"));
  // Every run of digits (with an optional minus sign) is one dimension.
  for (size_t i = 0; i < shape_text.size();) {
    const bool minus = shape_text[i] == '-';
    size_t j = i + (minus ? 1 : 0);
    size_t digits_begin = j;
    while (j < shape_text.size() && shape_text[j] >= '0' && shape_text[j] <= '9') ++j;
    if (j == digits_begin) {
      i = std::max(j, i + 1);
      continue;
    }
    std::string number = shape_text.substr(i, j - i);
    if (j - digits_begin > 12) return errorf("header field 'shape': dimension {} is too large", number);
    h.shape.push_back(std::stoll(number));
    i = j;
  }
  return h;
}

double element_as_double(const char* p, char kind, int width) {
  auto load = [p]<class T>(T) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  };
  if (kind == 'f') {
    if (width == 2) return half_to_float(load(uint16_t{}));
    if (width == 4) return load(float{});
    return load(double{});
  }
  if (kind == 'b') return load(uint8_t{}) != 0;
  // Each branch converted on its own: `cond ? int32 : uint32` would make a negative value unsigned.
  bool is_signed = kind == 'i';
  auto either = [&]<class S, class U>(S, U) {
    return is_signed ? static_cast<double>(load(S{})) : static_cast<double>(load(U{}));
  };
  switch (width) {
    case 1:
      return either(int8_t{}, uint8_t{});
    case 2:
      return either(int16_t{}, uint16_t{});
    case 4:
      return either(int32_t{}, uint32_t{});
    default:
      return static_cast<double>(is_signed ? load(int64_t{}) : static_cast<int64_t>(load(uint64_t{})));
  }
}

}  // namespace

namespace {

// The elements as Sparrow holds them: float32 for floats, int64 for integers and booleans.
DType element_dtype(const NpyHeader& h) {
  return h.kind == 'f' ? DType::f32 : DType::i64;
}

// Converts `count` elements from their NPY bytes at `p` into t's elements [first, first + count).
void decode_elements(const char* p, int64_t first, int64_t count, const NpyHeader& h, Tensor& t) {
  const size_t bytes = static_cast<size_t>(count) * static_cast<size_t>(h.width);
  if (t.dtype() == DType::f32 && h.width == 4) {
    std::memcpy(t.f32_data() + first, p, bytes);
  } else if (t.dtype() == DType::i64 && h.width == 8) {
    std::memcpy(t.i64_data() + first, p, bytes);
  } else if (t.dtype() == DType::f32) {
    for (int64_t i = 0; i < count; ++i)
      t.f32_data()[first + i] = static_cast<float>(element_as_double(p + i * h.width, h.kind, h.width));
  } else {
    for (int64_t i = 0; i < count; ++i)
      t.i64_data()[first + i] = static_cast<int64_t>(element_as_double(p + i * h.width, h.kind, h.width));
  }
}

// The element count the header declares, checked against the bytes after it.
Result<int64_t> declared_elements(const NpyHeader& h, size_t data_bytes) {
  const int64_t numel = shape_numel(h.shape);
  if (numel < 0) return errorf("header field 'shape': {} is negative or too large", shape_str(h.shape));
  const size_t need = static_cast<size_t>(numel) * static_cast<size_t>(h.width);
  if (data_bytes < need)
    return errorf("data is truncated: shape {} needs {} bytes, file has {}", shape_str(h.shape), need,
                  data_bytes);
  return numel;
}

// The magic, version and header of an open file (its first bytes), read as far as the header goes.
Result<NpyHeader> read_header(InputFile& file) {
  constexpr size_t kPrefix = 12;  // magic, version and a header length of up to 4 bytes
  std::vector<char> bytes(std::min(file.size(), kPrefix));
  SP_RETURN_IF_ERROR(file.read(bytes.data(), bytes.size()));
  if (bytes.size() >= 10 && std::memcmp(bytes.data(), "\x93NUMPY", 6) == 0) {
    const size_t len_size = bytes[6] == 1 ? 2 : 4;
    uint32_t header_len = 0;
    std::memcpy(&header_len, bytes.data() + 8, std::min(len_size, bytes.size() - 8));
    const size_t end = std::min(file.size(), 8 + len_size + size_t{header_len});
    if (end > bytes.size()) {
      const size_t have = bytes.size();
      bytes.resize(end);
      SP_RETURN_IF_ERROR(file.read(bytes.data() + have, end - have));
    }
  }
  return parse_header(bytes);  // past its data offset: bytes.size()
}

}  // namespace

Result<Tensor> parse_npy(std::span<const char> bytes) {
  SP_ASSIGN_OR_RETURN(NpyHeader h, parse_header(bytes));
  SP_ASSIGN_OR_RETURN(int64_t numel, declared_elements(h, bytes.size() - h.data_offset));
  Tensor t(element_dtype(h), h.shape);
  decode_elements(bytes.data() + h.data_offset, 0, numel, h, t);
  return t;
}

namespace {

// The rest of an open file after its header, read into a tensor: the data goes to the tensor
// directly, or converted in chunks, so reading never holds the file twice.
Result<Tensor> read_data(InputFile& file, const NpyHeader& h, int64_t numel) {
  Tensor t(element_dtype(h), h.shape);
  if (static_cast<size_t>(h.width) == dtype_size(t.dtype())) {
    SP_RETURN_IF_ERROR(file.read(static_cast<char*>(t.raw()), t.bytes()));
    return t;
  }
  constexpr int64_t kChunkBytes = int64_t{4} << 20;
  const int64_t per_chunk = std::max<int64_t>(1, kChunkBytes / h.width);
  std::vector<char> chunk(static_cast<size_t>(std::min(numel, per_chunk) * h.width));
  for (int64_t first = 0; first < numel; first += per_chunk) {
    const int64_t count = std::min(per_chunk, numel - first);
    SP_RETURN_IF_ERROR(file.read(chunk.data(), static_cast<size_t>(count * h.width)));
    decode_elements(chunk.data(), first, count, h, t);
  }
  return t;
}

// Whether the array can be used where it lies in the file: float32 data on a 64-byte boundary.
bool mappable(const NpyHeader& h, int64_t numel) {
  return h.kind == 'f' && h.width == 4 && h.data_offset % 64 == 0 && numel > 0;
}

// The file's float32 data as a tensor over a private, writable mapping of the whole file, with the
// kernel's readahead set for `access`; nothing when the file system cannot map it; an error when it
// is no longer the file whose header was read (its size changed). MAP_NORESERVE: the copy-on-write pages are
// not charged as memory ahead of any write, so a file larger than memory maps.
Result<std::optional<Tensor>> map_data(const InputFile& file, const NpyHeader& h, MapAccess access) {
  const int fd = ::open(file.path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errorf("{}: cannot open: {}", file.path(), std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != file.size()) {
    ::close(fd);
    return errorf("{}: changed while being read", file.path());
  }
  void* mapping = ::mmap(nullptr, file.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (mapping == MAP_FAILED) return std::optional<Tensor>();
  ::madvise(mapping, file.size(),
            access == MapAccess::random ? MADV_RANDOM : MADV_SEQUENTIAL);  // advice only
  return std::optional<Tensor>(
      Tensor::adopt_mapping(DType::f32, h.shape, mapping, file.size(), h.data_offset));
}

// The header, checked against the file's size, of an opened file.
Result<std::pair<NpyHeader, int64_t>> checked_header(InputFile& file) {
  auto header = read_header(file);
  if (!header.ok()) return header.status().prefixed(file.path());
  auto numel = declared_elements(*header, file.size() - header->data_offset);
  if (!numel.ok()) return numel.status().prefixed(file.path());
  return std::pair{*header, *numel};
}

}  // namespace

Result<Tensor> read_npy(const std::string& path) {
  SP_ASSIGN_OR_RETURN(InputFile file, open_input_file(path));
  SP_ASSIGN_OR_RETURN(auto header, checked_header(file));
  return read_data(file, header.first, header.second);
}

Result<Tensor> map_npy(const std::string& path, MapAccess access) {
  // A mapping allocates nothing, so the input budget applies only to a file that is read.
  SP_ASSIGN_OR_RETURN(InputFile file, open_input_file(path, std::numeric_limits<size_t>::max()));
  SP_ASSIGN_OR_RETURN(auto header, checked_header(file));
  const auto& [h, numel] = header;
  if (mappable(h, numel)) {
    SP_ASSIGN_OR_RETURN(std::optional<Tensor> mapped, map_data(file, h, access));
    if (mapped) return std::move(*mapped);
  }
  if (file.size() > static_cast<size_t>(input_byte_limit()))
    return errorf("{}: file is {} bytes, larger than the {} byte input limit (--max-input)", path,
                  file.size(), input_byte_limit());
  return read_data(file, h, numel);
}

void preload_mapping(const Tensor& t) {
  if (!t.is_mapping() || t.bytes() == 0 || static_cast<int64_t>(t.bytes()) > available_memory_bytes() / 2)
    return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(t.raw()) / page * page;
  const auto end = reinterpret_cast<uintptr_t>(t.raw()) + t.bytes();
  void* range = reinterpret_cast<void*>(begin);
  ::madvise(range, end - begin, MADV_SEQUENTIAL);
  unsigned char sum = 0;  // one read per page, in order: the kernel reads ahead in large parts
  for (uintptr_t at = begin; at < end; at += page)
    sum ^= *reinterpret_cast<const volatile unsigned char*>(at);
  ::madvise(range, end - begin, MADV_RANDOM);
  (void)sum;
}

// numpy's tuple syntax: "()", "(5,)", "(2, 3)".
static std::string shape_tuple(const Shape& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return text + ")";
}

std::string npy_header(DType dtype, const Shape& shape) {
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                 dtype == DType::f32 ? "<f4" : "<i8", shape_tuple(shape));
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(dict.size());
  out.append(reinterpret_cast<const char*>(&len), 2);
  return out + dict;
}

std::string npy_bytes(const Tensor& tensor) {
  std::string out = npy_header(tensor.dtype(), tensor.shape());
  out.append(static_cast<const char*>(tensor.raw()), tensor.bytes());
  return out;
}

Status write_npy(const std::string& path, const Tensor& tensor) {
  return write_file_atomic(path, npy_bytes(tensor));
}

}  // namespace sparrow
