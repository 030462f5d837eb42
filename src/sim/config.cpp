#include "sim/config.h"

#include "core/file.h"

#include <fstream>

namespace sparrow::sim {

int Config::lnzd_units() const {
  int units = 0;
  for (int level = (pes + 3) / 4; level > 1; level = (level + 3) / 4) units += level;
  return units + 1;  // 64 PEs: 16 + 4 + 1 = 21
}

namespace {

using json = nlohmann::json;

template <class T>
Status read_field(const json& j, const std::string& key, T& out, const std::string& where) {
  if (!j.contains(key)) return {};
  const json& v = j.at(key);
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean())
      return errorf("config key '{}{}': expected true or false, got {}", where, key, v.dump());
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer())
      return errorf("config key '{}{}': expected an integer, got {}", where, key, v.dump());
  } else {
    if (!v.is_number()) return errorf("config key '{}{}': expected a number, got {}", where, key, v.dump());
  }
  out = v.get<T>();
  return {};
}

Status range(const char* key, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) return errorf("config key '{}': {} is outside {}..{}", key, v, lo, hi);
  return {};
}

}  // namespace

Status validate(const Config& c) {
  SP_RETURN_IF_ERROR(range("pes", c.pes, 1, 4096));
  SP_RETURN_IF_ERROR(range("fifo_depth", c.fifo_depth, 1, 4096));
  SP_RETURN_IF_ERROR(range("clock_mhz", c.clock_mhz, 1, 100000));
  SP_RETURN_IF_ERROR(range("weight_bits", c.weight_bits, 1, 8));
  SP_RETURN_IF_ERROR(range("index_bits", c.index_bits, 2, 8));
  SP_RETURN_IF_ERROR(range("activation_bits", c.activation_bits, 8, 16));
  SP_RETURN_IF_ERROR(range("activation_frac_bits", c.activation_frac_bits, 0, c.activation_bits - 1));
  SP_RETURN_IF_ERROR(range("codebook_frac_bits", c.codebook_frac_bits, 0, 15));
  SP_RETURN_IF_ERROR(range("pipeline_depth", c.pipeline_depth, 1, 64));
  SP_RETURN_IF_ERROR(range("act_regfile_entries", c.act_regfile_entries, 1, 1 << 20));
  SP_RETURN_IF_ERROR(range("act_sram_bytes", c.act_sram_bytes, 0, 1 << 30));
  SP_RETURN_IF_ERROR(range("spmat_sram_bytes", c.spmat_sram_bytes, 1, 1 << 30));
  SP_RETURN_IF_ERROR(range("pointer_sram_bytes", c.pointer_sram_bytes, 1, 1 << 30));
  if (c.entry_bits != c.weight_bits + c.index_bits)
    return errorf("config key 'entry_bits': {} is not weight_bits + index_bits = {}", c.entry_bits,
                  c.weight_bits + c.index_bits);
  if (c.spmat_width_bits < c.entry_bits || c.spmat_width_bits > 4096)
    return errorf(
        "config key 'spmat_width_bits': {} must hold at least one entry ({} bits) and be at most 4096",
        c.spmat_width_bits, c.entry_bits);
  const EnergyTable& e = c.energy;
  SP_RETURN_IF_ERROR(range("energy.spmat_width_fraction", e.spmat_width_fraction, 0, 1));
  for (double v :
       {e.spmat_read_pj, e.pointer_read_pj, e.mac_pj, e.act_rw_pj, e.fifo_pj, e.lnzd_pj, e.idle_mw_per_pe})
    if (!(v >= 0 && v < 1e9)) return errorf("config key 'energy': every value must be >= 0, got {}", v);
  return {};
}

