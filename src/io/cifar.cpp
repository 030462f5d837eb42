// CIFAR-10's binary format: fixed records of a label byte and 3 x 32 x 32 pixel bytes.
#include <algorithm>

#include "core/file.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

constexpr int64_t kChannels = 3, kSide = 32, kPixels = kChannels * kSide * kSide;
constexpr int64_t kRecordBytes = 1 + kPixels;
constexpr int64_t kClasses = 10;

// The whole records of one file, checked.
Result<std::vector<char>> read_records(const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_file(path));
  const auto size = static_cast<int64_t>(bytes.size());
  if (size == 0 || size % kRecordBytes != 0)
    return errorf(
        "{}: {} bytes is not a whole number of CIFAR-10 records ({} bytes: a label, then 3 x 32 x 32 "
        "pixels)",
        path, size, kRecordBytes);
  for (int64_t r = 0; r < size / kRecordBytes; ++r) {
    const auto label = static_cast<unsigned char>(bytes[static_cast<size_t>(r * kRecordBytes)]);
    if (label >= kClasses)
      return errorf("{}: record {}: label {} is not a CIFAR-10 class (0-9); is this CIFAR-100's format?",
                    path, r, label);
  }
  return bytes;
}

}  // namespace

Result<ImageSet> read_cifar10(std::span<const std::string> paths, int64_t limit) {
  std::vector<std::vector<char>> files;
  int64_t records = 0;
  for (const std::string& path : paths) {
    if (limit > 0 && records >= limit) break;
    SP_ASSIGN_OR_RETURN(std::vector<char> bytes, read_records(path));
    records += static_cast<int64_t>(bytes.size()) / kRecordBytes;
    files.push_back(std::move(bytes));
  }
  if (limit > 0) records = std::min(records, limit);
  ImageSet set;
  set.images = Tensor(DType::f32, {records, kChannels, kSide, kSide});
  set.labels.reserve(static_cast<size_t>(records));
  float* out = set.images.f32_data();
  for (const auto& bytes : files)
    for (size_t at = 0; at < bytes.size() && static_cast<int64_t>(set.labels.size()) < records;
         at += kRecordBytes) {
      set.labels.push_back(static_cast<unsigned char>(bytes[at]));
      for (int64_t i = 0; i < kPixels; ++i)
        *out++ = static_cast<unsigned char>(bytes[at + 1 + static_cast<size_t>(i)]);
    }
  return set;
}

Status write_cifar10(const std::string& path, const ImageSet& set) {
  const Shape want = {set.images.rank() > 0 ? set.images.dim(0) : 0, kChannels, kSide, kSide};
  if (set.images.dtype() != DType::f32 || set.images.shape() != want ||
      static_cast<int64_t>(set.labels.size()) != want[0])
    return errorf("{}: CIFAR-10 records need images [N, 3, 32, 32] and N labels, got {} and {}", path,
                  shape_str(set.images.shape()), set.labels.size());
  std::string bytes;
  bytes.reserve(static_cast<size_t>(want[0] * kRecordBytes));
  const float* pixels = set.images.f32_data();
  for (int64_t r = 0; r < want[0]; ++r) {
    bytes.push_back(static_cast<char>(static_cast<unsigned char>(set.labels[static_cast<size_t>(r)])));
    for (int64_t i = 0; i < kPixels; ++i)
      bytes.push_back(static_cast<char>(static_cast<unsigned char>(std::clamp(*pixels++, 0.0f, 255.0f))));
  }
  return write_file_atomic(path, bytes);
}

}  // namespace sparrow
