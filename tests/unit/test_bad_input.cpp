// Bad input must give a clear error and a non-zero exit, never a crash: truncated and bit-flipped
// models, missing files, wrong shapes, unsupported operators, non-finite inputs.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "test_util.h"

namespace sparrow {
namespace {

std::string model_bytes() {
  return *serialize_onnx(test::small_cnn());
}

// Parses, plans and runs; returns the first error (or OK). Must never crash.
Status load_and_run(const std::string& bytes) {
  SP_ASSIGN_OR_RETURN(Model m, parse_onnx(bytes, "fuzz.onnx"));
  SP_ASSIGN_OR_RETURN(auto ex, Executor::create(std::move(m), ExecOptions{1, int64_t{256} << 20}));
  Tensor x = test::random_f32({2, 1, 8, 8}, 3);
  SP_ASSIGN_OR_RETURN(auto y, ex->run({&x, 1}));
  return {};
}

TEST(BadInput, EveryTruncationIsAnError) {
  std::string bytes = model_bytes();
  for (int k = 0; k < 100; ++k) {
    size_t cut = bytes.size() * static_cast<size_t>(k) / 100;
    Status s = load_and_run(bytes.substr(0, cut));
    ASSERT_FALSE(s.ok()) << "truncated at " << cut << " of " << bytes.size() << " was accepted";
    EXPECT_NE(s.message().find("fuzz.onnx"), std::string::npos) << s.message();
  }
}

TEST(BadInput, ByteFlipsNeverCrash) {
  std::string bytes = model_bytes();
  std::mt19937 rng(1234);
  int errors = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string mutated = bytes;
    int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) mutated[rng() % mutated.size()] ^= static_cast<char>(1 + rng() % 255);
    Status s = load_and_run(mutated);
    if (!s.ok()) {
      ++errors;
      EXPECT_FALSE(s.message().empty());
    }
  }
  // Flips inside weight bytes give a valid model with other weights; most flips elsewhere are caught.
  EXPECT_GT(errors, 0);
}

TEST(BadInput, ConvGeometryBeyondTheLimitsIsRefusedNotAllocated) {
  // Fuzzed .spw files declared inputs of 0 images (0 values, so the input passed) and huge planes:
  // 2^56 rows made the Conv's scratch 2^61 floats, whose byte count overflowed before the memory
  // limit was checked (allocating it threw); 2^62 rows overflowed the wide-row arithmetic itself.
  // Now the window refuses sizes above kMaxWindowExtent, and a scratch within them but over the
  // memory limit fails the plan.
  const struct {
    int64_t rows;
    const char* message;
  } cases[] = {{(int64_t{1} << 24) - 8, "memory limit"},
               {(int64_t{1} << 56) + 8, "above 16777216"},
               {int64_t{1} << 62, "above 16777216"}};
  CompressOptions o;
  o.all.prune.sparsity = 0.5;
  for (const auto& c : cases) {
    auto compressed = compress_model(test::small_cnn(), o);
    ASSERT_TRUE(compressed.ok()) << compressed.status().message();
    compressed->spw.graph.inputs[0].dims = {0, 1, c.rows, 8};
    auto bytes = serialize_spw(compressed->spw, true);
    ASSERT_TRUE(bytes.ok());
    auto spw = parse_spw(*bytes, "tall.spw");
    ASSERT_TRUE(spw.ok()) << spw.status().message();
    for (bool sparse : {true, false}) {
      ExecOptions options{1, int64_t{256} << 20};
      options.sparse = sparse;
      auto ex = Executor::create(*spw, options);
      ASSERT_TRUE(ex.ok()) << ex.status().message();
      auto s = (*ex)->summarize({{0, 1, c.rows, 8}});
      ASSERT_FALSE(s.ok()) << c.rows << (sparse ? " sparse" : " dense");
      EXPECT_NE(s.status().message().find(c.message), std::string::npos) << s.status().message();
    }
  }
}

