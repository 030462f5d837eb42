// Graph passes the executor runs on its own copy of a model before planning. Each rewrites a pattern
// into a node the engine computes in one pass over its output; results equal the unfused graph up to
// float rounding. Exported and stored graphs are never rewritten.
#pragma once

#include <functional>
#include <optional>

#include "sparrow/model.h"

namespace sparrow {

// The shape of a constant value (an initializer or a compressed weight), nullopt for other values.
using ConstantShape = std::function<std::optional<Shape>(const std::string& name)>;

// MatMul(x, W) followed by Add(., b), where W is a constant [K, N] and b a constant [N] that only the
// Add reads: the MatMul takes b as a third input and adds it in its epilogue.
int fuse_matmul_bias(Model& model, const ConstantShape& constant_shape);
// Conv whose only reader is an Add of a value formed before the Conv runs (a graph input or an
// earlier node's output, not a constant): the Conv takes that value as input kFusedResidualInput,
// adds it in its epilogue (kFusedResidualAttr, epilogue.h) and writes the Add's output. A residual
// that broadcasts is added with broadcasting (FusedResidual in ops/window.h).
int fuse_residual_adds(Model& model, const ConstantShape& constant_shape);
// Conv, Gemm, MatMul or Add whose only reader is a Relu, or a Clip with constant bounds: the node
// applies the activation itself (kFusedActivationAttr) and writes the activation's output. Covers
// residual Add + Relu.
int fuse_activations(Model& model, const ConstantShape& constant_shape);

// The layer normalization exporters write out at opsets below 17: ReduceMean(x) over the last axis,
// d = x - mean, ReduceMean(d^2), + epsilon, Sqrt, d / that, then optionally * scale and + bias
// (constant vectors): one LayerNormalization node (axis -1) in their place, when no other node reads
// the values in between.
int fuse_layer_norm(Model& model, const ConstantShape& constant_shape);

// Every pass above in order; returns the number of rewrites.
int run_graph_passes(Model& model, const ConstantShape& constant_shape);

}  // namespace sparrow
