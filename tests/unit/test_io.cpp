#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>

#include <zlib.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace sparrow {
namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string npy_bytes(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + dict.size() + 1) % 64) dict += ' ';
  dict += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(dict.size());
  out.append(reinterpret_cast<char*>(&len), 2);
  return out + dict + data;
}

TEST(Npy, RoundTripsFloatAndInt) {
  std::string dir = test::temp_dir("npy");
  for (Shape shape : {Shape{}, Shape{5}, Shape{2, 3, 4}, Shape{0, 3}}) {
    Tensor t = test::random_f32(shape, 3);
    ASSERT_TRUE(write_npy(dir + "/a.npy", t).ok());
    auto back = read_npy(dir + "/a.npy");
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(back->shape(), shape);
    EXPECT_EQ(std::memcmp(back->raw(), t.raw(), t.bytes()), 0);
  }
  Tensor i = test::make_i64({3}, {-5, 0, int64_t{1} << 40});
  ASSERT_TRUE(write_npy(dir + "/i.npy", i).ok());
  auto back = read_npy(dir + "/i.npy");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->i64_data()[2], int64_t{1} << 40);
}

TEST(Npy, ReadsHalfDoubleAndBytes) {
  std::string dir = test::temp_dir("npy_kinds");
  uint16_t halves[2] = {0x3C00, 0xC000};
  write_bytes(dir + "/h.npy", npy_bytes("<f2", "(2,)", std::string(reinterpret_cast<char*>(halves), 4)));
  auto h = read_npy(dir + "/h.npy");
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->f32_data()[0], 1.0f);
  EXPECT_EQ(h->f32_data()[1], -2.0f);
  double d = 0.25;
  write_bytes(dir + "/d.npy", npy_bytes("<f8", "(1, 1)", std::string(reinterpret_cast<char*>(&d), 8)));
  EXPECT_EQ(read_npy(dir + "/d.npy")->f32_data()[0], 0.25f);
  write_bytes(dir + "/u.npy", npy_bytes("|u1", "(3,)", "\x01\x02\xff"));
  auto u = read_npy(dir + "/u.npy");
  ASSERT_EQ(u->dtype(), DType::i64);
  EXPECT_EQ(u->i64_data()[2], 255);
}

TEST(Npy, HeadersWithMuchWhitespaceAreReadInLinearTime) {
  // Legal: NumPy pads with spaces, and any whitespace may sit inside the tuple (a regex-based parser
  // recursed once per character here and overflowed the stack).
  std::string dir = test::temp_dir("npy_spaces");
  float values[6] = {1, 2, 3, 4, 5, 6};
  std::string shape = "(2," + std::string(30000, ' ') + "3)";
  write_bytes(dir + "/s.npy",
              npy_bytes("<f4", shape, std::string(reinterpret_cast<char*>(values), sizeof values)));
  auto t = read_npy(dir + "/s.npy");
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->shape(), (Shape{2, 3}));
  EXPECT_EQ(t->f32_data()[5], 6.0f);
  std::string padded_key =
      "{'descr'" + std::string(20000, ' ') + ": '<f4', 'fortran_order': False, 'shape': (1,), }";
  std::string out("\x93NUMPY\x01\x00", 8);
  while ((10 + padded_key.size() + 1) % 64) padded_key += ' ';
  padded_key += '\n';
  uint16_t len = static_cast<uint16_t>(padded_key.size());
  out.append(reinterpret_cast<char*>(&len), 2);
  write_bytes(dir + "/k.npy", out + padded_key + std::string(4, '\0'));
  t = read_npy(dir + "/k.npy");
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->shape(), (Shape{1}));
}

TEST(Npy, RejectsBadFilesWithFieldNames) {
  std::string dir = test::temp_dir("npy_bad");
  write_bytes(dir + "/short.npy", npy_bytes("<f4", "(4,)", "abcd"));
  auto r = read_npy(dir + "/short.npy");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos);
  write_bytes(dir + "/c.npy", npy_bytes("<c8", "(1,)", "12345678"));
  EXPECT_NE(read_npy(dir + "/c.npy").status().message().find("descr"), std::string::npos);
  write_bytes(dir + "/junk.npy", "hello");
  EXPECT_FALSE(read_npy(dir + "/junk.npy").ok());
  EXPECT_NE(read_npy(dir + "/missing.npy").status().message().find("no such file"), std::string::npos);
}

