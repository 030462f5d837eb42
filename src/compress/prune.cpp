#include <algorithm>
#include <charconv>
#include <cmath>
#include <iterator>
#include <numeric>
#include <queue>

#include "sparrow/compress.h"

namespace sparrow {

namespace {

double population_std(std::span<const float> w) {
  if (w.empty()) return 0;
  double mean = std::accumulate(w.begin(), w.end(), 0.0) / static_cast<double>(w.size());
  double var = 0;
  for (float v : w) var += (v - mean) * (v - mean);
  return std::sqrt(var / static_cast<double>(w.size()));
}

// Marks the k weights of largest magnitude (the earliest index first among ties).
std::vector<char> top_k_mask(std::span<const float> w, int64_t k) {
  const auto n = static_cast<int64_t>(w.size());
  std::vector<char> keep(w.size(), k >= n ? 1 : 0);
  if (k <= 0 || k >= n) return keep;
  std::vector<float> mags(w.size());
  for (size_t i = 0; i < w.size(); ++i) mags[i] = std::fabs(w[i]);
  std::nth_element(mags.begin(), mags.begin() + (n - k), mags.end());
  const float threshold = mags[static_cast<size_t>(n - k)];  // the k-th largest magnitude
  int64_t above = 0;
  for (float v : w) above += std::fabs(v) > threshold;
  int64_t ties_to_keep = k - above;
  for (size_t i = 0; i < w.size(); ++i) {
    const float m = std::fabs(w[i]);
    if (m > threshold || (m == threshold && ties_to_keep-- > 0)) keep[i] = 1;
  }
  return keep;
}

// Keeps the k weights of largest magnitude (earliest index first among ties).
void keep_top_k(std::span<float> w, int64_t k) {
  if (k >= std::ssize(w)) return;
  const std::vector<char> keep = top_k_mask(w, k);
  for (size_t i = 0; i < w.size(); ++i)
    if (!keep[i]) w[i] = 0.0f;
}

// How many weights the rule keeps over the whole layer (what prune_weights would keep).
int64_t weights_to_keep(std::span<const float> w, const PruneRule& rule) {
  const auto n = static_cast<int64_t>(w.size());
  if (rule.sparsity) return n - static_cast<int64_t>(std::llround(static_cast<double>(n) * *rule.sparsity));
  if (!rule.quality) return n;
  const auto threshold = static_cast<float>(*rule.quality * population_std(w));
  return std::count_if(w.begin(), w.end(), [&](float v) { return !(std::fabs(v) < threshold); });
}

// The matrix row of element i of a tensor seen through `view`.
int64_t row_of(int64_t i, const MatrixView& view) {
  return view.transposed ? i % view.rows : i / view.cols;
}

// The index of element (r, c) of the matrix view in the tensor's values.
int64_t index_of(int64_t r, int64_t c, const MatrixView& view) {
  return view.transposed ? c * view.rows + r : r * view.cols + c;
}

// Keeps whole blocks of `block` over the view, largest L2 norm first (the earliest block among
// ties), until at least `kept` weights are kept; zeroes the rest.
void keep_top_blocks(std::span<float> w, const MatrixView& view, BlockShape block, int64_t kept) {
  const int64_t block_rows = (view.rows + block.rows - 1) / block.rows;
  const int64_t block_cols = (view.cols + block.cols - 1) / block.cols;
  const int64_t blocks = block_rows * block_cols;
  auto for_each_weight = [&](int64_t b, auto&& f) {
    const int64_t r0 = b / block_cols * block.rows, c0 = b % block_cols * block.cols;
    for (int64_t r = r0; r < std::min(view.rows, r0 + block.rows); ++r)
      for (int64_t c = c0; c < std::min(view.cols, c0 + block.cols); ++c) f(index_of(r, c, view));
  };
  std::vector<double> norm(static_cast<size_t>(blocks), 0.0);
  std::vector<int64_t> sizes(static_cast<size_t>(blocks), 0);
  for (int64_t b = 0; b < blocks; ++b)
    for_each_weight(b, [&](int64_t i) {
      const double v = w[static_cast<size_t>(i)];
      norm[static_cast<size_t>(b)] += v * v;
      ++sizes[static_cast<size_t>(b)];
    });
  std::vector<int64_t> order(static_cast<size_t>(blocks));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return norm[static_cast<size_t>(a)] > norm[static_cast<size_t>(b)];
  });
  std::vector<char> keep(static_cast<size_t>(blocks), 0);
  for (int64_t k = 0, held = 0; k < blocks && held < kept; ++k) {
    keep[static_cast<size_t>(order[static_cast<size_t>(k)])] = 1;
    held += sizes[static_cast<size_t>(order[static_cast<size_t>(k)])];
  }
  for (int64_t b = 0; b < blocks; ++b)
    if (!keep[static_cast<size_t>(b)])
      for_each_weight(b, [&](int64_t i) { w[static_cast<size_t>(i)] = 0.0f; });
}

