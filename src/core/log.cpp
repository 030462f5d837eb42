#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sparrow {

namespace {

LogLevel level_from_env() {
  const char* env = std::getenv("SPARROW_LOG");
  if (env == nullptr) return LogLevel::warn;
  if (std::strcmp(env, "error") == 0) return LogLevel::error;
  if (std::strcmp(env, "info") == 0) return LogLevel::info;
  if (std::strcmp(env, "debug") == 0) return LogLevel::debug;
  return LogLevel::warn;
}

std::atomic<LogLevel>& current_level() {
  static std::atomic<LogLevel> level{level_from_env()};
  return level;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::error:
      return "error";
    case LogLevel::warn:
      return "warning";
    case LogLevel::info:
      return "info";
    case LogLevel::debug:
      return "debug";
  }
  return "?";
}

}  // namespace

void set_log_level(LogLevel level) {
  current_level().store(level);
}
LogLevel log_level() {
  return current_level().load();
}

void log_message(LogLevel level, std::string_view message) {
  std::fprintf(stderr, "sparrow %s: %.*s\n", level_name(level), static_cast<int>(message.size()),
               message.data());
}

}  // namespace sparrow
