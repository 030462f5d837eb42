// Byte accounting of a .spw file: every byte in exactly one category.
#pragma once

#include "sparrow/format.h"

namespace sparrow {

// Computes the breakdown from the model's tensors, their storage records and the size of the
// GRPH section; what no other category claims (file header, section table, records, names, dims,
// entry counts, padding, metadata) is counted as headers.
ByteBreakdown account_bytes(const SpwModel& model, size_t graph_section_bytes);

}  // namespace sparrow
