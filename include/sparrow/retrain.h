// Deep Compression with retraining: iterative pruning with masked retraining, weight sharing, then
// trained quantization of the codebooks ([LWC], [DC]).
#pragma once

#include "sparrow/compress.h"
#include "sparrow/train.h"

namespace sparrow {

struct RetrainOptions {
  int prune_steps = 3;        // the sparsity ramps to its target over this many steps (cubic ramp)
  TrainOptions retrain;       // masked retraining after each pruning step
  TrainOptions finetune;      // codebook fine-tuning after weight sharing (epochs 0: none)
};

struct RetrainReport {
  std::vector<std::vector<EpochReport>> steps;  // one list per pruning step
  std::vector<EpochReport> finetune;
};

// Prunes `model` step by step to the options' targets, retraining under masks after each step,
// then compresses it (weight sharing, encoding) and fine-tunes the codebooks.
Result<CompressResult> compress_with_retraining(Model model, const CompressOptions& options, const LabeledData& train,
                                                const LabeledData* val, const RetrainOptions& retrain,
                                                const std::string& metadata_json, RetrainReport* report = nullptr);

// The fraction of the final sparsity reached after step k of n (cubic ramp: fast first, then gentle).
double sparsity_ramp(int k, int n);

}  // namespace sparrow
