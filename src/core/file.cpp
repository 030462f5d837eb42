#include "core/file.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>

#include <sys/stat.h>
#include <unistd.h>

namespace sparrow {

namespace {

struct FileId {
  dev_t device;
  ino_t inode;
  bool operator==(const FileId&) const = default;
};

struct InputRegistry {
  std::mutex mutex;
  bool on = false;
  std::vector<FileId> files;
};

InputRegistry& inputs() {
  static InputRegistry registry;
  return registry;
}

std::optional<FileId> file_id(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

bool is_input(const FileId& id) {
  InputRegistry& r = inputs();
  std::lock_guard lock(r.mutex);
  return r.on && std::find(r.files.begin(), r.files.end(), id) != r.files.end();
}

}  // namespace

void protect_inputs(bool on) {
  InputRegistry& r = inputs();
  std::lock_guard lock(r.mutex);
  r.on = on;
  if (!on) r.files.clear();
}

void note_input_file(const std::string& path) {
  InputRegistry& r = inputs();
  std::lock_guard lock(r.mutex);
  if (!r.on) return;
  if (auto id = file_id(path)) r.files.push_back(*id);
}

Result<std::vector<char>> read_file(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return errorf("{}: no such file", path);
  if (std::filesystem::is_directory(path, ec)) return errorf("{}: is a directory, expected a file", path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return errorf("{}: cannot open: {}", path, std::strerror(errno));
  note_input_file(path);
  std::streamoff size = in.tellg();
  if (size < 0) return errorf("{}: cannot determine file size", path);
  if (static_cast<size_t>(size) > max_bytes)
    return errorf("{}: file is {} bytes, larger than the {} byte limit", path, size, max_bytes);
  std::vector<char> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(bytes.data(), size)) return errorf("{}: read failed", path);
  return bytes;
}

Status write_file_atomic(const std::string& path, std::string_view data) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      return errorf("{}: exists and is not a regular file (a device, directory or pipe); not replaced", path);
    if (is_input(FileId{st.st_dev, st.st_ino}))
      return errorf("{}: is an input of this command; writing there would overwrite it", path);
  }
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return errorf("{}: cannot create: {}", tmp, std::strerror(errno));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return errorf("{}: write failed", tmp);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return errorf("{}: cannot rename temporary file into place: {}", path, std::strerror(err));
  }
  return {};
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (std::filesystem::weakly_canonical(a, ec) == std::filesystem::weakly_canonical(b, ec)) return true;
  return std::filesystem::equivalent(a, b, ec) && !ec;
}

}  // namespace sparrow
