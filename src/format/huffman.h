// Canonical Huffman coding of small alphabets (up to 256 symbols), used for weight codes and
// gap values. A code is described by one length per symbol (0 = symbol unused); codes are
// assigned in order of (length, symbol), so the lengths alone define the code.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "format/bitstream.h"

namespace sparrow {

inline constexpr int kMaxHuffmanLength = 24;

// Code lengths for the given symbol counts, each <= kMaxHuffmanLength. A single used symbol
// gets length 1. All-zero counts give all-zero lengths.
std::vector<uint8_t> huffman_lengths(std::span<const uint64_t> counts);

// Checks that lengths form a usable prefix code (each <= kMaxHuffmanLength, Kraft sum <= 1).
Status validate_huffman_lengths(std::span<const uint8_t> lengths);

class HuffmanEncoder {
 public:
  explicit HuffmanEncoder(std::span<const uint8_t> lengths);
  void encode(BitWriter& out, uint32_t symbol) const {
    out.write_msb_first(codes_[symbol], lengths_[symbol]);
  }
  int length(uint32_t symbol) const { return lengths_[symbol]; }

 private:
  std::vector<uint8_t> lengths_;
  std::vector<uint32_t> codes_;
};

class HuffmanDecoder {
 public:
  // `lengths` must have passed validate_huffman_lengths.
  explicit HuffmanDecoder(std::span<const uint8_t> lengths);
  // Reads one symbol; fails on a truncated stream or a bit pattern that is no code.
  Result<uint32_t> decode(BitReader& in) const;

 private:
  // For each length L: the first canonical code of length L, how many codes have it, and the
  // index into symbols_ of its first symbol.
  uint32_t first_code_[kMaxHuffmanLength + 1] = {};
  uint32_t count_[kMaxHuffmanLength + 1] = {};
  uint32_t first_index_[kMaxHuffmanLength + 1] = {};
  std::vector<uint32_t> symbols_;  // symbols sorted by (length, symbol)
};

}  // namespace sparrow
