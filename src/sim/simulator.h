// Cycle-level model of the EIE accelerator [EIE].
//
// Per cycle, every component first *propagates* (computes what it will do from the registered
// state of the cycle's start) and then *updates* (commits). Components:
//  - Central control unit: its leading-non-zero detectors (a 4-ary tree, one leaf per 4 PEs) pick
//    the next non-zero input activation a_j and broadcast (j, a_j) to every PE's activation FIFO;
//    at most one per cycle, and only when no FIFO is full (otherwise the broadcast stalls).
//  - Per PE, a two-stage pipeline: the pointer stage pops the next (j, a_j) from the FIFO and reads
//    p[j], p[j+1] from the two pointer banks (one cycle); the arithmetic stage then walks the
//    column's entries at one per cycle: a sparse-matrix SRAM word holds width/entry_bits entries and
//    is read when the walk enters it; the 4-bit code is looked up in the codebook (16-bit fixed
//    point), multiplied by a_j and accumulated into the destination row (entry gaps give the rows).
//    Back-to-back hits of one accumulator use the bypass, or stall pipeline_depth - 1 cycles
//    without it.
// Arithmetic is exact integer: 16-bit activations and codebook values, 64-bit accumulators; the
// outputs are rounded, passed through ReLU and saturated to 16 bits, bit-exact with
// fixed_point_reference().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/config.h"
#include "sparrow/format.h"

namespace sparrow::sim {

// One fully connected layer, encoded for the configuration's PEs.
struct SimLayer {
  std::string name;
  int64_t rows = 0, cols = 0;
  CompressedTensor encoding;      // sparse layout, partitions == pes, index_bits == config
  std::vector<int16_t> codebook;  // fixed point, codebook_frac_bits
  std::vector<int64_t> bias;      // fixed point at activation + codebook fraction bits; may be empty
  bool relu = true;
};

// Statistics of one simulated layer. Counts are summed over all PEs.
struct LayerStats {
  std::string name;
  int64_t rows = 0, cols = 0, pes = 0;
  int64_t cycles = 0;
  double time_us = 0, theoretical_us = 0;
  double load_balance = 0;       // mean over max entries per PE (in the active columns)
  int64_t imbalance_cycles = 0;  // the busiest PE's entries beyond the mean: at most what balance saves
  int64_t active_inputs = 0;     // non-zero input activations broadcast
  int64_t entries = 0, fillers = 0, macs = 0;
  int64_t broadcast_stall_cycles = 0;  // the central unit held back by a full FIFO
  int64_t pe_idle_cycles = 0;          // PE-cycles without an entry processed
  double idle_fraction = 0;            // pe_idle_cycles / (cycles * pes)
  int64_t spmat_reads = 0, pointer_reads = 0, accumulator_updates = 0, fifo_ops = 0, lnzd_reads = 0,
          output_writes = 0;
  int64_t bypass_hits = 0, hazard_stall_cycles = 0;
  double energy_uj = 0, spmat_uj = 0, pointer_uj = 0, arith_uj = 0, act_uj = 0, fifo_uj = 0, lnzd_uj = 0,
         idle_uj = 0;
  double power_w = 0;
  double gops = 0;  // 2 x non-zero MACs / time
  // Storage the busiest PE needs, against the config's capacities.
  int64_t spmat_bytes_per_pe = 0;       // its entries
  int64_t pointer_bytes_per_pe = 0;     // (cols + 1) 16-bit pointers
  int64_t activation_bytes_per_pe = 0;  // its share of inputs and outputs, 16-bit
  bool activations_in_regfile = false;  // both fit in the register files (else activation SRAM)
  bool fits_on_chip = false;            // every need within its SRAM
};

struct LayerResult {
  LayerStats stats;
  std::vector<int16_t> outputs;  // rows, fixed point (activation fraction bits)
};

// Encodes a code matrix (codes[r * cols + c], 0 = zero) and float codebook for the config.
Result<SimLayer> make_sim_layer(const std::string& name, const std::vector<uint8_t>& codes, int64_t rows,
                                int64_t cols, const std::vector<float>& codebook,
                                const std::vector<float>& bias, bool relu, const Config& config);
// From a compressed tensor of a .spw file (re-partitioned for the config's PEs).
Result<SimLayer> make_sim_layer(const CompressedTensor& t, const std::vector<float>& bias, bool relu,
                                const Config& config);

int16_t to_fixed(float v, int frac_bits);
float from_fixed(int64_t v, int frac_bits);

// Simulates one layer on the given input activations (cols values, fixed point).
LayerResult simulate_layer(const Config& config, const SimLayer& layer, const std::vector<int16_t>& input);

// The same arithmetic in plain loops over rows (the functional golden).
std::vector<int16_t> fixed_point_reference(const Config& config, const SimLayer& layer,
                                           const std::vector<int16_t>& input);

}  // namespace sparrow::sim