TEST(BadInput, AutoPadFromAHugeDilatedWindowIsRefused) {
  // auto_pad derives the pads from the dilated extent, (kernel - 1) x dilation + 1: a 32x32 kernel
  // at dilation 2^24 made pads of about 2^28 after the window's limits were checked, and the
  // padded planes' arithmetic overflowed (plain and depthwise convolutions alike).
  for (int64_t group : {1, 4}) {
    Model m;
    m.source = "dilated";
    m.inputs.push_back(ValueInfo{"x", ElemType::f32, {1, 4, 1, 1}, {"", "", "", ""}, true});
    m.outputs.push_back(ValueInfo{"y"});
    m.initializers["w"] = test::random_f32({4, 4 / group, 32, 32}, 5);
    m.nodes.push_back(Node{"conv",
                           "Conv",
                           "",
                           {"x", "w"},
                           {"y"},
                           {{"auto_pad", std::string("SAME_UPPER")},
                            {"dilations", std::vector<int64_t>{int64_t{1} << 24, int64_t{1} << 24}},
                            {"group", group}}});
    auto ex = Executor::create(std::move(m), ExecOptions{1});
    ASSERT_TRUE(ex.ok()) << ex.status().message();
    auto s = (*ex)->summarize({{1, 4, 1, 1}});
    ASSERT_FALSE(s.ok()) << "group " << group;
    EXPECT_NE(s.status().message().find("above 16777216"), std::string::npos) << s.status().message();
  }
}

class CliBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir("cli_bad");
    ASSERT_TRUE(save_onnx(test::small_cnn(), dir_ + "/m.onnx").ok());
    ASSERT_TRUE(write_npy(dir_ + "/x.npy", test::random_f32({2, 1, 8, 8}, 1)).ok());
    bytes_ = model_bytes();
  }
  // Runs `sparrow run` and checks the process ended cleanly; returns its result.
  test::CliResult run_model(const std::string& model, const std::string& input,
                            const std::string& extra = "") {
    auto r = test::run_cli("-q run " + model + " --input " + input + " " + extra);
    EXPECT_EQ(r.signal, 0) << "crashed with signal " << r.signal << ": " << r.output;
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.exit_code << ": " << r.output;
    if (r.exit_code == 1) {
      EXPECT_NE(r.output.find("sparrow: error:"), std::string::npos) << r.output;
    }
    return r;
  }
  void write(const std::string& name, const std::string& data) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << data;
  }
  std::string dir_, bytes_;
};

TEST_F(CliBadInput, TruncatedAndFlippedFilesExitCleanly) {
  std::mt19937 rng(99);
  for (int k = 0; k < 25; ++k) {
    write("t.onnx", bytes_.substr(0, bytes_.size() * k / 25));
    EXPECT_EQ(run_model(dir_ + "/t.onnx", dir_ + "/x.npy").exit_code, 1);
    std::string mutated = bytes_;
    mutated[rng() % mutated.size()] ^= static_cast<char>(1 + rng() % 255);
    write("f.onnx", mutated);
    run_model(dir_ + "/f.onnx", dir_ + "/x.npy");
  }
}

TEST_F(CliBadInput, MessagesSayWhatAndWhere) {
  auto missing = run_model(dir_ + "/nope.onnx", dir_ + "/x.npy");
  EXPECT_NE(missing.output.find("nope.onnx: no such file"), std::string::npos) << missing.output;

  ASSERT_TRUE(write_npy(dir_ + "/wrong.npy", test::random_f32({2, 1, 9, 9}, 1)).ok());
  auto shape = run_model(dir_ + "/m.onnx", dir_ + "/wrong.npy");
  EXPECT_NE(shape.output.find("input 'x' [N, 1, 8, 8] float32 expects shape [-1, 1, 8, 8], got [2, 1, 9, 9]"),
            std::string::npos)
      << shape.output;

  Model foo = test::small_cnn();
  foo.nodes[1].op_type = "Foo";
  ASSERT_TRUE(save_onnx(foo, dir_ + "/foo.onnx").ok());
  auto unsupported = test::run_cli("info " + dir_ + "/foo.onnx");
  EXPECT_EQ(unsupported.exit_code, 1);
  EXPECT_NE(unsupported.output.find("unsupported operator Foo in node 'relu' (opset 13)"), std::string::npos)
      << unsupported.output;

  auto overwrite = run_model(dir_ + "/m.onnx", dir_ + "/x.npy", "-o " + dir_ + "/x.npy");
  EXPECT_NE(overwrite.output.find("would overwrite an input"), std::string::npos) << overwrite.output;
  EXPECT_TRUE(read_npy(dir_ + "/x.npy").ok()) << "the input must be intact";

  Tensor nan = test::random_f32({2, 1, 8, 8}, 1);
  nan.f32_data()[7] = NAN;
  ASSERT_TRUE(write_npy(dir_ + "/nan.npy", nan).ok());
  auto nonfinite = run_model(dir_ + "/m.onnx", dir_ + "/nan.npy");
  EXPECT_NE(nonfinite.output.find("non-finite"), std::string::npos) << nonfinite.output;
  EXPECT_EQ(run_model(dir_ + "/m.onnx", dir_ + "/nan.npy", "--allow-nonfinite").exit_code, 0);

  write("huge.npy", std::string("\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, 'shape': "
                                "(100000, 100000, 1000), }   \n",
                                80));
  auto huge = run_model(dir_ + "/m.onnx", dir_ + "/huge.npy");
  EXPECT_NE(huge.output.find("huge.npy"), std::string::npos) << huge.output;
}

