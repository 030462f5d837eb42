// Data-movement and shape operators: Shape, Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
// Concat, Slice, Split, Gather, Pad, Expand, ConstantOfShape, Identity, Dropout.
// All work on float32 and int64 alike.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "engine/op.h"
#include "engine/ops/sparse_ops.h"

namespace sparrow {

namespace {

std::vector<int64_t> row_major_strides(const Shape& s) {
  std::vector<int64_t> strides(s.size(), 1);
  for (int i = static_cast<int>(s.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * s[i + 1];
  return strides;
}

// dst[out index] = src[base + sum(index[d] * src_strides[d])] over every index of out_shape.
template <class T>
void strided_copy(const T* src, int64_t base, const Shape& out_shape, const std::vector<int64_t>& src_strides,
                  T* dst) {
  int rank = static_cast<int>(out_shape.size());
  int64_t n = shape_numel(out_shape);
  if (rank == 0) {
    if (n) dst[0] = src[base];
    return;
  }
  int64_t inner = out_shape[rank - 1], inner_stride = src_strides[rank - 1];
  if (inner == 0) return;
  for (int64_t r = 0; r < n / inner; ++r) {
    int64_t off = base, rem = r;
    for (int d = rank - 2; d >= 0; --d) {
      off += (rem % out_shape[d]) * src_strides[d];
      rem /= out_shape[d];
    }
    T* row = dst + r * inner;
    for (int64_t i = 0; i < inner; ++i) row[i] = src[off + i * inner_stride];
  }
}

void copy_tensor_data(const Tensor& src, Tensor& dst) {
  std::memcpy(dst.raw(), src.raw(), src.bytes());
}

// ---- Shape ----
class ShapeOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(start_, node_.attr_int("start", 0));
    SP_ASSIGN_OR_RETURN(end_, node_.attr_int("end", INT64_MAX));
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    int64_t r = static_cast<int64_t>(in[0].shape.size());
    auto clamp = [r](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + r : v, 0, r); };
    b_ = clamp(start_);
    e_ = std::max(b_, clamp(end_));
    out = {ValueDesc{DType::i64, {e_ - b_}}};
    return {};
  }
  Status run(const RunArgs& a) override {
    for (int64_t i = b_; i < e_; ++i) a.out[0]->i64_data()[i - b_] = a.in[0]->shape()[i];
    return {};
  }
  bool depends_only_on_shapes() const override { return true; }

 private:
  int64_t start_ = 0, end_ = INT64_MAX, b_ = 0, e_ = 0;
};

// ---- ops whose output is the input's data under a new shape ----
class ReshapeLikeOp : public Op {
 public:
  using Op::Op;
  bool output_is_view() const override { return true; }
  Status run(const RunArgs& a) override {
    copy_tensor_data(*a.in[0], *a.out[0]);
    return {};
  }
};

class ReshapeOp : public ReshapeLikeOp {
 public:
  using ReshapeLikeOp::ReshapeLikeOp;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    std::vector<int64_t> target;
    if (opset_ < 5) {
      SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
      SP_ASSIGN_OR_RETURN(target, node_.attr_ints("shape"));
    } else {
      SP_RETURN_IF_ERROR(expect_inputs(in, 2, 2));
      SP_ASSIGN_OR_RETURN(target, constant_ints(in, 1, "shape"));
    }
    SP_ASSIGN_OR_RETURN(int64_t allowzero, node_.attr_int("allowzero", 0));
    const Shape& x = in[0].shape;
    int64_t known = 1;
    int infer_at = -1;
    for (size_t i = 0; i < target.size(); ++i) {
      if (target[i] == 0 && !allowzero) {
        if (i >= x.size())
          return fail("shape entry {} is 0 (copy) but the input {} has no such dim", i, shape_str(x));
        target[i] = x[i];
      }
      if (target[i] == -1) {
        if (infer_at >= 0) return fail("shape {} has more than one -1", shape_str(target));
        infer_at = static_cast<int>(i);
      } else if (target[i] < 0) {
        return fail("shape {} has a negative entry", shape_str(target));
      } else {
        if (target[i] > kMaxTensorElements ||
            known * target[i] > kMaxTensorElements)  // no overflow: both <= 2^31
          return fail("shape {} has more than {} elements", shape_str(target), kMaxTensorElements);
        known *= target[i];
      }
    }
    int64_t n = shape_numel(x);
    if (infer_at >= 0) {
      if (known == 0 || n % known != 0)
        return fail("cannot reshape {} into {}", shape_str(x), shape_str(target));
      target[infer_at] = n / known;
    }
    if (shape_numel(target) != n)
      return fail("cannot reshape {} ({} values) into {}", shape_str(x), n, shape_str(target));
    out = {ValueDesc{in[0].dtype, target}};
    return {};
  }
};

