// Training data for the CLI: MNIST-named IDX files in a directory, or .npy arrays; and the options
// that choose them and the training settings.
#include <filesystem>

#include "cli/commands.h"
#include "cli/train_data.h"
#include "sparrow/dataset.h"

namespace sparrow::cli {

namespace {

// The last `validation` rows (at most a fifth) held out from the first `limit` (0: all).
void split_off_validation(LabeledData all, const DataArgs& a, DataSplits& d) {
  if (a.limit > 0 && a.limit < all.size()) all = slice(all, 0, a.limit);
  const int64_t val = std::min<int64_t>(a.validation, all.size() / 5);
  d.train = slice(all, 0, all.size() - val);
  d.val = slice(all, all.size() - val, all.size());
}

Result<DataSplits> load_idx_splits(const Shape& sample, const DataArgs& a) {
  const float scale = a.scale.value_or(1.0f / 255.0f), shift = a.shift.value_or(0.0f);
  auto path = [&](const char* name) { return (std::filesystem::path(a.dir) / name).string(); };
  DataSplits d;
  SP_ASSIGN_OR_RETURN(LabeledData train,
                      load_labeled_idx(path("train-images-idx3-ubyte.gz"), path("train-labels-idx1-ubyte.gz"),
                                       sample, scale, shift, a.limit));
  split_off_validation(std::move(train), a, d);
  SP_ASSIGN_OR_RETURN(d.test, load_labeled_idx(path("t10k-images-idx3-ubyte.gz"),
                                               path("t10k-labels-idx1-ubyte.gz"), sample, scale, shift, 0));
  return d;
}

// Inputs as float32 [N] + sample, where the model declares each dim of a sample (unknown dims match
// anything).
Result<Tensor> npy_inputs(const std::string& path, const Shape& sample) {
  SP_ASSIGN_OR_RETURN(Tensor x, read_npy(path));
  Shape want = sample;
  want.insert(want.begin(), -1);
  bool fits = x.rank() == static_cast<int>(want.size()) && x.rank() > 0;
  for (int i = 1; fits && i < x.rank(); ++i)
    fits = want[static_cast<size_t>(i)] < 0 || want[static_cast<size_t>(i)] == x.dim(i);
  if (!fits)
    return errorf("{}: inputs of shape {} do not fit the model's input [N] + {}", path, shape_str(x.shape()),
                  shape_str(sample));
  if (x.dtype() == DType::f32) return x;
  Tensor f(DType::f32, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) f.f32_data()[i] = static_cast<float>(x.i64_data()[i]);
  return f;
}

Result<std::vector<int64_t>> npy_labels(const std::string& path, int64_t rows) {
  SP_ASSIGN_OR_RETURN(Tensor y, read_npy(path));
  if (y.dtype() != DType::i64 || y.rank() != 1 || y.dim(0) != rows)
    return errorf("{}: labels must be {} integers (one per input row), got {} {}", path, rows,
                  dtype_name(y.dtype()), shape_str(y.shape()));
  for (int64_t v : y.i64_span())
    if (v < 0) return errorf("{}: label {} is negative", path, v);
  return std::vector<int64_t>(y.i64_data(), y.i64_data() + rows);
}

// An .npy of inputs already laid out and normalized (and optionally an .npy of labels): the held-out
// validation rows are also the test split.
Result<DataSplits> load_npy_splits(const Shape& sample, const DataArgs& a) {
  if (a.scale || a.shift)
    return errorf("--scale and --shift normalize IDX images; {} holds inputs already normalized", a.dir);
  LabeledData all;
  SP_ASSIGN_OR_RETURN(all.inputs, npy_inputs(a.dir, sample));
  if (!a.labels.empty()) {
    SP_ASSIGN_OR_RETURN(all.labels, npy_labels(a.labels, all.size()));
  }
  DataSplits d;
  split_off_validation(std::move(all), a, d);
  d.test = d.val;
  return d;
}

}  // namespace

Result<DataSplits> load_splits(const Model& m, const DataArgs& a) {
  if (m.inputs.empty() || !m.inputs[0].has_shape)
    return errorf("{}: the model's input declares no shape", m.source);
  Shape sample(m.inputs[0].dims.begin() + 1, m.inputs[0].dims.end());
  if (std::filesystem::path(a.dir).extension() == ".npy") return load_npy_splits(sample, a);
  if (!a.labels.empty()) return errorf("--labels goes with --data FILE.npy; IDX data holds its own labels");
  return load_idx_splits(sample, a);
}

void add_data_options(CLI::App* cmd, DataArgs& d) {
  cmd->add_option("--labels", d.labels, "With --data FILE.npy: the labels, one integer per input row (.npy)");
  cmd->add_option("--scale", d.scale, "IDX images: x = raw * scale + shift (default 1/255)");
  cmd->add_option("--shift", d.shift, "IDX images: normalization offset (default 0)");
  cmd->add_option("--limit", d.limit, "Use only the first N training images")->check(CLI::NonNegativeNumber);
  cmd->add_option("--validation", d.validation,
                  "Training rows held out for validation (default 5000, at most a fifth)")
      ->check(CLI::NonNegativeNumber);
}

void add_train_options(CLI::App* cmd, TrainOptions& o, const std::string& prefix) {
  cmd->add_option("--" + prefix + "epochs", o.epochs, "Epochs")->check(CLI::Range(0, 10000));
  cmd->add_option("--" + prefix + "lr", o.lr, "Learning rate")
      ->check(kFiniteNumber)
      ->check(CLI::PositiveNumber);
  if (!prefix.empty()) return;
  cmd->add_option("--batch", o.batch, "Batch size")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--momentum", o.momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--weight-decay", o.weight_decay, "L2 weight decay")
      ->check(kFiniteNumber)
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--optimizer", o.optimizer, "sgd or adam")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, Optimizer>{{"sgd", Optimizer::sgd}, {"adam", Optimizer::adam}}));
  cmd->add_option("--schedule", o.schedule, "Learning-rate schedule: cosine, step or constant")
      ->transform(CLI::CheckedTransformer(std::map<std::string, Schedule>{
          {"cosine", Schedule::cosine}, {"step", Schedule::step}, {"constant", Schedule::constant}}));
  cmd->add_option("--seed", o.seed, "Seed for initialization and shuffling");
}

}  // namespace sparrow::cli
