// Dataset and array files: NPY and NPZ (numpy), IDX (MNIST, optionally gzip-compressed),
// CIFAR-10's binary batches, and folders of PNG and JPEG images.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "sparrow/status.h"
#include "sparrow/tensor.h"

namespace sparrow {

// Reads a C-order .npy array. Float kinds (f2, f4, f8) become float32; integer and bool kinds
// become int64. Errors name the file and the header field at fault.
Result<Tensor> read_npy(const std::string& path);
// How a mapped array will be read: rows in shuffled order (training), or front to back.
enum class MapAccess { random, sequential };
// The array of an NPY file as read_npy gives it, but a float32 array whose data starts on a 64-byte
// boundary (as numpy writes them) is not read: the tensor lies over a private mapping of the file,
// so its pages come from disk as rows are used and the kernel may drop them again under memory
// pressure; the kernel's readahead is set for `access`. Arrays larger than memory can be used that
// way (up to kMaxTensorElements; the input budget applies only to arrays that are read). Writes to
// the tensor go to private copies of the pages, never to the file. While the tensor lives, the file
// must not be truncated and must stay readable: a page that cannot be read then ends the process
// (SIGBUS). A file system that cannot be mapped gets the file read.
Result<Tensor> map_npy(const std::string& path, MapAccess access = MapAccess::random);
// Reads the pages of a mapped tensor's data into memory in one sequential pass (the kernel reads
// ahead in large parts), when they take less than half the available memory, and leaves them
// advised for random access: shuffled batches then find them there instead of faulting 4 KiB at a
// time. Nothing for other tensors.
void preload_mapping(const Tensor& t);
// The array in an NPY file's bytes, as read_npy reads it (errors without a path).
Result<Tensor> parse_npy(std::span<const char> bytes);
// The header of a C-order .npy file (version 1.0, padded so that the data starts on a 64-byte
// boundary) for an array of that dtype and shape; its data follows it.
std::string npy_header(DType dtype, const Shape& shape);
// Writes a float32 ('<f4') or int64 ('<i8') .npy file atomically.
Status write_npy(const std::string& path, const Tensor& tensor);
// The bytes of that file.
std::string npy_bytes(const Tensor& tensor);

// Reads every array of an .npz archive (numpy.savez: stored entries; savez_compressed: deflated),
// keyed by entry name without its ".npy", as read_npy reads each. Errors name the file and entry;
// no entry may declare more than the input budget (core/file.h) of uncompressed bytes.
Result<std::map<std::string, Tensor>> read_npz(const std::string& path);
// One array of an .npz archive, read as read_npz reads it; the other entries are not read. Errors
// name the file and the array (a missing one lists those there are).
Result<Tensor> read_npz_array(const std::string& path, const std::string& name);
// Whether the archive holds an array of that name (errors: the file is not a readable archive).
Result<bool> npz_has_array(const std::string& path, const std::string& name);
// Unpacks one array's entry (its .npy bytes, inflated when deflated) into `npy_path` as it is read,
// checked against its checksum, then renamed into place (StreamedOutput), so that map_npy can map
// it. Errors name the archive and the array.
Status extract_npz_array(const std::string& path, const std::string& name, const std::string& npy_path);
// Writes arrays (float32 or int64) as an .npz archive, deflated when `compressed`, atomically.
Status write_npz(const std::string& path, const std::map<std::string, Tensor>& arrays,
                 bool compressed = false);

// CIFAR-10's binary batches (data_batch_1.bin ... data_batch_5.bin, test_batch.bin): records of
// one label byte (0-9) and 3 x 32 x 32 pixel bytes (the red, green, then blue plane, rows top
// first). Reads the files in order, at most `limit` records in all (0: every record), the pixels as
// float32 raw values [N, 3, 32, 32]. Errors name the file and the record at fault.
struct ImageSet {
  Tensor images;
  std::vector<int64_t> labels;
};
Result<ImageSet> read_cifar10(std::span<const std::string> paths, int64_t limit = 0);
// The same records streamed one at a time, never a whole file in memory: every file's size is
// checked first, then start(n) with how many records will follow, then each(row, label, pixels) per
// record with its pixels as read_cifar10 lays them out, in a buffer the next record reuses. A label
// outside 0-9 fails at its record. An error from a callback stops the walk and is returned as it is.
Status for_each_cifar10_record(std::span<const std::string> paths, int64_t limit,
                               const std::function<Status(int64_t)>& start,
                               const std::function<Status(int64_t, int64_t, const float*)>& each);
// Writes records in that format (labels 0-255 as bytes, images [N, 3, 32, 32] of values 0-255)
// atomically, for tests and tools.
Status write_cifar10(const std::string& path, const ImageSet& set);

// An 8-bit image as decoded: rows top first, each pixel's channels (1: gray, 3: RGB) together.
struct DecodedImage {
  uint32_t width = 0, height = 0;
  int channels = 0;
  std::vector<unsigned char> pixels;
};
// Whether the name is an image file's: .png, .jpg or .jpeg (either case).
bool is_image_file(const std::string& path);
// Decodes a PNG (libpng: any bit depth, palette or alpha; alpha composed over black) or a JPEG
// (libjpeg), told apart by their signatures. Errors name the file.
Result<DecodedImage> decode_image(const std::string& path);
// The image scaled (bilinear, pixel centers aligned) so that it just covers height x width, or,
// with `shorter_side` > 0, so that its shorter side is that many pixels (at least height and width),
// then the centered height x width window, as raw values 0-255 in `out` [channels, height, width];
// gray becomes RGB by replication, RGB gray by ITU-R BT.601's weights.
void resize_center_crop(const DecodedImage& image, int64_t channels, int64_t height, int64_t width,
                        float* out, int64_t shorter_side = 0);
// A folder of images with one sub-folder per class (classes numbered in name order, as
// torchvision's ImageFolder does; .png, .jpg, .jpeg files): images [N, channels, height, width]
// by resize_center_crop (with `shorter_side`), the classes taken in turn (file i of each class, then
// file i + 1) so any run of rows mixes them; at most `limit` images (0: all). `class_names`, if
// given, receives the sub-folders' names.
Result<ImageSet> read_image_folder(const std::string& dir, int64_t channels, int64_t height, int64_t width,
                                   int64_t limit = 0, std::vector<std::string>* class_names = nullptr,
                                   int64_t shorter_side = 0);

// The images of such a folder as read_image_folder takes them: the class sub-folders in name order
// (every sub-folder is a class), the files (path, class) taking the classes in turn, at most
// `limit` (0: all). Errors name the folder.
struct FolderImages {
  std::vector<std::string> class_names;
  std::vector<std::pair<std::string, int64_t>> files;
};
Result<FolderImages> list_folder_images(const std::string& dir, int64_t limit = 0);
// Those images decoded one at a time, so that a caller can put them elsewhere than in memory:
// start(n) with how many there are, then each(row, label, pixels) with each image as
// read_image_folder lays it out (raw values 0-255, [channels, height, width]) in a buffer that the
// next image reuses. An error from either stops the walk and is returned; errors name `dir` or the
// image.
Status for_each_folder_image(const std::string& dir, const FolderImages& images, int64_t channels,
                             int64_t height, int64_t width, int64_t shorter_side,
                             const std::function<Status(int64_t)>& start,
                             const std::function<Status(int64_t, int64_t, const float*)>& each);

// Reads an IDX file (gzip-compressed or plain) as float32 raw values with the file's dimensions,
// e.g. [60000, 28, 28] for MNIST images.
Result<Tensor> read_idx(const std::string& path);
// The rows (entries of the first dimension) of an IDX file (gzip-compressed or plain) streamed in
// order as float32 raw values, never the whole file in memory: start(dims) once with the file's
// dimensions, then each(row, values) for each of the first dims[0] rows, at most `limit` (0: all),
// in a buffer the next row reuses. The data is checked as it arrives (a short file
// fails at the row it ends in; with every row walked, data past them fails too). An error from a
// callback stops the walk and is returned as it is; the reader's errors name the file.
Status for_each_idx_row(const std::string& path, int64_t limit,
                        const std::function<Status(const Shape&)>& start,
                        const std::function<Status(int64_t, const float*)>& each);
// Reads a 1-D IDX label file as int64 values.
Result<std::vector<int64_t>> read_idx_labels(const std::string& path);
// Writes unsigned bytes as an IDX file (type 0x08) of the given dimensions, gzip-compressed when the
// path ends in ".gz", atomically.
Status write_idx_u8(const std::string& path, const Shape& dims, const std::vector<uint8_t>& values);

}  // namespace sparrow
