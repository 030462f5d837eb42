// The operator interface of the dense reference executor.
//
// An Op is made per node and per plan: its factory parses and checks attributes (errors name the
// node and attribute), infer() checks inputs and computes output dtypes and shapes once per plan,
// and run() computes outputs into tensors the planner has already allocated. run() must not
// allocate; it may use `scratch` (scratch_floats() floats owned by the plan).
#pragma once

#include <array>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/epilogue.h"
#include "sparrow/model.h"

namespace sparrow {

struct ValueDesc {
  DType dtype = DType::f32;
  Shape shape;
  const Tensor* constant = nullptr;  // set when the value is known at plan time
  bool present = true;               // false for an omitted optional input
};

struct RunArgs {
  std::span<const Tensor* const> in;  // nullptr for omitted optional inputs
  std::span<Tensor* const> out;       // preallocated with the inferred dtype and shape; nullptr if unused
  ThreadPool& pool;
  std::span<float> scratch;
};

class Op {
 public:
  Op(const Node& node, int64_t opset) : node_(node), opset_(opset) {}
  virtual ~Op() = default;

  // Parses attributes; called once by the factory.
  virtual Status parse() { return {}; }
  // Checks inputs and fills `out` (one entry per node output).
  virtual Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) = 0;
  virtual Status run(const RunArgs& args) = 0;
  // Multiply-accumulates per run (valid after infer).
  virtual int64_t macs() const { return 0; }
  // Scratch floats run() needs with `threads` threads (valid after infer).
  virtual size_t scratch_floats(int threads) const { return 0; }
  // True when outputs depend only on input shapes, so the planner can fold the node.
  virtual bool depends_only_on_shapes() const { return false; }
  // True when the op's one output is input 0's data unchanged under another shape (valid after
  // infer): the planner makes the output a view of the input and never runs the op.
  virtual bool output_is_view() const { return false; }
  // Called by the planner before infer when input 0 holds no NaN (a ReLU's output, see
  // Plan::note_zeros): the op may skip the work that would carry a NaN through.
  virtual void input_is_nan_free() {}
  // The op a fused step runs on this op's output within the same step (ops/expand_depthwise.h),
  // or null: a summary lists its node and weights with this op's.
  virtual const Op* next_in_step() const { return nullptr; }
  // Reads the fused activation (epilogue.h), then parse(); what the factories call.
  Status prepare();

  const Node& node() const { return node_; }
  // The activation the op applies to its output (none unless a pass fused one into its node).
  const Activation& activation() const { return activation_; }

 protected:
  // Error naming this node: fail("axis {} out of range", a) -> "node 'x' (Softmax): axis 5 out of range".
  template <class... Args>
  Status fail(fmt::format_string<Args...> format, Args&&... args) const {
    return Status::error(node_.describe() + ": " + fmt::format(format, std::forward<Args>(args)...));
  }
  // Checks the number of inputs (present or omitted) is within [lo, hi].
  Status expect_inputs(std::span<const ValueDesc> in, size_t lo, size_t hi) const;
  // Reads a constant integer input (e.g. Reshape's shape). Fails if it is not known at plan time.
  Result<std::vector<int64_t>> constant_ints(std::span<const ValueDesc> in, size_t index,
                                             const char* what) const;
  Result<int> normalize_axis(int64_t axis, int rank, const char* what = "axis") const;

  const Node& node_;
  int64_t opset_;
  Activation activation_;
};

using OpFactory = Result<std::unique_ptr<Op>> (*)(const Node& node, int64_t opset);

template <class T>
Result<std::unique_ptr<Op>> make_op(const Node& node, int64_t opset) {
  auto op = std::make_unique<T>(node, opset);
  SP_RETURN_IF_ERROR(op->prepare());
  return std::unique_ptr<Op>(std::move(op));
}

using OpRegistry = std::map<std::string, OpFactory>;
const OpRegistry& op_registry();
// Creates the op for a node, or fails with "unsupported operator X in node Y (opset Z)".
Result<std::unique_ptr<Op>> create_op(const Node& node, int64_t opset);

// Registration, one function per operator family (called once by op_registry()).
void register_elementwise_ops(OpRegistry& r);
void register_gemm_ops(OpRegistry& r);
void register_conv_ops(OpRegistry& r);
void register_pool_ops(OpRegistry& r);
void register_shape_ops(OpRegistry& r);
void register_normalize_ops(OpRegistry& r);
void register_lstm_ops(OpRegistry& r);

// Numpy-style multidirectional broadcast of two shapes; nullopt if incompatible.
std::optional<Shape> broadcast_shapes(const Shape& a, const Shape& b);
// Row-major strides of `shape` aligned to `rank` dims, 0 along broadcast (size-1 or missing) dims.
std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out);

// Calls fn(out_index, offsets) for every element of `out`, with each input's offset under
// numpy broadcasting (strides from broadcast_strides).
template <size_t N, class F>
void for_each_broadcast(const Shape& out, const std::array<std::vector<int64_t>, N>& strides, F&& fn) {
  int rank = static_cast<int>(out.size());
  int64_t n = shape_numel(out);
  int64_t inner = rank ? out[rank - 1] : 1;
  if (inner == 0) return;
  for (int64_t r = 0; r < n / inner; ++r) {
    std::array<int64_t, N> off{};
    int64_t rem = r;
    for (int d = rank - 2; d >= 0; --d) {
      int64_t idx = rem % out[d];
      rem /= out[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx * strides[k][d];
    }
    for (int64_t i = 0; i < inner; ++i) {
      std::array<int64_t, N> at = off;
      for (size_t k = 0; k < N && rank; ++k) at[k] += i * strides[k][rank - 1];
      fn(r * inner + i, at);
    }
  }
}

// Calls fn.template operator()<T>() with T = float or int64_t for the dtype.
template <class F>
decltype(auto) dispatch_dtype(DType dtype, F&& fn) {
  if (dtype == DType::f32) return fn.template operator()<float>();
  return fn.template operator()<int64_t>();
}

template <class T>
const T* data_of(const Tensor& t) {
  if constexpr (std::is_same_v<T, float>)
    return t.f32_data();
  else
    return t.i64_data();
}
template <class T>
T* data_of(Tensor& t) {
  if constexpr (std::is_same_v<T, float>)
    return t.f32_data();
  else
    return t.i64_data();
}

}  // namespace sparrow