// read_npy reads the data into the tensor in parts (directly, or converted chunk by chunk); it
// gives what parse_npy gives on the whole file for every element kind, also across the chunks of a
// converted array larger than one chunk, and the same errors (named by the file) on cut files.
TEST(Npy, FileReadsInPartsMatchWholeBufferParses) {
  const std::string dir = test::temp_dir("npy_parts");
  auto element_bytes = [](int64_t n, int width, uint64_t seed) {
    std::string data(static_cast<size_t>(n * width), '\0');
    uint64_t state = seed;
    for (char& c : data) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      c = static_cast<char>(state >> 56);
    }
    return data;
  };
  struct Kind {
    const char* descr;
    int width;
    int64_t n;
  };
  // 600000 doubles are 4.8 MB: two chunks of conversion. Half floats stay finite below 0x7C00.
  for (const Kind k : {Kind{"<f4", 4, 1000}, Kind{"<f8", 8, 600000}, Kind{"<i8", 8, 100}, Kind{"<i4", 4, 100},
                       Kind{"<u4", 4, 50}, Kind{"|u1", 1, 3000}, Kind{"|b1", 1, 10}, Kind{"<i2", 2, 7}}) {
    std::string data = element_bytes(k.n, k.width, static_cast<uint64_t>(k.n));
    if (k.width == 8 && k.descr[1] == 'f')  // finite doubles: clear each value's top exponent bit
      for (int64_t i = 0; i < k.n; ++i) data[static_cast<size_t>(i * 8 + 7)] &= 0x3f;
    const std::string bytes = npy_bytes(k.descr, fmt::format("({},)", k.n), data);
    write_bytes(dir + "/a.npy", bytes);
    auto whole = parse_npy(std::span<const char>(bytes.data(), bytes.size()));
    auto parts = read_npy(dir + "/a.npy");
    ASSERT_TRUE(whole.ok() && parts.ok()) << k.descr << ": " << parts.status().message();
    ASSERT_EQ(parts->dtype(), whole->dtype()) << k.descr;
    ASSERT_EQ(parts->shape(), whole->shape()) << k.descr;
    EXPECT_EQ(std::memcmp(parts->raw(), whole->raw(), whole->bytes()), 0) << k.descr;
    // Each element against its own conversion, written here apart from the reader's.
    for (int64_t i = 0; i < k.n; i += std::max<int64_t>(1, k.n / 997)) {
      const char* p = data.data() + i * k.width;
      auto as = [p]<class T>(T) {
        T v;
        std::memcpy(&v, p, sizeof v);
        return v;
      };
      const std::string descr = k.descr;
      if (descr == "<i8") {  // beyond a double's exact integers
        ASSERT_EQ(parts->i64_data()[i], as(int64_t{})) << i;
        continue;
      }
      if (descr == "<f4") {  // the bits as they are (random bytes: NaNs too, kept as stored)
        ASSERT_EQ(std::bit_cast<uint32_t>(parts->f32_data()[i]), std::bit_cast<uint32_t>(as(float{}))) << i;
        continue;
      }
      const double want = descr == "<f8"   ? static_cast<double>(static_cast<float>(as(double{})))
                          : descr == "<i4" ? static_cast<double>(as(int32_t{}))
                          : descr == "<u4" ? static_cast<double>(as(uint32_t{}))
                          : descr == "|u1" ? static_cast<double>(as(uint8_t{}))
                          : descr == "|b1" ? (as(uint8_t{}) != 0 ? 1.0 : 0.0)
                                           : static_cast<double>(as(int16_t{}));
      if (parts->dtype() == DType::f32) {
        ASSERT_EQ(parts->f32_data()[i], static_cast<float>(want)) << descr << " " << i;
      } else {
        ASSERT_EQ(parts->i64_data()[i], static_cast<int64_t>(want)) << descr << " " << i;
      }
    }
    write_bytes(dir + "/cut.npy", bytes.substr(0, bytes.size() - 1));
    auto cut = read_npy(dir + "/cut.npy");
    ASSERT_FALSE(cut.ok()) << k.descr;
    EXPECT_NE(cut.status().message().find(dir + "/cut.npy: data is truncated"), std::string::npos)
        << cut.status().message();
  }
  const std::string header = npy_bytes("<f4", "(2,)", "");
  for (size_t keep : {size_t{4}, size_t{9}, size_t{40}}) {
    write_bytes(dir + "/header.npy", header.substr(0, keep));
    auto r = read_npy(dir + "/header.npy");
    ASSERT_FALSE(r.ok()) << keep;
    EXPECT_EQ(r.status().message().rfind(dir + "/header.npy: ", 0), 0u) << r.status().message();
  }
}

// Whether this process has `path` mapped (a line of /proc/self/maps names it).
bool mapped_in_process(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  const std::string canonical = std::filesystem::canonical(path).string();
  for (std::string line; std::getline(maps, line);)
    if (line.size() >= canonical.size() &&
        line.compare(line.size() - canonical.size(), canonical.size(), canonical) == 0)
      return true;
  return false;
}

