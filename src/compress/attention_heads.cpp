// Attention heads as structured groups (see attention_heads.h).
#include "compress/attention_heads.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <optional>
#include <set>

#include "compress/graph_names.h"
#include "compress/structured_common.h"
#include "core/finite.h"
#include "core/log.h"
#include "sparrow/executor.h"

namespace sparrow {

namespace {

using Ints = std::vector<int64_t>;

// What every open input dimension is set to in the runs that learn the shapes: two values, so that
// the dimensions that follow them tell themselves apart from those that do not; neither 1, which
// equals too much.
constexpr std::array<int64_t, 2> kProbeBatches = {2, 3};

// One of query, key and value: the path from its projection to the attention's product.
struct Branch {
  size_t projection = 0;        // MatMul or Gemm on a constant weight
  std::optional<size_t> bias;   // an Add of a constant after a MatMul projection
  std::optional<size_t> slice;  // the Slice that takes it from a fused projection's output
  size_t split = 0;             // the Reshape that parts its channels into heads
  std::vector<size_t> moves;    // the Transposes from the split to the product, in order
  int64_t segment = 0;          // which block of heads x width channels of the projection
  Ints split_shape;             // the split's new shape (0: copied, -1: the heads)
};

struct Block {
  std::array<Branch, 3> branch;  // query, key, value
  size_t scores = 0, softmax = 0, mix = 0, merge = 0, output = 0;
  std::optional<size_t> mask;  // the Add of a mask to the scores, with the mask at mask_input
  size_t mask_input = 0;
  std::vector<size_t> moves;     // the Transposes from the product with the value to the merge
  std::set<size_t> nodes;        // every node between the projections
  std::set<std::string> values;  // every value between them: they carry the heads
  int64_t heads = 0, width = 0;
  Ints merge_shape;  // the merge's new shape, its last dimension still the whole block's
  std::string kept_whole;
};

// Finds the attention blocks in a model's graph (structure only: the shapes come later).
class BlockFinder {
 public:
  explicit BlockFinder(const Model& model) : model_(model) {
    for (size_t i = 0; i < model.nodes.size(); ++i) {
      for (const std::string& out : model.nodes[i].outputs) producer_[out] = i;
      for (const std::string& in : model.nodes[i].inputs) readers_[in].push_back(i);
    }
  }

  std::vector<Block> find() const {
    std::vector<Block> blocks;
    for (size_t i = 0; i < model_.nodes.size(); ++i)
      if (model_.nodes[i].op_type == "Softmax" && model_.nodes[i].domain.empty())
        if (auto b = match(i)) blocks.push_back(std::move(*b));
    return blocks;
  }

 private:
  const Node& node(size_t i) const { return model_.nodes[i]; }
  std::optional<size_t> producer(const std::string& v) const {
    auto it = producer_.find(v);
    return it == producer_.end() ? std::nullopt : std::optional<size_t>(it->second);
  }
  bool constant(const std::string& v) const { return model_.initializers.count(v) > 0; }
  // A float32 rank-2 initializer (a projection's weight).
  bool weight(const std::string& v) const {
    auto it = model_.initializers.find(v);
    return it != model_.initializers.end() && it->second.dtype() == DType::f32 && it->second.rank() == 2;
  }
  // The only reader of `v` that is not a Shape (those are checked once the rewrite is known).
  std::optional<size_t> only_reader(const std::string& v) const {
    auto it = readers_.find(v);
    if (it == readers_.end()) return std::nullopt;
    std::optional<size_t> only;
    for (size_t r : it->second) {
      if (node(r).op_type == "Shape") continue;
      if (only) return std::nullopt;
      only = r;
    }
    return only;
  }
  // A Mul by, or a Div by, a scalar constant: the other operand; nullopt for anything else.
  std::optional<std::string> through_scalar(const Node& n) const {
    if ((n.op_type != "Mul" && n.op_type != "Div") || n.inputs.size() != 2) return std::nullopt;
    auto scalar = [&](const std::string& v) {
      auto it = model_.initializers.find(v);
      return it != model_.initializers.end() && it->second.numel() == 1 && it->second.rank() <= 1;
    };
    if (scalar(n.inputs[1])) return n.inputs[0];
    if (n.op_type == "Mul" && scalar(n.inputs[0])) return n.inputs[1];
    return std::nullopt;
  }
  // A Reshape whose shape is an input (opset 5 on), as the rewrite replaces it.
  static bool two_input_reshape(const Node& n) {
    return n.op_type == "Reshape" && n.inputs.size() == 2 && n.has_input(0) && n.has_input(1);
  }
  // A projection reading `v` at input 0: MatMul or Gemm (not transposing A) on a weight.
  bool projection(const Node& n) const {
    if (n.op_type == "Gemm") {
      auto trans_a = n.attr_int("transA", 0);
      if (!trans_a.ok() || *trans_a != 0) return false;
    } else if (n.op_type != "MatMul") {
      return false;
    }
    return n.inputs.size() >= 2 && !constant(n.inputs[0]) && weight(n.inputs[1]);
  }

