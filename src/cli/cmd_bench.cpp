// sparrow bench: the sparse engine against dense and sparse peers, on [EIE]'s layers (--eie), over
// weight densities (--crossover), or on a whole compressed model (MODEL.spw).
#include <algorithm>
#include <cctype>
#include <map>
#include <random>

#include "cli/commands.h"
#include "core/machine.h"
#include "core/timer.h"
#include "harness/eie_bench.h"
#include "sparrow/dataset.h"

namespace sparrow::cli {

namespace {

struct ModelBench {
  std::string model, input;
  std::vector<int> batches = {1, 64};
  bool batches_given = false;  // --batch: else a model whose batch is fixed is timed at that batch
  std::vector<int> threads;    // thread counts to time; empty: the global --threads
  int repeats = 21;
  bool profile = false;  // time every layer too
};

// The batch axis of a model's input: its one unknown dimension (as in an LSTM's [seq, batch,
// features]), or the first when every dimension is known.
Result<size_t> batch_axis(const Model& m) {
  const ValueInfo& in = m.inputs[0];
  if (in.dims.empty())
    return errorf("{}: input {} is a scalar; bench needs a batch axis", m.source, in.describe());
  std::vector<size_t> unknown;
  for (size_t i = 0; i < in.dims.size(); ++i)
    if (in.dims[i] < 0) unknown.push_back(i);
  for (size_t i : unknown) {
    std::string name = i < in.dim_names.size() ? in.dim_names[i] : "";
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (name.find("batch") != std::string::npos) return i;
  }
  if (unknown.empty() || (unknown.size() == 1 && unknown[0] == 0)) return size_t{0};
  return errorf(
      "{}: input {} has unknown dims that bench cannot tell from the batch (name the batch "
      "dim 'batch' when exporting)",
      m.source, in.describe());
}

// Inputs for one run: rows of the given .npy file (cycled), or uniform [0, 1) values.
Result<Tensor> bench_input(const Model& m, const ModelBench& o, int64_t batch) {
  if (m.inputs.size() != 1 || !m.inputs[0].has_shape)
    return errorf("{}: bench needs one input with a shape", m.source);
  SP_ASSIGN_OR_RETURN(size_t axis, batch_axis(m));
  Shape shape = m.inputs[0].dims;
  shape[axis] = batch;
  for (int64_t d : shape)
    if (d < 0) return errorf("{}: input {} has unknown non-batch dims", m.source, m.inputs[0].describe());
  Tensor x(DType::f32, shape);
  int64_t sample = x.numel() / batch;
  if (!o.input.empty() && axis != 0)
    return errorf("{}: --input gives samples along the first axis; input {} has its batch on axis {}",
                  o.input, m.inputs[0].describe(), axis);
  if (!o.input.empty()) {
    SP_ASSIGN_OR_RETURN(Tensor src, read_npy(o.input));
    if (src.dtype() != DType::f32 || src.numel() % sample != 0 || src.numel() == 0)
      return errorf("{}: needs float rows of {} values", o.input, sample);
    for (int64_t i = 0; i < x.numel(); ++i) x.f32_data()[i] = src.f32_data()[i % src.numel()];
  } else {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0, 1);
    for (float& v : x.f32_span()) v = u(rng);
  }
  return x;
}

// Microseconds per run: untimed runs first (at least two, and at least 0.1 s, so caches, clocks and
// oneDNN's kernels are warm), then at least `repeats` timed runs and at least 0.2 s of them.
struct RunTimes {
  double median = 0, min = 0, p90 = 0, max = 0;
  int runs = 0;
};

Result<RunTimes> time_runs(Executor& ex, const Tensor& x, int repeats) {
  constexpr double kWarmSeconds = 0.1, kTimedSeconds = 0.2;
  Timer warm;
  for (int i = 0; i < 2 || warm.seconds() < kWarmSeconds; ++i) {
    auto r = ex.run({&x, 1});
    if (!r.ok()) return r.status();
  }
  ex.restart_layer_times();
  std::vector<double> t;
  Timer timed;
  while (std::ssize(t) < repeats || timed.seconds() < kTimedSeconds) {
    Timer timer;
    auto r = ex.run({&x, 1});
    if (!r.ok()) return r.status();
    t.push_back(timer.seconds() * 1e6);
  }
  std::sort(t.begin(), t.end());
  return RunTimes{t[t.size() / 2], t.front(), t[(t.size() * 9 + 9) / 10 - 1], t.back(),
                  static_cast<int>(t.size())};
}

// Each layer's time per run on the engine beside the dense executor's for the same layer (matched
// by name and operator), slowest first.
nlohmann::json layer_times(const ModelSummary& engine, const ModelSummary& dense) {
  std::map<std::pair<std::string, std::string>, double> dense_seconds;
  for (const LayerInfo& l : dense.layers) dense_seconds[{l.name, l.op_type}] += l.seconds_per_run;
  std::vector<const LayerInfo*> order;
  for (const LayerInfo& l : engine.layers) order.push_back(&l);
  std::stable_sort(order.begin(), order.end(), [](const LayerInfo* x, const LayerInfo* y) {
    return x->seconds_per_run > y->seconds_per_run;
  });
  nlohmann::json rows = nlohmann::json::array();
  for (const LayerInfo* l : order) {
    auto it = dense_seconds.find({l->name, l->op_type});
    rows.push_back(
        {{"name", l->name},
         {"op", l->op_type},
         {"sparse", l->sparse},
         {"sparrow_us", l->seconds_per_run * 1e6},
         {"dense_us", it == dense_seconds.end() ? nlohmann::json() : nlohmann::json(it->second * 1e6)}});
  }
  return rows;
}

void print_layer_times(const nlohmann::json& layers, int64_t batch) {
  double total = 0;
  for (const auto& l : layers) total += l["sparrow_us"].get<double>();
  fmt::print(
      "\nbatch {}: layers by time on the engine (mean per run; {} layers, {:.1f} us in all)\n{:<36} {:<14} "
      "{:>7} "
      "{:>12} {:>7} {:>12}\n",
      batch, layers.size(), total, "layer", "op", "engine", "sparrow us", "share", "dense us");
  for (const auto& l : layers) {
    const double us = l["sparrow_us"].get<double>();
    if (us < 0.005 * total) break;  // the rest each take under 0.5%
    fmt::print(
        "{:<36} {:<14} {:>7} {:>12.1f} {:>6.1f}% {:>12}\n", l["name"].get<std::string>().substr(0, 36),
        l["op"].get<std::string>(), l["sparse"].get<bool>() ? "sparse" : "dense", us, 100 * us / total,
        l["dense_us"].is_null() ? std::string("-") : fmt::format("{:.1f}", l["dense_us"].get<double>()));
  }
}

// The batch sizes to time: --batch's, or the defaults; a model whose input fixes its batch size
// (every dimension known) takes only that one, by default, and refuses others named by --batch.
Result<std::vector<int>> batches_to_time(const Model& m, const ModelBench& o) {
  if (m.inputs.size() != 1 || !m.inputs[0].has_shape) return o.batches;  // bench_input says why
  SP_ASSIGN_OR_RETURN(size_t axis, batch_axis(m));
  const int64_t fixed = m.inputs[0].dims[axis];
  if (fixed <= 0) return o.batches;
  if (!o.batches_given) return std::vector<int>{static_cast<int>(fixed)};
  for (int batch : o.batches)
    if (batch != fixed)
      return errorf(
          "{}: input {} fixes the batch at {}; --batch {} cannot run (export the model with a "
          "dynamic batch axis)",
          m.source, m.inputs[0].describe(), fixed, batch);
  return o.batches;
}

// One thread count's rows: every batch size, the engine against the dense executor.
Status time_model(const ModelBench& o, const ExecOptions& options, nlohmann::json& rows) {
  ExecOptions sparse = options;
  sparse.profile_layers = o.profile;
  ExecOptions dense = sparse;
  dense.sparse = false;
  SP_ASSIGN_OR_RETURN(auto a, open_model(o.model, sparse));
  SP_ASSIGN_OR_RETURN(auto b, open_model(o.model, dense));
  SP_ASSIGN_OR_RETURN(const std::vector<int> batches, batches_to_time(a->model(), o));
  for (int batch : batches) {
    SP_ASSIGN_OR_RETURN(Tensor x, bench_input(a->model(), o, batch));
    const uint64_t sparse_stalls = a->stalls(), dense_stalls = b->stalls();
    SP_ASSIGN_OR_RETURN(RunTimes ts, time_runs(*a, x, o.repeats));
    SP_ASSIGN_OR_RETURN(RunTimes td, time_runs(*b, x, o.repeats));
    SP_ASSIGN_OR_RETURN(ModelSummary se, a->summarize({x.shape()}));
    nlohmann::json layers;
    if (o.profile) {
      SP_ASSIGN_OR_RETURN(ModelSummary sd, b->summarize({x.shape()}));
      layers = layer_times(se, sd);
    }
    rows.push_back({{"batch", batch},
                    {"threads", a->threads()},
                    {"sparrow_us", ts.median},
                    {"sparrow_min_us", ts.min},
                    {"sparrow_p90_us", ts.p90},
                    {"sparrow_max_us", ts.max},
                    {"sparrow_runs", ts.runs},
                    {"dense_us", td.median},
                    {"dense_min_us", td.min},
                    {"dense_p90_us", td.p90},
                    {"dense_max_us", td.max},
                    {"dense_runs", td.runs},
                    {"speedup", td.median / ts.median},
                    {"samples_per_chunk", se.samples_per_chunk},
                    {"one_thread", se.one_thread},
                    {"sparrow_stalls", a->stalls() - sparse_stalls},
                    {"dense_stalls", b->stalls() - dense_stalls}});
    if (o.profile) rows.back()["layers"] = std::move(layers);
  }
  return {};
}

int bench_model(const ModelBench& o, const GlobalOptions& global, bool json) {
  nlohmann::json rows = nlohmann::json::array();
  const std::vector<int> threads = o.threads.empty() ? std::vector<int>{global.threads} : o.threads;
  for (int t : threads) {
    ExecOptions options = exec_options(global);
    options.threads = t;
    if (Status s = time_model(o, options, rows); !s.ok()) return report_error(s);
  }
  const std::string machine = machine_description();
  if (json) {
    fmt::print("{}\n", nlohmann::json{{"model", o.model}, {"machine", machine}, {"runs", rows}}.dump(2));
    return 0;
  }
  fmt::print(
      "{}: whole model, sparse engine vs the same weights decompressed on the dense executor\n"
      "median [min, p90, max] of at least {} runs and 0.2 s each (after 0.1 s untimed), {} inputs\n"
      "machine: {}\n{:>6} {:>7} {:>34} {:>34} {:>8} {:>8}\n",
      o.model, o.repeats, o.input.empty() ? "random" : o.input, machine, "batch", "threads", "sparrow us",
      "dense us", "x dense", "chunk");
  auto spread = [](const nlohmann::json& r, const char* key) {
    auto us = [&](const char* what) { return r[fmt::format("{}{}_us", key, what)].get<double>(); };
    return fmt::format("{:.1f} [{:.1f}, {:.1f}, {:.1f}]", us(""), us("_min"), us("_p90"), us("_max"));
  };
  for (const auto& r : rows)
    fmt::print("{:>6} {:>7} {:>34} {:>34} {:>8.2f} {:>8}\n", r["batch"].get<int>(), r["threads"].get<int>(),
               spread(r, "sparrow"), spread(r, "dense"), r["speedup"].get<double>(),
               r["samples_per_chunk"].get<int64_t>() > 0
                   ? std::to_string(r["samples_per_chunk"].get<int64_t>())
                   : std::string("whole"));
  for (const auto& r : rows)
    if (r["one_thread"].get<bool>() && r["threads"].get<int>() > 1)
      fmt::print(
          "batch {}: too little work for threads to pay; the engine ran every layer on the calling thread\n",
          r["batch"].get<int>());
  for (const auto& r : rows) {
    const auto stalls = r["sparrow_stalls"].get<uint64_t>() + r["dense_stalls"].get<uint64_t>();
    if (stalls > 0)
      fmt::print(
          "batch {}, {} threads: a worker held up the calling thread {} times while timed (sparse engine {}, "
          "dense {}; another process on its core?); the next regions ran on the calling thread alone for a "
          "while after each\n",
          r["batch"].get<int>(), r["threads"].get<int>(), stalls, r["sparrow_stalls"].get<uint64_t>(),
          r["dense_stalls"].get<uint64_t>());
  }
  for (const auto& r : rows)
    if (r.contains("layers")) print_layer_times(r["layers"], r["batch"].get<int64_t>());
  return 0;
}

}  // namespace

