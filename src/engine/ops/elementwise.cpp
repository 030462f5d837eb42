// Elementwise operators: unary activations and math, Clip, Cast, broadcasting binary and
// variadic arithmetic.
#include <array>
#include <cmath>
#include <limits>

#include "engine/op.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

namespace {

constexpr int64_t kParallelElements = 1 << 15;

// Runs fn(begin, end) over [0, n), in parallel when n is large.
template <class F>
void for_chunks(ThreadPool& pool, int64_t n, F&& fn) {
  if (n < kParallelElements)
    fn(int64_t{0}, n);
  else
    pool.parallel_range(n, kParallelElements / 4, fn);
}

// ---- unary float ops ----

struct ReluFn {
  float alpha = 0;
  float operator()(float x) const { return x > 0 ? x : 0.0f; }
};
struct LeakyReluFn {
  float alpha = 0.01f;
  float operator()(float x) const { return x >= 0 ? x : alpha * x; }
};
// Sigmoid and Tanh run on the smooth_activation kernel (engine/sparse/kernels.h), in vector lanes.
struct SigmoidFn {
  static constexpr SmoothActivation kKernel = SmoothActivation::sigmoid;
};
struct TanhFn {
  static constexpr SmoothActivation kKernel = SmoothActivation::tanh;
};
template <class Fn>
concept OnKernel = requires {
  Fn::kKernel;
};
struct ExpFn {
  float alpha = 0;
  float operator()(float x) const { return std::exp(x); }
};
struct LogFn {
  float alpha = 0;
  float operator()(float x) const { return std::log(x); }
};
struct SqrtFn {
  float alpha = 0;
  float operator()(float x) const { return std::sqrt(x); }
};
struct NegFn {
  float alpha = 0;
  float operator()(float x) const { return -x; }
};
struct AbsFn {
  float alpha = 0;
  float operator()(float x) const { return std::fabs(x); }
};

template <class Fn>
class UnaryOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    if constexpr (std::is_same_v<Fn, LeakyReluFn>) {
      SP_ASSIGN_OR_RETURN(fn_.alpha, node_.attr_float("alpha", 0.01f));
    }
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    if (in[0].dtype != DType::f32) return fail("expects a float input, got {}", dtype_name(in[0].dtype));
    out = {ValueDesc{DType::f32, in[0].shape}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    for_chunks(a.pool, a.in[0]->numel(), [&](int64_t b, int64_t e) {
      if constexpr (OnKernel<Fn>)
        sparse_kernels().smooth_activation(SmoothActivationArgs{x + b, e - b, Fn::kKernel, y + b});
      else
        for (int64_t i = b; i < e; ++i) y[i] = fn_(x[i]);
    });
    return {};
  }

 private:
  Fn fn_;
};

// ---- Clip ----

class ClipOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    if (opset_ < 11) {
      SP_ASSIGN_OR_RETURN(lo_, node_.attr_float("min", -std::numeric_limits<float>::infinity()));
      SP_ASSIGN_OR_RETURN(hi_, node_.attr_float("max", std::numeric_limits<float>::infinity()));
    }
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, opset_ < 11 ? 1 : 3));
    if (in[0].dtype != DType::f32) return fail("expects a float input");
    for (size_t i = 1; i < in.size(); ++i)
      if (in[i].present && shape_numel(in[i].shape) != 1) return fail("input {} must be a scalar", i);
    out = {ValueDesc{DType::f32, in[0].shape}};
    return {};
  }
  Status run(const RunArgs& a) override {
    float lo = lo_, hi = hi_;
    if (a.in.size() > 1 && a.in[1]) lo = a.in[1]->f32_data()[0];
    if (a.in.size() > 2 && a.in[2]) hi = a.in[2]->f32_data()[0];
    const float* x = a.in[0]->f32_data();
    float* y = a.out[0]->f32_data();
    for_chunks(a.pool, a.in[0]->numel(), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) y[i] = std::min(std::max(x[i], lo), hi);
    });
    return {};
  }

 private:
  float lo_ = -std::numeric_limits<float>::infinity();
  float hi_ = std::numeric_limits<float>::infinity();
};

// ---- Cast ----

class CastOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(int64_t to, node_.attr_int("to"));
    to_ = static_cast<ElemType>(to);
    auto dt = compute_dtype(to_);
    if (!dt) return fail("attribute 'to': unsupported element type {}", to);
    dtype_ = *dt;
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    out = {ValueDesc{dtype_, in[0].shape}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const Tensor& x = *a.in[0];
    Tensor& y = *a.out[0];
    int64_t n = x.numel();
    bool to_bool = to_ == ElemType::boolean;
    if (x.dtype() == DType::f32 && dtype_ == DType::f32) {
      std::copy_n(x.f32_data(), n, y.f32_data());
    } else if (x.dtype() == DType::f32) {
      for (int64_t i = 0; i < n; ++i) {
        float v = x.f32_data()[i];
        y.i64_data()[i] = to_bool ? (v != 0) : (std::isfinite(v) ? static_cast<int64_t>(v) : 0);
      }
    } else if (dtype_ == DType::f32) {
      for (int64_t i = 0; i < n; ++i) y.f32_data()[i] = static_cast<float>(x.i64_data()[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) y.i64_data()[i] = to_bool ? (x.i64_data()[i] != 0) : x.i64_data()[i];
    }
    return {};
  }

 private:
  ElemType to_ = ElemType::f32;
  DType dtype_ = DType::f32;
};

