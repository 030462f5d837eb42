// Training in LibTorch. The only translation unit of Sparrow that includes LibTorch: the IR graph is
// interpreted with torch operations, so gradients flow through any supported classifier.
#include <torch/torch.h>

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "core/file.h"
#include "sparrow/weight_roles.h"
#include "train/training_api.h"

namespace sparrow {

namespace {

torch::Tensor to_torch(const Tensor& t) {
  std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
  auto dtype = t.dtype() == DType::f32 ? torch::kFloat32 : torch::kInt64;
  return torch::from_blob(const_cast<void*>(t.raw()), shape, dtype).clone();
}

// A view of t's data, without a copy, for data the training only reads (its rows): `t` outlives
// the view and nothing writes through it.
torch::Tensor read_only_view(const Tensor& t) {
  std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
  auto dtype = t.dtype() == DType::f32 ? torch::kFloat32 : torch::kInt64;
  return torch::from_blob(const_cast<void*>(t.raw()), shape, dtype);
}

void copy_back(const torch::Tensor& src, Tensor& dst) {
  auto c = src.detach().contiguous().to(torch::kFloat32);
  std::memcpy(dst.raw(), c.data_ptr<float>(), dst.bytes());
}

// Inputs of the normalizations that are learnt: the per-channel scale and shift (BatchNormalization's
// running mean and variance stay as they are: the trainer runs it in inference mode).
const std::map<std::string, std::vector<size_t>>& normalization_parameters() {
  static const std::map<std::string, std::vector<size_t>> table{
      {"BatchNormalization", {1, 2}},
      {"LayerNormalization", {1, 2}},
  };
  return table;
}

// Elementwise operators whose float operands of two or more values are learnt: the bias Add after
// a MatMul, the scale Mul and shift Add of a normalization spelled out in primitives, and learnt
// position embeddings. Scalars there (epsilon, 1/sqrt(d)) are constants of the architecture.
bool elementwise_parameter_op(const std::string& op) {
  return op == "Add" || op == "Mul";
}

bool all_finite(const Tensor& t) {
  const float* v = t.f32_data();
  return std::all_of(v, v + t.numel(), [](float x) { return std::isfinite(x); });
}

// Names of the initializers the trainer updates:
// - the fully connected and convolution weights of the weight-role table, and their biases;
// - the scale and shift of BatchNormalization and LayerNormalization;
// - float Add and Mul operands of two or more finite values, except those of an Add whose sum goes
//   straight into a Softmax (an additive attention mask, which training must not move), wherever
//   else they are used. A mask reaching its Softmax through other nodes, or multiplied in, is not
//   told apart from a learnt tensor.
std::set<std::string> trainable(const Model& m) {
  std::set<std::string> names;
  auto is_float_initializer = [&](const Node& n, size_t i) {
    return n.has_input(i) && m.initializers.count(n.inputs[i]) &&
           m.initializers.at(n.inputs[i]).dtype() == DType::f32;
  };
  auto add = [&](const Node& n, int i) {
    if (i >= 0 && is_float_initializer(n, static_cast<size_t>(i))) names.insert(n.inputs[i]);
  };
  std::set<std::string> softmax_inputs, masks;
  for (const auto& n : m.nodes)
    if ((n.op_type == "Softmax" || n.op_type == "LogSoftmax") && !n.inputs.empty())
      softmax_inputs.insert(n.inputs[0]);
  for (const auto& n : m.nodes)
    if (n.op_type == "Add" && !n.outputs.empty() && softmax_inputs.count(n.outputs[0]))
      masks.insert(n.inputs.begin(), n.inputs.end());
  for (const auto& n : m.nodes) {
    for (size_t i = 0; i < n.inputs.size(); ++i)
      if (const WeightRole* role = weight_role(n, i);
          role && (role->kind == WeightKind::fully_connected || role->kind == WeightKind::convolution)) {
        add(n, static_cast<int>(i));
        add(n, role->bias_input);
      }
    if (auto it = normalization_parameters().find(n.op_type); it != normalization_parameters().end())
      for (size_t i : it->second) add(n, static_cast<int>(i));
    if (elementwise_parameter_op(n.op_type))
      for (size_t i = 0; i < n.inputs.size(); ++i)
        if (is_float_initializer(n, i) && !masks.count(n.inputs[i])) {
          const Tensor& t = m.initializers.at(n.inputs[i]);
          if (t.numel() >= 2 && all_finite(t)) names.insert(n.inputs[i]);
        }
  }
  return names;
}

std::vector<int64_t> ints(const Node& n, const char* key, std::vector<int64_t> fallback) {
  auto v = n.attr_ints(key, fallback);
  if (!v.ok()) throw std::runtime_error(v.status().message());
  return *v;
}
int64_t int_attr(const Node& n, const char* key, int64_t fallback) {
  auto v = n.attr_int(key, fallback);
  if (!v.ok()) throw std::runtime_error(v.status().message());
  return *v;
}
float float_attr(const Node& n, const char* key, float fallback) {
  auto v = n.attr_float(key, fallback);
  if (!v.ok()) throw std::runtime_error(v.status().message());
  return *v;
}

// Symmetric pads of a 2-D window (ONNX [top, left, bottom, right]); asymmetric pads are refused.
std::vector<int64_t> symmetric_pads(const Node& n) {
  auto pads = ints(n, "pads", {0, 0, 0, 0});
  std::string auto_pad = n.attr_string("auto_pad", std::string("NOTSET")).value();
  if (auto_pad != "NOTSET" || pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3])
    throw std::runtime_error(n.describe() +
                             ": only symmetric explicit pads of 2-D windows are supported for training");
  return {pads[0], pads[1]};
}

// A node's inputs by position (initializers included).
using Inputs = std::function<torch::Tensor(size_t)>;
// One ONNX operator in torch operations; `opset` is the model's default-domain version.
using TorchOp = torch::Tensor (*)(const Node& n, const Inputs& in, int64_t opset);

std::vector<int64_t> values_of(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kInt64).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}
int64_t normalized(int64_t axis, int64_t rank) {
  return axis < 0 ? axis + rank : axis;
}
// The axes of Unsqueeze, Squeeze or ReduceMean: input k where the node has it, else the attribute.
std::vector<int64_t> axes_of(const Node& n, const Inputs& in, size_t k) {
  return n.has_input(k) ? values_of(in(k)) : ints(n, "axes", {});
}

