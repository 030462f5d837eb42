// sparrow bench --eie: the sparse engine against dense and sparse peers on [EIE]'s layers.
#include "cli/bench_eie.h"
#include "cli/commands.h"

namespace sparrow::cli {

Command add_bench(CLI::App& app, const GlobalOptions& global) {
  auto o = std::make_shared<EieBenchOptions>();
  auto eie = std::make_shared<bool>(false);
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("bench", "Time the sparse engine against dense and sparse peers");
  cmd->add_flag("--eie", *eie, "The nine benchmark layers of [EIE]")->required();
  cmd->add_option("--batch", o->batches, "Batch sizes, e.g. 1,64")->delimiter(',')->check(CLI::Range(1, 4096));
  cmd->add_option("--threads", o->threads, "Thread counts, e.g. 1,2")->delimiter(',')->check(CLI::Range(1, 256));
  cmd->add_option("--repeats", o->repeats, "Timed runs per measurement (median reported)")->check(CLI::Range(1, 10000));
  cmd->add_option("--layers", o->layers, "Only these layers, e.g. Alex-6,VGG-7")->delimiter(',');
  cmd->add_flag("--json", *json, "Print one JSON object");
  return {cmd, [o, json, &global]() -> int {
    o->progress = show_progress(global);
    auto results = run_eie_bench(*o);
    if (*json) fmt::print("{}\n", results.dump(2));
    else print_eie_bench(results);
    return 0;
  }};
}

}  // namespace sparrow::cli
