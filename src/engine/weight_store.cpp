#include "engine/weight_store.h"

#include "engine/sparse/code_source.h"

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
                                                         const std::vector<int64_t>& file_bytes, Isa isa) {
  auto store = std::unique_ptr<WeightStore>(new WeightStore(isa));
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

Result<const SparseMatrix*> WeightStore::matrix(const std::string& name, bool one_sample, InputZeros zeros) {
  Weight& w = weights_.at(name);
  SparseMatrix& m = *w.matrix;
  const LayoutSet want = layouts_for(m, isa_, one_sample, zeros);
  if (!m.has(want)) {
    SP_ASSIGN_OR_RETURN(auto codes, codes_of(w));
    add_layouts(m, *codes, want);
  }
  // Once the layouts hold every code the file's encoding is no longer needed (move-assigning an
  // empty vector frees its storage; name, shape and view stay).
  if (encoding_held(w) && sparse_matrix_has_source(m)) w.encoding.partitions = std::vector<Partition>();
  return &m;
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
