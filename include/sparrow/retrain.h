// Deep Compression with retraining: iterative pruning with masked retraining, weight sharing, then
// trained quantization of the codebooks ([LWC], [DC]).
#pragma once

#include "sparrow/compress.h"
#include "sparrow/executor.h"
#include "sparrow/train.h"

namespace sparrow {

struct RetrainOptions {
  int prune_steps = 3;    // the sparsity ramps to its target over this many steps (cubic ramp)
  TrainOptions retrain;   // masked retraining after each pruning step
  TrainOptions finetune;  // codebook fine-tuning after weight sharing (epochs 0: none)
  // With a path, every phase checkpoints its epochs (TrainOptions::checkpoint) to a file of its own
  // beside it (retrain_checkpoint_files), and the path itself records which source and recipe (the
  // metadata) the run belongs to. With `resume`, the phases whose checkpoints hold all their epochs
  // are restored instead of trained, the first unfinished one continues after its last finished
  // epoch, and the result is the one a run never stopped gives. A run of another source or recipe
  // is refused. A run without `resume` first removes the phase files an earlier run left. Phases of
  // no epochs have nothing to checkpoint. The files stay after success; remove_retrain_checkpoints
  // removes them once the result is safe. With a path, it replaces the phases' own checkpoint and
  // resume settings; without one, those apply to every phase alike.
  std::string checkpoint;
  bool resume = false;
};

// The files a run with `checkpoint` set may write: the run record, one per pruning step, one for
// the fine-tuning.
std::vector<std::string> retrain_checkpoint_files(const RetrainOptions& options);

// Removes every file of retrain_checkpoint_files (those that exist).
void remove_retrain_checkpoints(const RetrainOptions& options);

struct RetrainReport {
  std::vector<std::vector<EpochReport>> steps;  // one list per pruning step
  std::vector<EpochReport> finetune;
};

// Prunes `model` step by step to the options' targets, retraining under masks after each step,
// then compresses it (weight sharing, encoding) and fine-tunes the codebooks.
Result<CompressResult> compress_with_retraining(Model model, const CompressOptions& options,
                                                const LabeledData& train, const LabeledData* val,
                                                const RetrainOptions& retrain,
                                                const std::string& metadata_json,
                                                RetrainReport* report = nullptr);

// The fraction of the final sparsity reached after step k of n (cubic ramp: fast first, then gentle).
double sparsity_ramp(int k, int n);

// DSD training ([DSD]): from a trained dense model, prune every compressible layer except the first
// convolution to `sparsity` (largest |w| kept), retrain under masks (`sparse`), then restore the
// pruned connections at zero and retrain everything (`redense`, by default at 1/10 of the rate);
// `iterations` > 1 repeats the sparse and dense phases (DSDSD...).
struct DsdOptions {
  double sparsity = 0.3;
  int iterations = 1;
  TrainOptions sparse;
  TrainOptions redense;
};
struct DsdReport {
  std::vector<std::vector<EpochReport>> phases;  // sparse, dense, sparse, dense...
  double sparse_fraction_after_sparse = 0;       // zeros in the pruned layers after the sparse phase
  double sparse_fraction_after_redense = 0;      // and after re-densing
};
Result<DsdReport> dsd_train(Model& model, const LabeledData& train, const LabeledData* val,
                            const DsdOptions& options);

// Top-1 accuracy of a classifier (output 0 = logits) on labeled `data`, measured by the dense executor.
Result<double> classification_accuracy(Model model, const LabeledData& data, int threads);

// The first output of `model` for every row of `inputs` ([N, ...]), as [N, values per row].
Result<Tensor> model_outputs(const Model& model, const Tensor& inputs, int threads);
// Sets data.teacher to the teacher's outputs for data's rows (for distillation).
Status add_teacher_outputs(const Model& teacher, LabeledData& data, int threads);

// How closely `other` follows `reference` on `inputs` (first outputs): the fraction of rows whose
// top-1 answers agree, and the largest and mean absolute difference of the output values.
struct Agreement {
  double top1 = 0, max_abs_difference = 0, mean_abs_difference = 0;
};
Result<Agreement> output_agreement(const Model& reference, const Model& other, const Tensor& inputs,
                                   int threads);

// Sensitivity scan ([LWC]): each compressible layer pruned alone to each sparsity (no retraining),
// accuracy measured on `data`; per layer, the largest sparsity whose drop stays within
// `allowed_drop` (a fraction: 0.005 = half a point) is proposed.
struct SensitivityPoint {
  double sparsity = 0, accuracy = 0;
};
struct LayerSensitivity {
  std::string weight;
  int64_t weights = 0;
  std::vector<SensitivityPoint> points;
  double proposed_sparsity = 0;
};
struct SensitivityResult {
  double baseline_accuracy = 0;
  std::vector<LayerSensitivity> layers;
};
Result<SensitivityResult> sensitivity_scan(const Model& model, const LabeledData& data,
                                           const std::vector<double>& sparsities, double allowed_drop,
                                           int threads, bool progress);

// Rank sensitivity: each layer factorize_low_rank can factorize, factorized alone (no fine-tuning)
// by the rule params=f for each of `fractions` (in (0, 1)), convolutions by `method`'s conv and
// groups: its factors hold at most that fraction of its weights, or rank 1 where even that holds
// more (SVD and plain Tucker-2),
// accuracy measured on `data`. A fraction at which the layer cannot save weights gives no point;
// layers with no point are left out. Per layer, the smallest fraction whose drop stays within
// `allowed_drop` is proposed (1: leave the layer whole).
struct RankPoint {
  double params = 0;              // the fraction asked for
  int64_t rank = 0, rank_in = 0;  // as factorize_low_rank chose them
  int64_t weights_after = 0;      // in the factors
  double relative_error = 0;      // of the factors' product
  double accuracy = 0;
};
struct LayerRankSensitivity {
  std::string weight;
  int64_t weights = 0;
  std::vector<RankPoint> points;
  double proposed_params = 1;
};
struct RankSensitivityResult {
  double baseline_accuracy = 0;
  std::vector<LayerRankSensitivity> layers;
};
// Channel sensitivity: each channel group that structured pruning can shrink (prune_channels), its
// `fractions` (in (0, 1)) of output channels with the smallest L1 norms removed, alone (no
// retraining), accuracy measured on `data`. Per group, the largest fraction whose drop stays within
// `allowed_drop` is proposed (0: keep every channel).
struct ChannelPoint {
  double fraction = 0;  // the fraction asked for
  int64_t kept = 0;     // channels kept
  double accuracy = 0;
};
struct GroupSensitivity {
  std::vector<std::string> producers;  // node names; the first names the group in rules
  int64_t channels = 0;                // or heads, where head_width > 0 (see ChannelGroup)
  std::vector<ChannelPoint> points;
  double proposed_fraction = 0;
  int64_t head_width = 0;
};
struct ChannelSensitivityResult {
  double baseline_accuracy = 0;
  std::vector<GroupSensitivity> groups;
};
Result<ChannelSensitivityResult> channel_sensitivity_scan(const Model& model, const LabeledData& data,
                                                          const std::vector<double>& fractions,
                                                          double allowed_drop, int threads, bool progress);

Result<RankSensitivityResult> rank_sensitivity_scan(const Model& model, const LabeledData& data,
                                                    const std::vector<double>& fractions, double allowed_drop,
                                                    int threads, bool progress,
                                                    const LowRankRule& method = {});

}  // namespace sparrow
