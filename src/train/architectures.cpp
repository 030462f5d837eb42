// The built-in architectures, written directly as IR graphs (no LibTorch needed).
#include <cmath>
#include <random>

#include "sparrow/train.h"

namespace sparrow {

namespace {

// Uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)], as PyTorch initializes Linear and Conv layers.
Tensor uniform_init(Shape shape, int64_t fan_in, std::mt19937_64& rng) {
  Tensor t(DType::f32, std::move(shape));
  float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  std::uniform_real_distribution<float> u(-bound, bound);
  for (float& v : t.f32_span()) v = u(rng);
  return t;
}

void add_fc(Model& m, const std::string& name, const std::string& in, const std::string& out, int64_t n_in,
            int64_t n_out, std::mt19937_64& rng) {
  m.initializers[name + ".weight"] = uniform_init({n_out, n_in}, n_in, rng);
  m.initializers[name + ".bias"] = uniform_init({n_out}, n_in, rng);
  m.nodes.push_back(
      Node{name, "Gemm", "", {in, name + ".weight", name + ".bias"}, {out}, {{"transB", int64_t{1}}}});
}

void add_conv(Model& m, const std::string& name, const std::string& in, const std::string& out, int64_t c_in,
              int64_t c_out, int64_t k, std::mt19937_64& rng) {
  m.initializers[name + ".weight"] = uniform_init({c_out, c_in, k, k}, c_in * k * k, rng);
  m.initializers[name + ".bias"] = uniform_init({c_out}, c_in * k * k, rng);
  m.nodes.push_back(Node{name,
                         "Conv",
                         "",
                         {in, name + ".weight", name + ".bias"},
                         {out},
                         {{"kernel_shape", std::vector<int64_t>{k, k}}}});
}

void add(Model& m, const std::string& op, const std::string& in, const std::string& out,
         std::map<std::string, AttrValue> attrs = {}) {
  m.nodes.push_back(Node{out, op, "", {in}, {out}, std::move(attrs)});
}

}  // namespace

Result<Model> make_architecture(const std::string& name, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Model m;
  m.source = name;
  m.graph_name = name;
  m.producer_name = "sparrow";
  m.opset = 13;
  m.inputs.push_back(ValueInfo{"image", ElemType::f32, {-1, 1, 28, 28}, {"batch", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"logits", ElemType::f32, {-1, 10}, {"batch", ""}, true});
  if (name == "lenet300") {
    add(m, "Flatten", "image", "flat");
    add_fc(m, "fc1", "flat", "h1", 784, 300, rng);
    add(m, "Relu", "h1", "r1");
    add_fc(m, "fc2", "r1", "h2", 300, 100, rng);
    add(m, "Relu", "h2", "r2");
    add_fc(m, "fc3", "r2", "logits", 100, 10, rng);
  } else if (name == "lenet5") {
    std::map<std::string, AttrValue> pool = {{"kernel_shape", std::vector<int64_t>{2, 2}},
                                             {"strides", std::vector<int64_t>{2, 2}}};
    add_conv(m, "conv1", "image", "c1", 1, 20, 5, rng);
    add(m, "MaxPool", "c1", "p1", pool);
    add_conv(m, "conv2", "p1", "c2", 20, 50, 5, rng);
    add(m, "MaxPool", "c2", "p2", pool);
    add(m, "Flatten", "p2", "flat");
    add_fc(m, "fc1", "flat", "h1", 800, 500, rng);
    add(m, "Relu", "h1", "r1");
    add_fc(m, "fc2", "r1", "logits", 500, 10, rng);
  } else {
    return errorf("unknown architecture '{}' (use lenet300 or lenet5)", name);
  }
  SP_RETURN_IF_ERROR(m.validate());
  return m;
}

}  // namespace sparrow