// A float32 array as numpy writes it (data on a 64-byte boundary) stays in its file: the tensor
// lies over a mapping that lives exactly as long as the tensor, holds what read_npy reads, and
// takes writes into private pages, never into the file.
TEST(Npy, MapNpyLeavesFloatArraysInTheirFile) {
  const std::string dir = test::temp_dir("npy_map");
  const std::string path = dir + "/x.npy";
  const Tensor x = test::random_f32({300, 7, 5}, 11);
  ASSERT_TRUE(write_npy(path, x).ok());
  {
    auto mapped = map_npy(path);
    ASSERT_TRUE(mapped.ok()) << mapped.status().message();
    EXPECT_TRUE(mapped->is_mapping());
    EXPECT_TRUE(mapped_in_process(path));
    EXPECT_EQ(mapped->shape(), x.shape());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(mapped->raw()) % 64, 0u);
    EXPECT_EQ(std::memcmp(mapped->raw(), x.raw(), x.bytes()), 0);

    mapped->f32_data()[0] = 12345.0f;  // a private page
    const Tensor copy = *mapped;
    EXPECT_FALSE(copy.is_mapping());
    EXPECT_EQ(copy.f32_data()[0], 12345.0f);
    mapped->keep_leading(10);
    EXPECT_EQ(mapped->shape(), (Shape{10, 7, 5}));
    EXPECT_EQ(mapped->f32_data()[349], x.f32_data()[349]);

    Tensor moved = std::move(*mapped);  // the mapping goes with it
    EXPECT_TRUE(moved.is_mapping());
    EXPECT_FALSE(mapped->is_mapping());
    preload_mapping(moved);  // reads pages; changes nothing
    EXPECT_EQ(moved.f32_data()[349], x.f32_data()[349]);
    moved.reset(DType::f32, {4});  // new memory, not the mapping's pages
    EXPECT_FALSE(moved.is_mapping());
    EXPECT_FALSE(mapped_in_process(path)) << "reset gives the mapping up";
  }
  EXPECT_FALSE(mapped_in_process(path));
  auto again = read_npy(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(std::memcmp(again->raw(), x.raw(), x.bytes()), 0);
}

// Arrays that cannot be used where they lie are read as read_npy reads them: other dtypes, data
// off a 64-byte boundary (NPY headers padded to 16 bytes, as numpy wrote them before 1.14), empty
// arrays; and a cut file fails with the file's name as read_npy does.
TEST(Npy, MapNpyReadsWhatCannotBeMapped) {
  const std::string dir = test::temp_dir("npy_map_read");
  const double d[3] = {0.5, -1.0, 2.0};
  write_bytes(dir + "/d.npy",
              npy_bytes("<f8", "(3,)", std::string(reinterpret_cast<const char*>(d), sizeof d)));
  auto as_double = map_npy(dir + "/d.npy");
  ASSERT_TRUE(as_double.ok()) << as_double.status().message();
  EXPECT_FALSE(as_double->is_mapping());
  EXPECT_EQ(as_double->f32_data()[1], -1.0f);

  const float f[4] = {1, 2, 3, 4};
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
  while ((10 + dict.size() + 1) % 16 != 0 || (10 + dict.size() + 1) % 64 == 0) dict += ' ';
  dict += '\n';
  std::string bytes("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(dict.size());
  bytes.append(reinterpret_cast<const char*>(&len), 2);
  write_bytes(dir + "/a16.npy", bytes + dict + std::string(reinterpret_cast<const char*>(f), sizeof f));
  auto off_boundary = map_npy(dir + "/a16.npy");
  ASSERT_TRUE(off_boundary.ok()) << off_boundary.status().message();
  EXPECT_FALSE(off_boundary->is_mapping());
  EXPECT_EQ(off_boundary->f32_data()[3], 4.0f);

  ASSERT_TRUE(write_npy(dir + "/empty.npy", Tensor(DType::f32, {0, 3})).ok());
  auto empty = map_npy(dir + "/empty.npy");
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->is_mapping());
  EXPECT_EQ(empty->shape(), (Shape{0, 3}));

  write_bytes(dir + "/short.npy", npy_bytes("<f4", "(4,)", "abcd"));
  auto cut = map_npy(dir + "/short.npy");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("short.npy"), std::string::npos);
  EXPECT_NE(cut.status().message().find("truncated"), std::string::npos);
}

// Writes an .npz (stored) of 16 ones whose first value was then changed to 4 in the archive: its
// checksum no longer matches. False if the value was not found.
bool write_flipped_npz(const std::string& path) {
  Tensor ones(DType::f32, {16});
  for (int64_t i = 0; i < 16; ++i) ones.f32_data()[i] = 1.0f;
  if (!write_npz(path, {{"x", ones}}).ok()) return false;
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const size_t value = bytes.find(std::string("\x00\x00\x80\x3f", 4), bytes.find("NUMPY"));
  if (value == std::string::npos) return false;
  bytes[value + 3] = 0x40;  // 1.0f becomes 4.0f
  write_bytes(path, bytes);
  return true;
}

