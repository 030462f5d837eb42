// sparrow train: trains a built-in architecture (--arch lenet300|lenet5) or retrains an imported
// model on any data source (cli/train_data.h), writes ONNX, and reports the test accuracy measured by
// the dense executor. Every epoch is checkpointed; Ctrl-C stops cleanly and --resume continues.
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "api/compress.h"
#include "cli/commands.h"
#include "cli/train_data.h"
#include "core/file.h"
#include "sparrow/onnx.h"
#include "sparrow/retrain.h"
#include "sparrow/train.h"

namespace sparrow::cli {

namespace {

struct TrainArgs {
  std::string arch, model, output;
  std::string checkpoint;  // default: the output's path + ".ckpt"
  bool resume = false;
  std::string teacher;               // knowledge distillation from this model's outputs
  std::string structured, low_rank;  // reshape the model first (then train to recover)
  int64_t channel_multiple = 1;
  DataArgs data;
  TrainOptions train;
  bool json = false;
};

// The model with channels pruned and layers factorized as --structured and --lowrank ask; prints
// the weights and MACs per sample before and after.
Status reshape_for_training(const TrainArgs& a, const GlobalOptions& global, Model& model) {
  if (a.structured.empty() && a.low_rank.empty()) {
    if (a.channel_multiple != 1)
      return errorf("--channel-multiple rounds what structured pruning keeps: give --structured");
    return {};
  }
  if (a.model.empty()) return errorf("--structured and --lowrank shrink a trained model: give a model file");
  CompressOptions o;
  SP_RETURN_IF_ERROR(apply_reshaping_flags(a.structured, a.low_rank, o));
  o.channel_multiple = a.channel_multiple;
  SP_RETURN_IF_ERROR(o.validate());
  SP_ASSIGN_OR_RETURN(ReshapedModel reshaped, api::reshape_checked(model, o, "{}"));
  const auto macs = nlohmann::json::parse(reshaped.metadata_json).value("macs", nlohmann::json::object());
  const auto count = [&](const char* key) {
    return macs.contains(key) ? human_count(macs[key].get<int64_t>()) : std::string("?");
  };
  if (!global.quiet)
    fmt::print(stderr, "{}: {} -> {} weights, {} -> {} MACs per sample\n", a.model,
               human_count(model.parameter_count()), human_count(reshaped.model.parameter_count()),
               count("before"), count("after"));
  model = std::move(reshaped.model);
  return {};
}

// The teacher's outputs for the training and validation rows, checked against the student's width;
// returns the teacher, which later measures the student's agreement.
Result<Model> add_teacher(const TrainArgs& a, const Model& student, DataSplits& data, int threads) {
  SP_ASSIGN_OR_RETURN(Model teacher, load_onnx(a.teacher));
  SP_RETURN_IF_ERROR(add_teacher_outputs(teacher, data.train, threads).prefixed(a.teacher));
  SP_RETURN_IF_ERROR(add_teacher_outputs(teacher, data.val, threads).prefixed(a.teacher));
  const LabeledData one = slice(data.train, 0, 1);
  SP_ASSIGN_OR_RETURN(Tensor mine, model_outputs(student, one.inputs, threads));
  if (data.train.teacher.rank() != 2 || mine.numel() != data.train.teacher.dim(1))
    return errorf("{}: the teacher gives {} outputs per row, the student {}", a.teacher,
                  shape_str(data.train.teacher.shape()), mine.numel());
  return teacher;
}

int run_train(TrainArgs& a, const GlobalOptions& global) {
  if (a.arch.empty() == a.model.empty())
    return report_error(errorf("train: give either --arch or a model file"));
  if (!a.model.empty() && same_file(a.model, a.output))
    return report_error(errorf("output {} would overwrite the input", a.output));
  auto model = a.arch.empty() ? load_onnx(a.model) : make_architecture(a.arch, a.train.seed);
  if (!model.ok()) return report_error(model.status());
  if (auto s = reshape_for_training(a, global, *model); !s.ok()) return report_error(s);
  auto data = load_splits(*model, a.data);
  if (!data.ok()) return report_error(data.status());
  std::optional<Model> teacher;
  if (!a.teacher.empty()) {
    if (data->train.size() == 0) return report_error(errorf("{}: no training rows", a.data.dir));
    auto taught = add_teacher(a, *model, *data, global.threads);
    if (!taught.ok()) return report_error(taught.status());
    teacher = std::move(*taught);
    a.train.distill.enabled = true;
  }
  a.train.threads = global.threads;
  a.train.progress = !global.quiet;
  a.train.checkpoint = a.checkpoint.empty() ? a.output + ".ckpt" : a.checkpoint;
  a.train.resume = a.resume;
  a.train.interrupted = InterruptScope::interrupted;
  Result<std::vector<EpochReport>> epochs = errorf("not trained");
  {
    InterruptScope catch_ctrl_c;
    epochs = train_model(*model, data->train, &data->val, a.train);
  }
  if (!epochs.ok()) return report_error(epochs.status());
  if (auto s = save_onnx(*model, a.output); !s.ok()) return report_error(s);
  std::error_code ignored;
  std::filesystem::remove(a.train.checkpoint, ignored);  // the output holds what it held
  nlohmann::json j{
      {"model", a.output},
      {"epochs", epochs->size()},
      {"rows",
       {{"train", data->train.size()}, {"validation", data->val.size()}, {"test", data->test.size()}}}};
  double seconds = 0;
  std::vector<double> epoch_seconds;
  for (const auto& e : *epochs) {
    seconds += e.seconds;
    epoch_seconds.push_back(e.seconds);
  }
  j["train_seconds"] = seconds;
  j["epoch_seconds"] = epoch_seconds;
  std::string measured;
  if (data->test.labeled()) {
    auto acc = classification_accuracy(*model, data->test, global.threads);
    if (!acc.ok()) return report_error(acc.status());
    j["test_accuracy"] = *acc;
    j["test_error"] = 1 - *acc;
    measured = fmt::format("test accuracy: {:.4f} (error {:.2f}%)", *acc, 100 * (1 - *acc));
  }
  if (teacher && data->test.size() > 0) {
    auto agree = output_agreement(*teacher, *model, data->test.inputs, global.threads);
    if (!agree.ok()) return report_error(agree.status());
    j["agreement_with_teacher"] = {{"top1", agree->top1},
                                   {"max_abs_difference", agree->max_abs_difference},
                                   {"mean_abs_difference", agree->mean_abs_difference}};
    measured +=
        fmt::format("{}top-1 agreement with the teacher: {:.4f}", measured.empty() ? "" : "\n", agree->top1);
  }
  if (a.json)
    fmt::print("{}\n", j.dump());
  else
    fmt::print("wrote {}; {} epochs in {:.1f} s\n{}\n", a.output, epochs->size(), seconds, measured);
  return 0;
}

}  // namespace

Command add_train(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand(
      "train", "Train a built-in architecture or retrain a model, optionally taught by a larger one");
  cmd->add_option("model", a->model, "Model to retrain (.onnx)");
  cmd->add_option("--arch", a->arch, "Built-in architecture: lenet300 or lenet5");
  cmd->add_option("--data", a->data.dir,
                  "Training data: a directory of IDX files, CIFAR-10 batches or image class folders, an .npy "
                  "(labels: --labels) or an .npz")
      ->required();
  cmd->add_option("-o,--output", a->output, "Output .onnx")->required();
  add_data_options(cmd, a->data);
  add_train_options(cmd, a->train, "");
  cmd->add_option(
      "--teacher", a->teacher,
      "Learn from this model's outputs too (knowledge distillation, Hinton et al. 2015): a student "
      "architecture or model trained from a larger teacher (.onnx); labels become optional");
  add_distillation_options(cmd, a->train.distill);
  for (const char* name : {"--distill-loss", "--temperature", "--distill-weight"})
    cmd->get_option(name)->needs("--teacher");
  cmd->add_option("--checkpoint", a->checkpoint,
                  "Where each finished epoch is saved, atomically (default: OUTPUT.ckpt; removed once the "
                  "output is written)");
  cmd->add_flag(
      "--resume", a->resume,
      "Continue from the checkpoint after the last epoch it holds (after Ctrl-C or a crash), with the "
      "same settings");
  cmd->add_option("--structured", a->structured,
                  "Remove this fraction of each channel group's output channels first (smallest norm), then "
                  "train the smaller dense model: l1=F or l2=F");
  cmd->add_option("--channel-multiple", a->channel_multiple,
                  "With --structured: each shrunk channel group keeps a multiple of N channels")
      ->check(CLI::Range(int64_t{1}, kMaxChannelMultiple));
  cmd->add_option("--lowrank", a->low_rank,
                  "Factorize layers first (SVD, Tucker-2), then train the factors: energy=F, rank=N or "
                  "params=F, then +cp (convolutions by CP) or +groups=G (Tucker-2 with a grouped core)");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a, &global]() { return run_train(*a, global); }};
}

}  // namespace sparrow::cli
