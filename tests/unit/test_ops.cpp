// Operator tests against hand-computed values and naive reference loops.
#include <algorithm>
#include <cmath>

#include <limits>

#include "core/thread_pool.h"
#include "engine/blas.h"
#include "test_util.h"

namespace sparrow {
namespace {

using test::make_f32;
using test::make_i64;
using test::random_f32;
using test::run_op;

using Ints = std::vector<int64_t>;

std::vector<float> values(const Tensor& t) {
  return {t.f32_data(), t.f32_data() + t.numel()};
}

Tensor run1(const std::string& op, std::map<std::string, AttrValue> attrs, const std::vector<Tensor>& in,
            int64_t opset = 13) {
  auto r = run_op(op, std::move(attrs), in, opset);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? (*r)[0] : Tensor();
}

// ---------------------------------------------------------------- Conv
struct ConvCase {
  int64_t n, c, h, w, m, kh, kw, stride, pad, dilation, group;
};

Tensor reference_conv(const Tensor& x, const Tensor& wt, const Tensor& b, const ConvCase& p) {
  int64_t oh = (p.h + 2 * p.pad - (p.kh - 1) * p.dilation - 1) / p.stride + 1;
  int64_t ow = (p.w + 2 * p.pad - (p.kw - 1) * p.dilation - 1) / p.stride + 1;
  Tensor y(DType::f32, {p.n, p.m, oh, ow});
  int64_t cg = p.c / p.group, mg = p.m / p.group;
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t m = 0; m < p.m; ++m)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = b.f32_data()[m];
          int64_t g = m / mg;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t u = 0; u < p.kh; ++u)
              for (int64_t v = 0; v < p.kw; ++v) {
                int64_t ih = i * p.stride - p.pad + u * p.dilation,
                        iw = j * p.stride - p.pad + v * p.dilation;
                if (ih < 0 || iw < 0 || ih >= p.h || iw >= p.w) continue;
                acc += x.f32_data()[((n * p.c + g * cg + c) * p.h + ih) * p.w + iw] *
                       wt.f32_data()[((m * cg + c) * p.kh + u) * p.kw + v];
              }
          y.f32_data()[((n * p.m + m) * oh + i) * ow + j] = static_cast<float>(acc);
        }
  return y;
}

TEST(Conv, MatchesReferenceOnAGridOfGeometries) {
  std::vector<ConvCase> cases = {
      {1, 1, 5, 5, 1, 3, 3, 1, 0, 1, 1},
      {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1},
      {1, 4, 9, 9, 6, 3, 3, 2, 1, 1, 2},
      {2, 6, 8, 7, 6, 3, 3, 1, 2, 2, 6},
      {1, 2, 5, 9, 3, 1, 1, 1, 0, 1, 1},
      {3, 2, 6, 6, 4, 1, 1, 2, 0, 1, 2},
      {1, 3, 4, 4, 2, 5, 5, 1, 2, 1, 1},
      {2, 1, 11, 3, 5, 2, 3, 3, 1, 1, 1},
      {1, 8, 3, 3, 8, 3, 3, 1, 1, 1, 4},
      // Same-width windows (their taps unrolled as shifted blocks of the plane): dilated, and a
      // window taller than the plane, whose outer taps read no input row.
      {1, 4, 7, 9, 4, 3, 3, 1, 2, 2, 2},
      {2, 2, 2, 6, 3, 5, 5, 1, 2, 1, 1},
      {1, 3, 1, 8, 2, 3, 3, 1, 1, 1, 1},
      // Depthwise (one input channel per group): wide rows past the vector widths, stride 2, a
      // channel multiplier, 1x1 and 5x5 windows, padding wider than the window reaches.
      {2, 5, 9, 37, 5, 3, 3, 1, 1, 1, 5},
      {1, 4, 12, 35, 8, 3, 3, 2, 1, 1, 4},
      {1, 3, 7, 20, 3, 5, 5, 2, 2, 1, 3},
      {1, 6, 4, 17, 6, 1, 1, 1, 0, 1, 6},
      {1, 2, 3, 4, 4, 3, 3, 1, 4, 1, 2},
      {2, 3, 16, 16, 3, 3, 3, 1, 2, 2, 3},
      {1, 4, 14, 14, 4, 3, 3, 1, 1, 1, 4},
      {2, 3, 9, 11, 6, 5, 5, 1, 2, 1, 3},
      {1, 2, 6, 40, 2, 5, 5, 1, 2, 1, 2},
      // Depthwise on small planes, 16 channels to the vector lanes: a group and a tail of 4, two
      // images; stride 2; 5x5; dilation; a channel multiplier (which runs plane by plane).
      {2, 20, 7, 7, 20, 3, 3, 1, 1, 1, 20},
      {1, 32, 14, 13, 32, 3, 3, 2, 1, 1, 32},
      {3, 16, 5, 9, 16, 5, 5, 1, 2, 1, 16},
      {1, 48, 6, 6, 48, 3, 3, 1, 1, 2, 48},
      {1, 16, 8, 8, 32, 3, 3, 1, 1, 1, 16},
      // Small planes of several images, one product per group of images: 63 and 64 positions
      // (groups of four images, the last with one), a 1x1 window read through the gathered
      // columns, stride 2, two channel groups.
      {9, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1},
      {5, 2, 8, 8, 3, 3, 3, 1, 1, 1, 1},
      {5, 4, 4, 4, 6, 1, 1, 1, 0, 1, 1},
      {6, 3, 8, 8, 4, 3, 3, 2, 1, 1, 1},
      {5, 4, 6, 6, 6, 3, 3, 1, 1, 1, 2},
  };
  uint32_t seed = 1;
  for (const auto& p : cases) {
    for (int threads : {1, 2}) {
      Tensor x = random_f32({p.n, p.c, p.h, p.w}, seed++);
      Tensor wt = random_f32({p.m, p.c / p.group, p.kh, p.kw}, seed++);
      Tensor b = random_f32({p.m}, seed++);
      std::map<std::string, AttrValue> attrs = {{"strides", Ints{p.stride, p.stride}},
                                                {"pads", Ints{p.pad, p.pad, p.pad, p.pad}},
                                                {"dilations", Ints{p.dilation, p.dilation}},
                                                {"group", p.group}};
      auto y = run_op("Conv", attrs, {x, wt, b}, 13, 1, {}, threads);
      ASSERT_TRUE(y.ok()) << y.status().message();
      EXPECT_LT(test::max_relative_error((*y)[0], reference_conv(x, wt, b, p)), 1e-5)
          << "case c=" << p.c << " k=" << p.kh << "x" << p.kw << " s=" << p.stride << " g=" << p.group;
    }
  }
}

