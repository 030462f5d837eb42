// Tensor: a dense, contiguous, row-major array of float32 or int64 with 64-byte aligned storage,
// owned, borrowed (a view) or mapped from a file (adopt_mapping).
// float32 carries all numerical work; int64 carries shapes, indices and other integer data that
// ONNX models compute with. Copies are deep; moves are cheap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sparrow {

enum class DType : uint8_t { f32, i64 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

using Shape = std::vector<int64_t>;

// Largest number of elements a single tensor may hold (2^31); inputs that imply more are rejected.
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 31;

// Number of elements of a shape (1 for a scalar); -1 if a dimension is negative or the product
// exceeds kMaxTensorElements.
int64_t shape_numel(const Shape& shape);
// "[2, 3, 4]"
std::string shape_str(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;  // float32, shape [0]
  // Zero-filled tensor. Requires shape_numel(shape) >= 0.
  Tensor(DType dtype, Shape shape);
  static Tensor f32(Shape shape, std::span<const float> values);
  static Tensor i64(Shape shape, std::span<const int64_t> values);
  static Tensor scalar_f32(float v) { return f32({}, std::span<const float>(&v, 1)); }
  // A tensor over memory it does not own: `data` holds at least shape_numel(shape) elements, is
  // 64-byte aligned and outlives the view, or is null until the view is replaced by one over real
  // memory (the shape is readable meanwhile). A copy of a view owns its data.
  static Tensor view(DType dtype, Shape shape, void* data);
  // A tensor that owns a region `mapping` of `mapping_bytes` bytes made by mmap (POSIX): its data is
  // at mapping + offset (64-byte aligned, holding shape_numel(shape) elements), and the region is
  // unmapped when the tensor is destroyed. A copy owns ordinary memory.
  static Tensor adopt_mapping(DType dtype, Shape shape, void* mapping, size_t mapping_bytes, size_t offset);

  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int axis) const { return shape_[static_cast<size_t>(axis)]; }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }

  float* f32_data();
  const float* f32_data() const;
  int64_t* i64_data();
  const int64_t* i64_data() const;
  std::span<float> f32_span() { return {f32_data(), static_cast<size_t>(numel_)}; }
  std::span<const float> f32_span() const { return {f32_data(), static_cast<size_t>(numel_)}; }
  std::span<int64_t> i64_span() { return {i64_data(), static_cast<size_t>(numel_)}; }
  std::span<const int64_t> i64_span() const { return {i64_data(), static_cast<size_t>(numel_)}; }
  // Whether the data lies in a mapping the tensor owns (adopt_mapping).
  bool is_mapping() const { return data_ && data_.get_deleter().mapping_bytes > 0; }
  void* raw() { return data_.get(); }
  const void* raw() const { return data_.get(); }

  // Changes the shape keeping the data; the element count must not change.
  void reshape(Shape shape);
  // Keeps the first `rows` entries along axis 0 (0 <= rows <= dim(0); rank >= 1), in place: the
  // storage and those entries' data stay.
  void keep_leading(int64_t rows);
  // Gives the tensor a new dtype and shape, reusing storage it owns when it is large enough (a
  // mapping is given up for new memory). Contents are unspecified afterwards.
  void reset(DType dtype, Shape shape);

 private:
  struct FreeDeleter {
    // All value-initialized (false, 0) by default-constructed pointers.
    bool borrowed;
    size_t mapping_bytes;   // > 0: the data lies in an mmap'ed region of this size...
    size_t mapping_offset;  // ...this many bytes from its start
    void operator()(std::byte* p) const;
  };
  void allocate(size_t bytes);

  DType dtype_ = DType::f32;
  Shape shape_{0};
  int64_t numel_ = 0;
  size_t capacity_ = 0;
  std::unique_ptr<std::byte, FreeDeleter> data_;
};

}  // namespace sparrow
