// Structured pruning: whole output channels removed from channel groups, and every tensor slice
// that holds them removed through the graph (see prune_channels).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "compress/attention_heads.h"
#include "compress/graph_names.h"
#include "compress/recipe.h"
#include "compress/structured_common.h"
#include "core/finite.h"
#include "sparrow/compress.h"

namespace sparrow {

namespace {

// Which axis of a value holds a layout's channels.
enum class Axis {
  channels,   // axis 1 of a convolution's [N, C, spatial...]
  features,   // axis 1 of a 2-D [N, F] (a Gemm's output): also its last axis
  last,       // the last axis of a MatMul's or an LSTM's output, of any rank
  flattened,  // axis 1 of a flattened [N, C x spatial]: each channel a block of spatial values
};

struct Segment {
  int group = 0;
  int64_t count = 0;
};

// The channels a value holds, in order along its axis (several segments after a Concat).
struct Layout {
  Axis axis = Axis::channels;
  std::vector<Segment> segments;
  int64_t rank = 0;  // the value's rank where it is known (an LSTM's outputs and what follows), else 0
  int64_t channels() const {
    int64_t n = 0;
    for (const Segment& s : segments) n += s.count;
    return n;
  }
};

// What one node's tensors hold of the channels: a producer's own output channels (its weight's
// output axis and bias), the channels of its data input: a reader's weight columns, or a
// follower's per-channel tensors (BatchNormalization's parameters, a depthwise Conv's filters and
// bias, an elementwise op's per-channel constant).
struct Slicing {
  size_t node = 0;
  std::optional<Layout> input;
  std::optional<int> output_group;
  std::vector<std::pair<size_t, int>> per_channel;  // a follower's (input index, axis) to slice
  std::vector<size_t>
      cleared;  // an LSTM's initial-state inputs computed as zeros: dropped (zeros by default)
};

struct Group {
  int parent = 0;
  int64_t count = 0;
  std::vector<size_t> producers;  // node indices
  std::string kept_whole;
};

// An integer attribute (`fallback` when absent), or `malformed` when it is not an integer.
int64_t int_attr(const Node& node, const std::string& key, int64_t fallback, int64_t malformed) {
  auto v = node.attr_int(key, fallback);
  return v.ok() ? *v : malformed;
}

// Each hidden unit's norm over an LSTM's W [dirs, 4H, I] and R [dirs, 4H, H]: its row in every
// gate and direction of both.
std::vector<double> lstm_unit_norms(const Tensor& w, const Tensor& r, StructuredRule::Norm norm) {
  const int64_t hidden = r.shape()[2];
  std::vector<double> sums(static_cast<size_t>(hidden), 0.0);
  for (const Tensor* t : {&w, &r}) {
    const int64_t rows = t->shape()[0] * t->shape()[1], columns = t->shape()[2];
    const float* p = t->f32_data();
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t c = 0; c < columns; ++c) {
        const double v = p[row * columns + c];
        sums[static_cast<size_t>(row % hidden)] += norm == StructuredRule::Norm::l1 ? std::abs(v) : v * v;
      }
  }
  if (norm == StructuredRule::Norm::l2)
    for (double& s : sums) s = std::sqrt(s);
  return sums;
}

// The norm of each of a producer's output channels: its weight's slices along the output axis, or
// an LSTM's hidden units.
std::vector<double> producer_norms(const Model& model, const Node& n, StructuredRule::Norm norm) {
  const Tensor& w = model.initializers.at(n.inputs[1]);
  if (n.op_type == "LSTM") return lstm_unit_norms(w, model.initializers.at(n.inputs[2]), norm);
  return axis_norms(w, output_axis(n), norm);
}

// The positions of the kept units in each of `blocks` consecutive blocks of `size` (an LSTM's
// gates: W's and R's four blocks of rows, B's eight, P's three).
std::vector<int64_t> in_every_block(const std::vector<int64_t>& kept, int64_t size, int64_t blocks) {
  std::vector<int64_t> out;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t k : kept) out.push_back(b * size + k);
  return out;
}

// Ops whose every output the pass follows (others must leave all but their first unused).
const std::set<std::string>& every_output_followed() {
  static const std::set<std::string> ops{"LSTM"};
  return ops;
}

// Ops that keep a value's zeros zeros whatever they keep of it (an initial state built as zeros).
const std::set<std::string>& zero_preserving_ops() {
  static const std::set<std::string> ops{"Slice", "Reshape", "Squeeze", "Unsqueeze", "Expand", "Identity"};
  return ops;
}

