// The boundary between Sparrow and its LibTorch plugin. LibTorch costs about half a second of
// start-up in every process that links it, so the training code lives in a separately loaded
// module (libsparrow_training.so); train_model and finetune_codebooks open it on first use.
#pragma once

#include "sparrow/train.h"

namespace sparrow {

struct TrainingApi {
  Result<std::vector<EpochReport>> (*train_model)(Model& model, const LabeledData& train,
                                                  const LabeledData* val, const TrainOptions& options,
                                                  const std::map<std::string, Tensor>* masks);
  Result<std::vector<EpochReport>> (*finetune_codebooks)(SpwModel& spw, const LabeledData& train,
                                                         const LabeledData* val, const TrainOptions& options);
};

}  // namespace sparrow

// Exported by the plugin.
extern "C" const sparrow::TrainingApi* sparrow_training_api();
