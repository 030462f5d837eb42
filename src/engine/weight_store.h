// The compressed weights of a .spw model as the executor holds them.
//
// Each weight starts in the file's encoding (the CompressedTensor as read). A plan asks for the
// layouts its products run on (request); once every node is planned, build_requested() chooses
// them within the memory budget and builds them straight from that encoding, which is then
// dropped; layouts that later plans need are built from the ones held. A weight whose layer runs
// dense is decompressed to float32 for that weight alone, and its encoding is kept until some plan
// runs it sparse. No dense matrix of codes is formed on any path.
//
// The budget: the layouts of the weights run sparse take at most `ratio` times their sections'
// bytes in the file (ExecOptions::weight_memory_ratio), or `floor_bytes` if that is more, as
// estimated from the headers. The fastest
// layouts (layouts_for) are kept when they fit; otherwise they give way, largest matrix first, in
// this order, until the estimate fits: a graph input's column walk where its row walk is also
// asked for (dense inputs are the common case), one-byte CSR entries for batches, one-byte CSC
// entries whatever their fillers, a one-byte CSC for a banded CSC or tiles, one-byte sliced rows
// whatever their fillers (a codebook of up to 32 entries: one-byte entries over 8-column panels),
// the CSC for a wider codebook's sliced rows; a step that would not shrink a matrix (one-byte entries at low density,
// where fillers outweigh the byte saved) is skipped. One-byte entries are one flag per matrix
// (SparseMatrix::compact): every gap-coded layout of a matrix narrowed for one use narrows with it.
// A budget the narrowest layouts cannot meet leaves them narrowest.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/sparse/sparse_matrix.h"
#include "sparrow/executor.h"

namespace sparrow {

class WeightStore {
 public:
  // Takes the tensors; `file_bytes[i]` is the size of tensor i's section in the file. Checks every
  // encoding (entries within the matrix, codes within the codebook); errors name the tensor.
  // `ratio` <= 0: no budget.
  static Result<std::unique_ptr<WeightStore>> create(std::vector<CompressedTensor> tensors,
                                                     const std::vector<int64_t>& file_bytes, Isa isa,
                                                     double ratio = 0.0, int64_t floor_bytes = 0);

  bool holds(const std::string& name) const { return weights_.count(name) > 0; }
  // The names held, for graph validation.
  std::vector<std::string> names() const;
  // The weight's tensor shape (as the graph sees it). Requires holds(name).
  const Shape& shape(const std::string& name) const;
  // Shape, codebook and non-zero counts of the weight's matrix; layouts may be absent. Requires holds(name).
  const SparseMatrix& header(const std::string& name) const;
  Isa isa() const { return isa_; }

  // Asks for the layouts a product on one sample (or on batches) runs on (layouts_for). The matrix
  // gains them, or the narrower ones the budget leaves, at build_requested(); until then only its
  // header may be read. The pointer stays valid for the store's lifetime, and the layouts, once
  // built, unchanged. Requires holds(name).
  const SparseMatrix* request(const std::string& name, bool one_sample,
                              InputZeros zeros = InputZeros::unknown);
  // Chooses and builds every requested layout (see the budget above).
  Status build_requested();
  // Forgets the layouts requested and not built (a plan that failed).
  void cancel_requests();
  // The float32 weight in its original shape, decompressed on first use.
  Result<const Tensor*> dense(const std::string& name);

  WeightMemory memory() const;

 private:
  struct Weight {
    CompressedTensor encoding;             // its partitions are released once the layouts hold every code
    std::unique_ptr<SparseMatrix> matrix;  // header from the start; layouts as plans need them
    std::unique_ptr<Tensor> dense;
    int64_t file_bytes = 0;
    LayoutSet requested = 0;  // asked for and not built yet
  };
  WeightStore(Isa isa, double ratio, int64_t floor_bytes)
      : isa_(isa), ratio_(ratio), floor_bytes_(floor_bytes) {}
  void fit_budget(std::vector<Weight*>& pending) const;
  static bool encoding_held(const Weight& w) { return !w.encoding.partitions.empty(); }
  Result<std::unique_ptr<CodeSource>> codes_of(const Weight& w) const;

  std::map<std::string, Weight> weights_;
  Isa isa_;
  double ratio_;
  int64_t floor_bytes_;
};

}  // namespace sparrow
