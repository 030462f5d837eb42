#include "core/finite.h"

#include <cmath>
#include <limits>

namespace sparrow {

int64_t first_nonfinite(std::span<const float> values) {
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i])) return static_cast<int64_t>(i);
  return -1;
}

bool finite_float(double v) {
  return std::isfinite(v) && std::fabs(v) <= std::numeric_limits<float>::max();
}

Status require_finite(std::span<const float> values, std::string_view what, std::string_view hint) {
  const int64_t bad = first_nonfinite(values);
  if (bad < 0) return {};
  return errorf("{}: element {} is {}{}", what, bad, values[static_cast<size_t>(bad)], hint);
}

}  // namespace sparrow
