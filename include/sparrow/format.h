// Compressed weights and the .spw file.
//
// A CompressedTensor is a weight tensor after pruning and weight sharing, in the encoding that
// both the file stores and the engine executes: a codebook of 2^bits shared values (code 0 is
// always exactly 0.0) and, per partition, a relative-index CSC matrix of codes. The byte layout
// of the file is specified in docs/format.md and at the top of src/format/spw_format.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sparrow/model.h"

namespace sparrow {

enum class WeightLayout : uint8_t {
  sparse = 0,  // relative-index CSC per partition
  dense = 1,   // one code per weight, row-major
};

// The weight tensor viewed as a matrix [rows, cols]: rows are output units (interleaved over
// partitions), cols are inputs. For a tensor stored [out, in...] (Conv, Gemm transB=1, LSTM)
// rows = the leading dims given by the caller; for a 2-D tensor stored [in, out] (MatMul,
// Gemm transB=0) `transposed` is set and rows = shape[1].
struct MatrixView {
  int64_t rows = 0;
  int64_t cols = 0;
  bool transposed = false;
};

// Rows of one partition: global row i belongs to partition i % P as local row i / P.
struct Partition {
  std::vector<uint32_t> col_counts;  // entries per column (fillers included), cols values
  std::vector<uint8_t> codes;        // codebook index per entry; 0 marks a filler
  std::vector<uint8_t> gaps;         // zero rows skipped before each entry (sparse layout)
};

struct CompressedTensor {
  std::string name;  // the initializer it replaces
  Shape shape;
  MatrixView view;
  WeightLayout layout = WeightLayout::sparse;
  int weight_bits = 0;  // 1..8: codebook of 2^weight_bits entries
  int index_bits = 0;   // 2..8: gap width (sparse layout)
  std::vector<float> codebook;
  std::vector<Partition> partitions;  // sparse: P partitions; dense: one, with codes only

  int64_t entries() const;   // stored entries, fillers included
  int64_t fillers() const;   // entries with code 0 (sparse layout)
  int64_t nonzeros() const;  // weights with a non-zero code
  int64_t numel() const { return view.rows * view.cols; }
};

// Rows of partition p of `partitions`: the global rows i with i % partitions == p.
int64_t partition_rows(int64_t rows, int partitions, int p);
// Checks that sparse partition p fits the matrix: one count per column, one gap per code, counts
// covering exactly the entries, and no column's entries running past the partition's rows.
Status check_partition(const CompressedTensor& t, int p);
// Checks a whole encoding before it is decoded: every partition (sparse) or one code per weight
// (dense), and every code within the codebook. Errors name the partition and column; callers add
// the tensor.
Status check_encoding(const CompressedTensor& t);

// Encodes a code matrix (codes[r * cols + c], 0 = zero weight) in the relative-index layout with
// `partitions` interleaved row partitions and gaps of `index_bits` bits.
CompressedTensor encode_sparse(std::vector<uint8_t> const& codes, MatrixView view, int partitions,
                               int index_bits);
// Stores the code matrix as is.
CompressedTensor encode_dense(std::vector<uint8_t> const& codes, MatrixView view);
// The code matrix back (codes[r * cols + c]); fails if the entries do not fit the matrix.
Result<std::vector<uint8_t>> decode_codes(const CompressedTensor& t);
// The float32 weight tensor in its original shape and layout.
Result<Tensor> decompress(const CompressedTensor& t);

// Where the bytes of a .spw file go. The fields sum exactly to file_bytes.
struct ByteBreakdown {
  int64_t codes = 0, gaps = 0, fillers = 0, pointers = 0, codebooks = 0, biases = 0, dense_weights = 0,
          graph = 0, headers = 0;
  int64_t total() const {
    return codes + gaps + fillers + pointers + codebooks + biases + dense_weights + graph + headers;
  }
};

// Per compressed tensor: stored stream sizes, as written (after optional Huffman coding).
struct TensorStorage {
  bool huffman_codes = false, huffman_gaps = false;
  int count_bits = 0;  // width of each column count
  uint64_t code_bits = 0, gap_bits = 0, count_stream_bits = 0;
  uint64_t filler_code_bits = 0, filler_gap_bits = 0;
  uint64_t table_bytes = 0;    // Huffman length tables
  uint64_t section_bytes = 0;  // the whole section
};

// Storage of one compressed tensor, in bits, the way Deep Compression tabulates it.
struct TensorSizes {
  int64_t weights = 0, nonzeros = 0, entries = 0, fillers = 0;
  double pq_bits = 0;      // pruning + quantization: packed codes, gaps, column counts and codebook
  double stored_bits = 0;  // as stored (after optional Huffman coding), Huffman tables included
  double code_bits_per_entry = 0, gap_bits_per_entry = 0;  // as stored
  double dense_bits() const { return 32.0 * static_cast<double>(weights); }
};
TensorSizes tensor_sizes(const CompressedTensor& t, const TensorStorage& s);

struct SpwModel {
  Model graph;  // every node; initializers hold only the uncompressed tensors
  std::vector<CompressedTensor> tensors;
  std::string metadata_json;  // tool version, options, source hash
  // Filled by write_spw / read_spw:
  std::vector<TensorStorage> storage;  // one per tensor
  ByteBreakdown breakdown;
  int64_t file_bytes = 0;

  // The model with every compressed tensor decompressed back into its initializer.
  Result<Model> to_dense_model() const;
};

// The .spw minor version written by default: 1.2 stores the graph in Sparrow's own encoding,
// deflated; 1.1 stored that encoding as it is; 1.0 stored the graph as ONNX, which reading and
// writing then need the ONNX library for (sparrow/onnx.h).
inline constexpr int kSpwVersionMinor = 2;

// Serializes to bytes (Huffman-codes each stream where that is smaller, when `huffman`), filling
// model.storage, model.breakdown and model.file_bytes. `minor_version` 1 or 0 writes format 1.1 or
// 1.0, for older readers.
Result<std::string> serialize_spw(SpwModel& model, bool huffman, int minor_version = kSpwVersionMinor);
// serialize_spw, then an atomic write to `path`.
Status write_spw(SpwModel& model, const std::string& path, bool huffman);
// Reads and fully validates a .spw file (checksums, offsets, counts, codes), format 1.0 to 1.2.
Result<SpwModel> parse_spw(std::string_view bytes, const std::string& source);
Result<SpwModel> read_spw(const std::string& path);

}  // namespace sparrow
