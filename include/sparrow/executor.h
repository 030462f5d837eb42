// The dense reference executor: runs a whole Model on the CPU in float32.
// It is the numerical truth that every compressed or optimized path is checked against.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "sparrow/format.h"
#include "sparrow/model.h"

namespace sparrow {

struct ExecOptions {
  int threads = 0;                                // 0, or more than the hardware has: one per hardware thread
  int64_t memory_limit_bytes = int64_t{8} << 30;  // largest plan (activations + scratch) allowed
  bool sparse = true;                             // run compressed weights on the sparse engine
  // The engine's layouts of the compressed weights take at most this many times the weights' bytes
  // in the file where narrower layouts allow (some speed is given up for it); 0: the fastest
  // layouts whatever their size. Three times: the panelled row walk of a dense-input layer (an
  // LSTM's recurrent matrices) holds about 2.5 bytes per non-zero against about one in the file.
  double weight_memory_ratio = 3.0;
  // ...but never less than this many bytes for all of them: a small model's fastest layouts cost
  // less memory than narrowing them would save in time (LeNet-300-100: 11 us a sample against 26).
  int64_t weight_memory_floor_bytes = int64_t{512} << 10;
  // Keeps every value of the graph readable through Executor::value after a run: no graph pass fuses
  // nodes (bias, activations) and no buffer is reused. For inspection; costs memory and time.
  bool keep_values = false;
  // Times every layer of every run (two clock reads per layer); summarize() then reports each layer's
  // time per run. For profiling; costs a little time per layer.
  bool profile_layers = false;
  // A batch (axis 0 of every input) of a graph that computes each sample on its own may run as chunks
  // of samples, one plan per chunk's shapes: on several threads, each thread runs whole chunks.
  // 0: for graphs with convolutions, chunks whose activations fit in a core's level-2 cache (when
  // the whole batch fits: whole on one thread, one chunk per thread on several where the batch
  // divides evenly; no split when there would be fewer chunks than threads, or when the
  // float32 weights the plan reads outweigh the whole batch's activations: each chunk streams them
  // again); n > 0:
  // chunks of the batch's largest divisor up to n samples, for any such graph; -1: batches always
  // run whole. keep_values implies -1.
  int64_t samples_per_chunk = 0;
  // A plan whose work in all is below this (per layer its multiply-adds, or the values it reads and
  // writes where those are more) runs every layer on the calling thread: its whole run takes some
  // tens of microseconds, and handing layers to other threads (waking them, and each core then
  // reading what another wrote) costs more than they save. 0: every plan uses every thread.
  int64_t one_thread_below_work = int64_t{1} << 18;
};

// One executed layer of a planned model, for `sparrow info`.
struct LayerInfo {
  std::string name;
  std::string op_type;
  std::vector<Shape> output_shapes;
  int64_t params = 0;          // float32 weights read from initializers
  int64_t macs = 0;            // multiply-accumulates per run (non-zero weights only on the sparse engine)
  bool sparse = false;         // runs on the sparse engine
  double seconds_per_run = 0;  // mean over the profiled runs (ExecOptions::profile_layers), else 0
  std::string weight;          // its first compressible weight (as `inspect` and --layer name it), if any
  // On the sparse engine: the layouts its compressed weights are held in (`layout_rows()` names,
  // e.g. "banded", "sliced rows", "row blocks"), each weight's joined by '+', weights by ', '.
  std::string layouts;
};

struct ModelSummary {
  std::vector<Shape> input_shapes;
  std::vector<Shape> output_shapes;
  std::vector<LayerInfo> layers;
  int64_t folded_nodes = 0;  // nodes computed once at plan time (constants, shape chains)
  int64_t params = 0;
  int64_t macs = 0;
  int64_t activation_bytes = 0;           // the arena the values computed per run share
  int64_t activation_bytes_unshared = 0;  // those values' bytes if each had its own buffer
  int64_t profiled_runs = 0;              // runs the layers' times are averaged over
  bool one_thread = false;                // too little work for threads to pay: every layer ran on
                                          // the calling thread
  int64_t samples_per_chunk = 0;          // the batch runs as chunks of this many samples; 0: whole
                                          // (layers then describe one chunk's plan, with the MACs
                                          // of the whole batch and the time of all its chunks,
                                          // summed over threads)
};

// Bytes the weights take, in the file and in memory.
struct WeightMemory {
  int64_t compressed_in_file = 0;    // the .spw's compressed weight sections (0 for ONNX)
  int64_t compressed_in_memory = 0;  // those weights now: engine layouts the plans so far run on, file
                                     // encodings not yet built into layouts, float32 copies for
                                     // layers that run dense
  int64_t decompressed = 0;          // of which float32 copies
  int64_t initializers = 0;          // uncompressed float32 tensors (biases, layers left dense)
};

class Plan;
class BatchSplit;

class Executor {
 public:
  // Takes the model; checks every operator and attribute (errors name the node).
  static Result<std::unique_ptr<Executor>> create(Model model, ExecOptions options = {});
  // A compressed model: layers whose weights are compressed run on the sparse engine straight from
  // their encoding (unless options.sparse is false or a layer is too dense to gain); the others,
  // and every other operator, on the dense executor.
  // Weights stay in their compressed encoding: no layer's float32 weights are formed unless it runs
  // dense, and each layer keeps only the layouts its plans run on (built when first planned).
  static Result<std::unique_ptr<Executor>> create(SpwModel&& spw, ExecOptions options = {});
  static Result<std::unique_ptr<Executor>> create(const SpwModel& spw, ExecOptions options = {});
  ~Executor();