torch::Tensor gemm(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor a = int_attr(n, "transA", 0) ? in(0).t() : in(0);
  torch::Tensor b = int_attr(n, "transB", 0) ? in(1).t() : in(1);
  torch::Tensor y = torch::matmul(a, b) * float_attr(n, "alpha", 1.0f);
  if (n.has_input(2)) y = y + in(2) * float_attr(n, "beta", 1.0f);
  return y;
}
// ONNX divides integers with truncation (shape arithmetic); torch's `/` would give floats.
torch::Tensor divide(const Node&, const Inputs& in, int64_t) {
  const torch::Tensor a = in(0), b = in(1);
  if (!a.is_floating_point() && !b.is_floating_point()) return torch::div(a, b, "trunc");
  return a / b;
}
torch::Tensor flatten(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0);
  const int64_t axis = normalized(int_attr(n, "axis", 1), x.dim());
  return x.reshape({axis == 0 ? 1 : x.flatten(0, axis - 1).size(0), -1});
}
// A 0 copies the input's dimension unless allowzero is set (then it is a 0).
torch::Tensor reshape(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0);
  std::vector<int64_t> shape = values_of(in(1));
  if (int_attr(n, "allowzero", 0) == 0)
    for (size_t i = 0; i < shape.size(); ++i)
      if (shape[i] == 0) shape[i] = x.size(static_cast<int64_t>(i));
  return x.reshape(shape);
}
// From opset 13 over one axis; before, over all axes from `axis` on, flattened into one.
torch::Tensor softmax(const Node& n, const Inputs& in, int64_t opset) {
  torch::Tensor x = in(0);
  const int64_t axis = normalized(int_attr(n, "axis", opset < 13 ? 1 : -1), x.dim());
  const bool log = n.op_type == "LogSoftmax";
  if (opset >= 13 || axis == x.dim() - 1) return log ? torch::log_softmax(x, axis) : torch::softmax(x, axis);
  const torch::Tensor rows = x.flatten(axis);
  return (log ? torch::log_softmax(rows, axis) : torch::softmax(rows, axis)).reshape(x.sizes());
}
torch::Tensor conv(const Node& n, const Inputs& in, int64_t) {
  auto pads = symmetric_pads(n);
  return torch::conv2d(in(0), in(1), n.has_input(2) ? in(2) : torch::Tensor(), ints(n, "strides", {1, 1}),
                       pads, ints(n, "dilations", {1, 1}), int_attr(n, "group", 1));
}
torch::Tensor max_pool(const Node& n, const Inputs& in, int64_t) {
  auto pads = symmetric_pads(n);
  return torch::max_pool2d(in(0), ints(n, "kernel_shape", {}), ints(n, "strides", {1, 1}), pads,
                           ints(n, "dilations", {1, 1}), int_attr(n, "ceil_mode", 0) != 0);
}
torch::Tensor average_pool(const Node& n, const Inputs& in, int64_t) {
  auto pads = symmetric_pads(n);
  return torch::avg_pool2d(in(0), ints(n, "kernel_shape", {}), ints(n, "strides", {1, 1}), pads,
                           int_attr(n, "ceil_mode", 0) != 0, int_attr(n, "count_include_pad", 0) != 0);
}
torch::Tensor batch_norm(const Node& n, const Inputs& in, int64_t) {
  return torch::batch_norm(in(0), in(1), in(2), in(3), in(4), false, 0.0, float_attr(n, "epsilon", 1e-5f),
                           false);
}
torch::Tensor transpose(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0);
  std::vector<int64_t> reversed(static_cast<size_t>(x.dim()));
  for (int64_t d = 0; d < x.dim(); ++d) reversed[static_cast<size_t>(d)] = x.dim() - 1 - d;
  return x.permute(ints(n, "perm", reversed));
}
torch::Tensor shape(const Node& n, const Inputs& in, int64_t) {
  if (n.attrs.count("start") || n.attrs.count("end"))
    throw std::runtime_error(n.describe() + ": Shape with start or end is not supported for training");
  return torch::tensor(in(0).sizes().vec(), torch::kInt64);
}
// x's entries at the indices along `axis`, the indices' shape in place of that axis.
torch::Tensor gather(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0), indices = in(1).to(torch::kInt64);
  const int64_t axis = normalized(int_attr(n, "axis", 0), x.dim());
  indices = torch::where(indices < 0, indices + x.size(axis), indices);
  std::vector<int64_t> out(x.sizes().begin(), x.sizes().begin() + axis);
  for (int64_t d : indices.sizes()) out.push_back(d);
  out.insert(out.end(), x.sizes().begin() + axis + 1, x.sizes().end());
  return x.index_select(axis, indices.flatten()).reshape(out);
}
torch::Tensor unsqueeze(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0);
  std::vector<int64_t> axes = axes_of(n, in, 1);
  const int64_t rank = x.dim() + static_cast<int64_t>(axes.size());
  for (int64_t& a : axes) a = normalized(a, rank);
  std::sort(axes.begin(), axes.end());
  if (std::adjacent_find(axes.begin(), axes.end()) != axes.end() ||
      (!axes.empty() && (axes[0] < 0 || axes.back() >= rank)))
    throw std::runtime_error(n.describe() + ": Unsqueeze axes repeat or lie outside the output");
  for (int64_t a : axes) x = x.unsqueeze(a);
  return x;
}
torch::Tensor squeeze(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0);
  std::vector<int64_t> axes = axes_of(n, in, 1);
  if (axes.empty()) return x.squeeze();
  for (int64_t& a : axes) a = normalized(a, x.dim());
  std::sort(axes.rbegin(), axes.rend());
  for (int64_t a : axes) {
    if (a < 0 || a >= x.dim() || x.size(a) != 1)
      throw std::runtime_error(n.describe() + ": Squeeze of an axis that is not 1 long");
    x = x.squeeze(a);
  }
  return x;
}
torch::Tensor concat(const Node& n, const Inputs& in, int64_t) {
  std::vector<torch::Tensor> parts;
  for (size_t k = 0; k < n.inputs.size(); ++k) parts.push_back(in(k));
  return torch::cat(parts, normalized(int_attr(n, "axis", 0), parts.at(0).dim()));
}
// Slice with positive steps (bounds clamped to the axis, as ONNX does).
torch::Tensor slice(const Node& n, const Inputs& in, int64_t opset) {
  torch::Tensor x = in(0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (opset >= 10) {
    starts = values_of(in(1)), ends = values_of(in(2));
    if (n.has_input(3)) axes = values_of(in(3));
    if (n.has_input(4)) steps = values_of(in(4));
  } else {
    starts = ints(n, "starts", {}), ends = ints(n, "ends", {}), axes = ints(n, "axes", {});
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      (!steps.empty() && steps.size() != starts.size()))
    throw std::runtime_error(n.describe() + ": Slice's starts, ends, axes and steps differ in length");
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t axis = normalized(axes[i], x.dim()), dim = x.size(axis),
                  step = steps.empty() ? 1 : steps[i];
    if (step <= 0)
      throw std::runtime_error(n.describe() + ": only positive Slice steps are supported for training");
    auto clamp = [dim](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + dim : v, 0, dim); };
    x = x.slice(axis, clamp(starts[i]), clamp(ends[i]), step);
  }
  return x;
}
// As the engine computes: floating types in float32, integer types in int64.
torch::Tensor cast(const Node& n, const Inputs& in, int64_t) {
  static const std::map<int64_t, torch::ScalarType> types = {{1, torch::kFloat32},  {6, torch::kInt64},
                                                             {7, torch::kInt64},    {9, torch::kBool},
                                                             {10, torch::kFloat32}, {11, torch::kFloat32}};
  auto to = n.attr_int("to");
  if (!to.ok()) throw std::runtime_error(to.status().message());
  auto it = types.find(*to);
  if (it == types.end())
    throw std::runtime_error(n.describe() + ": Cast to this type is not supported for training");
  return in(0).to(it->second);
}
torch::Tensor reduce_mean(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0);
  std::vector<int64_t> axes = axes_of(n, in, 1);
  if (axes.empty())
    for (int64_t d = 0; d < x.dim(); ++d) axes.push_back(d);
  return x.mean(axes, int_attr(n, "keepdims", 1) != 0);
}

