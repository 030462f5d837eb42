// ONNX import, graph checks, passes and planning, and a run when small.
#include "fuzz_util.h"
#include "sparrow/onnx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparrow;
  auto model = parse_onnx(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.onnx");
  if (!model.ok()) return 0;
  auto executor = Executor::create(std::move(*model), fuzz::bounded_options());
  if (executor.ok()) fuzz::plan_and_run(**executor);
  return 0;
}
