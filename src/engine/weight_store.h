// The compressed weights of a .spw model as the executor holds them.
//
// Each weight starts in the file's encoding (the CompressedTensor as read). The first plan that
// runs it on the sparse engine builds the layouts that plan needs (layouts_for) straight from that
// encoding, which is then dropped; layouts that later plans need are built from the ones held. A
// weight whose layer runs dense is decompressed to float32 for that weight alone, and its encoding
// is kept until some plan runs it sparse. No dense matrix of codes is formed on any path.
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
  static Result<std::unique_ptr<WeightStore>> create(std::vector<CompressedTensor> tensors,
                                                     const std::vector<int64_t>& file_bytes, Isa isa);

  bool holds(const std::string& name) const { return weights_.count(name) > 0; }
  // The names held, for graph validation.
  std::vector<std::string> names() const;
  // The weight's tensor shape (as the graph sees it). Requires holds(name).
  const Shape& shape(const std::string& name) const;
  // Shape, codebook and non-zero counts of the weight's matrix; layouts may be absent. Requires holds(name).
  const SparseMatrix& header(const std::string& name) const;
  Isa isa() const { return isa_; }

  // The matrix with the layouts a product on one sample (or on batches) runs on, built on first use
  // (layouts_for). The pointer stays valid, and its layouts unchanged, for the store's lifetime.
  Result<const SparseMatrix*> matrix(const std::string& name, bool one_sample,
                                     InputZeros zeros = InputZeros::unknown);
  // The float32 weight in its original shape, decompressed on first use.
  Result<const Tensor*> dense(const std::string& name);

  WeightMemory memory() const;

 private:
  struct Weight {
    CompressedTensor encoding;             // its partitions are released once the layouts hold every code
    std::unique_ptr<SparseMatrix> matrix;  // header from the start; layouts as plans need them
    std::unique_ptr<Tensor> dense;
    int64_t file_bytes = 0;
  };
  explicit WeightStore(Isa isa) : isa_(isa) {}
  static bool encoding_held(const Weight& w) { return !w.encoding.partitions.empty(); }
  Result<std::unique_ptr<CodeSource>> codes_of(const Weight& w) const;

  std::map<std::string, Weight> weights_;
  Isa isa_;
};

}  // namespace sparrow