class FlattenOp : public ReshapeLikeOp {
 public:
  using ReshapeLikeOp::ReshapeLikeOp;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    const Shape& x = in[0].shape;
    int r = static_cast<int>(x.size());
    SP_ASSIGN_OR_RETURN(int64_t axis, node_.attr_int("axis", 1));
    if (axis < -r || axis > r) return fail("axis {} is out of range for rank {}", axis, r);
    if (axis < 0) axis += r;
    int64_t outer = 1;
    for (int i = 0; i < axis; ++i) outer *= x[i];
    int64_t total = shape_numel(x);
    out = {ValueDesc{in[0].dtype, {outer, outer ? total / outer : 0}}};
    return {};
  }
};

// Squeeze and Unsqueeze: axes from the attribute (opset < 13) or the second input.
Result<std::vector<int64_t>> axes_of(const Op& op, const Node& node, int64_t opset,
                                     std::span<const ValueDesc> in, bool required, bool& given) {
  given = true;
  if (opset < 13) {
    if (node.attrs.count("axes")) return node.attr_ints("axes");
  } else if (in.size() > 1 && in[1].present) {
    if (!in[1].constant) return errorf("{}: input 'axes' must be a constant", node.describe());
    std::vector<int64_t> v(static_cast<size_t>(in[1].constant->numel()));
    for (size_t i = 0; i < v.size(); ++i) v[i] = in[1].constant->i64_data()[i];
    return v;
  }
  given = false;
  if (required) return errorf("{}: 'axes' is required", node.describe());
  return std::vector<int64_t>{};
}

class SqueezeOp : public ReshapeLikeOp {
 public:
  using ReshapeLikeOp::ReshapeLikeOp;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 2));
    bool given = false;
    SP_ASSIGN_OR_RETURN(auto axes, axes_of(*this, node_, opset_, in, false, given));
    const Shape& x = in[0].shape;
    std::vector<bool> drop(x.size(), false);
    for (int64_t a : axes) {
      SP_ASSIGN_OR_RETURN(int ax, normalize_axis(a, static_cast<int>(x.size())));
      if (x[ax] != 1) return fail("cannot squeeze axis {} of size {} in {}", a, x[ax], shape_str(x));
      drop[ax] = true;
    }
    Shape y;
    for (size_t i = 0; i < x.size(); ++i)
      if (!(given ? drop[i] : x[i] == 1)) y.push_back(x[i]);
    out = {ValueDesc{in[0].dtype, y}};
    return {};
  }
};

class UnsqueezeOp : public ReshapeLikeOp {
 public:
  using ReshapeLikeOp::ReshapeLikeOp;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 2));
    bool given = false;
    SP_ASSIGN_OR_RETURN(auto axes, axes_of(*this, node_, opset_, in, true, given));
    const Shape& x = in[0].shape;
    int r = static_cast<int>(x.size() + axes.size());
    std::vector<bool> is_new(static_cast<size_t>(r), false);
    for (int64_t a : axes) {
      SP_ASSIGN_OR_RETURN(int ax, normalize_axis(a, r));
      if (is_new[ax]) return fail("axis {} is repeated", a);
      is_new[ax] = true;
    }
    Shape y;
    size_t next = 0;
    for (int i = 0; i < r; ++i) y.push_back(is_new[i] ? 1 : x[next++]);
    out = {ValueDesc{in[0].dtype, y}};
    return {};
  }
};

