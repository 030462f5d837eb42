// The activation an op applies to its own output, in the pass that adds its bias: a Relu or Clip node
// that fuse_activations (graph_passes.h) folded into the op. Ops that accept one are listed by
// takes_fused_activation().
#pragma once

#include <limits>

#include "sparrow/model.h"

namespace sparrow {

// Attribute of a fused node: floats {lo, hi}, the bounds of the activation.
inline constexpr const char* kFusedActivationAttr = "sparrow.activation";
// Attribute of a Conv that took over the Add reading its output (int 1): input kFusedResidualInput
// is the Add's other operand, added before the activation (see FusedResidual in ops/window.h).
inline constexpr const char* kFusedResidualAttr = "sparrow.residual";
inline constexpr size_t kFusedResidualInput = 3;

struct Activation {
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();

  bool none() const {
    return lo == -std::numeric_limits<float>::infinity() && hi == std::numeric_limits<float>::infinity();
  }
  // Zeros the output is expected to hold: ReLU-like, everything below 0 becomes 0.
  bool makes_zeros() const { return lo == 0.0f; }
  // As the Relu op computes it (NaN becomes lo), then capped at hi; no activation leaves v as is.
  float operator()(float v) const {
    if (none()) return v;
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
  }
  // The same over y[0, n). The bounds are read once, into locals: y might alias them as far as the
  // compiler knows, which kept it from vectorizing the loop.
  void apply(float* y, int64_t n) const {
    if (none()) return;
    const float low = lo, high = hi;
    for (int64_t i = 0; i < n; ++i) {
      const float v = y[i] > low ? y[i] : low;
      y[i] = v < high ? v : high;
    }
  }
};

// The node's fused activation (none when it has no kFusedActivationAttr). Errors name the node.
Result<Activation> fused_activation(const Node& node);
// Whether ops of this type apply a fused activation.
bool takes_fused_activation(const std::string& op_type);

}  // namespace sparrow
