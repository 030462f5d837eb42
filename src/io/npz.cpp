// NPZ archives: a zip file with one NPY entry per array, read and written through libzip.
#include <zip.h>

#include <memory>

#include "core/file.h"
#include "sparrow/dataset.h"

namespace sparrow {

namespace {

struct ArchiveCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
using Archive = std::unique_ptr<zip_t, ArchiveCloser>;

struct EntryCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

struct SourceFree {
  void operator()(zip_source_t* s) const { zip_source_free(s); }
};
using Source = std::unique_ptr<zip_source_t, SourceFree>;

std::string zip_message(zip_error_t* error) {
  std::string text = zip_error_strerror(error);
  zip_error_fini(error);
  return text;
}

constexpr std::string_view kEntrySuffix = ".npy";

// One entry's array; `budget` (bytes the archive's entries may still unpack to) shrinks by its size.
Result<Tensor> read_entry(zip_t* z, zip_uint64_t index, const std::string& name, zip_uint64_t& budget) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(z, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
    return errorf("entry '{}': no size recorded", name);
  if (st.size > budget)
    return errorf(
        "entry '{}' declares {} bytes: the archive's arrays would take more than the input budget of {} "
        "(--max-input)",
        name, st.size, input_byte_limit());
  budget -= st.size;
  std::unique_ptr<zip_file_t, EntryCloser> file(zip_fopen_index(z, index, 0));
  if (!file) return errorf("entry '{}': {}", name, zip_strerror(z));
  std::vector<char> bytes(st.size);
  const zip_int64_t got = zip_fread(file.get(), bytes.data(), st.size);
  if (got < 0 || static_cast<zip_uint64_t>(got) != st.size)
    return errorf("entry '{}': read {} of {} bytes ({})", name, std::max<zip_int64_t>(got, 0), st.size,
                  zip_file_strerror(file.get()));
  // Reading on to the end makes libzip check the entry's CRC (and finds data past its size).
  char past_end;
  if (zip_fread(file.get(), &past_end, 1) != 0)
    return errorf("entry '{}': its data does not match its checksum or size ({})", name,
                  zip_file_strerror(file.get()));
  auto t = parse_npy(bytes);
  if (!t.ok()) return t.status().prefixed(fmt::format("entry '{}'", name));
  return t;
}

// The archive's bytes once `archive` (opened over `buffer`) is closed.
Result<std::string> archive_bytes(zip_source_t* buffer) {
  if (zip_source_open(buffer) != 0) return errorf("{}", zip_error_strerror(zip_source_error(buffer)));
  std::string out;
  char chunk[1 << 16];
  zip_int64_t n;
  while ((n = zip_source_read(buffer, chunk, sizeof chunk)) > 0) out.append(chunk, static_cast<size_t>(n));
  zip_source_close(buffer);
  if (n < 0) return errorf("{}", zip_error_strerror(zip_source_error(buffer)));
  return out;
}

}  // namespace

namespace {

// The archive at `path`, opened from its file (entries are read as they are asked for), noted as an
// input.
Result<Archive> open_archive(const std::string& path) {
  int code = 0;
  Archive z(zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
  if (!z) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    return errorf("{}: not a readable .npz (zip) archive: {}", path, zip_message(&error));
  }
  note_input_file(path);
  return z;
}

// The index of array `name`'s entry, or an error listing the arrays there are.
Result<zip_uint64_t> array_index(zip_t* z, const std::string& path, const std::string& name) {
  const zip_int64_t index = zip_name_locate(z, (name + std::string(kEntrySuffix)).c_str(), 0);
  if (index >= 0) return static_cast<zip_uint64_t>(index);
  std::string names;
  for (zip_int64_t i = 0; i < zip_get_num_entries(z, 0); ++i) {
    const char* entry = zip_get_name(z, static_cast<zip_uint64_t>(i), 0);
    names += fmt::format("{}'{}'", names.empty() ? "" : ", ", entry ? entry : "");
  }
  return errorf("{}: no array '{}' among the entries {}", path, name, names.empty() ? "(none)" : names);
}

}  // namespace

Result<std::map<std::string, Tensor>> read_npz(const std::string& path) {
  SP_ASSIGN_OR_RETURN(Archive z, open_archive(path));
  std::map<std::string, Tensor> arrays;
  const zip_int64_t entries = zip_get_num_entries(z.get(), 0);
  auto budget = static_cast<zip_uint64_t>(input_byte_limit());
  for (zip_int64_t i = 0; i < entries; ++i) {
    const char* raw_name = zip_get_name(z.get(), static_cast<zip_uint64_t>(i), 0);
    const std::string name = raw_name ? raw_name : "";
    if (!name.ends_with(kEntrySuffix))
      return errorf("{}: entry '{}' is not an array (numpy.savez names each '<key>.npy')", path, name);
    auto t = read_entry(z.get(), static_cast<zip_uint64_t>(i), name, budget);
    if (!t.ok()) return t.status().prefixed(path);
    arrays[name.substr(0, name.size() - kEntrySuffix.size())] = std::move(*t);
  }
  if (arrays.empty()) return errorf("{}: the archive holds no arrays", path);
  return arrays;
}

Result<Tensor> read_npz_array(const std::string& path, const std::string& name) {
  SP_ASSIGN_OR_RETURN(Archive z, open_archive(path));
  SP_ASSIGN_OR_RETURN(zip_uint64_t index, array_index(z.get(), path, name));
  auto budget = static_cast<zip_uint64_t>(input_byte_limit());
  auto t = read_entry(z.get(), index, name + std::string(kEntrySuffix), budget);
  if (!t.ok()) return t.status().prefixed(path);
  return t;
}

Result<bool> npz_has_array(const std::string& path, const std::string& name) {
  SP_ASSIGN_OR_RETURN(Archive z, open_archive(path));
  return zip_name_locate(z.get(), (name + std::string(kEntrySuffix)).c_str(), 0) >= 0;
}

Status extract_npz_array(const std::string& path, const std::string& name, const std::string& npy_path) {
  SP_ASSIGN_OR_RETURN(Archive z, open_archive(path));
  SP_ASSIGN_OR_RETURN(zip_uint64_t index, array_index(z.get(), path, name));
  std::unique_ptr<zip_file_t, EntryCloser> file(zip_fopen_index(z.get(), index, 0));
  if (!file) return errorf("{}: array '{}': {}", path, name, zip_strerror(z.get()));
  StreamedOutput out;
  SP_RETURN_IF_ERROR(out.open(npy_path));
  std::vector<char> chunk(size_t{1} << 20);
  zip_int64_t got;
  // Read to the end: libzip checks the entry's checksum there.
  while ((got = zip_fread(file.get(), chunk.data(), chunk.size())) > 0)
    SP_RETURN_IF_ERROR(out.append(std::string_view(chunk.data(), static_cast<size_t>(got))));
  if (got < 0)
    return errorf("{}: array '{}': its data cannot be read or does not match its checksum ({})", path, name,
                  zip_file_strerror(file.get()));
  return out.commit();
}

Status write_npz(const std::string& path, const std::map<std::string, Tensor>& arrays, bool compressed) {
  zip_error_t error;
  zip_error_init(&error);
  Source buffer(zip_source_buffer_create(nullptr, 0, 0, &error));
  if (!buffer) return errorf("{}: {}", path, zip_message(&error));
  Archive z(zip_open_from_source(buffer.get(), ZIP_TRUNCATE, &error));
  if (!z) return errorf("{}: {}", path, zip_message(&error));
  zip_source_keep(buffer.get());     // the archive holds one reference now; ours reads it back after
  std::vector<std::string> entries;  // alive until the archive is written
  entries.reserve(arrays.size());
  for (const auto& [key, tensor] : arrays) {
    entries.push_back(npy_bytes(tensor));
    zip_source_t* data = zip_source_buffer(z.get(), entries.back().data(), entries.back().size(), 0);
    const zip_int64_t index =
        data ? zip_file_add(z.get(), (key + std::string(kEntrySuffix)).c_str(), data, 0) : -1;
    if (index < 0) {
      if (data) zip_source_free(data);
      return errorf("{}: array '{}': {}", path, key, zip_strerror(z.get()));
    }
    zip_set_file_compression(z.get(), static_cast<zip_uint64_t>(index),
                             compressed ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
  }
  if (zip_close(z.get()) != 0) return errorf("{}: {}", path, zip_strerror(z.get()));
  z.release();  // closed
  auto bytes = archive_bytes(buffer.get());
  if (!bytes.ok()) return bytes.status().prefixed(path);
  return write_file_atomic(path, *bytes);
}

}  // namespace sparrow