// ---- broadcasting binary and variadic ops ----

enum class BinKind { add, sub, mul, div, pow, max, min };

template <class T>
T apply_bin(BinKind k, T a, T b) {
  switch (k) {
    case BinKind::add:
      return a + b;
    case BinKind::sub:
      return a - b;
    case BinKind::mul:
      return a * b;
    case BinKind::div:
      return a / b;  // integer zero divisors are rejected before the loop
    case BinKind::pow:
      return static_cast<T>(std::pow(static_cast<double>(a), static_cast<double>(b)));
    case BinKind::max:
      return a > b || a != a ? a : b;  // NaN propagates as in numpy
    case BinKind::min:
      return a < b || a != a ? a : b;
  }
  return a;
}

// out[i] = f(a[..], b[..]) with numpy broadcasting of a and b to out's shape; sa and sb are
// broadcast_strides of a and b against out.
template <class T, BinKind K>
void broadcast_binary(ThreadPool& pool, const Tensor& a, const std::vector<int64_t>& sa, const Tensor& b,
                      const std::vector<int64_t>& sb, Tensor& out) {
  const T* pa = data_of<T>(a);
  const T* pb = data_of<T>(b);
  T* po = data_of<T>(out);
  int64_t n = out.numel();
  if (a.shape() == out.shape() && b.shape() == out.shape()) {
    for_chunks(pool, n, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) po[i] = apply_bin<T>(K, pa[i], pb[i]);
    });
    return;
  }
  const Shape& os = out.shape();
  int rank = static_cast<int>(os.size());
  int64_t inner = rank ? os[rank - 1] : 1;
  int64_t rows = inner ? n / inner : 0;
  int64_t ia_step = rank ? sa[rank - 1] : 0, ib_step = rank ? sb[rank - 1] : 0;
  auto do_rows = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t ia = 0, ib = 0, rem = r;
      for (int d = rank - 2; d >= 0; --d) {
        int64_t idx = rem % os[d];
        rem /= os[d];
        ia += idx * sa[d];
        ib += idx * sb[d];
      }
      T* row = po + r * inner;
      for (int64_t i = 0; i < inner; ++i)
        row[i] = apply_bin<T>(K, pa[ia + i * ia_step], pb[ib + i * ib_step]);
    }
  };
  if (n < kParallelElements)
    do_rows(0, rows);
  else
    pool.parallel_range(rows, std::max<int64_t>(1, kParallelElements / 4 / std::max<int64_t>(inner, 1)),
                        do_rows);
}

template <BinKind K>
class BroadcastOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    bool variadic = K == BinKind::max || K == BinKind::min;
    SP_RETURN_IF_ERROR(expect_inputs(in, variadic ? 1 : 2, variadic ? 64 : 2));
    Shape shape = in[0].shape;
    for (size_t i = 1; i < in.size(); ++i) {
      if (in[i].dtype != in[0].dtype)
        return fail("inputs have different types ({} and {})", dtype_name(in[0].dtype),
                    dtype_name(in[i].dtype));
      auto b = broadcast_shapes(shape, in[i].shape);
      if (!b) return fail("shapes {} and {} do not broadcast", shape_str(shape), shape_str(in[i].shape));
      shape = *b;
    }
    strides_.clear();
    for (const auto& d : in) strides_.push_back(broadcast_strides(d.shape, shape));
    out_strides_ = broadcast_strides(shape, shape);
    out = {ValueDesc{in[0].dtype, shape}};
    return {};
  }
  Status run(const RunArgs& a) override {
    Tensor& out = *a.out[0];
    return dispatch_dtype(out.dtype(), [&]<class T>() -> Status {
      if (a.in.size() == 1) {
        std::copy_n(data_of<T>(*a.in[0]), out.numel(), data_of<T>(out));
        return {};
      }
      if constexpr (std::is_same_v<T, int64_t> && K == BinKind::div) {
        const int64_t* d = a.in[1]->i64_data();
        for (int64_t i = 0; i < a.in[1]->numel(); ++i)
          if (d[i] == 0) return fail("integer division by zero");
      }
      if (squares(*a.in[0], *a.in[1], out)) {
        const T* x = data_of<T>(*a.in[0]);
        T* y = data_of<T>(out);
        for_chunks(a.pool, out.numel(), [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) y[i] = x[i] * x[i];
        });
      } else {
        broadcast_binary<T, K>(a.pool, *a.in[0], strides_[0], *a.in[1], strides_[1], out);
      }
      for (size_t i = 2; i < a.in.size(); ++i)
        broadcast_binary<T, K>(a.pool, out, out_strides_, *a.in[i], strides_[i], out);
      if constexpr (std::is_same_v<T, float>) {
        if (activation_.none()) return {};
        for_chunks(a.pool, out.numel(),
                   [&](int64_t b, int64_t e) { activation_.apply(out.f32_data() + b, e - b); });
      }
      return {};
    });
  }

 private:
  // Pow(x, 2) as a product (what pow computes in double, rounded, is the correctly rounded square).
  static bool squares(const Tensor& x, const Tensor& exponent, const Tensor& out) {
    if constexpr (K != BinKind::pow) return false;
    if (exponent.numel() != 1 || x.shape() != out.shape() || exponent.dtype() != DType::f32) return false;
    return exponent.f32_data()[0] == 2.0f;
  }

  std::vector<std::vector<int64_t>> strides_;  // per input, against the output shape
  std::vector<int64_t> out_strides_;
};