// ---- Transpose ----
class TransposeOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    const Shape& x = in[0].shape;
    std::vector<int64_t> rev(x.size());
    std::iota(rev.rbegin(), rev.rend(), 0);
    SP_ASSIGN_OR_RETURN(perm_, node_.attr_ints("perm", rev));
    if (perm_.size() != x.size()) return fail("perm {} does not match rank {}", shape_str(perm_), x.size());
    std::vector<bool> seen(x.size(), false);
    auto in_strides = row_major_strides(x);
    out_shape_.clear();
    src_strides_.clear();
    for (int64_t p : perm_) {
      if (p < 0 || p >= static_cast<int64_t>(x.size()) || seen[p])
        return fail("perm {} is not a permutation", shape_str(perm_));
      seen[p] = true;
      out_shape_.push_back(x[p]);
      src_strides_.push_back(in_strides[p]);
    }
    note_rotation(x, in[0].dtype);
    out = {ValueDesc{in[0].dtype, out_shape_}};
    return {};
  }
  Status run(const RunArgs& a) override {
    if (rotation_rows_ > 0) {
      transpose(a.pool, a.in[0]->f32_data(), rotation_rows_, rotation_cols_, a.out[0]->f32_data());
      return {};
    }
    dispatch_dtype(a.in[0]->dtype(), [&]<class T>() {
      strided_copy<T>(data_of<T>(*a.in[0]), 0, out_shape_, src_strides_, data_of<T>(*a.out[0]));
    });
    return {};
  }

 private:
  // A float permutation that rotates the axes, [k, ..., r-1, 0, ..., k-1], is the transpose of the
  // matrix [x0 * ... * x(k-1), xk * ... * x(r-1)]: it runs on the 8x8-tile transpose.
  void note_rotation(const Shape& x, DType dtype) {
    rotation_rows_ = rotation_cols_ = 0;
    const auto r = static_cast<int64_t>(perm_.size());
    if (dtype != DType::f32 || r < 2 || perm_[0] == 0) return;
    const int64_t k = perm_[0];
    for (int64_t i = 0; i < r; ++i)
      if (perm_[static_cast<size_t>(i)] != (k + i) % r) return;
    rotation_rows_ = 1, rotation_cols_ = 1;
    for (int64_t d = 0; d < r; ++d) (d < k ? rotation_rows_ : rotation_cols_) *= x[static_cast<size_t>(d)];
    if (rotation_rows_ * rotation_cols_ == 0) rotation_rows_ = 0;
  }

  std::vector<int64_t> perm_;
  Shape out_shape_;
  std::vector<int64_t> src_strides_;
  int64_t rotation_rows_ = 0, rotation_cols_ = 0;  // the matrix a rotating perm transposes (rows 0: none)
};

// ---- Concat ----
class ConcatOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    if (in.empty()) return fail("needs at least one input");
    SP_ASSIGN_OR_RETURN(int64_t axis, node_.attr_int("axis"));
    const Shape& first = in[0].shape;
    SP_ASSIGN_OR_RETURN(axis_, normalize_axis(axis, static_cast<int>(first.size())));
    Shape y = first;
    y[axis_] = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const Shape& s = in[i].shape;
      if (!in[i].present || s.size() != first.size() || in[i].dtype != in[0].dtype)
        return fail("input {} {} cannot be concatenated with {}", i, shape_str(s), shape_str(first));
      for (size_t d = 0; d < s.size(); ++d)
        if (static_cast<int>(d) != axis_ && s[d] != first[d])
          return fail("input {} {} differs from {} outside axis {}", i, shape_str(s), shape_str(first),
                      axis_);
      y[axis_] += s[axis_];
    }
    out = {ValueDesc{in[0].dtype, y}};
    plan_pieces(in, y);
    return {};
  }
  Status run(const RunArgs& a) override {
    auto* dst = static_cast<char*>(a.out[0]->raw());
    const int64_t per_outer = first_piece_.back(), pieces = outer_ * per_outer;
    auto copy = [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t o = p / per_outer, q = p % per_outer;
        const size_t t = static_cast<size_t>(std::upper_bound(first_piece_.begin(), first_piece_.end(), q) -
                                             first_piece_.begin() - 1);
        const int64_t at = (q - first_piece_[t]) * kPieceBytes, chunk = chunk_bytes_[t];
        std::memcpy(dst + o * out_row_bytes_ + offset_bytes_[t] + at,
                    static_cast<const char*>(a.in[t]->raw()) + o * chunk + at,
                    static_cast<size_t>(std::min(kPieceBytes, chunk - at)));
      }
    };
    if (outer_ * out_row_bytes_ >= kParallelBytes)
      a.pool.parallel_range(pieces, 1, copy);
    else
      copy(0, pieces);
    return {};
  }

 private:
  // Each input's block of bytes per index before the axis is copied in pieces of at most
  // kPieceBytes, so that the threads can share large ones; below kParallelBytes of output, waking
  // them costs more than the copy.
  static constexpr int64_t kPieceBytes = 64 * 1024;
  static constexpr int64_t kParallelBytes = 256 * 1024;

  // The copies' geometry for these shapes (planned here, so that run does not allocate).
  void plan_pieces(std::span<const ValueDesc> in, const Shape& y) {
    int64_t inner = dtype_size(in[0].dtype);
    outer_ = 1;
    for (int d = 0; d < axis_; ++d) outer_ *= y[d];
    for (size_t d = axis_ + 1; d < y.size(); ++d) inner *= y[d];
    chunk_bytes_.clear();
    offset_bytes_.clear();
    first_piece_.assign(1, 0);
    out_row_bytes_ = 0;
    for (const ValueDesc& v : in) {
      const int64_t chunk = v.shape[axis_] * inner;
      chunk_bytes_.push_back(chunk);
      offset_bytes_.push_back(out_row_bytes_);
      out_row_bytes_ += chunk;
      first_piece_.push_back(first_piece_.back() + (chunk + kPieceBytes - 1) / kPieceBytes);
    }
  }

  int axis_ = 0;
  int64_t outer_ = 1, out_row_bytes_ = 0;
  // Per input: its bytes per index before the axis, and where they start in the output's.
  std::vector<int64_t> chunk_bytes_, offset_bytes_;
  // Per input: the number of its first piece within one index before the axis; then the total.
  std::vector<int64_t> first_piece_;
};

