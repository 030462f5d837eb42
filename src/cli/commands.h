// One function pair per subcommand: add_<name> registers options, the callback runs it.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "cli/common.h"
#include "core/finite.h"

namespace sparrow::cli {

// For float options: a finite number within float range (refuses nan, inf and 1e39).
inline const CLI::Validator kFiniteNumber(
    [](std::string& text) -> std::string {
      try {
        size_t used = 0;
        double v = std::stod(text, &used);
        if (used == text.size() && finite_float(v)) return {};
      } catch (const std::exception&) {
      }
      return "must be a finite number, got " + text;
    },
    "FINITE");

// A registered subcommand and the function that runs it once parsed (returns the exit code).
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command add_info(CLI::App& app, const GlobalOptions& global);
Command add_run(CLI::App& app, const GlobalOptions& global);
Command add_eval(CLI::App& app, const GlobalOptions& global);
Command add_compress(CLI::App& app, const GlobalOptions& global);
Command add_inspect(CLI::App& app, const GlobalOptions& global);
Command add_export(CLI::App& app, const GlobalOptions& global);
Command add_bench(CLI::App& app, const GlobalOptions& global);
Command add_sim(CLI::App& app, const GlobalOptions& global);
Command add_train(CLI::App& app, const GlobalOptions& global);
Command add_sensitivity(CLI::App& app, const GlobalOptions& global);
Command add_dsd(CLI::App& app, const GlobalOptions& global);
Command add_repro(CLI::App& app, const GlobalOptions& global);
Command add_digits(CLI::App& app, const GlobalOptions& global);
Command add_report(CLI::App& app, const GlobalOptions& global);

}  // namespace sparrow::cli
