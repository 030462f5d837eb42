// ONNX protobuf -> Sparrow IR.
#include <cstring>

#include <onnx/onnx_pb.h>

#include "core/file.h"
#include "core/half.h"
#include "format/graph_section.h"
#include "io/onnx_graph.h"
#include "sparrow/onnx.h"

namespace sparrow {

namespace {

size_t elem_size(ElemType t) {
  switch (t) {
    case ElemType::u8:
    case ElemType::i8:
    case ElemType::boolean:
      return 1;
    case ElemType::u16:
    case ElemType::i16:
    case ElemType::f16:
    case ElemType::bf16:
      return 2;
    case ElemType::i32:
    case ElemType::u32:
    case ElemType::f32:
      return 4;
    case ElemType::i64:
    case ElemType::u64:
    case ElemType::f64:
      return 8;
    default:
      return 0;
  }
}

// Converts element i of little-endian raw bytes to double (exact for every type but 64-bit ints).
double raw_element_as_double(const char* p, ElemType t) {
  auto load = [p]<class T>(T) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  };
  switch (t) {
    case ElemType::f32:
      return load(float{});
    case ElemType::f64:
      return load(double{});
    case ElemType::f16:
      return half_to_float(load(uint16_t{}));
    case ElemType::bf16:
      return std::bit_cast<float>(static_cast<uint32_t>(load(uint16_t{})) << 16);
    case ElemType::u8:
      return load(uint8_t{});
    case ElemType::i8:
      return load(int8_t{});
    case ElemType::boolean:
      return load(uint8_t{}) != 0;
    case ElemType::u16:
      return load(uint16_t{});
    case ElemType::i16:
      return load(int16_t{});
    case ElemType::i32:
      return load(int32_t{});
    case ElemType::u32:
      return load(uint32_t{});
    default:
      return 0;
  }
}

int64_t raw_element_as_i64(const char* p, ElemType t) {
  if (t == ElemType::i64 || t == ElemType::u64) {
    int64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
  return static_cast<int64_t>(raw_element_as_double(p, t));
}

// Number of values in the typed data field that holds elements of type t.
int64_t typed_field_size(const onnx::TensorProto& tp, ElemType t) {
  switch (t) {
    case ElemType::f32:
      return tp.float_data_size();
    case ElemType::f64:
      return tp.double_data_size();
    case ElemType::i64:
      return tp.int64_data_size();
    case ElemType::u32:
    case ElemType::u64:
      return tp.uint64_data_size();
    default:
      return tp.int32_data_size();  // all narrow types travel in int32_data, one value per entry
  }
}

// Reads the typed (non-raw) data fields of a tensor as little-endian bytes of its element type. The
// value count is checked before anything is allocated.
Result<std::string> typed_fields_as_raw(const onnx::TensorProto& tp, ElemType t, int64_t numel) {
  const int64_t have = typed_field_size(tp, t);
  if (have != numel) return errorf("has {} values in its data field, but its dims need {}", have, numel);
  std::string raw(static_cast<size_t>(numel) * elem_size(t), '\0');
  if (numel == 0) return raw;
  switch (t) {
    case ElemType::f32:
      std::memcpy(raw.data(), tp.float_data().data(), raw.size());
      break;
    case ElemType::f64:
      std::memcpy(raw.data(), tp.double_data().data(), raw.size());
      break;
    case ElemType::i64:
      std::memcpy(raw.data(), tp.int64_data().data(), raw.size());
      break;
    case ElemType::u32:
    case ElemType::u64:
      for (int64_t i = 0; i < numel; ++i) {
        uint64_t v = tp.uint64_data(static_cast<int>(i));
        std::memcpy(raw.data() + i * elem_size(t), &v, elem_size(t));
      }
      break;
    default:
      for (int64_t i = 0; i < numel; ++i) {
        int32_t v = tp.int32_data(static_cast<int>(i));
        std::memcpy(raw.data() + i * elem_size(t), &v, elem_size(t));
      }
  }
  return raw;
}

Result<Tensor> convert_tensor_inner(const onnx::TensorProto& tp) {
  auto t = static_cast<ElemType>(tp.data_type());
  auto dtype = compute_dtype(t);
  if (!dtype || elem_size(t) == 0)
    return errorf("field data_type: unsupported element type {} ({})", tp.data_type(), elem_type_name(t));
  if (tp.data_location() == onnx::TensorProto::EXTERNAL)
    return errorf(
        "uses external data files, which are not supported; save the model with all tensors inside");
  Shape shape(tp.dims().begin(), tp.dims().end());
  for (int64_t d : shape)
    if (d < 0) return errorf("field dims: negative dimension {} in {}", d, shape_str(shape));
  int64_t numel = shape_numel(shape);
  if (numel < 0)
    return errorf("field dims: {} has more than {} elements", shape_str(shape), kMaxTensorElements);
  std::string typed;
  const std::string* raw = &tp.raw_data();
  if (!tp.has_raw_data()) {
    SP_ASSIGN_OR_RETURN(typed, typed_fields_as_raw(tp, t, numel));
    raw = &typed;
  }
  size_t esize = elem_size(t);
  if (raw->size() != static_cast<size_t>(numel) * esize)
    return errorf("field raw_data: has {} bytes, but dims {} of {} need {}", raw->size(), shape_str(shape),
                  elem_type_name(t), static_cast<size_t>(numel) * esize);
  Tensor out(*dtype, shape);
  const char* p = raw->data();
  if (*dtype == DType::f32) {
    float* d = out.f32_data();
    if (t == ElemType::f32) {
      if (!raw->empty()) std::memcpy(d, p, raw->size());  // an empty tensor may have no storage
    } else {
      for (int64_t i = 0; i < numel; ++i) d[i] = static_cast<float>(raw_element_as_double(p + i * esize, t));
    }
  } else {
    int64_t* d = out.i64_data();
    for (int64_t i = 0; i < numel; ++i) d[i] = raw_element_as_i64(p + i * esize, t);
  }
  return out;
}

Result<Tensor> convert_tensor(const onnx::TensorProto& tp, const std::string& context) {
  auto r = convert_tensor_inner(tp);
  if (!r.ok()) return r.status().prefixed(context);
  return r;
}

Result<AttrValue> convert_attribute(const onnx::AttributeProto& a, const std::string& context) {
  using A = onnx::AttributeProto;
  auto type = a.type();
  if (type == A::UNDEFINED) {  // very old producers leave type unset; infer it from the field set
    if (a.has_f())
      type = A::FLOAT;
    else if (a.has_i())
      type = A::INT;
    else if (a.has_s())
      type = A::STRING;
    else if (a.has_t())
      type = A::TENSOR;
    else if (a.floats_size())
      type = A::FLOATS;
    else if (a.ints_size())
      type = A::INTS;
    else if (a.strings_size())
      type = A::STRINGS;
  }
  switch (type) {
    case A::FLOAT:
      return AttrValue(a.f());
    case A::INT:
      return AttrValue(static_cast<int64_t>(a.i()));
    case A::STRING:
      return AttrValue(a.s());
    case A::FLOATS:
      return AttrValue(std::vector<float>(a.floats().begin(), a.floats().end()));
    case A::INTS:
      return AttrValue(std::vector<int64_t>(a.ints().begin(), a.ints().end()));
    case A::STRINGS:
      return AttrValue(std::vector<std::string>(a.strings().begin(), a.strings().end()));
    case A::TENSOR: {
      SP_ASSIGN_OR_RETURN(Tensor t, convert_tensor(a.t(), context));
      return AttrValue(std::move(t));
    }
    default:
      return errorf("{}: attribute type {} is not supported (graphs, sparse tensors and type protos are not)",
                    context, static_cast<int>(type));
  }
}

Result<ValueInfo> convert_value_info(const onnx::ValueInfoProto& vi, const char* role) {
  ValueInfo out;
  out.name = vi.name();
  if (!vi.type().has_tensor_type())
    return errorf("graph {} '{}': only tensor types are supported (not sequences or maps)", role, vi.name());
  const auto& tt = vi.type().tensor_type();
  out.elem_type = static_cast<ElemType>(tt.elem_type());
  if (!compute_dtype(out.elem_type))
    return errorf("graph {} '{}': field elem_type: unsupported element type {} ({})", role, vi.name(),
                  tt.elem_type(), elem_type_name(out.elem_type));
  if (tt.has_shape()) {
    out.has_shape = true;
    for (const auto& d : tt.shape().dim()) {
      bool known = d.has_dim_value() && d.dim_value() > 0;
      if (d.has_dim_value() && d.dim_value() < 0)
        return errorf("graph {} '{}': negative dimension {}", role, vi.name(), d.dim_value());
      out.dims.push_back(known ? d.dim_value() : -1);
      out.dim_names.push_back(d.has_dim_param() ? d.dim_param() : "");
    }
  }
  return out;
}

Result<int64_t> default_opset(const onnx::ModelProto& mp) {
  for (const auto& op : mp.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") {
      if (op.version() < kMinOpset || op.version() > kMaxOpset)
        return errorf("field opset_import: opset {} is not supported (Sparrow reads opsets {} to {})",
                      op.version(), kMinOpset, kMaxOpset);
      return op.version();
    }
  }
  return errorf("field opset_import: no version for the default ONNX domain");
}

Result<Node> convert_node(const onnx::NodeProto& np, size_t index, int64_t opset) {
  Node node;
  node.name = np.name().empty() ? fmt::format("{}_{}", np.op_type(), index) : np.name();
  node.op_type = np.op_type();
  node.domain = np.domain() == "ai.onnx" ? "" : np.domain();
  if (!node.domain.empty())
    return errorf("unsupported operator {}.{} in node '{}' (opset {})", node.domain, node.op_type, node.name,
                  opset);
  node.inputs.assign(np.input().begin(), np.input().end());
  node.outputs.assign(np.output().begin(), np.output().end());
  if (node.outputs.empty()) return errorf("{}: has no outputs", node.describe());
  for (const auto& a : np.attribute()) {
    std::string ctx = fmt::format("{} attribute '{}'", node.describe(), a.name());
    SP_ASSIGN_OR_RETURN(AttrValue v, convert_attribute(a, ctx));
    node.attrs[a.name()] = std::move(v);
  }
  // Sparrow computes every float in float32: a Cast to float16/float64/bfloat16 becomes a Cast to float32.
  if (node.op_type == "Cast") {
    auto to = node.attrs.find("to");
    if (to != node.attrs.end())
      if (auto* v = std::get_if<int64_t>(&to->second);
          v && compute_dtype(static_cast<ElemType>(*v)) == DType::f32)
        *v = static_cast<int64_t>(ElemType::f32);
  }
  return node;
}

// `complete`: validate and simplify (a whole model); otherwise return the graph as written.
Result<Model> convert_model(const onnx::ModelProto& mp, bool complete) {
  Model m;
  if (!mp.has_graph()) return errorf("field graph: the model has no graph");
  SP_ASSIGN_OR_RETURN(m.opset, default_opset(mp));
  m.ir_version = mp.ir_version();
  m.producer_name = mp.producer_name();
  m.producer_version = mp.producer_version();
  for (const auto& p : mp.metadata_props()) m.metadata.emplace_back(p.key(), p.value());
  const auto& g = mp.graph();
  if (!g.name().empty()) m.graph_name = g.name();
  for (const auto& init : g.initializer()) {
    SP_ASSIGN_OR_RETURN(Tensor t, convert_tensor(init, fmt::format("initializer '{}'", init.name())));
    m.initializers[init.name()] = std::move(t);
  }
  if (g.sparse_initializer_size() > 0)
    return errorf("field sparse_initializer: sparse initializers are not supported");
  for (const auto& in : g.input()) {
    if (m.initializers.count(in.name())) continue;  // IR < 4 lists initializers among the inputs
    SP_ASSIGN_OR_RETURN(ValueInfo vi, convert_value_info(in, "input"));
    m.inputs.push_back(std::move(vi));
  }
  for (const auto& out : g.output()) {
    SP_ASSIGN_OR_RETURN(ValueInfo vi, convert_value_info(out, "output"));
    m.outputs.push_back(std::move(vi));
  }
  for (int i = 0; i < g.node_size(); ++i) {
    SP_ASSIGN_OR_RETURN(Node n, convert_node(g.node(i), static_cast<size_t>(i), m.opset));
    m.nodes.push_back(std::move(n));
  }
  if (complete) {
    SP_RETURN_IF_ERROR(m.validate());
    SP_RETURN_IF_ERROR(simplify_model(m));
  }
  return m;
}

Result<Model> parse(std::string_view bytes, const std::string& source, bool complete) {
  onnx::ModelProto mp;
  if (bytes.size() > static_cast<size_t>(INT32_MAX))
    return errorf("{}: {} bytes exceeds the 2 GiB protobuf limit", source, bytes.size());
  if (!mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return errorf("{}: not a valid ONNX protobuf (truncated or corrupt file?)", source);
  auto model = convert_model(mp, complete);
  if (!model.ok()) return model.status().prefixed(source);
  model->source = source;
  return model;
}

}  // namespace

Result<Model> parse_onnx(std::string_view bytes, const std::string& source) {
  return parse(bytes, source, true);
}

Result<Model> parse_onnx_graph(std::string_view bytes, const std::string& source) {
  return parse(bytes, source, false);
}

namespace {
// With ONNX support linked, .spw files of format 1.0 (whose graph section is ONNX) can be read and written.
[[maybe_unused]] const bool kSpwCodecRegistered =
    (spw::register_onnx_graph_codec(spw::OnnxGraphCodec{&parse_onnx_graph, &serialize_onnx}), true);
}  // namespace

Result<Model> load_onnx(const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(path));
  return parse_onnx(std::string_view(bytes.data(), bytes.size()), path);
}

}  // namespace sparrow