Result<Config> config_from_json(const json& j) {
  if (!j.is_object()) return errorf("a simulator config must be a JSON object");
  static const char* kKeys[] = {"pes",
                                "fifo_depth",
                                "clock_mhz",
                                "spmat_width_bits",
                                "entry_bits",
                                "index_bits",
                                "weight_bits",
                                "activation_bits",
                                "activation_frac_bits",
                                "codebook_frac_bits",
                                "act_regfile_entries",
                                "act_sram_bytes",
                                "spmat_sram_bytes",
                                "pointer_sram_bytes",
                                "bypass",
                                "pipeline_depth",
                                "energy",
                                "pe_area_mm2"};
  for (const auto& [key, v] : j.items())
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys))
      return errorf("config key '{}': unknown", key);
  Config c;
  SP_RETURN_IF_ERROR(read_field(j, "pes", c.pes, ""));
  SP_RETURN_IF_ERROR(read_field(j, "fifo_depth", c.fifo_depth, ""));
  SP_RETURN_IF_ERROR(read_field(j, "clock_mhz", c.clock_mhz, ""));
  SP_RETURN_IF_ERROR(read_field(j, "spmat_width_bits", c.spmat_width_bits, ""));
  SP_RETURN_IF_ERROR(read_field(j, "entry_bits", c.entry_bits, ""));
  SP_RETURN_IF_ERROR(read_field(j, "index_bits", c.index_bits, ""));
  SP_RETURN_IF_ERROR(read_field(j, "weight_bits", c.weight_bits, ""));
  SP_RETURN_IF_ERROR(read_field(j, "activation_bits", c.activation_bits, ""));
  SP_RETURN_IF_ERROR(read_field(j, "activation_frac_bits", c.activation_frac_bits, ""));
  SP_RETURN_IF_ERROR(read_field(j, "codebook_frac_bits", c.codebook_frac_bits, ""));
  SP_RETURN_IF_ERROR(read_field(j, "act_regfile_entries", c.act_regfile_entries, ""));
  SP_RETURN_IF_ERROR(read_field(j, "act_sram_bytes", c.act_sram_bytes, ""));
  SP_RETURN_IF_ERROR(read_field(j, "spmat_sram_bytes", c.spmat_sram_bytes, ""));
  SP_RETURN_IF_ERROR(read_field(j, "pointer_sram_bytes", c.pointer_sram_bytes, ""));
  SP_RETURN_IF_ERROR(read_field(j, "bypass", c.bypass, ""));
  SP_RETURN_IF_ERROR(read_field(j, "pipeline_depth", c.pipeline_depth, ""));
  SP_RETURN_IF_ERROR(read_field(j, "pe_area_mm2", c.pe_area_mm2, ""));
  if (j.contains("energy")) {
    const json& e = j["energy"];
    if (!e.is_object()) return errorf("config key 'energy': expected an object");
    static const char* kEnergy[] = {
        "spmat_read_pj", "spmat_width_fraction", "pointer_read_pj", "mac_pj", "act_rw_pj", "fifo_pj",
        "lnzd_pj",       "idle_mw_per_pe"};
    for (const auto& [key, v] : e.items())
      if (std::find(std::begin(kEnergy), std::end(kEnergy), key) == std::end(kEnergy))
        return errorf("config key 'energy.{}': unknown", key);
    EnergyTable& t = c.energy;
    SP_RETURN_IF_ERROR(read_field(e, "spmat_read_pj", t.spmat_read_pj, "energy."));
    SP_RETURN_IF_ERROR(read_field(e, "spmat_width_fraction", t.spmat_width_fraction, "energy."));
    SP_RETURN_IF_ERROR(read_field(e, "pointer_read_pj", t.pointer_read_pj, "energy."));
    SP_RETURN_IF_ERROR(read_field(e, "mac_pj", t.mac_pj, "energy."));
    SP_RETURN_IF_ERROR(read_field(e, "act_rw_pj", t.act_rw_pj, "energy."));
    SP_RETURN_IF_ERROR(read_field(e, "fifo_pj", t.fifo_pj, "energy."));
    SP_RETURN_IF_ERROR(read_field(e, "lnzd_pj", t.lnzd_pj, "energy."));
    SP_RETURN_IF_ERROR(read_field(e, "idle_mw_per_pe", t.idle_mw_per_pe, "energy."));
  }
  SP_RETURN_IF_ERROR(validate(c));
  return c;
}

Result<Config> read_config(const std::string& path) {
  SP_ASSIGN_OR_RETURN(std::vector<char> text, read_file(path, size_t{1} << 24));
  auto j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return errorf("{}: not valid JSON", path);
  auto c = config_from_json(j);
  if (!c.ok()) return c.status().prefixed(path);
  return c;
}

json config_to_json(const Config& c) {
  const EnergyTable& e = c.energy;
  return {{"pes", c.pes},
          {"fifo_depth", c.fifo_depth},
          {"clock_mhz", c.clock_mhz},
          {"spmat_width_bits", c.spmat_width_bits},
          {"entry_bits", c.entry_bits},
          {"index_bits", c.index_bits},
          {"weight_bits", c.weight_bits},
          {"activation_bits", c.activation_bits},
          {"activation_frac_bits", c.activation_frac_bits},
          {"codebook_frac_bits", c.codebook_frac_bits},
          {"act_regfile_entries", c.act_regfile_entries},
          {"act_sram_bytes", c.act_sram_bytes},
          {"spmat_sram_bytes", c.spmat_sram_bytes},
          {"pointer_sram_bytes", c.pointer_sram_bytes},
          {"bypass", c.bypass},
          {"pipeline_depth", c.pipeline_depth},
          {"pe_area_mm2", c.pe_area_mm2},
          {"energy",
           {{"spmat_read_pj", e.spmat_read_pj},
            {"spmat_width_fraction", e.spmat_width_fraction},
            {"pointer_read_pj", e.pointer_read_pj},
            {"mac_pj", e.mac_pj},
            {"act_rw_pj", e.act_rw_pj},
            {"fifo_pj", e.fifo_pj},
            {"lnzd_pj", e.lnzd_pj},
            {"idle_mw_per_pe", e.idle_mw_per_pe}}}};
}

}  // namespace sparrow::sim
