#include "format/graph_section.h"

#include <cstring>

#include "format/spw_format.h"

namespace sparrow::spw {

namespace {

// Longest string the section holds (names, op types, attribute strings, metadata values).
constexpr uint32_t kMaxStringBytes = 1u << 24;

// ---- writing ----

void put_string(ByteWriter& w, const std::string& s) {
  w.put(static_cast<uint32_t>(s.size()));
  w.put_bytes(s.data(), s.size());
}

void put_count(ByteWriter& w, size_t n) {
  w.put(static_cast<uint32_t>(n));
}

void put_value(ByteWriter& w, const ValueInfo& v) {
  put_string(w, v.name);
  w.put(static_cast<int32_t>(v.elem_type));
  w.put(static_cast<uint8_t>(v.has_shape));
  put_count(w, v.dims.size());
  for (size_t i = 0; i < v.dims.size(); ++i) {
    w.put(v.dims[i]);
    put_string(w, i < v.dim_names.size() ? v.dim_names[i] : std::string());
  }
}

void put_attribute(ByteWriter& w, const AttrValue& value) {
  w.put(static_cast<uint8_t>(value.index()));
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, float>) {
          w.put(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          put_string(w, v);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          put_count(w, v.size());
          for (const auto& s : v) put_string(w, s);
        } else if constexpr (std::is_same_v<T, Tensor>) {
          w.put(static_cast<uint8_t>(v.dtype() == DType::f32 ? 0 : 1));
          w.put(static_cast<uint8_t>(v.rank()));
          for (int64_t d : v.shape()) w.put(static_cast<uint64_t>(d));
          w.put_bytes(v.raw(), v.bytes());
        } else {  // ints, floats
          put_count(w, v.size());
          w.put_bytes(v.data(), v.size() * sizeof(v[0]));
        }
      },
      value);
}

void put_node(ByteWriter& w, const Node& n) {
  put_string(w, n.name);
  put_string(w, n.op_type);
  put_string(w, n.domain);
  put_count(w, n.inputs.size());
  for (const auto& s : n.inputs) put_string(w, s);
  put_count(w, n.outputs.size());
  for (const auto& s : n.outputs) put_string(w, s);
  put_count(w, n.attrs.size());
  for (const auto& [key, value] : n.attrs) {
    put_string(w, key);
    put_attribute(w, value);
  }
}

// ---- reading ----

class GraphReader {
 public:
  explicit GraphReader(std::string_view bytes) : r_(bytes) {}

  Result<std::string> string(const char* what) {
    SP_ASSIGN_OR_RETURN(uint32_t n, r_.get<uint32_t>(what));
    if (n > kMaxStringBytes) return errorf("field {}: length {} exceeds {}", what, n, kMaxStringBytes);
    SP_ASSIGN_OR_RETURN(std::string_view s, r_.get_bytes(n, what));
    return std::string(s);
  }
  // A count of items of at least `min_item_bytes` each: more than the bytes left can hold is refused
  // before anything is allocated.
  Result<uint32_t> count(const char* what, size_t min_item_bytes) {
    SP_ASSIGN_OR_RETURN(uint32_t n, r_.get<uint32_t>(what));
    if (uint64_t{n} * min_item_bytes > r_.remaining())
      return errorf("field {}: {} items cannot fit in the {} bytes left", what, n, r_.remaining());
    return n;
  }
  template <class T>
  Result<T> get(const char* what) {
    return r_.get<T>(what);
  }
  Result<std::string_view> bytes(uint64_t n, const char* what) { return r_.get_bytes(n, what); }
  size_t remaining() const { return r_.remaining(); }

 private:
  ByteReader r_;
};

Result<ValueInfo> read_value(GraphReader& r) {
  ValueInfo v;
  SP_ASSIGN_OR_RETURN(v.name, r.string("value name"));
  SP_ASSIGN_OR_RETURN(int32_t elem, r.get<int32_t>("elem_type"));
  v.elem_type = static_cast<ElemType>(elem);
  SP_ASSIGN_OR_RETURN(uint8_t has_shape, r.get<uint8_t>("has_shape"));
  if (has_shape > 1) return errorf("value '{}': field has_shape: {} is not 0 or 1", v.name, has_shape);
  v.has_shape = has_shape != 0;
  SP_ASSIGN_OR_RETURN(uint32_t rank, r.count("rank", 12));
  for (uint32_t i = 0; i < rank; ++i) {
    SP_ASSIGN_OR_RETURN(int64_t d, r.get<int64_t>("dim"));
    if (d < -1) return errorf("value '{}': dimension {} is negative", v.name, d);
    SP_ASSIGN_OR_RETURN(std::string symbol, r.string("dim symbol"));
    v.dims.push_back(d);
    v.dim_names.push_back(std::move(symbol));
  }
  return v;
}

