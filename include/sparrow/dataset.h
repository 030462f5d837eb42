// Dataset and array files: NPY (numpy) and IDX (MNIST, optionally gzip-compressed).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sparrow/status.h"
#include "sparrow/tensor.h"

namespace sparrow {

// Reads a C-order .npy array. Float kinds (f2, f4, f8) become float32; integer and bool kinds
// become int64. Errors name the file and the header field at fault.
Result<Tensor> read_npy(const std::string& path);
// Writes a float32 ('<f4') or int64 ('<i8') .npy file atomically.
Status write_npy(const std::string& path, const Tensor& tensor);
// The bytes of that file.
std::string npy_bytes(const Tensor& tensor);

// Reads an IDX file (gzip-compressed or plain) as float32 raw values with the file's dimensions,
// e.g. [60000, 28, 28] for MNIST images.
Result<Tensor> read_idx(const std::string& path);
// Reads a 1-D IDX label file as int64 values.
Result<std::vector<int64_t>> read_idx_labels(const std::string& path);
// Writes unsigned bytes as an IDX file (type 0x08) of the given dimensions, gzip-compressed when the
// path ends in ".gz", atomically.
Status write_idx_u8(const std::string& path, const Shape& dims, const std::vector<uint8_t>& values);

}  // namespace sparrow