// Over the axes from `axis` on, scaled and shifted (opset 17; PyTorch exports nn.LayerNorm so).
torch::Tensor layer_norm(const Node& n, const Inputs& in, int64_t) {
  torch::Tensor x = in(0);
  const int64_t axis = normalized(int_attr(n, "axis", -1), x.dim());
  const std::vector<int64_t> normalized_shape(x.sizes().begin() + axis, x.sizes().end());
  auto per_element = [&](size_t k) {
    return n.has_input(k) ? in(k).expand(normalized_shape) : torch::Tensor();
  };
  return torch::layer_norm(x, normalized_shape, per_element(1), per_element(2),
                           float_attr(n, "epsilon", 1e-5f));
}

// The operators training runs, by ONNX name.
const std::map<std::string, TorchOp>& torch_ops() {
  static const std::map<std::string, TorchOp> table = {
      {"Gemm", gemm},
      {"MatMul", [](const Node&, const Inputs& in, int64_t) { return torch::matmul(in(0), in(1)); }},
      {"Add", [](const Node&, const Inputs& in, int64_t) { return in(0) + in(1); }},
      {"Sub", [](const Node&, const Inputs& in, int64_t) { return in(0) - in(1); }},
      {"Mul", [](const Node&, const Inputs& in, int64_t) { return in(0) * in(1); }},
      {"Div", divide},
      {"Pow",
       [](const Node&, const Inputs& in, int64_t) {
         return torch::pow(in(0), in(1)).to(in(0).scalar_type());  // the base's type, as ONNX
       }},
      {"Sqrt", [](const Node&, const Inputs& in, int64_t) { return torch::sqrt(in(0)); }},
      {"Erf", [](const Node&, const Inputs& in, int64_t) { return torch::erf(in(0)); }},
      {"Relu", [](const Node&, const Inputs& in, int64_t) { return torch::relu(in(0)); }},
      {"LeakyRelu", [](const Node& n, const Inputs& in,
                       int64_t) { return torch::leaky_relu(in(0), float_attr(n, "alpha", 0.01f)); }},
      {"Sigmoid", [](const Node&, const Inputs& in, int64_t) { return torch::sigmoid(in(0)); }},
      {"Tanh", [](const Node&, const Inputs& in, int64_t) { return torch::tanh(in(0)); }},
      {"Identity", [](const Node&, const Inputs& in, int64_t) { return in(0); }},
      {"Dropout", [](const Node&, const Inputs& in, int64_t) { return in(0); }},
      {"Flatten", flatten},
      {"Reshape", reshape},
      {"Softmax", softmax},
      {"LogSoftmax", softmax},
      {"Conv", conv},
      {"MaxPool", max_pool},
      {"AveragePool", average_pool},
      {"GlobalAveragePool",
       [](const Node&, const Inputs& in, int64_t) {
         return torch::adaptive_avg_pool2d(in(0), {1, 1});
       }},
      {"BatchNormalization", batch_norm},
      {"Transpose", transpose},
      {"Shape", shape},
      {"Gather", gather},
      {"Unsqueeze", unsqueeze},
      {"Squeeze", squeeze},
      {"Concat", concat},
      {"Slice", slice},
      {"Cast", cast},
      {"ReduceMean", reduce_mean},
      {"LayerNormalization", layer_norm},
  };
  return table;
}