const std::set<std::string>& unary_ops() {
  static const std::set<std::string> ops{
      "Relu",      "LeakyRelu", "Sigmoid",  "Tanh", "Clip",    "Elu",      "Selu", "Celu", "HardSigmoid",
      "HardSwish", "Softplus",  "Softsign", "Mish", "Dropout", "Identity", "Neg",  "Abs"};
  return ops;
}
const std::set<std::string>& pooling_ops() {
  static const std::set<std::string> ops{"MaxPool",       "AveragePool",       "LpPool",
                                         "GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool"};
  return ops;
}
const std::set<std::string>& elementwise_ops() {
  static const std::set<std::string> ops{"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"};
  return ops;
}

// Follows channels through a model: which values hold which groups' channels, which groups meet,
// and what each node holds of them.
class ChannelGraph {
 public:
  explicit ChannelGraph(const Model& model) : model_(model), readers_(value_readers(model)) {
    for (size_t i = 0; i < model.nodes.size(); ++i)
      for (const std::string& out : model.nodes[i].outputs) producer_of_[out] = i;
  }

  void trace() {
    for (size_t i = 0; i < model_.nodes.size(); ++i) visit(i);
    for (const ValueInfo& out : model_.outputs)
      if (const Layout* l = layout_of(out.name)) keep_whole(*l, "reaches graph output '" + out.name + "'");
  }

  std::vector<Group>& groups() { return groups_; }
  const std::vector<Slicing>& slicings() const { return slicings_; }
  int root(int g) {
    while (groups_[static_cast<size_t>(g)].parent != g) g = groups_[static_cast<size_t>(g)].parent;
    return g;
  }

 private:
  using Handler = void (ChannelGraph::*)(size_t);

  void visit(size_t i) {
    static const std::map<std::string, Handler> table = [] {
      std::map<std::string, Handler> t{{"Conv", &ChannelGraph::conv},
                                       {"Gemm", &ChannelGraph::fully_connected},
                                       {"MatMul", &ChannelGraph::fully_connected},
                                       {"BatchNormalization", &ChannelGraph::batch_norm},
                                       {"Flatten", &ChannelGraph::flatten},
                                       {"Reshape", &ChannelGraph::flatten},
                                       {"Concat", &ChannelGraph::concat},
                                       {"LSTM", &ChannelGraph::lstm},
                                       {"Squeeze", &ChannelGraph::squeeze},
                                       {"Gather", &ChannelGraph::gather}};
      for (const std::string& op : unary_ops()) t[op] = &ChannelGraph::unary;
      for (const std::string& op : pooling_ops()) t[op] = &ChannelGraph::pooling;
      for (const std::string& op : elementwise_ops()) t[op] = &ChannelGraph::elementwise;
      return t;
    }();
    const Node& n = model_.nodes[i];
    auto it = n.domain.empty() ? table.find(n.op_type) : table.end();
    // A second output (a Dropout mask, MaxPool indices) would change with the channels unseen.
    const bool second_output = !every_output_followed().contains(n.op_type) &&
                               std::any_of(n.outputs.begin() + std::min<size_t>(1, n.outputs.size()),
                                           n.outputs.end(), [](const std::string& o) { return !o.empty(); });
    if (it == table.end() || !n.has_input(0) || n.outputs.empty() || second_output)
      return keep_inputs_whole(n, 0);
    (this->*it->second)(i);
  }

  const Layout* layout_of(const std::string& value) const {
    auto it = layouts_.find(value);
    return it == layouts_.end() ? nullptr : &it->second;
  }

  int new_group(int64_t count, size_t producer) {
    const int g = static_cast<int>(groups_.size());
    groups_.push_back(Group{g, count, {producer}, ""});
    return g;
  }
  void unite(int a, int b) {
    a = root(a), b = root(b);
    if (a == b) return;
    if (b < a) std::swap(a, b);
    Group& into = groups_[static_cast<size_t>(a)];
    Group& from = groups_[static_cast<size_t>(b)];
    from.parent = a;
    into.producers.insert(into.producers.end(), from.producers.begin(), from.producers.end());
    if (into.kept_whole.empty()) into.kept_whole = from.kept_whole;
  }
  void keep_whole(const Layout& l, const std::string& why) {
    for (const Segment& s : l.segments) {
      Group& g = groups_[static_cast<size_t>(root(s.group))];
      if (g.kept_whole.empty()) g.kept_whole = why;
    }
  }
  // Every layout among n's inputs from `first` on reaches an operator that is not followed.
  void keep_inputs_whole(const Node& n, size_t first, const std::string& why = "") {
    for (size_t k = first; k < n.inputs.size(); ++k)
      if (const Layout* l = layout_of(n.inputs[k]))
        keep_whole(*l, why.empty() ? "read by " + n.describe() : why);
  }