TEST_F(CliBadInput, NoOutputReplacesAnInputOrANonRegularFile) {
  // A model with two outputs: `run -o y.npy` writes y.npy and y.1.npy; y.1.npy is the input here.
  Model two = test::small_cnn();
  two.outputs.push_back(ValueInfo{two.nodes[0].outputs[0]});
  ASSERT_TRUE(save_onnx(two, dir_ + "/two.onnx").ok());
  ASSERT_TRUE(write_npy(dir_ + "/y.1.npy", test::random_f32({2, 1, 8, 8}, 1)).ok());
  auto second = run_model(dir_ + "/two.onnx", dir_ + "/y.1.npy", "-o " + dir_ + "/y.npy");
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.output.find("is an input of this command"), std::string::npos) << second.output;
  auto kept = read_npy(dir_ + "/y.1.npy");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->shape(), (Shape{2, 1, 8, 8})) << "the input must be intact";
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/y.npy")) << "outputs are written all or nothing";
  EXPECT_EQ(run_model(dir_ + "/two.onnx", dir_ + "/y.1.npy", "-o " + dir_ + "/z.npy").exit_code, 0);
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/z.npy") && std::filesystem::exists(dir_ + "/z.1.npy"));

  // A recipe given as the output, through another spelling of its path and through a hard link.
  write("r.json", "{}");
  std::filesystem::create_hard_link(dir_ + "/r.json", dir_ + "/link.json");
  for (const std::string& out : {dir_ + "/./r.json", dir_ + "/link.json"}) {
    auto r = test::run_cli("-q compress " + dir_ + "/m.onnx --recipe " + dir_ + "/r.json -o " + out);
    EXPECT_EQ(r.exit_code, 1) << out << ": " << r.output;
    EXPECT_NE(r.output.find("is an input of this command"), std::string::npos) << r.output;
  }
  std::ifstream recipe(dir_ + "/r.json");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(recipe), {}), "{}");

  // A device is never replaced by a regular file.
  auto dev = test::run_cli("-q compress " + dir_ + "/m.onnx -o /dev/null");
  EXPECT_EQ(dev.exit_code, 1) << dev.output;
  EXPECT_NE(dev.output.find("not a regular file"), std::string::npos) << dev.output;
  EXPECT_TRUE(std::filesystem::is_character_file("/dev/null"));
}

