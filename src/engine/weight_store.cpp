#include "engine/weight_store.h"

#include <algorithm>
#include <cmath>

#include "engine/sparse/code_source.h"
#include "engine/sparse/layout_table.h"

namespace sparrow {

namespace {

int64_t encoding_bytes(const CompressedTensor& t) {
  int64_t n = static_cast<int64_t>(t.codebook.capacity() * sizeof(float));
  for (const Partition& p : t.partitions)
    n += static_cast<int64_t>(p.col_counts.capacity() * sizeof(uint32_t) + p.codes.capacity() +
                              p.gaps.capacity());
  return n;
}

}  // namespace

Result<std::unique_ptr<WeightStore>> WeightStore::create(std::vector<CompressedTensor> tensors,
                                                         const std::vector<int64_t>& file_bytes, Isa isa,
                                                         double ratio, int64_t floor_bytes) {
  if (!(ratio > 0.0) || !std::isfinite(ratio)) ratio = 0.0;  // no budget
  auto store = std::unique_ptr<WeightStore>(new WeightStore(isa, ratio, std::max<int64_t>(floor_bytes, 0)));
  for (size_t i = 0; i < tensors.size(); ++i) {
    CompressedTensor& t = tensors[i];
    if (shape_numel(t.shape) != t.view.rows * t.view.cols)
      return errorf("tensor '{}': shape {} does not match its {} x {} matrix", t.name, shape_str(t.shape),
                    t.view.rows, t.view.cols);
    SP_ASSIGN_OR_RETURN(auto codes, compressed_codes(t));
    Weight w;
    w.matrix = std::make_unique<SparseMatrix>(sparse_matrix_header(*codes, t.codebook, 1));
    w.file_bytes = i < file_bytes.size() ? file_bytes[i] : 0;
    std::string name = t.name;
    w.encoding = std::move(t);
    if (!store->weights_.emplace(name, std::move(w)).second)
      return errorf("tensor '{}' is stored twice", name);
  }
  return store;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, w] : weights_) out.push_back(name);
  return out;
}

const Shape& WeightStore::shape(const std::string& name) const {
  return weights_.at(name).encoding.shape;
}

const SparseMatrix& WeightStore::header(const std::string& name) const {
  return *weights_.at(name).matrix;
}

Result<std::unique_ptr<CodeSource>> WeightStore::codes_of(const Weight& w) const {
  if (encoding_held(w)) return compressed_codes(w.encoding);
  return matrix_codes(*w.matrix);
}

const SparseMatrix* WeightStore::request(const std::string& name, bool one_sample, InputZeros zeros) {
  Weight& w = weights_.at(name);
  w.requested |= layouts_for(*w.matrix, isa_, one_sample, zeros) & ~w.matrix->layouts;
  return w.matrix.get();
}

namespace {

// One way of giving up speed for bytes: rewrites a weight's requested layouts (and its compact
// flag) into narrower ones, or returns false where it does not apply.
using Narrowing = bool (*)(SparseMatrix& m, LayoutSet& requested);

bool row_walk_only(SparseMatrix& m, LayoutSet& requested) {
  // A wider codebook's column walk is the CSC.
  const LayoutSet column_walk = m.small_codebook ? kLayoutBanded : kLayoutCsc;
  if ((requested & (column_walk | kLayoutSlicedRows)) != (column_walk | kLayoutSlicedRows)) return false;
  requested &= ~column_walk;
  return true;
}
bool narrow_csr(SparseMatrix& m, LayoutSet& requested) {
  if (!(requested & kLayoutCsr) || !m.small_codebook || m.compact) return false;
  m.compact = true;
  return true;
}
bool narrow_csc(SparseMatrix& m, LayoutSet& requested) {
  if (!(requested & kLayoutCsc) || !m.small_codebook || m.compact) return false;
  m.compact = true;
  return true;
}
bool narrow_column_walk(SparseMatrix& m, LayoutSet& requested) {
  if (!(requested & (kLayoutBanded | kLayoutTiles)) || !m.small_codebook) return false;
  requested = (requested & ~(kLayoutBanded | kLayoutTiles)) | kLayoutCsc;
  m.compact = true;
  return true;
}
bool narrow_row_walk(SparseMatrix& m, LayoutSet& requested) {
  const bool narrows = m.small_codebook || m.codebook_size <= kNarrowPanelCodebookMost;
  if (!(requested & kLayoutSlicedRows) || !narrows || m.compact) return false;
  m.compact = true;
  return true;
}
// A wider codebook's sliced rows (two bytes a slot) give way to its CSC.
bool wide_row_walk_to_csc(SparseMatrix& m, LayoutSet& requested) {
  if (!(requested & kLayoutSlicedRows) || m.small_codebook) return false;
  requested = (requested & ~kLayoutSlicedRows) | kLayoutCsc;
  return true;
}

// In order of the speed they give up (least first).
constexpr Narrowing kNarrowings[] = {row_walk_only,      narrow_csr,      narrow_csc,
                                     narrow_column_walk, narrow_row_walk, wide_row_walk_to_csc};

}  // namespace

