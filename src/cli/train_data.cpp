// Training data for the CLI: a directory of MNIST-named IDX files or of CIFAR-10's binary batches,
// or .npy / .npz arrays; and the options that choose them and the training settings.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <set>
#include <span>

#include <fmt/ranges.h>

#include "cli/commands.h"
#include "cli/train_data.h"
#include "core/file.h"
#include "core/hash.h"
#include "core/log.h"
#include "sparrow/dataset.h"

namespace sparrow::cli {

namespace {

// The last `validation` rows (at most a fifth) held out from the first `limit` (0: all).
void split_off_validation(LabeledData all, const DataArgs& a, DataSplits& d) {
  if (a.limit > 0 && a.limit < all.size()) {
    if (all.inputs.is_mapping())
      keep_leading_rows(all, a.limit);  // the rest of a mapped file is never read
    else
      all = slice(all, 0, a.limit);  // the rest of the rows freed
  }
  const int64_t val = std::min<int64_t>(a.validation, all.size() / 5);
  d.val = slice(all, all.size() - val, all.size());
  keep_leading_rows(all, all.size() - val);  // the training rows stay where they were read
  d.train = std::move(all);
}

// Pixel bytes x as (x * scale + shift - mean[c]) / std[c], c along axis 1 of `inputs` ([N, C, ...]).
Status normalize_pixels(Tensor& inputs, const DataArgs& a, const std::string& source) {
  const float scale = a.scale.value_or(1.0f / 255.0f), shift = a.shift.value_or(0.0f);
  const int64_t channels = inputs.rank() > 1 ? inputs.dim(1) : 1;
  for (const auto* list : {&a.mean, &a.std})
    if (list->size() > 1 && static_cast<int64_t>(list->size()) != channels)
      return errorf(
          "{}: --{} gives {} values for inputs of {} channels (give one per channel, or one for all)", source,
          list == &a.mean ? "mean" : "std", list->size(), channels);
  for (float v : a.std)
    if (!(v > 0.0f) || !std::isfinite(v)) return errorf("--std: {} is not a positive number", v);
  auto at = [](const std::vector<float>& list, int64_t c, float otherwise) {
    return list.empty() ? otherwise : list[list.size() == 1 ? 0 : static_cast<size_t>(c)];
  };
  const int64_t rows = inputs.rank() > 0 ? inputs.dim(0) : 0;
  const int64_t plane = inputs.numel() / std::max<int64_t>(rows * channels, 1);
  float* x = inputs.f32_data();
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t c = 0; c < channels; ++c) {
      const float mean = at(a.mean, c, 0.0f), inv_std = 1.0f / at(a.std, c, 1.0f);
      float* p = x + (n * channels + c) * plane;
      for (int64_t i = 0; i < plane; ++i) p[i] = (p[i] * scale + shift - mean) * inv_std;
    }
  return {};
}

// Raw pixel images reshaped (not copied) to [N] + sample, or an error naming `source` when a sample does not
// fit.
Result<Tensor> as_model_input(Tensor images, const Shape& sample, const std::string& source) {
  const int64_t n = images.rank() > 0 ? images.dim(0) : 0;
  const int64_t values = images.numel() / std::max<int64_t>(n, 1);
  if (shape_numel(sample) != values)
    return errorf("{}: images of {} values do not fit the input shape {}", source, values, shape_str(sample));
  Shape shape = sample;
  shape.insert(shape.begin(), n);
  images.reshape(shape);
  return images;
}

// Inputs as float32 [N] + sample, where the model declares each dim of a sample (unknown dims match
// anything); `x` came from `source`.
Result<Tensor> fitted_inputs(Tensor x, const Shape& sample, const std::string& source) {
  Shape want = sample;
  want.insert(want.begin(), -1);
  bool fits = x.rank() == static_cast<int>(want.size()) && x.rank() > 0;
  for (int i = 1; fits && i < x.rank(); ++i)
    fits = want[static_cast<size_t>(i)] < 0 || want[static_cast<size_t>(i)] == x.dim(i);
  if (!fits)
    return errorf("{}: inputs of shape {} do not fit the model's input [N] + {}", source,
                  shape_str(x.shape()), shape_str(sample));
  if (x.dtype() == DType::f32) return x;
  Tensor f(DType::f32, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) f.f32_data()[i] = static_cast<float>(x.i64_data()[i]);
  return f;
}

Result<std::vector<int64_t>> labels_of(const Tensor& y, int64_t rows, const std::string& source) {
  if (y.dtype() != DType::i64 || y.rank() != 1 || y.dim(0) != rows)
    return errorf("{}: labels must be {} integers (one per input row), got {} {}", source, rows,
                  dtype_name(y.dtype()), shape_str(y.shape()));
  for (int64_t v : y.i64_span())
    if (v < 0) return errorf("{}: label {} is negative", source, v);
  return std::vector<int64_t>(y.i64_data(), y.i64_data() + rows);
}

// The data cache (--data-cache DIR): a source that must be decoded (IDX, CIFAR-10's batches, an
// image folder) is decoded once, row by row, into DIR/NAME-KEY.x.npy (float32 rows as the model
// takes them, normalized) and NAME-KEY.y.npy (their labels); an .npz's array 'x' is unpacked into
// NAME-KEY.x.npy as the .npy it is. Then the entry is mapped (map_npy: a float32 array as numpy
// aligns it stays in its file; other dtypes are read and converted). KEY hashes what the rows
// depend on: the source files (path, size, modification time) and the settings. Entries are renamed
// into place when whole; the least recently used are removed when the cache grows past its limit.
namespace fs = std::filesystem;

struct CacheEntry {
  std::string x, y;  // y empty: the labels are not in the cache
};

// A source decoded row by row: start(rows) once, then each(row, label, raw values) per row.
using RowSink = std::function<Status(int64_t, int64_t, const float*)>;
using RowWalk = std::function<Status(const std::function<Status(int64_t)>& start, const RowSink& each)>;

// "path|size|modification time" of a file, for cache keys.
Result<std::string> file_stamp(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  const auto time = ec ? fs::file_time_type() : fs::last_write_time(path, ec);
  if (ec) return errorf("{}: {}", path, ec.message());
  return fmt::format("{}|{}|{}", fs::weakly_canonical(path, ec).string(), size,
                     time.time_since_epoch().count());
}

// The settings that shape and normalize decoded rows, for cache keys.
std::string row_settings(const Shape& sample, const DataArgs& a, int64_t limit) {
  return fmt::format("{}|{}|{}|{}|{}|{}|{}", shape_str(sample), a.resize, a.scale.value_or(1.0f / 255.0f),
                     a.shift.value_or(0.0f), fmt::join(a.mean, ","), fmt::join(a.std, ","), limit);
}

// Writes the rows `walk` gives into entry.x (normalized, written as they come) and their labels into
// entry.y.
Status write_rows(const RowWalk& walk, const Shape& sample, const DataArgs& a, const std::string& source,
                  const CacheEntry& entry) {
  StreamedOutput x;
  SP_RETURN_IF_ERROR(x.open(entry.x));
  Shape one = sample;
  one.insert(one.begin(), 1);
  Tensor labels, row(DType::f32, one);
  SP_RETURN_IF_ERROR(walk(
      [&](int64_t n) {
        labels = Tensor(DType::i64, {n});
        Shape all = sample;
        all.insert(all.begin(), n);
        return x.append(npy_header(DType::f32, all));
      },
      [&](int64_t r, int64_t label, const float* values) {
        std::copy(values, values + row.numel(), row.f32_data());
        SP_RETURN_IF_ERROR(normalize_pixels(row, a, source));
        labels.i64_data()[r] = label;
        return x.append(std::string_view(static_cast<const char*>(row.raw()), row.bytes()));
      }));
  SP_RETURN_IF_ERROR(x.commit());
  return write_npy(entry.y, labels);
}

// The cache's entries this process uses: never removed by it.
std::set<std::string>& entries_in_use() {
  static std::set<std::string> in_use;
  return in_use;
}

// Whether a file name is an entry's inputs, as cache_entry names them: NAME-KEY.x.npy, KEY 16 hex
// digits.
bool is_entry_name(const std::string& name) {
  constexpr std::string_view kSuffix = ".x.npy";
  constexpr size_t kKey = 16;
  if (name.size() < kKey + 1 + kSuffix.size() || !name.ends_with(kSuffix)) return false;
  const size_t key = name.size() - kSuffix.size() - kKey;
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return name[key - 1] == '-' && std::all_of(name.begin() + static_cast<std::ptrdiff_t>(key),
                                             name.begin() + static_cast<std::ptrdiff_t>(key + kKey), hex);
}

// Removes the least recently used entries of the cache (only files named as entries) until they take
// at most its limit, except those this process uses. Run once the data is loaded, so that no entry a
// command is about to use goes first.
void trim_data_cache(const DataArgs& a) {
  if (a.cache.empty()) return;
  // In double first: a limit past what int64_t holds means no limit.
  const double asked = a.cache_limit_gib * static_cast<double>(int64_t{1} << 30);
  const int64_t limit = asked >= 9.0e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(asked);
  struct Found {
    fs::file_time_type used;
    std::string x, y;
    int64_t bytes;
  };
  auto size_of = [](const std::string& path) {
    std::error_code ec;
    const auto bytes = fs::file_size(path, ec);
    return ec ? int64_t{0} : static_cast<int64_t>(bytes);
  };
  std::vector<Found> found;
  int64_t total = 0;
  std::error_code walk;
  for (fs::directory_iterator it(a.cache, walk), end; !walk && it != end; it.increment(walk)) {
    const std::string name = it->path().filename().string();
    std::error_code ec;
    const auto used = it->last_write_time(ec);
    if (ec || !is_entry_name(name)) continue;
    Found f{used, it->path().string(), "", 0};
    f.y = f.x.substr(0, f.x.size() - 6) + ".y.npy";
    f.bytes = size_of(f.x) + size_of(f.y);
    total += f.bytes;
    found.push_back(std::move(f));
  }
  std::sort(found.begin(), found.end(), [](const Found& l, const Found& r) { return l.used < r.used; });
  for (const Found& f : found) {
    if (total <= limit) break;
    if (entries_in_use().contains(f.x)) continue;
    std::error_code ec;
    const bool removed = fs::remove(f.x, ec);  // false without an error: another process removed it
    if (ec) {
      log(LogLevel::warn, "{}: cannot remove from the data cache: {}", f.x, ec.message());
      continue;
    }
    fs::remove(f.y, ec);
    total -= f.bytes;
    if (removed)
      log(LogLevel::info, "{}: removed from the data cache (least recently used; the cache keeps {} bytes)",
          f.x, limit);
  }
}

// The cache entry NAME-KEY (KEY hashed from `key_text`): written by `write` when missing (or when its
// labels are), and marked as used now.
Result<CacheEntry> cache_entry(const DataArgs& a, const std::string& name, const std::string& key_text,
                               bool with_labels, const std::function<Status(const CacheEntry&)>& write) {
  std::error_code ec;
  fs::create_directories(a.cache, ec);
  if (ec) return errorf("{}: cannot create the data cache: {}", a.cache, ec.message());
  const std::string base =
      (fs::path(a.cache) / fmt::format("{}-{:016x}", name, fnv1a64("sparrow data cache 1|" + key_text)))
          .string();
  CacheEntry entry{base + ".x.npy", with_labels ? base + ".y.npy" : ""};
  if (!fs::exists(entry.x, ec) || (with_labels && !fs::exists(entry.y, ec))) SP_RETURN_IF_ERROR(write(entry));
  fs::last_write_time(entry.x, fs::file_time_type::clock::now(), ec);  // used now
  entries_in_use().insert(entry.x);
  return entry;
}

// An entry's rows, mapped, with its labels when it holds them; `rows` [N] + sample as written
// (rows < 0: as many as the entry holds, when it was written by an earlier run).
Result<LabeledData> mapped_rows(const CacheEntry& entry, const Shape& sample, int64_t rows) {
  LabeledData d;
  SP_ASSIGN_OR_RETURN(d.inputs, map_npy(entry.x));
  Shape want = sample;
  want.insert(want.begin(), rows >= 0 ? rows : d.inputs.rank() > 0 ? d.inputs.dim(0) : 0);
  if (d.inputs.dtype() != DType::f32 || d.inputs.shape() != want)
    return errorf("{}: holds {} {} where float32 {} was written; remove it to decode the source again",
                  entry.x, dtype_name(d.inputs.dtype()), shape_str(d.inputs.shape()), shape_str(want));
  if (!entry.y.empty()) {
    SP_ASSIGN_OR_RETURN(Tensor y, read_npy(entry.y));
    SP_ASSIGN_OR_RETURN(d.labels, labels_of(y, d.size(), entry.y));
  }
  return d;
}

// Rows decoded by `walk` through the cache: written once per key, then mapped.
Result<LabeledData> cached_rows(const DataArgs& a, const std::string& name, const std::string& key_text,
                                const std::string& source, const Shape& sample, const RowWalk& walk) {
  int64_t rows = -1;
  auto counted = [&](const std::function<Status(int64_t)>& start, const RowSink& each) {
    return walk([&](int64_t n) { return rows = n, start(n); }, each);
  };
  SP_ASSIGN_OR_RETURN(CacheEntry entry, cache_entry(a, name, key_text, true, [&](const CacheEntry& e) {
                        return write_rows(counted, sample, a, source, e);
                      }));
  return mapped_rows(entry, sample, rows);  // rows < 0: read from the cache, mapped once
}

// The largest class index an IDX label file may hold (load_labeled_idx's bound).
constexpr int64_t kMostIdxLabel = 1000000;

// The rows of an IDX image file and its labels, normalized: through the cache when there is one,
// else read whole.
Result<LabeledData> idx_rows(const std::string& images, const std::string& labels, const Shape& sample,
                             const DataArgs& a, int64_t limit) {
  if (a.cache.empty()) {
    // Raw bytes first (scale 1, shift 0), then one normalization for every option.
    SP_ASSIGN_OR_RETURN(LabeledData d, load_labeled_idx(images, labels, sample, 1.0f, 0.0f, limit));
    SP_RETURN_IF_ERROR(normalize_pixels(d.inputs, a, a.dir));
    return d;
  }
  SP_ASSIGN_OR_RETURN(std::string image_stamp, file_stamp(images));
  SP_ASSIGN_OR_RETURN(std::string label_stamp, file_stamp(labels));
  auto walk = [&](const std::function<Status(int64_t)>& start, const RowSink& each) -> Status {
    SP_ASSIGN_OR_RETURN(std::vector<int64_t> y, read_idx_labels(labels));
    for (int64_t label : y)  // as load_labeled_idx checks them
      if (label > kMostIdxLabel) return errorf("{}: label {} is out of range", labels, label);
    return for_each_idx_row(
        images, limit,
        [&](const Shape& dims) -> Status {
          if (dims[0] != static_cast<int64_t>(y.size()))
            return errorf("{} has {} images but {} has {} labels", images, dims[0], labels, y.size());
          const int64_t values = shape_numel(Shape(dims.begin() + 1, dims.end()));
          if (values != shape_numel(sample))
            return errorf("{}: images of {} values do not fit the input shape {}", images, values,
                          shape_str(sample));
          return start(limit > 0 ? std::min(dims[0], limit) : dims[0]);
        },
        [&](int64_t r, const float* values) { return each(r, y[static_cast<size_t>(r)], values); });
  };
  const std::string name = fs::path(images).filename().string();
  return cached_rows(a, name.substr(0, name.find('.')),
                     fmt::format("idx|{}|{}|{}", image_stamp, label_stamp, row_settings(sample, a, limit)),
                     images, sample, walk);
}

Result<DataSplits> load_idx_splits(const Shape& sample, const DataArgs& a) {
  auto path = [&](const char* name) { return (std::filesystem::path(a.dir) / name).string(); };
  DataSplits d;
  SP_ASSIGN_OR_RETURN(LabeledData train, idx_rows(path("train-images-idx3-ubyte.gz"),
                                                  path("train-labels-idx1-ubyte.gz"), sample, a, a.limit));
  split_off_validation(std::move(train), a, d);
  preload_mapping(d.train.inputs);  // from the data cache
  SP_ASSIGN_OR_RETURN(
      d.test, idx_rows(path("t10k-images-idx3-ubyte.gz"), path("t10k-labels-idx1-ubyte.gz"), sample, a, 0));
  return d;
}

constexpr int kCifarTrainBatches = 5;

std::string cifar_file(const DataArgs& a, const std::string& name) {
  return (std::filesystem::path(a.dir) / name).string();
}

// CIFAR-10 batches' records, normalized: through the cache when there is one (entry "cifar10-NAME",
// NAME the first file's), else read whole.
Result<LabeledData> load_cifar(std::span<const std::string> files, const Shape& sample, const DataArgs& a,
                               int64_t limit) {
  if (!a.cache.empty()) {
    std::string key = "cifar10";
    for (const std::string& file : files) {
      SP_ASSIGN_OR_RETURN(std::string stamp, file_stamp(file));
      key += "|" + stamp;
    }
    if (shape_numel(sample) != 3 * 32 * 32)
      return errorf("{}: images of {} values do not fit the input shape {}", files.front(), 3 * 32 * 32,
                    shape_str(sample));
    auto walk = [&](const std::function<Status(int64_t)>& start, const RowSink& each) {
      return for_each_cifar10_record(files, limit, start, each);
    };
    return cached_rows(a, "cifar10-" + fs::path(files.front()).stem().string(),
                       key + "|" + row_settings(sample, a, limit), files.front(), sample, walk);
  }
  SP_ASSIGN_OR_RETURN(ImageSet set, read_cifar10(files, limit));
  LabeledData d;
  SP_ASSIGN_OR_RETURN(d.inputs, as_model_input(std::move(set.images), sample, files.front()));
  SP_RETURN_IF_ERROR(normalize_pixels(d.inputs, a, a.dir));
  d.labels = std::move(set.labels);
  return d;
}

Result<DataSplits> load_cifar_splits(const Shape& sample, const DataArgs& a) {
  std::vector<std::string> train_files;
  for (int b = 1; b <= kCifarTrainBatches; ++b) {
    const std::string file = cifar_file(a, fmt::format("data_batch_{}.bin", b));
    if (b == 1 || std::filesystem::exists(file)) train_files.push_back(file);
  }
  DataSplits d;
  SP_ASSIGN_OR_RETURN(LabeledData train, load_cifar(train_files, sample, a, a.limit));
  split_off_validation(std::move(train), a, d);
  preload_mapping(d.train.inputs);  // from the data cache
  const std::string test_file = cifar_file(a, "test_batch.bin");
  SP_ASSIGN_OR_RETURN(d.test, load_cifar(std::span(&test_file, 1), sample, a, 0));
  return d;
}

// Every row of an .npy of inputs already laid out and normalized (labels from --labels' .npy); a
// float32 array stays in its file (map_npy), its rows read from disk as training uses them.
Result<LabeledData> npy_rows(const Shape& sample, const DataArgs& a) {
  LabeledData d;
  SP_ASSIGN_OR_RETURN(Tensor x, map_npy(a.dir));
  SP_ASSIGN_OR_RETURN(d.inputs, fitted_inputs(std::move(x), sample, a.dir));
  if (!a.labels.empty()) {
    SP_ASSIGN_OR_RETURN(Tensor y, read_npy(a.labels));
    SP_ASSIGN_OR_RETURN(d.labels, labels_of(y, d.size(), a.labels));
  }
  return d;
}

// The .npy's rows split: the held-out validation rows are also the test split.
Result<DataSplits> load_npy_splits(const Shape& sample, const DataArgs& a) {
  SP_ASSIGN_OR_RETURN(LabeledData all, npy_rows(sample, a));
  DataSplits d;
  split_off_validation(std::move(all), a, d);
  preload_mapping(d.train.inputs);  // the rows kept (--limit), not the whole file
  d.test = d.val;
  return d;
}

// An .npz's arrays 'x' (inputs, laid out and normalized) and optionally 'y' (labels): every array
// read, or, through the cache, 'x' unpacked there once (entry "NAME-KEY.x.npy", NAME the archive's)
// and mapped, and 'y' alone read.
Result<LabeledData> npz_rows(const Shape& sample, const DataArgs& a) {
  auto no_inputs = [&](const std::string& names) {
    return errorf("{}: no array 'x' (the inputs){}; save with numpy.savez(path, x=inputs, y=labels)", a.dir,
                  names.empty() ? "" : " among " + names);
  };
  LabeledData all;
  if (a.cache.empty()) {
    SP_ASSIGN_OR_RETURN(auto arrays, read_npz(a.dir));
    auto x = arrays.find("x");
    if (x == arrays.end()) {
      std::string names;
      for (const auto& [name, array] : arrays) names += (names.empty() ? "" : ", ") + name;
      return no_inputs(names);
    }
    SP_ASSIGN_OR_RETURN(all.inputs, fitted_inputs(std::move(x->second), sample, a.dir + ": array 'x'"));
    if (auto y = arrays.find("y"); y != arrays.end()) {
      SP_ASSIGN_OR_RETURN(all.labels, labels_of(y->second, all.size(), a.dir + ": array 'y'"));
    }
    return all;
  }
  SP_ASSIGN_OR_RETURN(bool has_x, npz_has_array(a.dir, "x"));
  if (!has_x) return no_inputs("");
  SP_ASSIGN_OR_RETURN(std::string stamp, file_stamp(a.dir));
  // The unpacked array is read back before it counts as an entry: a bad one names the archive.
  auto unpack = [&](const CacheEntry& e) -> Status {
    SP_RETURN_IF_ERROR(extract_npz_array(a.dir, "x", e.x));
    if (auto check = map_npy(e.x, MapAccess::sequential); !check.ok()) {
      std::error_code ec;
      fs::remove(e.x, ec);
      std::string why = check.status().message();  // named after the archive, not the entry
      if (why.starts_with(e.x + ": ")) why.erase(0, e.x.size() + 2);
      return errorf("{}: array 'x': {}", a.dir, why);
    }
    return {};
  };
  SP_ASSIGN_OR_RETURN(CacheEntry entry,
                      cache_entry(a, fs::path(a.dir).stem().string(), "npz x|" + stamp, false, unpack));
  SP_ASSIGN_OR_RETURN(Tensor x, map_npy(entry.x));
  SP_ASSIGN_OR_RETURN(all.inputs, fitted_inputs(std::move(x), sample, a.dir + ": array 'x'"));
  SP_ASSIGN_OR_RETURN(bool has_y, npz_has_array(a.dir, "y"));
  if (has_y) {
    SP_ASSIGN_OR_RETURN(Tensor y, read_npz_array(a.dir, "y"));
    SP_ASSIGN_OR_RETURN(all.labels, labels_of(y, all.size(), a.dir + ": array 'y'"));
  }
  return all;
}

Result<DataSplits> load_npz_splits(const Shape& sample, const DataArgs& a) {
  SP_ASSIGN_OR_RETURN(LabeledData all, npz_rows(sample, a));
  DataSplits d;
  split_off_validation(std::move(all), a, d);
  preload_mapping(d.train.inputs);  // from the data cache
  d.test = d.val;
  return d;
}

// Image folders: DIR/train (and DIR/test or DIR/val) of class sub-folders, or DIR itself one.

bool is_class_folder(const fs::path& dir) {
  std::error_code ec;
  for (fs::directory_iterator c(dir, ec), end; !ec && c != end; c.increment(ec)) {
    if (!c->is_directory(ec)) continue;
    for (fs::directory_iterator f(c->path(), ec); !ec && f != end; f.increment(ec))
      if (is_image_file(f->path().string())) return true;
  }
  return false;
}

bool is_image_folder(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return false;
  return is_class_folder(fs::path(path) / "train") || is_class_folder(path);
}

// DIR/test, else DIR/val, when DIR/train holds the training images; empty otherwise.
std::string held_out_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(fs::path(dir) / "train", ec)) return "";
  for (const char* name : {"test", "val"})
    if (fs::is_directory(fs::path(dir) / name, ec)) return (fs::path(dir) / name).string();
  return "";
}

