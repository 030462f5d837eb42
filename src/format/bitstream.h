// Bit-level writing and reading. Bits are appended least-significant first into bytes, so a
// value of width w written at bit position p occupies bits p..p+w-1 of the stream.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sparrow/status.h"

namespace sparrow {

class BitWriter {
 public:
  // Appends the low `width` bits of `value` (width 0..32).
  void write(uint32_t value, int width);
  // Appends the `length` bits of `code` most-significant first (Huffman codes).
  void write_msb_first(uint32_t code, int length);
  uint64_t bit_count() const { return bits_; }
  // The stream, zero-padded to whole bytes.
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
  uint64_t bits_ = 0;
};

class BitReader {
 public:
  // Reads from `data`, which holds `bit_count` valid bits.
  BitReader(std::span<const uint8_t> data, uint64_t bit_count) : data_(data), bits_(bit_count) {}
  // Reads `width` bits (0..32); fails past the end of the stream.
  Result<uint32_t> read(int width);
  // Reads one bit; the caller has checked remaining() > 0.
  uint32_t read_bit() {
    uint32_t b = (data_[pos_ >> 3] >> (pos_ & 7)) & 1u;
    ++pos_;
    return b;
  }
  uint64_t remaining() const { return bits_ - pos_; }

 private:
  std::span<const uint8_t> data_;
  uint64_t bits_;
  uint64_t pos_ = 0;
};

// Smallest width that holds `max_value` (0 for 0).
int bits_for(uint64_t max_value);

}  // namespace sparrow