// Rows of each of `partitions` interleaved row partitions (row r in partition r % partitions).
std::vector<int64_t> partition_rows(int64_t rows, int partitions) {
  std::vector<int64_t> counts(static_cast<size_t>(partitions), rows / partitions);
  for (int64_t p = 0; p < rows % partitions; ++p) ++counts[static_cast<size_t>(p)];
  return counts;
}

// How many of the layer's `kept` largest |w| lie in each column (zeros that top_k_mask keeps when
// kept exceeds the non-zeros not counted).
std::vector<int64_t> kept_per_column(std::span<const float> w, const MatrixView& view, int64_t kept) {
  std::vector<int64_t> counts(static_cast<size_t>(view.cols), 0);
  const std::vector<char> keep = top_k_mask(w, kept);
  for (int64_t i = 0; i < std::ssize(w); ++i)
    counts[static_cast<size_t>(view.transposed ? i / view.rows : i % view.cols)] +=
        keep[static_cast<size_t>(i)] && w[static_cast<size_t>(i)] != 0.0f;
  return counts;
}

// |w| of a layer's columns, each into magnitude[0:rows], a NaN as -1 so that it orders below every
// other. A row-major matrix's column is strided, so its columns are read kColumnBlock neighbours
// at a time (64 bytes of each row); the values of a column are those of the layer when its
// block was read.
class ColumnMagnitudes {
 public:
  static constexpr int64_t kColumnBlock = 16;
  ColumnMagnitudes(std::span<const float> w, const MatrixView& view) : w_(w), view_(view) {}
  void read(int64_t c, std::vector<float>& magnitude) {
    if (view_.transposed) {  // [cols, rows]: a column is contiguous
      for (int64_t r = 0; r < view_.rows; ++r) magnitude[static_cast<size_t>(r)] = of(index_of(r, c, view_));
      return;
    }
    if (c < first_ || c >= first_ + width_) load_block(c);
    const float* column = block_.data() + (c - first_) * view_.rows;
    std::copy(column, column + view_.rows, magnitude.begin());
  }

 private:
  float of(int64_t i) const {
    const float m = std::fabs(w_[static_cast<size_t>(i)]);
    return std::isnan(m) ? -1.0f : m;
  }
  void load_block(int64_t c) {
    first_ = c / kColumnBlock * kColumnBlock;
    width_ = std::min(kColumnBlock, view_.cols - first_);
    block_.resize(static_cast<size_t>(width_ * view_.rows));
    for (int64_t r = 0; r < view_.rows; ++r)
      for (int64_t j = 0; j < width_; ++j)
        block_[static_cast<size_t>(j * view_.rows + r)] = of(r * view_.cols + first_ + j);
  }
  std::span<const float> w_;
  MatrixView view_;
  std::vector<float> block_;  // [width_][rows]
  int64_t first_ = 0, width_ = 0;
};

// Orders rows by |w| in `magnitude`, largest first (the earlier row among ties).
auto larger_magnitude(const std::vector<float>& magnitude) {
  return [&magnitude](int64_t a, int64_t b) {
    const float ma = magnitude[static_cast<size_t>(a)], mb = magnitude[static_cast<size_t>(b)];
    return ma > mb || (ma == mb && a < b);
  };
}

// Which rows sort_column_rows lists: all, or those of non-zero numbers (the weights a slice can
// keep; zeros and NaNs never are).
enum class ColumnRows { all, nonzero };