// What the decoded images of `folder` depend on, as cache key text: the folder, each image's path (as
// listed: through links, not to their targets), label (its class's place among the sub-folders),
// size and modification time, and the settings that shape and normalize them; or an error naming an image
// that cannot be examined.
Result<std::string> image_key_text(const std::string& folder, const FolderImages& images, const Shape& sample,
                                   const DataArgs& a, int64_t limit) {
  std::error_code ec;
  std::string text =
      fmt::format("images|{}|{}", fs::weakly_canonical(folder, ec).string(), row_settings(sample, a, limit));
  for (const auto& [path, label] : images.files) {
    SP_ASSIGN_OR_RETURN(std::string stamp, file_stamp(path));
    text += fmt::format("\n{}|{}|{}", fs::path(path).lexically_relative(folder).string(), label, stamp);
  }
  return text;
}

// Whether `inner` is `outer` or lies inside it.
bool inside(const std::string& inner, const std::string& outer) {
  std::error_code ec;
  const fs::path in = fs::weakly_canonical(inner, ec), out = fs::weakly_canonical(outer, ec);
  const auto [end, _] = std::mismatch(out.begin(), out.end(), in.begin(), in.end());
  return end == out.end();
}

// The folder's images through the data cache (entry "FOLDER-KEY", FOLDER the folder's name).
Result<LabeledData> cached_images(const std::string& folder, const Shape& sample, const DataArgs& a,
                                  int64_t limit) {
  if (inside(a.cache, a.dir))
    return errorf("--data-cache {}: inside the image folder {} (it would become a class); put it elsewhere",
                  a.cache, a.dir);
  SP_ASSIGN_OR_RETURN(FolderImages images, list_folder_images(folder, limit));
  SP_ASSIGN_OR_RETURN(std::string key_text, image_key_text(folder, images, sample, a, limit));
  auto walk = [&](const std::function<Status(int64_t)>& start, const RowSink& each) {
    return for_each_folder_image(folder, images, sample[0], sample[1], sample[2], a.resize, start, each);
  };
  std::error_code ec;
  return cached_rows(a, fs::weakly_canonical(folder, ec).filename().string(), key_text, folder, sample, walk);
}

