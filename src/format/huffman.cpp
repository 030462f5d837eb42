#include "format/huffman.h"

#include <algorithm>
#include <queue>

namespace sparrow {

namespace {

// Plain Huffman code lengths (no limit).
std::vector<int> unlimited_lengths(std::span<const uint64_t> counts) {
  struct Item {
    uint64_t weight;
    int node;
    bool operator>(const Item& o) const { return weight != o.weight ? weight > o.weight : node > o.node; }
  };
  size_t n = counts.size();
  std::vector<int> parent(2 * n, -1);
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap;
  for (size_t s = 0; s < n; ++s)
    if (counts[s] > 0) heap.push({counts[s], static_cast<int>(s)});
  std::vector<int> lengths(n, 0);
  if (heap.size() == 1) {
    lengths[heap.top().node] = 1;
    return lengths;
  }
  int next = static_cast<int>(n);
  while (heap.size() > 1) {
    Item a = heap.top();
    heap.pop();
    Item b = heap.top();
    heap.pop();
    parent[a.node] = parent[b.node] = next;
    heap.push({a.weight + b.weight, next++});
  }
  for (size_t s = 0; s < n; ++s) {
    if (counts[s] == 0) continue;
    int depth = 0;
    for (int v = static_cast<int>(s); parent[v] >= 0; v = parent[v]) ++depth;
    lengths[s] = depth;
  }
  return lengths;
}

// Canonical codes for lengths: codes of each length are consecutive, shorter lengths first.
std::vector<uint32_t> canonical_codes(std::span<const uint8_t> lengths) {
  uint32_t count[kMaxHuffmanLength + 2] = {};
  for (uint8_t l : lengths) ++count[l];
  count[0] = 0;
  uint32_t next[kMaxHuffmanLength + 2] = {};
  uint32_t code = 0;
  for (int l = 1; l <= kMaxHuffmanLength; ++l) {
    code = (code + count[l - 1]) << 1;
    next[l] = code;
  }
  std::vector<uint32_t> codes(lengths.size(), 0);
  for (size_t s = 0; s < lengths.size(); ++s)
    if (lengths[s]) codes[s] = next[lengths[s]]++;
  return codes;
}

}  // namespace

std::vector<uint8_t> huffman_lengths(std::span<const uint64_t> counts) {
  std::vector<uint64_t> scaled(counts.begin(), counts.end());
  for (;;) {
    std::vector<int> lengths = unlimited_lengths(scaled);
    if (*std::max_element(lengths.begin(), lengths.end()) <= kMaxHuffmanLength)
      return std::vector<uint8_t>(lengths.begin(), lengths.end());
    // Too deep: flatten the distribution (halve counts, keeping used symbols used) and retry.
    for (auto& c : scaled)
      if (c > 0) c = c / 2 + 1;
  }
}

Status validate_huffman_lengths(std::span<const uint8_t> lengths) {
  uint64_t kraft = 0;  // in units of 2^-kMaxHuffmanLength
  int used = 0;
  for (size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] > kMaxHuffmanLength)
      return errorf("Huffman length {} of symbol {} exceeds {}", lengths[s], s, kMaxHuffmanLength);
    if (lengths[s]) {
      kraft += uint64_t{1} << (kMaxHuffmanLength - lengths[s]);
      ++used;
    }
  }
  if (kraft > (uint64_t{1} << kMaxHuffmanLength)) return errorf("Huffman lengths do not form a prefix code");
  if (used == 0) return errorf("Huffman table has no symbols");
  return {};
}

HuffmanEncoder::HuffmanEncoder(std::span<const uint8_t> lengths)
    : lengths_(lengths.begin(), lengths.end()), codes_(canonical_codes(lengths)) {}

HuffmanDecoder::HuffmanDecoder(std::span<const uint8_t> lengths) {
  for (uint8_t l : lengths)
    if (l) ++count_[l];
  std::vector<uint32_t> codes = canonical_codes(lengths);
  for (int l = 1; l <= kMaxHuffmanLength; ++l) {
    first_index_[l] = static_cast<uint32_t>(symbols_.size());
    bool first = true;
    for (size_t s = 0; s < lengths.size(); ++s) {
      if (lengths[s] != l) continue;
      if (first) first_code_[l] = codes[s];
      first = false;
      symbols_.push_back(static_cast<uint32_t>(s));
    }
  }
}

Result<uint32_t> HuffmanDecoder::decode(BitReader& in) const {
  uint32_t code = 0;
  for (int l = 1; l <= kMaxHuffmanLength; ++l) {
    if (in.remaining() == 0) return errorf("Huffman stream ends inside a code");
    code = (code << 1) | in.read_bit();
    if (count_[l] && code >= first_code_[l] && code - first_code_[l] < count_[l])
      return symbols_[first_index_[l] + (code - first_code_[l])];
  }
  return errorf("Huffman stream holds a bit pattern that is no code");
}

}  // namespace sparrow