// ---- Split ----
class SplitOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 2));
    const Shape& x = in[0].shape;
    SP_ASSIGN_OR_RETURN(int64_t axis, node_.attr_int("axis", 0));
    SP_ASSIGN_OR_RETURN(axis_, normalize_axis(axis, static_cast<int>(x.size())));
    size_t parts = node_.outputs.size();
    if (opset_ < 13) {
      SP_ASSIGN_OR_RETURN(sizes_, node_.attr_ints("split", std::vector<int64_t>{}));
    } else if (in.size() > 1 && in[1].present) {
      SP_ASSIGN_OR_RETURN(sizes_, constant_ints(in, 1, "split"));
    } else {
      sizes_.clear();
    }
    if (sizes_.empty()) {
      if (x[axis_] % static_cast<int64_t>(parts) != 0)
        return fail("axis {} of size {} does not split evenly into {} outputs", axis_, x[axis_], parts);
      sizes_.assign(parts, x[axis_] / static_cast<int64_t>(parts));
    }
    int64_t total = 0;
    for (int64_t s : sizes_) total += s < 0 ? INT64_MIN / 4 : s;
    if (sizes_.size() != parts || total != x[axis_])
      return fail("split sizes {} do not match {} outputs over axis size {}", shape_str(sizes_), parts,
                  x[axis_]);
    out.clear();
    for (int64_t s : sizes_) {
      Shape y = x;
      y[axis_] = s;
      out.push_back(ValueDesc{in[0].dtype, y});
    }
    return {};
  }
  Status run(const RunArgs& a) override {
    const Shape& x = a.in[0]->shape();
    int64_t outer = 1, inner = dtype_size(a.in[0]->dtype());
    for (int d = 0; d < axis_; ++d) outer *= x[d];
    for (size_t d = axis_ + 1; d < x.size(); ++d) inner *= x[d];
    const auto* src = static_cast<const char*>(a.in[0]->raw());
    for (int64_t o = 0; o < outer; ++o)
      for (size_t k = 0; k < sizes_.size(); ++k) {
        int64_t chunk = sizes_[k] * inner;
        if (a.out[k])
          std::memcpy(static_cast<char*>(a.out[k]->raw()) + o * chunk, src, static_cast<size_t>(chunk));
        src += chunk;
      }
    return {};
  }

 private:
  int axis_ = 0;
  std::vector<int64_t> sizes_;
};