Result<LabeledData> load_images(const std::string& folder, const Shape& sample, const DataArgs& a,
                                int64_t limit) {
  if (sample.size() != 3 || sample[0] < 0 || sample[1] <= 0 || sample[2] <= 0)
    return errorf(
        "{}: images need a model input of [N, channels, height, width] with known sizes, got [N] + {}",
        folder, shape_str(sample));
  if (!a.cache.empty()) return cached_images(folder, sample, a, limit);
  SP_ASSIGN_OR_RETURN(ImageSet set,
                      read_image_folder(folder, sample[0], sample[1], sample[2], limit, nullptr, a.resize));
  LabeledData d;
  d.inputs = std::move(set.images);
  SP_RETURN_IF_ERROR(normalize_pixels(d.inputs, a, folder));
  d.labels = std::move(set.labels);
  return d;
}

Result<DataSplits> load_image_splits(const Shape& sample, const DataArgs& a) {
  const std::string train =
      is_class_folder(fs::path(a.dir) / "train") ? (fs::path(a.dir) / "train").string() : a.dir;
  DataSplits d;
  SP_ASSIGN_OR_RETURN(LabeledData all, load_images(train, sample, a, a.limit));
  split_off_validation(std::move(all), a, d);
  preload_mapping(d.train.inputs);  // from the data cache
  const std::string held_out = held_out_folder(a.dir);
  if (held_out.empty()) {
    d.test = d.val;
  } else {
    SP_ASSIGN_OR_RETURN(d.test, load_images(held_out, sample, a, 0));
  }
  return d;
}