  // A float32 initializer, or nullptr.
  const Tensor* float_initializer(const Node& n, size_t k) const {
    if (!n.has_input(k)) return nullptr;
    auto it = model_.initializers.find(n.inputs[k]);
    return it == model_.initializers.end() || it->second.dtype() != DType::f32 ? nullptr : &it->second;
  }
  // Why a producer's channels cannot change: its weight is read by other nodes too (tied weights);
  // empty when it is its own.
  std::string shared_weight(const Node& n) const {
    if (readers_.at(n.inputs[1]) == 1) return "";
    return fmt::format("{} shares its weight '{}' with other nodes", n.describe(), n.inputs[1]);
  }
  // A producer: its own group of `count` channels (kept whole when its weight is shared), reading
  // its input's layout through `columns` weight columns.
  int add_producer(size_t i, int64_t count, int64_t columns, bool blocks) {
    const Node& n = model_.nodes[i];
    const std::string shared = shared_weight(n);
    std::optional<Layout> reads;
    if (shared.empty())
      reads = read_columns(n, columns, blocks);
    else
      keep_inputs_whole(n, 0, shared);
    const int g = new_group(count, i);
    groups_[static_cast<size_t>(g)].kept_whole = shared;
    slicings_.push_back({i, reads, g, {}, {}});
    return g;
  }

  // A producer's bias: absent, or a float32 [count] (or [1, count]) initializer.
  bool bias_slices(const Node& n, size_t k, int64_t count) const {
    if (!n.has_input(k)) return true;
    const Tensor* b = float_initializer(n, k);
    return b != nullptr && b->numel() == count && !b->shape().empty() && b->shape().back() == count;
  }

  // The input layout a reader's weight columns hold, when it fits them (else kept whole).
  std::optional<Layout> read_columns(const Node& n, int64_t columns, bool blocks) {
    const Layout* in = layout_of(n.inputs[0]);
    if (in == nullptr) return std::nullopt;
    const int64_t c = in->channels();
    const bool fits = n.op_type == "Conv" ? in->axis == Axis::channels && c > 0 && columns == c
                                          : in->axis != Axis::channels && c > 0 && columns % c == 0 &&
                                                (columns == c || (blocks && in->axis == Axis::flattened));
    if (fits) return *in;
    keep_whole(*in, "read by " + n.describe() + " in a way this pass does not follow");
    return std::nullopt;
  }

  void conv(size_t i) {
    const Node& n = model_.nodes[i];
    keep_inputs_whole(n, 1);
    const Tensor* w = float_initializer(n, 1);
    const int64_t group = int_attr(n, "group", 1, 0);
    if (w == nullptr || w->shape().size() < 3 || w->numel() == 0 || !bias_slices(n, 2, w->shape()[0]))
      return keep_inputs_whole(n, 0);
    const int64_t m = w->shape()[0], c = w->shape()[1];
    if (group == 1) {
      layouts_[n.outputs[0]] = Layout{Axis::channels, {{add_producer(i, m, c, false), m}}};
      return;
    }
    const Layout* in = layout_of(n.inputs[0]);
    if (group == m && c == 1 && in && in->axis == Axis::channels && in->channels() == m &&
        shared_weight(n).empty()) {  // depthwise
      std::vector<std::pair<size_t, int>> per_channel{{1, 0}};
      if (n.has_input(2))  // [C] or [1, C]: the channels on its last axis
        per_channel.push_back({2, static_cast<int>(model_.initializers.at(n.inputs[2]).shape().size()) - 1});
      slicings_.push_back({i, *in, std::nullopt, per_channel, {}});
      layouts_[n.outputs[0]] = *in;
      return;
    }
    keep_inputs_whole(n, 0);
  }

  void fully_connected(size_t i) {
    const Node& n = model_.nodes[i];
    keep_inputs_whole(n, 1);
    const Tensor* w = float_initializer(n, 1);
    const bool gemm = n.op_type == "Gemm";
    if (w == nullptr || w->shape().size() != 2 || w->numel() == 0 ||
        (gemm && int_attr(n, "transA", 0, 1) != 0))
      return keep_inputs_whole(n, 0);
    const int64_t out = w->shape()[static_cast<size_t>(output_axis(n))];
    const int64_t in = w->shape()[static_cast<size_t>(input_axis(n))];
    if (gemm && n.has_input(2) && !bias_slices(n, 2, out)) {
      const Tensor* b =
          model_.initializers.count(n.inputs[2]) ? &model_.initializers.at(n.inputs[2]) : nullptr;
      if (b == nullptr || b->numel() != 1) return keep_inputs_whole(n, 0);
    }
    layouts_[n.outputs[0]] =
        Layout{gemm ? Axis::features : Axis::last, {{add_producer(i, out, in, true), out}}};
  }

