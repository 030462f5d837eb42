// The extension module sparrow._sparrow: Sparrow's C++ API as the Python package sees it. Results
// that are records travel as JSON text (the package turns them into dicts); arrays travel as numpy
// arrays. Every failure raises sparrow.Error carrying Sparrow's message.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "api/compress.h"
#include "api/inspect.h"
#include "api/report_page.h"
#include "api/simulate.h"
#include "core/file.h"
#include "core/machine.h"
#include "sparrow/executor.h"
#include "sparrow/onnx.h"
#include "sparrow/version.h"

namespace py = pybind11;

namespace sparrow::python {

namespace {

// Raised as sparrow.Error (a RuntimeError) with the status's message.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class T>
T unwrap(Result<T> r) {
  if (!r.ok()) throw Error(r.status().message());
  return std::move(r).value();
}

void check(const Status& s) {
  if (!s.ok()) throw Error(s.message());
}

constexpr size_t kTensorAlignment = 64;

Shape shape_of(const py::array& a) {
  return Shape(a.shape(), a.shape() + a.ndim());
}

// One model input from a numpy array: a view of its memory when it is C-contiguous, of the model's
// element type and 64-byte aligned (Tensor's contract); otherwise a converted copy.
template <class T>
Tensor input_tensor(const py::array& array, DType dtype, std::vector<py::array>& keep_alive) {
  auto converted = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(array);
  if (!converted) throw Error("an input cannot be converted to " + std::string(dtype_name(dtype)));
  const Shape shape = shape_of(converted);
  const auto* data = static_cast<const T*>(converted.data());
  if (reinterpret_cast<uintptr_t>(data) % kTensorAlignment == 0 && converted.size() > 0) {
    keep_alive.push_back(converted);
    return Tensor::view(dtype, shape, const_cast<T*>(data));
  }
  Tensor t(dtype, shape);
  if (converted.size() > 0) std::memcpy(t.raw(), data, t.bytes());
  return t;
}

py::array output_array(const Tensor& t) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  if (t.dtype() == DType::f32) {
    py::array_t<float> a(shape);
    std::memcpy(a.mutable_data(), t.f32_data(), t.bytes());
    return a;
  }
  py::array_t<int64_t> a(shape);
  std::memcpy(a.mutable_data(), t.i64_data(), t.bytes());
  return a;
}

// A declared input or output: name, element type and dims (ints, or the symbol's name where the
// model declares one, None where it declares nothing).
py::dict value_info(const ValueInfo& v) {
  py::list dims;
  for (size_t i = 0; i < v.dims.size(); ++i) {
    if (v.dims[i] >= 0)
      dims.append(v.dims[i]);
    else if (i < v.dim_names.size() && !v.dim_names[i].empty())
      dims.append(v.dim_names[i]);
    else
      dims.append(py::none());
  }
  py::dict d;
  d["name"] = v.name;
  d["dtype"] = elem_type_name(v.elem_type);
  d["shape"] = v.has_shape ? py::object(dims) : py::object(py::none());
  return d;
}

// A loaded model and the executor that runs it. Runs are serialized (an executor runs one at a
// time) by a lock that is only ever waited for without the GIL; the GIL is released while the
// model runs.
class LoadedModel {
 public:
  LoadedModel(std::string path, int threads, bool sparse, double weight_memory) : path_(std::move(path)) {
    ExecOptions exec{threads};
    exec.sparse = sparse;
    exec.weight_memory_ratio = weight_memory;
    const std::string ext = std::filesystem::path(path_).extension().string();
    if (ext == ".onnx")
      executor_ = unwrap(Executor::create(unwrap(load_onnx(path_)), exec));
    else if (ext == ".spw")
      executor_ = unwrap(Executor::create(unwrap(read_spw(path_)), exec));
    else
      throw Error(path_ + ": unknown model file type '" + ext + "' (expected .onnx or .spw)");
  }

  const std::string& path() const { return path_; }
  int threads() const { return executor_->threads(); }

  py::list inputs() const {
    py::list l;
    for (const auto& v : executor_->model().inputs) l.append(value_info(v));
    return l;
  }
  py::list outputs() const {
    py::list l;
    for (const auto& v : executor_->model().outputs) l.append(value_info(v));
    return l;
  }