// DIR/test or DIR/val; DIR/train's held-out rows when there is neither; DIR itself as a class folder.
Result<LabeledData> image_test_set(const Shape& sample, const DataArgs& a) {
  const std::string held_out = held_out_folder(a.dir);
  if (!held_out.empty()) return load_images(held_out, sample, a, 0);
  if (!is_class_folder(fs::path(a.dir) / "train")) return load_images(a.dir, sample, a, 0);
  SP_ASSIGN_OR_RETURN(DataSplits d, load_image_splits(sample, a));
  return std::move(d.test);
}

// The rows to evaluate on from each kind: what load_*_splits keeps for test (for arrays, every row).

Result<LabeledData> npz_test_set(const Shape& sample, const DataArgs& a) {
  return npz_rows(sample, a);
}

Result<LabeledData> cifar_test_set(const Shape& sample, const DataArgs& a) {
  const std::string test_file = cifar_file(a, "test_batch.bin");
  return load_cifar(std::span(&test_file, 1), sample, a, 0);
}

Result<LabeledData> idx_test_set(const Shape& sample, const DataArgs& a) {
  auto path = [&](const char* name) { return (std::filesystem::path(a.dir) / name).string(); };
  return idx_rows(path("t10k-images-idx3-ubyte.gz"), path("t10k-labels-idx1-ubyte.gz"), sample, a, 0);
}