  void batch_norm(size_t i) {
    const Node& n = model_.nodes[i];
    keep_inputs_whole(n, 1);
    const Layout* in = layout_of(n.inputs[0]);
    if (in == nullptr) return;
    bool fits = in->axis == Axis::channels || in->axis == Axis::features;
    for (size_t k = 1; k <= 4; ++k) {
      const Tensor* p = float_initializer(n, k);
      fits = fits && p != nullptr && p->shape().size() == 1 && p->numel() == in->channels();
    }
    if (!fits) return keep_whole(*in, "read by " + n.describe() + " in a way this pass does not follow");
    slicings_.push_back({i, *in, std::nullopt, {{1, 0}, {2, 0}, {3, 0}, {4, 0}}, {}});
    layouts_[n.outputs[0]] = *in;
  }

  void unary(size_t i) {
    const Node& n = model_.nodes[i];
    keep_inputs_whole(n, 1);
    if (const Layout* in = layout_of(n.inputs[0])) layouts_[n.outputs[0]] = *in;
  }

  void pooling(size_t i) {
    const Node& n = model_.nodes[i];
    const Layout* in = layout_of(n.inputs[0]);
    if (in == nullptr) return;
    if (in->axis != Axis::channels) return keep_inputs_whole(n, 0);
    layouts_[n.outputs[0]] = *in;
  }

  // Flatten (axis 1), or a Reshape to [N, -1]: a convolution's channels become blocks of columns.
  void flatten(size_t i) {
    const Node& n = model_.nodes[i];
    const Layout* in = layout_of(n.inputs[0]);
    if (in == nullptr) return keep_inputs_whole(n, 1);
    bool to_rows = false;
    if (n.op_type == "Flatten") {
      to_rows = int_attr(n, "axis", 1, 0) == 1;
    } else if (auto it = model_.initializers.find(n.has_input(1) ? n.inputs[1] : "");
               it != model_.initializers.end()) {
      const Tensor& s = it->second;
      to_rows = s.dtype() == DType::i64 && s.numel() == 2 && s.i64_data()[0] == 0 && s.i64_data()[1] == -1 &&
                int_attr(n, "allowzero", 0, 1) == 0;
    }
    if (!to_rows || (in->axis != Axis::channels && in->axis != Axis::features))
      return keep_inputs_whole(n, 0);
    Layout out = *in;
    if (in->axis == Axis::channels) out.axis = Axis::flattened;
    layouts_[n.outputs[0]] = out;
  }

  void concat(size_t i) {
    const Node& n = model_.nodes[i];
    const int64_t axis = int_attr(n, "axis", 1, 0);
    std::optional<Layout> out;
    bool fits = !n.inputs.empty();
    for (const std::string& v : n.inputs) {
      const Layout* in = layout_of(v);
      fits = fits && in != nullptr && (!out || out->axis == in->axis);
      if (!fits) break;
      if (!out) out = Layout{in->axis, {}};
      out->segments.insert(out->segments.end(), in->segments.begin(), in->segments.end());
    }
    const bool axis_fits = out && ((out->axis == Axis::channels && axis == 1) ||
                                   (out->axis == Axis::features && (axis == 1 || axis == -1)) ||
                                   (out->axis == Axis::last && axis == -1));
    if (!fits || !axis_fits) return keep_inputs_whole(n, 0);
    layouts_[n.outputs[0]] = *out;
  }

  // Whether `value` is all zeros by construction: a ConstantOfShape of zeros, through ops that keep
  // zeros (how exporters build an LSTM's initial state).
  bool built_as_zeros(const std::string& value) const {
    auto it = producer_of_.find(value);
    while (it != producer_of_.end()) {
      const Node& n = model_.nodes[it->second];
      if (n.op_type == "ConstantOfShape") {
        auto v = n.attrs.find("value");
        if (v == n.attrs.end()) return true;  // zeros by default
        const Tensor* t = std::get_if<Tensor>(&v->second);
        return t != nullptr && t->dtype() == DType::f32 && t->numel() == 1 && t->f32_data()[0] == 0.0f;
      }
      if (!zero_preserving_ops().contains(n.op_type) || !n.has_input(0)) return false;
      it = producer_of_.find(n.inputs[0]);
    }
    return false;
  }