TEST(Npz, RoundTripsStoredAndDeflatedArrays) {
  const std::string dir = test::temp_dir("npz");
  Tensor x = test::random_f32({5, 3, 4}, 1);
  Tensor y(DType::i64, {5});
  for (int64_t i = 0; i < 5; ++i) y.i64_data()[i] = 9 - i;
  for (bool compressed : {false, true}) {
    const std::string path = dir + (compressed ? "/deflated.npz" : "/stored.npz");
    ASSERT_TRUE(write_npz(path, {{"x", x}, {"y", y}}, compressed).ok());
    auto arrays = read_npz(path);
    ASSERT_TRUE(arrays.ok()) << arrays.status().message();
    ASSERT_EQ(arrays->size(), 2u);
    EXPECT_EQ(arrays->at("x").shape(), x.shape());
    EXPECT_EQ(std::memcmp(arrays->at("x").raw(), x.raw(), x.bytes()), 0) << "compressed " << compressed;
    EXPECT_EQ(std::vector<int64_t>(arrays->at("y").i64_data(), arrays->at("y").i64_data() + 5),
              (std::vector<int64_t>{9, 8, 7, 6, 5}));
  }
  const auto stored = std::filesystem::file_size(dir + "/stored.npz");
  Tensor zeros(DType::f32, {4096});
  ASSERT_TRUE(write_npz(dir + "/zeros.npz", {{"x", zeros}}, true).ok());
  EXPECT_LT(std::filesystem::file_size(dir + "/zeros.npz"), 1024u) << "deflated";
  EXPECT_GT(stored, x.bytes()) << "stored as is";
}

TEST(Npz, BadArchivesNameTheFileAndEntry) {
  const std::string dir = test::temp_dir("npz_bad");
  write_bytes(dir + "/junk.npz", "not a zip at all");
  auto junk = read_npz(dir + "/junk.npz");
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.status().message().find(dir + "/junk.npz: not a readable .npz"), std::string::npos)
      << junk.status().message();
  // Every truncation of a valid archive is an error, never a crash.
  ASSERT_TRUE(write_npz(dir + "/good.npz", {{"x", test::random_f32({3, 2}, 2)}}, true).ok());
  std::ifstream in(dir + "/good.npz", std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t cut = 0; cut < good.size(); cut += 7) {
    write_bytes(dir + "/cut.npz", good.substr(0, cut));
    EXPECT_FALSE(read_npz(dir + "/cut.npz").ok()) << "cut at " << cut;
  }
  // An entry that is no array, and an array entry that is not NPY.
  Tensor one(DType::f32, {1});
  ASSERT_TRUE(write_npz(dir + "/odd.npz", {{"x", one}}).ok());
  std::ifstream odd_in(dir + "/odd.npz", std::ios::binary);
  std::string odd((std::istreambuf_iterator<char>(odd_in)), std::istreambuf_iterator<char>());
  for (size_t at = odd.find("x.npy"); at != std::string::npos; at = odd.find("x.npy", at + 1))
    odd[at + 2] = 't';  // "x.tpy"
  write_bytes(dir + "/renamed.npz", odd);
  auto renamed = read_npz(dir + "/renamed.npz");
  ASSERT_FALSE(renamed.ok());
  EXPECT_NE(renamed.status().message().find("entry 'x.tpy' is not an array"), std::string::npos)
      << renamed.status().message();
  // A stored array's data changed: its checksum no longer matches.
  ASSERT_TRUE(write_flipped_npz(dir + "/flipped.npz"));
  auto crc = read_npz(dir + "/flipped.npz");
  ASSERT_FALSE(crc.ok()) << "a changed value passes unnoticed";
  EXPECT_NE(crc.status().message().find("entry 'x.npy'"), std::string::npos) << crc.status().message();
  std::ifstream again(dir + "/odd.npz", std::ios::binary);
  std::string bad_magic((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  bad_magic[bad_magic.find("NUMPY")] = 'X';  // the stored entry's data; its CRC no longer matches
  write_bytes(dir + "/magic.npz", bad_magic);
  auto magic = read_npz(dir + "/magic.npz");
  ASSERT_FALSE(magic.ok());
  EXPECT_NE(magic.status().message().find("entry 'x.npy'"), std::string::npos) << magic.status().message();
}

TEST(Npz, OneArrayIsReadOrUnpackedAlone) {
  const std::string dir = test::temp_dir("npz_one");
  Tensor x = test::random_f32({6, 2, 3}, 4);
  Tensor y(DType::i64, {6});
  for (int64_t i = 0; i < 6; ++i) y.i64_data()[i] = i % 3;
  for (bool compressed : {false, true}) {
    const std::string path = dir + (compressed ? "/deflated.npz" : "/stored.npz");
    ASSERT_TRUE(write_npz(path, {{"x", x}, {"y", y}}, compressed).ok());
    auto labels = read_npz_array(path, "y");
    ASSERT_TRUE(labels.ok()) << labels.status().message();
    EXPECT_EQ(std::vector<int64_t>(labels->i64_data(), labels->i64_data() + 6),
              (std::vector<int64_t>{0, 1, 2, 0, 1, 2}));
    EXPECT_TRUE(*npz_has_array(path, "x"));
    EXPECT_FALSE(*npz_has_array(path, "z"));
    const std::string unpacked = dir + "/x.npy";
    ASSERT_TRUE(extract_npz_array(path, "x", unpacked).ok());
    std::ifstream in(unpacked, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(bytes, sparrow::npy_bytes(x)) << "the entry's bytes, compressed " << compressed;
    auto mapped = map_npy(unpacked);
    ASSERT_TRUE(mapped.ok()) << mapped.status().message();
    EXPECT_EQ(std::memcmp(mapped->raw(), x.raw(), x.bytes()), 0);
    auto missing = read_npz_array(path, "z");
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.status().message().find(path + ": no array 'z' among the entries 'x.npy', 'y.npy'"),
              std::string::npos)
        << missing.status().message();
    EXPECT_FALSE(extract_npz_array(path, "z", dir + "/z.npy").ok());
    EXPECT_FALSE(std::filesystem::exists(dir + "/z.npy"));
  }
  // Data that does not match its checksum: an error, and nothing at the output path.
  ASSERT_TRUE(write_flipped_npz(dir + "/flipped.npz"));
  auto bad = extract_npz_array(dir + "/flipped.npz", "x", dir + "/flipped.npy");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("array 'x'"), std::string::npos) << bad.message();
  EXPECT_FALSE(std::filesystem::exists(dir + "/flipped.npy"));
  EXPECT_FALSE(read_npz_array(dir + "/flipped.npz", "x").ok());
}

