// The model IR: a graph of named tensors and ONNX-style operators.
// Values are referenced by name; an empty input name marks an omitted optional input.
// Nodes are kept in topological order. Initializers are constant tensors (float32 or int64).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "sparrow/status.h"
#include "sparrow/tensor.h"

namespace sparrow {

// Element types as numbered by ONNX TensorProto.DataType (only those Sparrow reads).
enum class ElemType : int32_t {
  undefined = 0,
  f32 = 1,
  u8 = 2,
  i8 = 3,
  u16 = 4,
  i16 = 5,
  i32 = 6,
  i64 = 7,
  str = 8,
  boolean = 9,
  f16 = 10,
  f64 = 11,
  u32 = 12,
  u64 = 13,
  bf16 = 16
};
const char* elem_type_name(ElemType t);
// The DType Sparrow computes with for an element type (float kinds -> f32, integer kinds -> i64).
std::optional<DType> compute_dtype(ElemType t);

using AttrValue = std::variant<int64_t, float, std::string, std::vector<int64_t>, std::vector<float>,
                               std::vector<std::string>, Tensor>;
const char* attr_kind_name(const AttrValue& v);

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  // "" for the default ONNX domain
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::map<std::string, AttrValue> attrs;

  bool has_input(size_t i) const { return i < inputs.size() && !inputs[i].empty(); }
  // Typed attribute access. Errors name the node, attribute and the kind found.
  Result<int64_t> attr_int(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const;
  Result<float> attr_float(const std::string& key, std::optional<float> fallback = std::nullopt) const;
  Result<std::string> attr_string(const std::string& key,
                                  std::optional<std::string> fallback = std::nullopt) const;
  Result<std::vector<int64_t>> attr_ints(const std::string& key,
                                         std::optional<std::vector<int64_t>> fallback = std::nullopt) const;
  Result<std::vector<float>> attr_floats(const std::string& key,
                                         std::optional<std::vector<float>> fallback = std::nullopt) const;
  Result<std::vector<std::string>> attr_strings(
      const std::string& key, std::optional<std::vector<std::string>> fallback = std::nullopt) const;
  Result<Tensor> attr_tensor(const std::string& key) const;
  // "node 'conv1' (Conv)"
  std::string describe() const;
};

// A graph input or output as declared by the model. dims[i] == -1 means symbolic/unknown
// (dim_names[i] then holds the symbol, e.g. "batch").
struct ValueInfo {
  std::string name;
  ElemType elem_type = ElemType::f32;
  std::vector<int64_t> dims;
  std::vector<std::string> dim_names;
  bool has_shape = false;
  std::string describe() const;  // "input [batch, 1, 28, 28] float32"
};

struct Model {
  std::vector<Node> nodes;
  std::map<std::string, Tensor> initializers;
  std::vector<ValueInfo> inputs;  // runtime inputs only (never initializers)
  std::vector<ValueInfo> outputs;
  int64_t opset = 13;  // version of the default ONNX domain
  int64_t ir_version = 8;
  std::string producer_name;
  std::string producer_version;
  std::string graph_name = "graph";
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string source;  // where the model was read from, for messages

  // Number of weights held in float32 initializers.
  int64_t parameter_count() const;
  // Checks structural invariants: unique value producers, inputs defined before use,
  // outputs produced. Errors name the node and value. `constants` names values defined outside
  // the graph (compressed weights held beside it).
  Status validate(const std::vector<std::string>& constants = {}) const;
};

// Lowest and highest default-domain opset versions Sparrow imports.
inline constexpr int64_t kMinOpset = 7;
inline constexpr int64_t kMaxOpset = 17;

// Import-time simplification: turns Constant nodes into initializers, removes Identity and
// inference-time Dropout, folds BatchNormalization into a preceding Conv or Gemm when that node's
// weights are constant and its output feeds only the BatchNormalization.
Status simplify_model(Model& model);

}  // namespace sparrow
