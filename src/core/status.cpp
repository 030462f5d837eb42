#include "sparrow/status.h"

namespace sparrow {

Status Status::prefixed(std::string_view context) const {
  if (ok() || context.empty()) return *this;
  return Status::error(fmt::format("{}: {}", context, message_));
}

}  // namespace sparrow