TEST(Conv, DepthwiseAppliesItsFusedActivationAfterTheBias) {
  Tensor x = make_f32({1, 2, 1, 3}, {1, -2, 3, -4, 5, -6});
  Tensor w = make_f32({2, 1, 1, 1}, {2, -1});
  Tensor b = make_f32({2}, {-1, 1});
  Tensor y = run1("Conv", {{"group", int64_t{2}}, {"sparrow.activation", std::vector<float>{0.0f, 4.0f}}},
                  {x, w, b});
  // Channel 0: 2x - 1 = {1, -5, 5} -> {1, 0, 4}; channel 1: -x + 1 = {5, -4, 7} -> {4, 0, 4}.
  EXPECT_EQ(values(y), (std::vector<float>{1, 0, 4, 4, 0, 4}));
}

TEST(Conv, DepthwiseOnAnEmptyBatchWritesNothing) {
  auto y = run_op("Conv", {{"group", int64_t{3}}},
                  {Tensor(DType::f32, {0, 3, 5, 5}), random_f32({3, 1, 3, 3}, 4)});
  ASSERT_TRUE(y.ok()) << y.status().message();
  EXPECT_EQ((*y)[0].shape(), (Shape{0, 3, 3, 3}));
}

TEST(MatMul, AnEmptyInnerDimensionGivesZeros) {
  Tensor y = run1("MatMul", {}, {Tensor(DType::f32, {2, 0}), Tensor(DType::f32, {0, 3})});
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  EXPECT_EQ(values(y), (std::vector<float>(6, 0.0f)));
}

TEST(Conv, OneDimensionalAndAsymmetricPads) {
  Tensor x = make_f32({1, 1, 5}, {1, 2, 3, 4, 5});
  Tensor w = make_f32({1, 1, 2}, {1, -1});
  Tensor y = run1("Conv", {{"pads", Ints{1, 0}}}, {x, w});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 5}));
  EXPECT_EQ(values(y), (std::vector<float>{-1, -1, -1, -1, -1}));
}

// Even windows whose output rows are as wide as the input's through uneven pads (ONNX order: top,
// left, bottom, right), against a plain loop: the taps' shifted blocks start and end right.
TEST(Conv, SameWidthWindowsWithUnevenPadsMatchAPlainLoop) {
  const Tensor x = random_f32({1, 3, 5, 6}, 71), w = random_f32({2, 3, 2, 2}, 72);
  for (const Ints& pads : {Ints{0, 0, 1, 1}, Ints{1, 1, 0, 0}, Ints{1, 0, 0, 1}, Ints{0, 1, 1, 0}}) {
    Tensor y = run1("Conv", {{"pads", pads}}, {x, w});
    ASSERT_EQ(y.shape(), (Shape{1, 2, 5, 6}));
    Tensor want(DType::f32, {1, 2, 5, 6});
    for (int64_t m = 0; m < 2; ++m)
      for (int64_t oh = 0; oh < 5; ++oh)
        for (int64_t ow = 0; ow < 6; ++ow) {
          double acc = 0;
          for (int64_t c = 0; c < 3; ++c)
            for (int64_t u = 0; u < 2; ++u)
              for (int64_t v = 0; v < 2; ++v) {
                const int64_t ih = oh - pads[0] + u, iw = ow - pads[1] + v;
                if (ih >= 0 && ih < 5 && iw >= 0 && iw < 6)
                  acc += x.f32_data()[(c * 5 + ih) * 6 + iw] * w.f32_data()[((m * 3 + c) * 2 + u) * 2 + v];
              }
          want.f32_data()[(m * 5 + oh) * 6 + ow] = static_cast<float>(acc);
        }
    EXPECT_LT(test::max_relative_error(y, want), 1e-5) << "pads " << pads[0] << pads[1] << pads[2] << pads[3];
  }
}

TEST(Conv, RejectsMismatchedChannels) {
  auto r = run_op("Conv", {}, {random_f32({1, 3, 5, 5}, 1), random_f32({2, 2, 3, 3}, 2)});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("node 'n' (Conv)"), std::string::npos) << r.status().message();
}

// ---------------------------------------------------------------- pooling
TEST(Pool, MaxPoolMatchesAPlainLoopOnWideRowsWithNaN) {
  struct Case {
    int64_t h, w, k, stride, pad, dilation;
  };
  uint32_t seed = 7;
  for (const Case& p :
       {Case{9, 37, 3, 2, 1, 1}, Case{6, 33, 2, 2, 0, 1}, Case{7, 20, 3, 1, 1, 2}, Case{4, 5, 3, 1, 2, 1},
        Case{12, 70, 5, 3, 2, 1},
        // stride 2, width 3 (16 outputs to a vector): 5, 16, 32 and 17 outputs
        Case{5, 11, 3, 2, 0, 1}, Case{5, 33, 3, 2, 0, 1}, Case{5, 65, 3, 2, 0, 1}, Case{5, 35, 3, 2, 0, 1}}) {
    Tensor x = random_f32({2, 3, p.h, p.w}, seed++);
    x.f32_data()[5] = std::numeric_limits<float>::quiet_NaN();
    x.f32_data()[p.h * p.w + 2 * p.w + 3] = std::numeric_limits<float>::quiet_NaN();
    x.f32_data()[2 * p.h * p.w + 2 * p.w - 1] = std::numeric_limits<float>::quiet_NaN();  // a row's last
    Tensor y = run1("MaxPool",
                    {{"kernel_shape", Ints{p.k, p.k}},
                     {"strides", Ints{p.stride, p.stride}},
                     {"pads", Ints{p.pad, p.pad, p.pad, p.pad}},
                     {"dilations", Ints{p.dilation, p.dilation}}},
                    {x});
    const int64_t reach = (p.k - 1) * p.dilation + 1;
    const int64_t oh = (p.h + 2 * p.pad - reach) / p.stride + 1,
                  ow = (p.w + 2 * p.pad - reach) / p.stride + 1;
    ASSERT_EQ(y.shape(), (Shape{2, 3, oh, ow}));
    Window2d win;
    win.in_h = p.h, win.in_w = p.w, win.k_h = win.k_w = p.k, win.s_h = win.s_w = p.stride;
    win.d_h = win.d_w = p.dilation, win.pad_t = win.pad_l = win.pad_b = win.pad_r = p.pad;
    for (int64_t plane = 0; plane < 6; ++plane)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const test::WindowMax want = test::window_max(x.f32_data() + plane * p.h * p.w, win, i, j);
          const float got = y.f32_data()[(plane * oh + i) * ow + j];
          if (want.nan)
            EXPECT_TRUE(std::isnan(got)) << "plane " << plane << " at " << i << "," << j;
          else
            EXPECT_EQ(got, want.value) << "plane " << plane << " at " << i << "," << j << " w=" << p.w;
        }
  }
}

