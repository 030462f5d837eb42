// Architecture configuration of the simulated EIE accelerator, kept apart from the workload.
// Read from JSON (keys as the field names below); every value is validated before the first cycle.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "sparrow/status.h"

namespace sparrow::sim {

// Energy per event in picojoules (45 nm). The defaults are calibrated so that the default 64-PE
// design running Alex-6 dissipates [EIE]'s per-PE power table (SpmatRead 4.955 mW, PtrRead 1.807,
// ArithmUnit 1.162, ActRW 1.122, Act queue 0.112: 9.157 mW per PE, 0.586 W for 64): each is the
// component's power x PEs x simulated time / its event count (docs/simulator.md). The leading-
// non-zero detectors are not in that table; 0.1 pJ per activation examined is an assumption.
struct EnergyTable {
  double spmat_read_pj = 31.16;       // one 64-bit sparse-matrix SRAM word
  double spmat_width_fraction = 0.5;  // share of spmat_read_pj that scales with the word width
                                      // (bitlines, sense amplifiers); the rest is per access
  double pointer_read_pj = 15.99;     // one pointer pair (two banks, one cycle)
  double mac_pj = 1.78;               // codebook lookup + 16-bit multiply + accumulate
  double act_rw_pj = 1.72;            // one accumulator read-modify-write (or output write)
  double fifo_pj = 0.50;              // one activation-queue push or pop
  double lnzd_pj = 0.10;              // one activation examined by the leading-non-zero detectors
  double idle_mw_per_pe = 0.0;        // leakage per PE (the published table has no separate figure)
};

struct Config {
  int pes = 64;
  int fifo_depth = 8;
  double clock_mhz = 800.0;
  int spmat_width_bits = 64;  // sparse-matrix SRAM word; entries per read = width / entry bits
  int entry_bits = 8;         // 4-bit weight code + 4-bit gap
  int index_bits = 4;         // gap width of the encoding the PEs walk
  int weight_bits = 4;        // code width: 2^bits codebook entries
  int activation_bits = 16;   // fixed point
  int activation_frac_bits = 8;
  int codebook_frac_bits = 12;   // codebook values in 16-bit fixed point with this many fraction bits
  int act_regfile_entries = 64;  // per PE; longer vectors use the activation SRAM
  int act_sram_bytes = 2048;     // per PE
  int spmat_sram_bytes = 128 * 1024;
  int pointer_sram_bytes = 32 * 1024;
  bool bypass = true;      // accumulator bypass on back-to-back hits of one row
  int pipeline_depth = 4;  // stall on a back-to-back hit without bypass: depth - 1 cycles
  EnergyTable energy;
  double pe_area_mm2 = 0.638;

  int entries_per_read() const { return spmat_width_bits / entry_bits; }
  int lnzd_units() const;  // 4-ary tree, one leaf detector per 4 PEs
};

// Reads a config; unknown keys and out-of-range values are errors naming the key.
Result<Config> config_from_json(const nlohmann::json& j);
Result<Config> read_config(const std::string& path);
nlohmann::json config_to_json(const Config& c);
// Checks every value and the derived ones (e.g. entry bits = weight bits + index bits).
Status validate(const Config& c);

}  // namespace sparrow::sim
