#include <cmath>

#include "sparrow/retrain.h"

namespace sparrow {

double sparsity_ramp(int k, int n) { return n <= 0 ? 1.0 : 1.0 - std::pow(1.0 - static_cast<double>(k) / n, 3); }

namespace {

// Prunes every compressible, non-excluded layer to `fraction` of its target and returns the masks.
std::map<std::string, Tensor> prune_step(Model& model, const CompressOptions& o, double fraction) {
  std::map<std::string, Tensor> masks;
  for (const auto& layer : find_compressible_layers(model)) {
    LayerSettings s = resolve_layer_settings(o, layer);
    if (s.exclude || (!s.prune.sparsity && !s.prune.quality)) continue;
    PruneRule rule = s.prune;
    if (rule.sparsity) rule.sparsity = *rule.sparsity * fraction;
    if (rule.quality) rule.quality = *rule.quality * fraction;
    Tensor& w = model.initializers.at(layer.weight);
    prune_weights(w.f32_span(), rule);
    Tensor mask(DType::f32, w.shape());
    for (int64_t i = 0; i < w.numel(); ++i) mask.f32_data()[i] = w.f32_data()[i] != 0.0f ? 1.0f : 0.0f;
    masks[layer.weight] = std::move(mask);
  }
  return masks;
}

}  // namespace

Result<CompressResult> compress_with_retraining(Model model, const CompressOptions& options, const LabeledData& train,
                                                const LabeledData* val, const RetrainOptions& r,
                                                const std::string& metadata_json, RetrainReport* report) {
  SP_RETURN_IF_ERROR(options.validate());
  for (int k = 1; k <= r.prune_steps; ++k) {
    auto masks = prune_step(model, options, sparsity_ramp(k, r.prune_steps));
    if (r.retrain.progress) fmt::print(stderr, "pruning step {}/{}: retraining under masks\n", k, r.prune_steps);
    SP_ASSIGN_OR_RETURN(auto epochs, train_model(model, train, val, r.retrain, &masks));
    if (report) report->steps.push_back(std::move(epochs));
  }
  SP_ASSIGN_OR_RETURN(CompressResult result, compress_model(model, options, metadata_json));
  if (r.finetune.epochs > 0) {
    if (r.finetune.progress) fmt::print(stderr, "trained quantization: fine-tuning the codebooks\n");
    SP_ASSIGN_OR_RETURN(auto epochs, finetune_codebooks(result.spw, train, val, r.finetune));
    if (report) report->finetune = std::move(epochs);
  }
  return result;
}

}  // namespace sparrow
