// Data loading and training options shared by `train` and `compress --data`.
#pragma once

#include <CLI/CLI.hpp>

#include "sparrow/train.h"

namespace sparrow::cli {

struct DataArgs {
  std::string dir;
  float scale = 1.0f / 255.0f;
  float shift = 0.0f;
  int64_t limit = 0;
  int64_t validation = 5000;
};

struct DataSplits {
  LabeledData train, val, test;
};

// train-* minus the last `validation` images for training, those for validation, t10k-* for test.
Result<DataSplits> load_splits(const Model& model, const DataArgs& args);

void add_data_options(CLI::App* cmd, DataArgs& data);
// Epochs and learning rate under `prefix` (e.g. "retrain-"); with no prefix, every option.
void add_train_options(CLI::App* cmd, TrainOptions& options, const std::string& prefix);

}  // namespace sparrow::cli
