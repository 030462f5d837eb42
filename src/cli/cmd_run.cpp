// sparrow run MODEL --input X.npy [-o Y.npy] [--json]: runs a model on arrays; several outputs go
// to Y.npy, Y.1.npy, Y.2.npy, ...; --json prints the outputs (without -o, their values).
#include <cmath>
#include <filesystem>
#include <span>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/file.h"
#include "core/timer.h"
#include "sparrow/dataset.h"

namespace sparrow::cli {

namespace {

struct RunOptions {
  std::string model;
  std::vector<std::string> inputs;
  std::string output;
  bool allow_nonfinite = false;
  bool json = false;
};

// "Y.npy" for output 0, "Y.1.npy" for output 1, ...
std::string output_path(const std::string& base, size_t index) {
  if (index == 0) return base;
  std::filesystem::path p(base);
  std::string stem = p.extension() == ".npy" ? p.stem().string() : p.filename().string();
  return (p.parent_path() / fmt::format("{}.{}.npy", stem, index)).string();
}

// Integer arrays are accepted for float inputs (e.g. raw uint8 images).
Tensor to_dtype(Tensor t, DType want) {
  if (t.dtype() == want) return t;
  Tensor out(want, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (want == DType::f32)
      out.f32_data()[i] = static_cast<float>(t.i64_data()[i]);
    else
      out.i64_data()[i] = static_cast<int64_t>(t.f32_data()[i]);
  }
  return out;
}

void print_output(const std::string& name, const Tensor& t) {
  fmt::print("{} {} {}:", name, shape_str(t.shape()), dtype_name(t.dtype()));
  for (int64_t i = 0; i < std::min<int64_t>(t.numel(), 10); ++i)
    t.dtype() == DType::f32 ? fmt::print(" {:.6g}", t.f32_data()[i]) : fmt::print(" {}", t.i64_data()[i]);
  fmt::print("{}\n", t.numel() > 10 ? " ..." : "");
}

// One output for --json: name, shape, dtype, and the file it went to or (without -o) every value
// (non-finite ones, which --allow-nonfinite lets through, as null: JSON has no NaN).
nlohmann::json output_json(const std::string& name, const Tensor& t, const std::string& file) {
  nlohmann::json j{{"name", name}, {"shape", t.shape()}, {"dtype", dtype_name(t.dtype())}};
  if (!file.empty()) {
    j["file"] = file;
  } else if (t.dtype() == DType::f32) {
    j["values"] = std::vector<float>(t.f32_data(), t.f32_data() + t.numel());
  } else {
    j["values"] = std::vector<int64_t>(t.i64_data(), t.i64_data() + t.numel());
  }
  return j;
}

// run --json: the model, the run's seconds and every output (output_json).
void print_run_json(const RunOptions& o, const Model& m, std::span<const Tensor* const> outputs,
                    double seconds) {
  nlohmann::json j{{"model", o.model}, {"run_seconds", seconds}, {"outputs", nlohmann::json::array()}};
  for (size_t i = 0; i < outputs.size(); ++i)
    j["outputs"].push_back(
        output_json(m.outputs[i].name, *outputs[i], o.output.empty() ? "" : output_path(o.output, i)));
  fmt::print("{}\n", j.dump(2));
}

int run_command(const RunOptions& o, const GlobalOptions& global) {
  for (const auto& in : o.inputs)
    if (!o.output.empty() && (same_file(o.output, in) || same_file(o.output, o.model)))
      return report_error(errorf("output {} would overwrite an input file", o.output));
  auto ex = open_model(o.model, global);
  if (!ex.ok()) return report_error(ex.status());
  const Model& m = (*ex)->model();
  if (o.inputs.size() != m.inputs.size())
    return report_error(errorf("{}: the model has {} inputs, {} --input files were given", o.model,
                               m.inputs.size(), o.inputs.size()));
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < o.inputs.size(); ++i) {
    auto t = read_npy(o.inputs[i]);
    if (!t.ok()) return report_error(t.status());
    const int64_t bad = t->dtype() == DType::f32 ? first_nonfinite(t->f32_span()) : -1;
    if (bad >= 0 && !o.allow_nonfinite)
      return report_error(
          errorf("{}: holds non-finite values (first at flat index {}); pass --allow-nonfinite to run anyway",
                 o.inputs[i], bad));
    inputs.push_back(to_dtype(std::move(*t), *compute_dtype(m.inputs[i].elem_type)));
  }
  Timer timer;
  auto outputs = (*ex)->run(inputs);
  if (!outputs.ok()) return report_error(outputs.status());
  const double seconds = timer.seconds();
  if (o.output.empty() && o.json) {
    print_run_json(o, m, *outputs, seconds);
    return 0;
  }
  if (o.output.empty()) {
    for (size_t i = 0; i < outputs->size(); ++i) print_output(m.outputs[i].name, *(*outputs)[i]);
    return 0;
  }
  // Every output file or none: one that cannot be written leaves the others untouched too.
  OutputSet files;
  for (size_t i = 0; i < outputs->size(); ++i)
    if (auto s = files.add(output_path(o.output, i), npy_bytes(*(*outputs)[i])); !s.ok())
      return report_error(s);
  if (auto s = files.commit_all(); !s.ok()) return report_error(s);
  if (o.json) {
    print_run_json(o, m, *outputs, seconds);
    return 0;
  }
  if (!global.quiet)
    for (size_t i = 0; i < outputs->size(); ++i)
      fmt::print(stderr, "wrote {} {} to {}\n", m.outputs[i].name, shape_str((*outputs)[i]->shape()),
                 output_path(o.output, i));
  return 0;
}

}  // namespace

Command add_run(CLI::App& app, const GlobalOptions& global) {
  auto opts = std::make_shared<RunOptions>();
  auto* cmd = app.add_subcommand("run", "Run a model on .npy inputs");
  cmd->add_option("model", opts->model, "Model file (.onnx or .spw)")->required();
  cmd->add_option("-i,--input", opts->inputs, "Input .npy file, one per model input, in order")->required();
  cmd->add_option("-o,--output", opts->output, "Output .npy file (more outputs: NAME.1.npy, ...)");
  cmd->add_flag("--allow-nonfinite", opts->allow_nonfinite, "Accept inputs holding NaN or infinity");
  cmd->add_flag("--json", opts->json,
                "Print one JSON object: each output's name, shape, dtype and file (without -o, its values)");
  return {cmd, [opts, &global]() { return run_command(*opts, global); }};
}

}  // namespace sparrow::cli
