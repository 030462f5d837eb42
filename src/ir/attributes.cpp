#include <fmt/format.h>

#include "sparrow/model.h"

namespace sparrow {

const char* attr_kind_name(const AttrValue& v) {
  static const char* kNames[] = {"int", "float", "string", "ints", "floats", "strings", "tensor"};
  return kNames[v.index()];
}

std::string Node::describe() const {
  return fmt::format("node '{}' ({})", name, op_type);
}

namespace {

template <class T>
const char* wanted_kind();
template <>
const char* wanted_kind<int64_t>() {
  return "int";
}
template <>
const char* wanted_kind<float>() {
  return "float";
}
template <>
const char* wanted_kind<std::string>() {
  return "string";
}
template <>
const char* wanted_kind<std::vector<int64_t>>() {
  return "ints";
}
template <>
const char* wanted_kind<std::vector<float>>() {
  return "floats";
}
template <>
const char* wanted_kind<std::vector<std::string>>() {
  return "strings";
}
template <>
const char* wanted_kind<Tensor>() {
  return "tensor";
}

template <class T>
Result<T> get_attr(const Node& node, const std::string& key, std::optional<T> fallback) {
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) {
    if (fallback) return std::move(*fallback);
    return errorf("{}: required attribute '{}' is missing", node.describe(), key);
  }
  if (const T* v = std::get_if<T>(&it->second)) return *v;
  // ONNX allows an int where a float is expected in hand-written models; accept that one case.
  if constexpr (std::is_same_v<T, float>) {
    if (const int64_t* i = std::get_if<int64_t>(&it->second)) return static_cast<float>(*i);
  }
  return errorf("{}: attribute '{}' is {}, expected {}", node.describe(), key, attr_kind_name(it->second),
                wanted_kind<T>());
}

}  // namespace

Result<int64_t> Node::attr_int(const std::string& key, std::optional<int64_t> fallback) const {
  return get_attr<int64_t>(*this, key, fallback);
}
Result<float> Node::attr_float(const std::string& key, std::optional<float> fallback) const {
  return get_attr<float>(*this, key, fallback);
}
Result<std::string> Node::attr_string(const std::string& key, std::optional<std::string> fallback) const {
  return get_attr<std::string>(*this, key, std::move(fallback));
}
Result<std::vector<int64_t>> Node::attr_ints(const std::string& key,
                                             std::optional<std::vector<int64_t>> fallback) const {
  return get_attr<std::vector<int64_t>>(*this, key, std::move(fallback));
}
Result<std::vector<float>> Node::attr_floats(const std::string& key,
                                             std::optional<std::vector<float>> fallback) const {
  return get_attr<std::vector<float>>(*this, key, std::move(fallback));
}
Result<std::vector<std::string>> Node::attr_strings(const std::string& key,
                                                    std::optional<std::vector<std::string>> fallback) const {
  return get_attr<std::vector<std::string>>(*this, key, std::move(fallback));
}
Result<Tensor> Node::attr_tensor(const std::string& key) const {
  return get_attr<Tensor>(*this, key, std::nullopt);
}

}  // namespace sparrow