// Runs the IR graph with torch operations. `weight` supplies every initializer (trainable ones as
// parameters, derived ones such as codebook-shared weights as expressions).
class GraphRunner {
 public:
  GraphRunner(const Model& m, std::function<torch::Tensor(const std::string&)> weight)
      : m_(m), weight_(std::move(weight)) {}

  torch::Tensor forward(const torch::Tensor& x) {
    std::map<std::string, torch::Tensor> v;
    v[m_.inputs.at(0).name] = x;
    auto get = [&](const std::string& name) -> torch::Tensor {
      auto it = v.find(name);
      return it != v.end() ? it->second : weight_(name);
    };
    for (const Node& n : m_.nodes) {
      auto op = n.domain.empty() ? torch_ops().find(n.op_type) : torch_ops().end();
      if (op == torch_ops().end())
        throw std::runtime_error(
            fmt::format("{}: operator {} is not supported for training", n.describe(), n.op_type));
      v[n.outputs[0]] = op->second(
          n, [&](size_t k) { return get(n.inputs.at(k)); }, m_.opset);
    }
    return v.at(m_.outputs.at(0).name);
  }

 private:
  const Model& m_;
  std::function<torch::Tensor(const std::string&)> weight_;
};

// LibTorch's intra-op threads and OpenBLAS's own threads oversubscribe the cores (docs/training.md):
// keep OpenBLAS, which LibTorch loads, single-threaded while training.
void single_threaded_openblas() {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

double scheduled_lr(const TrainOptions& o, int epoch) {
  switch (o.schedule) {
    case Schedule::constant:
      return o.lr;
    case Schedule::step:
      return o.lr * std::pow(0.1, epoch * 3 / std::max(o.epochs, 1));
    case Schedule::cosine:
      return o.lr * 0.5 * (1.0 + std::cos(M_PI * epoch / std::max(o.epochs, 1)));
  }
  return o.lr;
}

double accuracy(GraphRunner& net, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t i = 0; i < x.size(0); i += 1000) {
    int64_t e = std::min(x.size(0), i + 1000);
    correct += net.forward(x.slice(0, i, e)).argmax(1).eq(y.slice(0, i, e)).sum().item<int64_t>();
  }
  return x.size(0) ? static_cast<double>(correct) / static_cast<double>(x.size(0)) : 0.0;
}

