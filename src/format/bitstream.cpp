#include "format/bitstream.h"

namespace sparrow {

void BitWriter::write(uint32_t value, int width) {
  for (int i = 0; i < width; ++i) {
    if ((bits_ & 7) == 0) bytes_.push_back(0);
    bytes_.back() |= static_cast<uint8_t>(((value >> i) & 1u) << (bits_ & 7));
    ++bits_;
  }
}

void BitWriter::write_msb_first(uint32_t code, int length) {
  for (int i = length - 1; i >= 0; --i) write((code >> i) & 1u, 1);
}

Result<uint32_t> BitReader::read(int width) {
  if (static_cast<uint64_t>(width) > remaining())
    return errorf("bit stream ends after {} bits, {} more needed", bits_, width);
  uint32_t v = 0;
  for (int i = 0; i < width; ++i) v |= read_bit() << i;
  return v;
}

int bits_for(uint64_t max_value) {
  int w = 0;
  while (w < 64 && (max_value >> w) != 0) ++w;
  return w;
}

}  // namespace sparrow
