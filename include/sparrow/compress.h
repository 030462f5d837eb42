// Post-training Deep Compression: per-layer magnitude pruning, weight sharing by 1-D k-means
// (or uniform affine quantization as a baseline), relative-index encoding, optional Huffman.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparrow/format.h"
#include "sparrow/model.h"

namespace sparrow {

// ---- pruning ----

// A block of a weight matrix: rows x cols; 0 x 0 is unset.
struct BlockShape {
  int rows = 0, cols = 0;
  bool set() const { return rows > 0 && cols > 0; }
  int64_t size() const { return int64_t{rows} * cols; }
  bool operator==(const BlockShape&) const = default;
};

// Which non-zero counts load-balance-aware pruning makes equal over the row partitions.
enum class BalanceScope : uint8_t {
  unset,    // inherits (a layer's override from the global rule); unset everywhere: layer
  layer,    // each partition's total over the layer ([ESE])
  column,   // each column's: every input (the activation EIE broadcasts to all PEs) costs each
            // partition the same number of weights, to one, wherever the active inputs fall
  entries,  // each column's relative-index entries (weights and fillers): every input costs each
            // partition exactly the same cycles, the columns' counts rounded to whole multiples
            // of the partitions
};
// "layer", "column" or "entries".
Result<BalanceScope> parse_balance_scope(std::string_view text);
std::string_view balance_scope_text(BalanceScope scope);

// How much of one layer to prune: either a target sparsity (keep the top-k |w|,
// k = round(n * (1 - sparsity))) or a threshold (prune |w| < quality * std of the layer's weights).
struct PruneRule {
  PruneRule() = default;
  PruneRule(std::optional<double> sparsity_, std::optional<double> quality_, int balance_ = 0,
            BlockShape block_ = {}, BalanceScope balance_scope_ = BalanceScope::unset)
      : sparsity(sparsity_),
        quality(quality_),
        balance(balance_),
        block(block_),
        balance_scope(balance_scope_) {}
  std::optional<double> sparsity;
  std::optional<double> quality;
  // Load-balance-aware pruning ([ESE]), for prune_layer: with N >= 2 the number of weights the rule
  // keeps is counted over the whole layer, then each of N interleaved row partitions (matrix row r
  // in partition r % N: EIE's PEs, the .spw file's partitions) keeps the same share of it, its own
  // largest |w|. 1: the layer as a whole. 0: not set (a layer's override inherits the global value,
  // which 0 also treats as 1).
  int balance = 0;
  // Block pruning: weights are kept or pruned in whole blocks of `block` (output rows x input
  // columns of the layer's matrix view, aligned to multiples of the block's sides; the edges'
  // blocks may be smaller), the blocks of largest L2 norm first, until the rule's count of kept
  // weights is reached. 4x1 keeps four adjacent output rows of one input together, which the
  // engine's batched and convolution kernels run four rows at a time. Unset: inherits (a layer's
  // override from the global rule); unset everywhere or 1x1: weight by weight. Not combined with
  // balance.
  BlockShape block;
  // What `balance` makes equal (see BalanceScope and prune_layer).
  BalanceScope balance_scope = BalanceScope::unset;
  // Bits of the relative index that scope entries counts fillers for (the file's index_bits).
  int index_bits = 4;
};

// Largest side of a pruning block.
inline constexpr int kMaxBlockSide = 64;
// "RxC" (R, C in 1..kMaxBlockSide), e.g. "4x1".
Result<BlockShape> parse_block_shape(std::string_view text);
std::string block_shape_text(BlockShape block);

// Most row partitions a rule may balance over (as many as a .spw file's partitions).
inline constexpr int kMaxBalancePartitions = 65536;

// Sets pruned weights to exactly 0 (rule.balance is ignored: the weights have no rows here);
// returns how many weights are zero afterwards. Deterministic: among weights tied at the
// threshold, the earliest (by index) are kept.
int64_t prune_weights(std::span<float> weights, const PruneRule& rule);

// Prunes one layer whose weights lie as a tensor seen through `view` (in blocks when rule.block
// is larger than 1x1) (see MatrixView; the values of
// a non-transposed view are row-major [rows, cols]), balanced over rule.balance row partitions
// when that is 2 or more. Scope layer: the layer's kept count is shared out over the non-empty
// partitions, the first (kept mod partitions) keeping one more, each at most all of its own: equal
// counts wherever the count and the partitions' sizes allow. Scope column: each column's count
// (the weights of it among the layer's kept count of largest |w|) is shared out over the
// partitions, each at most all of its rows in the column; what does not divide evenly goes one
// weight each to the partitions whose next |w| in the column is largest. The partitions' totals
// then differ by what those extra weights add up to. Scope entries: each column gets the same
// number E of relative-index entries (weights and the fillers of rule.index_bits gaps) in every
// partition: first each column's count's whole multiples of the partitions, then, while the
// layer is more than half a partition's weights below its count, the fewest entries more that
// keep more weights (at most 8 beyond the whole multiples) to the column furthest below its own
// count, unless that brings the layer no nearer to its count (so without fillers a column of a
// larger count never keeps fewer, each within one partition's weights of its count, where its
// partitions' rows allow); each partition keeps its largest non-zero |w| that fit in E entries, a far row
// giving way to a nearer, smaller one where its fillers would not fit; where a partition cannot
// make E entries (too few non-zero rows, as when pruning weights pruned before), the column's E is
// what every partition can make. NaN weights are pruned.
// Within a partition (of a column), its largest |w| are kept (scope entries: those that fit).
// Returns how many weights are zero afterwards.
int64_t prune_layer(std::span<float> weights, const MatrixView& view, const PruneRule& rule);

// Non-zero weights in each of `partitions` interleaved row partitions (row r in partition
// r % partitions) of a layer whose weights lie as seen through `view`.
std::vector<int64_t> partition_nonzeros(std::span<const float> weights, const MatrixView& view,
                                        int partitions);

// ---- weight sharing ----

enum class KmeansInit { linear, density, random };
enum class Quantizer { kmeans, uniform };

struct Codebook {
  std::vector<float> centroids;  // ascending
};

// 1-D k-means (Lloyd's algorithm on sorted values with prefix sums: O(k log n) per iteration after
// one sort). Deterministic for a given seed. Returns at most k centroids (fewer if there are fewer
// distinct values).
Codebook kmeans_1d(std::span<const float> values, int k, KmeansInit init, uint64_t seed,
                   int max_iterations = 300);
// k evenly spaced levels over [min, max] (uniform affine quantization).
Codebook uniform_levels(std::span<const float> values, int k);
// Index of the nearest centroid for each value (ties go to the lower centroid).
std::vector<uint8_t> assign_nearest(std::span<const float> values, const Codebook& codebook);

// ---- low-rank factorization ----

// How the rank of a fully connected layer's factorization is chosen: the smallest rank keeping
// `value` of the sum of squared singular values (energy, in (0, 1]); a fixed rank (rank, >= 1,
// at most min(rows, cols); CP's rank may be larger); or the largest rank whose two factors hold
// at most `value` of the layer's weights (params, in (0, 1)); none: the layer is not factorized.
// `conv` and `groups` say how a convolution is decomposed (see factorize_low_rank).
struct LowRankRule {
  enum class By { energy, rank, params, none };
  enum class Conv { tucker, cp };
  By by = By::energy;
  double value = 0.9;
  Conv conv = Conv::tucker;
  int64_t groups = 1;  // Tucker-2 with a grouped core of this many groups
};
// "energy=0.9", "rank=64", "params=0.33" or "none", optionally followed by "+cp" (CP for
// convolutions; with rank or params only) or "+groups=G" (Tucker-2 with a grouped core); errors
// name the text.
Result<LowRankRule> parse_low_rank_rule(const std::string& text);
std::string low_rank_rule_text(const LowRankRule& rule);

// The rank `rule` gives a rows x cols matrix with singular values `s` (descending).
int64_t choose_rank(std::span<const double> s, int64_t rows, int64_t cols, const LowRankRule& rule);

struct FactorizedLayer {
  std::string weight, node;          // the original weight and node
  std::vector<std::string> factors;  // the new weights, from the input side
  int64_t rows = 0, cols = 0;        // the original as a matrix [out, in x kernel]
  int64_t rank = 0;                  // hidden units (a convolution: the core's output channels; CP: its rank)
  int64_t rank_in = 0;               // Tucker-2: the core's input channels; else = rank
  int64_t weights_after = 0;         // in all the factors
  double relative_error = 0;         // ||W - factors' product||_F / ||W||_F
  std::string method = "svd";        // "svd", "tucker2" or "cp"
  int64_t groups = 1;                // Tucker-2: the groups of its core
  bool node_kept = false;            // the node stays and reads the last factor (an LSTM)
};

// Replaces every Gemm, MatMul, LSTM and Conv (group 1, a kernel of more than one tap)
// whose weight is a float32 initializer that only it reads, where the rule's ranks save weights.
// The factors are ordinary layers: they can be pruned, quantized, retrained and run like any other.
// - Gemm and MatMul: two products of the same kind through `rank` hidden units, W [out, in] ~ P Q
//   from the truncated SVD (Eigen), P = U_r S_r^1/2 and Q = S_r^1/2 V_r^T. The first (node
//   NODE/lowrank_q, weight WEIGHT.lowrank_q) takes the input, the second (NODE/lowrank_p,
//   WEIGHT.lowrank_p) adds the bias and writes the original output; a Gemm's alpha and beta go to
//   the second.
// - LSTM: the input weights W [dirs, 4 H, I], all directions stacked into one matrix, by the
//   truncated SVD: a MatMul by Q^T [I, rank] (NODE/lowrank_q, WEIGHT.lowrank_q) before the node,
//   whose W becomes P [dirs, 4 H, rank] (WEIGHT.lowrank_p). The recurrent weights stay.
// - Conv (Tucker-2): a 1x1 convolution to rank_in channels (WEIGHT.tucker_reduce, the leading
//   left singular vectors of W unfolded along its input channels), the original window on the
//   core [rank, rank_in, k...] (WEIGHT.tucker_core, same strides, pads and dilations), and a 1x1
//   convolution back to the output channels with the bias (WEIGHT.tucker_expand, from W unfolded
//   along its output channels). The rule picks each of the two ranks from its own unfolding's
//   singular values (energy), caps both at N (rank), or scales both with the channel counts
//   (params; at least rank 1 each, as the SVD takes at least rank 1).
// - Conv with groups=G (grouped Tucker-2, a sum of G Tucker-2 terms): the same three layers, the
//   core a convolution of G groups of rank_in/G -> rank/G channels. Both ranks are multiples of G
//   (energy rounds up, rank=N caps at N rounded down but keeps at least G, params keeps the
//   budget: a layer whose smallest ranks exceed it stays as it is, as with CP).
//   A convolution with fewer than G input or output channels gets plain Tucker-2.
//   The terms are fitted one after another to what the earlier ones leave (each by Tucker-2), then
//   each is refitted to what the others leave while that lowers the error.
// - Conv with cp (CP, rank R from rank=N or params=F, by alternating least squares, at least one
//   iteration): a 1x1 convolution to R channels
//   (WEIGHT.cp_reduce), a depthwise convolution of the original window on each (WEIGHT.cp_window,
//   same strides, pads and dilations) and a 1x1 convolution to the output channels with the bias
//   (WEIGHT.cp_expand).
// `per_layer` (by node or weight name) overrides `rule` for the layers it names.
Result<std::vector<FactorizedLayer>> factorize_low_rank(
    Model& model, const LowRankRule& rule, const std::map<std::string, LowRankRule>& per_layer = {});

// ---- structured pruning ----

// How many output channels (convolution filters, fully connected units) of a channel group are
// removed: the `fraction` of them (rounded, at least one kept) whose weights have the smallest
// norm (l1 or l2, each producer's norms divided by their mean, summed over the group's
// producers); none: the group is kept whole.
struct StructuredRule {
  enum class Norm { l1, l2, none };
  Norm norm = Norm::l1;
  double fraction = 0.5;  // in [0, 1)
};
// "l1=0.5", "l2=0.3" or "none"; errors name the text.
Result<StructuredRule> parse_structured_rule(const std::string& text);
std::string structured_rule_text(const StructuredRule& rule);

// Largest channel multiple structured pruning may round to.
inline constexpr int64_t kMaxChannelMultiple = 4096;

// Output channels that are removed together: those of every producer (a Conv, Gemm or MatMul with
// its own weight) whose outputs meet in an elementwise op such as a residual Add.
struct ChannelGroup {
  std::vector<std::string> producers;  // node names, in graph order
  int64_t channels = 0, kept = 0;
  std::string kept_whole;  // why the group cannot shrink (its channels reach a graph output or an
                           // operator that mixes them), or empty
  // An attention block's heads (its producers the query, key and value projections): the channels
  // of each head, which go whole; `channels` and `kept` then count heads. 0 for a channel group.
  int64_t head_width = 0;
};

// Removes output channels from the channel groups of `model` and, with them, every tensor slice
// that holds them: the producers' weight rows and biases, BatchNormalization's parameters,
// depthwise convolutions' filters, and the readers' input columns (after Flatten, each channel's
// spatial block), through activations, pooling, Concat and elementwise ops. The model really
// shrinks: any runtime runs it faster. Channels that reach a graph output, or an operator that
// this pass does not follow, are kept whole (the report says which). Multi-head attention blocks
// lose whole heads first (see prune_attention_heads in src/compress/attention_heads.h): their
// groups come first in the report, with `head_width` set.
// `per_layer` (by a producer's node or weight name) overrides `rule` for that producer's group.
// With a fraction of 0 everywhere the model is unchanged.
// With `multiple` > 1, a group that loses channels keeps a multiple of that many (the nearest to
// what the rule keeps, at least `multiple`), so that the runtimes' kernels stay efficient; a group
// of no more channels than `multiple` keeps what the rule says.
Result<std::vector<ChannelGroup>> prune_channels(Model& model, const StructuredRule& rule,
                                                 const std::map<std::string, StructuredRule>& per_layer = {},
                                                 int64_t multiple = 1);

// ---- the pipeline ----

struct LayerSettings {
  PruneRule prune;
  std::optional<int> bits;  // 1..8
  bool exclude = false;     // keep the layer dense float32
  // This layer's factorization rule, over CompressOptions::low_rank (by none: not factorized).
  std::optional<LowRankRule> low_rank;
  // This layer's channel group's structured pruning rule, over CompressOptions::structured.
  std::optional<StructuredRule> structured;
};

// Whether a layer's settings give a pruning target (sparsity or quality); a block larger than 1x1.
bool gives_pruning_target(const LayerSettings& s);
bool prunes_in_blocks(const LayerSettings& s);
// Whether a layer's settings balance over 2 or more partitions; ask for balance by column.
bool balances_partitions(const LayerSettings& s);
bool balances_by_column(const LayerSettings& s);

struct CompressOptions {
  LayerSettings all;  // --sparsity / --quality / --bits N
  int conv_bits = 8;  // default weight bits of conv layers
  int fc_bits = 5;    // default weight bits of fc (Gemm/MatMul/LSTM) layers
  // Overrides by node name or weight name, or for every compressible layer a pattern selects:
  // "op:TYPE" (the node's operator, e.g. op:Conv) or "re:REGEX" (ECMAScript, matching the whole
  // weight or node name). A layer takes the op: rules, then the re: rules (in key order), then its
  // node's and its weight's own, each over the ones before for the settings it gives.
  std::map<std::string, LayerSettings> layers;
  int index_bits = 4;  // 2..8
  KmeansInit init = KmeansInit::linear;
  Quantizer quantizer = Quantizer::kmeans;
  bool huffman = true;
  int partitions = 1;  // 1..65536
  uint64_t seed = 1;
  // When set (here or for a layer), fully connected layers are factorized first
  // (factorize_low_rank); settings given for a factorized layer's weight or node apply to
  // both of its factors.
  std::optional<LowRankRule> low_rank;
  // Whether a rule (global or a layer's) asks for factorization, other than none.
  bool factorizes() const;
  // When set (here or for a layer), channels are pruned first (prune_channels), before any
  // factorization; settings given by node or weight name still apply to the smaller layers.
  std::optional<StructuredRule> structured;
  // Channel groups that structured pruning shrinks keep a multiple of this many channels (1: any).
  int64_t channel_multiple = 1;
  // Whether a rule (global or a layer's) asks for structured pruning, other than none.
  bool prunes_channels() const;
  // Whether any rule (global or a layer's) satisfies `test`, e.g. gives a pruning target.
  bool any_rule(bool (*test)(const LayerSettings&)) const;
  // Layers with fewer weights stay float32 (0: none).
  int64_t min_weights = 0;
  // A layer whose encoding (codes, indices, column counts and codebook) would take more bits than
  // its float32 weights stays float32; false: every layer is encoded (e.g. to study the encodings).
  bool float_fallback = true;
  // Not part of the recipe: called after each layer is compressed (done of total), when set.
  std::function<void(const std::string& weight, size_t done, size_t total)> on_layer;