TEST(Pool, MaxPoolCeilModePadsAndDilation) {
  Tensor x = make_f32({1, 1, 4, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  Tensor y = run1("MaxPool",
                  {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}}, {"ceil_mode", int64_t{1}}}, {x});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(values(y), (std::vector<float>{11, 12, 15, 16}));
  Tensor p = run1("MaxPool",
                  {{"kernel_shape", Ints{2, 2}}, {"pads", Ints{1, 1, 1, 1}}, {"strides", Ints{2, 2}}}, {x});
  EXPECT_EQ(values(p), (std::vector<float>{1, 3, 4, 9, 11, 12, 13, 15, 16}));
  Tensor d = run1("MaxPool", {{"kernel_shape", Ints{2, 2}}, {"dilations", Ints{2, 2}}}, {x}, 11);
  EXPECT_EQ(values(d), (std::vector<float>{11, 12, 15, 16}));
}

TEST(Pool, AveragePoolMatchesAPlainLoopOnEveryWindow) {
  struct Case {
    int64_t h, w, kh, kw, sh, sw;
    std::vector<int64_t> pads;  // top, left, bottom, right
    bool ceil;
  };
  const std::vector<Case> grid = {
      {9, 37, 3, 3, 2, 2, {1, 1, 1, 1}, true},   // 3x3 stride 2, ceil_mode: the last windows reach past
      {8, 8, 2, 2, 2, 2, {0, 0, 0, 0}, false},   // 2x2 stride 2
      {7, 20, 3, 3, 1, 1, {1, 1, 1, 1}, false},  // 3x3 stride 1
      {6, 13, 3, 5, 1, 3, {0, 2, 1, 0}, false},  // rectangular, asymmetric pads and strides
      {3, 3, 2, 2, 1, 1, {2, 2, 2, 2}, false},   // corner windows of padding only
      {5, 70, 7, 7, 3, 3, {3, 3, 3, 3}, true},   // wide rows
      {1, 29, 1, 4, 1, 2, {0, 1, 0, 2}, true},   // a 1-D pool as height 1
  };
  uint32_t seed = 30;
  for (const Case& c : grid)
    for (bool include_pad : {false, true})
      for (int threads : {1, 2}) {
        const bool one_d = c.h == 1 && c.kh == 1;
        // A 3x3 convolution first: its im2col columns leave the shared scratch full of values.
        Model m;
        m.source = "conv_then_pool";
        m.opset = 11;
        const Shape in_shape = one_d ? Shape{2, 3, c.w} : Shape{2, 3, c.h, c.w};
        m.inputs.push_back(
            ValueInfo{"x", ElemType::f32, in_shape, std::vector<std::string>(in_shape.size()), true});
        m.outputs = {ValueInfo{"c"}, ValueInfo{"y"}};
        m.initializers["k"] = random_f32(one_d ? Shape{3, 3, 3} : Shape{3, 3, 3, 3}, seed++);
        m.nodes.push_back(
            Node{"conv", "Conv", "", {"x", "k"}, {"c"}, {{"pads", one_d ? Ints{1, 1} : Ints{1, 1, 1, 1}}}});
        m.nodes.push_back(Node{"pool",
                               "AveragePool",
                               "",
                               {"c"},
                               {"y"},
                               {{"kernel_shape", one_d ? Ints{c.kw} : Ints{c.kh, c.kw}},
                                {"strides", one_d ? Ints{c.sw} : Ints{c.sh, c.sw}},
                                {"pads", one_d ? Ints{c.pads[1], c.pads[3]} : c.pads},
                                {"ceil_mode", int64_t{c.ceil}},
                                {"count_include_pad", int64_t{include_pad}}}});
        auto ex = Executor::create(std::move(m), test::threaded(threads));
        ASSERT_TRUE(ex.ok()) << ex.status().message();
        const std::vector<Tensor> feeds = {random_f32(in_shape, seed++)};
        auto y = (*ex)->run(feeds);
        ASSERT_TRUE(y.ok()) << y.status().message();
        const Tensor& x = *(*y)[0];
        const Tensor& out = *(*y)[1];
        const int64_t oh = one_d ? 1 : out.shape()[2], ow = out.shape().back();
        for (int64_t plane = 0; plane < 6; ++plane)
          for (int64_t i = 0; i < oh; ++i)
            for (int64_t j = 0; j < ow; ++j) {
              const int64_t h0 = i * c.sh - c.pads[0], w0 = j * c.sw - c.pads[1];
              double sum = 0;
              int64_t counted = 0;
              for (int64_t r = h0; r < h0 + c.kh; ++r)
                for (int64_t q = w0; q < w0 + c.kw; ++q)
                  if (r >= 0 && r < c.h && q >= 0 && q < c.w) {
                    sum += x.f32_data()[(plane * c.h + r) * c.w + q];
                    ++counted;
                  }
              // Padding counts with count_include_pad, window parts past the padded input never.
              const int64_t padded =
                  (std::min(h0 + c.kh, c.h + c.pads[2]) - h0) * (std::min(w0 + c.kw, c.w + c.pads[3]) - w0);
              const double want =
                  sum / static_cast<double>(std::max<int64_t>(include_pad ? padded : counted, 1));
              const float got = out.f32_data()[(plane * oh + i) * ow + j];
              EXPECT_NEAR(got, want, 1e-6 * (1.0 + std::abs(want)))
                  << "case " << c.h << "x" << c.w << " k" << c.kh << "x" << c.kw << " include_pad "
                  << include_pad << " threads " << threads << " plane " << plane << " at " << i << "," << j;
            }
      }
}

TEST(Pool, AveragePoolPaddingCountsAsConfigured) {
  Tensor x = make_f32({1, 1, 2, 2}, {1, 2, 3, 4});
  std::map<std::string, AttrValue> a = {
      {"kernel_shape", Ints{2, 2}}, {"pads", Ints{1, 1, 1, 1}}, {"strides", Ints{2, 2}}};
  EXPECT_EQ(values(run1("AveragePool", a, {x})), (std::vector<float>{1, 2, 3, 4}));
  a["count_include_pad"] = int64_t{1};
  EXPECT_EQ(values(run1("AveragePool", a, {x})), (std::vector<float>{0.25f, 0.5f, 0.75f, 1.0f}));
  Tensor g = run1("GlobalAveragePool", {}, {make_f32({1, 2, 1, 2}, {1, 3, 5, 9})});
  EXPECT_EQ(g.shape(), (Shape{1, 2, 1, 1}));
  EXPECT_EQ(values(g), (std::vector<float>{2, 7}));
}