// The kinds of --data, by what the path is: the first that matches loads it.
struct DataSource {
  const char* what;
  bool (*matches)(const std::string& path);
  Result<DataSplits> (*load)(const Shape& sample, const DataArgs& a);
  Result<LabeledData> (*load_test)(const Shape& sample, const DataArgs& a);
  bool pixel_bytes;      // normalized by --scale, --shift, --mean, --std
  bool labels_separate;  // labels come from --labels
  bool resized;          // images of any size, scaled by --resize
  bool decoded;          // decoded from its own format: --data-cache keeps it decoded
};

bool has_extension(const std::string& path, const char* extension) {
  return std::filesystem::path(path).extension() == extension;
}

const DataSource kDataSources[] = {
    {"a NumPy array (.npy)", [](const std::string& p) { return has_extension(p, ".npy"); }, load_npy_splits,
     npy_rows, false, true, false, false},
    {"a NumPy archive (.npz)", [](const std::string& p) { return has_extension(p, ".npz"); }, load_npz_splits,
     npz_test_set, false, false, false, true},
    {"CIFAR-10's binary batches",
     [](const std::string& p) {
       return fs::exists(fs::path(p) / "data_batch_1.bin") || fs::exists(fs::path(p) / "test_batch.bin");
     },
     load_cifar_splits, cifar_test_set, true, false, false, true},
    {"an image folder (one sub-folder per class, PNG or JPEG)", is_image_folder, load_image_splits,
     image_test_set, true, false, true, true},
    // Last: any other directory is read as MNIST's IDX files, and a missing one is named.
    {"MNIST-named IDX files", [](const std::string&) { return true; }, load_idx_splits, idx_test_set, true,
     false, false, true},
};

