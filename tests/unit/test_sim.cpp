// The cycle-level EIE simulator: exact cycle counts on hand-computed cases, a golden statistics
// file, bit-exact arithmetic, configuration validation and bad workloads.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "sim/report.h"
#include "sim/workload.h"
#include "test_util.h"

namespace sparrow::sim {
namespace {

Config one_pe(int fifo_depth = 8) {
  Config c;
  c.pes = 1;
  c.fifo_depth = fifo_depth;
  return c;
}

SimLayer column_layer(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, const Config& c) {
  std::vector<float> codebook = {0.0f, 0.5f, -0.25f, 1.0f};
  auto l = make_sim_layer("t", codes, rows, cols, codebook, {}, false, c);
  EXPECT_TRUE(l.ok()) << l.status().message();
  return *l;
}

TEST(Simulator, OnePeOneColumn) {
  // cycle 0: broadcast; 1: pointer read; 2-4: three entries. Five cycles in all.
  Config c = one_pe();
  std::vector<uint8_t> codes = {1, 0, 2, 0, 0, 3};  // a 6 x 1 column
  SimLayer l = column_layer(codes, 6, 1, c);
  auto r = simulate_layer(c, l, {to_fixed(2.0f, c.activation_frac_bits)});
  EXPECT_EQ(r.stats.cycles, 5);
  EXPECT_EQ(r.stats.entries, 3);
  EXPECT_EQ(r.stats.macs, 3);
  EXPECT_EQ(r.stats.pointer_reads, 1);
  EXPECT_EQ(r.stats.spmat_reads, 1);
  EXPECT_EQ(r.stats.pe_idle_cycles, 2);
  EXPECT_EQ(r.stats.fifo_ops, 2);
  EXPECT_EQ(from_fixed(r.outputs[0], c.activation_frac_bits), 1.0f);
  EXPECT_EQ(from_fixed(r.outputs[2], c.activation_frac_bits), -0.5f);
  EXPECT_EQ(from_fixed(r.outputs[5], c.activation_frac_bits), 2.0f);
}

TEST(Simulator, ImbalanceCyclesAreTheBusiestPesEntriesBeyondTheMean) {
  // Two PEs, one column: rows 0, 2, 4 (PE 0) hold 3 entries, row 1 (PE 1) one. Mean 2, max 3.
  Config c = one_pe();
  c.pes = 2;
  std::vector<uint8_t> codes = {1, 1, 2, 0, 3, 0};
  SimLayer l = column_layer(codes, 6, 1, c);
  auto r = simulate_layer(c, l, {to_fixed(1.0f, c.activation_frac_bits)});
  EXPECT_EQ(r.stats.imbalance_cycles, 1);
  EXPECT_DOUBLE_EQ(r.stats.load_balance, 2.0 / 3.0);
  EXPECT_EQ(stats_json(r.stats)["imbalance_cycles"], 1);
}

TEST(Simulator, FullFifoStallsTheBroadcast) {
  // Depth 1, three columns of four entries: the broadcast waits while the FIFO is full.
  // Hand-traced: broadcasts at cycles 0, 3 and 7, stalls at 1, 2, 4, 5, 6, the last entry at 13.
  Config c = one_pe(1);
  std::vector<uint8_t> codes(4 * 3, 1);
  SimLayer l = column_layer(codes, 4, 3, c);
  int16_t a = to_fixed(1.0f, c.activation_frac_bits);
  auto r = simulate_layer(c, l, {a, a, a});
  EXPECT_EQ(r.stats.cycles, 14);
  EXPECT_EQ(r.stats.broadcast_stall_cycles, 5);
  EXPECT_EQ(r.stats.macs, 12);
  c.fifo_depth = 8;  // deep enough: no stall, 3 columns back to back after two cycles of latency
  auto deep = simulate_layer(c, l, {a, a, a});
  EXPECT_EQ(deep.stats.broadcast_stall_cycles, 0);
  EXPECT_EQ(deep.stats.cycles, 14);
}

TEST(Simulator, LongGapNeedsFillers) {
  // Rows 0 and 39 of a 40-row column with 4-bit gaps: fillers at rows 16 and 32.
  Config c = one_pe();
  std::vector<uint8_t> codes(40, 0);
  codes[0] = 1;
  codes[39] = 3;
  SimLayer l = column_layer(codes, 40, 1, c);
  auto r = simulate_layer(c, l, {to_fixed(1.0f, c.activation_frac_bits)});
  EXPECT_EQ(r.stats.entries, 4);
  EXPECT_EQ(r.stats.fillers, 2);
  EXPECT_EQ(r.stats.macs, 2);
  EXPECT_EQ(r.stats.cycles, 6);
  EXPECT_EQ(from_fixed(r.outputs[39], c.activation_frac_bits), 1.0f);
}

TEST(Simulator, ZeroInputsAreSkipped) {
  Config c = one_pe();
  SimLayer l = column_layer(std::vector<uint8_t>(6 * 4, 1), 6, 4, c);
  auto r = simulate_layer(c, l, {0, 0, 0, 0});
  EXPECT_EQ(r.stats.cycles, 0);
  EXPECT_EQ(r.stats.macs, 0);
}

TEST(Simulator, BypassAndHazardStalls) {
  // 2 x 2 with only row 1 non-zero: column 0's entry and column 1's entry hit row 1 back to back.
  Config c = one_pe();
  std::vector<uint8_t> codes = {0, 0, 1, 1};
  SimLayer l = column_layer(codes, 2, 2, c);
  int16_t a = to_fixed(1.0f, c.activation_frac_bits);
  auto with = simulate_layer(c, l, {a, a});
  c.bypass = false;
  auto without = simulate_layer(c, l, {a, a});
  EXPECT_EQ(with.stats.bypass_hits, 1);
  EXPECT_EQ(with.stats.hazard_stall_cycles, 0);
  EXPECT_EQ(without.stats.hazard_stall_cycles, c.pipeline_depth - 1);
  EXPECT_EQ(without.stats.cycles, with.stats.cycles + c.pipeline_depth - 1);
  EXPECT_EQ(without.outputs, with.outputs);
}

TEST(Simulator, BitExactWithTheFixedPointReference) {
  for (int pes : {1, 3, 16, 64}) {
    Config c;
    c.pes = pes;
    EieLayer spec{"small", 300, 200, 0.1, 0.4, 0, 0};
    auto l = synthetic_layer(spec, c, 5);
    ASSERT_TRUE(l.ok());
    auto x = synthetic_input(spec, c, 6);
    auto r = simulate_layer(c, *l, x);
    EXPECT_EQ(r.outputs, fixed_point_reference(c, *l, x)) << pes << " PEs";
  }
}

// Statistics of a fixed small workload, compared field by field with a reviewed golden file.
TEST(Simulator, GoldenStatistics) {
  Config c;
  c.pes = 16;
  EieLayer spec{"golden", 512, 256, 0.1, 0.35, 0, 0};
  auto l = synthetic_layer(spec, c, 11);
  ASSERT_TRUE(l.ok());
  auto r = simulate_layer(c, *l, synthetic_input(spec, c, 12));
  nlohmann::json got = stats_json(r.stats);
  std::string path = std::string(SPARROW_TEST_DATA) + "/sim_golden.json";
  if (std::getenv("SPARROW_UPDATE_GOLDEN")) std::ofstream(path) << got.dump(1) << "\n";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "missing " << path;
  auto want = nlohmann::json::parse(in);
  for (const char* key : {"cycles", "entries", "fillers", "macs", "active_inputs", "broadcast_stall_cycles",
                          "pe_idle_cycles", "spmat_reads", "pointer_reads", "fifo_ops", "bypass_hits"})
    EXPECT_EQ(got[key], want[key]) << key;
  EXPECT_NEAR(got["energy_uj"].get<double>(), want["energy_uj"].get<double>(), 1e-9);
}

TEST(Simulator, StorageAgainstCapacities) {
  Config c = one_pe();
  SimLayer l = column_layer(std::vector<uint8_t>(6 * 100, 1), 6, 100, c);
  auto r = simulate_layer(c, l, std::vector<int16_t>(100, 0));
  EXPECT_EQ(r.stats.spmat_bytes_per_pe, 600);       // 600 one-byte entries
  EXPECT_EQ(r.stats.pointer_bytes_per_pe, 202);     // 101 16-bit pointers
  EXPECT_EQ(r.stats.activation_bytes_per_pe, 212);  // 100 inputs + 6 outputs, 2 bytes each
  EXPECT_FALSE(r.stats.activations_in_regfile);     // 100 inputs > 64 register-file entries
  EXPECT_TRUE(r.stats.fits_on_chip);
  c.pointer_sram_bytes = 200;
  EXPECT_FALSE(simulate_layer(c, l, std::vector<int16_t>(100, 0)).stats.fits_on_chip);
}

TEST(SimConfig, DefaultsMatchTheShippedFileAndThePaper) {
  auto c = read_config(std::string(SPARROW_SOURCE_DIR) + "/configs/eie_64pe.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(config_to_json(*c), config_to_json(Config{}));
  EXPECT_EQ(c->pes, 64);
  EXPECT_EQ(c->clock_mhz, 800);
  EXPECT_EQ(c->fifo_depth, 8);
  EXPECT_EQ(c->entries_per_read(), 8);
  EXPECT_EQ(c->lnzd_units(), 21);  // 16 + 4 + 1 for 64 PEs
}

TEST(SimConfig, ErrorsNameTheKey) {
  auto bad = [](const char* text) {
    return config_from_json(nlohmann::json::parse(text)).status().message();
  };
  EXPECT_NE(bad(R"({"pes": 0})").find("'pes'"), std::string::npos);
  EXPECT_NE(bad(R"({"fifo_depth": "deep"})").find("'fifo_depth': expected an integer"), std::string::npos);
  EXPECT_NE(bad(R"({"pe_count": 4})").find("'pe_count': unknown"), std::string::npos);
  EXPECT_NE(bad(R"({"entry_bits": 9})").find("'entry_bits'"), std::string::npos);
  EXPECT_NE(bad(R"({"energy": {"mac_pj": -1}})").find("'energy'"), std::string::npos);
  EXPECT_NE(bad(R"({"energy": {"mac": 1}})").find("'energy.mac': unknown"), std::string::npos);
}

// One [EIE] layer simulated with magnitude pruning under `pruning` (sim's --balance options).
nlohmann::json simulated_eie_layer(const std::string& layer, const std::string& pruning) {
  auto r = test::run_cli("sim --eie --json --layers " + layer + " " + pruning);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.exit_code == 0 ? nlohmann::json::parse(r.output)["layers"][0] : nlohmann::json::object();
}

TEST(SimCli, BalancedPruningOfTheEieLayers) {
  // NT-We takes every input (activation density 1), so the static balance is what the PEs see.
  const auto whole = simulated_eie_layer("NT-We", "--balance 1"),
             balanced = simulated_eie_layer("NT-We", "--balance 64");
  EXPECT_LT(whole["load_balance"].get<double>(), 0.95);
  EXPECT_GE(balanced["load_balance"].get<double>(), 0.999);
  EXPECT_LT(balanced["cycles"].get<int64_t>(), whole["cycles"].get<int64_t>());
  EXPECT_LT(balanced["imbalance_cycles"].get<int64_t>(), whole["imbalance_cycles"].get<int64_t>());
  EXPECT_NEAR(balanced["entries"].get<double>(), whole["entries"].get<double>(),
              0.01 * whole["entries"].get<double>())
      << "the same density either way";
  auto without_eie = test::run_cli("sim --balance 64");
  EXPECT_EQ(without_eie.exit_code, 1) << without_eie.output;
  EXPECT_NE(without_eie.output.find("--eie"), std::string::npos) << without_eie.output;
}

TEST(SimCli, BalancingEachColumnEvensOutTheActiveInputsWork) {
  // Alex-8 takes 37.5% of its inputs: totals balanced per PE still leave the PEs uneven over the
  // columns a sample activates; balanced column by column they are even there too.
  const auto by_layer = simulated_eie_layer("Alex-8", "--balance 64 --balance-scope layer"),
             by_column = simulated_eie_layer("Alex-8", "--balance 64 --balance-scope column");
  EXPECT_LT(by_layer["load_balance"].get<double>(), 0.985);
  EXPECT_GE(by_column["load_balance"].get<double>(), 0.99);
  EXPECT_LT(by_column["cycles"].get<int64_t>(), by_layer["cycles"].get<int64_t>());
  auto without_balance = test::run_cli("sim --eie --balance-scope column");
  EXPECT_EQ(without_balance.exit_code, 1) << without_balance.output;
  EXPECT_NE(without_balance.output.find("requires --balance"), std::string::npos) << without_balance.output;
}

TEST(SimCli, EieLayersAndBadWorkloads) {
  auto r = test::run_cli("sim --eie --layers Alex-7,NT-We --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["layers"].size(), 2u);
  for (const char* key : {"name", "cycles", "time_us", "theoretical_us", "load_balance", "energy_uj"})
    EXPECT_TRUE(j["layers"][0].contains(key)) << key;
  std::string dir = test::temp_dir("sim_cli");
  std::ofstream(dir + "/bad.json") << R"({"pes": -3})";
  auto cfg = test::run_cli("sim --eie --config " + dir + "/bad.json");
  EXPECT_EQ(cfg.exit_code, 1);
  EXPECT_NE(cfg.output.find("bad.json: config key 'pes'"), std::string::npos) << cfg.output;
  std::ofstream(dir + "/junk.spw") << "not a model";
  auto junk = test::run_cli("sim " + dir + "/junk.spw");
  EXPECT_EQ(junk.exit_code, 1);
  EXPECT_NE(junk.output.find("junk.spw"), std::string::npos) << junk.output;
  ASSERT_TRUE(save_onnx(test::small_cnn(), dir + "/m.onnx").ok());
  ASSERT_EQ(test::run_cli("-q compress " + dir + "/m.onnx -o " + dir + "/m5.spw --bits 5").exit_code, 0);
  auto wide = test::run_cli("sim " + dir + "/m5.spw");
  EXPECT_NE(wide.output.find("weight_bits"), std::string::npos) << wide.output;
  ASSERT_EQ(
      test::run_cli("-q compress " + dir + "/m.onnx -o " + dir + "/m4.spw --bits 4 --sparsity 0.5").exit_code,
      0);
  auto ok = test::run_cli("sim " + dir + "/m4.spw");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("bit-exact"), std::string::npos) << ok.output;
  auto sweep = test::run_cli("sim --eie --layers NT-LSTM --sweep fifo=1,8 --plot " + dir + "/f.svg");
  EXPECT_EQ(sweep.exit_code, 0) << sweep.output;
  EXPECT_TRUE(std::filesystem::file_size(dir + "/f.svg") > 500);
  std::ifstream table(dir + "/f.csv");
  std::string header, first, second, more;
  std::getline(table, header);
  std::getline(table, first);
  std::getline(table, second);
  EXPECT_EQ(header, "fifo,NT-LSTM") << "the plotted numbers beside the plot";
  EXPECT_EQ(first.rfind("1,", 0), 0u) << first;
  EXPECT_EQ(second.rfind("8,", 0), 0u) << second;
  EXPECT_FALSE(std::getline(table, more)) << more;
  auto model_csv = test::run_cli("sim " + dir + "/m4.spw --csv " + dir + "/m4.csv");
  EXPECT_EQ(model_csv.exit_code, 0) << model_csv.output;
  EXPECT_GT(std::filesystem::file_size(dir + "/m4.csv"), 20u) << "sim MODEL --csv writes its rows";
}

}  // namespace
}  // namespace sparrow::sim
