#include "fuzz_util.h"

#include <unistd.h>

#include <cstdio>
#include <vector>

namespace sparrow::fuzz {

std::string input_file(const uint8_t* data, size_t size, const std::string& suffix) {
  const std::string path = "/tmp/sparrow_fuzz_" + std::to_string(::getpid()) + suffix;
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    if (size > 0) std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

ExecOptions bounded_options() {
  ExecOptions o;
  o.threads = 1;
  o.memory_limit_bytes = int64_t{64} << 20;
  return o;
}

void plan_and_run(Executor& executor) {
  auto shapes = executor.default_input_shapes(1);
  if (!shapes.ok()) return;
  for (const Shape& s : *shapes)
    if (shape_numel(s) < 0 || shape_numel(s) > (int64_t{1} << 22)) return;  // inputs a caller could not hold
  auto summary = executor.summarize(*shapes);
  if (!summary.ok() || summary->macs > 10'000'000) return;
  std::vector<Tensor> inputs;
  for (const Shape& s : *shapes) inputs.emplace_back(DType::f32, s);
  (void)executor.run(inputs);
}

}  // namespace sparrow::fuzz
