// Writes seed corpora for the fuzz targets: valid files of every format the targets read, made with
// Sparrow's own writers. Usage: sparrow_fuzz_seeds DIR (creates DIR/<target>/...).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "compress/recipe.h"
#include "sim/config.h"
#include "sparrow/compress.h"
#include "sparrow/dataset.h"
#include "sparrow/format.h"
#include "sparrow/onnx.h"

namespace sparrow {
namespace {

Tensor filled(const Shape& shape, uint32_t seed) {
  Tensor t(DType::f32, shape);
  float* v = t.f32_data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = static_cast<float>(static_cast<int32_t>(seed >> 8) % 2000) / 1000.0f - 1.0f;
  }
  return t;
}

Node node(const std::string& op, std::vector<std::string> inputs, std::string output) {
  Node n;
  n.name = output;
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = {std::move(output)};
  return n;
}

// x [batch, 64] -> Gemm + Relu -> MatMul + Add -> y [batch, 10]
Model mlp() {
  Model m;
  m.source = "mlp";
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, 64}, {"batch", ""}, true}};
  m.outputs = {ValueInfo{"y", ElemType::f32, {-1, 10}, {"batch", ""}, true}};
  m.initializers["W1"] = filled({32, 64}, 1);
  m.initializers["B1"] = filled({32}, 2);
  m.initializers["W2"] = filled({32, 10}, 3);
  m.initializers["B2"] = filled({10}, 4);
  Node gemm = node("Gemm", {"x", "W1", "B1"}, "h");
  gemm.attrs["transB"] = int64_t{1};
  m.nodes = {gemm, node("Relu", {"h"}, "r"), node("MatMul", {"r", "W2"}, "z"), node("Add", {"z", "B2"}, "y")};
  return m;
}

// x [batch, 1, 8, 8] -> Conv 3x3 + Relu -> MaxPool 2x2 -> Flatten -> Gemm -> y [batch, 10]
Model cnn() {
  Model m;
  m.source = "cnn";
  m.inputs = {ValueInfo{"x", ElemType::f32, {-1, 1, 8, 8}, {"batch", "", "", ""}, true}};
  m.outputs = {ValueInfo{"y", ElemType::f32, {-1, 10}, {"batch", ""}, true}};
  m.initializers["C"] = filled({4, 1, 3, 3}, 5);
  m.initializers["CB"] = filled({4}, 6);
  m.initializers["W"] = filled({10, 36}, 7);
  Node conv = node("Conv", {"x", "C", "CB"}, "c");
  conv.attrs["kernel_shape"] = std::vector<int64_t>{3, 3};
  Node pool = node("MaxPool", {"r"}, "p");
  pool.attrs["kernel_shape"] = std::vector<int64_t>{2, 2};
  pool.attrs["strides"] = std::vector<int64_t>{2, 2};
  Node gemm = node("Gemm", {"f", "W"}, "y");
  gemm.attrs["transB"] = int64_t{1};
  m.nodes = {conv, node("Relu", {"c"}, "r"), pool, node("Flatten", {"p"}, "f"), gemm};
  return m;
}

void write(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

int make_seeds(const std::filesystem::path& dir) {
  const Model models[] = {mlp(), cnn()};
  for (const Model& m : models) {
    auto onnx = serialize_onnx(m);
    if (!onnx.ok()) return std::fprintf(stderr, "%s\n", onnx.status().message().c_str()), 1;
    write(dir / "onnx" / (m.source + ".onnx"), *onnx);
    for (int bits : {4, 8}) {
      CompressOptions o;
      o.all.prune.sparsity = 0.8;
      o.all.bits = bits;
      auto c = compress_model(m, o);
      if (!c.ok()) return std::fprintf(stderr, "%s\n", c.status().message().c_str()), 1;
      for (bool huffman : {false, true}) {
        auto spw = serialize_spw(c->spw, huffman);
        if (!spw.ok()) return std::fprintf(stderr, "%s\n", spw.status().message().c_str()), 1;
        write(dir / "spw" / (m.source + "_" + std::to_string(bits) + (huffman ? "_huffman" : "") + ".spw"),
              *spw);
      }
      // Format 1.1 too: its graph section is the encoding itself, which mutations then reach
      // (1.2's is behind zlib's own checksum).
      auto v11 = serialize_spw(c->spw, true, 1);
      if (!v11.ok()) return std::fprintf(stderr, "%s\n", v11.status().message().c_str()), 1;
      write(dir / "spw" / (m.source + "_" + std::to_string(bits) + "_v11.spw"), *v11);
      write(dir / "recipe" / (m.source + "_" + std::to_string(bits) + ".json"), recipe_json(o).dump());
    }
  }
  std::filesystem::create_directories(dir / "npy");
  std::filesystem::create_directories(dir / "idx");
  std::filesystem::create_directories(dir / "sim_config");
  Status s = write_npy((dir / "npy" / "x.npy").string(), filled({2, 3, 4}, 8));
  Tensor labels(DType::i64, {5});
  if (s.ok()) s = write_npy((dir / "npy" / "labels.npy").string(), labels);
  std::vector<uint8_t> pixels(2 * 4 * 4, 7);
  if (s.ok()) s = write_idx_u8((dir / "idx" / "images.idx").string(), {2, 4, 4}, pixels);
  if (s.ok()) s = write_idx_u8((dir / "idx" / "images.idx.gz").string(), {2, 4, 4}, pixels);
  if (s.ok()) s = write_idx_u8((dir / "idx" / "labels.idx").string(), {3}, {1, 2, 3});
  if (!s.ok()) return std::fprintf(stderr, "%s\n", s.message().c_str()), 1;
  write(dir / "sim_config" / "default.json", sim::config_to_json(sim::Config{}).dump(1));
  return 0;
}

}  // namespace
}  // namespace sparrow

int main(int argc, char** argv) {
  if (argc != 2) return std::fprintf(stderr, "usage: %s DIR\n", argv[0]), 1;
  return sparrow::make_seeds(argv[1]);
}
