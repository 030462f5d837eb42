// The EIE simulator on a whole compressed model: which layers it runs (the weight-roles table's
// compressed fully connected layers, in graph order) and one layer run on the activations a float
// executor computed for it. The simulator meets the engine only through `ValueLookup`.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "sim/simulator.h"
#include "sparrow/format.h"

namespace sparrow::sim {

struct ModelLayer {
  const Node* node = nullptr;
  const CompressedTensor* weights = nullptr;
  int bias_input = -1;  // index among the node's inputs, -1 when none
};

// The layers of `spw` the simulator runs. Fails, naming the model and layer, when a layer's codes are
// wider than `config` decodes.
Result<std::vector<ModelLayer>> model_layers(const SpwModel& spw, const Config& config);

// A value of the model as an executor computed it, or nullptr.
using ValueLookup = std::function<const Tensor*(const std::string& name)>;

struct ModelLayerRun {
  LayerStats stats;
  bool bit_exact = false;       // with the fixed-point reference
  double relative_error = 0.0;  // max |simulated - float output| / max |float output|
};

// Simulates `layer` on its input as `values` holds it (converted to fixed point), checks the result
// against the fixed-point reference and the float output. Errors name the node.
Result<ModelLayerRun> simulate_model_layer(const Config& config, const ModelLayer& layer,
                                           const ValueLookup& values);

}  // namespace sparrow::sim