  py::list run(const std::vector<py::array>& arrays) {
    const auto& declared = executor_->model().inputs;
    if (arrays.size() != declared.size())
      throw Error(fmt::format("{}: the model has {} inputs, {} arrays were given", path_, declared.size(),
                              arrays.size()));
    std::vector<py::array> keep_alive;
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < arrays.size(); ++i) {
      const DType dtype = compute_dtype(declared[i].elem_type).value_or(DType::f32);
      inputs.push_back(dtype == DType::f32 ? input_tensor<float>(arrays[i], dtype, keep_alive)
                                           : input_tensor<int64_t>(arrays[i], dtype, keep_alive));
    }
    auto lock = lock_runs();  // until the outputs are copied: the next run overwrites them
    Result<std::span<const Tensor* const>> outputs = errorf("not run");
    {
      py::gil_scoped_release release;
      outputs = executor_->run(inputs);
    }
    if (!outputs.ok()) throw Error(outputs.status().message());  // it names the model
    py::list result;
    for (const Tensor* t : *outputs) result.append(output_array(*t));
    return result;
  }

  // Seconds of each of `runs` timed runs at this batch (after `warmup` untimed ones), on inputs of
  // the declared shapes (unknown dims = batch) filled from a fixed seed.
  std::vector<double> time_runs(int64_t batch, int runs, int warmup) {
    std::vector<Shape> shapes = unwrap(executor_->default_input_shapes(batch));
    std::vector<Tensor> inputs;
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0, 1);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const DType dtype = compute_dtype(executor_->model().inputs[i].elem_type).value_or(DType::f32);
      inputs.emplace_back(dtype, shapes[i]);
      if (dtype == DType::f32)
        for (float& v : inputs.back().f32_span()) v = u(rng);
    }
    auto lock = lock_runs();
    py::gil_scoped_release release;
    std::vector<double> seconds;
    for (int r = 0; r < warmup + runs; ++r) {
      const auto start = std::chrono::steady_clock::now();
      Status s = executor_->run(inputs).status();
      if (!s.ok()) {
        py::gil_scoped_acquire acquire;
        throw Error(s.message());
      }
      if (r >= warmup)
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return seconds;
  }

  // The layers as planned for these input shapes (JSON text).
  std::string summary(int64_t batch) {
    auto lock = lock_runs();
    std::vector<Shape> shapes = unwrap(executor_->default_input_shapes(batch));
    ModelSummary s = unwrap(executor_->summarize(shapes));
    nlohmann::json layers = nlohmann::json::array();
    for (const LayerInfo& l : s.layers)
      layers.push_back({{"name", l.name},
                        {"weight", l.weight},
                        {"op_type", l.op_type},
                        {"output_shapes", l.output_shapes},
                        {"params", l.params},
                        {"macs", l.macs},
                        {"sparse", l.sparse},
                        {"layouts", l.layouts}});
    return nlohmann::json{{"batch", batch},
                          {"input_shapes", s.input_shapes},
                          {"output_shapes", s.output_shapes},
                          {"params", s.params},
                          {"macs", s.macs},
                          {"activation_bytes", s.activation_bytes},
                          {"layers", layers}}
        .dump();
  }

  py::dict weight_memory() {
    auto lock = lock_runs();  // a run may be building layouts meanwhile
    const WeightMemory w = executor_->weight_memory();
    py::dict d;
    d["compressed_in_file"] = w.compressed_in_file;
    d["compressed_in_memory"] = w.compressed_in_memory;
    d["decompressed"] = w.decompressed;
    d["initializers"] = w.initializers;
    return d;
  }

 private:
  // Takes the model's lock, waiting for it without the GIL: a thread holding the lock may need the
  // GIL, so no thread may wait for the lock while holding the GIL.
  std::unique_lock<std::mutex> lock_runs() {
    py::gil_scoped_release release;
    return std::unique_lock<std::mutex>(mutex_);
  }

  std::string path_;
  std::unique_ptr<Executor> executor_;
  std::mutex mutex_;
};

// Training data from numpy arrays: inputs [N, ...] as float32 and, when given, labels [N] as int64.
// Inputs that are already C-contiguous float32 on a 64-byte boundary (a memory-mapped .npy among
// them) are viewed in place, not copied: the caller keeps `inputs` alive while the data is used.
// (`ensure` returns a subclass such as np.memmap as a new ndarray over the same data: the data
// pointer, not the object, tells whether it converted.)
LabeledData training_data(const py::array& inputs, const std::optional<py::array>& labels, const char* what) {
  auto x = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(inputs);
  if (!x || x.ndim() < 1) throw Error(std::string(what) + ": inputs must be an array of numbers [N, ...]");
  LabeledData d;
  const bool in_place = x.data() == inputs.data() && x.size() > 0 &&
                        reinterpret_cast<uintptr_t>(x.data()) % kTensorAlignment == 0;
  d.inputs = in_place ? Tensor::view(DType::f32, shape_of(x), const_cast<float*>(x.data()))
                      : Tensor::f32(shape_of(x), {x.data(), static_cast<size_t>(x.size())});
  if (!labels) return d;
  auto y = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(*labels);
  if (!y || y.ndim() != 1 || y.shape(0) != x.shape(0))
    throw Error(
        fmt::format("{}: {} inputs along axis 0 and labels of shape [{}] (one label per input expected)",
                    what, x.shape(0), y && y.ndim() ? y.shape(0) : 0));
  d.labels.assign(y.data(), y.data() + y.size());
  return d;
}

