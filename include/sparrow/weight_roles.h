// Which inputs of which operators are compressible weight matrices, and how each is viewed as a
// matrix. The one table that the compressor, the planner, the simulator's mapping and the trainer
// consult; a new weight-bearing operator is a new row.
#pragma once

#include <optional>
#include <span>

#include "sparrow/format.h"
#include "sparrow/model.h"

namespace sparrow {

enum class WeightKind : uint8_t {
  fully_connected,  // Gemm B, MatMul B: rows are outputs, columns inputs
  convolution,      // Conv W [M, C/group, k...] viewed as [M, C/group * k...] (grouped and depthwise too)
  lstm_input,       // LSTM W [dirs, 4H, I] viewed as [dirs * 4H, I]
  lstm_recurrent,   // LSTM R [dirs, 4H, H] viewed as [dirs * 4H, H]
};
const char* weight_kind_name(WeightKind kind);

struct WeightRole {
  const char* op_type;
  size_t input;  // index of the weight among the node's inputs
  WeightKind kind;
  int bias_input;  // index of the input holding this weight's bias, -1 when there is none
};

// Every row of the table.
std::span<const WeightRole> weight_roles();
// The role of input `index` of `node`, or nullptr when that input is no compressible weight.
const WeightRole* weight_role(const Node& node, size_t index);
// How a weight of `shape` in `role` for `node` is viewed as a matrix (rows: outputs, columns: inputs;
// transposed when the tensor stores it [inputs, outputs]); nullopt when the shape does not fit the
// role or the matrix is empty.
std::optional<MatrixView> weight_view(const Node& node, const WeightRole& role, const Shape& shape);

}  // namespace sparrow
