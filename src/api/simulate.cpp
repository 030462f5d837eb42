#include "api/simulate.h"

#include <random>

#include "sim/model_layers.h"
#include "sim/report.h"
#include "sparrow/executor.h"

namespace sparrow::api {

Result<std::vector<SimulatedLayer>> simulate_spw(const std::string& path, const sim::Config& config,
                                                 const Tensor* input, int threads) {
  SP_ASSIGN_OR_RETURN(SpwModel spw, read_spw(path));
  ExecOptions exec{threads};
  exec.sparse = false;
  exec.keep_values = true;  // each layer's input and output are read after the run
  SP_ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, Executor::create(spw, exec));
  SP_ASSIGN_OR_RETURN(std::vector<Shape> shapes, ex->default_input_shapes(1));
  if (shapes.empty()) return errorf("{}: the model has no input", path);
  Tensor x(DType::f32, shapes[0]);
  if (input != nullptr) {
    if (input->dtype() != DType::f32 || input->numel() < x.numel())
      return errorf("{}: the simulator's input needs {} float32 values, got {}", path, x.numel(),
                    input->numel());
    std::copy_n(input->f32_data(), x.numel(), x.f32_data());
  } else {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(0, 1);
    for (float& v : x.f32_span()) v = u(rng);
  }
  SP_RETURN_IF_ERROR(ex->run({&x, 1}).status());
  SP_ASSIGN_OR_RETURN(std::vector<sim::ModelLayer> layers, sim::model_layers(spw, config));
  std::vector<SimulatedLayer> out;
  for (const sim::ModelLayer& layer : layers) {
    auto r =
        sim::simulate_model_layer(config, layer, [&](const std::string& name) { return ex->value(name); });
    if (!r.ok()) return r.status().prefixed(path);
    out.push_back({layer.weights->name, r->stats, r->bit_exact, r->relative_error});
  }
  if (out.empty()) return errorf("{}: no compressed Gemm/MatMul layer to simulate", path);
  return out;
}

nlohmann::json simulation_json(const std::string& path, const sim::Config& config,
                               const std::vector<SimulatedLayer>& layers) {
  nlohmann::json j = nlohmann::json::array();
  for (const SimulatedLayer& l : layers) {
    j.push_back(sim::stats_json(l.stats));
    j.back()["functional"] = {{"layer", l.name},
                              {"bit_exact_with_fixed_point_reference", l.bit_exact},
                              {"relative_error_vs_float", l.relative_error}};
  }
  return {{"model", path}, {"config", sim::config_to_json(config)}, {"layers", j}};
}

}  // namespace sparrow::api