// ---- Slice ----
class SliceOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    std::vector<int64_t> starts, ends, axes, steps;
    if (opset_ < 10) {
      SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
      SP_ASSIGN_OR_RETURN(starts, node_.attr_ints("starts"));
      SP_ASSIGN_OR_RETURN(ends, node_.attr_ints("ends"));
      SP_ASSIGN_OR_RETURN(axes, node_.attr_ints("axes", std::vector<int64_t>{}));
    } else {
      SP_RETURN_IF_ERROR(expect_inputs(in, 3, 5));
      SP_ASSIGN_OR_RETURN(starts, constant_ints(in, 1, "starts"));
      SP_ASSIGN_OR_RETURN(ends, constant_ints(in, 2, "ends"));
      if (in.size() > 3 && in[3].present) {
        SP_ASSIGN_OR_RETURN(axes, constant_ints(in, 3, "axes"));
      }
      if (in.size() > 4 && in[4].present) {
        SP_ASSIGN_OR_RETURN(steps, constant_ints(in, 4, "steps"));
      }
    }
    const Shape& x = in[0].shape;
    int r = static_cast<int>(x.size());
    if (axes.empty())
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
      return fail("starts, ends, axes and steps must have the same length");
    out_shape_ = x;
    base_ = 0;
    auto in_strides = row_major_strides(x);
    src_strides_ = in_strides;
    for (size_t i = 0; i < starts.size(); ++i) {
      SP_ASSIGN_OR_RETURN(int ax, normalize_axis(axes[i], r));
      int64_t dim = x[ax], step = steps[i];
      if (step == 0) return fail("step 0 on axis {}", ax);
      // A step longer than the axis selects at most one element, as a step of the axis' length does;
      // clamping keeps the arithmetic below from overflowing.
      step = std::clamp<int64_t>(step, -std::max<int64_t>(dim, 1), std::max<int64_t>(dim, 1));
      int64_t s = starts[i] < 0 ? starts[i] + dim : starts[i];
      int64_t e = ends[i] < 0 ? ends[i] + dim : ends[i];
      if (step > 0) {
        s = std::clamp<int64_t>(s, 0, dim);
        e = std::clamp<int64_t>(e, 0, dim);
      } else {
        s = std::clamp<int64_t>(s, 0, dim - 1);
        e = std::clamp<int64_t>(e, -1, dim - 1);
      }
      int64_t n = step > 0 ? (e - s + step - 1) / step : (s - e + (-step) - 1) / (-step);
      out_shape_[ax] = std::max<int64_t>(0, n);
      if (out_shape_[ax] > 0) base_ += s * in_strides[ax];
      src_strides_[ax] = in_strides[ax] * step;
    }
    out = {ValueDesc{in[0].dtype, out_shape_}};
    return {};
  }
  Status run(const RunArgs& a) override {
    dispatch_dtype(a.in[0]->dtype(), [&]<class T>() {
      strided_copy<T>(data_of<T>(*a.in[0]), base_, out_shape_, src_strides_, data_of<T>(*a.out[0]));
    });
    return {};
  }

 private:
  Shape out_shape_;
  int64_t base_ = 0;
  std::vector<int64_t> src_strides_;
};

// ---- Gather ----
class GatherOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 2, 2));
    if (in[1].dtype != DType::i64) return fail("indices must be integers");
    const Shape& x = in[0].shape;
    SP_ASSIGN_OR_RETURN(int64_t axis, node_.attr_int("axis", 0));
    SP_ASSIGN_OR_RETURN(axis_, normalize_axis(axis, static_cast<int>(x.size())));
    Shape y(x.begin(), x.begin() + axis_);
    y.insert(y.end(), in[1].shape.begin(), in[1].shape.end());
    y.insert(y.end(), x.begin() + axis_ + 1, x.end());
    out = {ValueDesc{in[0].dtype, y}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const Tensor& x = *a.in[0];
    const Tensor& idx = *a.in[1];
    int64_t outer = 1, inner = dtype_size(x.dtype()), dim = x.dim(axis_);
    for (int d = 0; d < axis_; ++d) outer *= x.dim(d);
    for (int d = axis_ + 1; d < x.rank(); ++d) inner *= x.dim(d);
    const auto* src = static_cast<const char*>(x.raw());
    auto* dst = static_cast<char*>(a.out[0]->raw());
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < idx.numel(); ++k) {
        int64_t i = idx.i64_data()[k];
        if (i < -dim || i >= dim)
          return fail("index {} is out of range for axis {} of size {}", i, axis_, dim);
        if (i < 0) i += dim;
        std::memcpy(dst, src + (o * dim + i) * inner, static_cast<size_t>(inner));
        dst += inner;
      }
    return {};
  }

 private:
  int axis_ = 0;
};

