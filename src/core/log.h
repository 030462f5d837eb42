// Leveled logging to stderr. The level comes from set_log_level or SPARROW_LOG
// (error|warn|info|debug); the default is warn.
#pragma once

#include <string_view>

#include <fmt/format.h>

namespace sparrow {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, std::string_view message);

template <class... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (level <= log_level()) log_message(level, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace sparrow