// Calls a Python progress callback from a Sparrow thread with the GIL held; the first exception it
// raises is kept and raised again when the operation ends.
class Progress {
 public:
  explicit Progress(py::object callback) : callback_(std::move(callback)) {}
  bool active() const { return !callback_.is_none(); }
  void operator()(py::dict event) {
    if (error_) return;
    try {
      callback_(event);
    } catch (py::error_already_set& e) {
      error_ = std::make_unique<py::error_already_set>(std::move(e));
    }
  }
  void rethrow() {
    if (error_) throw *error_;
  }
  bool failed() const { return error_ != nullptr; }

 private:
  py::object callback_;
  std::unique_ptr<py::error_already_set> error_;
};

py::dict epoch_event(const char* stage, int step, const EpochReport& r) {
  py::dict d;
  d["stage"] = stage;
  d["step"] = step;
  d["epoch"] = r.epoch;
  d["loss"] = r.loss;
  d["train_accuracy"] = r.train_accuracy;
  if (r.val_accuracy >= 0) d["val_accuracy"] = r.val_accuracy;
  d["seconds"] = r.seconds;
  return d;
}

// Settings of the retraining from a recipe's "retrain" block (api/compress.h), from the CLI's
// defaults; the data comes as arrays, so data-source keys are refused.
RetrainOptions retrain_options(const nlohmann::json& j) {
  RetrainOptions r;
  r.retrain.epochs = 2;
  r.retrain.lr = 0.005;
  r.finetune.epochs = 1;
  r.finetune.lr = 0.001;
  check(api::apply_retrain_recipe(j, r, nullptr));
  return r;
}

std::string compress(const std::string& model, const std::string& output, const std::string& recipe,
                     std::optional<py::array> inputs, std::optional<py::array> labels,
                     std::optional<py::array> test_inputs, std::optional<py::array> test_labels,
                     const std::string& retrain, int threads, py::object callback) {
  auto recipe_json = nlohmann::json::parse(recipe, nullptr, false);
  if (recipe_json.is_discarded() || !recipe_json.is_object()) throw Error("recipe: not a JSON object");
  api::CompressRequest request;
  request.model = model;
  request.output = output;
  request.options = unwrap(api::options_from_recipe(recipe_json, "recipe"));
  auto retrain_json = nlohmann::json::parse(retrain, nullptr, false);
  if (retrain_json.is_discarded() || !retrain_json.is_object()) throw Error("retrain: not a JSON object");
  if (recipe_json.contains("retrain")) {  // the recipe's block, then the retrain argument over it
    nlohmann::json merged = recipe_json["retrain"];
    if (!merged.is_object()) throw Error("recipe: 'retrain' must be an object");
    for (const char* key :
         {"data", "labels", "scale", "shift", "mean", "std", "validation", "limit", "resize"})
      merged.erase(key);
    merged.update(retrain_json);
    retrain_json = merged;
  }
  request.threads = threads;
  Progress progress(std::move(callback));
  if (progress.active())
    request.options.on_layer = [&](const std::string& weight, size_t done, size_t total) {
      py::gil_scoped_acquire acquire;
      py::dict d;
      d["stage"] = "compress";
      d["layer"] = weight;
      d["done"] = done;
      d["total"] = total;
      progress(d);
    };
  std::optional<LabeledData> train, test;
  if (labels && !inputs) throw Error("compress: labels need data");
  if (test_labels && !test_inputs) throw Error("compress: test_labels need test_data");
  int epochs_seen = 0;
  if (inputs) {
    train = training_data(*inputs, labels, "data");
    request.train = &*train;
    request.data_source = nlohmann::json::object();  // arrays: nothing a recipe could replay
    request.retrain = retrain_options(retrain_json);
    request.retrain.retrain.threads = request.retrain.finetune.threads = threads;
    if (progress.active()) {
      const int per_step = std::max(1, request.retrain.retrain.epochs);
      request.retrain.retrain.on_epoch = [&, per_step](const EpochReport& e) {
        py::gil_scoped_acquire acquire;
        progress(epoch_event("retrain", epochs_seen++ / per_step + 1, e));
      };
      request.retrain.finetune.on_epoch = [&](const EpochReport& e) {
        py::gil_scoped_acquire acquire;
        progress(epoch_event("finetune", 0, e));
      };
    }
  } else if (!retrain_json.empty()) {
    throw Error("compress: retrain settings need data");
  }
  if (test_inputs) {
    if (!inputs) throw Error("compress: test_data is measured only with retraining (give data)");
    test = training_data(*test_inputs, test_labels, "test_data");
    request.test = &*test;
  }
  request.cancelled = [&progress] { return progress.failed(); };
  request.retrain.retrain.should_stop = request.retrain.finetune.should_stop = request.cancelled;
  Result<api::CompressOutcome> outcome = errorf("not run");
  {
    py::gil_scoped_release release;
    outcome = api::compress_file(request);
  }
  progress.rethrow();
  if (!outcome.ok()) throw Error(outcome.status().message());
  nlohmann::json j = api::spw_report_json(outcome->result.spw, output);
  j["kept_float"] = api::kept_float_json(outcome->result);
  j.update(api::results_json(*outcome));
  return j.dump();
}

