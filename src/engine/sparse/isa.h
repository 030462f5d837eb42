// Instruction sets the sparse kernels are built for, lowest first.
#pragma once

namespace sparrow {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };
const char* isa_name(Isa isa);

}  // namespace sparrow