  std::optional<Block> match(size_t softmax) const {
    Block b;
    b.softmax = softmax;
    b.nodes.insert(softmax);
    const Node& sm = node(softmax);
    if (!sm.has_input(0) || sm.outputs.size() != 1 || !walk_scores(sm.inputs[0], b) || !walk_mix(b))
      return std::nullopt;
    const std::array<std::string, 3> ends = {node(b.scores).inputs[0], node(b.scores).inputs[1],
                                             node(b.mix).inputs[1]};
    for (size_t k = 0; k < 3; ++k) {
      auto branch = walk_branch(ends[k], b);
      if (!branch) return std::nullopt;
      b.branch[k] = std::move(*branch);
    }
    // Fused: one projection that three Slices part; else three projections of their own.
    const bool fused = b.branch[0].slice.has_value();
    std::set<size_t> projections;
    for (const Branch& br : b.branch) {
      if (br.slice.has_value() != fused) return std::nullopt;
      projections.insert(br.projection);
    }
    if (projections.size() != (fused ? 1u : 3u)) return std::nullopt;
    return b;
  }

  // Back from the Softmax's input to the MatMul of two computed values (the scores), through
  // scalar scales and one Add of a mask (either operand).
  bool walk_scores(const std::string& v, Block& b) const {
    auto p = producer(v);
    if (!p) return false;
    const Node& n = node(*p);
    b.values.insert(v);
    if (n.op_type == "MatMul" && n.inputs.size() == 2 && !constant(n.inputs[0]) && !constant(n.inputs[1])) {
      b.scores = *p;
      b.nodes.insert(*p);
      return true;
    }
    if (auto in = through_scalar(n)) {
      b.nodes.insert(*p);
      return walk_scores(*in, b);
    }
    if (n.op_type != "Add" || n.inputs.size() != 2 || b.mask) return false;
    for (size_t k = 0; k < 2; ++k) {
      Block tried = b;
      tried.mask = *p;
      tried.mask_input = 1 - k;
      tried.nodes.insert(*p);
      if (walk_scores(n.inputs[k], tried)) {
        b = std::move(tried);
        return true;
      }
    }
    return false;
  }

  // From the Softmax's output (through Dropout, Identity or Cast) to the MatMul with the value's
  // heads, then through Transposes to the Reshape that joins the heads and the projection after it.
  bool walk_mix(Block& b) const {
    std::string v = node(b.softmax).outputs[0];
    for (;;) {
      b.values.insert(v);
      auto r = only_reader(v);
      if (!r) return false;
      const Node& n = node(*r);
      b.nodes.insert(*r);
      const bool one_output =
          std::all_of(n.outputs.begin() + 1, n.outputs.end(), [](const std::string& o) { return o.empty(); });
      if (n.outputs.empty()) return false;
      if ((n.op_type == "Dropout" || n.op_type == "Identity" || n.op_type == "Cast") && one_output &&
          n.inputs[0] == v) {
        v = n.outputs[0];
        continue;
      }
      if (n.op_type != "MatMul" || n.inputs.size() != 2 || n.inputs[0] != v || constant(n.inputs[1]))
        return false;
      b.mix = *r;
      break;
    }
    v = node(b.mix).outputs[0];
    for (;;) {
      b.values.insert(v);
      auto r = only_reader(v);
      if (!r) return false;
      const Node& n = node(*r);
      if (n.op_type == "Transpose") {
        b.nodes.insert(*r);
        b.moves.push_back(*r);
        v = n.outputs[0];
        continue;
      }
      if (!two_input_reshape(n) || n.inputs[0] != v) return false;
      b.merge = *r;
      b.nodes.insert(*r);
      break;
    }
    v = node(b.merge).outputs[0];
    b.values.insert(v);
    auto r = only_reader(v);
    if (!r || !projection(node(*r)) || node(*r).inputs[0] != v) return false;
    b.output = *r;
    return true;
  }

