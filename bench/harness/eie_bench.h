// `sparrow bench --eie`: the nine benchmark layers of [EIE] Table IV with random weights at the
// paper's weight densities (4-bit codes, 4-bit gaps) and inputs at its activation densities, timed
// in one process against oneDNN dense, Eigen sparse and plain float32 sparse kernels.
#pragma once

#include <nlohmann/json.hpp>

#include <vector>

namespace sparrow::cli {

struct EieBenchOptions {
  std::vector<int> batches = {1, 64};
  std::vector<int> threads = {1, 2};
  int repeats = 21;                 // least timed runs per measurement (and at least 0.2 s); median reported
  std::vector<std::string> layers;  // empty: all nine
  // Weights in 4x1 row blocks (a block of four rows of one column present at the layer's density,
  // as `compress --block 4x1` prunes), with a plain float32 row-block kernel as a further peer.
  bool row_blocks = false;
  bool progress = false;
};

nlohmann::json run_eie_bench(const EieBenchOptions& options);
void print_eie_bench(const nlohmann::json& results);

// Sparse kernels against oneDNN's dense sgemm on a 4096 x 4096 layer over a range of weight densities (dense
// inputs, one thread): where the engine's dense fallback threshold comes from.
nlohmann::json run_crossover_bench(const EieBenchOptions& options);
void print_crossover_bench(const nlohmann::json& results);

}  // namespace sparrow::cli
