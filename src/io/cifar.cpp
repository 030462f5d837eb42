// CIFAR-10's binary format: fixed records of a label byte and 3 x 32 x 32 pixel bytes.
#include <algorithm>
#include <functional>

#include "core/file.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

constexpr int64_t kChannels = 3, kSide = 32, kPixels = kChannels * kSide * kSide;
constexpr int64_t kRecordBytes = 1 + kPixels;
constexpr int64_t kClasses = 10;

// How many whole records `path` holds, from its size; its label bytes are checked as they are read.
Result<int64_t> record_count(const InputFile& file) {
  const auto size = static_cast<int64_t>(file.size());
  if (size == 0 || size % kRecordBytes != 0)
    return errorf(
        "{}: {} bytes is not a whole number of CIFAR-10 records ({} bytes: a label, then 3 x 32 x 32 "
        "pixels)",
        file.path(), size, kRecordBytes);
  return size / kRecordBytes;
}

}  // namespace

Status for_each_cifar10_record(std::span<const std::string> paths, int64_t limit,
                               const std::function<Status(int64_t)>& start,
                               const std::function<Status(int64_t, int64_t, const float*)>& each) {
  std::vector<InputFile> files;
  int64_t records = 0;
  for (const std::string& path : paths) {
    if (limit > 0 && records >= limit) break;
    SP_ASSIGN_OR_RETURN(InputFile file, open_input_file(path));
    SP_ASSIGN_OR_RETURN(int64_t n, record_count(file));
    records += n;
    files.push_back(std::move(file));
  }
  if (limit > 0) records = std::min(records, limit);
  SP_RETURN_IF_ERROR(start(records));
  std::vector<char> record(kRecordBytes);
  std::vector<float> pixels(kPixels);
  int64_t row = 0;
  for (InputFile& file : files)
    for (int64_t r = 0; r < static_cast<int64_t>(file.size()) / kRecordBytes && row < records; ++r, ++row) {
      SP_RETURN_IF_ERROR(file.read(record.data(), record.size()));
      const auto label = static_cast<unsigned char>(record[0]);
      if (label >= kClasses)
        return errorf("{}: record {}: label {} is not a CIFAR-10 class (0-9); is this CIFAR-100's format?",
                      file.path(), r, label);
      for (int64_t i = 0; i < kPixels; ++i)
        pixels[static_cast<size_t>(i)] = static_cast<unsigned char>(record[static_cast<size_t>(1 + i)]);
      SP_RETURN_IF_ERROR(each(row, label, pixels.data()));
    }
  return {};
}

Result<ImageSet> read_cifar10(std::span<const std::string> paths, int64_t limit) {
  ImageSet set;
  SP_RETURN_IF_ERROR(for_each_cifar10_record(
      paths, limit,
      [&](int64_t n) {
        set.images = Tensor(DType::f32, {n, kChannels, kSide, kSide});
        set.labels.resize(static_cast<size_t>(n));
        return Status{};
      },
      [&](int64_t row, int64_t label, const float* pixels) {
        set.labels[static_cast<size_t>(row)] = label;
        std::copy(pixels, pixels + kPixels, set.images.f32_data() + row * kPixels);
        return Status{};
      }));
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
