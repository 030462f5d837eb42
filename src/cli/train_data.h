// Data loading and training options shared by `train` and `compress --data`.
#pragma once

#include <optional>

#include <CLI/CLI.hpp>

#include "sparrow/train.h"

namespace sparrow::cli {

// --data DIR (MNIST-named IDX files; --scale/--shift normalize their bytes) or --data FILE.npy
// (inputs already laid out and normalized as the model expects; labels from --labels FILE.npy).
struct DataArgs {
  std::string dir;
  std::string labels;
  std::optional<float> scale;  // IDX: default 1/255
  std::optional<float> shift;  // IDX: default 0
  int64_t limit = 0;
  int64_t validation = 5000;
};

struct DataSplits {
  LabeledData train, val, test;
};

// IDX: train-* minus the last `validation` images for training, those for validation, t10k-* for
// test. NPY: the rows minus the last `validation` for training, those for validation and test.
Result<DataSplits> load_splits(const Model& model, const DataArgs& args);

void add_data_options(CLI::App* cmd, DataArgs& data);
// Epochs and learning rate under `prefix` (e.g. "retrain-"); with no prefix, every option.
void add_train_options(CLI::App* cmd, TrainOptions& options, const std::string& prefix);

}  // namespace sparrow::cli
