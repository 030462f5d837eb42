// Sparrow's one policy for non-finite numbers. NaN and infinity are refused wherever a user or a
// file hands Sparrow a number, with an error that names where the value is:
//   - float options (cli/commands.h, kFiniteNumber): finite_float;
//   - inputs to `run` (unless --allow-nonfinite) and to `eval` once normalized: first_nonfinite;
//   - labels (io/idx.cpp): whole numbers from 0, which excludes NaN;
//   - weights to compress (compress/compress.cpp): require_finite;
//   - codebooks, both when written and when read (format/spw_format.h, codebook_problem), so the
//     writer never writes a file its reader refuses;
//   - training: a loss or weight that stops being finite ends it with an error, and the weights
//     go back to the last epoch that was (train/trainer.cpp); no output is written.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "sparrow/status.h"

namespace sparrow {

// Index of the first NaN or infinity in `values`, or -1.
int64_t first_nonfinite(std::span<const float> values);

// Whether `v` is finite and within float range (1e39 is finite as a double, not as a float).
bool finite_float(double v);

// OK, or "`what`: element I is nan`hint`" for the first value that is not finite.
Status require_finite(std::span<const float> values, std::string_view what, std::string_view hint = {});

}  // namespace sparrow