TEST(Cifar10, ReadsRecordsAcrossFilesUpToALimit) {
  const std::string dir = test::temp_dir("cifar");
  ImageSet a, b;
  a.images = Tensor(DType::f32, {3, 3, 32, 32});
  b.images = Tensor(DType::f32, {2, 3, 32, 32});
  for (int64_t i = 0; i < a.images.numel(); ++i) a.images.f32_data()[i] = static_cast<float>(i % 251);
  for (int64_t i = 0; i < b.images.numel(); ++i) b.images.f32_data()[i] = static_cast<float>((i * 7) % 256);
  a.labels = {0, 9, 4};
  b.labels = {1, 2};
  ASSERT_TRUE(write_cifar10(dir + "/a.bin", a).ok());
  ASSERT_TRUE(write_cifar10(dir + "/b.bin", b).ok());
  EXPECT_EQ(std::filesystem::file_size(dir + "/a.bin"), 3u * 3073u);
  const std::vector<std::string> files = {dir + "/a.bin", dir + "/b.bin"};
  auto all = read_cifar10(files);
  ASSERT_TRUE(all.ok()) << all.status().message();
  EXPECT_EQ(all->images.shape(), (Shape{5, 3, 32, 32}));
  EXPECT_EQ(all->labels, (std::vector<int64_t>{0, 9, 4, 1, 2}));
  EXPECT_EQ(std::memcmp(all->images.raw(), a.images.raw(), a.images.bytes()), 0);
  EXPECT_EQ(std::memcmp(all->images.f32_data() + a.images.numel(), b.images.raw(), b.images.bytes()), 0);
  auto four = read_cifar10(files, 4);
  ASSERT_TRUE(four.ok());
  EXPECT_EQ(four->images.dim(0), 4);
  EXPECT_EQ(four->labels, (std::vector<int64_t>{0, 9, 4, 1}));
}

