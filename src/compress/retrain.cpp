#include <algorithm>
#include <cmath>
#include <filesystem>

#include "sparrow/retrain.h"

#include "core/file.h"

namespace sparrow {

double sparsity_ramp(int k, int n) {
  return n <= 0 ? 1.0 : 1.0 - std::pow(1.0 - static_cast<double>(k) / n, 3);
}

namespace {

// Prunes every compressible layer that is to be compressed (not excluded, not below min_weights) to
// `fraction` of its target and returns the masks.
std::map<std::string, Tensor> prune_step(Model& model, const CompressOptions& o, double fraction) {
  std::map<std::string, Tensor> masks;
  for (const auto& layer : find_compressible_layers(model)) {
    LayerSettings s = resolve_layer_settings(o, layer);
    if (s.exclude || (!s.prune.sparsity && !s.prune.quality)) continue;
    if (model.initializers.at(layer.weight).numel() < o.min_weights) continue;
    PruneRule rule = s.prune;
    if (rule.sparsity) rule.sparsity = *rule.sparsity * fraction;
    if (rule.quality) rule.quality = *rule.quality * fraction;
    Tensor& w = model.initializers.at(layer.weight);
    prune_layer(w.f32_span(), layer.view, rule);
    Tensor mask(DType::f32, w.shape());
    for (int64_t i = 0; i < w.numel(); ++i) mask.f32_data()[i] = w.f32_data()[i] != 0.0f ? 1.0f : 0.0f;
    masks[layer.weight] = std::move(mask);
  }
  return masks;
}

// The run record of a checkpointed run holds the metadata of the compression (source, recipe,
// retraining settings): a resumed run must have the same. A fresh run first removes the phase
// files an earlier run left, which a later --resume would otherwise take for its own.
Status open_run_record(const RetrainOptions& r, const std::string& metadata_json) {
  if (!r.resume) {
    remove_retrain_checkpoints(r);
    return write_file_atomic(r.checkpoint, metadata_json);
  }
  auto recorded = read_file(r.checkpoint);
  if (!recorded.ok())
    return errorf("--resume: no checkpoint at {} to resume from (the run record is missing)", r.checkpoint);
  if (std::string_view(recorded->data(), recorded->size()) != metadata_json)
    return errorf(
        "{}: written for another source model, recipe or retraining setting; resume with the settings it "
        "started with, or start afresh without --resume",
        r.checkpoint);
  return {};
}

// One phase's training settings with its checkpoint: resumed when its file exists and every earlier
// phase was restored or resumed (`resuming`, cleared once a phase starts afresh). A phase of no
// epochs has nothing to save or restore.
TrainOptions phase_options(TrainOptions phase, const std::string& file, bool& resuming) {
  if (phase.epochs == 0) {
    phase.checkpoint.clear();
    phase.resume = false;
    return phase;
  }
  phase.checkpoint = file;
  resuming = resuming && std::filesystem::exists(file);
  phase.resume = resuming;
  return phase;
}

double zero_fraction(const Model& m, const std::vector<std::string>& names) {
  int64_t zeros = 0, total = 0;
  for (const auto& n : names) {
    const Tensor& t = m.initializers.at(n);
    zeros += std::count(t.f32_span().begin(), t.f32_span().end(), 0.0f);
    total += t.numel();
  }
  return total ? static_cast<double>(zeros) / static_cast<double>(total) : 0.0;
}

}  // namespace

Result<DsdReport> dsd_train(Model& model, const LabeledData& train, const LabeledData* val,
                            const DsdOptions& o) {
  if (!(o.sparsity >= 0 && o.sparsity < 1)) return errorf("DSD sparsity {} is outside [0, 1)", o.sparsity);
  std::vector<CompressibleLayer> layers = find_compressible_layers(model);
  if (!layers.empty() && layers.front().conv)
    layers.erase(layers.begin());  // [DSD]: keep the first conv dense
  std::vector<std::string> names;
  for (const auto& l : layers) names.push_back(l.weight);
  DsdReport report;
  for (int it = 0; it < o.iterations; ++it) {
    std::map<std::string, Tensor> masks;
    for (const auto& name : names) {
      Tensor& w = model.initializers.at(name);
      prune_weights(w.f32_span(), PruneRule{o.sparsity, std::nullopt});
      Tensor mask(DType::f32, w.shape());
      for (int64_t i = 0; i < w.numel(); ++i) mask.f32_data()[i] = w.f32_data()[i] != 0.0f ? 1.0f : 0.0f;
      masks[name] = std::move(mask);
    }
    if (o.sparse.progress)
      fmt::print(stderr, "DSD {}: sparse phase ({:.0f}% pruned)\n", it + 1, 100 * o.sparsity);
    SP_ASSIGN_OR_RETURN(auto sparse, train_model(model, train, val, o.sparse, &masks));
    report.phases.push_back(std::move(sparse));
    report.sparse_fraction_after_sparse = zero_fraction(model, names);
    if (o.redense.progress) fmt::print(stderr, "DSD {}: re-dense phase\n", it + 1);
    SP_ASSIGN_OR_RETURN(auto dense, train_model(model, train, val, o.redense));
    report.phases.push_back(std::move(dense));
    report.sparse_fraction_after_redense = zero_fraction(model, names);
  }
  return report;
}

Result<CompressResult> compress_with_retraining(Model model, const CompressOptions& given,
                                                const LabeledData& train, const LabeledData* val,
                                                const RetrainOptions& r, const std::string& metadata_json,
                                                RetrainReport* report) {
  SP_RETURN_IF_ERROR(given.validate());
  SP_ASSIGN_OR_RETURN(const CompressOptions options, expand_layer_patterns(model, given));
  SP_RETURN_IF_ERROR(check_layer_settings(model, options));
  if (options.prunes_channels() || options.factorizes()) {  // the smaller layers are pruned and retrained
    SP_ASSIGN_OR_RETURN(ReshapedModel reshaped, reshape_model(std::move(model), options, metadata_json));
    SP_ASSIGN_OR_RETURN(CompressResult result,
                        compress_with_retraining(std::move(reshaped.model), reshaped.options, train, val, r,
                                                 reshaped.metadata_json, report));
    result.channel_groups = std::move(reshaped.channel_groups);
    result.factorized = std::move(reshaped.factorized);
    return result;
  }
  const bool checkpointed = !r.checkpoint.empty();
  if (checkpointed) SP_RETURN_IF_ERROR(open_run_record(r, metadata_json));
  const std::vector<std::string> files = retrain_checkpoint_files(r);
  bool resuming = checkpointed && r.resume;
  auto phase = [&](const TrainOptions& o, size_t file) {
    return checkpointed ? phase_options(o, files[file], resuming) : o;
  };
  for (int k = 1; k <= r.prune_steps; ++k) {
    // The masks come from the weights the previous step ended with, so a resumed run prunes alike.
    auto masks = prune_step(model, options, sparsity_ramp(k, r.prune_steps));
    const TrainOptions step = phase(r.retrain, static_cast<size_t>(k));
    if (step.progress)
      fmt::print(stderr, "pruning step {}/{}: {} under masks\n", k, r.prune_steps,
                 step.resume ? "resuming the retraining" : "retraining");
    SP_ASSIGN_OR_RETURN(auto epochs, train_model(model, train, val, step, &masks));
    if (report) report->steps.push_back(std::move(epochs));
  }
  SP_ASSIGN_OR_RETURN(CompressResult result, compress_model(model, options, metadata_json));
  if (r.finetune.epochs > 0) {
    const TrainOptions finetune = phase(r.finetune, files.size() - 1);
    if (finetune.progress) fmt::print(stderr, "trained quantization: fine-tuning the codebooks\n");
    SP_ASSIGN_OR_RETURN(auto epochs, finetune_codebooks(result.spw, train, val, finetune));
    if (report) report->finetune = std::move(epochs);
  }
  return result;
}

std::vector<std::string> retrain_checkpoint_files(const RetrainOptions& r) {
  if (r.checkpoint.empty()) return {};
  std::vector<std::string> files = {r.checkpoint};
  for (int k = 1; k <= r.prune_steps; ++k) files.push_back(fmt::format("{}.step{}", r.checkpoint, k));
  files.push_back(r.checkpoint + ".finetune");
  return files;
}

void remove_retrain_checkpoints(const RetrainOptions& r) {
  std::error_code ignored;
  for (const std::string& file : retrain_checkpoint_files(r)) std::filesystem::remove(file, ignored);
}

}  // namespace sparrow
