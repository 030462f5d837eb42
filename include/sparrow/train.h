// Training with LibTorch: the retraining half of Deep Compression (masked retraining after pruning,
// trained quantization of the codebooks) and training from scratch of the built-in architectures.
// The graph is run in LibTorch directly from the IR, so any imported classifier built from the
// supported operators trains. LibTorch appears only inside src/train/.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "sparrow/format.h"
#include "sparrow/model.h"

namespace sparrow {

// Inputs laid out for the model's first input ([N, ...]), one label per row (or none: unlabeled
// data, for distillation) and, for distillation, the teacher's output per row ([N, C]).
struct LabeledData {
  Tensor inputs;
  std::vector<int64_t> labels;
  Tensor teacher;  // empty (shape [0]) unless a teacher's outputs were computed for these rows
  int64_t size() const { return inputs.rank() > 0 ? inputs.dim(0) : 0; }
  bool labeled() const { return !labels.empty(); }
  bool taught() const { return teacher.rank() == 2 && teacher.dim(0) == size() && size() > 0; }
};

// IDX images and labels, normalized as x = raw * scale + shift and shaped [N] + sample_shape.
Result<LabeledData> load_labeled_idx(const std::string& images, const std::string& labels,
                                     const Shape& sample_shape, float scale, float shift, int64_t limit = 0);
// Writes a small MNIST-shaped dataset (the four IDX files, gzip, with MNIST's names) into `dir`,
// for machines without MNIST: ten classes of random strokes, each sample jittered, shifted, scaled
// and noised. Deterministic for a seed.
struct SyntheticDigitsOptions {
  int64_t train = 20000, test = 2000;
  uint64_t seed = 1;
};
Status write_synthetic_digits(const std::string& dir, const SyntheticDigitsOptions& options);

// Rows [begin, end).
LabeledData slice(const LabeledData& d, int64_t begin, int64_t end);
// Keeps rows [0, rows) in place, without a copy (0 <= rows <= d.size()).
void keep_leading_rows(LabeledData& d, int64_t rows);

enum class Optimizer { sgd, adam };
enum class Schedule { constant, step, cosine };

struct EpochReport {
  int epoch = 0;
  double loss = 0, train_accuracy = 0, val_accuracy = -1, seconds = 0;
};

// Knowledge distillation (Hinton et al. 2015): the student learns the teacher's outputs. `kl`: KL
// divergence between temperature-softened outputs (scaled by T^2), weighted by `weight`, plus
// (1 - weight) x cross-entropy on the labels when the data has labels; `mse`: mean squared error
// between the raw outputs, for models that are not classifiers.
enum class DistillLoss { kl, mse };
struct Distillation {
  bool enabled = false;
  DistillLoss loss = DistillLoss::kl;
  double temperature = 4.0;
  double weight = 1.0;  // in [0, 1]; without labels the whole loss is the distillation term
};

// Augmentation of the training rows, drawn anew for each batch from the training seed (so the same
// seed gives the same run): a horizontal flip of each image with probability 1/2, and a random
// crop of the image zero-padded by `crop_padding` on every side (its own size again, at an offset
// within [0, 2 * crop_padding] along each axis). Images only ([N, C, H, W]); not with distillation,
// whose teacher outputs belong to the rows as given.
struct Augmentation {
  bool flip = false;
  int crop_padding = 0;
  bool enabled() const { return flip || crop_padding > 0; }
};

struct TrainOptions {
  Optimizer optimizer = Optimizer::sgd;
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  Schedule schedule = Schedule::cosine;
  int epochs = 5;
  int batch = 64;
  uint64_t seed = 1;
  int threads = 0;        // 0: one per core
  bool progress = false;  // a line per epoch on stderr
  Distillation distill;   // with it, every training set needs its teacher outputs (LabeledData::teacher)
  Augmentation augment;
  // Called after each epoch on the training thread, when set.
  std::function<void(const EpochReport&)> on_epoch;
  // Asked after each epoch, when set: true stops training with an error (the weights as they are).
  std::function<bool()> should_stop;
  // Asked before each batch, when set (e.g. after Ctrl-C): true stops training at once with an error
  // that names the checkpoint to resume from; the weights are put back as the epoch found them.
  std::function<bool()> interrupted;
  // With a path, every finished epoch writes a checkpoint there, atomically: the weights, the
  // optimizer's state, the random generator's and the epochs' reports. With `resume`, training
  // continues after the epoch a checkpoint at that path holds, and gives the same weights as a run
  // never stopped; a checkpoint of another model, data size, batch, epoch count or optimizer
  // setting is refused.
  std::string checkpoint;
  bool resume = false;
};

// Trains the float32 weights and biases of every Gemm, MatMul and Conv in place, minimizing the
// cross-entropy of output 0. With `masks` (weight name -> 0/1 tensor of its shape), masked weights
// stay exactly zero: their gradients are masked and the weights re-masked after every step, so
// momentum cannot revive them.
Result<std::vector<EpochReport>> train_model(Model& model, const LabeledData& train, const LabeledData* val,
                                             const TrainOptions& options,
                                             const std::map<std::string, Tensor>* masks = nullptr);

// Trained quantization: fine-tunes the codebooks of the compressed tensors with the assignments
// fixed (the gradient of a shared value is the sum of the gradients of the weights that share it;
// code 0 stays exactly zero). The other weights and biases train as usual.
Result<std::vector<EpochReport>> finetune_codebooks(SpwModel& spw, const LabeledData& train,
                                                    const LabeledData* val, const TrainOptions& options);

// The built-in architectures: "lenet300" (LeNet-300-100) and "lenet5" (the Caffe LeNet-5 of [LWC],
// 20-50-500-10), for [N, 1, 28, 28] inputs, randomly initialized for a seed.
Result<Model> make_architecture(const std::string& name, uint64_t seed);

}  // namespace sparrow
