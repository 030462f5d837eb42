// sparrow eval MODEL --images IDX --labels IDX: classification accuracy on an IDX dataset.
// Each image is normalized as x = raw * scale + shift and laid out in the model input's shape.
#include <cstring>

#include <nlohmann/json.hpp>

#include <cmath>

#include "cli/commands.h"
#include "core/file.h"
#include "core/timer.h"
#include "sparrow/dataset.h"

namespace sparrow::cli {

namespace {

struct EvalOptions {
  std::string model, images, labels;
  float scale = 1.0f / 255.0f;
  float shift = 0.0f;
  int64_t batch = 64;
  int64_t limit = 0;
  bool json = false;
  std::string predictions;  // optional .npy of predicted classes
};

struct EvalResult {
  int64_t correct = 0, total = 0;
  double seconds = 0;
  std::vector<int64_t> predicted;
};

// The per-sample shape of the model's first input; fails if a non-batch dim is unknown.
Result<Shape> sample_shape(const Model& m, int64_t sample_size) {
  if (m.inputs.empty()) return errorf("{}: the model has no inputs", m.source);
  const ValueInfo& in = m.inputs[0];
  if (!in.has_shape || in.dims.empty()) return errorf("{}: input '{}' declares no shape", m.source, in.name);
  Shape s(in.dims.begin() + 1, in.dims.end());
  for (int64_t d : s)
    if (d < 0) return errorf("{}: input {} has an unknown non-batch dimension", m.source, in.describe());
  if (shape_numel(s) != sample_size)
    return errorf("{}: input {} takes {} values per sample, the images have {}", m.source, in.describe(),
                  shape_numel(s), sample_size);
  return s;
}

int64_t argmax(const float* p, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (p[i] > p[best]) best = i;
  return best;
}

Result<EvalResult> evaluate(Executor& ex, const EvalOptions& o, const GlobalOptions& global) {
  SP_ASSIGN_OR_RETURN(Tensor images, read_idx(o.images));
  SP_ASSIGN_OR_RETURN(std::vector<int64_t> labels, read_idx_labels(o.labels));
  int64_t count = images.dim(0);
  if (count != static_cast<int64_t>(labels.size()))
    return errorf("{} has {} images but {} has {} labels", o.images, count, o.labels, labels.size());
  if (o.limit > 0) count = std::min(count, o.limit);
  int64_t sample = count ? images.numel() / images.dim(0) : 0;
  // Normalized once, in place, and checked as the model will see them.
  std::span<float> used = images.f32_span().first(static_cast<size_t>(count * sample));
  for (float& v : used) v = v * o.scale + o.shift;
  if (const int64_t i = first_nonfinite(used); i >= 0)
    return errorf("{}: image {} value {} is {} once normalized (x * {} + {}): inputs must be finite",
                  o.images, i / sample, i % sample, used[static_cast<size_t>(i)], o.scale, o.shift);
  SP_ASSIGN_OR_RETURN(Shape per_sample, sample_shape(ex.model(), sample));
  int64_t fixed_batch = ex.model().inputs[0].dims[0];
  int64_t batch = fixed_batch > 0 ? fixed_batch : std::min(o.batch, std::max<int64_t>(count, 1));
  if (ex.model().inputs.size() != 1)
    return errorf("{}: eval needs a model with one input", ex.model().source);

  EvalResult r;
  Timer timer;
  bool progress = show_progress(global);
  for (int64_t start = 0; start < count; start += batch) {
    // With a fixed batch dimension the last batch is padded with zeros and the padding ignored.
    int64_t n = std::min(batch, count - start);
    Shape shape = per_sample;
    shape.insert(shape.begin(), fixed_batch > 0 ? batch : n);
    Tensor x(DType::f32, shape);
    const float* src = images.f32_data() + start * sample;
    float* dst = x.f32_data();
    std::copy_n(src, n * sample, dst);
    SP_ASSIGN_OR_RETURN(auto outputs, ex.run(std::span<const Tensor>(&x, 1)));
    const Tensor& y = *outputs[0];
    if (y.dtype() != DType::f32 || y.rank() < 1 || y.dim(0) != x.dim(0))
      return errorf("{}: output '{}' has shape {}, expected [batch, classes]", ex.model().source,
                    ex.model().outputs[0].name, shape_str(y.shape()));
    int64_t classes = y.numel() / y.dim(0);
    for (int64_t i = 0; i < n; ++i) {
      r.predicted.push_back(argmax(y.f32_data() + i * classes, classes));
      r.correct += r.predicted.back() == labels[start + i];
    }
    r.total += n;
    if (progress) fmt::print(stderr, "\reval {}/{} images", r.total, count);
  }
  if (progress) fmt::print(stderr, "\r\033[K");
  r.seconds = timer.seconds();
  return r;
}

}  // namespace

Command add_eval(CLI::App& app, const GlobalOptions& global) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("eval", "Classification accuracy on an IDX dataset (e.g. MNIST)");
  cmd->add_option("model", o->model, "Model file (.onnx or .spw)")->required();
  cmd->add_option("--images", o->images, "IDX images, optionally .gz")->required();
  cmd->add_option("--labels", o->labels, "IDX labels, optionally .gz")->required();
  cmd->add_option("--scale", o->scale, "Input normalization: x = raw * scale + shift (default 1/255)")
      ->check(kFiniteNumber);
  cmd->add_option("--shift", o->shift, "Input normalization offset (default 0)")->check(kFiniteNumber);
  cmd->add_option("--batch", o->batch, "Images per batch")->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd->add_option("--limit", o->limit, "Evaluate only the first N images")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->add_option("--predictions", o->predictions, "Write the predicted class of every image to this .npy");
  return {
      cmd, [o, &global]() -> int {
        for (const auto& input : {o->model, o->images, o->labels})
          if (!o->predictions.empty() && same_file(o->predictions, input))
            return report_error(errorf("--predictions {} would overwrite an input file", o->predictions));
        auto ex = open_model(o->model, global);
        if (!ex.ok()) return report_error(ex.status());
        auto r = evaluate(**ex, *o, global);
        if (!r.ok()) return report_error(r.status());
        if (!o->predictions.empty()) {
          Tensor p = Tensor::i64({static_cast<int64_t>(r->predicted.size())}, r->predicted);
          if (auto s = write_npy(o->predictions, p); !s.ok()) return report_error(s);
        }
        double accuracy = r->total ? static_cast<double>(r->correct) / static_cast<double>(r->total) : 0.0;
        if (o->json) {
          nlohmann::json j{
              {"model", o->model},     {"accuracy", accuracy},
              {"correct", r->correct}, {"total", r->total},
              {"seconds", r->seconds}, {"images_per_second", r->seconds > 0 ? r->total / r->seconds : 0.0},
              {"batch", o->batch},     {"threads", (*ex)->threads()}};
          fmt::print("{}\n", j.dump());
        } else {
          fmt::print("images: {}  time: {:.3f} s  ({:.0f} images/s, {} threads)\n", r->total, r->seconds,
                     r->seconds > 0 ? r->total / r->seconds : 0.0, (*ex)->threads());
          fmt::print("accuracy: {:.4f} ({}/{})\n", accuracy, r->correct, r->total);
        }
        return 0;
      }};
}

}  // namespace sparrow::cli