  // Back from a product's input to a projection: Transposes and scalar scales, the Reshape that
  // parts the channels into heads; then scalar scales, a Slice of a fused output and a bias Add.
  std::optional<Branch> walk_branch(std::string v, Block& b) const {
    Branch br;
    bool split = false;
    for (;;) {
      b.values.insert(v);
      auto p = producer(v);
      if (!p || !node(*p).has_input(0)) return std::nullopt;
      const Node& n = node(*p);
      if (auto in = through_scalar(n)) {
        b.nodes.insert(*p);
        v = *in;
        continue;
      }
      if (!split && n.op_type == "Transpose") {
        b.nodes.insert(*p);
        br.moves.insert(br.moves.begin(), *p);
        v = n.inputs[0];
        continue;
      }
      if (!split && two_input_reshape(n)) {
        br.split = *p;
        split = true;
        b.nodes.insert(*p);
        v = n.inputs[0];
        continue;
      }
      if (!split) return std::nullopt;
      if (n.op_type == "Slice" && !br.slice && !br.bias) {
        br.slice = *p;
        b.nodes.insert(*p);
        v = n.inputs[0];
        continue;
      }
      if (n.op_type == "Add" && n.inputs.size() == 2 && !br.bias) {
        const size_t k = constant(n.inputs[1]) ? 1 : 0;
        if (!constant(n.inputs[k]) || constant(n.inputs[1 - k])) return std::nullopt;
        br.bias = *p;
        b.nodes.insert(*p);
        v = n.inputs[1 - k];
        continue;
      }
      if (!projection(n)) return std::nullopt;
      br.projection = *p;
      return br;
    }
  }

  const Model& model_;
  std::map<std::string, size_t> producer_;
  std::map<std::string, std::vector<size_t>> readers_;
};

// What runs of the model at kProbeBatches showed: value shapes, and the integers of int64 values.
struct Seen {
  std::array<std::map<std::string, Shape>, 2> shapes;
  std::array<std::map<std::string, Ints>, 2> ints;

