// What machine a measurement ran on, for the lines benchmarks print beside their figures.
#pragma once

#include <cstdint>
#include <string>

namespace sparrow {

// "AMD EPYC (family 26, model 2), 2 hardware threads, L2 1 MiB": the CPU's model name, family and
// model from /proc/cpuinfo, the hardware threads the system reports (std::thread::hardware_concurrency,
// not narrowed by affinity or cgroup limits), and the L2 cache per core
// where the system says; parts it cannot read are left out ("unknown CPU" when nothing is known).
std::string machine_description();
// The same from the text of a /proc/cpuinfo, a thread count and an L2 size in bytes (0: unknown).
std::string machine_description(const std::string& cpuinfo, int threads, long l2_bytes);

// The memory the system could give a process now without swapping, in bytes (MemAvailable in
// /proc/meminfo, which counts reclaimable caches; else the free pages).
int64_t available_memory_bytes();

// The L2 cache per core in bytes, as the system reports it; 1 MiB when it does not say.
int64_t l2_cache_bytes();

}  // namespace sparrow
