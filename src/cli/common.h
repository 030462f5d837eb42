// Shared helpers for the CLI subcommands.
#pragma once

#include <memory>
#include <string>

#include "sparrow/compress.h"
#include "sparrow/executor.h"

namespace sparrow::cli {

struct GlobalOptions {
  int threads = 0;
  bool quiet = false;
  bool dense = false;                    // run .spw models decompressed on the dense executor
  double weight_memory = 3.0;            // ExecOptions::weight_memory_ratio
  bool weight_memory_given = false;      // --weight-memory on the command line: no floor either
  int64_t batch_chunk = 0;               // ExecOptions::samples_per_chunk
  int64_t max_input = int64_t{4} << 30;  // set_input_byte_limit
};

// The executor options the global options ask for.
ExecOptions exec_options(const GlobalOptions& options);
// Loads a model file (.onnx or .spw) and prepares an executor for it.
Result<std::unique_ptr<Executor>> open_model(const std::string& path, const ExecOptions& exec);
Result<std::unique_ptr<Executor>> open_model(const std::string& path, const GlobalOptions& options);

// True when progress lines should be drawn (stderr is a terminal and --quiet is off).
bool show_progress(const GlobalOptions& options);

// Prints "sparrow: error: <message>" and returns the exit code 1.
int report_error(const Status& status);

// Sets the options' structured pruning and low-rank rules from --structured and --lowrank text
// (each ignored when empty); errors name the flag.
Status apply_reshaping_flags(const std::string& structured, const std::string& low_rank, CompressOptions& o);

// Catches Ctrl-C (SIGINT) for its lifetime: the first one sets interrupted() instead of ending the
// process, so that training stops before its next batch and leaves its checkpoint; a second one
// ends the process as usual.
class InterruptScope {
 public:
  InterruptScope();
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;
  // Whether Ctrl-C came since the scope began.
  static bool interrupted();

 private:
  void (*previous_)(int);
};

// "1.2M", "431K", "950"
std::string human_count(int64_t n);
// "5.59 MB", "812 KB", "96 B" (decimal units).
std::string human_bytes(int64_t n);

}  // namespace sparrow::cli
