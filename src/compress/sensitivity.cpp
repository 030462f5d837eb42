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

Result<RankSensitivityResult> rank_sensitivity_scan(const Model& model, const LabeledData& data,
                                                    const std::vector<double>& fractions, double allowed_drop,
                                                    int threads, bool progress, const LowRankRule& method) {
  for (double f : fractions)
    if (!(f > 0 && f < 1)) return errorf("weight fraction {} is outside (0, 1)", f);
  RankSensitivityResult r;
  SP_ASSIGN_OR_RETURN(r.baseline_accuracy, classification_accuracy(model, data, threads));
  const LowRankRule none{LowRankRule::By::none, 0};
  for (const auto& layer : find_compressible_layers(model)) {
    LayerRankSensitivity ls{layer.weight, model.initializers.at(layer.weight).numel(), {}, 1.0};
    for (double f : fractions) {
      if (progress)
        fmt::print(stderr, "\r\033[Krank sensitivity: {} at {:.0f}% of its weights", layer.weight, 100 * f);
      Model factorized = model;
      LowRankRule rule = method;
      rule.by = LowRankRule::By::params;
      rule.value = f;
      SP_ASSIGN_OR_RETURN(auto done, factorize_low_rank(factorized, none, {{layer.weight, rule}}));
      if (done.empty()) continue;  // not a layer it factorizes, or no saving at f
      SP_ASSIGN_OR_RETURN(double acc, classification_accuracy(std::move(factorized), data, threads));
      const FactorizedLayer& d = done.front();
      ls.points.push_back({f, d.rank, d.rank_in, d.weights_after, d.relative_error, acc});
      if (r.baseline_accuracy - acc <= allowed_drop) ls.proposed_params = std::min(ls.proposed_params, f);
    }
    if (!ls.points.empty()) r.layers.push_back(std::move(ls));
  }
  if (progress) fmt::print(stderr, "\r\033[K");
  return r;
}

Result<ChannelSensitivityResult> channel_sensitivity_scan(const Model& model, const LabeledData& data,
                                                          const std::vector<double>& fractions,
                                                          double allowed_drop, int threads, bool progress) {
  for (double f : fractions)
    if (!(f > 0 && f < 1)) return errorf("channel fraction {} is outside (0, 1)", f);
  ChannelSensitivityResult r;
  SP_ASSIGN_OR_RETURN(r.baseline_accuracy, classification_accuracy(model, data, threads));
  const StructuredRule none{StructuredRule::Norm::none, 0};
  Model traced = model;
  SP_ASSIGN_OR_RETURN(std::vector<ChannelGroup> groups, prune_channels(traced, none));
  for (const ChannelGroup& group : groups) {
    if (!group.kept_whole.empty()) continue;
    GroupSensitivity gs{group.producers, group.channels, {}, 0.0, group.head_width};
    const char* unit = group.head_width > 0 ? "heads" : "channels";
    for (double f : fractions) {
      if (progress)
        fmt::print(stderr, "\r\033[Kchannel sensitivity: {} without {:.0f}% of its {}",
                   group.producers.front(), 100 * f, unit);
      Model pruned = model;
      SP_ASSIGN_OR_RETURN(
          auto done,
          prune_channels(pruned, none, {{group.producers.front(), {StructuredRule::Norm::l1, f}}}));
      const auto it = std::find_if(done.begin(), done.end(), [&](const ChannelGroup& g) {
        return g.producers == group.producers && g.head_width == group.head_width;
      });
      SP_ASSIGN_OR_RETURN(double acc, classification_accuracy(std::move(pruned), data, threads));
      gs.points.push_back({f, it == done.end() ? group.channels : it->kept, acc});
      if (r.baseline_accuracy - acc <= allowed_drop) gs.proposed_fraction = std::max(gs.proposed_fraction, f);
    }
    r.groups.push_back(std::move(gs));
  }
  if (progress) fmt::print(stderr, "\r\033[K");
  return r;
}

}  // namespace sparrow