// ---- Pad ----
class PadOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    SP_ASSIGN_OR_RETURN(mode_, node_.attr_string("mode", std::string("constant")));
    if (mode_ != "constant" && mode_ != "reflect" && mode_ != "edge") return fail("unknown mode '{}'", mode_);
    if (opset_ < 11) {
      SP_ASSIGN_OR_RETURN(value_, node_.attr_float("value", 0.0f));
    }
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    if (opset_ < 11) {
      SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
      SP_ASSIGN_OR_RETURN(pads_, node_.attr_ints(opset_ < 2 ? "paddings" : "pads"));
    } else {
      SP_RETURN_IF_ERROR(expect_inputs(in, 2, 3));
      SP_ASSIGN_OR_RETURN(pads_, constant_ints(in, 1, "pads"));
    }
    const Shape& x = in[0].shape;
    size_t r = x.size();
    if (pads_.size() != 2 * r)
      return fail("pads has {} values, expected {} for rank {}", pads_.size(), 2 * r, r);
    out_shape_ = x;
    for (size_t d = 0; d < r; ++d) {
      if (pads_[d] < 0 || pads_[d + r] < 0) return fail("negative pads are not supported");
      if (mode_ == "reflect" && (pads_[d] >= x[d] || pads_[d + r] >= x[d]) && (pads_[d] || pads_[d + r]))
        return fail("reflect padding {} on axis {} needs an input larger than the pad, has {}", pads_[d], d,
                    x[d]);
      if (mode_ == "edge" && x[d] == 0 && (pads_[d] || pads_[d + r]))
        return fail("edge padding of an empty axis");
      out_shape_[d] = x[d] + pads_[d] + pads_[d + r];
    }
    in_strides_ = row_major_strides(x);
    out = {ValueDesc{in[0].dtype, out_shape_}};
    return {};
  }
  Status run(const RunArgs& a) override {
    dispatch_dtype(a.in[0]->dtype(), [&]<class T>() { pad<T>(a); });
    return {};
  }

 private:
  // Maps an output coordinate to an input coordinate on one axis; -1 means "use the constant".
  int64_t source_index(int64_t o, int64_t pad_begin, int64_t dim) const {
    int64_t i = o - pad_begin;
    if (i >= 0 && i < dim) return i;
    if (mode_ == "constant") return -1;
    if (mode_ == "edge") return std::clamp<int64_t>(i, 0, dim - 1);
    if (dim == 1) return 0;
    int64_t period = 2 * (dim - 1);
    i = ((i % period) + period) % period;
    return i < dim ? i : period - i;
  }
  template <class T>
  void pad(const RunArgs& a) {
    const Tensor& x = *a.in[0];
    T fill = static_cast<T>(value_);
    if (a.in.size() > 2 && a.in[2] && a.in[2]->numel() > 0) fill = data_of<T>(*a.in[2])[0];
    T* y = data_of<T>(*a.out[0]);
    const T* src = data_of<T>(x);
    int rank = x.rank();
    const auto& strides = in_strides_;
    int64_t n = shape_numel(out_shape_);
    for (int64_t k = 0; k < n; ++k) {
      int64_t rem = k, off = 0;
      bool constant = false;
      for (int d = rank - 1; d >= 0; --d) {
        int64_t o = rem % out_shape_[d];
        rem /= out_shape_[d];
        int64_t i = source_index(o, pads_[d], x.dim(d));
        if (i < 0)
          constant = true;
        else
          off += i * strides[d];
      }
      y[k] = constant ? fill : src[off];
    }
  }

  std::string mode_;
  float value_ = 0;
  std::vector<int64_t> pads_;
  Shape out_shape_;
  std::vector<int64_t> in_strides_;
};

// ---- Expand ----
class ExpandOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 2, 2));
    SP_ASSIGN_OR_RETURN(auto target, constant_ints(in, 1, "shape"));
    auto y = broadcast_shapes(in[0].shape, target);
    if (!y) return fail("input {} does not broadcast to {}", shape_str(in[0].shape), shape_str(target));
    out_shape_ = *y;
    src_strides_ = broadcast_strides(in[0].shape, out_shape_);
    out = {ValueDesc{in[0].dtype, out_shape_}};
    return {};
  }
  Status run(const RunArgs& a) override {
    dispatch_dtype(a.in[0]->dtype(), [&]<class T>() {
      strided_copy<T>(data_of<T>(*a.in[0]), 0, out_shape_, src_strides_, data_of<T>(*a.out[0]));
    });
    return {};
  }

 private:
  Shape out_shape_;
  std::vector<int64_t> src_strides_;
};

