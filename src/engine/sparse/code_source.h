// Where the engine's layout builders read a weight matrix from: the non-zero codes of W [rows,
// cols], visited without ever forming the dense matrix of codes (unless the caller already has one).
//
// Contract of visit(): sink(row, col, code) is called once for every non-zero code, in an order
// where the columns of any one row, and the rows of any one column, come in increasing order.
// Row-major, column-major and band-by-band walks all qualify, so a builder can fill row-keyed and
// column-keyed layouts alike by counting sort, from any source.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "sparrow/format.h"

namespace sparrow {

struct SparseMatrix;

class CodeSource {
 public:
  using Sink = std::function<void(int64_t row, int64_t col, uint8_t code)>;
  CodeSource(int64_t rows, int64_t cols) : rows_(rows), cols_(cols) {}
  virtual ~CodeSource() = default;
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  virtual void visit(const Sink& sink) const = 0;

 private:
  int64_t rows_, cols_;
};

// A dense code matrix codes[r * cols + c] (0 = zero weight), held by reference; visited row-major.
std::unique_ptr<CodeSource> dense_codes(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols);

// A compressed tensor in the file's encoding, held by reference: its relative-index CSC (any number
// of interleaved row partitions) visited column by column, or its dense codes row by row. Checks
// first that every entry fits the matrix and every code the codebook; errors name the tensor.
Result<std::unique_ptr<CodeSource>> compressed_codes(const CompressedTensor& t);

// The codes of an engine matrix, read back from any one-partition layout it holds (held by
// reference; the matrix may gain layouts while this is visited, none may be removed). Requires
// sparse_matrix_has_source(m).
std::unique_ptr<CodeSource> matrix_codes(const SparseMatrix& m);
bool sparse_matrix_has_source(const SparseMatrix& m);

}  // namespace sparrow
