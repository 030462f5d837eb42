#include "sim/workload.h"

#include <random>

#include "sparrow/compress.h"

namespace sparrow::sim {

namespace {

// Which weights of the spec's [out, in] matrix are kept (1) under magnitude pruning of Gaussian
// weights to its density, balanced over `balance` row partitions in `scope` (scope entries counting
// the fillers of an `index_bits` relative index).
std::vector<uint8_t> pruned_mask(const EieLayer& spec, int balance, BalanceScope scope, int index_bits,
                                 std::minstd_rand& rng) {
  std::normal_distribution<float> gaussian;
  std::vector<float> w(static_cast<size_t>(spec.in * spec.out));
  for (float& v : w) v = gaussian(rng);
  PruneRule rule{1.0 - spec.weight_density, std::nullopt, balance, {}, scope};
  rule.index_bits = index_bits;
  prune_layer(w, MatrixView{spec.out, spec.in, false}, rule);
  std::vector<uint8_t> mask(w.size());
  for (size_t i = 0; i < w.size(); ++i) mask[i] = w[i] != 0.0f;
  return mask;
}

}  // namespace

Result<SimLayer> synthetic_layer(const EieLayer& spec, const Config& config, uint32_t seed, int balance,
                                 BalanceScope scope) {
  std::minstd_rand rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  int codes_used = (1 << config.weight_bits) - 1;
  std::vector<float> codebook(static_cast<size_t>(codes_used + 1), 0.0f);
  for (int i = 1; i <= codes_used; ++i) codebook[i] = (u(rng) * 0.1f + 0.01f) * (i % 2 ? 1.0f : -1.0f);
  std::vector<uint8_t> codes(static_cast<size_t>(spec.in * spec.out), 0);
  if (balance >= 1) {
    codes = pruned_mask(spec, balance, scope, config.index_bits, rng);
    for (auto& c : codes)
      if (c) c = static_cast<uint8_t>(1 + rng() % codes_used);
  } else {
    for (auto& c : codes)
      if (u(rng) < spec.weight_density) c = static_cast<uint8_t>(1 + rng() % codes_used);
  }
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
