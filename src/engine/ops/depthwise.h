// Convolutions with one input channel per group (depthwise, with any channel multiplier), computed
// directly on NCHW planes, without im2col. Built for AVX-512, AVX2 and baseline x86-64 from one
// source (the loader picks the clone the CPU runs); tests check it against a plain loop.
#pragma once

#include "engine/epilogue.h"
#include "engine/ops/window.h"

namespace sparrow {

// Floats of scratch one depthwise_conv_plane call needs for `win` (its input plane, zero padded).
int64_t depthwise_scratch_floats(const Window2d& win);

// One output plane: y[out_h, out_w] = act(bias + the k_h x k_w window of w slid over the input
// plane x[in_h, in_w] with the strides, dilations and zero padding of `win`). `scratch` holds
// depthwise_scratch_floats(win) floats.
void depthwise_conv_plane(const float* x, const float* w, float bias, const Window2d& win,
                          const Activation& act, float* scratch, float* y);

}  // namespace sparrow