std::string inspect(const std::string& path) {
  return api::spw_report_json(unwrap(read_spw(path)), path).dump();
}

std::string export_onnx(const std::string& spw, const std::string& output) {
  if (same_file(spw, output)) throw Error("output " + output + " would overwrite the input");
  sparrow::Model dense = unwrap(unwrap(read_spw(spw)).to_dense_model());
  check(save_onnx(dense, output));
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(output, ec);
  return nlohmann::json{{"input", spw},
                        {"output", output},
                        {"file_bytes", ec ? nlohmann::json() : nlohmann::json(bytes)},
                        {"parameters", dense.parameter_count()}}
      .dump();
}

std::string simulate(const std::string& path, const std::string& config, std::optional<py::array> input,
                     int threads) {
  sim::Config c;
  if (!config.empty()) {
    auto j = nlohmann::json::parse(config, nullptr, false);
    if (j.is_discarded()) throw Error("config: not valid JSON");
    c = unwrap(sim::config_from_json(j));
  }
  std::optional<Tensor> x;
  if (input) {
    auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(*input);
    if (!a) throw Error("input: not an array of numbers");
    x = Tensor::f32(shape_of(a), {a.data(), static_cast<size_t>(a.size())});
  }
  std::vector<api::SimulatedLayer> layers;
  {
    py::gil_scoped_release release;
    layers = unwrap(api::simulate_spw(path, c, x ? &*x : nullptr, threads));
  }
  return api::simulation_json(path, c, layers).dump();
}

std::string report(const std::string& model, const std::string& dir, const std::string& source, int bins,
                   const std::string& sensitivity) {
  api::ReportRequest request{model, dir, source, bins, sensitivity};
  api::ReportFiles f = unwrap(api::write_report(request));
  return nlohmann::json{{"directory", f.directory},
                        {"page", f.page},
                        {"json", f.json},
                        {"plots", f.plots},
                        {"tables", f.tables}}
      .dump();
}

}  // namespace

}  // namespace sparrow::python

PYBIND11_MODULE(_sparrow, m) {
  using namespace sparrow::python;
  m.doc() = "Sparrow's C++ core; use the package `sparrow`, which wraps it.";
  m.attr("__version__") = SPARROW_VERSION;
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);
  py::class_<LoadedModel>(m, "Model")
      .def(py::init<std::string, int, bool, double>(), py::arg("path"), py::arg("threads") = 0,
           py::arg("sparse") = true, py::arg("weight_memory") = 3.0)
      .def_property_readonly("path", &LoadedModel::path)
      .def_property_readonly("threads", &LoadedModel::threads)
      .def_property_readonly("inputs", &LoadedModel::inputs)
      .def_property_readonly("outputs", &LoadedModel::outputs)
      .def("run", &LoadedModel::run, py::arg("inputs"))
      .def("time_runs", &LoadedModel::time_runs, py::arg("batch"), py::arg("runs"), py::arg("warmup"))
      .def("summary", &LoadedModel::summary, py::arg("batch"))
      .def("weight_memory", &LoadedModel::weight_memory);
  m.def("compress", &compress, py::arg("model"), py::arg("output"), py::arg("recipe"), py::arg("inputs"),
        py::arg("labels"), py::arg("test_inputs"), py::arg("test_labels"), py::arg("retrain"),
        py::arg("threads"), py::arg("progress"));
  m.def("inspect", &inspect, py::arg("path"));
  m.def("export_onnx", &export_onnx, py::arg("spw"), py::arg("output"));
  m.def("simulate", &simulate, py::arg("path"), py::arg("config"), py::arg("input"), py::arg("threads"));
  m.def("report", &report, py::arg("model"), py::arg("directory"), py::arg("source"), py::arg("bins"),
        py::arg("sensitivity"));
  m.def("machine", []() { return sparrow::machine_description(); });
}
