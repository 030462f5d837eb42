// Shared by the fuzz targets: inputs written to a file for the readers that take paths, and a
// model planned (and, when small, run) as `sparrow run` would.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sparrow/executor.h"

namespace sparrow::fuzz {

// Writes the input to a file of this process's own (overwritten per call) and returns its path;
// `suffix` gives the extension a reader may look at (".gz").
std::string input_file(const uint8_t* data, size_t size, const std::string& suffix);

// Plans the executor for its declared input shapes at batch 1 and runs it on zeros when the plan
// is small enough to run quickly. Errors are the expected outcome of most inputs and are ignored.
void plan_and_run(Executor& executor);

// Options that bound what a fuzzed model may ask for: one thread, 64 MiB of activations.
ExecOptions bounded_options();

}  // namespace sparrow::fuzz
