// NPY format: magic "\x93NUMPY", version (1|2|3).x, header length (u16 for v1, u32 after), then a
// Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded to 64 bytes.
#include <cstring>
#include <regex>

#include "core/file.h"
#include "core/half.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

struct NpyHeader {
  char kind = 0;   // 'f', 'i', 'u', 'b'
  int width = 0;   // bytes per element
  bool big_endian = false;
  Shape shape;
  size_t data_offset = 0;
};

Result<std::string> dict_field(const std::string& header, const std::string& key) {
  std::regex re("'" + key + "'\\s*:\\s*('[^']*'|True|False|\\([^)]*\\))");
  std::smatch m;
  if (!std::regex_search(header, m, re)) return errorf("header field '{}' is missing", key);
  return m[1].str();
}

Result<NpyHeader> parse_header(const std::vector<char>& bytes) {
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
  if (h.data_offset > bytes.size()) return errorf("header length {} runs past the end of the file", header_len);
  std::string header(bytes.data() + 8 + len_size, header_len);

  SP_ASSIGN_OR_RETURN(std::string descr, dict_field(header, "descr"));
  std::smatch dm;
  std::regex descr_re("'([<>|=])([fiub])(\\d+)'");
  if (!std::regex_match(descr, dm, descr_re)) return errorf("header field 'descr': unsupported dtype {}", descr);
  h.big_endian = dm[1] == ">";
  h.kind = dm[2].str()[0];
  h.width = std::stoi(dm[3]);
  bool ok_width = (h.kind == 'f' && (h.width == 2 || h.width == 4 || h.width == 8)) ||
                  (h.kind != 'f' && (h.width == 1 || h.width == 2 || h.width == 4 || h.width == 8));
  if (!ok_width || h.big_endian) return errorf("header field 'descr': unsupported dtype {}", descr);

  SP_ASSIGN_OR_RETURN(std::string fortran, dict_field(header, "fortran_order"));
  if (fortran != "False")
    return errorf("header field 'fortran_order': Fortran-order arrays are not supported (save a C-order copy)");

  SP_ASSIGN_OR_RETURN(std::string shape_text, dict_field(header, "shape"));
  std::regex num_re("-?\\d+");
  for (auto it = std::sregex_iterator(shape_text.begin(), shape_text.end(), num_re); it != std::sregex_iterator();
       ++it) {
    if (it->str().size() > 12) return errorf("header field 'shape': dimension {} is too large", it->str());
    h.shape.push_back(std::stoll(it->str()));
  }
  return h;
}

double element_as_double(const char* p, char kind, int width) {
  auto load = [p]<class T>(T) { T v; std::memcpy(&v, p, sizeof(T)); return v; };
  if (kind == 'f') {
    if (width == 2) return half_to_float(load(uint16_t{}));
    if (width == 4) return load(float{});
    return load(double{});
  }
  if (kind == 'b') return load(uint8_t{}) != 0;
  bool is_signed = kind == 'i';
  switch (width) {
    case 1: return is_signed ? load(int8_t{}) : load(uint8_t{});
    case 2: return is_signed ? load(int16_t{}) : load(uint16_t{});
    case 4: return is_signed ? load(int32_t{}) : load(uint32_t{});
    default: return static_cast<double>(is_signed ? load(int64_t{}) : static_cast<int64_t>(load(uint64_t{})));
  }
}

Result<Tensor> read_npy_inner(const std::vector<char>& bytes) {
  SP_ASSIGN_OR_RETURN(NpyHeader h, parse_header(bytes));
  int64_t numel = shape_numel(h.shape);
  if (numel < 0) return errorf("header field 'shape': {} is negative or too large", shape_str(h.shape));
  size_t need = static_cast<size_t>(numel) * static_cast<size_t>(h.width);
  size_t have = bytes.size() - h.data_offset;
  if (have < need) return errorf("data is truncated: shape {} needs {} bytes, file has {}", shape_str(h.shape), need, have);
  Tensor t(h.kind == 'f' ? DType::f32 : DType::i64, h.shape);
  const char* p = bytes.data() + h.data_offset;
  for (int64_t i = 0; i < numel; ++i) {
    if (t.dtype() == DType::f32) {
      t.f32_data()[i] = static_cast<float>(element_as_double(p + i * h.width, h.kind, h.width));
    } else if (h.width == 8) {
      std::memcpy(&t.i64_data()[i], p + i * 8, 8);
    } else {
      t.i64_data()[i] = static_cast<int64_t>(element_as_double(p + i * h.width, h.kind, h.width));
    }
  }
  return t;
}

}  // namespace

Result<Tensor> read_npy(const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(path));
  auto t = read_npy_inner(bytes);
  if (!t.ok()) return t.status().prefixed(path);
  return t;
}

// numpy's tuple syntax: "()", "(5,)", "(2, 3)".
static std::string shape_tuple(const Shape& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return text + ")";
}

Status write_npy(const std::string& path, const Tensor& tensor) {
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                 tensor.dtype() == DType::f32 ? "<f4" : "<i8", shape_tuple(tensor.shape()));
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(dict.size());
  out.append(reinterpret_cast<const char*>(&len), 2);
  out += dict;
  out.append(static_cast<const char*>(tensor.raw()), tensor.bytes());
  return write_file_atomic(path, out);
}

}  // namespace sparrow
