#include "engine/op.h"

#include <cmath>

namespace sparrow {

Status Op::expect_inputs(std::span<const ValueDesc> in, size_t lo, size_t hi) const {
  if (in.size() < lo || in.size() > hi) {
    if (lo == hi) return fail("expects {} inputs, has {}", lo, in.size());
    return fail("expects {} to {} inputs, has {}", lo, hi, in.size());
  }
  for (size_t i = 0; i < lo; ++i)
    if (!in[i].present) return fail("required input {} is missing", i);
  return {};
}

Result<std::vector<int64_t>> Op::constant_ints(std::span<const ValueDesc> in, size_t index,
                                               const char* what) const {
  if (index >= in.size() || !in[index].present) return fail("input '{}' is missing", what);
  const Tensor* t = in[index].constant;
  if (t == nullptr)
    return fail("input '{}' ('{}') must be known before inference (a constant or computed from shapes only)",
                what, node_.inputs[index]);
  std::vector<int64_t> v(static_cast<size_t>(t->numel()));
  for (int64_t i = 0; i < t->numel(); ++i) {
    if (t->dtype() == DType::i64) {
      v[i] = t->i64_data()[i];
      continue;
    }
    const float f = t->f32_data()[i];
    if (!(std::fabs(f) < 9.2e18f))  // also refuses NaN: only values an int64 holds are cast
      return fail("input '{}' ('{}') holds {}, which is not an integer", what, node_.inputs[index], f);
    v[i] = static_cast<int64_t>(f);
  }
  return v;
}

Status Op::prepare() {
  if (node_.attrs.count(kFusedActivationAttr) && !takes_fused_activation(node_.op_type))
    return fail("attribute '{}' is only valid on ops that fuse an activation", kFusedActivationAttr);
  SP_ASSIGN_OR_RETURN(activation_, fused_activation(node_));
  return parse();
}

Result<int> Op::normalize_axis(int64_t axis, int rank, const char* what) const {
  int64_t r = rank;
  if (axis < -r || axis >= std::max<int64_t>(r, 1))
    return fail("{} {} is out of range for rank {}", what, axis, rank);
  return static_cast<int>(axis < 0 ? axis + r : axis);
}

const OpRegistry& op_registry() {
  static const OpRegistry registry = [] {
    OpRegistry r;
    register_elementwise_ops(r);
    register_gemm_ops(r);
    register_conv_ops(r);
    register_pool_ops(r);
    register_shape_ops(r);
    register_normalize_ops(r);
    register_lstm_ops(r);
    return r;
  }();
  return registry;
}

Result<std::unique_ptr<Op>> create_op(const Node& node, int64_t opset) {
  const auto& r = op_registry();
  auto it = node.domain.empty() ? r.find(node.op_type) : r.end();
  if (it == r.end()) {
    std::string op = node.domain.empty() ? node.op_type : node.domain + "." + node.op_type;
    return errorf("unsupported operator {} in node '{}' (opset {})", op, node.name, opset);
  }
  return it->second(node, opset);
}

std::optional<Shape> broadcast_shapes(const Shape& a, const Shape& b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out) {
  size_t rank = out.size();
  std::vector<int64_t> strides(rank, 0);
  int64_t stride = 1;
  for (size_t k = 0; k < shape.size(); ++k) {
    size_t i = shape.size() - 1 - k;  // index in shape
    size_t o = rank - 1 - k;          // index in out
    strides[o] = shape[i] == 1 ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

}  // namespace sparrow
