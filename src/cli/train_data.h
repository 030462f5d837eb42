// Data loading and training options shared by `train` and `compress --data`.
#pragma once

#include <optional>

#include <CLI/CLI.hpp>

#include "sparrow/train.h"

namespace sparrow::cli {

// --data names the source (load_splits tells them apart):
// - a directory of MNIST-named IDX files, or of CIFAR-10's binary batches: pixel bytes, normalized
//   as x = (raw * scale + shift - mean[c]) / std[c], c the channel (axis 1 of the input);
// - FILE.npy: inputs already laid out and normalized as the model expects; labels from --labels
//   FILE.npy;
// - FILE.npz: the same, as arrays 'x' (inputs) and optionally 'y' (labels) of one archive.
struct DataArgs {
  std::string dir;
  std::string labels;
  std::optional<float> scale;  // pixel bytes: default 1/255
  std::optional<float> shift;  // pixel bytes: default 0
  std::vector<float> mean;     // pixel bytes, per channel (or one for all): default 0
  std::vector<float> std;      // pixel bytes, per channel (or one for all): default 1
  int64_t limit = 0;
  int64_t validation = 5000;
  int64_t resize = 0;           // image folders: the shorter side scaled to this first (0: just covering)
  std::string cache;            // where decoded sources are kept as float32 rows (empty: none; not for .npy)
  double cache_limit_gib = 20;  // what the cache may hold; the least recently used entries go first
};

struct DataSplits {
  LabeledData train, val, test;
};

// IDX: train-* minus the last `validation` images for training, those for validation, t10k-* for
// test; CIFAR-10: data_batch_1.bin ... data_batch_5.bin (those present, the first required) the
// same way, test_batch.bin for test. NPY and NPZ: the rows minus the last `validation` for
// training, those for validation and test.
Result<DataSplits> load_splits(const Model& model, const DataArgs& args);
// The rows to evaluate on, with the source's labels if it holds them (else --labels'): the test
// split of IDX and CIFAR-10 (t10k-*, test_batch.bin), every row of an .npy or .npz.
Result<LabeledData> load_test_set(const Model& model, const DataArgs& args);
// Whether data at `path` holds its own labels (IDX and CIFAR-10 directories; .npz files may).
bool holds_labels(const std::string& path);

void add_data_options(CLI::App* cmd, DataArgs& data);
// --distill-loss, --temperature and --distill-weight (knowledge distillation's settings).
void add_distillation_options(CLI::App* cmd, Distillation& distill);
// --flip and --crop-padding (training augmentation).
void add_augmentation_options(CLI::App* cmd, Augmentation& augment);
// Epochs and learning rate under `prefix` (e.g. "retrain-"); with no prefix, every option.
void add_train_options(CLI::App* cmd, TrainOptions& options, const std::string& prefix);

}  // namespace sparrow::cli