// ---------------------------------------------------------------- Gemm / MatMul
// Batches of 8 to 64 samples against B stored [N, K] run as B A^T, transposed back (with C added
// or not); the others as A B^T. One and two threads (N large enough for them to split the rows).
TEST(Gemm, TransposesAlphaBetaAndBroadcastBias) {
  for (int64_t m : {3, 8, 16, 64, 65})
    for (int64_t ta : {0, 1})
      for (int64_t tb : {0, 1})
        for (bool with_c : {true, false})
          for (int threads : {1, 2}) {
            const int64_t k = 70, n = 300;
            Tensor a = random_f32(ta ? Shape{k, m} : Shape{m, k}, static_cast<uint32_t>(10 + ta + m));
            Tensor b = random_f32(tb ? Shape{n, k} : Shape{k, n}, static_cast<uint32_t>(20 + tb));
            Tensor c = random_f32({n}, 30);
            std::vector<Tensor> in{a, b};
            if (with_c) in.push_back(c);
            auto y = run_op("Gemm", {{"transA", ta}, {"transB", tb}, {"alpha", 0.5f}, {"beta", 2.0f}}, in, 13,
                            1, {}, threads);
            ASSERT_TRUE(y.ok()) << y.status().message();
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = 0; j < n; ++j) {
                double acc = 0;
                for (int64_t p = 0; p < k; ++p)
                  acc += (ta ? a.f32_data()[p * m + i] : a.f32_data()[i * k + p]) *
                         (tb ? b.f32_data()[j * k + p] : b.f32_data()[p * n + j]);
                const double want = 0.5 * acc + (with_c ? 2.0 * c.f32_data()[j] : 0.0);
                ASSERT_NEAR((*y)[0].f32_data()[i * n + j], want, 1e-4)
                    << "m " << m << " transA " << ta << " transB " << tb << " C " << with_c << " threads "
                    << threads << " at " << i << "," << j;
              }
          }
}

TEST(MatMul, VectorsAndBatchBroadcast) {
  Tensor v = make_f32({2}, {1, 2});
  Tensor m = make_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor y = run1("MatMul", {}, {v, m});
  EXPECT_EQ(y.shape(), (Shape{3}));
  EXPECT_EQ(values(y), (std::vector<float>{9, 12, 15}));
  Tensor a = random_f32({2, 1, 3, 4}, 1), b = random_f32({3, 4, 2}, 2);
  Tensor z = run1("MatMul", {}, {a, b});
  ASSERT_EQ(z.shape(), (Shape{2, 3, 3, 2}));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t c = 0; c < 2; ++c) {
          double acc = 0;
          for (int64_t p = 0; p < 4; ++p)
            acc += a.f32_data()[(i * 3 + r) * 4 + p] * b.f32_data()[(j * 4 + p) * 2 + c];
          EXPECT_NEAR(z.f32_data()[((i * 3 + j) * 3 + r) * 2 + c], acc, 1e-5);
        }
  EXPECT_FALSE(run_op("MatMul", {}, {random_f32({2, 3}, 1), random_f32({4, 2}, 2)}).ok());
}

// ---------------------------------------------------------------- elementwise
TEST(Elementwise, UnaryValues) {
  Tensor x = make_f32({4}, {-2, -0.5f, 0, 3});
  EXPECT_EQ(values(run1("Relu", {}, {x})), (std::vector<float>{0, 0, 0, 3}));
  EXPECT_EQ(values(run1("LeakyRelu", {{"alpha", 0.1f}}, {x})), (std::vector<float>{-0.2f, -0.05f, 0, 3}));
  Tensor s = run1("Sigmoid", {}, {x});
  EXPECT_NEAR(s.f32_data()[3], 1 / (1 + std::exp(-3.0)), 1e-7);
  EXPECT_NEAR(run1("Tanh", {}, {x}).f32_data()[0], std::tanh(-2.0), 1e-7);
  EXPECT_NEAR(run1("Exp", {}, {x}).f32_data()[1], std::exp(-0.5), 1e-7);
  EXPECT_NEAR(run1("Log", {}, {make_f32({1}, {2})}).f32_data()[0], std::log(2.0), 1e-7);
  EXPECT_EQ(run1("Sqrt", {}, {make_f32({1}, {9})}).f32_data()[0], 3.0f);
}

TEST(Elementwise, BroadcastingBinaryAndVariadic) {
  Tensor a = make_f32({2, 1, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = make_f32({2, 1}, {10, 20});
  Tensor y = run1("Add", {}, {a, b});
  EXPECT_EQ(y.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(values(y), (std::vector<float>{11, 12, 13, 21, 22, 23, 14, 15, 16, 24, 25, 26}));
  EXPECT_EQ(values(run1("Sub", {}, {make_f32({2}, {5, 5}), make_f32({}, {1})})), (std::vector<float>{4, 4}));
  EXPECT_EQ(values(run1("Div", {}, {make_f32({2}, {1, 6}), make_f32({2}, {2, 3})})),
            (std::vector<float>{0.5f, 2}));
  EXPECT_EQ(values(run1("Pow", {}, {make_f32({2}, {2, 3}), make_f32({1}, {2})})), (std::vector<float>{4, 9}));
  Tensor mx = run1("Max", {}, {make_f32({3}, {1, 5, 2}), make_f32({1}, {3}), make_f32({2, 1}, {0, 4})});
  EXPECT_EQ(mx.shape(), (Shape{2, 3}));
  EXPECT_EQ(values(mx), (std::vector<float>{3, 5, 3, 4, 5, 4}));
  EXPECT_EQ(values(run1("Min", {}, {make_f32({3}, {1, 5, 2}), make_f32({1}, {3})})),
            (std::vector<float>{1, 3, 2}));
  auto bad =
      run_op("Add", {}, {make_f32({2, 3}, std::vector<float>(6)), make_f32({4}, std::vector<float>(4))});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("do not broadcast"), std::string::npos);
}

TEST(Elementwise, ClipForms) {
  Tensor x = make_f32({3}, {-2, 0.5f, 2});
  EXPECT_EQ(values(run1("Clip", {{"min", -1.0f}, {"max", 1.0f}}, {x}, 9)), (std::vector<float>{-1, 0.5f, 1}));
  auto r = run_op("Clip", {}, {x, make_f32({}, {0}), make_f32({}, {0})}, 13, 1, {1});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(values((*r)[0]), (std::vector<float>{-2, 0, 0}));
}

TEST(Elementwise, CastAndIntegerDivisionByZero) {
  auto r = run_op("Cast", {{"to", int64_t{7}}}, {make_f32({3}, {-1.7f, 2.9f, NAN})});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].dtype(), DType::i64);
  EXPECT_EQ((*r)[0].i64_data()[0], -1);
  EXPECT_EQ((*r)[0].i64_data()[1], 2);
  EXPECT_EQ((*r)[0].i64_data()[2], 0);
  auto div = run_op("Div", {}, {make_i64({2}, {4, 2}), make_i64({2}, {2, 0})});
  ASSERT_FALSE(div.ok());
  EXPECT_NE(div.status().message().find("division by zero"), std::string::npos);
}