TEST(Cifar10, BadFilesNameTheFileAndRecord) {
  const std::string dir = test::temp_dir("cifar_bad");
  std::string record(3073, '\x10');
  record[0] = 3;
  write_bytes(dir + "/short.bin", record + record.substr(0, 100));
  auto r = read_cifar10(std::vector<std::string>{dir + "/short.bin"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(dir + "/short.bin: 3173 bytes is not a whole number"),
            std::string::npos)
      << r.status().message();
  std::string bad_label = record + record;
  bad_label[3073] = 42;
  write_bytes(dir + "/label.bin", bad_label);
  r = read_cifar10(std::vector<std::string>{dir + "/label.bin"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("record 1: label 42 is not a CIFAR-10 class"), std::string::npos)
      << r.status().message();
  write_bytes(dir + "/empty.bin", "");
  EXPECT_FALSE(read_cifar10(std::vector<std::string>{dir + "/empty.bin"}).ok());
  EXPECT_NE(
      read_cifar10(std::vector<std::string>{dir + "/missing.bin"}).status().message().find("missing.bin"),
      std::string::npos);
}

// The streamed records are read_cifar10's; a bad label stops the walk at its record; a callback's
// error comes back as it is.
TEST(Cifar10, StreamsTheRecordsReadCifar10Reads) {
  const std::string dir = test::temp_dir("cifar_stream");
  ImageSet a;
  a.images = Tensor(DType::f32, {3, 3, 32, 32});
  for (int64_t i = 0; i < a.images.numel(); ++i) a.images.f32_data()[i] = static_cast<float>((i * 13) % 256);
  a.labels = {5, 0, 9};
  ASSERT_TRUE(write_cifar10(dir + "/a.bin", a).ok());
  ASSERT_TRUE(write_cifar10(dir + "/b.bin", a).ok());
  const std::vector<std::string> files = {dir + "/a.bin", dir + "/b.bin"};
  for (int64_t limit : {0, 2, 4}) {
    auto whole = read_cifar10(files, limit);
    ASSERT_TRUE(whole.ok());
    std::vector<float> pixels;
    std::vector<int64_t> labels;
    int64_t announced = -1;
    auto s = for_each_cifar10_record(
        files, limit, [&](int64_t n) { return announced = n, Status{}; },
        [&](int64_t row, int64_t label, const float* p) {
          EXPECT_EQ(row, static_cast<int64_t>(labels.size()));
          labels.push_back(label);
          pixels.insert(pixels.end(), p, p + 3 * 32 * 32);
          return Status{};
        });
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(announced, whole->images.dim(0));
    EXPECT_EQ(labels, whole->labels) << "limit " << limit;
    ASSERT_EQ(static_cast<int64_t>(pixels.size()), whole->images.numel());
    EXPECT_EQ(std::memcmp(pixels.data(), whole->images.raw(), whole->images.bytes()), 0);
  }
  std::ifstream in(dir + "/a.bin", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes[2 * 3073] = 10;
  write_bytes(dir + "/bad.bin", bytes);
  int records = 0;
  auto bad = for_each_cifar10_record(
      std::vector<std::string>{dir + "/bad.bin"}, 0, [](int64_t) { return Status{}; },
      [&](int64_t, int64_t, const float*) { return ++records, Status{}; });
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find(dir + "/bad.bin: record 2: label 10"), std::string::npos) << bad.message();
  EXPECT_EQ(records, 2);
  auto stopped = for_each_cifar10_record(
      files, 0, [](int64_t) { return Status{}; },
      [](int64_t row, int64_t, const float*) { return row == 1 ? errorf("stop here") : Status{}; });
  EXPECT_EQ(stopped.message(), "stop here");
}

std::string idx_bytes(uint8_t type, std::vector<uint32_t> dims, const std::string& data) {
  std::string out = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((d >> s) & 0xff));
  return out + data;
}

TEST(Idx, ReadsPlainAndGzip) {
  std::string dir = test::temp_dir("idx");
  std::string img =
      idx_bytes(0x08, {2, 2, 3}, std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\xff", 12));
  write_bytes(dir + "/plain-idx3-ubyte", img);
  gzFile gz = gzopen((dir + "/img.gz").c_str(), "wb");
  gzwrite(gz, img.data(), static_cast<unsigned>(img.size()));
  gzclose(gz);
  for (const char* name : {"/plain-idx3-ubyte", "/img.gz"}) {
    auto t = read_idx(dir + name);
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(t->shape(), (Shape{2, 2, 3}));
    EXPECT_EQ(t->f32_data()[11], 255.0f);
  }
  write_bytes(dir + "/labels", idx_bytes(0x08, {3}, std::string("\x07\x00\x09", 3)));
  auto labels = read_idx_labels(dir + "/labels");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(*labels, (std::vector<int64_t>{7, 0, 9}));
}

// Rows streamed from plain and gzip files of several element types are read_idx's; a short file
// fails at the row it ends in, data past the rows fails once every row is walked; a callback's error
// comes back as it is.
TEST(Idx, StreamsTheRowsReadIdxReads) {
  const std::string dir = test::temp_dir("idx_stream");
  std::string u8(24, '\0'), i16;
  for (int i = 0; i < 24; ++i) u8[static_cast<size_t>(i)] = static_cast<char>(i * 11);
  for (int i = 0; i < 24; ++i) {
    const auto v = static_cast<uint16_t>(static_cast<int16_t>(i * 1000 - 12000));
    i16 += {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
  }
  for (const auto& [name, bytes] : {std::pair<std::string, std::string>{"u8", idx_bytes(0x08, {4, 2, 3}, u8)},
                                    {"i16", idx_bytes(0x0B, {4, 2, 3}, i16)}}) {
    write_bytes(dir + "/" + name, bytes);
    gzFile gz = gzopen((dir + "/" + name + ".gz").c_str(), "wb");
    gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(gz);
    for (const std::string& path : {dir + "/" + name, dir + "/" + name + ".gz"})
      for (int64_t limit : {0, 1, 3, 9}) {
        auto whole = read_idx(path);
        ASSERT_TRUE(whole.ok()) << whole.status().message();
        Shape dims;
        std::vector<float> values;
        auto s = for_each_idx_row(
            path, limit, [&](const Shape& d) { return dims = d, Status{}; },
            [&](int64_t row, const float* v) {
              EXPECT_EQ(row * 6, static_cast<int64_t>(values.size()));
              values.insert(values.end(), v, v + 6);
              return Status{};
            });
        ASSERT_TRUE(s.ok()) << s.message();
        EXPECT_EQ(dims, (Shape{4, 2, 3}));
        const int64_t rows = limit > 0 ? std::min<int64_t>(limit, 4) : 4;
        EXPECT_EQ(values, std::vector<float>(whole->f32_data(), whole->f32_data() + rows * 6))
            << path << " limit " << limit;
      }
  }
  auto rows_of = [&](const std::string& path, int64_t limit, int* rows) {
    return for_each_idx_row(
        path, limit, [](const Shape&) { return Status{}; },
        [&](int64_t, const float*) { return ++*rows, Status{}; });
  };
  write_bytes(dir + "/short", idx_bytes(0x08, {4, 2, 3}, u8.substr(0, 15)));
  int rows = 0;
  auto short_file = rows_of(dir + "/short", 0, &rows);
  ASSERT_FALSE(short_file.ok());
  EXPECT_NE(
      short_file.message().find(dir + "/short: field dims: [4, 2, 3] needs 24 bytes of data, file has 15"),
      std::string::npos)
      << short_file.message();
  EXPECT_EQ(rows, 2) << "the whole rows before the end";
  rows = 0;
  EXPECT_TRUE(rows_of(dir + "/short", 2, &rows).ok()) << "the rows asked for are there";
  write_bytes(dir + "/long", idx_bytes(0x08, {4, 2, 3}, u8 + "x"));
  rows = 0;
  auto long_file = rows_of(dir + "/long", 0, &rows);
  ASSERT_FALSE(long_file.ok());
  EXPECT_NE(long_file.message().find("file has more"), std::string::npos) << long_file.message();
  rows = 0;
  EXPECT_TRUE(rows_of(dir + "/long", 3, &rows).ok()) << "with fewer rows asked for, the rest is not read";
  EXPECT_FALSE(rows_of(dir + "/long", 4, &rows).ok()) << "every row walked: the data past them is seen";
  write_bytes(dir + "/type", idx_bytes(0x42, {1}, "a"));
  EXPECT_NE(rows_of(dir + "/type", 0, &rows).message().find(dir + "/type: field type"), std::string::npos);
  EXPECT_NE(rows_of(dir + "/missing", 0, &rows).message().find("missing"), std::string::npos);
  write_bytes(dir + "/huge", idx_bytes(0x0E, {1, 65536, 65536}, ""));  // rows of 32 GiB, no data
  auto huge = rows_of(dir + "/huge", 0, &rows);
  EXPECT_NE(huge.message().find(dir + "/huge: field dims: rows of [65536, 65536] are too large"),
            std::string::npos)
      << huge.message();
  auto stopped = for_each_idx_row(
      dir + "/u8", 0, [](const Shape&) { return Status{}; },
      [](int64_t row, const float*) { return row == 2 ? errorf("stop here") : Status{}; });
  EXPECT_EQ(stopped.message(), "stop here");
}

TEST(Idx, RejectsCorruptFiles) {
  std::string dir = test::temp_dir("idx_bad");
  write_bytes(dir + "/short", idx_bytes(0x08, {2, 3}, "abc"));
  auto r = read_idx(dir + "/short");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("field dims"), std::string::npos) << r.status().message();
  write_bytes(dir + "/type", idx_bytes(0x42, {1}, "a"));
  EXPECT_NE(read_idx(dir + "/type").status().message().find("field type"), std::string::npos);
  write_bytes(dir + "/bad.gz", std::string("\x1f\x8b\x08\x00garbage", 12));
  EXPECT_FALSE(read_idx(dir + "/bad.gz").ok());
  EXPECT_FALSE(read_idx(dir + "/missing").ok());
}

TEST(Idx, LabelsThatAreNoClassIndexAreRefused) {
  // Float IDX labels: NaN, infinity, huge, negative and fractional values never reach an integer cast.
  std::string dir = test::temp_dir("idx_labels");
  for (float bad : {std::nanf(""), INFINITY, 1e30f, -1.0f, 2.5f}) {
    uint32_t bits = std::bit_cast<uint32_t>(bad);
    std::string be = {static_cast<char>(bits >> 24), static_cast<char>(bits >> 16),
                      static_cast<char>(bits >> 8), static_cast<char>(bits)};
    write_bytes(dir + "/labels", idx_bytes(0x0D, {2}, std::string("\x40\x00\x00\x00", 4) + be));  // 2.0, bad
    auto r = read_idx_labels(dir + "/labels");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("label 1"), std::string::npos) << r.status().message();
  }
}

TEST(Idx, WritesWhatItReads) {
  std::string dir = test::temp_dir("idx_write");
  std::vector<uint8_t> values{0, 1, 2, 127, 128, 255};
  for (const char* name : {"/a-idx3-ubyte", "/a-idx3-ubyte.gz"}) {
    ASSERT_TRUE(write_idx_u8(dir + name, {1, 2, 3}, values).ok());
    auto t = read_idx(dir + name);
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(t->shape(), (Shape{1, 2, 3}));
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(t->f32_data()[i], values[i]);
  }
  auto wrong = write_idx_u8(dir + "/wrong", {2, 2}, values);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("needs 4 values"), std::string::npos) << wrong.message();
  EXPECT_FALSE(std::filesystem::exists(dir + "/wrong"));
}

