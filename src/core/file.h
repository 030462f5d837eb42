// Whole-file reads and crash-safe writes.
#pragma once

#include <cstddef>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "sparrow/status.h"

namespace sparrow {

// The input budget: the most bytes one input file may hold, and the most bytes a reader may
// allocate for the data one file declares (an IDX dataset streamed from gzip). 4 GiB unless set
// (the CLI's --max-input).
int64_t input_byte_limit();
void set_input_byte_limit(int64_t bytes);

// Reads a whole file. Fails with "<path>: <reason>" when missing, unreadable or larger than
// max_bytes (by default the input budget).
Result<std::vector<char>> read_file(const std::string& path, size_t max_bytes = 0);

// A file read in parts, for readers that put its contents where they belong without a copy of the
// whole file. open_input_file checks it as read_file does (and notes it as an input).
class InputFile {
 public:
  const std::string& path() const { return path_; }
  size_t size() const { return size_; }
  // Reads the next `n` bytes into `dst`; "<path>: truncated" when fewer remain.
  Status read(char* dst, size_t n);

 private:
  friend Result<InputFile> open_input_file(const std::string& path, size_t max_bytes);
  std::string path_;
  size_t size_ = 0;
  std::ifstream in_;
};
Result<InputFile> open_input_file(const std::string& path, size_t max_bytes = 0);

// Writes `data` to a temporary file next to `path`, then renames it over `path`, so a failure
// never leaves a half-written file. Refuses to replace anything but a regular file (a device, a
// directory), and, while inputs are protected, any file this process has read.
Status write_file_atomic(const std::string& path, std::string_view data);

// A file written in parts, for outputs too large to hold whole: open() checks the path as
// write_file_atomic does and creates its temporary, append() adds bytes, commit() flushes them to
// disk and renames the temporary into place. After an error every later call fails; a writer
// destroyed uncommitted removes its temporary: the path is never left half-written. One open per
// writer.
class StreamedOutput {
 public:
  StreamedOutput() = default;
  StreamedOutput(const StreamedOutput&) = delete;
  StreamedOutput& operator=(const StreamedOutput&) = delete;
  ~StreamedOutput();
  Status open(const std::string& path);
  Status append(std::string_view data);
  Status commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool failed_ = false;
};

// Several outputs written all or nothing: add() checks each path as write_file_atomic does and
// writes its temporary (flushed to disk); commit_all() renames them into place. An output that
// fails to write leaves every final path untouched: the caller returns the error, and the set's
// destructor removes the temporaries (as it does when commit_all is never called).
class OutputSet {
 public:
  OutputSet() = default;
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;
  ~OutputSet();
  Status add(const std::string& path, std::string_view data);
  // Renames every staged output into place. (A rename fails only if the folder changes under the
  // command; the outputs renamed before it stay.)
  Status commit_all();

 private:
  struct Staged {
    std::string path, tmp;
  };
  std::vector<Staged> staged_;
};

// Input protection, for a command: once on, every file read through read_file or noted with
// note_input_file is an input, and write_file_atomic refuses to replace one (by device and inode,
// so other spellings of a path and hard or symbolic links count too).
void protect_inputs(bool on);
void note_input_file(const std::string& path);

// True when both paths are the same path (after normalization) or name the same existing file,
// so an output would overwrite an input.
bool same_file(const std::string& a, const std::string& b);

}  // namespace sparrow
