// sparrow compress MODEL.onnx -o OUT.spw [options | --recipe FILE.json]: post-training Deep
// Compression (prune, share weights, encode, Huffman) into one .spw file.
#include <fstream>

#include "api/compress.h"
#include "api/inspect.h"
#include "cli/commands.h"
#include "cli/spw_report.h"
#include "cli/train_data.h"
#include "compress/recipe.h"
#include "core/file.h"
#include "sparrow/compress.h"
#include "sparrow/onnx.h"
#include "sparrow/retrain.h"

namespace sparrow::cli {

namespace {

struct CompressArgs {
  std::string model, output, recipe, bits, init, quantizer, huffman, low_rank, structured, block,
      balance_scope;
  DataArgs data;  // with data.dir: retrain after each pruning step, then fine-tune the codebooks
  RetrainOptions retrain;
  Distillation distill;
  Augmentation augment;  // for retraining and fine-tuning alike
  std::optional<double> sparsity, quality;
  std::optional<int> index_bits, partitions, balance;
  std::optional<int64_t> channel_multiple;
  std::optional<int64_t> min_weights;
  bool encode_all = false;
  std::optional<uint64_t> seed;
  std::vector<std::string> layers;
  bool json = false;
};

// Recipe first, then command-line options on top of it.
Result<CompressOptions> build_options(const CompressArgs& a, const nlohmann::json& recipe) {
  CompressOptions o;
  if (!recipe.is_null()) {
    nlohmann::json settings = recipe;
    if (settings.is_object()) settings.erase("retrain");
    SP_RETURN_IF_ERROR(apply_recipe(settings, o).prefixed(a.recipe));
  }
  if (a.sparsity) {
    o.all.prune.sparsity = a.sparsity;
    o.all.prune.quality.reset();
  }
  if (a.quality) {
    o.all.prune.quality = a.quality;
    o.all.prune.sparsity.reset();
  }
  if (a.balance) o.all.prune.balance = *a.balance;
  if (!a.balance_scope.empty()) {
    auto scope = parse_balance_scope(a.balance_scope);
    if (!scope.ok()) return scope.status().prefixed("--balance-scope");
    o.all.prune.balance_scope = *scope;
  }
  if (!a.block.empty()) {
    auto block = parse_block_shape(a.block);
    if (!block.ok()) return block.status().prefixed("--block");
    o.all.prune.block = *block;
  }
  SP_RETURN_IF_ERROR(apply_reshaping_flags(a.structured, a.low_rank, o));
  if (a.channel_multiple) o.channel_multiple = *a.channel_multiple;
  if (!a.bits.empty()) SP_RETURN_IF_ERROR(apply_bits(a.bits, o));
  if (a.index_bits) o.index_bits = *a.index_bits;
  if (a.partitions) o.partitions = *a.partitions;
  if (a.min_weights) o.min_weights = *a.min_weights;
  if (a.encode_all) o.float_fallback = false;
  if (a.seed) o.seed = *a.seed;
  if (!a.init.empty()) SP_RETURN_IF_ERROR(apply_recipe({{"init", a.init}}, o).prefixed("--init"));
  if (!a.quantizer.empty())
    SP_RETURN_IF_ERROR(apply_recipe({{"quantizer", a.quantizer}}, o).prefixed("--quantizer"));
  if (!a.huffman.empty()) o.huffman = a.huffman == "on";
  for (const auto& l : a.layers) SP_RETURN_IF_ERROR(apply_layer_override(l, o));
  if (a.balance && !o.any_rule(gives_pruning_target))
    return errorf(
        "--balance balances what is pruned: give --sparsity, --quality or a layer's (or a recipe's)");
  if (a.channel_multiple && !o.prunes_channels())
    return errorf(
        "--channel-multiple rounds what structured pruning keeps: give --structured (or a layer's or "
        "recipe's structured rule)");
  SP_RETURN_IF_ERROR(o.validate());
  return o;
}

// Whether an option was given on the command line.
using Given = std::function<bool(const char*)>;

// The recipe's "retrain" block under the command line's retraining options: a value given on the
// command line wins, and --data replaces the recipe's whole data source.
Status merge_retrain_recipe(const nlohmann::json& recipe, const Given& given, CompressArgs& a) {
  if (!recipe.is_object() || !recipe.contains("retrain")) return {};
  RetrainOptions r = a.retrain;
  Distillation distill = a.distill;
  r.retrain.distill = r.finetune.distill = distill;
  nlohmann::json source = nlohmann::json::object();
  SP_RETURN_IF_ERROR(api::apply_retrain_recipe(recipe["retrain"], r, &source).prefixed(a.recipe));
  if (!given("--prune-steps")) a.retrain.prune_steps = r.prune_steps;
  if (!given("--retrain-epochs")) a.retrain.retrain.epochs = r.retrain.epochs;
  if (!given("--retrain-lr")) a.retrain.retrain.lr = r.retrain.lr;
  if (!given("--finetune-epochs")) a.retrain.finetune.epochs = r.finetune.epochs;
  if (!given("--finetune-lr")) a.retrain.finetune.lr = r.finetune.lr;
  a.retrain.retrain.batch = a.retrain.finetune.batch = r.retrain.batch;
  a.retrain.retrain.seed = a.retrain.finetune.seed = r.retrain.seed;
  if (!given("--flip")) a.augment.flip = r.retrain.augment.flip;
  if (!given("--crop-padding")) a.augment.crop_padding = r.retrain.augment.crop_padding;
  // Distillation field by field: the recipe's settings under the options given here.
  Distillation d = r.retrain.distill;
  if (given("--distill")) d.enabled = true;
  if (given("--distill-loss")) d.loss = a.distill.loss;
  if (given("--temperature")) d.temperature = a.distill.temperature;
  if (given("--distill-weight")) d.weight = a.distill.weight;
  a.distill = d;
  if (!a.data.dir.empty()) return {};
  if (!source.contains("data") || !source["data"].is_string())
    return errorf("{}: the recipe retrains but records no data file; give --data", a.recipe);
  try {
    a.data.dir = source.value("data", std::string());
    a.data.labels = source.value("labels", std::string());
    if (source.contains("scale")) a.data.scale = source["scale"].get<float>();
    if (source.contains("shift")) a.data.shift = source["shift"].get<float>();
    a.data.validation = source.value("validation", a.data.validation);
    a.data.limit = source.value("limit", a.data.limit);
    a.data.resize = source.value("resize", a.data.resize);
    a.data.mean = source.value("mean", a.data.mean);
    a.data.std = source.value("std", a.data.std);
  } catch (const nlohmann::json::exception&) {
    return errorf(
        "{}: retrain: data, labels must be paths, scale, shift, validation, limit, resize numbers and mean, "
        "std "
        "lists of "
        "numbers",
        a.recipe);
  }
  return {};
}

// Where the data came from, as the file's metadata records it (the recipe's data-source keys).
nlohmann::json data_source(const DataArgs& d) {
  nlohmann::json j{{"data", d.dir}, {"validation", d.validation}};
  if (!d.labels.empty()) j["labels"] = d.labels;
  if (d.scale) j["scale"] = *d.scale;
  if (d.shift) j["shift"] = *d.shift;
  if (d.limit > 0) j["limit"] = d.limit;
  if (d.resize > 0) j["resize"] = d.resize;
  if (!d.mean.empty()) j["mean"] = d.mean;
  if (!d.std.empty()) j["std"] = d.std;
  return j;
}

// Retraining settings mean nothing without data to retrain on (from --data or the recipe).
Status require_data_for_retraining(const CompressArgs& a, const Given& given) {
  if (!a.data.dir.empty()) return {};
  for (const char* name :
       {"--prune-steps", "--retrain-epochs", "--retrain-lr", "--finetune-epochs", "--finetune-lr",
        "--distill", "--flip", "--crop-padding", "--checkpoint", "--resume"})
    if (given(name))
      return errorf("{} requires --data (or a recipe whose retrain block records its data)", name);
  return {};
}

int run_compress(CompressArgs a, const Given& given, const GlobalOptions& global) {
  nlohmann::json recipe;
  if (!a.recipe.empty()) {
    auto read = api::read_recipe(a.recipe);
    if (!read.ok()) return report_error(read.status());
    recipe = std::move(*read);
    if (auto s = merge_retrain_recipe(recipe, given, a); !s.ok()) return report_error(s);
  }
  if (auto s = require_data_for_retraining(a, given); !s.ok()) return report_error(s);
  auto options = build_options(a, recipe);
  if (!options.ok()) return report_error(options.status());
  api::CompressRequest request;
  request.model = a.model;
  request.output = a.output;
  request.options = *options;
  request.threads = global.threads;
  std::optional<DataSplits> data;
  if (!a.data.dir.empty()) {
    auto bytes = read_file(a.model);
    if (!bytes.ok()) return report_error(bytes.status());
    auto model = parse_onnx({bytes->data(), bytes->size()}, a.model);
    if (!model.ok()) return report_error(model.status());
    auto splits = load_splits(*model, a.data);
    if (!splits.ok()) return report_error(splits.status());
    data = std::move(*splits);
    request.train = &data->train;
    request.val = &data->val;
    request.test = &data->test;
    request.data_source = data_source(a.data);
    request.retrain = a.retrain;
    request.retrain.retrain.threads = request.retrain.finetune.threads = global.threads;
    request.retrain.retrain.progress = request.retrain.finetune.progress = !global.quiet;
    request.retrain.retrain.distill = request.retrain.finetune.distill = a.distill;
    request.retrain.retrain.augment = request.retrain.finetune.augment = a.augment;
    if (request.retrain.checkpoint.empty()) request.retrain.checkpoint = a.output + ".ckpt";
    for (const std::string& path : {a.output, a.model})
      if (same_file(request.retrain.checkpoint, path))
        return report_error(errorf("--checkpoint {} would overwrite {}", request.retrain.checkpoint, path));
    request.retrain.retrain.interrupted = request.retrain.finetune.interrupted = InterruptScope::interrupted;
  }
  Result<api::CompressOutcome> outcome = errorf("not compressed");
  {
    InterruptScope catch_ctrl_c;
    outcome = api::compress_file(request);
    if (!outcome.ok() && InterruptScope::interrupted())
      return report_error(
          errorf("{}; the finished epochs of every phase are kept in {}.*: continue with --resume",
                 outcome.status().message(), request.retrain.checkpoint));
  }
  if (!outcome.ok()) return report_error(outcome.status());
  remove_retrain_checkpoints(request.retrain);  // the output holds what they held
  const SpwModel& spw = outcome->result.spw;
  if (outcome->accuracy_before && !global.quiet)
    fmt::print(stderr, "test accuracy: {:.4f} before, {:.4f} after compression ({:+.2f} points)\n",
               *outcome->accuracy_before, *outcome->accuracy_after,
               100 * (*outcome->accuracy_after - *outcome->accuracy_before));
  if (outcome->agreement && !global.quiet)
    fmt::print(
        stderr,
        "agreement with the original on the held-out rows: top-1 {:.4f}, output difference max {:.4g}, "
        "mean {:.4g}\n",
        outcome->agreement->top1, outcome->agreement->max_abs_difference,
        outcome->agreement->mean_abs_difference);
  for (const LayerReport& l : outcome->result.layers)
    if (!l.kept_float.empty() && !global.quiet && !a.json)
      fmt::print(stderr, "{}: stays float32 ({})\n", l.weight, l.kept_float);
  if (a.json) {
    nlohmann::json j = api::spw_report_json(spw, a.output);
    j["kept_float"] = api::kept_float_json(outcome->result);
    j.update(api::results_json(*outcome));
    fmt::print("{}\n", j.dump(2));
  } else if (!global.quiet) {
    print_spw_report(spw, a.output);
  }
  return 0;
}

}  // namespace

Command add_compress(CLI::App& app, const GlobalOptions& global) {
  auto a = std::make_shared<CompressArgs>();
  auto* cmd = app.add_subcommand("compress", "Prune, share weights and encode a model into a .spw file");
  cmd->add_option("model", a->model, "Model file (.onnx)")->required();
  cmd->add_option("-o,--output", a->output, "Output .spw file")->required();
  auto* sparsity = cmd->add_option("--sparsity", a->sparsity,
                                   "Fraction of each layer's weights to prune (keep the largest |w|)");
  cmd->add_option("--quality", a->quality, "Prune |w| < quality x std of the layer's weights")
      ->excludes(sparsity);  // two answers to how much to prune: refused, not one silently dropped
  cmd->add_option("--bits", a->bits, "Weight bits: N for every layer, or per kind: conv=8,fc=5 (default)");
  cmd->add_option("--index-bits", a->index_bits, "Bits per relative index (2..8, default 4)");
  cmd->add_option("--init", a->init, "k-means initialization: linear (default), density, random");
  cmd->add_option("--quantizer", a->quantizer, "kmeans (default) or uniform (affine baseline)");
  cmd->add_option("--huffman", a->huffman, "Huffman-code the streams: on (default) or off")
      ->check(CLI::IsMember({"on", "off"}));
  cmd->add_option("--partitions", a->partitions,
                  "Row partitions (engine threads / simulated PEs), default 1");
  cmd->add_option("--lowrank", a->low_rank,
                  "Factorize first, fully connected layers and LSTM input weights by truncated SVD and "
                  "convolutions by Tucker-2: energy=F (kept share of the squared singular values), rank=N, "
                  "params=F (factors' share of the layer's weights), or none; then +cp (convolutions by CP, "
                  "with rank or params) or +groups=G (Tucker-2 with a core of G groups)");
  cmd->add_option("--structured", a->structured,
                  "Structured pruning first: remove this fraction of each channel group's output channels "
                  "(filters, units), those of smallest norm, and every tensor slice that holds them: l1=F, "
                  "l2=F, or none");
  cmd->add_option("--channel-multiple", a->channel_multiple,
                  "With --structured: each shrunk channel group keeps a multiple of N channels (e.g. 16, "
                  "so that runtimes' kernels stay efficient)")
      ->check(CLI::Range(int64_t{1}, kMaxChannelMultiple));
  cmd->add_option("--balance", a->balance,
                  "Load-balance-aware pruning: each of N interleaved row partitions (PEs) keeps the same "
                  "number of weights")
      ->check(CLI::Range(1, kMaxBalancePartitions));
  cmd->add_option("--balance-scope", a->balance_scope,
                  "What --balance makes equal: layer (each partition's total, the default), column (each "
                  "input's weights spread evenly over the partitions too, so every activation EIE "
                  "broadcasts costs each PE the same, to one weight) or entries (each input's "
                  "relative-index entries, fillers included, exactly equal over the partitions: its "
                  "kept count rounded to a multiple of N)")
      ->check(CLI::IsMember({"layer", "column", "entries"}));
  cmd->add_option("--block", a->block,
                  "Prune in blocks of ROWSxCOLS weights (output rows x inputs), e.g. 4x1: the engine runs "
                  "batches and convolutions four rows at a time");
  cmd->add_option("--seed", a->seed, "Seed for random k-means initialization");
  cmd->add_option("--min-weights", a->min_weights,
                  "Layers with fewer weights stay float32 (so does any layer whose encoding would be larger)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--encode-all", a->encode_all,
                "Encode every layer, even where the encoding would be larger than float32");
  cmd->add_option("--layer", a->layers,
                  "Per-layer override NAME:key=value,... (sparsity, quality, balance, balance_scope, block, "
                  "bits, lowrank, structured, exclude)");
  cmd->add_option(
      "--recipe", a->recipe,
      "JSON or YAML (.yaml, .yml) file with the same settings and a retrain block, or a .spw whose "
      "recorded recipe to replay (options given here win)");
  cmd->add_flag("--json", a->json, "Print the inspect report as JSON");
  auto* data = cmd->add_option(
      "--data", a->data.dir,
      "Data to retrain on after each pruning step and to fine-tune the codebooks with: a directory of IDX "
      "files (train-*, t10k-*), CIFAR-10 batches or image class folders, an .npy of inputs (labels: "
      "--labels) or an .npz (arrays x, y)");
  add_data_options(cmd, a->data);
  cmd->add_option("--prune-steps", a->retrain.prune_steps, "Iterative pruning steps (cubic sparsity ramp)")
      ->check(CLI::Range(1, 100));
  a->retrain.retrain.epochs = 2;
  a->retrain.retrain.lr = 0.005;
  a->retrain.finetune.epochs = 1;
  a->retrain.finetune.lr = 0.001;
  add_train_options(cmd, a->retrain.retrain, "retrain-");
  add_train_options(cmd, a->retrain.finetune, "finetune-");
  add_augmentation_options(cmd, a->augment);
  cmd->add_option("--checkpoint", a->retrain.checkpoint,
                  "With --data: where the run is recorded; each retraining phase saves its finished epochs "
                  "atomically beside it (default: OUTPUT.ckpt and OUTPUT.ckpt.*; removed once the output is "
                  "written)");
  cmd->add_flag(
      "--resume", a->retrain.resume,
      "Continue an interrupted or killed run from its checkpoints, with the same settings: finished "
      "phases are restored, the unfinished one continues after its last epoch");
  cmd->add_flag("--distill", a->distill.enabled,
                "Retrain by knowledge distillation: the input model teaches (labels become optional)");
  add_distillation_options(cmd, a->distill);
  // These describe --data; the retraining settings need data too, from --data or from the recipe
  // (run_compress checks them once the recipe is read).
  for (const char* name :
       {"--labels", "--scale", "--shift", "--mean", "--std", "--limit", "--validation", "--resize"})
    cmd->get_option(name)->needs(data);
  for (const char* name : {"--distill-loss", "--temperature", "--distill-weight"})
    cmd->get_option(name)->needs("--distill");
  return {cmd, [a, cmd, &global]() {
            return run_compress(
                *a, [cmd](const char* name) { return cmd->get_option(name)->count() > 0; }, global);
          }};
}

}  // namespace sparrow::cli