// The kind of `a.dir`, its options checked against it.
Result<const DataSource*> source_of(const DataArgs& a) {
  const DataSource& source = *std::find_if(std::begin(kDataSources), std::end(kDataSources),
                                           [&](const DataSource& s) { return s.matches(a.dir); });
  if (!source.pixel_bytes && (a.scale || a.shift || !a.mean.empty() || !a.std.empty()))
    return errorf(
        "--scale, --shift, --mean and --std normalize pixel bytes; {} ({}) holds inputs already "
        "normalized",
        a.dir, source.what);
  if (!source.labels_separate && !a.labels.empty())
    return errorf("--labels goes with --data FILE.npy; {} ({}) holds its own labels", a.dir, source.what);
  if (!source.resized && a.resize > 0)
    return errorf("--resize scales the images of an image folder; {} ({}) holds inputs of the model's size",
                  a.dir, source.what);
  if (!source.decoded && !a.cache.empty())
    return errorf(
        "--data-cache keeps sources that must be decoded (IDX, CIFAR-10, .npz, image folders); {} ({}) is "
        "read from its file as it is",
        a.dir, source.what);
  return &source;
}

Result<Shape> sample_of(const Model& m) {
  if (m.inputs.empty() || !m.inputs[0].has_shape)
    return errorf("{}: the model's input declares no shape", m.source);
  return Shape(m.inputs[0].dims.begin() + 1, m.inputs[0].dims.end());
}

}  // namespace

