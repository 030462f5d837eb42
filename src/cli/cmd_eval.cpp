// sparrow eval MODEL (--images IDX | --data X.npy|X.npz|DIR) [--labels IDX|NPY] [--reference ORIGINAL]:
// classification accuracy against labels and/or top-1 agreement with a reference model (the
// original of a compressed model) and how far its outputs are. IDX images are normalized as
// x = raw * scale + shift; an .npy or .npz holds inputs already normalized; a directory is any
// training-data source's test split (cli/train_data.h), normalized as training normalizes it. All
// are laid out in the model input's shape.
#include <cstring>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include <cmath>

#include "cli/commands.h"
#include "cli/train_data.h"
#include "core/file.h"
#include "core/timer.h"
#include "sparrow/dataset.h"

namespace sparrow::cli {

namespace {

struct EvalOptions {
  std::string model, images, data, labels, reference;
  std::optional<float> scale, shift;  // IDX images: default 1/255 and 0
  std::vector<float> mean, std;       // --data DIR: per-channel normalization
  int64_t resize = 0;                 // --data of an image folder: the shorter side first scaled to this
  std::string data_cache;             // --data DIR or .npz: decoded once into this folder
  double data_cache_limit_gib = 20;   // what that folder may hold
  int64_t batch = 64;
  int64_t limit = 0;
  bool json = false;
  std::string predictions;  // optional .npy of predicted classes
};

struct EvalResult {
  int64_t correct = 0, total = 0;
  double seconds = 0;
  std::vector<int64_t> predicted;
  bool labeled = false;  // accuracy was measured
  // Against the reference model: rows with the same top-1 answer, output differences.
  int64_t agreeing = 0;
  double max_abs_difference = 0, sum_abs_difference = 0;
  int64_t compared_values = 0;
};

// The inputs to evaluate, [N, ...] as float32 and normalized: IDX images (scale, shift) or an .npy.
Result<Tensor> eval_inputs(const EvalOptions& o) {
  if (!o.data.empty()) {
    if (o.scale || o.shift)
      return errorf("--scale and --shift normalize IDX images; {} holds inputs already normalized", o.data);
    SP_ASSIGN_OR_RETURN(Tensor x, map_npy(o.data, MapAccess::sequential));
    if (x.rank() < 1) return errorf("{}: inputs must have a row axis", o.data);
    if (x.dtype() == DType::f32) return x;
    Tensor f(DType::f32, x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) f.f32_data()[i] = static_cast<float>(x.i64_data()[i]);
    return f;
  }
  SP_ASSIGN_OR_RETURN(Tensor images, read_idx(o.images));
  const float scale = o.scale.value_or(1.0f / 255.0f), shift = o.shift.value_or(0.0f);
  for (float& v : images.f32_span()) v = v * scale + shift;
  return images;
}

// One label per input row from an IDX or .npy file; none without --labels.
Result<std::vector<int64_t>> eval_labels(const EvalOptions& o, int64_t rows) {
  if (o.labels.empty()) return std::vector<int64_t>{};
  std::vector<int64_t> labels;
  if (std::filesystem::path(o.labels).extension() == ".npy") {
    SP_ASSIGN_OR_RETURN(Tensor y, read_npy(o.labels));
    if (y.dtype() != DType::i64 || y.rank() != 1)
      return errorf("{}: labels must be one integer per row, got {} {}", o.labels, dtype_name(y.dtype()),
                    shape_str(y.shape()));
    labels.assign(y.i64_data(), y.i64_data() + y.numel());
  } else {
    SP_ASSIGN_OR_RETURN(labels, read_idx_labels(o.labels));
  }
  const std::string& inputs = o.data.empty() ? o.images : o.data;
  if (static_cast<int64_t>(labels.size()) != rows)
    return errorf("{} has {} inputs but {} has {} labels", inputs, rows, o.labels, labels.size());
  return labels;
}

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

// Compares one batch's scores with the reference's.
void compare_with_reference(const Tensor& y, const Tensor& ref, int64_t rows, int64_t classes,
                            EvalResult& r) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* a = y.f32_data() + i * classes;
    const float* b = ref.f32_data() + i * classes;
    r.agreeing += argmax(a, classes) == argmax(b, classes);
    for (int64_t c = 0; c < classes; ++c) {
      const double d = std::abs(static_cast<double>(a[c]) - b[c]);
      r.max_abs_difference = std::max(r.max_abs_difference, d);
      r.sum_abs_difference += d;
    }
  }
  r.compared_values += rows * classes;
}