// ---------------------------------------------------------------- normalization
TEST(Softmax, AxisSemanticsChangeAtOpset13) {
  Tensor x = random_f32({2, 3, 4}, 3);
  Tensor new_form = run1("Softmax", {{"axis", int64_t{1}}}, {x}, 13);  // over axis 1 only
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t k = 0; k < 4; ++k) {
      double sum = 0;
      for (int64_t c = 0; c < 3; ++c) sum += new_form.f32_data()[(n * 3 + c) * 4 + k];
      EXPECT_NEAR(sum, 1.0, 1e-6);
    }
  Tensor old_form = run1("Softmax", {{"axis", int64_t{1}}}, {x}, 11);  // over axes 1..2 flattened
  for (int64_t n = 0; n < 2; ++n) {
    double sum = 0;
    for (int64_t i = 0; i < 12; ++i) sum += old_form.f32_data()[n * 12 + i];
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
  Tensor ls = run1("LogSoftmax", {}, {make_f32({2}, {0, 0})}, 13);
  EXPECT_NEAR(ls.f32_data()[0], std::log(0.5), 1e-6);
}

TEST(BatchNorm, InferenceForm) {
  Tensor x = make_f32({1, 2, 1, 2}, {1, 2, 3, 4});
  Tensor y =
      run1("BatchNormalization", {{"epsilon", 0.0f}},
           {x, make_f32({2}, {2, 1}), make_f32({2}, {0, 1}), make_f32({2}, {1, 3}), make_f32({2}, {4, 1})});
  EXPECT_EQ(values(y), (std::vector<float>{0, 1, 1, 2}));
}

TEST(ReduceMean, AxesAndKeepdims) {
  Tensor x = make_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor y = run1("ReduceMean", {{"axes", Ints{1}}, {"keepdims", int64_t{0}}}, {x});
  EXPECT_EQ(y.shape(), (Shape{2}));
  EXPECT_EQ(values(y), (std::vector<float>{2, 5}));
  Tensor all = run1("ReduceMean", {}, {x});
  EXPECT_EQ(all.shape(), (Shape{1, 1}));
  EXPECT_EQ(all.f32_data()[0], 3.5f);
}

TEST(ReduceSum, AdjacentAndSeparatedAxesMatchAPlainSum) {
  Tensor x = random_f32({2, 3, 4, 5}, 11);
  auto at = [&](int64_t a, int64_t b, int64_t c, int64_t d) {
    return x.f32_data()[((a * 3 + b) * 4 + c) * 5 + d];
  };
  for (const Ints& axes : {Ints{1, 2}, Ints{0, 2}, Ints{3}, Ints{0, 1, 2, 3}, Ints{2, 1}}) {
    Tensor y = run1("ReduceMean", {{"axes", axes}, {"keepdims", int64_t{1}}}, {x});
    auto reduced = [&](int64_t d) { return std::find(axes.begin(), axes.end(), d) != axes.end(); };
    const int64_t dims[4] = {2, 3, 4, 5};
    int64_t count = 1;
    for (int64_t d = 0; d < 4; ++d) count *= reduced(d) ? dims[d] : 1;
    for (int64_t a = 0; a < (reduced(0) ? 1 : 2); ++a)
      for (int64_t b = 0; b < (reduced(1) ? 1 : 3); ++b)
        for (int64_t c = 0; c < (reduced(2) ? 1 : 4); ++c)
          for (int64_t d = 0; d < (reduced(3) ? 1 : 5); ++d) {
            double sum = 0;
            for (int64_t i = 0; i < (reduced(0) ? 2 : 1); ++i)
              for (int64_t j = 0; j < (reduced(1) ? 3 : 1); ++j)
                for (int64_t k = 0; k < (reduced(2) ? 4 : 1); ++k)
                  for (int64_t l = 0; l < (reduced(3) ? 5 : 1); ++l) sum += at(a + i, b + j, c + k, d + l);
            const Shape& s = y.shape();
            const float got = y.f32_data()[((a * s[1] + b) * s[2] + c) * s[3] + d];
            EXPECT_NEAR(got, sum / static_cast<double>(count), 1e-5)
                << "axes " << axes.size() << " at " << a << b << c << d;
          }
  }
}

TEST(Elementwise, PowOfTwoIsTheCorrectlyRoundedSquare) {
  const std::vector<float> xs = {0.0f,
                                 -0.0f,
                                 1.5f,
                                 -3.25f,
                                 1.0000001f,
                                 3e19f,
                                 2e38f,
                                 -1e-30f,
                                 std::numeric_limits<float>::infinity(),
                                 std::numeric_limits<float>::quiet_NaN()};
  Tensor y = run1("Pow", {}, {make_f32({static_cast<int64_t>(xs.size())}, xs), make_f32({}, {2.0f})});
  for (size_t i = 0; i < xs.size(); ++i) {
    const float want = static_cast<float>(std::pow(static_cast<double>(xs[i]), 2.0));
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(y.f32_data()[i]));
    else
      EXPECT_EQ(y.f32_data()[i], want) << xs[i];
  }
}

// ---------------------------------------------------------------- shape ops
TEST(ShapeOps, ReshapeZeroAndMinusOne) {
  Tensor x = random_f32({2, 3, 4}, 1);
  Tensor y = run1("Reshape", {}, {x, make_i64({2}, {0, -1})});
  EXPECT_EQ(y.shape(), (Shape{2, 12}));
  EXPECT_EQ(values(y), values(x));
  auto bad = run_op("Reshape", {}, {x, make_i64({2}, {5, -1})});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cannot reshape"), std::string::npos);
}

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> strides(s.size(), 1);
  for (size_t d = s.size(); d-- > 1;) strides[d - 1] = strides[d] * s[d];
  return strides;
}

// Rotating permutations run as matrix transposes in 8x8 tiles: every element lands where the
// definition puts it, for shapes that are not multiples of the tile.
TEST(ShapeOps, TransposeRotationsMatchTheDefinition) {
  for (const Shape& shape : {Shape{3, 5}, Shape{9, 17}, Shape{2, 3, 4}, Shape{7, 1, 10}, Shape{2, 3, 4, 5}})
    for (size_t k = 1; k < shape.size(); ++k) {
      std::vector<int64_t> perm;
      for (size_t i = 0; i < shape.size(); ++i) perm.push_back(static_cast<int64_t>((k + i) % shape.size()));
      const Tensor x = test::random_f32(shape, static_cast<uint32_t>(k + shape.size()));
      const Tensor y = run1("Transpose", {{"perm", perm}}, {x});
      const auto in_strides = strides_of(shape);
      Shape out_shape;
      for (int64_t p : perm) out_shape.push_back(shape[static_cast<size_t>(p)]);
      ASSERT_EQ(y.shape(), out_shape);
      const auto out_strides = strides_of(out_shape);
      for (int64_t o = 0; o < y.numel(); ++o) {
        int64_t src = 0;
        for (size_t d = 0; d < out_shape.size(); ++d)
          src += (o / out_strides[d] % out_shape[d]) * in_strides[static_cast<size_t>(perm[d])];
        ASSERT_EQ(y.f32_data()[o], x.f32_data()[src])
            << shape_str(shape) << " perm " << shape_str(perm) << " at " << o;
      }
    }
}