  // An LSTM: a producer of its hidden units (W's and R's rows in each gate, R's columns too), read
  // through W's columns; its outputs Y [seq, dirs, batch, H], Y_h and Y_c [dirs, batch, H] hold the
  // units on their last axis. An initial state is sliced when it is a constant, dropped when it is
  // built as zeros (LSTM's default), and keeps the units whole otherwise.
  void lstm(size_t i) {
    const Node& n = model_.nodes[i];
    keep_inputs_whole(n, 1);
    const Tensor* w = float_initializer(n, 1);
    const int64_t hidden = int_attr(n, "hidden_size", 0, 0);
    if (w == nullptr || w->shape().size() != 3 || hidden <= 0) return keep_inputs_whole(n, 0);
    const int64_t dirs = w->shape()[0], inputs = w->shape()[2];
    auto shaped = [&](size_t k, const Shape& shape) {
      const Tensor* t = float_initializer(n, k);
      return t != nullptr && t->shape() == shape;
    };
    const bool fits = w->shape()[1] == 4 * hidden && shaped(2, {dirs, 4 * hidden, hidden}) &&
                      readers_.at(n.inputs[2]) == 1 && int_attr(n, "layout", 0, 1) == 0 &&
                      (!n.has_input(3) || shaped(3, {dirs, 8 * hidden})) &&
                      (!n.has_input(7) || shaped(7, {dirs, 3 * hidden}));
    if (!fits) return keep_inputs_whole(n, 0);
    std::vector<std::pair<size_t, int>> constant_states;
    std::vector<size_t> zero_states;
    std::string computed;
    for (size_t k : {size_t{5}, size_t{6}}) {
      if (!n.has_input(k)) continue;
      const Tensor* state = float_initializer(n, k);
      if (state != nullptr && state->shape().size() == 3 && state->shape()[2] == hidden)
        constant_states.push_back({k, 2});
      else if (built_as_zeros(n.inputs[k]))
        zero_states.push_back(k);
      else
        computed =
            fmt::format("{} starts from '{}', a state this pass does not follow", n.describe(), n.inputs[k]);
    }
    const int g = add_producer(i, hidden, inputs, false);
    Group& group = groups_[static_cast<size_t>(g)];
    if (group.kept_whole.empty()) group.kept_whole = computed;
    slicings_.back().per_channel = constant_states;
    slicings_.back().cleared = zero_states;
    for (size_t k = 0; k < std::min<size_t>(n.outputs.size(), 3); ++k)
      if (!n.outputs[k].empty()) layouts_[n.outputs[k]] = Layout{Axis::last, {{g, hidden}}, k == 0 ? 4 : 3};
  }

  // The constant integers of input k, else of attribute `key`; nullopt when neither is there.
  std::optional<std::vector<int64_t>> constant_ints(const Node& n, size_t k, const std::string& key) const {
    if (n.has_input(k)) {
      auto it = model_.initializers.find(n.inputs[k]);
      if (it == model_.initializers.end() || it->second.dtype() != DType::i64) return std::nullopt;
      return std::vector<int64_t>(it->second.i64_data(), it->second.i64_data() + it->second.numel());
    }
    auto v = n.attr_ints(key);
    if (!v.ok() || n.attrs.count(key) == 0) return std::nullopt;
    return *v;
  }

  // Whether `axis` (negative from the end) of a value of `rank` lies before its last axis.
  static bool before_last(int64_t axis, int64_t rank) {
    if (axis < 0) axis += rank;
    return axis >= 0 && axis < rank - 1;
  }

  // Squeeze of axes before the last (given, as an LSTM's Y is squeezed of its directions): the
  // channels stay on the last axis.
  void squeeze(size_t i) {
    const Node& n = model_.nodes[i];
    const Layout* in = layout_of(n.inputs[0]);
    if (in == nullptr) return keep_inputs_whole(n, 1);
    const auto axes = constant_ints(n, 1, "axes");
    bool fits = in->axis == Axis::last && in->rank > 1 && axes && !axes->empty();
    for (size_t a = 0; fits && a < axes->size(); ++a) fits = before_last((*axes)[a], in->rank);
    if (!fits) return keep_inputs_whole(n, 0);
    Layout out = *in;
    out.rank -= static_cast<int64_t>(axes->size());
    layouts_[n.outputs[0]] = out;
  }