  const Shape* shape(size_t run, const std::string& name) const {
    auto it = shapes[run].find(name);
    return it == shapes[run].end() ? nullptr : &it->second;
  }
  const Ints* values(size_t run, const std::string& name) const {
    auto it = ints[run].find(name);
    return it == ints[run].end() ? nullptr : &it->second;
  }
};

// Runs the model on zeros at each probe batch (every dimension the inputs leave open takes it),
// keeping the shapes of `shaped` and the contents of `counted` where they are int64 (shapes, slice
// bounds); a value the run does not keep is left out, and the block that wanted it stays whole.
Result<Seen> probe(const Model& model, const std::set<std::string>& shaped,
                   const std::set<std::string>& counted) {
  ExecOptions options;
  options.threads = 1;
  options.keep_values = true;
  SP_ASSIGN_OR_RETURN(std::unique_ptr<Executor> ex, Executor::create(model, options));
  Seen seen;
  for (size_t b = 0; b < kProbeBatches.size(); ++b) {
    SP_ASSIGN_OR_RETURN(std::vector<Shape> shapes, ex->default_input_shapes(kProbeBatches[b]));
    std::vector<Tensor> inputs;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::optional<DType> dtype = compute_dtype(model.inputs[i].elem_type);
      if (!dtype) return errorf("input '{}' is of a type the model cannot be run on", model.inputs[i].name);
      inputs.emplace_back(*dtype, shapes[i]);
    }
    SP_RETURN_IF_ERROR(ex->run(inputs).status());
    for (const std::string& name : shaped)
      if (const Tensor* t = ex->value(name)) seen.shapes[b][name] = t->shape();
    for (const std::string& name : counted) {
      auto init = model.initializers.find(name);
      const Tensor* t = init != model.initializers.end() ? &init->second : ex->value(name);
      if (t != nullptr && t->dtype() == DType::i64)
        seen.ints[b][name] = Ints(t->i64_data(), t->i64_data() + t->numel());
    }
  }
  return seen;
}

// The values a block's shapes are learnt from.
void wanted(const Model& model, const Block& b, std::set<std::string>& shaped,
            std::set<std::string>& counted) {
  const auto& nodes = model.nodes;
  shaped.insert({nodes[b.scores].inputs[0], nodes[b.mix].inputs[1], nodes[b.softmax].inputs[0],
                 nodes[b.merge].inputs[0], nodes[b.merge].outputs[0]});
  if (b.mask) shaped.insert(nodes[*b.mask].inputs[b.mask_input]);
  for (const Branch& br : b.branch) {
    shaped.insert({nodes[br.split].inputs[0], nodes[br.split].outputs[0]});
    if (!br.slice) continue;
    const Node& s = nodes[*br.slice];
    shaped.insert(s.inputs[0]);
    for (size_t k = 1; k < s.inputs.size(); ++k)
      if (s.has_input(k)) counted.insert(s.inputs[k]);
  }
}

// Where a value holds the heads and each head's channels: axes counted from the end (-1 the last).
struct HeadAxes {
  int64_t heads = -2, width = -1;
  bool operator==(const HeadAxes&) const = default;
};

// The axes after a Transpose (its perm given); nullopt where the perm does not hold them.
std::optional<HeadAxes> after_transpose(const Node& t, const HeadAxes& a) {
  auto perm = t.attr_ints("perm", Ints{});
  if (!perm.ok() || perm->empty()) return std::nullopt;
  const int64_t rank = static_cast<int64_t>(perm->size());
  auto moved = [&](int64_t from_end) -> std::optional<int64_t> {
    auto it = std::find(perm->begin(), perm->end(), from_end + rank);
    if (from_end + rank < 0 || it == perm->end()) return std::nullopt;
    return (it - perm->begin()) - rank;
  };
  auto heads = moved(a.heads), width = moved(a.width);
  if (!heads || !width) return std::nullopt;
  return HeadAxes{*heads, *width};
}

// The axes after a chain of Transposes.
std::optional<HeadAxes> after_transposes(const Model& model, const std::vector<size_t>& chain, HeadAxes a) {
  for (size_t t : chain) {
    auto next = after_transpose(model.nodes[t], a);
    if (!next) return std::nullopt;
    a = *next;
  }
  return a;
}

// A Reshape's new shape for other head counts: the output's dimensions that equal the input's at
// the same position in both runs are copied (0), one other holds the heads (-1), and the last is
// `last`; with `heads_before_last` (a split), the heads' dimension is the one before the last. nullopt
// where the output is not like that or the new shape would not give it.
std::optional<Ints> reshape_for_heads(const Seen& seen, const Node& reshape, int64_t in_last,
                                      int64_t out_last, bool heads_before_last) {
  auto allow_zero = reshape.attr_int("allowzero", 0);
  const Shape* in0 = seen.shape(0, reshape.inputs[0]);
  const Shape* out0 = seen.shape(0, reshape.outputs[0]);
  if (!allow_zero.ok() || *allow_zero != 0 || !in0 || !out0 || in0->empty() || out0->empty() ||
      in0->back() != in_last || out0->back() != out_last)
    return std::nullopt;
  Ints shape(out0->size(), -1);
  shape.back() = out_last;
  int heads_dims = 0;
  for (size_t d = 0; d + 1 < out0->size(); ++d) {
    bool copied = true;
    for (size_t b = 0; b < 2 && copied; ++b) {
      const Shape* in = seen.shape(b, reshape.inputs[0]);
      const Shape* out = seen.shape(b, reshape.outputs[0]);
      copied = in && out && d < in->size() && (*in)[d] == (*out)[d];
    }
    shape[d] = copied ? 0 : -1;
    heads_dims += copied ? 0 : 1;
  }
  if (heads_dims > 1 || (heads_before_last && (shape.size() < 2 || shape[shape.size() - 2] != -1)))
    return std::nullopt;
  for (size_t b = 0; b < 2; ++b) {  // the new shape must give what the old one gave
    const Shape* in = seen.shape(b, reshape.inputs[0]);
    const Shape* out = seen.shape(b, reshape.outputs[0]);
    if (!in || !out) return std::nullopt;
    int64_t known = 1;
    Shape got(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) {
      got[d] = shape[d] == 0 ? (*in)[d] : shape[d];
      if (shape[d] != -1) known *= got[d];
    }
    for (int64_t& d : got)
      if (d == -1) d = known > 0 ? shape_numel(*in) / known : -1;
    if (got != *out) return std::nullopt;
  }
  return shape;
}

// Which block of `channels` a Slice takes from its input's last axis, or nullopt where it takes
// anything else.
std::optional<int64_t> slice_segment(const Seen& seen, const Node& slice, int64_t channels) {
  const Shape* in = seen.shape(0, slice.inputs[0]);
  auto ints = [&](size_t k) -> std::optional<Ints> {
    if (!slice.has_input(k)) return Ints{};
    const Ints* v = seen.values(0, slice.inputs[k]);
    return v ? std::optional<Ints>(*v) : std::nullopt;
  };
  const auto starts = ints(1), ends = ints(2), axes = ints(3), steps = ints(4);
  if (!in || in->empty() || !starts || !ends || !axes || !steps) return std::nullopt;
  const int64_t rank = static_cast<int64_t>(in->size());
  const bool on_last = *axes == Ints{-1} || *axes == Ints{rank - 1} || (axes->empty() && rank == 1);
  if (starts->size() != 1 || ends->size() != 1 || !on_last || (!steps->empty() && *steps != Ints{1}))
    return std::nullopt;
  const int64_t dim = in->back();
  auto clamp = [&](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + dim : i, 0, dim); };
  const int64_t start = clamp(starts->front()), end = clamp(ends->front());
  if (end - start != channels || start % channels != 0) return std::nullopt;
  return start / channels;
}

