#include "sparrow/weight_roles.h"

#include <array>
#include <cstring>

namespace sparrow {

namespace {

constexpr std::array kRoles = {
    WeightRole{"Gemm", 1, WeightKind::fully_connected, 2},
    WeightRole{"MatMul", 1, WeightKind::fully_connected, -1},
    WeightRole{"Conv", 1, WeightKind::convolution, 2},
    WeightRole{"LSTM", 1, WeightKind::lstm_input, 3},
    WeightRole{"LSTM", 2, WeightKind::lstm_recurrent, 3},
};

bool gemm_trans_b(const Node& node) {
  auto t = node.attr_int("transB", 0);
  return t.ok() && *t != 0;
}

}  // namespace

const char* weight_kind_name(WeightKind kind) {
  switch (kind) {
    case WeightKind::fully_connected:
      return "fully connected";
    case WeightKind::convolution:
      return "convolution";
    case WeightKind::lstm_input:
      return "LSTM input";
    case WeightKind::lstm_recurrent:
      return "LSTM recurrent";
  }
  return "?";
}

std::span<const WeightRole> weight_roles() {
  return kRoles;
}

const WeightRole* weight_role(const Node& node, size_t index) {
  if (!node.has_input(index)) return nullptr;
  for (const WeightRole& role : kRoles)
    if (role.input == index && node.op_type == role.op_type && node.domain.empty()) return &role;
  return nullptr;
}

std::optional<MatrixView> weight_view(const Node& node, const WeightRole& role, const Shape& shape) {
  MatrixView view;
  switch (role.kind) {
    case WeightKind::fully_connected:
      if (shape.size() != 2) return std::nullopt;
      if (node.op_type == "Gemm" && gemm_trans_b(node))
        view = {shape[0], shape[1], false};
      else
        view = {shape[1], shape[0], true};  // stored [inputs, outputs]
      break;
    case WeightKind::convolution:
      if (shape.size() < 3 || shape[0] <= 0) return std::nullopt;
      view = {shape[0], shape_numel(shape) / shape[0], false};
      break;
    case WeightKind::lstm_input:
    case WeightKind::lstm_recurrent:
      if (shape.size() != 3) return std::nullopt;
      view = {shape[0] * shape[1], shape[2], false};
      break;
  }
  if (view.rows <= 0 || view.cols <= 0) return std::nullopt;
  return view;
}

}  // namespace sparrow
