#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/log.h"
#include "engine/sparse/kernels.h"

namespace sparrow {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return "scalar";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "?";
}

Isa best_supported_isa() {
  Isa best = Isa::scalar;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    best = Isa::avx512;
  if (const char* cap = std::getenv("SPARROW_MAX_ISA")) {
    Isa limit = std::strcmp(cap, "scalar") == 0 ? Isa::scalar
                : std::strcmp(cap, "avx2") == 0 ? Isa::avx2
                                                : Isa::avx512;
    if (limit < best) best = limit;
  }
  return best;
}

namespace {

ScatterMode default_scatter() {
  if (const char* mode = std::getenv("SPARROW_SCATTER")) {
    if (std::strcmp(mode, "hardware") == 0) return ScatterMode::hardware;
    if (std::strcmp(mode, "scalar") == 0) return ScatterMode::scalar;
    log(LogLevel::warn, "SPARROW_SCATTER={}: not 'hardware' or 'scalar', ignored", mode);
  }
  return __builtin_cpu_is("amd") ? ScatterMode::scalar : ScatterMode::hardware;
}

std::atomic<ScatterMode>& scatter_setting() {
  static std::atomic<ScatterMode> mode{default_scatter()};
  return mode;
}

}  // namespace

ScatterMode avx512_scatter() {
  return scatter_setting().load(std::memory_order_relaxed);
}

void set_avx512_scatter(ScatterMode mode) {
  scatter_setting().store(mode, std::memory_order_relaxed);
}

const char* scatter_mode_name(ScatterMode mode) {
  return mode == ScatterMode::hardware ? "hardware scatter" : "scalar scatter";
}

SparseKernels sparse_kernels_for(Isa isa) {
  SparseKernels k;
  k.isa = std::min(isa, best_supported_isa());
#define SPARROW_PICK(name, args)                          \
  k.name = k.isa == Isa::avx512 ? kernels::name##__avx512 \
           : k.isa == Isa::avx2 ? kernels::name##__avx2   \
                                : kernels::name##__ref;
  SPARROW_SPARSE_KERNELS(SPARROW_PICK)
#undef SPARROW_PICK
  return k;
}

const SparseKernels& sparse_kernels() {
  static const SparseKernels k = [] {
    SparseKernels chosen = sparse_kernels_for(best_supported_isa());
    if (chosen.isa == Isa::avx512)
      log(LogLevel::info, "sparse kernels: avx512, {}", scatter_mode_name(avx512_scatter()));
    else
      log(LogLevel::info, "sparse kernels: {}", isa_name(chosen.isa));
    return chosen;
  }();
  return k;
}

}  // namespace sparrow