  // Gather of constant indices along an axis before the last (the last time step of an LSTM's
  // outputs): the channels stay on the last axis.
  void gather(size_t i) {
    const Node& n = model_.nodes[i];
    keep_inputs_whole(n, 1);
    const Layout* in = layout_of(n.inputs[0]);
    if (in == nullptr) return;
    auto indices = n.has_input(1) ? model_.initializers.find(n.inputs[1]) : model_.initializers.end();
    const int64_t axis = int_attr(n, "axis", 0, in->rank);
    if (in->axis != Axis::last || in->rank <= 1 || indices == model_.initializers.end() ||
        !before_last(axis, in->rank))
      return keep_inputs_whole(n, 0);
    Layout out = *in;
    out.rank += indices->second.rank() - 1;
    layouts_[n.outputs[0]] = out;
  }

  // A constant operand of an elementwise op on a value of layout `l`: nullopt if it does not fit,
  // else the (input index, axis) to slice, or none for a scalar. A scalar has at most one
  // dimension; a per-channel constant is taken along a last axis only, as [C] (or [1, C] on a 2-D
  // value): neither can raise the value's rank, so the channels' axis stays where it was.
  std::optional<std::vector<std::pair<size_t, int>>> constant_operand(const Node& n, size_t k,
                                                                      const Layout& l) const {
    auto c = model_.initializers.find(n.inputs[k]);
    if (c == model_.initializers.end()) return std::nullopt;
    const Tensor& t = c->second;
    const size_t rank = t.shape().size();
    if (t.numel() == 1 && rank <= 1) return std::vector<std::pair<size_t, int>>{};
    const bool fits =
        (l.axis == Axis::last && rank == 1) || (l.axis == Axis::features && rank >= 1 && rank <= 2);
    if (!fits || float_initializer(n, k) == nullptr || t.shape().back() != l.channels() ||
        t.numel() != l.channels())
      return std::nullopt;
    return std::vector<std::pair<size_t, int>>{{k, static_cast<int>(rank) - 1}};
  }

  // Elementwise ops on values holding the same channels (a residual Add) join their groups; a
  // scalar constant operand leaves the channels as they are, a per-channel one follows them.
  void elementwise(size_t i) {
    const Node& n = model_.nodes[i];
    const Layout* first = nullptr;
    for (const std::string& v : n.inputs)
      if (!first) first = layout_of(v);
    if (first == nullptr) return;
    bool fits = true;
    std::vector<std::pair<size_t, int>> per_channel;
    for (size_t k = 0; k < n.inputs.size() && fits; ++k) {
      const Layout* in = layout_of(n.inputs[k]);
      if (in == nullptr) {
        auto constant = constant_operand(n, k, *first);
        fits = constant.has_value();
        if (fits) per_channel.insert(per_channel.end(), constant->begin(), constant->end());
        continue;
      }
      fits = in->axis == first->axis && in->segments.size() == first->segments.size();
      for (size_t s = 0; fits && s < in->segments.size(); ++s)
        fits = in->segments[s].count == first->segments[s].count;
    }
    if (!fits) return keep_inputs_whole(n, 0);
    for (const std::string& v : n.inputs)
      if (const Layout* in = layout_of(v))
        for (size_t s = 0; s < in->segments.size(); ++s)
          unite(first->segments[s].group, in->segments[s].group);
    if (!per_channel.empty()) slicings_.push_back({i, *first, std::nullopt, per_channel, {}});
    layouts_[n.outputs[0]] = *first;
  }

  const Model& model_;
  std::map<std::string, int> readers_;
  std::map<std::string, size_t> producer_of_;  // value -> the node that computes it
  std::vector<Group> groups_;
  std::map<std::string, Layout> layouts_;
  std::vector<Slicing> slicings_;
};

// The channels a group keeps (ascending): all but the `fraction` with the smallest summed norms
// (each producer's norms over their mean), ties keeping the earlier channel; their count rounded to
// a `multiple` (see prune_channels).
std::vector<int64_t> kept_channels(const Model& model, const Group& g, const StructuredRule& rule,
                                   int64_t multiple) {
  std::vector<int64_t> all(static_cast<size_t>(g.count));
  std::iota(all.begin(), all.end(), 0);
  int64_t remove = std::min<int64_t>(g.count - 1, std::llround(rule.fraction * static_cast<double>(g.count)));
  if (multiple > 1 && g.count > multiple && remove > 0) {
    const int64_t kept = std::clamp<int64_t>(
        multiple * std::llround(static_cast<double>(g.count - remove) / static_cast<double>(multiple)),
        multiple, g.count);
    remove = g.count - kept;
  }
  if (rule.norm == StructuredRule::Norm::none || remove <= 0) return all;
  std::vector<double> score(static_cast<size_t>(g.count), 0.0);
  for (size_t p : g.producers) {
    const Node& n = model.nodes[p];
    std::vector<double> norms = producer_norms(model, n, rule.norm);
    const double mean = std::accumulate(norms.begin(), norms.end(), 0.0) / static_cast<double>(norms.size());
    for (size_t c = 0; c < norms.size(); ++c) score[c] += mean > 0 ? norms[c] / mean : 0.0;
  }
  std::stable_sort(all.begin(), all.end(), [&](int64_t a, int64_t b) {
    return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
  });
  all.resize(static_cast<size_t>(g.count - remove));
  std::sort(all.begin(), all.end());
  return all;
}

