#include "cli/common.h"

#include <csignal>
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include "sparrow/format.h"
#include "sparrow/onnx.h"

namespace sparrow::cli {

ExecOptions exec_options(const GlobalOptions& options) {
  ExecOptions exec{options.threads};
  exec.sparse = !options.dense;
  exec.weight_memory_ratio = options.weight_memory;
  if (options.weight_memory_given) exec.weight_memory_floor_bytes = 0;
  exec.samples_per_chunk = options.batch_chunk;
  return exec;
}

Result<std::unique_ptr<Executor>> open_model(const std::string& path, const GlobalOptions& options) {
  return open_model(path, exec_options(options));
}

Result<std::unique_ptr<Executor>> open_model(const std::string& path, const ExecOptions& exec) {
  std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".onnx") {
    SP_ASSIGN_OR_RETURN(Model model, load_onnx(path));
    return Executor::create(std::move(model), exec);
  }
  if (ext == ".spw") {
    SP_ASSIGN_OR_RETURN(SpwModel spw, read_spw(path));
    return Executor::create(std::move(spw), exec);
  }
  return errorf("{}: unknown model file type '{}' (expected .onnx or .spw)", path, ext);
}

bool show_progress(const GlobalOptions& options) {
  return !options.quiet && ::isatty(STDERR_FILENO);
}

int report_error(const Status& status) {
  std::fprintf(stderr, "sparrow: error: %s\n", status.message().c_str());
  return 1;
}

std::string human_bytes(int64_t n) {
  if (n >= 1'000'000) return fmt::format("{:.2f} MB", static_cast<double>(n) / 1e6);
  if (n >= 10'000) return fmt::format("{:.0f} KB", static_cast<double>(n) / 1e3);
  return fmt::format("{} B", n);
}

std::string human_count(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}G", n / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 10'000) return fmt::format("{:.1f}K", n / 1e3);
  return std::to_string(n);
}

Status apply_reshaping_flags(const std::string& structured, const std::string& low_rank, CompressOptions& o) {
  if (!structured.empty()) {
    auto rule = parse_structured_rule(structured);
    if (!rule.ok()) return rule.status().prefixed("--structured");
    o.structured = *rule;
  }
  if (!low_rank.empty()) {
    auto rule = parse_low_rank_rule(low_rank);
    if (!rule.ok()) return rule.status().prefixed("--lowrank");
    o.low_rank = *rule;
  }
  return {};
}

namespace {

volatile std::sig_atomic_t interrupt_requested = 0;

void on_interrupt(int) {
  interrupt_requested = 1;
  std::signal(SIGINT, SIG_DFL);
}

}  // namespace

InterruptScope::InterruptScope() {
  interrupt_requested = 0;
  previous_ = std::signal(SIGINT, on_interrupt);
}

InterruptScope::~InterruptScope() {
  std::signal(SIGINT, previous_);
}

bool InterruptScope::interrupted() {
  return interrupt_requested != 0;
}

}  // namespace sparrow::cli