// Column c's rows in each partition, larger_magnitude first; its |w| left in `magnitude`.
void sort_column_rows(ColumnMagnitudes& columns, int64_t c, int partitions, ColumnRows which,
                      std::vector<float>& magnitude, std::vector<std::vector<int64_t>>& rows_by_magnitude) {
  columns.read(c, magnitude);
  const auto rows_in = static_cast<int64_t>(magnitude.size());
  for (size_t p = 0; p < rows_by_magnitude.size(); ++p) {
    std::vector<int64_t>& rows = rows_by_magnitude[p];
    rows.clear();
    for (auto r = static_cast<int64_t>(p); r < rows_in; r += partitions)
      if (which == ColumnRows::all || magnitude[static_cast<size_t>(r)] > 0.0f) rows.push_back(r);
    std::sort(rows.begin(), rows.end(), larger_magnitude(magnitude));
  }
}

// Keeps `kept` weights, each column's share spread over the interleaved row partitions (the
// contract of prune_layer, scope column).
void keep_balanced_columns(std::span<float> w, const MatrixView& view, int partitions, int64_t kept) {
  const std::vector<int64_t> column_counts = kept_per_column(w, view, kept);
  const std::vector<int64_t> capacity = partition_rows(view.rows, partitions);
  const auto parts = static_cast<size_t>(partitions);
  std::vector<int64_t> quota(parts);
  std::vector<size_t> candidates;                                // partitions with room
  std::vector<std::vector<int64_t>> rows_by_magnitude(parts);    // of this column, per partition
  std::vector<float> magnitude(static_cast<size_t>(view.rows));  // of this column's weights
  ColumnMagnitudes columns(w, view);                             // each column read before it is pruned
  for (int64_t c = 0; c < view.cols; ++c) {
    sort_column_rows(columns, c, partitions, ColumnRows::all, magnitude, rows_by_magnitude);
    int64_t count = column_counts[static_cast<size_t>(c)];
    const int64_t share = count / partitions;
    for (size_t p = 0; p < parts; ++p) {
      quota[p] = std::min(share, capacity[p]);
      count -= quota[p];
    }
    // The rest (fewer than `partitions`) one weight each to the partitions with room whose next
    // |w| is largest. Every quota is `share` here, so a partition with room has room for one.
    candidates.clear();
    for (size_t p = 0; p < parts; ++p)
      if (quota[p] < capacity[p]) candidates.push_back(p);
    auto next_larger = [&](size_t p, size_t q) {
      return larger_magnitude(magnitude)(rows_by_magnitude[p][static_cast<size_t>(quota[p])],
                                         rows_by_magnitude[q][static_cast<size_t>(quota[q])]);
    };
    // count <= the column's rows, so at least `count` partitions have room
    count = std::min<int64_t>(count, std::ssize(candidates));
    std::partial_sort(candidates.begin(), candidates.begin() + count, candidates.end(), next_larger);
    for (int64_t k = 0; k < count; ++k) ++quota[candidates[static_cast<size_t>(k)]];
    for (size_t p = 0; p < parts; ++p)
      for (size_t k = static_cast<size_t>(quota[p]); k < rows_by_magnitude[p].size(); ++k)
        w[static_cast<size_t>(index_of(rows_by_magnitude[p][k], c, view))] = 0.0f;
  }
}

// The entries one partition's slice of a column takes in a relative index of `index_bits` bits:
// one per kept row, and a filler for every 2^index_bits zero rows a gap before a kept row holds.
class SliceEntries {
 public:
  explicit SliceEntries(int index_bits) : span_(int64_t{1} << index_bits) {}
  void clear() {
    kept_.clear();
    entries_ = 0;
  }
  // The entries with local row `row` kept too: one more or none when it falls between kept rows
  // (it may split a gap that needed a filler), one more and the fillers of its own gap after them.
  int64_t with(int64_t row) const {
    const auto next = std::lower_bound(kept_.begin(), kept_.end(), row);
    const int64_t before = next == kept_.begin() ? -1 : *std::prev(next);
    int64_t e = entries_ + 1 + fillers(row - before - 1);
    if (next != kept_.end()) e += fillers(*next - row - 1) - fillers(*next - before - 1);
    return e;
  }
  void add(int64_t row) {
    entries_ = with(row);
    kept_.insert(std::lower_bound(kept_.begin(), kept_.end(), row), row);
  }
  int64_t entries() const { return entries_; }

 private:
  int64_t fillers(int64_t gap) const { return gap / span_; }
  int64_t span_;
  std::vector<int64_t> kept_;  // sorted (a slice keeps few rows: a vector beats a tree)
  int64_t entries_ = 0;
};

