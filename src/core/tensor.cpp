#include "sparrow/tensor.h"

#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace sparrow {

namespace {
constexpr size_t kAlignment = 64;
}

size_t dtype_size(DType dtype) {
  return dtype == DType::f32 ? 4 : 8;
}
const char* dtype_name(DType dtype) {
  return dtype == DType::f32 ? "float32" : "int64";
}

int64_t shape_numel(const Shape& shape) {
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t d : shape) {
    if (n > kMaxTensorElements / d) return -1;
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

void Tensor::FreeDeleter::operator()(std::byte* p) const {
  if (mapping_bytes > 0)
    ::munmap(p - mapping_offset, mapping_bytes);
  else if (!borrowed)
    ::operator delete (p, std::align_val_t{kAlignment});
}

void Tensor::allocate(size_t bytes) {
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  void* p = ::operator new (rounded, std::align_val_t{kAlignment});  // throws std::bad_alloc
  std::memset(p, 0, rounded);
  data_ = std::unique_ptr<std::byte, FreeDeleter>(static_cast<std::byte*>(p), FreeDeleter{false, 0, 0});
  capacity_ = rounded;
}

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  numel_ = shape_numel(shape_);
  assert(numel_ >= 0 && "Tensor shape must be validated before construction");
  allocate(bytes());
}

Tensor Tensor::view(DType dtype, Shape shape, void* data) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  assert(t.numel_ >= 0 && "Tensor shape must be validated before construction");
  t.capacity_ = data ? t.bytes() : 0;
  t.data_ = std::unique_ptr<std::byte, FreeDeleter>(static_cast<std::byte*>(data), FreeDeleter{true, 0, 0});
  return t;
}

Tensor Tensor::adopt_mapping(DType dtype, Shape shape, void* mapping, size_t mapping_bytes, size_t offset) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  assert(t.numel_ >= 0 && offset % kAlignment == 0 && offset + t.bytes() <= mapping_bytes);
  t.capacity_ = t.bytes();
  t.data_ = std::unique_ptr<std::byte, FreeDeleter>(static_cast<std::byte*>(mapping) + offset,
                                                    FreeDeleter{false, mapping_bytes, offset});
  return t;
}

Tensor Tensor::f32(Shape shape, std::span<const float> values) {
  Tensor t(DType::f32, std::move(shape));
  assert(values.size() == static_cast<size_t>(t.numel()));
  std::memcpy(t.raw(), values.data(), t.bytes());
  return t;
}

Tensor Tensor::i64(Shape shape, std::span<const int64_t> values) {
  Tensor t(DType::i64, std::move(shape));
  assert(values.size() == static_cast<size_t>(t.numel()));
  std::memcpy(t.raw(), values.data(), t.bytes());
  return t;
}

Tensor::Tensor(const Tensor& other) : dtype_(other.dtype_), shape_(other.shape_), numel_(other.numel_) {
  allocate(bytes());
  if (other.data_) std::memcpy(data_.get(), other.data_.get(), bytes());
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) {
    Tensor copy(other);
    *this = std::move(copy);
  }
  return *this;
}

float* Tensor::f32_data() {
  assert(dtype_ == DType::f32);
  return reinterpret_cast<float*>(data_.get());
}
const float* Tensor::f32_data() const {
  assert(dtype_ == DType::f32);
  return reinterpret_cast<const float*>(data_.get());
}
int64_t* Tensor::i64_data() {
  assert(dtype_ == DType::i64);
  return reinterpret_cast<int64_t*>(data_.get());
}
const int64_t* Tensor::i64_data() const {
  assert(dtype_ == DType::i64);
  return reinterpret_cast<const int64_t*>(data_.get());
}

void Tensor::reshape(Shape shape) {
  assert(shape_numel(shape) == numel_);
  shape_ = std::move(shape);
}

void Tensor::keep_leading(int64_t rows) {
  assert(rank() >= 1 && rows >= 0 && rows <= shape_[0]);
  shape_[0] = rows;
  numel_ = shape_numel(shape_);
}

void Tensor::reset(DType dtype, Shape shape) {
  int64_t n = shape_numel(shape);
  assert(n >= 0);
  size_t needed = static_cast<size_t>(n) * dtype_size(dtype);
  if (!data_ || needed > capacity_ || is_mapping()) allocate(needed);
  dtype_ = dtype;
  shape_ = std::move(shape);
  numel_ = n;
}

}  // namespace sparrow
