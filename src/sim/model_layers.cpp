#include "sim/model_layers.h"

#include <cmath>
#include <map>

#include "sparrow/weight_roles.h"

namespace sparrow::sim {

Result<std::vector<ModelLayer>> model_layers(const SpwModel& spw, const Config& config) {
  std::map<std::string, const CompressedTensor*> compressed;
  for (const auto& t : spw.tensors) compressed[t.name] = &t;
  std::vector<ModelLayer> layers;
  for (const Node& node : spw.graph.nodes) {
    const WeightRole* role = weight_role(node, 1);
    if (!role || role->kind != WeightKind::fully_connected || !compressed.count(node.inputs[1])) continue;
    const CompressedTensor& t = *compressed[node.inputs[1]];
    if (t.weight_bits > config.weight_bits)
      return errorf(
          "{}: layer '{}' uses {}-bit weight codes; the config decodes {} (set weight_bits and entry_bits, "
          "or compress with --bits {})",
          spw.graph.source, t.name, t.weight_bits, config.weight_bits, config.weight_bits);
    layers.push_back(ModelLayer{&node, &t, role->bias_input});
  }
  return layers;
}

Result<ModelLayerRun> simulate_model_layer(const Config& config, const ModelLayer& layer,
                                           const ValueLookup& values) {
  const Node& node = *layer.node;
  const CompressedTensor& t = *layer.weights;
  std::vector<float> bias;
  if (layer.bias_input >= 0 && node.has_input(static_cast<size_t>(layer.bias_input)))
    if (const Tensor* b = values(node.inputs[static_cast<size_t>(layer.bias_input)]);
        b && b->numel() == t.view.rows)
      bias.assign(b->f32_data(), b->f32_data() + b->numel());
  SP_ASSIGN_OR_RETURN(SimLayer sim_layer, make_sim_layer(t, bias, false, config));
  const Tensor* in = values(node.inputs[0]);
  const Tensor* out = values(node.outputs[0]);
  if (!in || !out || in->numel() < t.view.cols || out->numel() < t.view.rows)
    return errorf("{}: its input or output was not computed as a {} x {} layer", node.describe(), t.view.rows,
                  t.view.cols);
  std::vector<int16_t> act;
  for (int64_t j = 0; j < t.view.cols; ++j)
    act.push_back(to_fixed(in->f32_data()[j], config.activation_frac_bits));
  LayerResult r = simulate_layer(config, sim_layer, act);
  ModelLayerRun run{r.stats, r.outputs == fixed_point_reference(config, sim_layer, act), 0.0};
  double max_diff = 0, max_ref = 1e-9;
  for (int64_t i = 0; i < t.view.rows; ++i) {
    max_diff = std::max<double>(
        max_diff, std::fabs(from_fixed(r.outputs[i], config.activation_frac_bits) - out->f32_data()[i]));
    max_ref = std::max<double>(max_ref, std::fabs(out->f32_data()[i]));
  }
  run.relative_error = max_diff / max_ref;
  return run;
}

}  // namespace sparrow::sim
