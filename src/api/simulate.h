// The EIE simulator on a .spw model: each compressed FC layer fed the activations the dense executor
// computes for one input, simulated cycle by cycle and checked against the fixed-point reference.
#pragma once

#include <string>
#include <vector>

#include "sim/config.h"
#include "sim/simulator.h"
#include "sparrow/tensor.h"

namespace sparrow::api {

struct SimulatedLayer {
  std::string name;
  sim::LayerStats stats;
  bool bit_exact = false;     // the simulated outputs equal the fixed-point reference's
  double relative_error = 0;  // of the simulated outputs against the float executor's
};

// `input` fills the model's first input at batch 1 (at least that many values; the first are used);
// null: uniform random values in [0, 1) from a fixed seed. Errors name the model file.
Result<std::vector<SimulatedLayer>> simulate_spw(const std::string& path, const sim::Config& config,
                                                 const Tensor* input, int threads);

// {model, config, layers: [stats + functional: {layer, bit_exact_with_fixed_point_reference,
// relative_error_vs_float}]}: what `sparrow sim MODEL.spw --json` prints.
nlohmann::json simulation_json(const std::string& path, const sim::Config& config,
                               const std::vector<SimulatedLayer>& layers);

}  // namespace sparrow::api