Result<DataSplits> load_splits(const Model& m, const DataArgs& a) {
  SP_ASSIGN_OR_RETURN(Shape sample, sample_of(m));
  SP_ASSIGN_OR_RETURN(const DataSource* source, source_of(a));
  auto splits = source->load(sample, a);
  trim_data_cache(a);
  return splits;
}

bool holds_labels(const std::string& path) {
  if (path.empty()) return false;
  DataArgs a;
  a.dir = path;
  auto source = source_of(a);
  return source.ok() && !(*source)->labels_separate;
}

Result<LabeledData> load_test_set(const Model& m, const DataArgs& a) {
  SP_ASSIGN_OR_RETURN(Shape sample, sample_of(m));
  SP_ASSIGN_OR_RETURN(const DataSource* source, source_of(a));
  auto rows = source->load_test(sample, a);
  trim_data_cache(a);
  return rows;
}

void add_data_options(CLI::App* cmd, DataArgs& d) {
  cmd->add_option("--labels", d.labels, "With --data FILE.npy: the labels, one integer per input row (.npy)");
  cmd->add_option("--scale", d.scale, "Pixel bytes (IDX, CIFAR-10): x = raw * scale + shift (default 1/255)");
  cmd->add_option("--shift", d.shift, "Pixel bytes: normalization offset (default 0)");
  cmd->add_option("--mean", d.mean,
                  "Pixel bytes: per-channel mean subtracted after scale and shift, e.g. 0.49,0.48,0.45")
      ->delimiter(',')
      ->check(kFiniteNumber);
  cmd->add_option("--std", d.std,
                  "Pixel bytes: per-channel standard deviation divided by last, e.g. 0.25,0.24,0.26")
      ->delimiter(',')
      ->check(kFiniteNumber);
  cmd->add_option("--limit", d.limit, "Use only the first N training images")->check(CLI::NonNegativeNumber);
  cmd->add_option(
         "--resize", d.resize,
         "Image folders: scale each image so that its shorter side is N pixels, then take the centered "
         "input-sized window (the geometry of torchvision's Resize(N) + CenterCrop, bilinear without "
         "antialiasing); default: scale to just cover it")
      ->check(CLI::PositiveNumber);
  cmd->add_option(
      "--data-cache", d.cache,
      "IDX, CIFAR-10, .npz, image folders: decode and normalize the data once into this folder (a "
      "float32 .npy per source and settings), streamed, and read it from there, mapped, not held "
      "in memory");
  cmd->add_option("--data-cache-limit", d.cache_limit_gib,
                  "GiB the data cache may hold; the entries used least recently are removed past it "
                  "(default 20)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--validation", d.validation,
                  "Training rows held out for validation (default 5000, at most a fifth)")
      ->check(CLI::NonNegativeNumber);
}