enum class CmpKind { equal, less, greater };

// Equal, Less, Greater: broadcasting comparison giving 0/1 as int64 (ONNX bool).
template <CmpKind K>
class CompareOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 2, 2));
    if (in[0].dtype != in[1].dtype) return fail("inputs have different types");
    auto shape = broadcast_shapes(in[0].shape, in[1].shape);
    if (!shape)
      return fail("shapes {} and {} do not broadcast", shape_str(in[0].shape), shape_str(in[1].shape));
    st_ = {broadcast_strides(in[0].shape, *shape), broadcast_strides(in[1].shape, *shape)};
    out = {ValueDesc{DType::i64, *shape}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const Shape& os = a.out[0]->shape();
    const auto& st = st_;
    int64_t* y = a.out[0]->i64_data();
    dispatch_dtype(a.in[0]->dtype(), [&]<class T>() {
      const T* p = data_of<T>(*a.in[0]);
      const T* q = data_of<T>(*a.in[1]);
      for_each_broadcast<2>(os, st, [&](int64_t i, const std::array<int64_t, 2>& o) {
        T u = p[o[0]], v = q[o[1]];
        y[i] = K == CmpKind::equal ? u == v : (K == CmpKind::less ? u < v : u > v);
      });
    });
    return {};
  }

 private:
  std::array<std::vector<int64_t>, 2> st_;
};

// Where(cond, x, y): x where cond is non-zero, else y, with broadcasting of all three.
class WhereOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 3, 3));
    if (in[1].dtype != in[2].dtype) return fail("X and Y have different types");
    auto s = broadcast_shapes(in[0].shape, in[1].shape);
    if (s) s = broadcast_shapes(*s, in[2].shape);
    if (!s) return fail("condition, X and Y shapes do not broadcast");
    for (int k = 0; k < 3; ++k) st_[k] = broadcast_strides(in[k].shape, *s);
    out = {ValueDesc{in[1].dtype, *s}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const Shape& os = a.out[0]->shape();
    const auto& st = st_;
    const Tensor& cond = *a.in[0];
    dispatch_dtype(a.out[0]->dtype(), [&]<class T>() {
      const T* x = data_of<T>(*a.in[1]);
      const T* y = data_of<T>(*a.in[2]);
      T* out = data_of<T>(*a.out[0]);
      for_each_broadcast<3>(os, st, [&](int64_t i, const std::array<int64_t, 3>& o) {
        bool c = cond.dtype() == DType::i64 ? cond.i64_data()[o[0]] != 0 : cond.f32_data()[o[0]] != 0;
        out[i] = c ? x[o[1]] : y[o[2]];
      });
    });
    return {};
  }

 private:
  std::array<std::vector<int64_t>, 3> st_;
};

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  r["Relu"] = make_op<UnaryOp<ReluFn>>;
  r["LeakyRelu"] = make_op<UnaryOp<LeakyReluFn>>;
  r["Sigmoid"] = make_op<UnaryOp<SigmoidFn>>;
  r["Tanh"] = make_op<UnaryOp<TanhFn>>;
  r["Exp"] = make_op<UnaryOp<ExpFn>>;
  r["Log"] = make_op<UnaryOp<LogFn>>;
  r["Sqrt"] = make_op<UnaryOp<SqrtFn>>;
  r["Neg"] = make_op<UnaryOp<NegFn>>;
  r["Abs"] = make_op<UnaryOp<AbsFn>>;
  r["Clip"] = make_op<ClipOp>;
  r["Cast"] = make_op<CastOp>;
  r["Add"] = make_op<BroadcastOp<BinKind::add>>;
  r["Sub"] = make_op<BroadcastOp<BinKind::sub>>;
  r["Mul"] = make_op<BroadcastOp<BinKind::mul>>;
  r["Div"] = make_op<BroadcastOp<BinKind::div>>;
  r["Pow"] = make_op<BroadcastOp<BinKind::pow>>;
  r["Max"] = make_op<BroadcastOp<BinKind::max>>;
  r["Min"] = make_op<BroadcastOp<BinKind::min>>;
  r["Equal"] = make_op<CompareOp<CmpKind::equal>>;
  r["Less"] = make_op<CompareOp<CmpKind::less>>;
  r["Greater"] = make_op<CompareOp<CmpKind::greater>>;
  r["Where"] = make_op<WhereOp>;
}

}  // namespace sparrow
