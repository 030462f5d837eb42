// sparrow: the command-line interface. Each subcommand lives in cmd_<name>.cpp.
#include <cstdio>
#include <new>
#include <string>

#include "cli/commands.h"
#include "core/file.h"
#include "core/log.h"
#include "core/version.h"

namespace {
using AddCommand = sparrow::cli::Command (*)(CLI::App&, const sparrow::cli::GlobalOptions&);
constexpr AddCommand kCommands[] = {
    sparrow::cli::add_info,     sparrow::cli::add_run,     sparrow::cli::add_eval,
    sparrow::cli::add_compress, sparrow::cli::add_inspect, sparrow::cli::add_export,
#ifdef SPARROW_WITH_BENCHMARKS
    sparrow::cli::add_bench,
#endif
    sparrow::cli::add_sim,      sparrow::cli::add_train,   sparrow::cli::add_sensitivity,
    sparrow::cli::add_dsd,      sparrow::cli::add_repro,   sparrow::cli::add_digits,
    sparrow::cli::add_report};
// A usage error: "sparrow: error: <what>" and where to read more, exit code 1. A first word that
// names no command is reported as such (CLI11 would only say that a command is required).
int usage_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  std::string command;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App* a) { return a->parsed(); }))
    command = sub->get_name() + " ";
  std::string message = e.what();
  if (command.empty())
    for (int i = 1; i < argc; ++i) {
      const std::string word = argv[i];
      if (word.empty() || word[0] == '-') continue;
      bool known = false;
      for (const CLI::App* sub : app.get_subcommands({})) known = known || sub->get_name() == word;
      const bool option_value = i > 1 && std::string(argv[i - 1]).rfind("--", 0) == 0 &&
                                std::string(argv[i - 1]).find('=') == std::string::npos &&
                                app.get_option_no_throw(argv[i - 1]) != nullptr &&
                                app.get_option_no_throw(argv[i - 1])->get_expected_min() > 0;
      if (option_value) continue;
      if (!known) message = "unknown command '" + word + "'";
      break;
    }
  std::fprintf(stderr, "sparrow: error: %s\nRun 'sparrow %s--help' for the options.\n", message.c_str(),
               command.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sparrow::cli;
  CLI::App app{"Sparrow: compress neural networks, store them compactly, run them fast.", "sparrow"};
  app.set_version_flag("--version", std::string("sparrow ") + SPARROW_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // subcommands (which inherit it) pass the global options up: accepted anywhere
  GlobalOptions global;
  bool verbose = false;
  app.add_option("--threads", global.threads, "Worker threads (default and most: one per hardware thread)")
      ->check(CLI::Range(0, 1024));
  app.add_flag("-q,--quiet", global.quiet, "No progress lines");
  app.add_flag("-v,--verbose", verbose, "Log what Sparrow does");
  app.add_flag("--dense", global.dense, "Run .spw models decompressed on the dense executor");
  app.add_option("--weight-memory", global.weight_memory,
                 "Compressed weights in memory at most this many times their bytes in the file, giving up "
                 "some speed for it (default 2, but at least 512 KiB); 0: the fastest layouts whatever "
                 "their size")
      ->check(kFiniteNumber & CLI::Range(0.0, 1e6));
  app.add_option("--batch-chunk", global.batch_chunk,
                 "Run batches of models that compute each sample on its own as chunks of at most N "
                 "samples, each thread running whole chunks (default 0: for convolutional models, "
                 "chunks whose activations fit in a core's L2 cache; -1: batches run whole)")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));

  app.add_option("--max-input", global.max_input,
                 "Largest input file, and most bytes a reader allocates for one file's data, e.g. 512MB "
                 "(default 4GB)")
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 50));

  std::vector<Command> commands;
  for (auto add : kCommands) commands.push_back(add(app, global));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help and --version
    return usage_error(app, e, argc, argv);
  }
  global.weight_memory_given = app.get_option("--weight-memory")->count() > 0;
  if (verbose) sparrow::set_log_level(sparrow::LogLevel::info);
  sparrow::protect_inputs(true);  // no output of a command replaces a file it read
  sparrow::set_input_byte_limit(global.max_input);
  try {
    for (auto& command : commands)
      if (command.app->parsed()) return command.run();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "sparrow: error: out of memory\n");
    return 1;
  }
  return 1;
}