void add_distillation_options(CLI::App* cmd, Distillation& d) {
  cmd->add_option("--distill-loss", d.loss, "kl (softened outputs, default) or mse (raw outputs)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, DistillLoss>{{"kl", DistillLoss::kl}, {"mse", DistillLoss::mse}}));
  cmd->add_option("--temperature", d.temperature, "Distillation temperature (default 4)")
      ->check(kFiniteNumber)
      ->check(CLI::PositiveNumber);
  cmd->add_option("--distill-weight", d.weight,
                  "Weight of the distillation term against cross-entropy on labels (default 1)")
      ->check(CLI::Range(0.0, 1.0));
}

void add_augmentation_options(CLI::App* cmd, Augmentation& a) {
  cmd->add_flag("--flip", a.flip, "Augment training images: flip each horizontally with probability 1/2");
  cmd->add_option("--crop-padding", a.crop_padding,
                  "Augment training images: random crops of each image zero-padded by P pixels")
      ->check(CLI::Range(0, 1024));
}

void add_train_options(CLI::App* cmd, TrainOptions& o, const std::string& prefix) {
  cmd->add_option("--" + prefix + "epochs", o.epochs, "Epochs")->check(CLI::Range(0, 10000));
  cmd->add_option("--" + prefix + "lr", o.lr, "Learning rate")
      ->check(kFiniteNumber)
      ->check(CLI::PositiveNumber);
  if (!prefix.empty()) return;
  cmd->add_option("--batch", o.batch, "Batch size")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--momentum", o.momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--weight-decay", o.weight_decay, "L2 weight decay")
      ->check(kFiniteNumber)
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--optimizer", o.optimizer, "sgd or adam")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, Optimizer>{{"sgd", Optimizer::sgd}, {"adam", Optimizer::adam}}));
  cmd->add_option("--schedule", o.schedule, "Learning-rate schedule: cosine, step or constant")
      ->transform(CLI::CheckedTransformer(std::map<std::string, Schedule>{
          {"cosine", Schedule::cosine}, {"step", Schedule::step}, {"constant", Schedule::constant}}));
  cmd->add_option("--seed", o.seed, "Seed for initialization, shuffling and augmentation");
  add_augmentation_options(cmd, o.augment);
}

}  // namespace sparrow::cli
