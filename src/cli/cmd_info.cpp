// sparrow info MODEL: inputs and outputs as the model declares them and at the batch planned, and per
// layer its weight and node name, operator, output shape, parameters and FLOPs.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "cli/commands.h"

namespace sparrow::cli {

namespace {

struct InfoOptions {
  std::string model;
  int64_t batch = 1;
  bool json = false;
};

// Where the weights are: in the file, and in memory once planned for this batch.
void print_weight_memory(const WeightMemory& w) {
  if (w.compressed_in_file > 0)
    fmt::print(
        "weights   compressed: {} in the file, {} in memory ({:.2f}x; {} of it float32 for layers run "
        "dense)\n",
        human_bytes(w.compressed_in_file), human_bytes(w.compressed_in_memory),
        static_cast<double>(w.compressed_in_memory) / static_cast<double>(w.compressed_in_file),
        human_bytes(w.decompressed));
  fmt::print("weights   uncompressed float32: {}\n", human_bytes(w.initializers));
}

// A graph input or output as the model declares it ("'y' [batch, 10] float32"), and its shape at
// the batch planned for where a dimension is symbolic or the model declares none.
std::string declared_and_at_batch(const ValueInfo& v, const Shape& planned, int64_t batch) {
  if (!v.has_shape) return fmt::format("'{}' {} at batch {}", v.name, shape_str(planned), batch);
  const bool symbolic = std::any_of(v.dims.begin(), v.dims.end(), [](int64_t d) { return d < 0; });
  return symbolic ? fmt::format("{}; {} at batch {}", v.describe(), shape_str(planned), batch) : v.describe();
}

// The dims a model declares: numbers, the names of symbolic ones ("batch"), null where unnamed.
nlohmann::json declared_dims(const ValueInfo& v) {
  if (!v.has_shape) return nullptr;
  nlohmann::json dims = nlohmann::json::array();
  for (size_t i = 0; i < v.dims.size(); ++i)
    dims.push_back(v.dims[i] >= 0                                      ? nlohmann::json(v.dims[i])
                   : i < v.dim_names.size() && !v.dim_names[i].empty() ? nlohmann::json(v.dim_names[i])
                                                                       : nlohmann::json(nullptr));
  return dims;
}

void print_table(const Executor& ex, const ModelSummary& s, int64_t batch) {
  const Model& m = ex.model();
  fmt::print("model     {}\n", m.source);
  fmt::print("producer  {} {} (opset {}, IR {})\n", m.producer_name.empty() ? "unknown" : m.producer_name,
             m.producer_version, m.opset, m.ir_version);
  for (size_t i = 0; i < m.inputs.size(); ++i)
    fmt::print("input     {}\n", declared_and_at_batch(m.inputs[i], s.input_shapes[i], batch));
  for (size_t i = 0; i < m.outputs.size(); ++i)
    fmt::print("output    {}\n", declared_and_at_batch(m.outputs[i], s.output_shapes[i], batch));
  print_weight_memory(ex.weight_memory());
  fmt::print("\nlayers at batch {}:\n", batch);
  fmt::print("{:>3}  {:<22} {:<28} {:<18} {:<22} {:>10} {:>12}  {}\n", "#", "weight", "node", "op", "output",
             "params", "FLOPs", "engine layouts");
  for (size_t i = 0; i < s.layers.size(); ++i) {
    const LayerInfo& l = s.layers[i];
    std::string shape = l.output_shapes.empty() ? "-" : shape_str(l.output_shapes[0]);
    fmt::print("{:>3}  {:<22} {:<28} {:<18} {:<22} {:>10} {:>12}  {}\n", i,
               l.weight.empty() ? std::string("-") : l.weight.substr(0, 22), l.name.substr(0, 28),
               l.sparse ? l.op_type + " (sparse)" : l.op_type, shape, l.params ? human_count(l.params) : "-",
               l.macs ? human_count(2 * l.macs) : "-", l.layouts);
  }
  fmt::print("\ntotal: {} layers, {} parameters ({} bytes as float32), {} FLOPs per batch of {}",
             s.layers.size(), s.params, s.params * 4, human_count(2 * s.macs), batch);
  if (s.folded_nodes) fmt::print(", {} nodes folded at load", s.folded_nodes);
  fmt::print("\nactivations: {} per run, shared by liveness ({} if each value had its own buffer)\n",
             human_bytes(s.activation_bytes), human_bytes(s.activation_bytes_unshared));
  if (s.samples_per_chunk > 0)
    fmt::print(
        "batch: runs as chunks of {} sample{}, up to one plan per thread (activations above: all of them)\n",
        s.samples_per_chunk, s.samples_per_chunk == 1 ? "" : "s");
  if (s.one_thread && ex.threads() > 1)
    fmt::print("threads: too little work for threads to pay; every layer runs on the calling thread\n");
}

nlohmann::json to_json(const Executor& ex, const ModelSummary& s, int64_t batch) {
  const Model& m = ex.model();
  nlohmann::json j;
  j["model"] = m.source;
  j["producer"] = m.producer_name;
  j["opset"] = m.opset;
  j["batch"] = batch;
  j["inputs"] = nlohmann::json::array();
  for (size_t i = 0; i < m.inputs.size(); ++i)
    j["inputs"].push_back({{"name", m.inputs[i].name},
                           {"shape", s.input_shapes[i]},
                           {"declared_shape", declared_dims(m.inputs[i])}});
  j["outputs"] = nlohmann::json::array();
  for (size_t i = 0; i < m.outputs.size(); ++i)
    j["outputs"].push_back({{"name", m.outputs[i].name},
                            {"shape", s.output_shapes[i]},
                            {"declared_shape", declared_dims(m.outputs[i])}});
  j["layers"] = nlohmann::json::array();
  for (const auto& l : s.layers)
    j["layers"].push_back({{"name", l.name},
                           {"weight", l.weight.empty() ? nlohmann::json() : nlohmann::json(l.weight)},
                           {"op", l.op_type},
                           {"output_shapes", l.output_shapes},
                           {"params", l.params},
                           {"flops", 2 * l.macs},
                           {"sparse", l.sparse},
                           {"layouts", l.layouts}});
  j["params"] = s.params;
  j["flops"] = 2 * s.macs;
  j["folded_nodes"] = s.folded_nodes;
  j["activation_bytes"] = {{"shared", s.activation_bytes}, {"unshared", s.activation_bytes_unshared}};
  j["samples_per_chunk"] = s.samples_per_chunk;
  j["one_thread"] = s.one_thread;
  WeightMemory w = ex.weight_memory();
  j["weight_bytes"] = {{"compressed_in_file", w.compressed_in_file},
                       {"compressed_in_memory", w.compressed_in_memory},
                       {"decompressed", w.decompressed},
                       {"uncompressed", w.initializers}};
  return j;
}

}  // namespace

Command add_info(CLI::App& app, const GlobalOptions& global) {
  auto opts = std::make_shared<InfoOptions>();
  auto* cmd = app.add_subcommand("info", "Show a model's inputs, outputs, layers, parameters and FLOPs");
  cmd->add_option("model", opts->model, "Model file (.onnx or .spw)")->required();
  cmd->add_option("--batch", opts->batch, "Batch size for unknown batch dimensions")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--json", opts->json, "Print one JSON object");
  return {cmd, [opts, &global]() -> int {
            auto ex = open_model(opts->model, global);
            if (!ex.ok()) return report_error(ex.status());
            auto shapes = (*ex)->default_input_shapes(opts->batch);
            if (!shapes.ok()) return report_error(shapes.status());
            auto summary = (*ex)->summarize(*shapes);
            if (!summary.ok()) return report_error(summary.status());
            if (opts->json)
              fmt::print("{}\n", to_json(**ex, *summary, opts->batch).dump(2));
            else
              print_table(**ex, *summary, opts->batch);
            return 0;
          }};
}

}  // namespace sparrow::cli
