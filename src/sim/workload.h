// Workloads for the simulator: synthetic layers at given densities, and inputs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/eie_layers.h"
#include "sim/simulator.h"
#include "sparrow/compress.h"

namespace sparrow::sim {

// A layer with random 4-bit codes (or config.weight_bits) at the spec's weight density: each weight
// kept with that probability (balance 0), or, with balance >= 1, the mask of magnitude pruning to
// that density of Gaussian weights, over the whole layer (1) or balanced over `balance`
// interleaved row partitions in `scope` ([ESE]; prune_layer).
Result<SimLayer> synthetic_layer(const EieLayer& spec, const Config& config, uint32_t seed, int balance = 0,
                                 BalanceScope scope = BalanceScope::layer);
// Input activations at the spec's activation density (positive, as after ReLU), fixed point.
std::vector<int16_t> synthetic_input(const EieLayer& spec, const Config& config, uint32_t seed);

}  // namespace sparrow::sim