// Keeps rows of one partition's slice of a column (`rows`: its non-zero rows, largest |w| first,
// as matrix rows), in that order each row whose entries still fit, until the slice takes `entries`
// entries. `kept` says which of `rows` are kept.
void fill_slice(const std::vector<int64_t>& rows, int partitions, int64_t entries, SliceEntries& slice,
                std::vector<char>& kept) {
  kept.assign(rows.size(), 0);
  slice.clear();
  for (size_t k = 0; k < rows.size() && slice.entries() < entries; ++k) {
    const int64_t local = rows[k] / partitions;
    if (slice.with(local) > entries) continue;
    slice.add(local);
    kept[k] = 1;
  }
}

// Fills every partition's slice of a column (`rows_by_magnitude`, as sort_column_rows leaves it)
// to `entries` entries, or to fewer where a partition cannot make them (weights pruned before, far
// rows whose fillers do not fit): then that partition's count sets the column's for all; 0
// entries are always made. Returns the entries each slice takes; `keep` says which rows it keeps.
int64_t fill_column(const std::vector<std::vector<int64_t>>& rows_by_magnitude, int partitions,
                    int64_t entries, SliceEntries& slice, std::vector<std::vector<char>>& keep) {
  for (bool equal = false; !equal;) {
    equal = true;
    for (size_t p = 0; p < rows_by_magnitude.size(); ++p) {
      fill_slice(rows_by_magnitude[p], partitions, entries, slice, keep[p]);
      if (slice.entries() < entries) {
        entries = slice.entries();
        equal = false;
      }
    }
  }
  return entries;
}

// Entries per slice beyond its count's whole multiples of the partitions that the entries scope
// may give a column (fillers, or weights pruned before, can make one more entry keep no more
// weights and a later one more).
constexpr int64_t kMostExtraEntries = 8;
// How many fills that keep more weights each are weighed at a time (few columns take more than
// two; a column that does is weighed further).
constexpr int64_t kLevelsWeighed = 4;

// The weights a column keeps when every partition's slice is filled (fill_column) to `first`,
// first + 1, ... entries: the levels weighed so far, and the level given.
struct ColumnLevels {
  int64_t first = 0;
  std::vector<int64_t> weights;  // [entries - first]
  bool complete = false;         // weighed up to the most entries the column may take
  int64_t at = 0;                // the level given
  // The lowest level (entries beyond `first`) above `level` that keeps more weights, or -1 (none
  // weighed).
  int64_t next_above(int64_t level) const {
    for (auto l = static_cast<size_t>(level) + 1; l < weights.size(); ++l)
      if (weights[l] > weights[static_cast<size_t>(level)]) return static_cast<int64_t>(l);
    return -1;
  }
};

// Keeps about `kept` weights so that every partition's slice of a column takes the same number of
// relative-index entries (the contract of prune_layer, scope entries). The entries go to the
// columns by what magnitude pruning would keep in each: first every column its count's whole
// multiples of the partitions, then, while the layer is more than half a partition's weights below
// `kept`, to the column furthest below its count (the earlier column among equals) the fewest
// entries more that keep more weights in it (at most kMostExtraEntries in all), unless that would
// bring the layer no nearer to `kept`; until no column can keep more. Reads each column twice
// (to weigh its fills, and to prune it) and a few again; holds a few counts per column. One layer
// per object: construct it, then run() once.
class EntriesBalance {
 public:
  EntriesBalance(std::span<float> w, const MatrixView& view, int partitions, int index_bits, int64_t kept)
      : w_(w),
        view_(view),
        partitions_(partitions),
        most_(view.rows / partitions),
        counts_(kept_per_column(w, view, kept)),
        missing_(kept),
        magnitude_(static_cast<size_t>(view.rows)),
        rows_by_magnitude_(static_cast<size_t>(partitions)),
        keep_(static_cast<size_t>(partitions)),
        slice_(index_bits),
        unpruned_(w, view),
        columns_(static_cast<size_t>(view.cols)) {}

  void run() {
    give_whole_multiples();
    give_extra_entries();
    prune();
  }

