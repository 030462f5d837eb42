// Batches run as chunks of samples (ExecOptions::samples_per_chunk): the same outputs as the whole
// batch, on the dense executor and the sparse engine, on one and two threads; graphs that mix samples
// are never split.
#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include "engine/batch_split.h"
#include "test_util.h"

namespace sparrow {
namespace {

using Attrs = std::map<std::string, AttrValue>;

// x [N, 3, 8, 8] -> Conv 3x3 + BatchNorm + Relu -> Conv 3x3 -> (+ the first Relu) -> Relu -> MaxPool 2x2
// -> Concat with itself (channels) -> GlobalAveragePool -> Flatten -> Gemm -> Softmax -> y [N, 10].
Model residual_cnn() {
  Model m;
  m.source = "residual_cnn";
  m.opset = 13;
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 3, 8, 8}, {"N", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w1"] = test::random_f32({8, 3, 3, 3}, 1);
  m.initializers["w2"] = test::random_f32({8, 8, 3, 3}, 2);
  m.initializers["b2"] = test::random_f32({8}, 3);
  m.initializers["scale"] = test::random_f32({8}, 4);
  m.initializers["bias"] = test::random_f32({8}, 5);
  m.initializers["mean"] = test::random_f32({8}, 6);
  m.initializers["var"] = test::make_f32({8}, {1, 2, 0.5f, 1, 3, 1, 0.25f, 1});
  m.initializers["fw"] = test::random_f32({10, 16}, 7);
  m.initializers["fb"] = test::random_f32({10}, 8);
  const Attrs pad1 = {{"pads", std::vector<int64_t>{1, 1, 1, 1}}};
  m.nodes.push_back(Node{"conv1", "Conv", "", {"x", "w1"}, {"c1"}, pad1});
  m.nodes.push_back(Node{"bn", "BatchNormalization", "", {"c1", "scale", "bias", "mean", "var"}, {"n1"}, {}});
  m.nodes.push_back(Node{"relu1", "Relu", "", {"n1"}, {"r1"}, {}});
  m.nodes.push_back(Node{"conv2", "Conv", "", {"r1", "w2", "b2"}, {"c2"}, pad1});
  m.nodes.push_back(Node{"res", "Add", "", {"c2", "r1"}, {"s"}, {}});
  m.nodes.push_back(Node{"relu2", "Relu", "", {"s"}, {"r2"}, {}});
  m.nodes.push_back(
      Node{"pool",
           "MaxPool",
           "",
           {"r2"},
           {"p"},
           {{"kernel_shape", std::vector<int64_t>{2, 2}}, {"strides", std::vector<int64_t>{2, 2}}}});
  m.nodes.push_back(Node{"cat", "Concat", "", {"p", "p"}, {"cc"}, {{"axis", int64_t{1}}}});
  m.nodes.push_back(Node{"gap", "GlobalAveragePool", "", {"cc"}, {"g"}, {}});
  m.nodes.push_back(Node{"flat", "Flatten", "", {"g"}, {"f"}, {}});
  m.nodes.push_back(Node{"fc", "Gemm", "", {"f", "fw", "fb"}, {"logits"}, {{"transB", int64_t{1}}}});
  m.nodes.push_back(Node{"softmax", "Softmax", "", {"logits"}, {"y"}, {}});
  return m;
}

std::unique_ptr<Executor> executor(const Model& m, int threads, int64_t samples_per_chunk) {
  ExecOptions o = test::threaded(threads);
  o.samples_per_chunk = samples_per_chunk;
  auto ex = Executor::create(m, o);
  EXPECT_TRUE(ex.ok()) << ex.status().message();
  return std::move(ex).value();
}

std::unique_ptr<Executor> compressed_executor(const Model& m, int threads, int64_t samples_per_chunk) {
  CompressOptions c;
  c.all.prune.sparsity = 0.9;
  auto r = compress_model(m, c);
  EXPECT_TRUE(r.ok()) << r.status().message();
  ExecOptions o = test::threaded(threads);
  o.samples_per_chunk = samples_per_chunk;
  auto ex = Executor::create(r->spw, o);
  EXPECT_TRUE(ex.ok()) << ex.status().message();
  return std::move(ex).value();
}

Tensor run_one(Executor& ex, const Tensor& x) {
  auto out = ex.run(std::span<const Tensor>(&x, 1));
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *(*out)[0] : Tensor();
}

int64_t chunk_of(Executor& ex, const Shape& shape) {
  auto s = ex.summarize({shape});
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? s->samples_per_chunk : -1;
}

int sparse_layers(Executor& ex, const Shape& shape) {
  auto s = ex.summarize({shape});
  int n = 0;
  for (const auto& layer : s->layers) n += layer.sparse;
  return n;
}

TEST(BatchSplit, SamplesPerChunkIsTheLargestDivisorThatFitsTheCache) {
  EXPECT_EQ(samples_per_chunk(16, 1 << 20, 2 << 20), 2);
  EXPECT_EQ(samples_per_chunk(16, 300'000, 2 << 20), 4) << "6 fit, 4 is the largest divisor of 16 below";
  EXPECT_EQ(samples_per_chunk(16, 8 << 20, 2 << 20), 1) << "one sample is larger than the cache";
  EXPECT_EQ(samples_per_chunk(7, 300'000, 2 << 20), 1) << "7 is prime";
  EXPECT_EQ(samples_per_chunk(16, 1000, 2 << 20), 16) << "the whole batch fits";
  EXPECT_EQ(samples_per_chunk(16, 0, 2 << 20), 16);
  EXPECT_GT(chunk_cache_bytes(), 0);
}

TEST(BatchSplit, SmallPlanesTakeEnoughImagesForOneWideProduct) {
  EXPECT_EQ(samples_for_small_planes(16, 1, 4), 16) << "2x2 planes: 16 images make 64 positions";
  EXPECT_EQ(samples_for_small_planes(16, 2, 4), 8) << "half the batch each, for two threads";
  EXPECT_EQ(samples_for_small_planes(16, 1, 16), 4);
  EXPECT_EQ(samples_for_small_planes(16, 2, 2), 8);
  EXPECT_EQ(samples_for_small_planes(10, 1, 16), 5) << "the smallest divisor of 10 from 4";
  EXPECT_EQ(samples_for_small_planes(7, 1, 4), 7);
  EXPECT_EQ(samples_for_small_planes(16, 1, 49), 1) << "7x7 planes fill the vectors alone";
  EXPECT_EQ(samples_for_small_planes(16, 1, 0), 1) << "no convolution";
  EXPECT_EQ(samples_for_small_planes(16, 32, 4), 1) << "more threads than samples";
}

// x [N, 8, 96, 96] -> Conv 1x1 (295 KB a sample: the cache alone asks for chunks of 2 to 4) ->
// MaxPool to `plane` x `plane` -> Conv 3x3 -> y.
Model pooled_conv(int64_t plane) {
  Model m;
  m.source = "pooled_conv";
  m.inputs.push_back(ValueInfo{"x", ElemType::f32, {-1, 8, 96, 96}, {"N", "", "", ""}, true});
  m.outputs.push_back(ValueInfo{"y"});
  m.initializers["w0"] = test::random_f32({8, 8, 1, 1}, 2);
  m.initializers["w"] = test::random_f32({16, 8, 3, 3}, 1);
  const std::vector<int64_t> pool = {96 / plane, 96 / plane};
  m.nodes.push_back(Node{"wide", "Conv", "", {"x", "w0"}, {"c"}, {}});
  m.nodes.push_back(Node{"pool", "MaxPool", "", {"c"}, {"p"}, {{"kernel_shape", pool}, {"strides", pool}}});
  m.nodes.push_back(
      Node{"conv", "Conv", "", {"p", "w"}, {"y"}, {{"pads", std::vector<int64_t>{1, 1, 1, 1}}}});
  return m;
}

TEST(BatchSplit, ABatchWhoseConvolutionsHaveSmallPlanesRunsInWideChunks) {
  const Shape batch = {16, 8, 96, 96};
  EXPECT_EQ(chunk_of(*executor(pooled_conv(2), 1, 0), batch), 0) << "2x2 planes, one thread: the whole batch";
  if (std::thread::hardware_concurrency() >= 2) {
    EXPECT_EQ(chunk_of(*executor(pooled_conv(2), 2, 0), batch), 8) << "two threads: a chunk each";
  }
  const int64_t by_cache = chunk_of(*executor(pooled_conv(8), 1, 0), batch);
  EXPECT_GT(by_cache, 0) << "8x8 planes: the cache decides";
  EXPECT_LT(by_cache, 8);
  EXPECT_EQ(chunk_of(*compressed_executor(pooled_conv(2), 1, 0), batch), 0) << "on the engine too";
}

TEST(BatchSplit, ChunksGainWhileTheWeightsTakeNoMoreThanTheBatchsActivations) {
  EXPECT_TRUE(chunks_gain(16, 1 << 20, 500'000)) << "compressed weights: 0.5 MB against 16 MB";
  EXPECT_TRUE(chunks_gain(16, 1 << 20, 16 << 20)) << "as much as the activations";
  EXPECT_FALSE(chunks_gain(16, 500'000, 37 << 20)) << "VGG-11's float32 weights against 8 MB";
  EXPECT_TRUE(chunks_gain(16, 1000, 0));
}

TEST(BatchSplit, ChunksGiveTheWholeBatchsOutputsOnBothEngines) {
  const Model m = residual_cnn();
  for (int64_t batch : {2, 5, 8}) {
    const Tensor x = test::random_f32({batch, 3, 8, 8}, 11 + static_cast<uint32_t>(batch));
    for (bool compressed : {false, true}) {
      auto make = compressed ? compressed_executor : executor;
      const Tensor want = run_one(*make(m, 1, -1), x);
      for (int threads : {1, 2}) {
        for (int64_t chunk : {1, 2, 4}) {
          auto ex = make(m, threads, chunk);
          const std::string what = fmt::format("batch {}, {}, {} threads, chunks of {}", batch,
                                               compressed ? "sparse" : "dense", threads, chunk);
          const int64_t expected_chunk =
              batch % chunk == 0 && chunk < batch ? chunk : (chunk < batch ? 1 : 0);
          EXPECT_EQ(chunk_of(*ex, x.shape()), expected_chunk) << what;
          if (compressed) {
            EXPECT_GT(sparse_layers(*ex, x.shape()), 0) << what;
          }
          for (int repeat = 0; repeat < 2; ++repeat) {
            const Tensor got = run_one(*ex, x);
            EXPECT_LT(test::max_relative_error(got, want), 1e-5) << what << ", run " << repeat;
          }
          EXPECT_EQ(ex->value("y")->shape(), want.shape()) << what;
        }
      }
    }
  }
}

TEST(BatchSplit, ProfiledLayersReportTheWholeBatch) {
  ExecOptions o = test::threaded(2);
  o.samples_per_chunk = 1;
  o.profile_layers = true;
  auto ex = Executor::create(residual_cnn(), o);
  ASSERT_TRUE(ex.ok());
  const Tensor x = test::random_f32({4, 3, 8, 8}, 3);
  run_one(**ex, x);
  run_one(**ex, x);
  auto split = (*ex)->summarize({x.shape()});
  o.samples_per_chunk = -1;
  auto whole = Executor::create(residual_cnn(), o);
  ASSERT_TRUE(whole.ok());
  auto unsplit = (*whole)->summarize({x.shape()});
  ASSERT_TRUE(split.ok() && unsplit.ok());
  EXPECT_EQ(split->samples_per_chunk, 1);
  EXPECT_EQ(split->profiled_runs, 2);
  EXPECT_EQ(split->macs, unsplit->macs);
  EXPECT_EQ(split->output_shapes, unsplit->output_shapes);
  ASSERT_EQ(split->layers.size(), unsplit->layers.size());
  for (size_t i = 0; i < split->layers.size(); ++i) {
    EXPECT_GT(split->layers[i].seconds_per_run, 0.0) << split->layers[i].name;
    EXPECT_EQ(split->layers[i].output_shapes, unsplit->layers[i].output_shapes) << split->layers[i].name;
  }
}

TEST(BatchSplit, ABatchThatFitsTheCacheRunsAsOneChunkPerThread) {
  EXPECT_EQ(samples_per_thread(16, 2), 8);
  EXPECT_EQ(samples_per_thread(12, 4), 3);
  EXPECT_EQ(samples_per_thread(8, 4), 2);
  EXPECT_EQ(samples_per_thread(16, 1), 16);
  EXPECT_EQ(samples_per_thread(9, 2), 9) << "no even share: whole";
  EXPECT_EQ(samples_per_thread(7, 2), 7) << "no even share: whole";
  EXPECT_EQ(samples_per_thread(3, 4), 3) << "fewer samples than threads";
  Model m = residual_cnn();
  m.inputs[0].dims = {-1, 3, 8, 8};  // a few KB per sample: the whole batch fits
  EXPECT_EQ(chunk_of(*executor(m, 1, 0), {16, 3, 8, 8}), 0) << "one thread: the whole batch";
  if (std::thread::hardware_concurrency() >= 2) {
    EXPECT_EQ(chunk_of(*executor(m, 2, 0), {16, 3, 8, 8}), 8) << "two threads: a chunk each";
  }
}

TEST(BatchSplit, ConvolutionsSplitLargeBatchesByDefaultAndGraphsWithoutThemDoNot) {
  Model m = residual_cnn();
  m.inputs[0].dims = {-1, 3, 96, 96};
  // 96x96 planes of 8 channels: several values of 288 KB per sample, more than a cache holds at 16.
  auto ex = executor(m, 1, 0);
  EXPECT_GT(chunk_of(*ex, {16, 3, 96, 96}), 0);
  EXPECT_LT(chunk_of(*ex, {16, 3, 96, 96}), 16);
  Model mlp = residual_cnn();
  mlp.inputs[0].dims = {-1, 16};
  mlp.nodes.erase(mlp.nodes.begin(), mlp.nodes.end() - 2);
  mlp.nodes[0].inputs[0] = "x";
  EXPECT_EQ(chunk_of(*executor(mlp, 1, 0), {16, 16}), 0) << "no convolution: the batch's rows share weights";
  EXPECT_EQ(chunk_of(*executor(mlp, 1, 4), {16, 16}), 4) << "asked for";
  EXPECT_EQ(chunk_of(*executor(m, 1, 0), {1, 3, 96, 96}), 0) << "one sample";
}

// Variants of residual_cnn that mix samples, or whose outputs do not keep them along axis 0.
struct Mixing {
  std::string what;
  std::function<void(Model&)> change;
};

std::vector<Mixing> mixing_graphs() {
  return {
      {"Softmax over the batch axis", [](Model& m) { m.nodes.back().attrs["axis"] = int64_t{0}; }},
      {"subtracting the batch's mean",
       [](Model& m) {
         m.nodes.push_back(
             Node{"mean", "ReduceMean", "", {"y"}, {"mu"}, {{"axes", std::vector<int64_t>{0}}}});
         m.nodes.push_back(Node{"center", "Sub", "", {"y", "mu"}, {"yc"}, {}});
         m.outputs[0].name = "yc";
       }},
      {"a Reshape to a literal batch of 2",
       [](Model& m) {
         m.initializers["two"] = test::make_i64({2}, {2, -1});
         m.nodes.push_back(Node{"rows", "Reshape", "", {"y", "two"}, {"y2"}, {}});
         m.outputs[0].name = "y2";
       }},
      {"an output that is a constant",
       [](Model& m) {
         m.initializers["k"] = test::random_f32({2, 10}, 9);  // as long as a chunk of 2
         m.outputs.push_back(ValueInfo{"k"});
       }},
      {"a Flatten of every sample into one row",
       [](Model& m) {
         m.nodes.push_back(Node{"rows", "Flatten", "", {"y"}, {"y2"}, {{"axis", int64_t{-2}}}});
         m.outputs[0].name = "y2";
       }},
      {"a Reshape to a target folded from constants",
       [](Model& m) {
         m.initializers["two"] = test::make_i64({1}, {2});
         m.initializers["rest"] = test::make_i64({1}, {-1});
         m.nodes.push_back(Node{"target", "Concat", "", {"two", "rest"}, {"t"}, {{"axis", int64_t{0}}}});
         m.nodes.push_back(Node{"rows", "Reshape", "", {"y", "t"}, {"y2"}, {}});
         m.outputs[0].name = "y2";
       }},
      {"dividing by the batch size",
       [](Model& m) {
         m.initializers["zero"] = Tensor::i64({}, std::vector<int64_t>{0});
         m.nodes.push_back(Node{"shape", "Shape", "", {"y"}, {"sh"}, {}});
         m.nodes.push_back(Node{"n", "Gather", "", {"sh", "zero"}, {"ni"}, {{"axis", int64_t{0}}}});
         m.nodes.push_back(Node{"nf", "Cast", "", {"ni"}, {"nf"}, {{"to", int64_t{1}}}});
         m.nodes.push_back(Node{"per", "Div", "", {"y", "nf"}, {"y2"}, {}});
         m.outputs[0].name = "y2";
       }},
      {"a second input of another batch",
       [](Model& m) {
         m.inputs.push_back(ValueInfo{"z", ElemType::f32, {-1, 10}, {"M", ""}, true});
         m.nodes.push_back(Node{"plus", "Add", "", {"y", "z"}, {"yz"}, {}});
         m.outputs[0].name = "yz";
       }},
  };
}

// residual_cnn with its Flatten replaced by the Reshape exporters write for x.view(x.size(0), -1):
// a target computed from the value's shape.
Model residual_cnn_with_shape_chain() {
  Model m = residual_cnn();
  auto flat =
      std::find_if(m.nodes.begin(), m.nodes.end(), [](const Node& n) { return n.op_type == "Flatten"; });
  m.initializers["zero"] = Tensor::i64({}, std::vector<int64_t>{0});
  m.initializers["zeros"] = test::make_i64({1}, {0});
  m.initializers["rest"] = test::make_i64({1}, {-1});
  std::vector<Node> chain = {
      Node{"shape", "Shape", "", {"g"}, {"sh"}, {}},
      Node{"n", "Gather", "", {"sh", "zero"}, {"ni"}, {{"axis", int64_t{0}}}},
      Node{"row", "Unsqueeze", "", {"ni", "zeros"}, {"nrow"}, {}},
      Node{"target", "Concat", "", {"nrow", "rest"}, {"t"}, {{"axis", int64_t{0}}}},
      Node{"flat", "Reshape", "", {"g", "t"}, {"f"}, {}},
  };
  flat = m.nodes.erase(flat);
  m.nodes.insert(flat, chain.begin(), chain.end());
  return m;
}

TEST(BatchSplit, AReshapeTargetComputedFromTheShapeKeepsTheSplit) {
  const Model m = residual_cnn_with_shape_chain();
  const Status valid = m.validate();
  ASSERT_TRUE(valid.ok()) << valid.message();
  const Tensor x = test::random_f32({4, 3, 8, 8}, 31);
  const Tensor want = run_one(*executor(m, 1, -1), x);
  for (int64_t chunk : {1, 2}) {
    auto ex = executor(m, 2, chunk);
    EXPECT_EQ(chunk_of(*ex, x.shape()), chunk);
    EXPECT_LT(test::max_relative_error(run_one(*ex, x), want), 1e-5) << "chunks of " << chunk;
  }
}

TEST(BatchSplit, AConcatWithAConstantOfOneChunksRowsIsNotSplit) {
  Model m = residual_cnn();
  m.initializers["extra"] = test::random_f32({2, 3}, 12);
  m.nodes.push_back(Node{"wide", "Concat", "", {"y", "extra"}, {"y2"}, {{"axis", int64_t{1}}}});
  m.outputs[0].name = "y2";
  auto ex = executor(m, 1, 2);
  const Tensor x = test::random_f32({4, 3, 8, 8}, 13);
  EXPECT_FALSE(ex->run(std::span<const Tensor>(&x, 1)).ok())
      << "4 rows cannot be joined with 2, whole or split";
  const Tensor two = test::random_f32({2, 3, 8, 8}, 14);
  EXPECT_TRUE(ex->run(std::span<const Tensor>(&two, 1)).ok());
}

TEST(BatchSplit, ValueAfterTheLastRunsSplitWasEvicted) {
  auto ex = executor(residual_cnn(), 1, 1);
  const Tensor x = test::random_f32({2, 3, 8, 8}, 15);
  run_one(*ex, x);
  ASSERT_NE(ex->value("y"), nullptr);
  for (int64_t batch = 3; batch < 8; ++batch) EXPECT_EQ(chunk_of(*ex, {batch, 3, 8, 8}), 1);
  const Tensor* y = ex->value("y");
  EXPECT_TRUE(y == nullptr || y->shape() == Shape({2, 10}));
}

TEST(BatchSplit, GraphsThatMixSamplesRunWhole) {
  for (const auto& mixing : mixing_graphs()) {
    Model m = residual_cnn();
    mixing.change(m);
    ASSERT_TRUE(m.validate().ok()) << mixing.what;
    std::vector<Tensor> inputs{test::random_f32({4, 3, 8, 8}, 21)};
    if (m.inputs.size() > 1) inputs.push_back(test::random_f32({1, 10}, 22));
    std::vector<Shape> shapes;
    for (const auto& t : inputs) shapes.push_back(t.shape());
    auto whole = executor(m, 2, -1);
    auto want = whole->run(inputs);
    ASSERT_TRUE(want.ok()) << mixing.what << ": " << want.status().message();
    for (int64_t chunk : {1, 2}) {
      auto split = executor(m, 2, chunk);
      auto s = split->summarize(shapes);
      ASSERT_TRUE(s.ok()) << mixing.what << ": " << s.status().message();
      EXPECT_EQ(s->samples_per_chunk, 0) << mixing.what << ", chunks of " << chunk;
      auto got = split->run(inputs);
      ASSERT_TRUE(got.ok()) << mixing.what;
      EXPECT_EQ(test::max_relative_error(*(*got)[0], *(*want)[0]), 0.0)
          << mixing.what << ", chunks of " << chunk;
    }
  }
}

}  // namespace
}  // namespace sparrow
