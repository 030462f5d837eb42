// Loads a .spw model, runs it once on zeros at batch 1 and prints the Sparrow version it was built
// against, its output shapes and the bytes its weights take in the file and in memory.
#include <cstdio>

#include "sparrow/executor.h"
#include "sparrow/version.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: run_spw MODEL.spw\n");
    return 1;
  }
  std::printf("built against sparrow %s\n", SPARROW_VERSION);
  auto spw = sparrow::read_spw(argv[1]);
  if (!spw.ok()) return std::fprintf(stderr, "%s\n", spw.status().message().c_str()), 1;
  auto ex = sparrow::Executor::create(std::move(*spw));
  if (!ex.ok()) return std::fprintf(stderr, "%s\n", ex.status().message().c_str()), 1;
  auto shapes = (*ex)->default_input_shapes(1);
  if (!shapes.ok()) return std::fprintf(stderr, "%s\n", shapes.status().message().c_str()), 1;
  std::vector<sparrow::Tensor> inputs;
  for (const auto& s : *shapes) inputs.emplace_back(sparrow::DType::f32, s);
  auto out = (*ex)->run(inputs);
  if (!out.ok()) return std::fprintf(stderr, "%s\n", out.status().message().c_str()), 1;
  for (const sparrow::Tensor* t : *out) std::printf("output %s\n", sparrow::shape_str(t->shape()).c_str());
  auto m = (*ex)->weight_memory();
  std::printf("weights: %lld bytes in the file, %lld in memory\n",
              static_cast<long long>(m.compressed_in_file), static_cast<long long>(m.compressed_in_memory));
  return 0;
}
