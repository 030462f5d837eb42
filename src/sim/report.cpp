#include "sim/report.h"

#include <fmt/format.h>

namespace sparrow::sim {

nlohmann::json stats_json(const LayerStats& s) {
  return {{"name", s.name},
          {"rows", s.rows},
          {"cols", s.cols},
          {"pes", s.pes},
          {"cycles", s.cycles},
          {"time_us", s.time_us},
          {"theoretical_us", s.theoretical_us},
          {"load_balance", s.load_balance},
          {"imbalance_cycles", s.imbalance_cycles},
          {"active_inputs", s.active_inputs},
          {"entries", s.entries},
          {"fillers", s.fillers},
          {"macs", s.macs},
          {"broadcast_stall_cycles", s.broadcast_stall_cycles},
          {"pe_idle_cycles", s.pe_idle_cycles},
          {"idle_fraction", s.idle_fraction},
          {"spmat_reads", s.spmat_reads},
          {"pointer_reads", s.pointer_reads},
          {"accumulator_updates", s.accumulator_updates},
          {"fifo_ops", s.fifo_ops},
          {"lnzd_reads", s.lnzd_reads},
          {"bypass_hits", s.bypass_hits},
          {"hazard_stall_cycles", s.hazard_stall_cycles},
          {"energy_uj", s.energy_uj},
          {"energy_by_component_uj",
           {{"spmat", s.spmat_uj},
            {"pointer", s.pointer_uj},
            {"arith", s.arith_uj},
            {"act_rw", s.act_uj},
            {"act_queue", s.fifo_uj},
            {"lnzd", s.lnzd_uj},
            {"idle", s.idle_uj}}},
          {"power_w", s.power_w},
          {"gops", s.gops},
          {"storage_per_pe",
           {{"spmat_bytes", s.spmat_bytes_per_pe},
            {"pointer_bytes", s.pointer_bytes_per_pe},
            {"activation_bytes", s.activation_bytes_per_pe},
            {"activations_in_regfile", s.activations_in_regfile},
            {"fits_on_chip", s.fits_on_chip}}}};
}

std::string stats_csv(const std::vector<LayerStats>& rows, const std::string& sweep_key,
                      const std::vector<int>& sweep_values) {
  std::string out =
      (sweep_key.empty() ? "" : sweep_key + ",") +
      "layer,pes,cycles,time_us,theoretical_us,load_balance,idle_fraction,broadcast_stall_cycles,"
      "entries,fillers,macs,spmat_reads,pointer_reads,energy_uj,power_w,gops,imbalance_cycles\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const LayerStats& s = rows[i];
    if (!sweep_key.empty()) out += fmt::format("{},", sweep_values[i]);
    out += fmt::format("{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{},{},{},{},{},{},{:.4f},{:.4f},{:.3f},{}\n",
                       s.name, s.pes, s.cycles, s.time_us, s.theoretical_us, s.load_balance, s.idle_fraction,
                       s.broadcast_stall_cycles, s.entries, s.fillers, s.macs, s.spmat_reads, s.pointer_reads,
                       s.energy_uj, s.power_w, s.gops, s.imbalance_cycles);
  }
  return out;
}

}  // namespace sparrow::sim