TEST_F(CliBadInput, InvalidOptionsAreRejected) {
  auto r = test::run_cli("eval " + dir_ + "/m.onnx --images a --labels b --batch 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.signal, 0);
  auto none = test::run_cli("");
  EXPECT_EQ(none.exit_code, 1);
  auto lr = test::run_cli("train --arch lenet300 --data " + dir_ + " -o " + dir_ + "/t.onnx --lr nan");
  EXPECT_EQ(lr.exit_code, 1) << lr.output;
  EXPECT_NE(lr.output.find("must be a finite number"), std::string::npos) << lr.output;
  for (const char* bad : {"--scale nan", "--scale inf", "--shift 1e39", "--scale 1x"}) {
    auto n = test::run_cli("eval " + dir_ + "/m.onnx --images a --labels b " + bad);
    EXPECT_EQ(n.exit_code, 1) << bad << ": " << n.output;
    EXPECT_NE(n.output.find("must be a finite number"), std::string::npos) << n.output;
  }
}

TEST_F(CliBadInput, UsageErrorsSaySparrowErrorAndExitOne) {
  const std::string model = dir_ + "/m.onnx";
  auto global_after = test::run_cli("info " + model + " --threads 1 -q");
  EXPECT_EQ(global_after.exit_code, 0)
      << "global options are accepted after the command: " << global_after.output;
  struct Case {
    std::string args, says;
  };
  for (const Case& c :
       {Case{"info --bogus " + model, "unknown option '--bogus'"},
        Case{"--bogus info", "unknown option '--bogus'"}, Case{"--threads 2 info", "model is required"},
        Case{"frobnicate", "unknown command 'frobnicate'"},
        Case{"--threads 2 frobnicate", "unknown command 'frobnicate'"},
        Case{"compress " + model, "--output is required"},
        Case{"compress " + model + " -o " + dir_ + "/c.spw --sparsity 0.9 --quality 1", "excludes"},
        Case{"info " + model + " --threads 5000", "--threads"},
        // Options the command would ignore are refused.
        Case{"--dense inspect m.spw", "--dense has no effect on 'inspect'"},
        Case{"export m.spw -o x.onnx --threads 2", "--threads has no effect on 'export'"},
        Case{"compress " + model + " -o " + dir_ + "/c.spw --prune-steps 2", "--prune-steps requires --data"},
        Case{"compress " + model + " -o " + dir_ + "/c.spw --retrain-epochs 1",
             "--retrain-epochs requires --data"},
        Case{"sim m.spw --layers Alex-6", "--layers requires --eie"}, Case{"sim --eie m.spw", "excludes"},
        Case{"sim --eie --plot p.svg", "--plot requires --sweep"},
        Case{"sim --eie --input x.npy", "--input requires model"},
        Case{"report m.spw --bins 10", "--bins requires --source"}}) {
    auto r = test::run_cli(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << ": " << r.output;
    EXPECT_EQ(r.output.rfind("sparrow: error: ", 0), 0u) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << c.args << ": " << r.output;
  }
}

TEST_F(CliBadInput, CompressRefusesToWriteWhatTheEngineCannotRun) {
  Model m = test::small_cnn();
  m.nodes.back().outputs = {"g"};
  m.nodes.push_back(Node{"det", "Det", "", {"g"}, {"y"}, {}});  // an operator the engine lacks
  ASSERT_TRUE(save_onnx(m, dir_ + "/det.onnx").ok());
  auto r = test::run_cli("-q compress " + dir_ + "/det.onnx -o " + dir_ + "/det.spw --sparsity 0.5");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("the engine cannot run"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Det"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/det.spw"));
  auto ok = test::run_cli("-q compress " + dir_ + "/m.onnx -o " + dir_ + "/m.spw --sparsity 0.5");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

TEST_F(CliBadInput, NpyTrainingDataIsCheckedBeforeTraining) {
  // small_cnn takes [N, 1, 8, 8].
  ASSERT_TRUE(write_npy(dir_ + "/x.npy", Tensor(DType::f32, {20, 1, 8, 8})).ok());
  ASSERT_TRUE(write_npy(dir_ + "/wide.npy", Tensor(DType::f32, {20, 1, 8, 9})).ok());
  ASSERT_TRUE(write_npy(dir_ + "/y19.npy", Tensor(DType::i64, {19})).ok());
  ASSERT_TRUE(write_npy(dir_ + "/yf.npy", Tensor(DType::f32, {20})).ok());
  Tensor labels(DType::i64, {20});
  for (int64_t i = 0; i < 20; ++i) labels.i64_data()[i] = i % 10;
  ASSERT_TRUE(write_npz(dir_ + "/xy.npz", {{"x", Tensor(DType::f32, {20, 1, 8, 8})}, {"y", labels}}).ok());
  ASSERT_TRUE(
      write_npz(dir_ + "/noinputs.npz", {{"a", Tensor(DType::f32, {20, 1, 8, 8})}, {"y", labels}}).ok());
  ASSERT_TRUE(write_npz(dir_ + "/short_labels.npz",
                        {{"x", Tensor(DType::f32, {20, 1, 8, 8})}, {"y", Tensor(DType::i64, {19})}})
                  .ok());
  std::filesystem::create_directories(dir_ + "/cifar");
  ASSERT_TRUE(
      write_cifar10(dir_ + "/cifar/data_batch_1.bin", ImageSet{Tensor(DType::f32, {2, 3, 32, 32}), {1, 2}})
          .ok());
  std::filesystem::create_directories(dir_ + "/idx");
  const std::vector<uint8_t> pixels(20 * 64, 7), digits(20, 3);
  for (const char* part : {"train", "t10k"}) {
    ASSERT_TRUE(write_idx_u8(dir_ + "/idx/" + part + "-images-idx3-ubyte.gz", {20, 8, 8}, pixels).ok());
    ASSERT_TRUE(write_idx_u8(dir_ + "/idx/" + part + "-labels-idx1-ubyte.gz", {20}, digits).ok());
  }
  const std::string compress = "compress " + dir_ + "/m.onnx -o " + dir_ + "/c.spw --sparsity 0.5 --data ";
  struct Case {
    std::string args, says;
  };
  for (const Case& c :
       {Case{compress + dir_ + "/wide.npy --distill", "do not fit the model's input"},
        Case{compress + dir_ + "/x.npy --labels " + dir_ + "/y19.npy", "labels must be 20 integers"},
        Case{compress + dir_ + "/x.npy --labels " + dir_ + "/yf.npy", "labels must be 20 integers"},
        Case{compress + dir_ + "/x.npy --distill --scale 2",
             "--scale, --shift, --mean and --std normalize pixel"},
        Case{compress + dir_ + "/xy.npz --distill --mean 0.5", "holds inputs already normalized"},
        Case{compress + dir_ + "/xy.npz --labels " + dir_ + "/y19.npy", "holds its own labels"},
        Case{compress + dir_ + "/noinputs.npz --distill", "no array 'x' (the inputs) among a, y"},
        Case{compress + dir_ + "/short_labels.npz", "array 'y': labels must be 20 integers"},
        Case{compress + dir_ + "/cifar --distill",
             "images of 3072 values do not fit the input shape [1, 8, 8]"},
        Case{compress + dir_ + "/idx --distill --mean 0.1,0.2",
             "--mean gives 2 values for inputs of 1 channels"},
        Case{compress + dir_ + "/idx --distill --std=-1", "--std: -1 is not a positive number"},
        Case{compress + dir_ + " --labels " + dir_ + "/y19.npy", "--labels goes with --data FILE.npy"},
        Case{compress + dir_ + "/x.npy", "retraining without them needs distillation"},
        Case{compress + dir_ + "/x.npy --temperature 2", "--temperature requires --distill"}}) {
    auto r = test::run_cli(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << c.args << ": " << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/c.spw"));
}

TEST_F(CliBadInput, NonFiniteImagesAreRefused) {
  // Float IDX images [2, 8, 8] with a NaN, and labels [2].
  auto idx = [](uint8_t type, std::vector<uint32_t> dims, const std::string& data) {
    std::string out = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
    for (uint32_t d : dims)
      for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((d >> s) & 0xff));
    return out + data;
  };
  std::string pixels(2 * 64 * 4, '\0');  // big-endian floats, 0.0
  pixels[4 * 70] = 0x7f;                 // image 1, value 6: 0x7fc00000, a NaN
  pixels[4 * 70 + 1] = static_cast<char>(0xc0);
  write("images.idx", idx(0x0D, {2, 8, 8}, pixels));
  write("labels.idx", idx(0x08, {2}, std::string("\x01\x02", 2)));
  auto r = test::run_cli("eval " + dir_ + "/m.onnx --images " + dir_ + "/images.idx --labels " + dir_ +
                         "/labels.idx");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("image 1 value 6"), std::string::npos) << r.output;
  // Finite images and finite options whose float product overflows: 255 * 2e36 is inf in float
  // (not in double), and the shift cannot bring it back.
  write("bytes.idx", idx(0x08, {2, 8, 8}, std::string(2 * 64, '\xff')));
  auto overflow = test::run_cli("eval " + dir_ + "/m.onnx --images " + dir_ + "/bytes.idx --labels " + dir_ +
                                "/labels.idx --scale 2e36 --shift -3e38");
  EXPECT_EQ(overflow.exit_code, 1) << overflow.output;
  EXPECT_NE(overflow.output.find("image 0 value 0 is inf"), std::string::npos) << overflow.output;
}

}  // namespace
}  // namespace sparrow
