#include <algorithm>

#include "sparrow/retrain.h"

namespace sparrow {

Result<SensitivityResult> sensitivity_scan(const Model& model, const LabeledData& data,
                                           const std::vector<double>& sparsities, double allowed_drop,
                                           int threads, bool progress) {
  for (double s : sparsities)
    if (!(s >= 0 && s < 1)) return errorf("sparsity {} is outside [0, 1)", s);
  SensitivityResult r;
  SP_ASSIGN_OR_RETURN(r.baseline_accuracy, classification_accuracy(model, data, threads));
  for (const auto& layer : find_compressible_layers(model)) {
    LayerSensitivity ls{layer.weight, model.initializers.at(layer.weight).numel(), {}, 0.0};
    for (double s : sparsities) {
      if (progress) fmt::print(stderr, "\r\033[Ksensitivity: {} at {:.0f}%", layer.weight, 100 * s);
      Model pruned = model;
      prune_weights(pruned.initializers.at(layer.weight).f32_span(), PruneRule{s, std::nullopt});
      SP_ASSIGN_OR_RETURN(double acc, classification_accuracy(std::move(pruned), data, threads));
      ls.points.push_back({s, acc});
      if (r.baseline_accuracy - acc <= allowed_drop) ls.proposed_sparsity = std::max(ls.proposed_sparsity, s);
    }
    r.layers.push_back(std::move(ls));
  }
  if (progress) fmt::print(stderr, "\r\033[K");
  return r;
}

}  // namespace sparrow