void WeightStore::fit_budget(std::vector<Weight*>& pending) const {
  int64_t file = 0, expected = 0;
  for (const auto& [name, w] : weights_)
    if (w.requested || w.matrix->layouts) {
      file += w.file_bytes;
      expected += w.matrix->bytes() + bytes_expected(*w.matrix, w.requested);
    }
  const double budget = std::max(ratio_ * static_cast<double>(file), static_cast<double>(floor_bytes_));
  auto fits = [&] { return static_cast<double>(expected) <= budget; };
  if (ratio_ <= 0 || fits()) return;
  std::sort(pending.begin(), pending.end(),
            [](const Weight* a, const Weight* b) { return a->matrix->nonzeros > b->matrix->nonzeros; });
  for (Narrowing narrow : kNarrowings)
    for (Weight* w : pending) {
      if (fits()) return;
      SparseMatrix& m = *w->matrix;
      const int64_t before = bytes_expected(m, w->requested);
      const bool compact = m.compact;
      const LayoutSet requested = w->requested;
      if (!narrow(m, w->requested)) continue;
      w->requested &= ~m.layouts;  // a layout already held costs nothing more
      const int64_t after = bytes_expected(m, w->requested);
      if (after >= before) {  // one-byte entries at low density: more fillers than bytes saved
        m.compact = compact;
        w->requested = requested;
        continue;
      }
      expected += after - before;
    }
}

void WeightStore::cancel_requests() {
  for (auto& [name, w] : weights_) w.requested = 0;
}

Status WeightStore::build_requested() {
  std::vector<Weight*> pending;
  for (auto& [name, w] : weights_)
    if (w.requested) pending.push_back(&w);
  fit_budget(pending);
  for (Weight* w : pending) {
    SparseMatrix& m = *w->matrix;
    SP_ASSIGN_OR_RETURN(auto codes, codes_of(*w));
    add_layouts(m, *codes, w->requested);
    w->requested = 0;
    // Once the layouts hold every code the file's encoding is no longer needed (move-assigning an
    // empty vector frees its storage; name, shape and view stay).
    if (encoding_held(*w) && sparse_matrix_has_source(m)) w->encoding.partitions = std::vector<Partition>();
  }
  return {};
}

Result<const Tensor*> WeightStore::dense(const std::string& name) {
  Weight& w = weights_.at(name);
  if (w.dense) return w.dense.get();
  SP_ASSIGN_OR_RETURN(auto codes, codes_of(w));
  auto t = std::make_unique<Tensor>(DType::f32, w.encoding.shape);
  float* out = t->f32_data();
  const float* codebook = w.matrix->codebook.data();
  const int64_t rows = w.encoding.view.rows, cols = w.encoding.view.cols;
  const bool transposed = w.encoding.view.transposed;
  codes->visit([&](int64_t r, int64_t c, uint8_t code) {
    out[transposed ? c * rows + r : r * cols + c] = codebook[code];
  });
  w.dense = std::move(t);
  return w.dense.get();
}

WeightMemory WeightStore::memory() const {
  WeightMemory m;
  for (const auto& [name, w] : weights_) {
    m.compressed_in_file += w.file_bytes;
    int64_t dense = w.dense ? static_cast<int64_t>(w.dense->bytes()) : 0;
    m.decompressed += dense;
    m.compressed_in_memory += w.matrix->bytes() + dense + encoding_bytes(w.encoding);
  }
  return m;
}

}  // namespace sparrow
