// The float32 peers that `bench --eie` times Sparrow against compute the product they claim to: a
// peer that skipped work would flatter nobody but itself.
#include <random>

#include "harness/fp32_peers.h"
#include "test_util.h"

namespace sparrow {
namespace {

std::vector<float> random_sparse(int64_t rows, int64_t cols, double density, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.0f);
  for (auto& v : w)
    if (std::uniform_real_distribution<double>(0, 1)(rng) < density) v = u(rng);
  return w;
}

TEST(Peers, PanelledCsrMatchesADenseLoopAcrossPanelsAndBatchChunks) {
  const int64_t rows = 37, cols = 2 * kPeerPanelColumns + 59, batch = 70, ldx = 72, ldy = 75;
  const std::vector<float> w = random_sparse(rows, cols, 0.2, 1);
  const std::vector<float> xt = random_sparse(cols, ldx, 1.0, 2);
  const auto panels = plain_csr_panels(w, rows, cols);
  ASSERT_EQ(panels.size(), 3u);
  std::vector<float> y(static_cast<size_t>(rows * ldy), -7.0f);
  plain_csr_spmm(panels, 5, 30, xt.data(), ldx, batch, y.data(), ldy);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < ldy; ++b) {
      const float got = y[static_cast<size_t>(r * ldy + b)];
      if (r < 5 || r >= 30 || b >= batch) {
        ASSERT_EQ(got, -7.0f) << "wrote outside rows [5, 30) x batch at " << r << "," << b;
        continue;
      }
      double want = 0;
      for (int64_t c = 0; c < cols; ++c) want += double{w[r * cols + c]} * xt[c * ldx + b];
      EXPECT_NEAR(got, want, 1e-4 * (1 + std::abs(want))) << r << "," << b;
    }
}

TEST(Peers, CscWalkSkippingZeroInputsMatchesADenseLoop) {
  const int64_t rows = 50, cols = 300;
  const std::vector<float> w = random_sparse(rows, cols, 0.1, 3);
  const std::vector<float> x = random_sparse(1, cols, 0.4, 4);
  std::vector<float> y(static_cast<size_t>(rows), -7.0f);
  plain_csc_spmv(plain_csc(w, rows, cols), x.data(), y.data());
  for (int64_t r = 0; r < rows; ++r) {
    double want = 0;
    for (int64_t c = 0; c < cols; ++c) want += double{w[r * cols + c]} * x[c];
    EXPECT_NEAR(y[r], want, 1e-4 * (1 + std::abs(want))) << r;
  }
}

}  // namespace
}  // namespace sparrow