 private:
  void sort_column(ColumnMagnitudes& columns, int64_t c) {
    sort_column_rows(columns, c, partitions_, ColumnRows::nonzero, magnitude_, rows_by_magnitude_);
  }
  // The weights the column sort_column sorted last keeps at `entries` per slice (keep_ says which).
  int64_t fill(int64_t entries) {
    fill_column(rows_by_magnitude_, partitions_, entries, slice_, keep_);
    int64_t weights = 0;
    for (const std::vector<char>& k : keep_) weights += std::count(k.begin(), k.end(), 1);
    return weights;
  }
  // Weighs kLevelsWeighed more levels of the sorted column that keep more weights, or the rest.
  void weigh(ColumnLevels& levels) {
    const int64_t last = std::min(most_, levels.first + kMostExtraEntries);
    for (int64_t more = 0; !levels.complete && more < kLevelsWeighed;) {
      levels.weights.push_back(fill(levels.first + std::ssize(levels.weights)));
      const size_t n = levels.weights.size();
      more += n > 1 && levels.weights[n - 1] > levels.weights[n - 2];
      levels.complete = levels.first + std::ssize(levels.weights) > last;
    }
  }
  // Queues column c at its level if some level above keeps more weights, weighing more if needed
  // (`sorted`: c is the column sort_column sorted last).
  void queue(int64_t c, bool sorted) {
    ColumnLevels& levels = columns_[static_cast<size_t>(c)];
    if (levels.next_above(levels.at) < 0 && !levels.complete && !sorted) sort_column(unpruned_, c);
    while (levels.next_above(levels.at) < 0 && !levels.complete) weigh(levels);
    if (levels.next_above(levels.at) >= 0)
      below_.push({counts_[static_cast<size_t>(c)] - levels.weights[static_cast<size_t>(levels.at)], -c});
  }
  // Every column its count's whole multiples of the partitions (as many entries as a slice of the
  // fewest rows can hold at most).
  void give_whole_multiples() {
    for (int64_t c = 0; c < view_.cols; ++c) {
      ColumnLevels& levels = columns_[static_cast<size_t>(c)];
      levels.first = std::min(counts_[static_cast<size_t>(c)] / partitions_, most_);
      sort_column(unpruned_, c);
      weigh(levels);
      missing_ -= levels.weights[0];
      queue(c, true);
    }
  }
  // The column furthest below its count the fewest entries more that keep more weights, while the
  // layer is more than half a partition's weights below `kept` and some column can keep more.
  void give_extra_entries() {
    while (2 * missing_ > partitions_ && !below_.empty()) {
      const int64_t c = -below_.top().second;
      below_.pop();
      ColumnLevels& levels = columns_[static_cast<size_t>(c)];
      const int64_t next = levels.next_above(levels.at);
      const int64_t gain =
          levels.weights[static_cast<size_t>(next)] - levels.weights[static_cast<size_t>(levels.at)];
      if (gain >= 2 * missing_) continue;  // it would bring the layer no nearer to `kept`
      missing_ -= gain;
      levels.at = next;
      queue(c, false);
    }
  }
  // Each column filled again at its level, and what its slices do not keep pruned (NaNs too).
  void prune() {
    ColumnMagnitudes pruning(w_, view_);  // each column read before it is pruned
    for (int64_t c = 0; c < view_.cols; ++c) {
      sort_column(pruning, c);
      const ColumnLevels& levels = columns_[static_cast<size_t>(c)];
      fill(levels.first + levels.at);
      for (size_t p = 0; p < keep_.size(); ++p)
        for (size_t k = 0; k < rows_by_magnitude_[p].size(); ++k)
          if (!keep_[p][k]) zero(rows_by_magnitude_[p][k], c);
      for (int64_t r = 0; r < view_.rows; ++r)
        if (magnitude_[static_cast<size_t>(r)] < 0.0f) zero(r, c);
    }
  }
  void zero(int64_t row, int64_t c) { w_[static_cast<size_t>(index_of(row, c, view_))] = 0.0f; }

  std::span<float> w_;
  MatrixView view_;
  int partitions_;
  int64_t most_;                                         // the entries a slice of the fewest rows can hold
  const std::vector<int64_t> counts_;                    // each column's count (kept_per_column)
  int64_t missing_;                                      // weights still to keep
  std::vector<float> magnitude_;                         // of the sorted column's weights
  std::vector<std::vector<int64_t>> rows_by_magnitude_;  // of the sorted column, per partition
  std::vector<std::vector<char>> keep_;                  // which of those its last fill keeps
  SliceEntries slice_;
  ColumnMagnitudes unpruned_;  // read before prune() prunes
  std::vector<ColumnLevels> columns_;
  std::priority_queue<std::pair<int64_t, int64_t>> below_;  // (weights below the count, -column)
};