template <class T>
Result<std::vector<T>> read_array(GraphReader& r, const char* what) {
  SP_ASSIGN_OR_RETURN(uint32_t n, r.count(what, sizeof(T)));
  SP_ASSIGN_OR_RETURN(std::string_view raw, r.bytes(uint64_t{n} * sizeof(T), what));
  std::vector<T> v(n);
  if (n > 0) std::memcpy(v.data(), raw.data(), raw.size());
  return v;
}

Result<Tensor> read_tensor(GraphReader& r) {
  SP_ASSIGN_OR_RETURN(uint8_t dtype, r.get<uint8_t>("tensor dtype"));
  SP_ASSIGN_OR_RETURN(uint8_t rank, r.get<uint8_t>("tensor rank"));
  if (dtype > 1) return errorf("tensor dtype {} is not 0 (f32) or 1 (i64)", dtype);
  if (rank > kMaxRank) return errorf("tensor rank {} exceeds {}", rank, kMaxRank);
  Shape shape;
  for (int i = 0; i < rank; ++i) {
    SP_ASSIGN_OR_RETURN(uint64_t d, r.get<uint64_t>("tensor dims"));
    if (d > static_cast<uint64_t>(kMaxTensorElements)) return errorf("tensor dimension {} is too large", d);
    shape.push_back(static_cast<int64_t>(d));
  }
  const int64_t numel = shape_numel(shape);
  if (numel < 0) return errorf("tensor shape {} has too many elements", shape_str(shape));
  const DType type = dtype == 0 ? DType::f32 : DType::i64;
  SP_ASSIGN_OR_RETURN(std::string_view raw,
                      r.bytes(static_cast<uint64_t>(numel) * dtype_size(type), "tensor data"));
  Tensor t(type, shape);
  if (!raw.empty()) std::memcpy(t.raw(), raw.data(), raw.size());
  return t;
}

Result<AttrValue> read_attribute(GraphReader& r) {
  SP_ASSIGN_OR_RETURN(uint8_t kind, r.get<uint8_t>("attribute kind"));
  switch (kind) {
    case 0: {
      SP_ASSIGN_OR_RETURN(int64_t v, r.get<int64_t>("int"));
      return AttrValue{v};
    }
    case 1: {
      SP_ASSIGN_OR_RETURN(float v, r.get<float>("float"));
      return AttrValue{v};
    }
    case 2: {
      SP_ASSIGN_OR_RETURN(std::string v, r.string("string"));
      return AttrValue{std::move(v)};
    }
    case 3: {
      SP_ASSIGN_OR_RETURN(auto v, read_array<int64_t>(r, "ints"));
      return AttrValue{std::move(v)};
    }
    case 4: {
      SP_ASSIGN_OR_RETURN(auto v, read_array<float>(r, "floats"));
      return AttrValue{std::move(v)};
    }
    case 5: {
      SP_ASSIGN_OR_RETURN(uint32_t n, r.count("strings", 4));
      std::vector<std::string> v;
      for (uint32_t i = 0; i < n; ++i) {
        SP_ASSIGN_OR_RETURN(std::string s, r.string("strings"));
        v.push_back(std::move(s));
      }
      return AttrValue{std::move(v)};
    }
    case 6: {
      SP_ASSIGN_OR_RETURN(Tensor t, read_tensor(r));
      return AttrValue{std::move(t)};
    }
    default:
      return errorf("field kind: {} is not an attribute kind (0..6)", kind);
  }
}

Result<std::vector<std::string>> read_names(GraphReader& r, const char* what) {
  SP_ASSIGN_OR_RETURN(uint32_t n, r.count(what, 4));
  std::vector<std::string> names;
  for (uint32_t i = 0; i < n; ++i) {
    SP_ASSIGN_OR_RETURN(std::string s, r.string(what));
    names.push_back(std::move(s));
  }
  return names;
}