// Whether the heads' axes meet as attention needs them: the query's and value's heads on one batch
// axis with their channels last, the key's on the same axis with its channels before the last (it
// is transposed); the mask 1 on that axis; the product with the value's heads, moved by the
// Transposes after it, holds the heads just before their channels, as the merge joins them.
std::string check_axes(const Model& model, const Seen& seen, const Block& b) {
  const std::string moved = "its Transposes do not keep the heads on one batch axis";
  std::array<std::optional<HeadAxes>, 3> at;
  for (size_t k = 0; k < 3; ++k) at[k] = after_transposes(model, b.branch[k].moves, HeadAxes{});
  if (!at[0] || !at[1] || !at[2]) return moved;
  const int64_t heads = at[0]->heads;
  if (heads > -3 || !(*at[0] == HeadAxes{heads, -1}) || !(*at[1] == HeadAxes{heads, -2}) ||
      !(*at[2] == HeadAxes{heads, -1}))
    return moved;
  if (b.mask) {
    const Shape* mask = seen.shape(0, model.nodes[*b.mask].inputs[b.mask_input]);
    if (!mask) return "its mask's shape is unknown";
    const int64_t rank = static_cast<int64_t>(mask->size());
    if (rank + heads >= 0 && (*mask)[static_cast<size_t>(rank + heads)] != 1)
      return "its mask varies by head";
  }
  auto joined = after_transposes(model, b.moves, HeadAxes{heads, -1});
  if (!joined || !(*joined == HeadAxes{-2, -1}))
    return "its heads do not reach the merge just before their channels";
  return "";
}

// Learns a block's heads and its new shapes from the runs; empty, or why the block stays whole.
std::string shape_block(const Model& model, const Seen& seen, Block& b) {
  const auto& nodes = model.nodes;
  const std::string not_followed = "its shapes are not those of heads parted and joined by Reshapes";
  const Shape* q = seen.shape(0, nodes[b.scores].inputs[0]);
  const Shape* v = seen.shape(0, nodes[b.mix].inputs[1]);
  const Shape* joined = seen.shape(0, nodes[b.merge].outputs[0]);
  const Shape* scores = seen.shape(0, nodes[b.softmax].inputs[0]);
  if (!q || !v || !joined || !scores || q->empty() || v->empty() || joined->empty() ||
      q->back() != v->back() || q->back() <= 0 || joined->back() % q->back() != 0)
    return not_followed;
  b.width = q->back();
  b.heads = joined->back() / b.width;
  const int64_t channels = joined->back();
  if (b.heads < 2) return "it has one head";
  auto axis = nodes[b.softmax].attr_int("axis", model.opset >= 13 ? -1 : 1);
  const int64_t rank = static_cast<int64_t>(scores->size());
  if (!axis.ok() || (*axis != -1 && *axis != rank - 1)) return "its Softmax is not over the last axis";
  if (std::string why = check_axes(model, seen, b); !why.empty()) return why;
  for (Branch& br : b.branch) {
    const Node& p = nodes[br.projection];
    const int64_t outputs = model.initializers.at(p.inputs[1]).dim(output_axis(p));
    if (outputs != (br.slice ? 3 : 1) * channels)
      return fmt::format("{} has {} outputs, not {} x {} heads of {}", p.describe(), outputs,
                         br.slice ? 3 : 1, b.heads, b.width);
    auto split = reshape_for_heads(seen, nodes[br.split], channels, b.width, true);
    if (!split) return not_followed;
    br.split_shape = *split;
    if (br.slice) {
      auto segment = slice_segment(seen, nodes[*br.slice], channels);
      if (!segment) return "its query, key and value are not equal blocks of one projection's outputs";
      br.segment = *segment;
    }
  }
  auto merge = reshape_for_heads(seen, nodes[b.merge], b.width, channels, false);
  if (!merge) return not_followed;
  b.merge_shape = *merge;
  std::set<int64_t> segments;
  for (const Branch& br : b.branch) segments.insert(br.segment);
  if (b.branch[0].slice && segments.size() != 3)
    return "its query, key and value are not three blocks of one projection's outputs";
  return "";
}