  // The graph as the executor runs it (after its graph passes); for a .spw, compressed weights are not
  // among its initializers.
  const Model& model() const { return model_; }
  int threads() const;
  // Parallel regions so far after which the calling thread had waited far longer on a worker than it
  // had worked (as when another process takes the worker's core): the regions after each ran on the
  // calling thread alone for a while (docs/engine.md, Parallelism). Readable from any thread.
  uint64_t stalls() const;
  // Weight bytes now (grows as plans for new input shapes build the layouts they run on).
  WeightMemory weight_memory() const;

  // Runs the model on one tensor per graph input (in declaration order). Plans once per distinct
  // set of input shapes; after that a run allocates nothing. The returned tensors belong to the
  // executor and stay valid until the next run.
  Result<std::span<const Tensor* const>> run(std::span<const Tensor> inputs);

  // A value (any tensor name of the graph) as computed by the most recent run, or nullptr. Unless
  // options.keep_values, only graph inputs, outputs and constants are kept: other values share bytes
  // by liveness, and a node's output that a pass fused into its reader is never formed. After a run
  // that split its batch (ExecOptions::samples_per_chunk), only the graph outputs.
  const Tensor* value(const std::string& name) const;

  // The input shapes the model declares, with unknown dims set to `batch`.
  Result<std::vector<Shape>> default_input_shapes(int64_t batch = 1) const;
  // Plans for the given input shapes and describes every executed layer.
  Result<ModelSummary> summarize(const std::vector<Shape>& input_shapes);
  // With ExecOptions::profile_layers: forgets the layer times so far (e.g. after warm-up runs,
  // whose first calls into oneDNN compile its kernels).
  void restart_layer_times();

 private:
  Executor(Model model, ExecOptions options);
  Result<Plan*> plan_for(const std::vector<Shape>& input_shapes);
  // The cached plan whose input shapes match `inputs` (moved to most-recent), or nullptr.
  Plan* find_plan(std::span<const Tensor> inputs);
  // The batch split for these input shapes (built when first asked), or nullptr where the batch
  // runs whole (ExecOptions::samples_per_chunk).
  BatchSplit* split_for(const std::vector<Shape>& input_shapes);
  // The cached split whose input shapes match `inputs` (moved to most-recent), or nullptr.
  BatchSplit* find_split(std::span<const Tensor> inputs);

  Model model_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparrow
