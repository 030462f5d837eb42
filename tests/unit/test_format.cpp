// The relative-index encoding, Huffman coding and the .spw container.
#include <cstring>
#include <random>

#include "format/bitstream.h"
#include "format/graph_section.h"
#include "format/huffman.h"
#include "format/spw_format.h"
#include "test_util.h"

namespace sparrow {
namespace {

// A random code matrix: `density` of the entries non-zero, codes drawn from 1..2^bits-1.
std::vector<uint8_t> random_codes(int64_t rows, int64_t cols, double density, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols), 0);
  for (auto& c : codes)
    if (u(rng) < density) c = static_cast<uint8_t>(1 + rng() % ((1u << bits) - 1));
  return codes;
}

TEST(Encoding, PaperExampleColumn) {
  // [EIE]: the column [0,0,1,2, 18 zeros, 3] is stored as v=[1,2,0,3], z=[2,0,15,2] with 4-bit gaps.
  std::vector<uint8_t> col(23, 0);
  col[2] = 1;
  col[3] = 2;
  col[22] = 3;
  CompressedTensor t = encode_sparse(col, MatrixView{23, 1, false}, 1, 4);
  EXPECT_EQ(t.partitions[0].codes, (std::vector<uint8_t>{1, 2, 0, 3}));
  EXPECT_EQ(t.partitions[0].gaps, (std::vector<uint8_t>{2, 0, 15, 2}));
  EXPECT_EQ(t.partitions[0].col_counts, (std::vector<uint32_t>{4}));
  EXPECT_EQ(t.fillers(), 1);
}

TEST(Encoding, RoundTripsOverAGridOfShapesDensitiesAndPartitions) {
  uint32_t seed = 1;
  for (int64_t rows : {1, 7, 64, 300})
    for (int64_t cols : {1, 5, 33})
      for (double density : {0.0, 0.02, 0.3, 1.0})
        for (int partitions : {1, 3, 8})
          for (int index_bits : {2, 4, 8}) {
            auto codes = random_codes(rows, cols, density, 4, seed++);
            CompressedTensor t = encode_sparse(codes, MatrixView{rows, cols, false}, partitions, index_bits);
            auto back = decode_codes(t);
            ASSERT_TRUE(back.ok()) << back.status().message();
            ASSERT_EQ(*back, codes) << rows << "x" << cols << " d=" << density << " P=" << partitions
                                    << " b=" << index_bits;
            for (const auto& p : t.partitions)
              for (uint8_t g : p.gaps) ASSERT_LT(g, 1 << index_bits);
          }
}

TEST(Encoding, LongestRunsOfZerosNeedFillers) {
  // One non-zero at the end of a 1000-row column: 2-bit gaps need a filler every 4 rows.
  std::vector<uint8_t> col(1000, 0);
  col[999] = 5;
  CompressedTensor t = encode_sparse(col, MatrixView{1000, 1, false}, 1, 2);
  EXPECT_EQ(t.fillers(), 249);
  EXPECT_EQ(t.nonzeros(), 1);
  EXPECT_EQ(*decode_codes(t), col);
}

TEST(Huffman, RoundTripsAndHandlesOneSymbol) {
  std::mt19937 rng(3);
  std::vector<uint32_t> symbols;
  std::vector<uint64_t> counts(16, 0);
  for (int i = 0; i < 5000; ++i) {
    uint32_t s =
        std::min<uint32_t>(15, static_cast<uint32_t>(std::abs(std::normal_distribution<double>(0, 3)(rng))));
    symbols.push_back(s);
    ++counts[s];
  }
  auto lengths = huffman_lengths(counts);
  ASSERT_TRUE(validate_huffman_lengths(lengths).ok());
  HuffmanEncoder enc(lengths);
  BitWriter w;
  for (uint32_t s : symbols) enc.encode(w, s);
  BitReader r(w.bytes(), w.bit_count());
  HuffmanDecoder dec(lengths);
  for (uint32_t s : symbols) ASSERT_EQ(*dec.decode(r), s);
  EXPECT_EQ(r.remaining(), 0u);

  std::vector<uint64_t> one(8, 0);
  one[5] = 100;
  auto l1 = huffman_lengths(one);
  EXPECT_EQ(l1[5], 1);
  HuffmanEncoder e1(l1);
  BitWriter w1;
  e1.encode(w1, 5);
  BitReader r1(w1.bytes(), w1.bit_count());
  EXPECT_EQ(*HuffmanDecoder(l1).decode(r1), 5u);
}

TEST(Huffman, LimitsCodeLengthsAndRejectsBadTables) {
  // Fibonacci counts give a maximally deep tree: 40 symbols would need 39-bit codes.
  std::vector<uint64_t> fib = {1, 1};
  while (fib.size() < 40) fib.push_back(fib[fib.size() - 1] + fib[fib.size() - 2]);
  auto lengths = huffman_lengths(fib);
  EXPECT_LE(*std::max_element(lengths.begin(), lengths.end()), kMaxHuffmanLength);
  EXPECT_TRUE(validate_huffman_lengths(lengths).ok());
  HuffmanEncoder enc(lengths);
  BitWriter w;
  for (uint32_t s = 0; s < 40; ++s) enc.encode(w, s);
  BitReader r(w.bytes(), w.bit_count());
  HuffmanDecoder dec(lengths);
  for (uint32_t s = 0; s < 40; ++s) ASSERT_EQ(*dec.decode(r), s);

  EXPECT_FALSE(validate_huffman_lengths(std::vector<uint8_t>{1, 1, 1}).ok()) << "Kraft sum > 1";
  EXPECT_FALSE(validate_huffman_lengths(std::vector<uint8_t>{0, 0}).ok()) << "no symbols";
  EXPECT_FALSE(validate_huffman_lengths(std::vector<uint8_t>{30, 1}).ok()) << "too long";
  std::vector<uint8_t> incomplete = {2, 2, 2, 0};  // code 11 is unused
  HuffmanDecoder d(incomplete);
  BitWriter ones;
  ones.write(3, 2);
  BitReader bad(ones.bytes(), ones.bit_count());
  EXPECT_FALSE(d.decode(bad).ok());
}

// A small SpwModel: one sparse and one dense tensor plus a bias.
SpwModel sample_spw(int partitions) {
  SpwModel m;
  m.graph = test::small_cnn();
  m.metadata_json = R"({"test": true})";
  auto fc_codes = random_codes(10, 64, 0.2, 5, 11);
  CompressedTensor fc = encode_sparse(fc_codes, MatrixView{10, 64, false}, partitions, 3);
  fc.name = "fw";
  fc.shape = {10, 64};
  fc.weight_bits = 5;
  fc.codebook.resize(32);
  for (int i = 1; i < 32; ++i) fc.codebook[i] = 0.05f * static_cast<float>(i - 16);
  CompressedTensor conv = encode_dense(random_codes(4, 9, 0.9, 8, 12), MatrixView{4, 9, false});
  conv.name = "w";
  conv.shape = {4, 1, 3, 3};
  conv.weight_bits = 8;
  conv.codebook.resize(256);
  for (int i = 1; i < 256; ++i) conv.codebook[i] = 0.01f * static_cast<float>(i - 128);
  m.graph.initializers.erase("fw");
  m.graph.initializers.erase("w");
  m.tensors = {fc, conv};
  return m;
}

// Section `index` of a .spw file's bytes (no checks: the file is one the writer made).
std::string section_of(const std::string& file, size_t index) {
  spw::SectionEntry e;
  std::memcpy(&e, file.data() + sizeof(spw::SpwHeader) + index * sizeof e, sizeof e);
  return file.substr(e.offset, e.bytes);
}

// The file with section `index` replaced by `bytes`: sections laid out again at 64-byte
// boundaries, every checksum and offset right, so that only the section's content is wrong.
std::string with_section(const std::string& file, size_t index, const std::string& bytes) {
  spw::SpwHeader h;
  std::memcpy(&h, file.data(), sizeof h);
  std::vector<std::string> sections;
  for (size_t i = 0; i < h.section_count; ++i) sections.push_back(i == index ? bytes : section_of(file, i));
  std::vector<spw::SectionEntry> table;
  uint64_t offset = sizeof h + sections.size() * sizeof(spw::SectionEntry);
  for (size_t i = 0; i < sections.size(); ++i) {
    spw::SectionEntry e;
    std::memcpy(&e, file.data() + sizeof h + i * sizeof e, sizeof e);
    offset = (offset + spw::kSectionAlignment - 1) / spw::kSectionAlignment * spw::kSectionAlignment;
    table.push_back({e.kind, spw::crc32_of(sections[i]), offset, sections[i].size(), 0});
    offset += sections[i].size();
  }
  h.file_bytes = offset;
  h.table_crc = spw::crc32_of(std::string_view(reinterpret_cast<const char*>(table.data()),
                                               table.size() * sizeof(spw::SectionEntry)));
  h.header_crc = spw::crc32_of(std::string_view(reinterpret_cast<const char*>(&h), 60));
  std::string out(reinterpret_cast<const char*>(&h), sizeof h);
  out.append(reinterpret_cast<const char*>(table.data()), table.size() * sizeof(spw::SectionEntry));
  for (size_t i = 0; i < sections.size(); ++i) {
    out.resize(table[i].offset, '\0');
    out += sections[i];
  }
  return out;
}

TEST(SpwFile, RoundTripGivesBackExactlyWhatWasWritten) {
  for (bool huffman : {false, true})
    for (int partitions : {1, 4}) {
      SpwModel m = sample_spw(partitions);
      auto bytes = serialize_spw(m, huffman);
      ASSERT_TRUE(bytes.ok()) << bytes.status().message();
      EXPECT_EQ(m.breakdown.total(), static_cast<int64_t>(bytes->size()));
      auto back = parse_spw(*bytes, "t.spw");
      ASSERT_TRUE(back.ok()) << back.status().message();
      ASSERT_EQ(back->tensors.size(), 2u);
      for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(back->tensors[i].codebook, m.tensors[i].codebook);
        EXPECT_EQ(*decode_codes(back->tensors[i]), *decode_codes(m.tensors[i]));
        auto a = decompress(back->tensors[i]);
        auto b = decompress(m.tensors[i]);
        EXPECT_EQ(std::memcmp(a->raw(), b->raw(), a->bytes()), 0);
      }
      EXPECT_EQ(back->breakdown.total(), back->file_bytes);
      EXPECT_EQ(back->breakdown.codes, m.breakdown.codes);
      EXPECT_EQ(back->metadata_json, m.metadata_json);
      auto dense = back->to_dense_model();
      ASSERT_TRUE(dense.ok()) << dense.status().message();
      EXPECT_EQ(dense->initializers.at("fb").f32_data()[3], m.graph.initializers.at("fb").f32_data()[3]);
      auto again = serialize_spw(*back, huffman);
      EXPECT_EQ(*again, *bytes) << "re-serializing what was read gives the same bytes";
    }
}

TEST(SpwFile, EveryTruncationAndFlipIsRejected) {
  SpwModel m = sample_spw(2);
  std::string bytes = *serialize_spw(m, true);
  for (size_t cut = 0; cut < bytes.size(); cut += std::max<size_t>(1, bytes.size() / 150)) {
    auto r = parse_spw(bytes.substr(0, cut), "t.spw");
    ASSERT_FALSE(r.ok()) << "truncated at " << cut;
    EXPECT_EQ(r.status().message().rfind("t.spw: ", 0), 0u);
  }
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::string mutated = bytes;
    size_t at = rng() % mutated.size();
    mutated[at] ^= static_cast<char>(1 + rng() % 255);
    auto r = parse_spw(mutated, "t.spw");
    ASSERT_FALSE(r.ok()) << "flip at byte " << at << " was accepted";
    const std::string& msg = r.status().message();
    bool named = msg.find("checksum mismatch") != std::string::npos ||
                 msg.find("field") != std::string::npos || msg.find("magic") != std::string::npos ||
                 msg.find("padding") != std::string::npos;
    EXPECT_TRUE(named) << msg;
  }
}

TEST(SpwFile, FlippedSectionsNameTheSection) {
  SpwModel m = sample_spw(1);
  std::string bytes = *serialize_spw(m, false);
  std::string mutated = bytes;
  mutated[mutated.size() - 20] ^= 0x10;  // inside the last WGHT section
  auto r = parse_spw(mutated, "t.spw");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("checksum mismatch in section 4 (WGHT)"), std::string::npos)
      << r.status().message();
}

// A graph with every attribute kind, omitted inputs, symbolic dims and metadata.
Model every_attribute_graph() {
  Model g;
  g.opset = 13;
  g.ir_version = 8;
  g.producer_name = "test";
  g.producer_version = "1";
  g.graph_name = "g";
  g.metadata = {{"k", "v"}, {"empty", ""}};
  g.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 3}, {"batch", ""}, true});
  g.inputs.push_back(ValueInfo{"unshaped", ElemType::i64, {}, {}, false});
  g.outputs.push_back(ValueInfo{"y", ElemType::f32, {}, {}, false});
  g.nodes.push_back(Node{"n0",
                         "Custom",
                         "",
                         {"x", "", "unshaped"},
                         {"y", ""},
                         {{"i", int64_t{-7}},
                          {"f", 0.25f},
                          {"s", std::string("text")},
                          {"is", std::vector<int64_t>{1, -2, 3}},
                          {"fs", std::vector<float>{}},
                          {"ss", std::vector<std::string>{"a", ""}},
                          {"t", test::make_i64({2, 2}, {1, 2, 3, 4})},
                          {"scalar", Tensor::scalar_f32(1.5f)}}});
  g.nodes.push_back(Node{"", "Relu", "", {"y"}, {"z"}, {}});
  return g;
}

void expect_same_graph(const Model& a, const Model& b) {
  EXPECT_EQ(a.opset, b.opset);
  EXPECT_EQ(a.ir_version, b.ir_version);
  EXPECT_EQ(a.producer_name, b.producer_name);
  EXPECT_EQ(a.producer_version, b.producer_version);
  EXPECT_EQ(a.graph_name, b.graph_name);
  EXPECT_EQ(a.metadata, b.metadata);
  ASSERT_EQ(a.inputs.size(), b.inputs.size());
  for (size_t i = 0; i < a.inputs.size(); ++i) {
    EXPECT_EQ(a.inputs[i].name, b.inputs[i].name);
    EXPECT_EQ(a.inputs[i].elem_type, b.inputs[i].elem_type);
    EXPECT_EQ(a.inputs[i].dims, b.inputs[i].dims);
    EXPECT_EQ(a.inputs[i].dim_names, b.inputs[i].dim_names);
    EXPECT_EQ(a.inputs[i].has_shape, b.inputs[i].has_shape);
  }
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    const Node &x = a.nodes[i], &y = b.nodes[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.op_type, y.op_type);
    EXPECT_EQ(x.inputs, y.inputs);
    EXPECT_EQ(x.outputs, y.outputs);
    ASSERT_EQ(x.attrs.size(), y.attrs.size());
    for (const auto& [key, value] : x.attrs) {
      ASSERT_TRUE(y.attrs.count(key)) << key;
      const AttrValue& other = y.attrs.at(key);
      ASSERT_EQ(value.index(), other.index()) << key;
      bool same = std::visit(
          [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            const T& u = std::get<T>(other);
            if constexpr (std::is_same_v<T, Tensor>)
              return v.dtype() == u.dtype() && v.shape() == u.shape() &&
                     std::memcmp(v.raw(), u.raw(), v.bytes()) == 0;
            else
              return v == u;
          },
          value);
      EXPECT_TRUE(same) << key;
    }
  }
}

TEST(GraphSection, RoundTripsEveryAttributeKind) {
  Model g = every_attribute_graph();
  std::string bytes = spw::encode_graph(g);
  auto back = spw::decode_graph(bytes);
  ASSERT_TRUE(back.ok()) << back.status().message();
  expect_same_graph(g, *back);
  EXPECT_EQ(spw::encode_graph(*back), bytes);
}

TEST(GraphSection, TruncationsAndFlipsGiveErrorsNotCrashes) {
  std::string bytes = spw::encode_graph(every_attribute_graph());
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    EXPECT_FALSE(spw::decode_graph(bytes.substr(0, cut)).ok()) << "truncated at " << cut;
  std::mt19937 rng(9);
  int rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string mutated = bytes;
    mutated[rng() % mutated.size()] ^= static_cast<char>(1 + rng() % 255);
    auto r = spw::decode_graph(mutated);  // must return, accepting (a flipped value) or refusing
    rejected += !r.ok();
  }
  EXPECT_GT(rejected, 500);
  // Counts that claim more items than the section holds are refused before any allocation.
  std::string huge = bytes;
  const uint32_t many = 0xFFFFFFF0u;
  size_t metadata_count_at = 8 + 8 + 4 + 4 + 4 + 1 + 4 + 1;  // opset, ir, three strings ("test", "1", "g")
  std::memcpy(huge.data() + metadata_count_at, &many, 4);
  auto r = spw::decode_graph(huge);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("field metadata"), std::string::npos) << r.status().message();
}

TEST(GraphSection, RefusesUnsupportedOpsetsAndDomains) {
  Model g = every_attribute_graph();
  g.opset = 99;
  auto r = spw::decode_graph(spw::encode_graph(g));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("opset"), std::string::npos);
  g = every_attribute_graph();
  g.nodes[1].domain = "com.example";
  r = spw::decode_graph(spw::encode_graph(g));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("com.example.Relu"), std::string::npos) << r.status().message();
}

TEST(SpwFile, ReadsAndWritesFormats10And11AndTheDeflatedGraphOf12) {
  SpwModel m = sample_spw(1);
  auto v10 = serialize_spw(m, true, 0), v11 = serialize_spw(m, true, 1), v12 = serialize_spw(m, true);
  ASSERT_TRUE(v10.ok()) << v10.status().message();
  ASSERT_TRUE(v11.ok() && v12.ok());
  EXPECT_EQ((*v10)[6], 0) << "minor version 0 in the header";
  EXPECT_EQ((*v11)[6], 1);
  EXPECT_EQ((*v12)[6], 2) << "1.2 is written by default";
  const std::string& plain = section_of(*v11, 1);
  const std::string& deflated = section_of(*v12, 1);
  uint64_t encoded = 0;
  std::memcpy(&encoded, deflated.data(), sizeof encoded);
  EXPECT_EQ(encoded, plain.size()) << "1.2's graph section declares the 1.1 encoding's length";
  EXPECT_LT(deflated.size(), plain.size());
  auto a = parse_spw(*v10, "v10.spw"), b = parse_spw(*v11, "v11.spw"), c = parse_spw(*v12, "v12.spw");
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_TRUE(b.ok()) << b.status().message();
  ASSERT_TRUE(c.ok()) << c.status().message();
  expect_same_graph(a->graph, b->graph);
  expect_same_graph(b->graph, c->graph);
  EXPECT_FALSE(serialize_spw(m, true, 3).ok());
}

TEST(SpwFile, ADeflatedGraphThatDoesNotHoldWhatItDeclaresIsRefused) {
  SpwModel m = sample_spw(2);
  const std::string file = *serialize_spw(m, true);
  const std::string graph = section_of(file, 1);
  auto with_length = [&](uint64_t n) {
    std::string g = graph;
    std::memcpy(g.data(), &n, sizeof n);
    return g;
  };
  std::string flipped = graph;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x55);
  uint64_t declared = 0;
  std::memcpy(&declared, graph.data(), sizeof declared);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {graph.substr(0, 5), "too short"},
      {with_length(declared + 1), "does not hold encoded_bytes"},
      {with_length(declared - 1), "does not hold encoded_bytes"},
      {with_length(uint64_t{1} << 40), "cannot come from"},
      {with_length(1032 * (graph.size() - 8) + 1), "cannot come from"},  // past deflate's largest ratio
      {flipped, "GRPH"},
      {graph.substr(0, graph.size() - 4), "does not hold encoded_bytes"},
      {graph + "x", "has bytes after its end"},
  };
  for (const auto& [bytes, message] : cases) {
    auto r = parse_spw(with_section(file, 1, bytes), "bad.spw");
    ASSERT_FALSE(r.ok()) << message;
    EXPECT_NE(r.status().message().find(message), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("section 1 (GRPH)"), std::string::npos) << r.status().message();
  }
  std::string newer = file;
  newer[6] = 3;
  spw::SpwHeader h;
  std::memcpy(&h, newer.data(), sizeof h);
  h.header_crc = spw::crc32_of(std::string_view(newer.data(), 60));
  std::memcpy(newer.data(), &h, sizeof h);
  auto r = parse_spw(newer, "newer.spw");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("newer than this reader"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace sparrow