// What accuracy is measured against: the labels, or (unlabeled data) the teacher's top-1 answers,
// which makes the accuracy the student's top-1 agreement with its teacher.
torch::Tensor answers(const LabeledData& d) {
  if (d.labeled()) return torch::tensor(d.labels, torch::kInt64);
  return to_torch(d.teacher).argmax(1);
}

// The loss of one batch: cross-entropy on the labels, or with distillation the distillation term
// (TrainOptions::distill) plus, when there are labels, (1 - weight) x cross-entropy.
torch::Tensor batch_loss(const torch::Tensor& logits, const torch::Tensor& labels,
                         const torch::Tensor& teacher, bool labeled, const Distillation& d) {
  namespace F = torch::nn::functional;
  if (!d.enabled) return F::cross_entropy(logits, labels);
  torch::Tensor distill;
  if (d.loss == DistillLoss::mse) {
    distill = F::mse_loss(logits, teacher);
  } else {
    const double t = d.temperature;
    // Both sides as log-probabilities: a teacher probability that underflows to 0 then adds
    // exp(log p) * (log p - log q) = 0, where p * log p would be 0 * -inf = NaN.
    distill = F::kl_div(F::log_softmax(logits / t, F::LogSoftmaxFuncOptions(1)),
                        F::log_softmax(teacher / t, F::LogSoftmaxFuncOptions(1)),
                        F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true)) *
              (t * t);
  }
  if (!labeled || d.weight >= 1) return distill;
  return distill * d.weight + F::cross_entropy(logits, labels) * (1 - d.weight);
}

// Copies of the parameters as they are, to return to.
std::vector<torch::Tensor> snapshot(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> copies;
  for (const auto& p : params) copies.push_back(p.detach().clone());
  return copies;
}

void restore(std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& copies) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(copies[i]);
}

bool all_finite(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params)
    if (!torch::isfinite(p).all().item<bool>()) return false;
  return true;
}

// The line that shows where an epoch is on a terminal (batches, images per second, time left),
// redrawn at most four times a second.
class LiveLine {
 public:
  void update(int epoch, int epochs, int64_t batch, int64_t batches, int64_t images, int64_t total,
              std::chrono::steady_clock::time_point start) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(250) && batch < batches) return;
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start).count();
    const double rate = seconds > 0 ? static_cast<double>(images) / seconds : 0.0;
    const double left = rate > 0 ? static_cast<double>(total - images) / rate : 0.0;
    fmt::print(stderr, "\r\033[Kepoch {}/{}: batch {}/{}, {:.0f} images/s, {:.0f} s left in the epoch",
               epoch + 1, epochs, batch, batches, rate, left);
  }
  void clear() { fmt::print(stderr, "\r\033[K"); }

 private:
  std::chrono::steady_clock::time_point last_{};
};

// The batch as augmented (Augmentation): flips and crop offsets drawn from torch's generator,
// which the training seed set.
torch::Tensor augmented(const torch::Tensor& batch, const Augmentation& a) {
  torch::Tensor out = batch;
  const int64_t n = batch.size(0);
  if (a.flip) {
    const torch::Tensor flipped = torch::rand({n}).lt(0.5).view({n, 1, 1, 1});
    out = torch::where(flipped, out.flip({3}), out);
  }
  if (a.crop_padding > 0) {
    const int64_t p = a.crop_padding, h = batch.size(2), w = batch.size(3);
    const torch::Tensor padded = torch::constant_pad_nd(out, {p, p, p, p}, 0.0);
    const torch::Tensor offsets = torch::randint(0, 2 * p + 1, {n, 2}, torch::kInt64);
    std::vector<torch::Tensor> crops;
    crops.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t dy = offsets[i][0].item<int64_t>(), dx = offsets[i][1].item<int64_t>();
      crops.push_back(padded[i].slice(1, dy, dy + h).slice(2, dx, dx + w));
    }
    out = torch::stack(crops);
  }
  return out;
}

// What a checkpoint must match to be resumed: the parameters' shapes, the rows, batch and epochs,
// the optimizer and its settings.
torch::Tensor run_signature(const std::vector<torch::Tensor>& params, int64_t rows, const TrainOptions& o) {
  std::vector<int64_t> values = {rows,
                                 o.batch,
                                 o.epochs,
                                 static_cast<int64_t>(params.size()),
                                 static_cast<int64_t>(o.optimizer),
                                 static_cast<int64_t>(o.schedule)};
  for (double setting : {o.lr, o.momentum, o.weight_decay}) values.push_back(std::bit_cast<int64_t>(setting));
  for (const auto& p : params) {
    values.push_back(p.dim());
    for (int64_t d : p.sizes()) values.push_back(d);
  }
  return torch::tensor(values, torch::kInt64);
}

