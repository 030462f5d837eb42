// Workloads for the simulator: synthetic layers at given densities, and inputs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/eie_layers.h"
#include "sim/simulator.h"

namespace sparrow::sim {

// A layer with random 4-bit codes (or config.weight_bits) at the spec's weight density.
Result<SimLayer> synthetic_layer(const EieLayer& spec, const Config& config, uint32_t seed);
// Input activations at the spec's activation density (positive, as after ReLU), fixed point.
std::vector<int16_t> synthetic_input(const EieLayer& spec, const Config& config, uint32_t seed);

}  // namespace sparrow::sim
