// Helpers shared by the unit tests.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/graph_passes.h"
#include "engine/sparse/plane_window.h"
#include "sparrow/sparrow.h"

namespace sparrow::test {

// A tensor from a shape and values.
Tensor make_f32(Shape shape, std::vector<float> values);
Tensor make_i64(Shape shape, std::vector<int64_t> values);
// Uniform random values in [-1, 1) from a fixed seed.
Tensor random_f32(Shape shape, uint32_t seed);

// A matrix of weight-sharing codes (codes[r * cols + c], 0 = pruned) with its codebook.
struct CodeMatrix {
  std::vector<uint8_t> codes;
  int64_t rows, cols;
  std::vector<float> codebook;  // entry 0 is 0
};
// Each position non-zero with probability `density`; the non-zero positions cycle through every
// code so that each is used. Codebook values uniform in [-1, 1) from a fixed seed.
CodeMatrix random_code_matrix(int64_t rows, int64_t cols, double density, int codebook_size, uint32_t seed);

// Runs one node. Float inputs become graph inputs; int64 inputs become initializers (constants),
// as shape-like inputs are in exported models. Empty tensors with rank 0 and 0 elements are not
// used; pass `omitted` indices for optional inputs that are left out.
Result<std::vector<Tensor>> run_op(const std::string& op_type, std::map<std::string, AttrValue> attrs,
                                   const std::vector<Tensor>& inputs, int64_t opset = 13, size_t outputs = 1,
                                   std::vector<size_t> omitted = {}, int threads = 1);

// The graph passes' view of a model's constants: the shapes of its initializers.
ConstantShape initializer_shapes(const Model& m);

// `model` compressed at `sparsity` with every layer kept compressed however small (no float
// fallback: tests mean to run them on the engine), written as a .spw and read back.
SpwModel compressed_spw(const Model& model, double sparsity, BlockShape block = {}, int partitions = 1);

// The model's first output on the dense executor for one input (an empty tensor, and a test
// failure, where it cannot run).
Tensor run_dense(const Model& m, const Tensor& x);

// Structured pruning of `m` under `rule` ("l1=0.5"...) and per-layer rules; the groups it reports
// (none, and a test failure, where it fails).
std::vector<ChannelGroup> prune_structured(Model& m, const std::string& rule,
                                           const std::map<std::string, StructuredRule>& per_layer = {});

// A small model: Conv -> Relu -> MaxPool -> Flatten -> Gemm, input [N, 1, 8, 8], 10 outputs.
Model small_cnn(uint32_t seed = 7);

// Options for `threads` threads under which every plan uses every thread however little its work
// (ExecOptions::one_thread_below_work 0), so that tests on small models reach the threaded paths.
inline ExecOptions threaded(int threads) {
  ExecOptions o{threads};
  o.one_thread_below_work = 0;
  return o;
}

// Largest |a - b| divided by the largest |b| (or 1e-6 if b is all zeros).
double max_relative_error(const Tensor& a, const Tensor& b);

struct CliResult {
  int exit_code = -1;  // -1 if the process died from a signal
  int signal = 0;
  std::string output;  // stdout and stderr together
};
// Runs the sparrow CLI with the given arguments (shell-quoted by the caller).
CliResult run_cli(const std::string& args);

// A fresh empty directory under the test temp dir.
std::string temp_dir(const std::string& name);

// The max of plane x[in_h, in_w] over output (oh, ow)'s window of `win` (padding never counts;
// -inf for a window of padding only), and whether a NaN was in it.
struct WindowMax {
  float value;
  bool nan;
};
WindowMax window_max(const float* x, const Window2d& win, int64_t oh, int64_t ow);

}  // namespace sparrow::test