// Writes the state after `epochs_done` epochs (TrainOptions::checkpoint) atomically.
Status save_checkpoint(const TrainOptions& o, const torch::Tensor& signature, int epochs_done,
                       const std::vector<torch::Tensor>& params, torch::optim::Optimizer& opt,
                       const std::vector<EpochReport>& reports) {
  torch::serialize::OutputArchive archive;
  archive.write("signature", signature);
  archive.write("epochs_done", torch::tensor(static_cast<int64_t>(epochs_done)));
  for (size_t i = 0; i < params.size(); ++i) archive.write(fmt::format("param{}", i), params[i].detach());
  torch::serialize::OutputArchive optimizer;
  opt.save(optimizer);
  archive.write("optimizer", optimizer);
  archive.write("generator", at::detail::getDefaultCPUGenerator().get_state());
  std::vector<double> rows;
  for (const EpochReport& r : reports)
    rows.insert(rows.end(),
                {static_cast<double>(r.epoch), r.loss, r.train_accuracy, r.val_accuracy, r.seconds});
  archive.write("reports",
                torch::tensor(rows, torch::kFloat64).view({static_cast<int64_t>(reports.size()), 5}));
  std::ostringstream bytes;
  archive.save_to(bytes);
  return write_file_atomic(o.checkpoint, bytes.str());
}

// Reads a checkpoint into the parameters, optimizer and generator; returns the epochs it holds.
// LibTorch throws on archives it cannot read.
Result<int> read_checkpoint(std::istream& file, const TrainOptions& o, const torch::Tensor& signature,
                            std::vector<torch::Tensor>& params, torch::optim::Optimizer& opt,
                            std::vector<EpochReport>& reports) {
  torch::serialize::InputArchive archive;
  archive.load_from(file);
  torch::Tensor saved, done, generator, rows;
  archive.read("signature", saved);
  if (!saved.equal(signature))
    return errorf(
        "{}: written for another model, data size, batch, epoch count or optimizer setting; resume "
        "with the settings it started with",
        o.checkpoint);
  archive.read("epochs_done", done);
  if (done.item<int64_t>() < 1 || done.item<int64_t>() > o.epochs)
    return errorf("{}: holds epoch {} of {}", o.checkpoint, done.item<int64_t>(), o.epochs);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor value;
    archive.read(fmt::format("param{}", i), value);
    params[i].copy_(value);
  }
  torch::serialize::InputArchive optimizer;
  archive.read("optimizer", optimizer);
  opt.load(optimizer);
  archive.read("generator", generator);
  at::Generator default_generator = at::detail::getDefaultCPUGenerator();  // a handle that shares the state
  default_generator.set_state(generator);
  archive.read("reports", rows);
  for (int64_t r = 0; r < rows.size(0); ++r)
    reports.push_back(EpochReport{static_cast<int>(rows[r][0].item<double>()), rows[r][1].item<double>(),
                                  rows[r][2].item<double>(), rows[r][3].item<double>(),
                                  rows[r][4].item<double>()});
  return static_cast<int>(done.item<int64_t>());
}

// read_checkpoint from o.checkpoint, its errors naming the file.
Result<int> load_checkpoint(const TrainOptions& o, const torch::Tensor& signature,
                            std::vector<torch::Tensor>& params, torch::optim::Optimizer& opt,
                            std::vector<EpochReport>& reports) {
  std::ifstream file(o.checkpoint, std::ios::binary);
  if (!file) return errorf("--resume: no checkpoint at {} to resume from", o.checkpoint);
  try {
    return read_checkpoint(file, o, signature, params, opt, reports);
  } catch (const std::exception& e) {
    return errorf("{}: not a readable checkpoint ({})", o.checkpoint, e.what());
  }
}

