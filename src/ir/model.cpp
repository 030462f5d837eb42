#include <set>

#include <fmt/format.h>

#include "sparrow/model.h"

namespace sparrow {

const char* elem_type_name(ElemType t) {
  switch (t) {
    case ElemType::f32:
      return "float32";
    case ElemType::u8:
      return "uint8";
    case ElemType::i8:
      return "int8";
    case ElemType::u16:
      return "uint16";
    case ElemType::i16:
      return "int16";
    case ElemType::i32:
      return "int32";
    case ElemType::i64:
      return "int64";
    case ElemType::str:
      return "string";
    case ElemType::boolean:
      return "bool";
    case ElemType::f16:
      return "float16";
    case ElemType::f64:
      return "float64";
    case ElemType::u32:
      return "uint32";
    case ElemType::u64:
      return "uint64";
    case ElemType::bf16:
      return "bfloat16";
    case ElemType::undefined:
      break;
  }
  return "undefined";
}

std::optional<DType> compute_dtype(ElemType t) {
  switch (t) {
    case ElemType::f32:
    case ElemType::f16:
    case ElemType::f64:
    case ElemType::bf16:
      return DType::f32;
    case ElemType::u8:
    case ElemType::i8:
    case ElemType::u16:
    case ElemType::i16:
    case ElemType::i32:
    case ElemType::i64:
    case ElemType::u32:
    case ElemType::u64:
    case ElemType::boolean:
      return DType::i64;
    default:
      return std::nullopt;
  }
}

std::string ValueInfo::describe() const {
  std::string dims_text;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) dims_text += ", ";
    dims_text += dims[i] >= 0 ? std::to_string(dims[i]) : (dim_names[i].empty() ? "?" : dim_names[i]);
  }
  return fmt::format("'{}' [{}] {}", name, has_shape ? dims_text : "unknown shape",
                     elem_type_name(elem_type));
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : initializers)
    if (t.dtype() == DType::f32) n += t.numel();
  return n;
}

Status Model::validate(const std::vector<std::string>& constants) const {
  std::set<std::string> defined(constants.begin(), constants.end());
  for (const auto& in : inputs) {
    if (initializers.count(in.name) || defined.count(in.name))
      return errorf("graph input '{}' is also an initializer", in.name);
    if (!defined.insert(in.name).second) return errorf("graph input '{}' is declared twice", in.name);
  }
  for (const auto& [name, t] : initializers) defined.insert(name);
  for (const auto& node : nodes) {
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const auto& in = node.inputs[i];
      if (!in.empty() && !defined.count(in))
        return errorf("{}: input {} '{}' is not produced by any earlier node, initializer or graph input",
                      node.describe(), i, in);
    }
    for (const auto& out : node.outputs) {
      if (out.empty()) continue;
      if (!defined.insert(out).second)
        return errorf("{}: output '{}' is produced more than once", node.describe(), out);
    }
  }
  if (outputs.empty()) return errorf("the graph declares no outputs");
  for (const auto& out : outputs)
    if (!defined.count(out.name)) return errorf("graph output '{}' is not produced by any node", out.name);
  return {};
}

}  // namespace sparrow