TEST(ShapeOps, FlattenTransposeSqueezeUnsqueeze) {
  Tensor x = make_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(run1("Flatten", {{"axis", int64_t{0}}}, {x}).shape(), (Shape{1, 6}));
  Tensor t = run1("Transpose", {}, {x});
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_EQ(values(t), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  Tensor u = run1("Unsqueeze", {}, {x, make_i64({2}, {0, -1})});
  EXPECT_EQ(u.shape(), (Shape{1, 2, 3, 1}));
  EXPECT_EQ(run1("Squeeze", {}, {u}).shape(), (Shape{2, 3}));
  EXPECT_EQ(run1("Squeeze", {{"axes", Ints{0}}}, {u}, 11).shape(), (Shape{2, 3, 1}));
  EXPECT_FALSE(run_op("Squeeze", {}, {x, make_i64({1}, {0})}).ok()) << "axis 0 has size 2";
}

// Large enough to be cut into pieces shared by the threads (channels of 120 KB and 72 KB).
TEST(ShapeOps, ConcatOfLargeInputsOverThreads) {
  Tensor a = random_f32({2, 100, 300}, 1), b = random_f32({2, 60, 300}, 2);
  for (int threads : {1, 2}) {
    auto y = run_op("Concat", {{"axis", int64_t{1}}}, {a, b}, 13, 1, {}, threads);
    ASSERT_TRUE(y.ok()) << y.status().message();
    ASSERT_EQ((*y)[0].shape(), (Shape{2, 160, 300}));
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 160; ++c)
        for (int64_t i = 0; i < 300; ++i) {
          const float want =
              c < 100 ? a.f32_data()[(n * 100 + c) * 300 + i] : b.f32_data()[(n * 60 + c - 100) * 300 + i];
          ASSERT_EQ((*y)[0].f32_data()[(n * 160 + c) * 300 + i], want)
              << "threads " << threads << " at " << n << "," << c << "," << i;
        }
  }
}

TEST(ShapeOps, ConcatSplitSlice) {
  Tensor a = make_f32({2, 1}, {1, 2}), b = make_f32({2, 2}, {3, 4, 5, 6});
  Tensor c = run1("Concat", {{"axis", int64_t{1}}}, {a, b});
  EXPECT_EQ(values(c), (std::vector<float>{1, 3, 4, 2, 5, 6}));
  auto parts = run_op("Split", {{"axis", int64_t{1}}}, {c, make_i64({2}, {2, 1})}, 13, 2);
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  EXPECT_EQ(values((*parts)[0]), (std::vector<float>{1, 3, 2, 5}));
  EXPECT_EQ(values((*parts)[1]), (std::vector<float>{4, 6}));
  Tensor x = make_f32({5}, {0, 1, 2, 3, 4});
  EXPECT_EQ(
      values(run1("Slice", {},
                  {x, make_i64({1}, {-1}), make_i64({1}, {-100}), make_i64({1}, {0}), make_i64({1}, {-2})})),
      (std::vector<float>{4, 2, 0}));
  EXPECT_EQ(run1("Slice", {}, {x, make_i64({1}, {3}), make_i64({1}, {1})}).numel(), 0);
}

TEST(ShapeOps, ExtremeStepsAndShapesNeverOverflow) {
  Tensor x = make_f32({5}, {0, 1, 2, 3, 4});
  const int64_t big = std::numeric_limits<int64_t>::max(), small = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(
      values(run1("Slice", {},
                  {x, make_i64({1}, {1}), make_i64({1}, {5}), make_i64({1}, {0}), make_i64({1}, {big})})),
      (std::vector<float>{1}));
  EXPECT_EQ(values(run1("Slice", {},
                        {x, make_i64({1}, {-1}), make_i64({1}, {small}), make_i64({1}, {0}),
                         make_i64({1}, {small})})),
            (std::vector<float>{4}));
  auto huge = run_op("Reshape", {}, {x, make_i64({3}, {int64_t{1} << 31, int64_t{1} << 31, -1})});
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("more than"), std::string::npos) << huge.status().message();
}

TEST(ShapeOps, AFloatShapeThatIsNoIntegerIsRefused) {
  for (float bad : {std::nanf(""), INFINITY, 1e30f}) {
    Model m;
    m.source = "float_shape";
    m.inputs.push_back(ValueInfo{"x", ElemType::f32, {2, 3}, {"", ""}, true});
    m.outputs.push_back(ValueInfo{"y"});
    m.initializers["s"] = make_f32({2}, {bad, 3.0f});
    m.nodes.push_back(Node{"r", "Reshape", "", {"x", "s"}, {"y"}, {}});
    auto ex = Executor::create(std::move(m));
    ASSERT_TRUE(ex.ok()) << ex.status().message();
    Tensor x(DType::f32, {2, 3});
    auto y = (*ex)->run({&x, 1});
    ASSERT_FALSE(y.ok()) << bad;
    EXPECT_NE(y.status().message().find("not an integer"), std::string::npos) << y.status().message();
  }
}

TEST(ShapeOps, GatherPadExpandConstantOfShapeShape) {
  Tensor x = make_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(values(run1("Gather", {{"axis", int64_t{1}}}, {x, make_i64({2}, {-1, 0})})),
            (std::vector<float>{3, 1, 6, 4}));
  auto oob = run_op("Gather", {}, {x, make_i64({1}, {2})});
  ASSERT_FALSE(oob.ok());
  EXPECT_NE(oob.status().message().find("out of range"), std::string::npos);
  Tensor row = make_f32({1, 3}, {1, 2, 3});
  EXPECT_EQ(values(run1("Pad", {{"mode", std::string("reflect")}}, {row, make_i64({4}, {0, 2, 0, 1})})),
            (std::vector<float>{3, 2, 1, 2, 3, 2}));
  EXPECT_EQ(values(run1("Pad", {{"mode", std::string("edge")}}, {row, make_i64({4}, {0, 1, 0, 2})})),
            (std::vector<float>{1, 1, 2, 3, 3, 3}));
  Tensor e = run1("Expand", {}, {make_f32({3, 1}, {1, 2, 3}), make_i64({3}, {2, 1, 4})});
  EXPECT_EQ(e.shape(), (Shape{2, 3, 4}));
  auto cos = run_op("ConstantOfShape", {}, {make_i64({2}, {2, 2})});
  ASSERT_TRUE(cos.ok());
  EXPECT_EQ(values((*cos)[0]), (std::vector<float>{0, 0, 0, 0}));
  auto shape = run_op("Shape", {{"start", int64_t{1}}}, {random_f32({4, 5, 6}, 1)}, 15);
  ASSERT_TRUE(shape.ok());
  EXPECT_EQ((*shape)[0].i64_data()[0], 5);
  EXPECT_EQ((*shape)[0].i64_data()[1], 6);
}

TEST(ShapeOps, TileRepeatsEachAxis) {
  Tensor y = run1("Tile", {}, {make_f32({2, 2}, {1, 2, 3, 4}), make_i64({2}, {2, 3})});
  EXPECT_EQ(y.shape(), (Shape{4, 6}));
  EXPECT_EQ(values(y),
            (std::vector<float>{1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4, 1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4}));
}

