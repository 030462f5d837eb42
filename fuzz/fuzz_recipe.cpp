// Compression recipes as --recipe reads them.
#include <nlohmann/json.hpp>

#include "compress/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  sparrow::CompressOptions options;
  (void)sparrow::apply_recipe(j, options);
  return 0;
}
