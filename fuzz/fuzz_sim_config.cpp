// EIE simulator configurations as `sparrow sim --config` reads them.
#include <nlohmann/json.hpp>

#include "sim/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto config = sparrow::sim::config_from_json(j);
  if (config.ok()) (void)sparrow::sim::validate(*config);
  return 0;
}