TEST(Idx, ReadsMnistWhenPresent) {
  std::string dir = SPARROW_MNIST_DIR;
  if (!std::filesystem::exists(dir + "/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "MNIST not found at " << dir << "; skipping";
  auto images = read_idx(dir + "/t10k-images-idx3-ubyte.gz");
  ASSERT_TRUE(images.ok()) << images.status().message();
  EXPECT_EQ(images->shape(), (Shape{10000, 28, 28}));
  auto labels = read_idx_labels(dir + "/t10k-labels-idx1-ubyte.gz");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(labels->size(), 10000u);
  EXPECT_EQ((*labels)[0], 7);  // the first MNIST test digit is a 7
}

TEST(Onnx, ExportImportGivesIdenticalOutputs) {
  Model m = test::small_cnn();
  auto bytes = serialize_onnx(m);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto back = parse_onnx(*bytes, "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->nodes.size(), m.nodes.size());
  EXPECT_EQ(back->parameter_count(), m.parameter_count());
  Tensor x = test::random_f32({3, 1, 8, 8}, 9);
  auto e1 = Executor::create(m);
  auto e2 = Executor::create(std::move(*back));
  ASSERT_TRUE(e1.ok() && e2.ok());
  auto y1 = (*e1)->run({&x, 1});
  auto y2 = (*e2)->run({&x, 1});
  ASSERT_TRUE(y1.ok()) << y1.status().message();
  ASSERT_TRUE(y2.ok()) << y2.status().message();
  EXPECT_EQ(std::memcmp((*y1)[0]->raw(), (*y2)[0]->raw(), (*y1)[0]->bytes()), 0);
}

TEST(Onnx, SaveIsAtomicAndReportsUnwritablePaths) {
  Model m = test::small_cnn();
  std::string dir = test::temp_dir("onnx_save");
  ASSERT_TRUE(save_onnx(m, dir + "/m.onnx").ok());
  EXPECT_TRUE(load_onnx(dir + "/m.onnx").ok());
  auto bad = save_onnx(m, dir + "/no/such/dir/m.onnx");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("no/such/dir"), std::string::npos);
  for (const auto& e : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "temporary file left behind";
}

}  // namespace
}  // namespace sparrow

namespace sparrow {
namespace {

TEST(SyntheticDigits, JsonListsTheFilesWrittenWithTheirCounts) {
  const std::string dir = test::temp_dir("digits_json");
  auto r = test::run_cli("digits " + dir + " --train 30 --test 10 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["train"], 30);
  EXPECT_EQ(j["test"], 10);
  ASSERT_EQ(j["files"].size(), 4u);
  for (const auto& f : j["files"]) EXPECT_TRUE(std::filesystem::exists(f.get<std::string>())) << f;
  auto labels = read_idx_labels(j["files"][3].get<std::string>());
  ASSERT_TRUE(labels.ok()) << labels.status().message();
  EXPECT_EQ(labels->size(), 10u);
}

}  // namespace
}  // namespace sparrow
