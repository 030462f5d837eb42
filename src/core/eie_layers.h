// The nine benchmark layers of [EIE] Table III and the published times of Table IV, shared by the
// engine benchmark and the simulator.
#pragma once

#include <cstdint>

namespace sparrow {

struct EieLayer {
  const char* name;
  int64_t in, out;
  double weight_density, activation_density;
  double theoretical_us, actual_us;  // [EIE] Table IV, 64 PEs at 800 MHz
};

inline constexpr EieLayer kEieLayers[] = {
    {"Alex-6", 9216, 4096, 0.09, 0.351, 28.1, 30.3}, {"Alex-7", 4096, 4096, 0.09, 0.353, 11.7, 12.2},
    {"Alex-8", 4096, 1000, 0.25, 0.375, 8.9, 9.9},   {"VGG-6", 25088, 4096, 0.04, 0.183, 28.1, 34.4},
    {"VGG-7", 4096, 4096, 0.04, 0.375, 7.9, 8.7},    {"VGG-8", 4096, 1000, 0.23, 0.411, 7.3, 8.4},
    {"NT-We", 4096, 600, 0.10, 1.0, 5.2, 8.0},       {"NT-Wd", 600, 8791, 0.11, 1.0, 13.0, 13.9},
    {"NT-LSTM", 1201, 2400, 0.10, 1.0, 6.5, 7.5}};

}  // namespace sparrow