// The training loop shared by weight training and codebook fine-tuning. `after_step` re-applies
// constraints (masks, the zero code) after every optimizer step; `before_step` masks gradients.
// Training that diverges (a loss or a weight not finite) stops with an error that says where, and
// the parameters are put back as they were before that epoch.
Result<std::vector<EpochReport>> fit(GraphRunner& net, std::vector<torch::Tensor> params,
                                     const LabeledData& train, const LabeledData* val, const TrainOptions& o,
                                     const std::function<void()>& before_step,
                                     const std::function<void()>& after_step) {
  single_threaded_openblas();
  if (val && val->size() == 0) val = nullptr;
  torch::manual_seed(o.seed);
  torch::set_num_threads(o.threads > 0 ? o.threads
                                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  torch::Tensor x = read_only_view(train.inputs);  // batches are copied out of it
  torch::Tensor y = answers(train);
  torch::Tensor teacher = o.distill.enabled ? to_torch(train.teacher) : torch::Tensor();
  torch::Tensor vx, vy;
  if (val) {
    vx = read_only_view(val->inputs);
    vy = answers(*val);
  }
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (o.optimizer == Optimizer::sgd)
    opt = std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
  else
    opt = std::make_unique<torch::optim::Adam>(params,
                                               torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  std::vector<EpochReport> reports;
  const torch::Tensor signature = run_signature(params, x.size(0), o);
  int first_epoch = 0;
  if (o.resume) {
    SP_ASSIGN_OR_RETURN(first_epoch, load_checkpoint(o, signature, params, *opt, reports));
    if (o.progress) fmt::print(stderr, "resuming from {} after epoch {}\n", o.checkpoint, first_epoch);
  }
  const int64_t batches = (x.size(0) + o.batch - 1) / o.batch;
  auto diverged = [&](int epoch, const std::string& where, const std::vector<torch::Tensor>& good) {
    restore(params, good);
    return errorf(
        "training diverged in epoch {} of {} ({}); the model keeps the weights epoch {} started from; try a "
        "lower --lr than {:g}",
        epoch + 1, o.epochs, where, epoch + 1, o.lr);
  };
  const bool live = o.progress && ::isatty(STDERR_FILENO);
  LiveLine live_line;
  for (int epoch = first_epoch; epoch < o.epochs; ++epoch) {
    auto start = std::chrono::steady_clock::now();
    const std::vector<torch::Tensor> good = snapshot(params);
    for (auto& group : opt->param_groups()) group.options().set_lr(scheduled_lr(o, epoch));
    torch::Tensor order = torch::randperm(x.size(0), torch::kInt64);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t i = 0; i < x.size(0); i += o.batch) {
      if (o.interrupted && o.interrupted()) {
        restore(params, good);
        if (live) live_line.clear();
        return o.checkpoint.empty() || epoch == 0
                   ? errorf("interrupted in epoch {} of {}", epoch + 1, o.epochs)
                   : errorf("interrupted in epoch {} of {}; {} holds epoch {}: continue with --resume",
                            epoch + 1, o.epochs, o.checkpoint, epoch);
      }
      torch::Tensor idx = order.slice(0, i, std::min(x.size(0), i + o.batch));
      torch::Tensor bx = x.index_select(0, idx), by = y.index_select(0, idx);
      if (o.augment.enabled()) bx = augmented(bx, o.augment);
      torch::Tensor logits = net.forward(bx);
      torch::Tensor loss = batch_loss(logits, by, o.distill.enabled ? teacher.index_select(0, idx) : teacher,
                                      train.labeled(), o.distill);
      const double batch_loss = loss.item<double>();
      if (!std::isfinite(batch_loss))
        return diverged(epoch, fmt::format("loss {} at batch {} of {}", batch_loss, i / o.batch + 1, batches),
                        good);
      opt->zero_grad();
      loss.backward();
      before_step();
      opt->step();
      after_step();
      loss_sum += batch_loss * static_cast<double>(idx.size(0));
      correct += logits.argmax(1).eq(by).sum().item<int64_t>();
      if (live)
        live_line.update(epoch, o.epochs, i / o.batch + 1, batches, i + idx.size(0), x.size(0), start);
    }
    if (live) live_line.clear();
    if (!all_finite(params)) return diverged(epoch, "a weight is not finite at its end", good);
    EpochReport r{epoch + 1, loss_sum / static_cast<double>(x.size(0)),
                  static_cast<double>(correct) / static_cast<double>(x.size(0)),
                  val ? accuracy(net, vx, vy) : -1.0,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
    if (o.progress)
      fmt::print(stderr, "epoch {}/{}: loss {:.4f}, train {:.2f}%{} ({:.1f} s)\n", r.epoch, o.epochs, r.loss,
                 100 * r.train_accuracy, val ? fmt::format(", validation {:.2f}%", 100 * r.val_accuracy) : "",
                 r.seconds);
    if (o.on_epoch) o.on_epoch(r);
    reports.push_back(r);
    if (!o.checkpoint.empty())
      SP_RETURN_IF_ERROR(save_checkpoint(o, signature, epoch + 1, params, *opt, reports));
    if (o.should_stop && o.should_stop() && epoch + 1 < o.epochs)
      return errorf("training stopped by the caller after epoch {} of {}", epoch + 1, o.epochs);
  }
  return reports;
}

// A training or validation set fit for `o`: rows, labels for each (or, with distillation, the
// teacher's outputs instead), a model with one input and an output of scores.
Status check_data(const Model& m, const LabeledData& d, const char* what, const TrainOptions& o) {
  if (d.size() == 0) return errorf("{} set is empty", what);
  if (d.labeled() && static_cast<int64_t>(d.labels.size()) != d.size())
    return errorf("{} set has {} inputs and {} labels", what, d.size(), d.labels.size());
  if (o.distill.enabled && !d.taught())
    return errorf("{} set has no teacher outputs for its {} inputs (distillation needs them)", what,
                  d.size());
  if (!d.labeled() && !o.distill.enabled)
    return errorf("{} set has no labels (distillation could do without)", what);
  if (o.distill.enabled && !(o.distill.temperature > 0 && o.distill.weight >= 0 && o.distill.weight <= 1))
    return errorf("distillation: temperature must be > 0 and weight within [0, 1]");
  if (m.inputs.size() != 1 || m.outputs.empty())
    return errorf("{}: training needs one input and a logits output", m.source);
  if (o.augment.enabled() && d.inputs.rank() != 4)
    return errorf("augmentation (flip, crop) needs images [N, C, H, W]; the {} rows are {}", what,
                  shape_str(d.inputs.shape()));
  if (o.augment.enabled() && o.distill.enabled)
    return errorf(
        "augmentation does not go with distillation: the teacher's outputs are computed once, for the "
        "rows as given");
  if (o.augment.crop_padding < 0) return errorf("crop padding must be >= 0, got {}", o.augment.crop_padding);
  return {};
}

Result<std::vector<EpochReport>> train_impl(Model& model, const LabeledData& train, const LabeledData* val,
                                            const TrainOptions& o,
                                            const std::map<std::string, Tensor>* masks) {
  SP_RETURN_IF_ERROR(check_data(model, train, "training", o));
  if (val && val->size() > 0) SP_RETURN_IF_ERROR(check_data(model, *val, "validation", o));
  try {
    std::map<std::string, torch::Tensor> params, constants, torch_masks;
    for (const auto& name : trainable(model))
      params[name] = to_torch(model.initializers.at(name)).requires_grad_(true);
    for (const auto& [name, t] : model.initializers)
      if (!params.count(name)) constants[name] = to_torch(t);
    if (masks)
      for (const auto& [name, mask] : *masks) {
        if (!params.count(name)) return errorf("mask for '{}', which is not a trainable weight", name);
        if (mask.shape() != model.initializers.at(name).shape())
          return errorf("mask for '{}' has the wrong shape", name);
        torch_masks[name] = to_torch(mask);
      }
    GraphRunner net(model,
                    [&](const std::string& n) { return params.count(n) ? params.at(n) : constants.at(n); });
    std::vector<torch::Tensor> list;
    for (auto& [name, p] : params) list.push_back(p);
    auto reports = fit(
        net, list, train, val, o,
        [&] {
          for (auto& [name, m] : torch_masks) params.at(name).mutable_grad().mul_(m);
        },
        [&] {
          torch::NoGradGuard no_grad;
          for (auto& [name, m] : torch_masks) params.at(name).mul_(m);
        });
    // Trained, or as the last epoch that did not diverge left them.
    for (auto& [name, p] : params) copy_back(p, model.initializers.at(name));
    if (!reports.ok()) return reports.status().prefixed(model.source);
    return reports;
  } catch (const std::exception& e) {
    return errorf("{}: training failed: {}", model.source, e.what());
  }
}

Result<std::vector<EpochReport>> finetune_impl(SpwModel& spw, const LabeledData& train,
                                               const LabeledData* val, const TrainOptions& o) {
  SP_RETURN_IF_ERROR(check_data(spw.graph, train, "training", o));
  if (val && val->size() > 0) SP_RETURN_IF_ERROR(check_data(spw.graph, *val, "validation", o));
  try {
    struct Shared {
      torch::Tensor codebook, codes;
      CompressedTensor* tensor;
    };
    std::map<std::string, Shared> shared;
    for (auto& t : spw.tensors) {
      SP_ASSIGN_OR_RETURN(std::vector<uint8_t> codes, decode_codes(t));
      std::vector<int64_t> wide(codes.begin(), codes.end());
      shared[t.name] = {torch::tensor(t.codebook).requires_grad_(true), torch::tensor(wide, torch::kInt64),
                        &t};
    }
    Model& m = spw.graph;
    std::map<std::string, torch::Tensor> params, constants;
    for (const auto& name : trainable(m))
      params[name] = to_torch(m.initializers.at(name)).requires_grad_(true);
    for (const auto& [name, t] : m.initializers)
      if (!params.count(name)) constants[name] = to_torch(t);
    GraphRunner net(m, [&](const std::string& n) -> torch::Tensor {
      if (auto it = shared.find(n); it != shared.end()) {  // w = codebook[codes], in the tensor's own layout
        const CompressedTensor& t = *it->second.tensor;
        torch::Tensor w =
            it->second.codebook.index_select(0, it->second.codes).view({t.view.rows, t.view.cols});
        std::vector<int64_t> shape(t.shape.begin(), t.shape.end());
        return t.view.transposed ? w.t() : w.view(shape);
      }
      return params.count(n) ? params.at(n) : constants.at(n);
    });
    std::vector<torch::Tensor> list;
    for (auto& [name, s] : shared) list.push_back(s.codebook);
    for (auto& [name, p] : params) list.push_back(p);
    auto reports = fit(
        net, list, train, val, o,
        [&] {
          for (auto& [name, s] : shared) s.codebook.mutable_grad()[0] = 0;
        },
        [&] {
          torch::NoGradGuard no_grad;
          for (auto& [name, s] : shared) s.codebook[0] = 0;
        });
    for (auto& [name, s] : shared) {
      auto c = s.codebook.detach().contiguous();
      std::copy(c.data_ptr<float>(), c.data_ptr<float>() + c.numel(), s.tensor->codebook.begin());
    }
    for (auto& [name, p] : params) copy_back(p, m.initializers.at(name));
    if (!reports.ok()) return reports.status().prefixed(spw.graph.source);
    return reports;
  } catch (const std::exception& e) {
    return errorf("{}: codebook fine-tuning failed: {}", spw.graph.source, e.what());
  }
}

}  // namespace

}  // namespace sparrow

extern "C" const sparrow::TrainingApi* sparrow_training_api() {
  static const sparrow::TrainingApi api{sparrow::train_impl, sparrow::finetune_impl};
  return &api;
}