// The positions along a value's axis that stay: each segment's kept channels, each channel a block
// of `width` positions.
std::vector<int64_t> kept_positions(const Layout& l, int64_t width,
                                    const std::function<const std::vector<int64_t>&(int)>& kept) {
  std::vector<int64_t> out;
  int64_t offset = 0;
  for (const Segment& s : l.segments) {
    for (int64_t c : kept(s.group))
      for (int64_t k = 0; k < width; ++k) out.push_back((offset + c) * width + k);
    offset += s.count;
  }
  return out;
}

// Slices initializers for the nodes that read them. Weights are sliced only where their node is
// their only reader; a bias or per-channel parameter that several nodes share (an exporter's
// sharing of equal tensors, such as zero biases) is copied for the node whose slice differs.
class Slicer : public InitializerSlicer {
 public:
  using InitializerSlicer::InitializerSlicer;

  // Slices one node's tensors to the kept channels.
  void apply(const Slicing& s, const std::function<const std::vector<int64_t>&(int)>& kept) {
    Node& n = model_.nodes[s.node];
    if (n.op_type == "LSTM") return apply_lstm(s, kept);
    if (!s.per_channel.empty()) {
      const std::vector<int64_t> keep = kept_positions(*s.input, 1, kept);
      for (const auto& [k, axis] : s.per_channel) slice(n, k, axis, keep);
      if (n.op_type == "Conv") n.attrs["group"] = AttrValue(static_cast<int64_t>(keep.size()));
      return;
    }
    if (s.input) {
      const int axis = input_axis(n);
      const int64_t width =
          model_.initializers.at(n.inputs[1]).shape()[static_cast<size_t>(axis)] / s.input->channels();
      slice(n, 1, axis, kept_positions(*s.input, width, kept));
    }
    const std::vector<int64_t>& own = kept(*s.output_group);
    slice(n, 1, output_axis(n), own);
    if (n.has_input(2) && model_.initializers.at(n.inputs[2]).numel() > 1)
      slice(n, 2, static_cast<int>(model_.initializers.at(n.inputs[2]).shape().size()) - 1, own);
  }

 private:
  // An LSTM's tensors to its kept hidden units (see ChannelGraph::lstm), and hidden_size.
  void apply_lstm(const Slicing& s, const std::function<const std::vector<int64_t>&(int)>& kept) {
    Node& n = model_.nodes[s.node];
    const std::vector<int64_t>& own = kept(*s.output_group);
    const int64_t hidden = model_.initializers.at(n.inputs[2]).shape()[2];
    if (s.input) slice(n, 1, 2, kept_positions(*s.input, 1, kept));
    slice(n, 1, 1, in_every_block(own, hidden, 4));
    slice(n, 2, 1, in_every_block(own, hidden, 4));
    slice(n, 2, 2, own);
    if (n.has_input(3)) slice(n, 3, 1, in_every_block(own, hidden, 8));
    if (n.has_input(7)) slice(n, 7, 1, in_every_block(own, hidden, 3));
    for (const auto& [k, axis] : s.per_channel) slice(n, k, axis, own);
    for (size_t k : s.cleared) drop(n, k);
    n.attrs["hidden_size"] = AttrValue(static_cast<int64_t>(own.size()));
  }
};

}  // namespace

Result<StructuredRule> parse_structured_rule(const std::string& text) {
  if (text == "none") return StructuredRule{StructuredRule::Norm::none, 0};
  const size_t eq = text.find('=');
  const std::string key = text.substr(0, eq == std::string::npos ? 0 : eq);
  const std::string value = eq == std::string::npos ? "" : text.substr(eq + 1);
  double fraction = -1;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), fraction);
  if ((key != "l1" && key != "l2") || ec != std::errc() || p != value.data() + value.size())
    return errorf("structured rule '{}': expected l1=FRACTION, l2=FRACTION or none", text);
  if (!(fraction >= 0 && fraction < 1))
    return errorf("structured rule '{}': the fraction of channels removed must be in [0, 1)", text);
  return StructuredRule{key == "l1" ? StructuredRule::Norm::l1 : StructuredRule::Norm::l2, fraction};
}