Result<Node> read_node(GraphReader& r, size_t index) {
  Node n;
  SP_ASSIGN_OR_RETURN(n.name, r.string("node name"));
  SP_ASSIGN_OR_RETURN(n.op_type, r.string("op_type"));
  SP_ASSIGN_OR_RETURN(n.domain, r.string("domain"));
  auto fail = [&](const Status& s) { return s.prefixed(fmt::format("node {} ('{}')", index, n.name)); };
  if (n.op_type.empty()) return fail(errorf("field op_type is empty"));
  if (!n.domain.empty()) return fail(errorf("unsupported operator {}.{}", n.domain, n.op_type));
  auto inputs = read_names(r, "inputs");
  if (!inputs.ok()) return fail(inputs.status());
  n.inputs = std::move(*inputs);
  auto outputs = read_names(r, "outputs");
  if (!outputs.ok()) return fail(outputs.status());
  n.outputs = std::move(*outputs);
  if (n.outputs.empty()) return fail(errorf("has no outputs"));
  auto attrs = r.count("attributes", 5);
  if (!attrs.ok()) return fail(attrs.status());
  for (uint32_t i = 0; i < *attrs; ++i) {
    auto key = r.string("attribute name");
    if (!key.ok()) return fail(key.status());
    auto value = read_attribute(r);
    if (!value.ok()) return fail(value.status().prefixed(fmt::format("attribute '{}'", *key)));
    if (!n.attrs.emplace(*key, std::move(*value)).second)
      return fail(errorf("attribute '{}' appears twice", *key));
  }
  return n;
}

OnnxGraphCodec& codec_slot() {
  static OnnxGraphCodec codec;
  return codec;
}

}  // namespace

std::string encode_graph(const Model& g) {
  ByteWriter w;
  w.put(g.opset);
  w.put(g.ir_version);
  put_string(w, g.producer_name);
  put_string(w, g.producer_version);
  put_string(w, g.graph_name);
  put_count(w, g.metadata.size());
  for (const auto& [key, value] : g.metadata) {
    put_string(w, key);
    put_string(w, value);
  }
  put_count(w, g.inputs.size());
  for (const auto& v : g.inputs) put_value(w, v);
  put_count(w, g.outputs.size());
  for (const auto& v : g.outputs) put_value(w, v);
  put_count(w, g.nodes.size());
  for (const auto& n : g.nodes) put_node(w, n);
  return std::move(w.str());
}

Result<Model> decode_graph(std::string_view bytes) {
  GraphReader r(bytes);
  Model g;
  SP_ASSIGN_OR_RETURN(g.opset, r.get<int64_t>("opset"));
  if (g.opset < kMinOpset || g.opset > kMaxOpset)
    return errorf("field opset: {} is not supported (Sparrow reads opsets {} to {})", g.opset, kMinOpset,
                  kMaxOpset);
  SP_ASSIGN_OR_RETURN(g.ir_version, r.get<int64_t>("ir_version"));
  SP_ASSIGN_OR_RETURN(g.producer_name, r.string("producer_name"));
  SP_ASSIGN_OR_RETURN(g.producer_version, r.string("producer_version"));
  SP_ASSIGN_OR_RETURN(g.graph_name, r.string("graph_name"));
  SP_ASSIGN_OR_RETURN(uint32_t metadata, r.count("metadata", 8));
  for (uint32_t i = 0; i < metadata; ++i) {
    SP_ASSIGN_OR_RETURN(std::string key, r.string("metadata key"));
    SP_ASSIGN_OR_RETURN(std::string value, r.string("metadata value"));
    g.metadata.emplace_back(std::move(key), std::move(value));
  }
  for (auto* list : {&g.inputs, &g.outputs}) {
    SP_ASSIGN_OR_RETURN(uint32_t n, r.count(list == &g.inputs ? "inputs" : "outputs", 13));
    for (uint32_t i = 0; i < n; ++i) {
      SP_ASSIGN_OR_RETURN(ValueInfo v, read_value(r));
      list->push_back(std::move(v));
    }
  }
  SP_ASSIGN_OR_RETURN(uint32_t nodes, r.count("nodes", 24));
  for (uint32_t i = 0; i < nodes; ++i) {
    SP_ASSIGN_OR_RETURN(Node n, read_node(r, i));
    g.nodes.push_back(std::move(n));
  }
  if (r.remaining() != 0) return errorf("{} unexpected bytes after the last node", r.remaining());
  return g;
}

void register_onnx_graph_codec(OnnxGraphCodec codec) {
  codec_slot() = codec;
}
const OnnxGraphCodec& onnx_graph_codec() {
  return codec_slot();
}

}  // namespace sparrow::spw