Command add_bench(CLI::App& app, const GlobalOptions& global) {
  auto o = std::make_shared<EieBenchOptions>();
  auto m = std::make_shared<ModelBench>();
  auto flags = std::make_shared<std::array<bool, 3>>();  // eie, crossover, json
  auto* cmd = app.add_subcommand("bench", "Time the sparse engine against dense and sparse peers");
  auto* model =
      cmd->add_option("model", m->model, "A compressed model (.spw) to time against its dense form");
  auto* eie = cmd->add_flag("--eie", (*flags)[0], "The nine benchmark layers of [EIE]");
  cmd->add_flag("--crossover", (*flags)[1], "Sparse vs dense over weight densities (4096 x 4096)");
  cmd->add_option("--batch", o->batches, "Batch sizes, e.g. 1,64")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--threads", o->threads,
                  "Thread counts to time, e.g. 1,2 (a model: default the global --threads; --eie: 1,2)")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  cmd->add_option("--repeats", o->repeats,
                  "Least timed runs per measurement, each also timed for at least 0.2 s (median reported)")
      ->check(CLI::Range(1, 10000));
  cmd->add_option("--layers", o->layers, "Only these --eie layers, e.g. Alex-6,VGG-7")
      ->delimiter(',')
      ->needs(eie);
  cmd->add_option("--block", o->row_blocks,
                  "With --eie: the weights in 4x1 row blocks (as compress --block 4x1 "
                  "prunes them), with a plain float32 row-block kernel as a further peer")
      ->transform(CLI::CheckedTransformer(std::map<std::string, bool>{{"4x1", true}, {"1x1", false}}))
      ->needs(eie);
  cmd->add_option("--input", m->input, "For a model: .npy rows to feed (default: uniform random)")
      ->needs(model);
  cmd->add_flag("--profile", m->profile, "For a model: each layer's time per run too, slowest first")
      ->needs(model);
  cmd->add_flag("--json", (*flags)[2], "Print one JSON object");
  return {cmd, [o, m, flags, cmd, &global]() -> int {
            o->progress = show_progress(global);
            bool json = (*flags)[2];
            if ((*flags)[0] + (*flags)[1] + !m->model.empty() != 1)
              return report_error(errorf("bench: give exactly one of --eie, --crossover or a model file"));
            if (!m->model.empty()) {
              m->batches = o->batches;
              m->batches_given = cmd->get_option("--batch")->count() > 0;
              m->repeats = o->repeats;
              if (cmd->get_option("--threads")->count() > 0) m->threads = o->threads;
              return bench_model(*m, global, json);
            }
            auto results = (*flags)[0] ? run_eie_bench(*o) : run_crossover_bench(*o);
            if (json)
              fmt::print("{}\n", results.dump(2));
            else if ((*flags)[0])
              print_eie_bench(results);
            else
              print_crossover_bench(results);
            return 0;
          }};
}

}  // namespace sparrow::cli