TEST(Elementwise, CompareAndWhereBroadcast) {
  auto eq = run_op("Equal", {}, {make_i64({3}, {1, -1, 5}), make_i64({1}, {-1})});
  ASSERT_TRUE(eq.ok()) << eq.status().message();
  EXPECT_EQ(std::vector<int64_t>((*eq)[0].i64_data(), (*eq)[0].i64_data() + 3),
            (std::vector<int64_t>{0, 1, 0}));
  auto lt = run_op("Less", {}, {make_f32({2, 1}, {1, 3}), make_f32({2}, {2, 3})});
  ASSERT_TRUE(lt.ok());
  EXPECT_EQ(std::vector<int64_t>((*lt)[0].i64_data(), (*lt)[0].i64_data() + 4),
            (std::vector<int64_t>{1, 1, 0, 0}));
  auto gt = run_op("Greater", {}, {make_f32({2}, {1, 3}), make_f32({1}, {2})});
  EXPECT_EQ((*gt)[0].i64_data()[1], 1);
  Tensor w = run1("Where", {}, {make_i64({2, 1}, {1, 0}), make_f32({3}, {1, 2, 3}), make_f32({1}, {-1})});
  EXPECT_EQ(w.shape(), (Shape{2, 3}));
  EXPECT_EQ(values(w), (std::vector<float>{1, 2, 3, -1, -1, -1}));
}

TEST(Elementwise, NegAbsAndIntegerCastToFloat) {
  Tensor x = make_f32({2}, {-1.5f, 2});
  EXPECT_EQ(values(run1("Neg", {}, {x})), (std::vector<float>{1.5f, -2}));
  EXPECT_EQ(values(run1("Abs", {}, {x})), (std::vector<float>{1.5f, 2}));
  auto c = run_op("Cast", {{"to", int64_t{1}}}, {make_i64({2}, {-3, 7})});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(values((*c)[0]), (std::vector<float>{-3, 7}));
}

TEST(ReduceSum, AxesInputFromOpset13AndAttributeBefore) {
  Tensor x = make_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor y = run1("ReduceSum", {{"keepdims", int64_t{0}}}, {x, make_i64({1}, {0})}, 13);
  EXPECT_EQ(values(y), (std::vector<float>{5, 7, 9}));
  Tensor z = run1("ReduceSum", {{"axes", Ints{-1}}}, {x}, 11);
  EXPECT_EQ(z.shape(), (Shape{2, 1}));
  EXPECT_EQ(values(z), (std::vector<float>{6, 15}));
}

TEST(Pool, GlobalMaxPool) {
  Tensor g = run1("GlobalMaxPool", {}, {make_f32({1, 2, 2, 1}, {1, -3, -5, -2})});
  EXPECT_EQ(values(g), (std::vector<float>{1, -2}));
}

// Planes below, at and above the reduction's lane count, on one and two threads; NaN in a plane
// makes that plane's result NaN and no other.
TEST(Pool, GlobalPoolsMatchAPlainLoopOnEveryPlaneSize) {
  uint32_t seed = 40;
  for (int64_t size : {1, 7, 8, 9, 16, 17, 169})
    for (int threads : {1, 2}) {
      const int64_t planes = 130;  // two threads split planes from 64 each
      Tensor x = random_f32({2, planes / 2, size, 1}, seed++);
      float* data = x.f32_data();
      data[(planes - 1) * size + size / 2] = NAN;  // the last plane
      auto avg = run_op("GlobalAveragePool", {}, {x}, 13, 1, {}, threads);
      auto max = run_op("GlobalMaxPool", {}, {x}, 13, 1, {}, threads);
      ASSERT_TRUE(avg.ok() && max.ok());
      EXPECT_EQ((*avg)[0].shape(), (Shape{2, planes / 2, 1, 1}));
      for (int64_t p = 0; p < planes; ++p) {
        double sum = 0, scale = 0;
        float biggest = -INFINITY;
        for (int64_t i = 0; i < size; ++i) {
          sum += data[p * size + i];
          scale += std::abs(data[p * size + i]);
          biggest = std::max(biggest, data[p * size + i]);
        }
        const float got_avg = (*avg)[0].f32_data()[p], got_max = (*max)[0].f32_data()[p];
        if (p == planes - 1) {
          EXPECT_TRUE(std::isnan(got_avg) && std::isnan(got_max)) << "plane of " << size << " with NaN";
          continue;
        }
        EXPECT_NEAR(got_avg, sum / size, 1e-6 * scale / size)
            << "plane of " << size << ", " << threads << " threads";
        EXPECT_EQ(got_max, biggest) << "plane of " << size << ", " << threads << " threads";
      }
    }
}

