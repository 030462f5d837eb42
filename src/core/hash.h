// Non-cryptographic content hash (FNV-1a, 64-bit), used to identify source models.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sparrow {

inline uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace sparrow