// The inputs a block's rewrite gives constants (Reshape shapes, Slice bounds): they stop reading
// what computed them.
std::set<std::pair<size_t, size_t>> replaced_inputs(const Model& model, const Block& b) {
  std::set<std::pair<size_t, size_t>> out{{b.merge, 1}};
  for (const Branch& br : b.branch) {
    out.insert({br.split, 1});
    if (br.slice)
      for (size_t k = 1; k < model.nodes[*br.slice].inputs.size(); ++k) out.insert({*br.slice, k});
  }
  return out;
}

// The nodes whose outputs reach a graph output when the inputs in `ignored` are not read.
std::vector<bool> live_nodes(const Model& model, const std::set<std::pair<size_t, size_t>>& ignored) {
  std::set<std::string> needed;
  for (const ValueInfo& out : model.outputs) needed.insert(out.name);
  std::vector<bool> live(model.nodes.size(), false);
  for (size_t i = model.nodes.size(); i-- > 0;) {
    const Node& n = model.nodes[i];
    live[i] = std::any_of(n.outputs.begin(), n.outputs.end(),
                          [&](const std::string& o) { return needed.count(o); });
    if (!live[i]) continue;
    for (size_t k = 0; k < n.inputs.size(); ++k)
      if (n.has_input(k) && !ignored.count({i, k})) needed.insert(n.inputs[k]);
  }
  return live;
}

// Why a block cannot lose heads whatever its rule (a value read outside it, a shared weight), or "".
std::string outside_readers(const Model& model, const Block& b, const std::map<std::string, int>& readers) {
  const std::vector<bool> live = live_nodes(model, replaced_inputs(model, b));
  std::set<size_t> inside = b.nodes;
  for (const Branch& br : b.branch) inside.insert(br.projection);
  inside.insert(b.output);
  for (size_t i = 0; i < model.nodes.size(); ++i) {
    if (!live[i] || inside.count(i)) continue;
    for (const std::string& in : model.nodes[i].inputs)
      if (b.values.count(in))
        return fmt::format("'{}' between its projections is read by {}", in, model.nodes[i].describe());
  }
  for (const ValueInfo& out : model.outputs)
    if (b.values.count(out.name))
      return fmt::format("'{}' between its projections is a graph output", out.name);
  for (size_t p : inside) {
    const Node& n = model.nodes[p];
    if (b.nodes.count(p) || readers.at(n.inputs[1]) == 1) continue;
    return fmt::format("{} shares its weight '{}' with other nodes", n.describe(), n.inputs[1]);
  }
  return "";
}

// The distinct query, key and value projections, in graph order.
std::vector<size_t> projections(const Block& b) {
  std::set<size_t> p;
  for (const Branch& br : b.branch) p.insert(br.projection);
  return {p.begin(), p.end()};
}

// The channel positions of `kept` heads of `width` within block `segment` of heads x width.
Ints head_positions(const Ints& kept, int64_t heads, int64_t width, int64_t segment) {
  Ints out;
  for (int64_t h : kept)
    for (int64_t d = 0; d < width; ++d) out.push_back((segment * heads + h) * width + d);
  return out;
}

// Each head's norm over a weight's positions along `axis` (blocks of `width` from `offset`).
std::vector<double> head_norms(const Tensor& w, int axis, int64_t offset, int64_t heads, int64_t width,
                               StructuredRule::Norm norm) {
  const std::vector<double> per_position = axis_norms(w, axis, norm);
  std::vector<double> out(static_cast<size_t>(heads), 0.0);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t d = 0; d < width; ++d) {
      const double n = per_position[static_cast<size_t>(offset + h * width + d)];
      out[static_cast<size_t>(h)] += norm == StructuredRule::Norm::l1 ? n : n * n;
    }
    if (norm == StructuredRule::Norm::l2)
      out[static_cast<size_t>(h)] = std::sqrt(out[static_cast<size_t>(h)]);
  }
  return out;
}

