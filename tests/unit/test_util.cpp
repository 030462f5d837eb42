#include "test_util.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>

namespace sparrow::test {

Tensor make_f32(Shape shape, std::vector<float> values) {
  return Tensor::f32(std::move(shape), values);
}
Tensor make_i64(Shape shape, std::vector<int64_t> values) {
  return Tensor::i64(std::move(shape), values);
}

Tensor random_f32(Shape shape, uint32_t seed) {
  Tensor t(DType::f32, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto& v : t.f32_span()) v = dist(rng);
  return t;
}

CodeMatrix random_code_matrix(int64_t rows, int64_t cols, double density, int codebook_size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  CodeMatrix c{std::vector<uint8_t>(static_cast<size_t>(rows * cols), 0), rows, cols,
               std::vector<float>(static_cast<size_t>(codebook_size), 0.0f)};
  for (int i = 1; i < codebook_size; ++i) c.codebook[static_cast<size_t>(i)] = u(rng) * 2 - 1;
  int next_code = 1;
  for (auto& code : c.codes)
    if (u(rng) < density) {
      code = static_cast<uint8_t>(next_code);
      next_code = next_code % (codebook_size - 1) + 1;
    }
  return c;
}

Result<std::vector<Tensor>> run_op(const std::string& op_type, std::map<std::string, AttrValue> attrs,
                                   const std::vector<Tensor>& inputs, int64_t opset, size_t outputs,
                                   std::vector<size_t> omitted, int threads) {
  Model m;
  m.opset = opset;
  m.source = "test";
  Node node{"n", op_type, "", {}, {}, std::move(attrs)};
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::string name = "in" + std::to_string(i);
    if (std::find(omitted.begin(), omitted.end(), i) != omitted.end()) {
      node.inputs.push_back("");
      continue;
    }
    node.inputs.push_back(name);
    if (inputs[i].dtype() == DType::i64) {
      m.initializers[name] = inputs[i];
    } else {
      ValueInfo vi{name, ElemType::f32, inputs[i].shape(), std::vector<std::string>(inputs[i].rank()), true};
      m.inputs.push_back(vi);
      feeds.push_back(inputs[i]);
    }
  }
  for (size_t i = 0; i < outputs; ++i) {
    node.outputs.push_back("out" + std::to_string(i));
    m.outputs.push_back(ValueInfo{"out" + std::to_string(i)});
  }
  m.nodes.push_back(std::move(node));
  SP_ASSIGN_OR_RETURN(auto ex, Executor::create(std::move(m), threaded(threads)));
  SP_ASSIGN_OR_RETURN(auto results, ex->run(feeds));
  std::vector<Tensor> out;
  for (const Tensor* t : results) out.push_back(*t);
  return out;
}

ConstantShape initializer_shapes(const Model& m) {
  return [&m](const std::string& name) -> std::optional<Shape> {
    auto it = m.initializers.find(name);
    if (it == m.initializers.end()) return std::nullopt;
    return it->second.shape();
  };
}

SpwModel compressed_spw(const Model& model, double sparsity, BlockShape block, int partitions) {
  CompressOptions o;
  o.float_fallback = false;
  o.all.prune.sparsity = sparsity;
  o.all.prune.block = block;
  o.partitions = partitions;
  auto r = compress_model(model, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  auto bytes = serialize_spw(r->spw, true);
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  auto spw = parse_spw(*bytes, "m.spw");
  EXPECT_TRUE(spw.ok()) << spw.status().message();
  return std::move(spw).value();
}

Tensor run_dense(const Model& m, const Tensor& x) {
  auto ex = Executor::create(m);
  EXPECT_TRUE(ex.ok()) << ex.status().message();
  if (!ex.ok()) return Tensor();
  auto y = (*ex)->run({&x, 1});
  EXPECT_TRUE(y.ok()) << y.status().message();
  return y.ok() ? *(*y)[0] : Tensor();
}

std::vector<ChannelGroup> prune_structured(Model& m, const std::string& rule,
                                           const std::map<std::string, StructuredRule>& per_layer) {
  auto r = parse_structured_rule(rule);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return {};
  auto groups = prune_channels(m, *r, per_layer);
  EXPECT_TRUE(groups.ok()) << groups.status().message();
  return groups.ok() ? *groups : std::vector<ChannelGroup>{};
}

Model small_cnn(uint32_t seed) {
  Model m;
  m.source = "small_cnn";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 1, 8, 8}, {"N", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w"] = random_f32({4, 1, 3, 3}, seed);
  m.initializers["b"] = random_f32({4}, seed + 1);
  m.initializers["fw"] = random_f32({10, 64}, seed + 2);
  m.initializers["fb"] = random_f32({10}, seed + 3);
  m.nodes.push_back(
      Node{"conv", "Conv", "", {"x", "w", "b"}, {"c"}, {{"pads", std::vector<int64_t>{1, 1, 1, 1}}}});
  m.nodes.push_back(Node{"relu", "Relu", "", {"c"}, {"r"}, {}});
  m.nodes.push_back(
      Node{"pool",
           "MaxPool",
           "",
           {"r"},
           {"p"},
           {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{2, 2}}}});
  m.nodes.push_back(Node{"flat", "Flatten", "", {"p"}, {"f"}, {}});
  m.nodes.push_back(Node{"fc", "Gemm", "", {"f", "fw", "fb"}, {"y"}, {{"transB", int64_t{1}}}});
  return m;
}

double max_relative_error(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape() || a.dtype() != DType::f32) return INFINITY;
  double max_diff = 0, max_ref = 1e-6;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.f32_data()[i], y = b.f32_data()[i];
    if (std::isnan(x) != std::isnan(y)) return INFINITY;
    if (std::isnan(y)) continue;
    max_diff = std::max(max_diff, std::fabs(x - y));
    max_ref = std::max(max_ref, std::fabs(y));
  }
  return max_diff / max_ref;
}

CliResult run_cli(const std::string& args) {
  std::string cmd = std::string(SPARROW_CLI) + " " + args + " 2>&1";
  CliResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  int status = pclose(pipe);
  if (WIFEXITED(status))
    r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    r.signal = WTERMSIG(status);
  return r;
}

std::string temp_dir(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("sparrow_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

WindowMax window_max(const float* x, const Window2d& win, int64_t oh, int64_t ow) {
  WindowMax m{-std::numeric_limits<float>::infinity(), false};
  for (int64_t i = 0; i < win.k_h; ++i)
    for (int64_t j = 0; j < win.k_w; ++j) {
      const int64_t ih = oh * win.s_h - win.pad_t + i * win.d_h, iw = ow * win.s_w - win.pad_l + j * win.d_w;
      if (ih < 0 || iw < 0 || ih >= win.in_h || iw >= win.in_w) continue;
      const float v = x[ih * win.in_w + iw];
      m.nan |= std::isnan(v);
      m.value = std::max(m.value, v);
    }
  return m;
}

}  // namespace sparrow::test
