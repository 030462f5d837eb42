// sparrow inspect FILE.spw [--json]: per-layer sizes in the style of Deep Compression, and where
// every byte of the file goes. sparrow export FILE.spw -o OUT.onnx [--json]: the dense float32 model.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "api/inspect.h"
#include "cli/commands.h"
#include "cli/spw_report.h"
#include "core/file.h"
#include "sparrow/compress.h"
#include "sparrow/onnx.h"

namespace sparrow::cli {

Command add_inspect(CLI::App& app, const GlobalOptions& global) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto partitions = std::make_shared<int>(0);
  auto* cmd = app.add_subcommand("inspect", "Show a .spw file's layers, bits, sizes and byte breakdown");
  cmd->add_option("file", *path, "Compressed model (.spw)")->required();
  cmd->add_flag("--json", *json, "Print one JSON object");
  cmd->add_option("--partitions", *partitions,
                  "Report each layer's load balance over N interleaved row partitions (default: the "
                  "recipe's --balance, else 64, EIE's PEs)")
      ->check(CLI::Range(1, kMaxBalancePartitions));
  return {cmd, [path, json, partitions]() -> int {
            auto m = read_spw(*path);
            if (!m.ok()) return report_error(m.status());
            if (*json)
              fmt::print("{}\n", api::spw_report_json(*m, *path, *partitions).dump(2));
            else
              print_spw_report(*m, *path, *partitions);
            return 0;
          }};
}

Command add_export(CLI::App& app, const GlobalOptions& global) {
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("export", "Write a .spw model as a dense float32 ONNX model");
  cmd->add_option("file", *in, "Compressed model (.spw)")->required();
  cmd->add_option("-o,--output", *out, "Output .onnx file")->required();
  cmd->add_flag("--json", *json, "Print one JSON object: the file written, its bytes and parameters");
  return {cmd, [in, out, json, &global]() -> int {
            if (same_file(*in, *out))
              return report_error(errorf("output {} would overwrite the input", *out));
            auto m = read_spw(*in);
            if (!m.ok()) return report_error(m.status());
            auto dense = m->to_dense_model();
            if (!dense.ok()) return report_error(dense.status());
            if (auto s = save_onnx(*dense, *out); !s.ok()) return report_error(s);
            if (*json) {
              std::error_code ec;
              const auto bytes = std::filesystem::file_size(*out, ec);
              fmt::print("{}\n", nlohmann::json{{"input", *in},
                                                {"output", *out},
                                                {"file_bytes", ec ? nlohmann::json() : nlohmann::json(bytes)},
                                                {"parameters", dense->parameter_count()}}
                                     .dump(2));
              return 0;
            }
            if (!global.quiet)
              fmt::print(stderr, "wrote {} ({} parameters, dense float32)\n", *out, dense->parameter_count());
            return 0;
          }};
}

}  // namespace sparrow::cli