// The heads a block keeps (ascending): all but the rule's fraction with the smallest scores, at
// least one; a head's score sums its norm over each part's mean (query, key, value, output).
Ints kept_heads(const Model& model, const Block& b, const StructuredRule& rule) {
  Ints all(static_cast<size_t>(b.heads));
  std::iota(all.begin(), all.end(), 0);
  const int64_t remove =
      std::min<int64_t>(b.heads - 1, std::llround(rule.fraction * static_cast<double>(b.heads)));
  if (rule.norm == StructuredRule::Norm::none || remove <= 0) return all;
  std::vector<double> score(static_cast<size_t>(b.heads), 0.0);
  auto add = [&](const std::vector<double>& norms) {
    const double mean = std::accumulate(norms.begin(), norms.end(), 0.0) / static_cast<double>(norms.size());
    for (size_t h = 0; h < norms.size(); ++h) score[h] += mean > 0 ? norms[h] / mean : 0.0;
  };
  const int64_t channels = b.heads * b.width;
  for (const Branch& br : b.branch) {
    const Node& p = model.nodes[br.projection];
    add(head_norms(model.initializers.at(p.inputs[1]), output_axis(p), br.segment * channels, b.heads,
                   b.width, rule.norm));
  }
  const Node& out = model.nodes[b.output];
  add(head_norms(model.initializers.at(out.inputs[1]), input_axis(out), 0, b.heads, b.width, rule.norm));
  std::stable_sort(all.begin(), all.end(), [&](int64_t x, int64_t y) {
    return score[static_cast<size_t>(x)] > score[static_cast<size_t>(y)];
  });
  all.resize(static_cast<size_t>(b.heads - remove));
  std::sort(all.begin(), all.end());
  return all;
}

// Removes the heads a block does not keep: projections' rows and biases, the output projection's
// columns, and constant shapes and bounds for the Reshapes and Slices between them.
void remove_heads(Model& model, const Block& b, const Ints& kept, InitializerSlicer& slicer) {
  const int64_t channels_kept = static_cast<int64_t>(kept.size()) * b.width;
  Ints rows;  // of each projection, in the order of its segments
  for (size_t p : projections(b)) {
    rows.clear();
    std::vector<int64_t> segments;
    for (const Branch& br : b.branch)
      if (br.projection == p) segments.push_back(br.segment);
    std::sort(segments.begin(), segments.end());
    for (int64_t s : segments) {
      const Ints part = head_positions(kept, b.heads, b.width, s);
      rows.insert(rows.end(), part.begin(), part.end());
    }
    Node& n = model.nodes[p];
    slicer.slice(n, 1, output_axis(n), rows);
    if (n.has_input(2) && model.initializers.at(n.inputs[2]).numel() > 1)
      slicer.slice(n, 2, model.initializers.at(n.inputs[2]).rank() - 1, rows);
    for (const Branch& br : b.branch) {
      if (br.projection != p || !br.bias) continue;
      Node& add = model.nodes[*br.bias];
      const size_t k = model.initializers.count(add.inputs[1]) ? 1 : 0;
      slicer.slice(add, k, model.initializers.at(add.inputs[k]).rank() - 1, rows);
      break;  // a fused projection's bias Add is shared by its three branches
    }
  }
  for (const Branch& br : b.branch) {
    slicer.set_ints(model.nodes[br.split], 1, br.split_shape);
    if (!br.slice) continue;
    Node& s = model.nodes[*br.slice];
    slicer.set_ints(s, 1, {br.segment * channels_kept});
    slicer.set_ints(s, 2, {(br.segment + 1) * channels_kept});
    slicer.set_ints(s, 3, {-1});
    if (s.has_input(4)) slicer.drop(s, 4);
  }
  Ints merge = b.merge_shape;
  merge.back() = channels_kept;
  slicer.set_ints(model.nodes[b.merge], 1, merge);
  Node& out = model.nodes[b.output];
  slicer.slice(out, 1, input_axis(out), head_positions(kept, b.heads, b.width, 0));
}

