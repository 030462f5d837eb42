// sparrow report MODEL.spw -o DIR [--source MODEL.onnx]: the compressed model as pictures and one
// page (api/report_page.h). --json prints the paths written.
#include <nlohmann/json.hpp>

#include "api/report_page.h"
#include "cli/commands.h"

namespace sparrow::cli {

namespace {

int run(const api::ReportRequest& request, bool json, const GlobalOptions& global) {
  auto files = api::write_report(request);
  if (!files.ok()) return report_error(files.status());
  if (json) {
    fmt::print("{}\n", nlohmann::json{{"directory", files->directory},
                                      {"page", files->page},
                                      {"json", files->json},
                                      {"tables", files->tables},
                                      {"plots", files->plots}}
                           .dump(2));
    return 0;
  }
  if (!global.quiet) {
    fmt::print("wrote {}, {} and {} plot(s):", files->page, files->json, files->plots.size());
    for (const auto& p : files->plots) fmt::print(" {}", p);
    fmt::print("\n");
  }
  return 0;
}

}  // namespace

Command add_report(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<api::ReportRequest>();
  auto json = std::make_shared<bool>(false);
  auto* cmd =
      app.add_subcommand("report", "Write a compressed model's plots and summary page (SVG, HTML, JSON)");
  cmd->add_option("file", a->model, "Compressed model (.spw)")->required();
  cmd->add_option("-o,--output", a->dir, "Output directory (default: FILE.report)");
  auto* source = cmd->add_option("--source", a->source,
                                 "The uncompressed ONNX model, to plot its weights behind the shared values");
  cmd->add_option("--bins", a->bins, "Histogram bins for the source weights")
      ->check(CLI::Range(2, 10000))
      ->needs(source);
  cmd->add_option(
      "--sensitivity", a->sensitivity,
      "A sensitivity scan of the source (`sparrow sensitivity --json` output): plotted, with each "
      "layer's proposed sparsity beside the file's");
  cmd->add_flag("--json", *json, "Print one JSON object: the files written");
  return {cmd, [a, json, &global]() { return run(*a, *json, global); }};
}

}  // namespace sparrow::cli
