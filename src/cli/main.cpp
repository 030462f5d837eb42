// sparrow: the command-line interface. Each subcommand lives in cmd_<name>.cpp.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/file.h"
#include "core/log.h"
#include "sparrow/version.h"

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

// Global options that only some commands use, and those commands: given to any other command they
// would be ignored, so they are refused. (--quiet, --verbose and --max-input apply to every command.)
struct GlobalOptionScope {
  const char* option;
  std::vector<std::string> commands;
};
const std::vector<GlobalOptionScope>& global_option_scopes() {
  static const std::vector<std::string> run_models = {"info", "run", "eval", "bench"};
  static const std::vector<GlobalOptionScope> scopes = {
      {"--dense", run_models},
      {"--weight-memory", run_models},
      {"--batch-chunk", run_models},
      {"--threads",
       {"info", "run", "eval", "bench", "compress", "sim", "train", "sensitivity", "dsd", "repro"}},
  };
  return scopes;
}

// "--dense has no effect on 'inspect' ..." for the first global option given to a command that
// does not use it; "" when there is none.
std::string ignored_global_option(const CLI::App& app, const std::string& command) {
  for (const GlobalOptionScope& scope : global_option_scopes()) {
    if (app.get_option(scope.option)->count() == 0) continue;
    if (std::find(scope.commands.begin(), scope.commands.end(), command) != scope.commands.end()) continue;
    std::string users;
    for (const auto& c : scope.commands) users += (users.empty() ? "" : ", ") + c;
    return std::string(scope.option) + " has no effect on '" + command + "' (it applies to " + users + ")";
  }
  return "";
}

// The option named by a command-line word ("--x", "--x=v", "-q"), looked up in the app and in
// every command; nullptr when none has it.
const CLI::Option* find_option(const CLI::App& app, const std::string& word) {
  const std::string name = word.substr(0, word.find('='));
  if (const CLI::Option* o = app.get_option_no_throw(name)) return o;
  for (const CLI::App* sub : app.get_subcommands({}))
    if (const CLI::Option* o = sub->get_option_no_throw(name)) return o;
  return nullptr;
}

// The first word that names no option of any command ("--bogus"), if any.
std::string unknown_option(const CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word == "--") break;
    const bool option =
        word.size() > 1 && word[0] == '-' && !std::isdigit(static_cast<unsigned char>(word[1]));
    if (option && !find_option(app, word)) return word.substr(0, word.find('='));
  }
  return "";
}

// The first word that is neither an option, nor an option's value, nor a command; "" when the
// command is there.
std::string unknown_command(const CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (!word.empty() && word[0] == '-') continue;
    const std::string before = i > 1 ? argv[i - 1] : "";
    const CLI::Option* option = before.rfind("-", 0) == 0 && before.find('=') == std::string::npos
                                    ? find_option(app, before)
                                    : nullptr;
    if (option && option->get_expected_min() > 0) continue;  // that option's value
    for (const CLI::App* sub : app.get_subcommands({}))
      if (sub->get_name() == word) return "";
    return word;
  }
  return "";
}

// A usage error: "sparrow: error: <what>" and where to read more, exit code 1. An option no
// command has, and a first word that names no command, are reported as such (CLI11 reports a
// missing argument first, or only that a command is required).
int usage_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  std::string command;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App* a) { return a->parsed(); }))
    command = sub->get_name() + " ";
  std::string message = e.what();
  if (const std::string option = unknown_option(app, argc, argv); !option.empty())
    message = "unknown option '" + option + "'";
  else if (const std::string word = unknown_command(app, argc, argv);
           command.empty() && !word.empty() &&
           (dynamic_cast<const CLI::RequiredError*>(&e) || dynamic_cast<const CLI::ExtrasError*>(&e)))
    message = "unknown command '" + word + "'";
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
                 "some speed for it (default 3, but at least 512 KiB); 0: the fastest layouts whatever "
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
  for (const auto& command : commands)
    if (command.app->parsed())
      if (const std::string ignored = ignored_global_option(app, command.app->get_name()); !ignored.empty()) {
        std::fprintf(stderr, "sparrow: error: %s\n", ignored.c_str());
        return 1;
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
  } catch (const std::exception& e) {  // a defect: said as such rather than an abort
    std::fprintf(stderr, "sparrow: error: internal error: %s\n", e.what());
    return 1;
  }
  return 1;
}