// A bias Add must hold one entry per projection output (as [C] or [1, C]); Gemm's may be a scalar.
bool biases_fit(const Model& model, const Block& b) {
  for (const Branch& br : b.branch) {
    const Node& p = model.nodes[br.projection];
    const int64_t outputs = model.initializers.at(p.inputs[1]).dim(output_axis(p));
    auto fits = [&](const std::string& name, bool scalar_allowed) {
      const Tensor& t = model.initializers.at(name);
      return t.dtype() == DType::f32 &&
             ((scalar_allowed && t.numel() == 1) ||
              (t.numel() == outputs && t.rank() >= 1 && t.shape().back() == outputs));
    };
    if (p.op_type == "Gemm" && p.has_input(2) &&
        (!model.initializers.count(p.inputs[2]) || !fits(p.inputs[2], true)))
      return false;
    if (br.bias) {
      const Node& add = model.nodes[*br.bias];
      if (!fits(add.inputs[model.initializers.count(add.inputs[1]) ? 1 : 0], false)) return false;
    }
  }
  return true;
}

// Drops the nodes no graph output needs after the rewrite (the shape computations only the replaced
// inputs read, and any that were unread before: they would see the new shapes), and the
// initializers only they read.
void drop_orphans(Model& model, const std::map<std::string, int>& read_before) {
  const std::vector<bool> live = live_nodes(model, {});
  std::vector<Node> kept;
  for (size_t i = 0; i < model.nodes.size(); ++i)
    if (live[i]) kept.push_back(std::move(model.nodes[i]));
  model.nodes = std::move(kept);
  const std::map<std::string, int> readers = value_readers(model);
  for (auto it = model.initializers.begin(); it != model.initializers.end();)
    it = readers.count(it->first) || !read_before.count(it->first) ? std::next(it)
                                                                   : model.initializers.erase(it);
}

}  // namespace

Result<std::vector<ChannelGroup>> prune_attention_heads(
    Model& model, const StructuredRule& rule, const std::map<std::string, StructuredRule>& per_layer) {
  std::vector<Block> blocks = BlockFinder(model).find();
  if (blocks.empty()) return std::vector<ChannelGroup>{};
  std::set<std::string> shaped, counted;
  for (const Block& b : blocks) wanted(model, b, shaped, counted);
  Result<Seen> seen = probe(model, shaped, counted);
  if (!seen.ok()) {
    log(LogLevel::warn,
        "{}: {} attention block(s) keep their heads: the model could not be run to learn its shapes: {}",
        model.source, blocks.size(), seen.status().message());
    return std::vector<ChannelGroup>{};
  }
  const std::map<std::string, int> readers = value_readers(model);
  std::vector<ChannelGroup> report;
  std::vector<Ints> kept(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    Block& b = blocks[i];
    ChannelGroup g;
    for (size_t p : projections(b)) g.producers.push_back(model.nodes[p].name);
    b.kept_whole = shape_block(model, *seen, b);
    if (b.kept_whole.empty() && !biases_fit(model, b))
      b.kept_whole = "a projection's bias is not one per output";
    if (b.kept_whole.empty()) b.kept_whole = outside_readers(model, b, readers);
    StructuredRule r{StructuredRule::Norm::none, 0};
    if (b.kept_whole.empty()) {
      SP_ASSIGN_OR_RETURN(GroupRule chosen, group_rule(model, projections(b), rule, per_layer));
      r = chosen.rule;
      b.kept_whole = chosen.why_whole();
    }
    if (r.norm != StructuredRule::Norm::none && r.fraction > 0) {
      std::vector<size_t> weighted = projections(b);
      weighted.push_back(b.output);
      for (size_t p : weighted)
        SP_RETURN_IF_ERROR(require_finite(
            model.initializers.at(model.nodes[p].inputs[1]).f32_span(),
            fmt::format("layer '{}' (weight '{}')", model.nodes[p].name, model.nodes[p].inputs[1]),
            "; only finite weights can be pruned"));
    }
    kept[i] = b.kept_whole.empty() ? kept_heads(model, b, r) : Ints{};
    g.channels = b.heads;
    g.kept = b.kept_whole.empty() ? static_cast<int64_t>(kept[i].size()) : b.heads;
    g.head_width = b.width;
    g.kept_whole = b.kept_whole;
    report.push_back(std::move(g));
  }
  InitializerSlicer slicer(model);
  bool changed = false;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!blocks[i].kept_whole.empty() || static_cast<int64_t>(kept[i].size()) == blocks[i].heads) continue;
    remove_heads(model, blocks[i], kept[i], slicer);
    changed = true;
  }
  if (changed) drop_orphans(model, readers);
  SP_RETURN_IF_ERROR(model.validate().prefixed("after removing attention heads"));
  return report;
}

}  // namespace sparrow
