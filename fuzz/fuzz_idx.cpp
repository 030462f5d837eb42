// The IDX reader, plain and gzip-compressed (zlib tells them apart), as images and as labels.
#include "fuzz_util.h"
#include "sparrow/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = sparrow::fuzz::input_file(data, size, ".idx");
  (void)sparrow::read_idx(path);
  (void)sparrow::read_idx_labels(path);
  return 0;
}