  // Checks every value; messages name the option (and layer) and the valid range.
  Status validate() const;
};

// A weight tensor Sparrow can compress: the initializer, the node that reads it, its kind.
struct CompressibleLayer {
  std::string weight;  // initializer name
  std::string node;    // first node that reads it
  bool conv = false;
  MatrixView view;
};
std::vector<CompressibleLayer> find_compressible_layers(const Model& model);
// The options with every pattern rule ("op:", "re:" keys of CompressOptions::layers) replaced by
// rules for the layers it selects, by weight name, merged with their own; an error names a pattern
// that selects no layer, or that is no valid regular expression. Compression does this first.
Result<CompressOptions> expand_layer_patterns(const Model& model, const CompressOptions& options);
// The settings in force for one layer: the global ones, then overrides by node or weight name, then
// the default bits of the layer's kind.
LayerSettings resolve_layer_settings(const CompressOptions& options, const CompressibleLayer& layer);
// `over`'s settings over `into`'s, for each setting `over` gives (a pruning target replaces the
// target; balance and block are kept unless `over` gives them).
void merge_layer_settings(LayerSettings& into, const LayerSettings& over);
// Every compressible layer's settings in force (after expand_layer_patterns) checked as a whole: an
// error names the layer whose combined settings cannot apply (a block with a balance).
Status check_layer_settings(const Model& model, const CompressOptions& options);

struct LayerReport {
  std::string weight, node;
  bool conv = false;
  int64_t weights = 0, kept = 0;
  int bits = 0;
  bool excluded = false;
  std::string kept_float;  // why a layer that was to be compressed stays float32, or empty
  double rms_error = 0;    // of the quantized weights against the pruned float weights
};

struct CompressResult {
  SpwModel spw;
  std::vector<LayerReport> layers;
  std::vector<FactorizedLayer> factorized;   // with options.low_rank
  std::vector<ChannelGroup> channel_groups;  // with options.structured
};

// prune_channels with the options' rules: options.structured, and each layer's own (an excluded
// layer's group is kept whole unless the layer has its own rule).
Result<std::vector<ChannelGroup>> prune_channel_groups(Model& model, const CompressOptions& options);
// The options without structured rules (what compresses the model prune_channel_groups shrank).
CompressOptions options_after_channel_pruning(const CompressOptions& options);
// The metadata JSON with "structured": [{producers, channels, kept, kept_whole}] added (unchanged
// if it is not a JSON object).
std::string record_channel_groups(const std::string& metadata_json, const std::vector<ChannelGroup>& groups);

// factorize_low_rank with the options' rules: options.low_rank, and each layer's own.
Result<std::vector<FactorizedLayer>> factorize_layers(Model& model, const CompressOptions& options);

// The options that compress a model already factorized by factorize_layers: no low-rank rules, and each
// setting for a factorized layer's weight or node given to both of its factors.
CompressOptions options_after_factorizing(const CompressOptions& options,
                                          const std::vector<FactorizedLayer>& factorized);
// The metadata JSON with "factorized": [{weight, factors, rows, cols, rank, rank_in, weights_after,
// relative_error}] added (unchanged if it is not a JSON object).
std::string record_factorized(const std::string& metadata_json,
                              const std::vector<FactorizedLayer>& factorized);

// A model as the options reshape it before its weights are pruned: channels removed
// (prune_channel_groups), then layers factorized (factorize_layers); the options still to apply
// (options_after_channel_pruning, then options_after_factorizing); and the metadata JSON recording
// both ("structured", "factorized") and the source's float32 weight bytes ("source_fp32_bytes",
// unless recorded already).
struct ReshapedModel {
  Model model;
  CompressOptions options;
  std::vector<ChannelGroup> channel_groups;
  std::vector<FactorizedLayer> factorized;
  std::string metadata_json;
};
Result<ReshapedModel> reshape_model(Model model, const CompressOptions& options,
                                    const std::string& metadata_json);

// Compresses every compressible layer of `model` (reshaped first when the options prune channels
// or factorize); `metadata_json` is stored in the file as is.
Result<CompressResult> compress_model(const Model& model, const CompressOptions& options,
                                      const std::string& metadata_json = "{}");

}  // namespace sparrow
