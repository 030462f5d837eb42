// Sparrow IR -> ONNX protobuf (dense float32).
#include <onnx/onnx_pb.h>

#include "core/file.h"
#include "sparrow/onnx.h"
#include "sparrow/version.h"

namespace sparrow {

namespace {

void fill_tensor(const Tensor& t, const std::string& name, onnx::TensorProto* tp) {
  tp->set_name(name);
  for (int64_t d : t.shape()) tp->add_dims(d);
  tp->set_data_type(t.dtype() == DType::f32 ? onnx::TensorProto::FLOAT : onnx::TensorProto::INT64);
  tp->set_raw_data(std::string(static_cast<const char*>(t.raw()), t.bytes()));
}

void fill_attribute(const std::string& name, const AttrValue& v, onnx::AttributeProto* a) {
  using A = onnx::AttributeProto;
  a->set_name(name);
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          a->set_type(A::INT);
          a->set_i(x);
        } else if constexpr (std::is_same_v<T, float>) {
          a->set_type(A::FLOAT);
          a->set_f(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          a->set_type(A::STRING);
          a->set_s(x);
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          a->set_type(A::INTS);
          for (auto i : x) a->add_ints(i);
        } else if constexpr (std::is_same_v<T, std::vector<float>>) {
          a->set_type(A::FLOATS);
          for (auto f : x) a->add_floats(f);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          a->set_type(A::STRINGS);
          for (const auto& s : x) a->add_strings(s);
        } else {
          a->set_type(A::TENSOR);
          fill_tensor(x, "", a->mutable_t());
        }
      },
      v);
}

// Inputs and outputs are declared float32/int64: Sparrow computes every float in float32.
void fill_value_info(const ValueInfo& vi, onnx::ValueInfoProto* out) {
  out->set_name(vi.name);
  auto* tt = out->mutable_type()->mutable_tensor_type();
  bool is_float = compute_dtype(vi.elem_type) == DType::f32;
  tt->set_elem_type(is_float ? onnx::TensorProto::FLOAT : onnx::TensorProto::INT64);
  if (!vi.has_shape) return;
  auto* shape = tt->mutable_shape();
  for (size_t i = 0; i < vi.dims.size(); ++i) {
    auto* d = shape->add_dim();
    if (vi.dims[i] >= 0)
      d->set_dim_value(vi.dims[i]);
    else if (!vi.dim_names[i].empty())
      d->set_dim_param(vi.dim_names[i]);
  }
}

}  // namespace

Result<std::string> serialize_onnx(const Model& m) {
  onnx::ModelProto mp;
  mp.set_ir_version(std::min<int64_t>(std::max<int64_t>(m.ir_version, 3), 8));
  mp.set_producer_name("sparrow");
  mp.set_producer_version(SPARROW_VERSION);
  auto* opset = mp.add_opset_import();
  opset->set_domain("");
  opset->set_version(m.opset);
  for (const auto& [k, v] : m.metadata) {
    auto* p = mp.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  auto* g = mp.mutable_graph();
  g->set_name(m.graph_name);
  for (const auto& [name, t] : m.initializers) fill_tensor(t, name, g->add_initializer());
  for (const auto& in : m.inputs) fill_value_info(in, g->add_input());
  for (const auto& out : m.outputs) fill_value_info(out, g->add_output());
  for (const auto& node : m.nodes) {
    auto* np = g->add_node();
    np->set_name(node.name);
    np->set_op_type(node.op_type);
    for (const auto& in : node.inputs) np->add_input(in);
    for (const auto& out : node.outputs) np->add_output(out);
    for (const auto& [k, v] : node.attrs) fill_attribute(k, v, np->add_attribute());
  }
  std::string bytes;
  if (!mp.SerializeToString(&bytes)) return errorf("ONNX serialization failed (model larger than 2 GiB?)");
  return bytes;
}

Status save_onnx(const Model& model, const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::string bytes, serialize_onnx(model));
  return write_file_atomic(path, bytes);
}

}  // namespace sparrow