// ---- Tile ----
class TileOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 2, 2));
    SP_ASSIGN_OR_RETURN(auto repeats, constant_ints(in, 1, "repeats"));
    const Shape& x = in[0].shape;
    if (repeats.size() != x.size())
      return fail("repeats has {} values for rank {}", repeats.size(), x.size());
    out_shape_ = x;
    for (size_t d = 0; d < x.size(); ++d) {
      if (repeats[d] < 0) return fail("negative repeat {}", repeats[d]);
      out_shape_[d] = x[d] * repeats[d];
    }
    in_strides_ = row_major_strides(x);
    out = {ValueDesc{in[0].dtype, out_shape_}};
    return {};
  }
  Status run(const RunArgs& a) override {
    const Tensor& x = *a.in[0];
    const auto& strides = in_strides_;
    int rank = x.rank();
    dispatch_dtype(x.dtype(), [&]<class T>() {
      const T* src = data_of<T>(x);
      T* dst = data_of<T>(*a.out[0]);
      for (int64_t k = 0; k < a.out[0]->numel(); ++k) {
        int64_t rem = k, off = 0;
        for (int d = rank - 1; d >= 0; --d) {
          off += ((rem % out_shape_[d]) % x.dim(d)) * strides[d];
          rem /= out_shape_[d];
        }
        dst[k] = src[off];
      }
    });
    return {};
  }

 private:
  Shape out_shape_;
  std::vector<int64_t> in_strides_;
};

// ---- ConstantOfShape ----
class ConstantOfShapeOp : public Op {
 public:
  using Op::Op;
  Status parse() override {
    if (node_.attrs.count("value")) {
      SP_ASSIGN_OR_RETURN(value_, node_.attr_tensor("value"));
      if (value_.numel() != 1) return fail("attribute 'value' must hold one element");
    } else {
      value_ = Tensor::scalar_f32(0.0f);
    }
    return {};
  }
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    SP_RETURN_IF_ERROR(expect_inputs(in, 1, 1));
    SP_ASSIGN_OR_RETURN(auto shape, constant_ints(in, 0, "input"));
    if (shape_numel(shape) < 0) return fail("shape {} is negative or too large", shape_str(shape));
    out = {ValueDesc{value_.dtype(), shape}};
    return {};
  }
  Status run(const RunArgs& a) override {
    dispatch_dtype(value_.dtype(), [&]<class T>() {
      std::fill_n(data_of<T>(*a.out[0]), a.out[0]->numel(), data_of<T>(value_)[0]);
    });
    return {};
  }

 private:
  Tensor value_;
};

// ---- Identity / Dropout (kept only where the simplifier could not remove them) ----
class PassThroughOp : public Op {
 public:
  using Op::Op;
  Status infer(std::span<const ValueDesc> in, std::vector<ValueDesc>& out) override {
    if (in.empty() || !in[0].present) return fail("input 0 is missing");
    out = {ValueDesc{in[0].dtype, in[0].shape}};
    if (node_.outputs.size() > 1) out.push_back(ValueDesc{DType::i64, in[0].shape});  // Dropout mask
    return {};
  }
  bool output_is_view() const override { return node_.outputs.size() == 1; }
  Status run(const RunArgs& a) override {
    copy_tensor_data(*a.in[0], *a.out[0]);
    if (a.out.size() > 1 && a.out[1]) std::fill_n(a.out[1]->i64_data(), a.out[1]->numel(), 1);
    return {};
  }
};

}  // namespace

void register_shape_ops(OpRegistry& r) {
  r["Shape"] = make_op<ShapeOp>;
  r["Reshape"] = make_op<ReshapeOp>;
  r["Flatten"] = make_op<FlattenOp>;
  r["Squeeze"] = make_op<SqueezeOp>;
  r["Unsqueeze"] = make_op<UnsqueezeOp>;
  r["Transpose"] = make_op<TransposeOp>;
  r["Concat"] = make_op<ConcatOp>;
  r["Split"] = make_op<SplitOp>;
  r["Slice"] = make_op<SliceOp>;
  r["Gather"] = make_op<GatherOp>;
  r["Pad"] = make_op<PadOp>;
  r["Expand"] = make_op<ExpandOp>;
  r["Tile"] = make_op<TileOp>;
  r["ConstantOfShape"] = make_op<ConstantOfShapeOp>;
  r["Identity"] = make_op<PassThroughOp>;
  r["Dropout"] = make_op<PassThroughOp>;
}

}  // namespace sparrow
