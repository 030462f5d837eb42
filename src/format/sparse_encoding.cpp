// Relative-index CSC encoding (EIE, Deep Compression): per partition and column, each stored
// entry is (code, gap) where gap counts the zero rows of this partition skipped since the previous
// entry of the column. A gap larger than 2^index_bits - 1 is bridged by filler entries (code 0,
// maximal gap), each of which occupies one row position. Example with 4-bit gaps: the column
// [0,0,1,2, 18 zeros, 3] is stored as codes [1,2,0,3] and gaps [2,0,15,2].
#include <cstring>

#include "sparrow/format.h"

namespace sparrow {

int64_t CompressedTensor::entries() const {
  int64_t n = 0;
  for (const auto& p : partitions) n += static_cast<int64_t>(p.codes.size());
  return n;
}

int64_t CompressedTensor::fillers() const {
  if (layout == WeightLayout::dense) return 0;
  int64_t n = 0;
  for (const auto& p : partitions)
    for (uint8_t c : p.codes) n += c == 0;
  return n;
}

int64_t CompressedTensor::nonzeros() const {
  int64_t n = 0;
  for (const auto& p : partitions)
    for (uint8_t c : p.codes) n += c != 0;
  return n;
}

int64_t partition_rows(int64_t rows, int partitions, int p) {
  return rows > p ? (rows - p + partitions - 1) / partitions : 0;
}

Status check_partition(const CompressedTensor& t, int p) {
  const Partition& part = t.partitions[static_cast<size_t>(p)];
  if (static_cast<int64_t>(part.col_counts.size()) != t.view.cols || part.gaps.size() != part.codes.size())
    return errorf("partition {}: {} column counts for {} columns, {} gaps for {} codes", p,
                  part.col_counts.size(), t.view.cols, part.gaps.size(), part.codes.size());
  const int64_t n_local = partition_rows(t.view.rows, static_cast<int>(t.partitions.size()), p);
  size_t e = 0;
  for (int64_t c = 0; c < t.view.cols; ++c) {
    int64_t pos = 0;
    for (uint32_t k = 0; k < part.col_counts[static_cast<size_t>(c)]; ++k, ++e) {
      if (e >= part.codes.size())
        return errorf("partition {}: column counts exceed the {} entries", p, part.codes.size());
      pos += part.gaps[e] + 1;
      if (pos > n_local) return errorf("partition {} column {}: entries run past the {} rows", p, c, n_local);
    }
  }
  if (e != part.codes.size())
    return errorf("partition {}: column counts cover {} of {} entries", p, e, part.codes.size());
  return {};
}

namespace {

// Every entry has a place in the matrix (codes are not checked against the codebook).
Status check_structure(const CompressedTensor& t) {
  if (t.layout == WeightLayout::dense) {
    if (t.partitions.size() != 1 || static_cast<int64_t>(t.partitions[0].codes.size()) != t.numel())
      return errorf("dense layout needs {} codes", t.numel());
    return {};
  }
  if (t.partitions.empty()) return errorf("no partitions");
  for (int p = 0; p < static_cast<int>(t.partitions.size()); ++p) SP_RETURN_IF_ERROR(check_partition(t, p));
  return {};
}

}  // namespace

Status check_encoding(const CompressedTensor& t) {
  SP_RETURN_IF_ERROR(check_structure(t));
  for (size_t p = 0; p < t.partitions.size(); ++p)
    for (uint8_t code : t.partitions[p].codes)
      if (code >= t.codebook.size())
        return errorf("partition {}: code {} outside the codebook of {} entries", p, code, t.codebook.size());
  return {};
}

CompressedTensor encode_sparse(const std::vector<uint8_t>& codes, MatrixView view, int partitions,
                               int index_bits) {
  CompressedTensor t;
  t.view = view;
  t.layout = WeightLayout::sparse;
  t.index_bits = index_bits;
  const int64_t max_gap = (int64_t{1} << index_bits) - 1;
  t.partitions.resize(static_cast<size_t>(partitions));
  for (int p = 0; p < partitions; ++p) {
    Partition& part = t.partitions[p];
    part.col_counts.assign(static_cast<size_t>(view.cols), 0);
    int64_t n_local = partition_rows(view.rows, partitions, p);
    for (int64_t c = 0; c < view.cols; ++c) {
      int64_t next = 0;  // first local row not yet covered by an entry
      for (int64_t r = 0; r < n_local; ++r) {
        uint8_t code = codes[static_cast<size_t>((r * partitions + p) * view.cols + c)];
        if (code == 0) continue;
        while (r - next > max_gap) {  // filler: a stored zero that advances max_gap + 1 rows
          part.codes.push_back(0);
          part.gaps.push_back(static_cast<uint8_t>(max_gap));
          next += max_gap + 1;
          ++part.col_counts[c];
        }
        part.codes.push_back(code);
        part.gaps.push_back(static_cast<uint8_t>(r - next));
        next = r + 1;
        ++part.col_counts[c];
      }
    }
  }
  return t;
}

CompressedTensor encode_dense(const std::vector<uint8_t>& codes, MatrixView view) {
  CompressedTensor t;
  t.view = view;
  t.layout = WeightLayout::dense;
  t.partitions.resize(1);
  t.partitions[0].codes = codes;
  return t;
}

namespace {

// Calls visit(row, col, code) for every stored entry of a sparse layout, fillers (code 0) included,
// partition by partition and column by column. The structure must have been checked.
template <class Visit>
void for_each_entry(const CompressedTensor& t, Visit visit) {
  const int P = static_cast<int>(t.partitions.size());
  for (int p = 0; p < P; ++p) {
    const Partition& part = t.partitions[static_cast<size_t>(p)];
    size_t e = 0;
    for (int64_t c = 0; c < t.view.cols; ++c) {
      int64_t pos = 0;
      for (uint32_t k = 0; k < part.col_counts[static_cast<size_t>(c)]; ++k, ++e, ++pos) {
        pos += part.gaps[e];
        visit(pos * P + p, c, part.codes[e]);
      }
    }
  }
}

}  // namespace

Result<std::vector<uint8_t>> decode_codes(const CompressedTensor& t) {
  SP_RETURN_IF_ERROR(check_structure(t).prefixed(fmt::format("tensor '{}'", t.name)));
  if (t.layout == WeightLayout::dense) return t.partitions[0].codes;
  std::vector<uint8_t> codes(static_cast<size_t>(t.numel()), 0);
  for_each_entry(t, [&](int64_t row, int64_t col, uint8_t code) {
    codes[static_cast<size_t>(row * t.view.cols + col)] = code;
  });
  return codes;
}

Result<Tensor> decompress(const CompressedTensor& t) {
  SP_ASSIGN_OR_RETURN(std::vector<uint8_t> codes, decode_codes(t));
  Tensor w(DType::f32, t.shape);
  if (w.numel() != t.view.rows * t.view.cols)
    return errorf("tensor '{}': shape does not match its matrix view", t.name);
  float* out = w.f32_data();
  for (int64_t r = 0; r < t.view.rows; ++r)
    for (int64_t c = 0; c < t.view.cols; ++c) {
      uint8_t code = codes[static_cast<size_t>(r * t.view.cols + c)];
      if (code >= t.codebook.size()) return errorf("tensor '{}': code {} outside the codebook", t.name, code);
      float v = t.codebook[code];
      if (t.view.transposed)
        out[c * t.view.rows + r] = v;
      else
        out[r * t.view.cols + c] = v;
    }
  return w;
}

}  // namespace sparrow