// The inputs and labels: --images IDX or --data X.npy as read above, any other --data through the
// training-data sources.
Result<LabeledData> eval_set(const EvalOptions& o, const Model& model) {
  if (!o.data.empty() && std::filesystem::path(o.data).extension() != ".npy") {
    DataArgs d;
    d.dir = o.data;
    d.labels = o.labels;
    d.scale = o.scale;
    d.shift = o.shift;
    d.mean = o.mean;
    d.std = o.std;
    d.resize = o.resize;
    d.cache = o.data_cache;
    d.cache_limit_gib = o.data_cache_limit_gib;
    return load_test_set(model, d);
  }
  if (!o.data_cache.empty())
    return errorf(
        "--data-cache keeps sources that must be decoded (IDX, CIFAR-10, .npz, image folders): give one as "
        "--data; an .npy is read from its file as it is");
  if (!o.mean.empty() || !o.std.empty())
    return errorf("--mean and --std go with --data DIR (a directory of IDX files or CIFAR-10 batches)");
  if (o.resize > 0) return errorf("--resize goes with --data DIR of an image folder");
  LabeledData set;
  SP_ASSIGN_OR_RETURN(set.inputs, eval_inputs(o));
  SP_ASSIGN_OR_RETURN(set.labels, eval_labels(o, set.inputs.dim(0)));
  return set;
}

Result<EvalResult> evaluate(Executor& ex, Executor* reference, const EvalOptions& o,
                            const GlobalOptions& global) {
  const std::string& source = o.data.empty() ? o.images : o.data;
  SP_ASSIGN_OR_RETURN(LabeledData set, eval_set(o, ex.model()));
  const Tensor& images = set.inputs;
  const std::vector<int64_t>& labels = set.labels;
  int64_t count = images.dim(0);
  EvalResult r;
  r.labeled = !labels.empty();
  if (o.limit > 0) count = std::min(count, o.limit);
  int64_t sample = count ? images.numel() / images.dim(0) : 0;
  std::span<const float> used = images.f32_span().first(static_cast<size_t>(count * sample));
  if (const int64_t i = first_nonfinite(used); i >= 0)
    return errorf("{}: {} {} value {} is {}{}: inputs must be finite", source,
                  o.data.empty() ? "image" : "row", i / sample, i % sample, used[static_cast<size_t>(i)],
                  o.data.empty() ? fmt::format(" once normalized (x * {} + {})",
                                               o.scale.value_or(1.0f / 255.0f), o.shift.value_or(0.0f))
                                 : "");
  SP_ASSIGN_OR_RETURN(Shape per_sample, sample_shape(ex.model(), sample));
  int64_t fixed_batch = ex.model().inputs[0].dims[0];
  int64_t batch = fixed_batch > 0 ? fixed_batch : std::min(o.batch, std::max<int64_t>(count, 1));
  if (ex.model().inputs.size() != 1)
    return errorf("{}: eval needs a model with one input", ex.model().source);

  Timer timer;
  bool progress = show_progress(global);
  for (int64_t start = 0; start < count; start += batch) {
    // With a fixed batch dimension the last batch is padded with zeros and the padding ignored.
    int64_t n = std::min(batch, count - start);
    Shape shape = per_sample;
    shape.insert(shape.begin(), fixed_batch > 0 ? batch : n);
    Tensor x(DType::f32, shape);
    std::copy_n(images.f32_data() + start * sample, n * sample, x.f32_data());
    SP_ASSIGN_OR_RETURN(auto outputs, ex.run(std::span<const Tensor>(&x, 1)));
    const Tensor& y = *outputs[0];
    if (y.dtype() != DType::f32 || y.rank() < 1 || y.dim(0) != x.dim(0))
      return errorf("{}: output '{}' has shape {}, expected [batch, classes]", ex.model().source,
                    ex.model().outputs[0].name, shape_str(y.shape()));
    int64_t classes = y.numel() / y.dim(0);
    for (int64_t i = 0; i < n; ++i) {
      r.predicted.push_back(argmax(y.f32_data() + i * classes, classes));
      if (!labels.empty()) r.correct += r.predicted.back() == labels[start + i];
    }
    if (reference != nullptr) {
      SP_ASSIGN_OR_RETURN(auto ref, reference->run(std::span<const Tensor>(&x, 1)));
      if (ref[0]->shape() != y.shape())
        return errorf("{}: output shape {} differs from the model's {}", o.reference,
                      shape_str(ref[0]->shape()), shape_str(y.shape()));
      compare_with_reference(y, *ref[0], n, classes, r);
    }
    r.total += n;
    if (progress) fmt::print(stderr, "\reval {}/{} images", r.total, count);
  }
  if (progress) fmt::print(stderr, "\r\033[K");
  r.seconds = timer.seconds();
  return r;
}

