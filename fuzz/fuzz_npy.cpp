// The NPY reader (header dictionary, dtype, shape, data size).
#include "fuzz_util.h"
#include "sparrow/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)sparrow::read_npy(sparrow::fuzz::input_file(data, size, ".npy"));
  return 0;
}