// ---------------------------------------------------------------- sgemm over threads
// Split along M (B shared), along N (A shared), and below the work where threads pay, with every
// transposition, against a plain double-precision product.
TEST(Sgemm, ParallelSplitsMatchAPlainLoop) {
  struct Case {
    int64_t m, n, k;
  };
  uint32_t seed = 70;
  for (Case c : {Case{96, 20, 64}, Case{12, 700, 40}, Case{8, 9, 7}, Case{40, 40, 50}, Case{24, 30, 200}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (int threads : {2, 3}) {
          Tensor a = random_f32({c.m * c.k}, seed++), b = random_f32({c.k * c.n}, seed++);
          Tensor y = random_f32({c.m * c.n}, seed++);
          std::vector<float> before(y.f32_data(), y.f32_data() + c.m * c.n);
          const int64_t lda = ta ? c.m : c.k, ldb = tb ? c.k : c.n;
          ThreadPool pool(threads);
          sgemm_parallel(pool, ta, tb, c.m, c.n, c.k, 0.5f, a.f32_data(), lda, b.f32_data(), ldb, 2.0f,
                         y.f32_data(), c.n);
          for (int64_t i = 0; i < c.m; ++i)
            for (int64_t j = 0; j < c.n; ++j) {
              double want = 2.0 * before[i * c.n + j];
              for (int64_t p = 0; p < c.k; ++p)
                want += 0.5 * double(ta ? a.f32_data()[p * lda + i] : a.f32_data()[i * lda + p]) *
                        (tb ? b.f32_data()[j * ldb + p] : b.f32_data()[p * ldb + j]);
              ASSERT_NEAR(y.f32_data()[i * c.n + j], want, 1e-4)
                  << c.m << "x" << c.n << "x" << c.k << " ta " << ta << " tb " << tb << " threads "
                  << threads;
            }
        }
}

// ---------------------------------------------------------------- LSTM
TEST(Lstm, ZeroWeightsGiveClosedFormState) {
  // With W = R = B = 0 every gate is sigmoid(0) = 0.5 and the candidate tanh(0) = 0,
  // so c_t = 0.5 * c_{t-1} and h_t = 0.5 * tanh(c_t).
  int64_t seq = 3, batch = 2, in = 4, hid = 2;
  Tensor x = random_f32({seq, batch, in}, 5);
  Tensor w(DType::f32, {1, 4 * hid, in}), r(DType::f32, {1, 4 * hid, hid});
  Tensor b(DType::f32, {1, 8 * hid});
  Tensor h0(DType::f32, {1, batch, hid});
  Tensor c0 = make_f32({1, batch, hid}, {1, -2, 4, 0.5f});
  auto out = run_op("LSTM", {{"hidden_size", hid}}, {x, w, r, b, Tensor(), h0, c0}, 13, 3, {4});
  ASSERT_TRUE(out.ok()) << out.status().message();
  for (int64_t k = 0; k < batch * hid; ++k) {
    double c = c0.f32_data()[k] * 0.125;
    EXPECT_NEAR((*out)[2].f32_data()[k], c, 1e-6);
    EXPECT_NEAR((*out)[1].f32_data()[k], 0.5 * std::tanh(c), 1e-6);
  }
  EXPECT_EQ((*out)[0].shape(), (Shape{seq, 1, batch, hid}));
}

// ONNX's forward LSTM (gates i, o, f, c; no peepholes) in double precision: Y_h [batch, H].
std::vector<double> reference_lstm_h(const Tensor& x, const Tensor& w, const Tensor& r, const Tensor& b,
                                     int64_t hid) {
  const int64_t seq = x.shape()[0], batch = x.shape()[1], in = x.shape()[2], G = 4 * hid;
  std::vector<double> h(static_cast<size_t>(batch * hid), 0.0), c = h;
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  for (int64_t t = 0; t < seq; ++t) {
    std::vector<double> next_h = h;
    for (int64_t n = 0; n < batch; ++n) {
      std::vector<double> gate(static_cast<size_t>(G));
      for (int64_t g = 0; g < G; ++g) {
        double v = double(b.f32_data()[g]) + b.f32_data()[G + g];
        for (int64_t j = 0; j < in; ++j)
          v += double(w.f32_data()[g * in + j]) * x.f32_data()[(t * batch + n) * in + j];
        for (int64_t j = 0; j < hid; ++j) v += double(r.f32_data()[g * hid + j]) * h[n * hid + j];
        gate[g] = v;
      }
      for (int64_t j = 0; j < hid; ++j) {
        const double i = sigmoid(gate[j]), o = sigmoid(gate[hid + j]), f = sigmoid(gate[2 * hid + j]);
        double& cell = c[n * hid + j];
        cell = f * cell + i * std::tanh(gate[3 * hid + j]);
        next_h[n * hid + j] = o * std::tanh(cell);
      }
    }
    h = next_h;
  }
  return h;
}

// Dense weights at batch 1 (h R^T per step) and at batches of 4 and more (R times the transposed
// states), on one and two threads.
TEST(Lstm, DenseMatchesAPlainLoopAtEveryBatch) {
  // Hidden 40: R is 160 x 40, enough work at batch 16 for the threads to split the product; hidden
  // 128 (R 512 x 128) splits it at batch 1 too.
  const int64_t seq = 3, in = 5;
  uint32_t seed = 40;
  for (int64_t hid : {40, 128})
    for (int64_t batch : {1, 3, 4, 7, 16})
      for (int threads : {1, 2}) {
        const int64_t G = 4 * hid;
        Tensor x = random_f32({seq, batch, in}, seed++), w = random_f32({1, G, in}, seed++);
        Tensor r = random_f32({1, G, hid}, seed++), b = random_f32({1, 2 * G}, seed++);
        auto out = run_op("LSTM", {{"hidden_size", hid}}, {x, w, r, b}, 13, 2, {}, threads);
        ASSERT_TRUE(out.ok()) << out.status().message();
        const std::vector<double> want = reference_lstm_h(x, w, r, b, hid);
        for (size_t k = 0; k < want.size(); ++k)
          ASSERT_NEAR((*out)[1].f32_data()[k], want[k], 1e-5)
              << "hidden " << hid << " batch " << batch << " threads " << threads << " at " << k;
      }
}

// Several samples step in the transposed layout unless sequence lengths (or peepholes) are given;
// full lengths change nothing in ONNX's LSTM, so they run the same product sample by sample. Every
// output, both layouts, given and zero initial states.
TEST(Lstm, TransposedStepsMatchTheSampleBySampleSteps) {
  const int64_t seq = 3, in = 5, hid = 24, G = 4 * hid;
  uint32_t seed = 90;
  for (int64_t batch : {4, 7, 16})
    for (int64_t layout : {0, 1})
      for (bool states : {false, true})
        for (int threads : {1, 2}) {
          Shape xs = layout == 0 ? Shape{seq, batch, in} : Shape{batch, seq, in};
          Shape hs = layout == 0 ? Shape{1, batch, hid} : Shape{batch, 1, hid};
          Tensor x = random_f32(xs, seed++), w = random_f32({1, G, in}, seed++);
          Tensor r = random_f32({1, G, hid}, seed++), b = random_f32({1, 2 * G}, seed++);
          Tensor h0 = random_f32(hs, seed++), c0 = random_f32(hs, seed++);
          Tensor lens(DType::i64, {batch});
          std::fill_n(lens.i64_data(), batch, seq);
          std::map<std::string, AttrValue> attrs = {{"hidden_size", hid}, {"layout", layout}};
          std::vector<size_t> no_states = states ? std::vector<size_t>{} : std::vector<size_t>{5, 6};
          std::vector<size_t> no_lens = no_states;
          no_lens.push_back(4);
          auto transposed = run_op("LSTM", attrs, {x, w, r, b, lens, h0, c0}, 14, 3, no_lens, threads);
          auto by_sample = run_op("LSTM", attrs, {x, w, r, b, lens, h0, c0}, 14, 3, no_states, threads);
          ASSERT_TRUE(transposed.ok()) << transposed.status().message();
          ASSERT_TRUE(by_sample.ok()) << by_sample.status().message();
          for (size_t o = 0; o < 3; ++o) {
            ASSERT_EQ((*transposed)[o].shape(), (*by_sample)[o].shape());
            EXPECT_LT(test::max_relative_error((*transposed)[o], (*by_sample)[o]), 1e-5)
                << "output " << o << " batch " << batch << " layout " << layout << " states " << states
                << " threads " << threads;
          }
        }
}

TEST(Lstm, RejectsUnsupportedDirection) {
  auto r = run_op("LSTM", {{"direction", std::string("bidirectional")}},
                  {random_f32({1, 1, 2}, 1), random_f32({2, 4, 2}, 2), random_f32({2, 4, 1}, 3)});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bidirectional"), std::string::npos);
}

TEST(Registry, UnsupportedOperatorNamesOpNodeAndOpset) {
  auto r = run_op("Einsum", {}, {random_f32({2}, 1)}, 12);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unsupported operator Einsum in node 'n' (opset 12)"),
            std::string::npos)
      << r.status().message();
}

}  // namespace
}  // namespace sparrow
