#include "core/file.h"

#include <algorithm>
#include <atomic>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>

#include <fcntl.h>
#include <signal.h>
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

// Writes every byte, retrying short writes and interrupted calls.
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Makes a rename in the folder of `path` durable (best effort: some file systems refuse).
void sync_directory_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Removes `<path>.tmp.<pid>` files left by writers that were killed: their process no longer exists
// and the file is over a minute old (a writer in another PID namespace or on another host sharing the
// folder is not mistaken for a dead one while it writes).
void remove_stale_temporaries(const std::string& path) {
  const std::filesystem::path target(path);
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code ec;
  const auto dir = target.parent_path().empty() ? std::filesystem::path(".") : target.parent_path();
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    if (!std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        pid_text.size() > 9)
      continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    const auto age = std::filesystem::file_time_type::clock::now() - entry.last_write_time(ec);
    if (ec || age < std::chrono::minutes(1)) continue;
    if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) std::filesystem::remove(entry.path(), ec);
  }
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

namespace {
std::atomic<int64_t> g_input_byte_limit{int64_t{4} << 30};
}  // namespace

int64_t input_byte_limit() {
  return g_input_byte_limit.load();
}

void set_input_byte_limit(int64_t bytes) {
  g_input_byte_limit.store(std::max<int64_t>(bytes, 0));
}

Result<InputFile> open_input_file(const std::string& path, size_t max_bytes) {
  if (max_bytes == 0) max_bytes = static_cast<size_t>(input_byte_limit());
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return errorf("{}: no such file", path);
  if (std::filesystem::is_directory(path, ec)) return errorf("{}: is a directory, expected a file", path);
  InputFile file;
  file.path_ = path;
  file.in_.open(path, std::ios::binary | std::ios::ate);
  if (!file.in_) return errorf("{}: cannot open: {}", path, std::strerror(errno));
  note_input_file(path);
  std::streamoff size = file.in_.tellg();
  if (size < 0) return errorf("{}: cannot determine file size", path);
  if (static_cast<size_t>(size) > max_bytes)
    return errorf("{}: file is {} bytes, larger than the {} byte input limit (--max-input)", path, size,
                  max_bytes);
  file.size_ = static_cast<size_t>(size);
  file.in_.seekg(0);
  return file;
}

Status InputFile::read(char* dst, size_t n) {
  if (n > 0 && !in_.read(dst, static_cast<std::streamsize>(n)))
    return errorf("{}: truncated or unreadable ({} more bytes expected)", path_, n);
  return {};
}

Result<std::vector<char>> read_file(const std::string& path, size_t max_bytes) {
  SP_ASSIGN_OR_RETURN(InputFile file, open_input_file(path, max_bytes));
  std::vector<char> bytes(file.size());
  if (auto s = file.read(bytes.data(), bytes.size()); !s.ok()) return errorf("{}: read failed", path);
  return bytes;
}

namespace {

// Checks that `path` may be replaced, then writes `data` to its temporary (flushed to disk). On
// success the temporary's name is in *tmp_out; on failure nothing is left behind.
Status stage(const std::string& path, std::string_view data, std::string* tmp_out) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      return errorf("{}: exists and is not a regular file (a device, directory or pipe); not replaced", path);
    if (is_input(FileId{st.st_dev, st.st_ino}))
      return errorf("{}: is an input of this command; writing there would overwrite it", path);
  }
  remove_stale_temporaries(path);
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errorf("{}: cannot create: {}", tmp, std::strerror(errno));
  // The data reaches the disk before the rename makes it the file under `path`.
  if (!write_all(fd, data) || ::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    std::remove(tmp.c_str());
    return errorf("{}: write failed: {}", tmp, std::strerror(err));
  }
  if (::close(fd) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return errorf("{}: write failed: {}", tmp, std::strerror(err));
  }
  *tmp_out = std::move(tmp);
  return {};
}

// Renames a staged temporary over `path` and syncs the folder; removes the temporary on failure.
Status commit(const std::string& tmp, const std::string& path) {
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return errorf("{}: cannot rename temporary file into place: {}", path, std::strerror(err));
  }
  sync_directory_of(path);
  return {};
}

}  // namespace

Status write_file_atomic(const std::string& path, std::string_view data) {
  std::string tmp;
  SP_RETURN_IF_ERROR(stage(path, data, &tmp));
  return commit(tmp, path);
}

StreamedOutput::~StreamedOutput() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) std::remove(tmp_.c_str());
}

Status StreamedOutput::open(const std::string& path) {
  if (fd_ >= 0 || !tmp_.empty() || failed_) return errorf("{}: a streamed output opens once", path);
  path_ = path;
  failed_ = true;                              // until it is open
  SP_RETURN_IF_ERROR(stage(path, {}, &tmp_));  // the checks, and an empty temporary
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd_ < 0) return errorf("{}: cannot open its temporary {}: {}", path, tmp_, std::strerror(errno));
  failed_ = false;
  return {};
}

Status StreamedOutput::append(std::string_view data) {
  if (fd_ < 0 || failed_) return errorf("{}: not open for writing", path_);
  if (!write_all(fd_, data)) {
    failed_ = true;
    return errorf("{}: write failed: {}", path_, std::strerror(errno));
  }
  return {};
}

Status StreamedOutput::commit() {
  if (fd_ < 0 || failed_) return errorf("{}: not open for writing", path_);
  const bool synced = ::fsync(fd_) == 0;
  const int sync_errno = errno;
  const bool closed = ::close(fd_) == 0;
  fd_ = -1;
  failed_ = true;  // committed or not, the writer is done
  if (!synced || !closed)
    return errorf("{}: write failed: {}", path_, std::strerror(synced ? errno : sync_errno));
  Status s = sparrow::commit(tmp_, path_);  // removes the temporary when it fails
  tmp_.clear();
  return s;
}

OutputSet::~OutputSet() {
  for (const Staged& s : staged_) std::remove(s.tmp.c_str());
}

Status OutputSet::add(const std::string& path, std::string_view data) {
  for (const Staged& s : staged_)
    if (same_file(s.path, path)) return errorf("{}: named twice among the outputs", path);
  std::string tmp;
  SP_RETURN_IF_ERROR(stage(path, data, &tmp));
  staged_.push_back(Staged{path, std::move(tmp)});
  return {};
}

Status OutputSet::commit_all() {
  std::vector<Staged> staged = std::move(staged_);
  staged_.clear();
  Status first;
  for (const Staged& s : staged) {
    if (!first.ok()) {
      std::remove(s.tmp.c_str());
      continue;
    }
    first = commit(s.tmp, s.path);
  }
  return first;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ea, eb, ec;
  const auto ca = std::filesystem::weakly_canonical(a, ea), cb = std::filesystem::weakly_canonical(b, eb);
  if (!ea && !eb && ca == cb) return true;
  return std::filesystem::equivalent(a, b, ec) && !ec;
}

}  // namespace sparrow
