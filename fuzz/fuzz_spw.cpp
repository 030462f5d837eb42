// The .spw reader (sections, Huffman streams, encodings, graph), the load path and planning, and a
// run when small. Mutated files would nearly all stop at the checksums, so the target first makes
// the header's file size and every checksum it can locate agree with the mutated bytes: the fuzzer
// then reaches the parsers behind them.
#include <algorithm>
#include <cstring>
#include <string>

#include "format/spw_format.h"
#include "fuzz_util.h"
#include "sparrow/format.h"

namespace {

void repair_checksums(std::string& file) {
  using namespace sparrow::spw;
  if (file.size() < sizeof(SpwHeader)) return;
  SpwHeader h;
  std::memcpy(&h, file.data(), sizeof h);
  h.file_bytes = file.size();
  const uint64_t count = std::min<uint64_t>(h.section_count, kMaxSections);
  if (h.table_offset == sizeof(SpwHeader) && h.table_offset + count * sizeof(SectionEntry) <= file.size()) {
    for (uint64_t i = 0; i < count; ++i) {
      SectionEntry s;
      char* at = file.data() + h.table_offset + i * sizeof(SectionEntry);
      std::memcpy(&s, at, sizeof s);
      if (s.offset <= file.size() && s.bytes <= file.size() - s.offset) {
        s.crc = crc32_of(std::string_view(file).substr(s.offset, s.bytes));
        std::memcpy(at, &s, sizeof s);
      }
    }
    h.table_crc = crc32_of(std::string_view(file).substr(h.table_offset, count * sizeof(SectionEntry)));
  }
  std::memcpy(file.data(), &h, sizeof h);
  h.header_crc = crc32_of(std::string_view(file).substr(0, 60));
  std::memcpy(file.data() + 60, &h.header_crc, 4);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparrow;
  std::string file(reinterpret_cast<const char*>(data), size);
  repair_checksums(file);
  auto spw = parse_spw(file, "fuzz.spw");
  if (!spw.ok()) return 0;
  auto executor = Executor::create(std::move(*spw), fuzz::bounded_options());
  if (executor.ok()) fuzz::plan_and_run(**executor);
  return 0;
}
