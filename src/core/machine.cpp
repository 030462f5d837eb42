#include "core/machine.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace sparrow {

namespace {

// The value of the first "key : value" line of a /proc/cpuinfo for `key`, trimmed; empty if none.
std::string cpuinfo_field(const std::string& cpuinfo, const std::string& key) {
  std::istringstream lines(cpuinfo);
  for (std::string line; std::getline(lines, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name != key) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    value.erase(value.find_last_not_of(" \t\r") + 1);
    return value;
  }
  return "";
}

}  // namespace

std::string machine_description(const std::string& cpuinfo, int threads, long l2_bytes) {
  std::string cpu = cpuinfo_field(cpuinfo, "model name");
  const std::string family = cpuinfo_field(cpuinfo, "cpu family"), model = cpuinfo_field(cpuinfo, "model");
  if (cpu.empty()) cpu = "unknown CPU";
  if (!family.empty() && !model.empty()) cpu += fmt::format(" (family {}, model {})", family, model);
  std::string out = fmt::format("{}, {} hardware thread{}", cpu, threads, threads == 1 ? "" : "s");
  if (l2_bytes >= (1L << 20) && l2_bytes % (1L << 20) == 0)
    out += fmt::format(", L2 {} MiB", l2_bytes >> 20);
  else if (l2_bytes > 0)
    out += fmt::format(", L2 {} KiB", l2_bytes >> 10);
  return out;
}

int64_t l2_cache_bytes() {
#ifdef _SC_LEVEL2_CACHE_SIZE
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
  const long l2 = 0;
#endif
  return l2 > 0 ? l2 : int64_t{1} << 20;
}

int64_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return static_cast<int64_t>(sysconf(_SC_AVPHYS_PAGES)) * sysconf(_SC_PAGESIZE);
}

std::string machine_description() {
  std::ifstream file("/proc/cpuinfo");
  std::stringstream text;
  text << file.rdbuf();
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#ifdef _SC_LEVEL2_CACHE_SIZE
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
  const long l2 = 0;
#endif
  return machine_description(text.str(), threads, l2 > 0 ? l2 : 0);
}

}  // namespace sparrow
