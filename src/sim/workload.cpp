#include "sim/workload.h"

#include <random>

namespace sparrow::sim {

Result<SimLayer> synthetic_layer(const EieLayer& spec, const Config& config, uint32_t seed) {
  std::minstd_rand rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  int codes_used = (1 << config.weight_bits) - 1;
  std::vector<float> codebook(static_cast<size_t>(codes_used + 1), 0.0f);
  for (int i = 1; i <= codes_used; ++i) codebook[i] = (u(rng) * 0.1f + 0.01f) * (i % 2 ? 1.0f : -1.0f);
  std::vector<uint8_t> codes(static_cast<size_t>(spec.in * spec.out), 0);
  for (auto& c : codes)
    if (u(rng) < spec.weight_density) c = static_cast<uint8_t>(1 + rng() % codes_used);
  return make_sim_layer(spec.name, codes, spec.out, spec.in, codebook, {}, true, config);
}

std::vector<int16_t> synthetic_input(const EieLayer& spec, const Config& config, uint32_t seed) {
  std::minstd_rand rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<int16_t> x(static_cast<size_t>(spec.in), 0);
  for (auto& v : x)
    if (u(rng) < spec.activation_density)
      v = std::max<int16_t>(1, to_fixed(u(rng), config.activation_frac_bits));
  return x;
}

}  // namespace sparrow::sim