std::string structured_rule_text(const StructuredRule& rule) {
  if (rule.norm == StructuredRule::Norm::none) return "none";
  return fmt::format("{}={}", rule.norm == StructuredRule::Norm::l1 ? "l1" : "l2", rule.fraction);
}

Result<std::vector<ChannelGroup>> prune_channels(Model& model, const StructuredRule& rule,
                                                 const std::map<std::string, StructuredRule>& per_layer,
                                                 int64_t multiple) {
  if (multiple < 1 || multiple > kMaxChannelMultiple)
    return errorf("channel multiple {} is outside 1..{}", multiple, kMaxChannelMultiple);
  SP_ASSIGN_OR_RETURN(std::vector<ChannelGroup> report, prune_attention_heads(model, rule, per_layer));
  ChannelGraph graph(model);
  graph.trace();
  std::vector<Group>& groups = graph.groups();
  std::map<int, std::vector<int64_t>> kept;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (graph.root(static_cast<int>(g)) != static_cast<int>(g)) continue;
    Group& group = groups[g];
    std::sort(group.producers.begin(), group.producers.end());
    ChannelGroup out{{}, group.count, group.count, group.kept_whole};
    for (size_t p : group.producers) out.producers.push_back(model.nodes[p].name);
    StructuredRule r{StructuredRule::Norm::none, 0};
    if (group.kept_whole.empty()) {
      SP_ASSIGN_OR_RETURN(GroupRule chosen, group_rule(model, group.producers, rule, per_layer));
      r = chosen.rule;
      out.kept_whole = chosen.why_whole();
    }
    for (size_t p : group.producers)
      for (size_t k = 1; k <= (model.nodes[p].op_type == "LSTM" ? 2u : 1u); ++k)
        if (r.norm != StructuredRule::Norm::none && r.fraction > 0)
          SP_RETURN_IF_ERROR(require_finite(
              model.initializers.at(model.nodes[p].inputs[k]).f32_span(),
              fmt::format("layer '{}' (weight '{}')", model.nodes[p].name, model.nodes[p].inputs[k]),
              "; only finite weights can be pruned"));
    kept[static_cast<int>(g)] = kept_channels(model, group, r, multiple);
    out.kept = static_cast<int64_t>(kept[static_cast<int>(g)].size());
    report.push_back(std::move(out));
  }
  auto kept_of = [&](int g) -> const std::vector<int64_t>& { return kept.at(graph.root(g)); };
  Slicer slicer(model);
  for (const Slicing& s : graph.slicings()) slicer.apply(s, kept_of);
  SP_RETURN_IF_ERROR(model.validate().prefixed("after structured pruning"));
  return report;
}

bool CompressOptions::prunes_channels() const {
  const auto any = [](const std::optional<StructuredRule>& r) {
    return r && r->norm != StructuredRule::Norm::none && r->fraction > 0;
  };
  return any(structured) || std::any_of(layers.begin(), layers.end(),
                                        [&](const auto& layer) { return any(layer.second.structured); });
}

Result<std::vector<ChannelGroup>> prune_channel_groups(Model& model, const CompressOptions& options) {
  const StructuredRule none{StructuredRule::Norm::none, 0};
  std::map<std::string, StructuredRule> per_layer;
  for (const auto& [name, s] :
       options.layers)  // an excluded layer keeps its group unless it has its own rule
    if (s.structured || s.exclude) per_layer[name] = s.structured.value_or(none);
  return prune_channels(model, options.structured.value_or(none), per_layer, options.channel_multiple);
}

CompressOptions options_after_channel_pruning(const CompressOptions& options) {
  CompressOptions o = options;
  o.structured.reset();
  o.channel_multiple = 1;
  for (auto& [name, s] : o.layers) s.structured.reset();
  return o;
}

std::string record_channel_groups(const std::string& metadata_json, const std::vector<ChannelGroup>& groups) {
  nlohmann::json list = nlohmann::json::array();
  for (const ChannelGroup& g : groups) {
    nlohmann::json entry = {
        {"producers", g.producers}, {"channels", g.channels}, {"kept", g.kept}, {"kept_whole", g.kept_whole}};
    if (g.head_width > 0) entry["head_width"] = g.head_width;
    list.push_back(std::move(entry));
  }
  return with_metadata(metadata_json, "structured", list);
}

}  // namespace sparrow