void print_eval(const EvalOptions& o, const EvalResult& r, int threads) {
  const double rate = r.seconds > 0 ? r.total / r.seconds : 0.0;
  if (o.json) {
    nlohmann::json j{{"model", o.model},          {"total", r.total}, {"seconds", r.seconds},
                     {"images_per_second", rate}, {"batch", o.batch}, {"threads", threads}};
    if (r.labeled) {
      j["accuracy"] = r.total ? static_cast<double>(r.correct) / static_cast<double>(r.total) : 0.0;
      j["correct"] = r.correct;
    }
    if (!o.reference.empty())
      j["agreement"] = {
          {"reference", o.reference},
          {"top1", r.total ? static_cast<double>(r.agreeing) / static_cast<double>(r.total) : 0.0},
          {"max_abs_difference", r.max_abs_difference},
          {"mean_abs_difference",
           r.compared_values ? r.sum_abs_difference / static_cast<double>(r.compared_values) : 0.0}};
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("images: {}  time: {:.3f} s  ({:.0f} images/s, {} threads)\n", r.total, r.seconds, rate,
             threads);
  if (r.labeled)
    fmt::print("accuracy: {:.4f} ({}/{})\n", r.total ? static_cast<double>(r.correct) / r.total : 0.0,
               r.correct, r.total);
  if (!o.reference.empty())
    fmt::print("agreement with {}: top-1 {:.4f} ({}/{}), output difference max {:.4g}, mean {:.4g}\n",
               o.reference, r.total ? static_cast<double>(r.agreeing) / r.total : 0.0, r.agreeing, r.total,
               r.max_abs_difference, r.compared_values ? r.sum_abs_difference / r.compared_values : 0.0);
}

}  // namespace

Command add_eval(CLI::App& app, const GlobalOptions& global) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand(
      "eval", "Classification accuracy on IDX or .npy data, and/or agreement with a reference model");
  cmd->add_option("model", o->model, "Model file (.onnx or .spw)")->required();
  auto* images = cmd->add_option("--images", o->images, "IDX images, optionally .gz");
  cmd->add_option(
         "--data", o->data,
         "Inputs already laid out and normalized (.npy; .npz with arrays x and y), or a directory of "
         "MNIST IDX files or CIFAR-10 batches (their test split)")
      ->excludes(images);
  cmd->add_option("--mean", o->mean, "--data DIR: per-channel mean subtracted after scale and shift")
      ->delimiter(',')
      ->check(kFiniteNumber);
  cmd->add_option("--std", o->std, "--data DIR: per-channel standard deviation divided by last")
      ->delimiter(',')
      ->check(kFiniteNumber);
  cmd->add_option(
         "--resize", o->resize,
         "--data of an image folder: scale each image so that its shorter side is N pixels, then take "
         "the centered input-sized window")
      ->check(CLI::PositiveNumber);
  cmd->add_option(
      "--data-cache", o->data_cache,
      "--data of IDX, CIFAR-10, .npz or an image folder: decode and normalize it once into this folder "
      "(a float32 .npy per source and settings, shared with train and compress), streamed, and read it "
      "from there, mapped");
  cmd->add_option("--data-cache-limit", o->data_cache_limit_gib,
                  "GiB the data cache may hold; the entries used least recently are removed past it "
                  "(default 20)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--labels", o->labels, "Labels: IDX (optionally .gz) or .npy, one per input");
  cmd->add_option("--reference", o->reference,
                  "A model to compare with (e.g. the original of a compressed model): top-1 agreement and "
                  "output differences");
  cmd->add_option("--scale", o->scale, "IDX images: x = raw * scale + shift (default 1/255)")
      ->check(kFiniteNumber);
  cmd->add_option("--shift", o->shift, "IDX images: normalization offset (default 0)")->check(kFiniteNumber);
  cmd->add_option("--batch", o->batch, "Images per batch")->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd->add_option("--limit", o->limit, "Evaluate only the first N images")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->add_option("--predictions", o->predictions, "Write the predicted class of every image to this .npy");
  return {cmd, [o, &global]() -> int {
            if (o->images.empty() == o->data.empty())
              return report_error(errorf("eval: give --images or --data"));
            if (o->labels.empty() && o->reference.empty() && !holds_labels(o->data))
              return report_error(errorf("eval: give --labels (accuracy), --reference (agreement) or both"));
            for (const auto& input : {o->model, o->images, o->data, o->labels, o->reference})
              if (!o->predictions.empty() && !input.empty() && same_file(o->predictions, input))
                return report_error(errorf("--predictions {} would overwrite an input file", o->predictions));
            auto ex = open_model(o->model, global);
            if (!ex.ok()) return report_error(ex.status());
            std::unique_ptr<Executor> reference;
            if (!o->reference.empty()) {
              auto opened = open_model(o->reference, global);
              if (!opened.ok()) return report_error(opened.status());
              reference = std::move(*opened);
            }
            auto r = evaluate(**ex, reference.get(), *o, global);
            if (!r.ok()) return report_error(r.status());
            if (!o->predictions.empty()) {
              Tensor p = Tensor::i64({static_cast<int64_t>(r->predicted.size())}, r->predicted);
              if (auto s = write_npy(o->predictions, p); !s.ok()) return report_error(s);
            }
            print_eval(*o, *r, (*ex)->threads());
            return 0;
          }};
}

}  // namespace sparrow::cli