// Keeps `kept` weights, each partition's total its equal share (the contract of prune_layer,
// scope layer).
void keep_balanced_partitions(std::span<float> w, const MatrixView& view, int partitions, int64_t kept) {
  const int64_t share = kept / partitions, extra = kept % partitions;
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(partitions));
  for (int64_t i = 0; i < std::ssize(w); ++i)
    members[static_cast<size_t>(row_of(i, view) % partitions)].push_back(i);
  std::vector<float> part;
  for (size_t p = 0; p < members.size(); ++p) {
    const std::vector<int64_t>& indices = members[p];
    part.resize(indices.size());
    for (size_t k = 0; k < indices.size(); ++k) part[k] = w[static_cast<size_t>(indices[k])];
    keep_top_k(part, share + (static_cast<int64_t>(p) < extra ? 1 : 0));
    for (size_t k = 0; k < indices.size(); ++k) w[static_cast<size_t>(indices[k])] = part[k];
  }
}

}  // namespace

Result<BalanceScope> parse_balance_scope(std::string_view text) {
  if (text == "layer") return BalanceScope::layer;
  if (text == "column") return BalanceScope::column;
  if (text == "entries") return BalanceScope::entries;
  return errorf("balance_scope '{}': expected layer, column or entries", text);
}

std::string_view balance_scope_text(BalanceScope scope) {
  return scope == BalanceScope::column ? "column" : scope == BalanceScope::entries ? "entries" : "layer";
}

Result<BlockShape> parse_block_shape(std::string_view text) {
  const size_t x = text.find('x');
  BlockShape block;
  auto side = [&](std::string_view part, int& out) {
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), out);
    return ec == std::errc() && p == part.data() + part.size() && out >= 1 && out <= kMaxBlockSide;
  };
  if (x == std::string_view::npos || !side(text.substr(0, x), block.rows) ||
      !side(text.substr(x + 1), block.cols))
    return errorf("block '{}': expected ROWSxCOLS with sides in 1..{}, e.g. 4x1", text, kMaxBlockSide);
  return block;
}

std::string block_shape_text(BlockShape block) {
  return fmt::format("{}x{}", block.rows, block.cols);
}

int64_t prune_weights(std::span<float> w, const PruneRule& rule) {
  if (rule.sparsity) {
    int64_t n = static_cast<int64_t>(w.size());
    keep_top_k(w, n - static_cast<int64_t>(std::llround(static_cast<double>(n) * *rule.sparsity)));
  } else if (rule.quality) {
    float threshold = static_cast<float>(*rule.quality * population_std(w));
    for (float& v : w)
      if (std::fabs(v) < threshold) v = 0.0f;
  }
  return std::count(w.begin(), w.end(), 0.0f);
}

int64_t prune_layer(std::span<float> w, const MatrixView& view, const PruneRule& rule) {
  if (rule.block.size() > 1 && (rule.sparsity || rule.quality)) {
    keep_top_blocks(w, view, rule.block, weights_to_keep(w, rule));
    return std::count(w.begin(), w.end(), 0.0f);
  }
  const int partitions = static_cast<int>(std::min<int64_t>(rule.balance, view.rows));
  if (partitions < 2 || (!rule.sparsity && !rule.quality)) return prune_weights(w, rule);
  const int64_t kept = weights_to_keep(w, rule);
  if (rule.balance_scope == BalanceScope::column)
    keep_balanced_columns(w, view, partitions, kept);
  else if (rule.balance_scope == BalanceScope::entries)
    EntriesBalance(w, view, partitions, rule.index_bits, kept).run();
  else
    keep_balanced_partitions(w, view, partitions, kept);
  return std::count(w.begin(), w.end(), 0.0f);
}

std::vector<int64_t> partition_nonzeros(std::span<const float> w, const MatrixView& view, int partitions) {
  std::vector<int64_t> counts(static_cast<size_t>(std::max(partitions, 1)), 0);
  for (int64_t i = 0; i < std::ssize(w); ++i)
    if (w[static_cast<size_t>(i)] != 0.0f)
      ++counts[static_cast<size_t>(row_of(i, view) % std::ssize(counts))];
  return counts;
}

}  // namespace sparrow
