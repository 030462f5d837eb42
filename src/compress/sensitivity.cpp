#include <algorithm>

#include "sparrow/retrain.h"

namespace sparrow {

Result<double> classification_accuracy(Model model, const LabeledData& data, int threads) {
  SP_ASSIGN_OR_RETURN(auto ex, Executor::create(std::move(model), ExecOptions{threads}));
  int64_t correct = 0, batch = 500;
  for (int64_t i = 0; i < data.size(); i += batch) {
    LabeledData part = slice(data, i, std::min(data.size(), i + batch));
    SP_ASSIGN_OR_RETURN(auto out, ex->run({&part.inputs, 1}));
    const Tensor& y = *out[0];
    int64_t classes = y.numel() / part.size();
    for (int64_t k = 0; k < part.size(); ++k) {
      const float* row = y.f32_data() + k * classes;
      correct += std::max_element(row, row + classes) - row == part.labels[k];
    }
  }
  return data.size() ? static_cast<double>(correct) / static_cast<double>(data.size()) : 0.0;
}

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
