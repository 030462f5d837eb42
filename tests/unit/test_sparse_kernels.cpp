// Every sparse kernel variant against the scalar reference, and the reference against a dense
// double-precision product, on an edge-case grid: rows below/at/above the 16-lane width, empty
// columns, all-zero and fully dense inputs, the longest gaps (fillers), every code used, odd sizes.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "engine/epilogue.h"
#include "engine/sparse/code_source.h"
#include "engine/sparse/kernels.h"
#include "engine/sparse/layout_table.h"
#include "engine/sparse/sparse_run.h"
#include "test_util.h"

namespace sparrow {
namespace {

using Case = test::CodeMatrix;
constexpr auto make_case = &test::random_code_matrix;

std::vector<float> random_input(int64_t n, double density, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(static_cast<size_t>(n), 0.0f);
  for (auto& v : x)
    if (u(rng) < density) v = u(rng) * 2 - 1;
  return x;
}

struct Product {
  std::vector<double> y;        // W x in double
  std::vector<double> abs_sum;  // sum of |terms| per row: float error scales with it
};

Product dense_product(const Case& c, const std::vector<float>& x) {
  Product p{std::vector<double>(static_cast<size_t>(c.rows), 0.0),
            std::vector<double>(static_cast<size_t>(c.rows), 0.0)};
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t j = 0; j < c.cols; ++j) {
      double t = double(c.codebook[c.codes[r * c.cols + j]]) * x[j];
      p.y[r] += t;
      p.abs_sum[r] += std::fabs(t);
    }
  return p;
}

// Runs spmv over every partition with the given kernels and returns y in global row order.
std::vector<float> run_spmv(const SparseMatrix& m, const SparseKernels& k, const std::vector<float>& x) {
  std::vector<int32_t> active;
  for (int64_t j = 0; j < m.cols; ++j)
    if (x[j] != 0.0f) active.push_back(static_cast<int32_t>(j));
  std::vector<float> y(static_cast<size_t>(m.rows));
  for (int p = 0; p < m.partitions(); ++p) {
    std::vector<float> local(static_cast<size_t>(m.csc[p].local_rows) + 1, -7.0f);
    SpmvArgs a{
        &m.csc[p], m.codebook.data(), m.small_codebook, active.data(), static_cast<int64_t>(active.size()),
        x.data(),  local.data()};
    (m.e8 ? k.spmv_csc_e8 : k.spmv_csc_e16)(a);
    EXPECT_EQ(local.back(), -7.0f) << "wrote past the partition's rows";
    for (int64_t r = 0; r < m.csc[p].local_rows; ++r) y[r * m.partitions() + p] = local[r];
  }
  return y;
}

// Float sums may differ from the double result by rounding; any wrong or missing term is far larger.
void expect_close(const std::vector<float>& got, const Product& want, const std::string& what) {
  for (size_t i = 0; i < want.y.size(); ++i)
    ASSERT_NEAR(got[i], want.y[i], 1e-5 * want.abs_sum[i] + 1e-30) << what << " row " << i;
}

// Kernel tests run once per ISA; an ISA this CPU lacks (or SPARROW_MAX_ISA caps) is reported as
// skipped rather than quietly running a lower one.
class SparseKernelsPerIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (isa > best_supported_isa())
      GTEST_SKIP() << isa_name(isa) << ": not supported on this CPU (or capped)";
    ASSERT_EQ(sparse_kernels_for(isa).isa, isa);
  }
  const Isa isa = GetParam();
};
INSTANTIATE_TEST_SUITE_P(Isa, SparseKernelsPerIsa, ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

// Sets the AVX-512 column walks' scatter for one scope and restores the start-up choice after it.
class ScatterScope {
 public:
  explicit ScatterScope(ScatterMode mode) : saved_(avx512_scatter()) { set_avx512_scatter(mode); }
  ~ScatterScope() { set_avx512_scatter(saved_); }
  ScatterScope(const ScatterScope&) = delete;
  ScatterScope& operator=(const ScatterScope&) = delete;

 private:
  ScatterMode saved_;
};

// The scatter modes the column walks of `isa` can run in: both for AVX-512, which has the two.
std::vector<ScatterMode> scatter_modes(Isa isa) {
  if (isa == Isa::avx512) return {ScatterMode::hardware, ScatterMode::scalar};
  return {avx512_scatter()};
}

TEST_P(SparseKernelsPerIsa, SpmvEveryVariantMatchesOnTheGrid) {
  uint32_t seed = 1;
  int matrices = 0;
  for (int64_t rows : {1, 15, 16, 17, 64, 300})
    for (int64_t cols : {1, 7, 33})
      for (double density : {0.0, 0.09, 0.5, 1.0})
        for (int cb : {16, 64, 256})
          for (int partitions : {1, 3}) {
            Case c = make_case(rows, cols, density, cb, seed++);
            // Compact matrices take one-byte entries with any number of fillers.
            const bool compact = (++matrices % 2) == 0;
            SparseMatrix m = build_sparse_matrix(c.codes, rows, cols, c.codebook, partitions, compact);
            for (double x_density : {0.0, 0.35, 1.0}) {
              auto x = random_input(cols, x_density, seed++);
              auto want = dense_product(c, x);
              for (ScatterMode mode : scatter_modes(isa)) {
                ScatterScope scope(mode);
                std::string what = std::string(isa_name(isa)) + " " + scatter_mode_name(mode) + " " +
                                   std::to_string(rows) + "x" + std::to_string(cols) +
                                   " d=" + std::to_string(density) + " cb=" + std::to_string(cb) +
                                   " P=" + std::to_string(partitions) + (m.e8 ? " csc8" : " csc16");
                expect_close(run_spmv(m, sparse_kernels_for(isa), x), want, what);
              }
            }
          }
}

TEST_P(SparseKernelsPerIsa, LongestGapsUseFillers) {
  // One non-zero at the bottom of a 1000-row column: 4-bit gaps would need 62 fillers, so the
  // two-byte layout (8-bit gaps, 3 fillers) is chosen.
  Case c{std::vector<uint8_t>(1000, 0), 1000, 1, std::vector<float>(16, 0.5f)};
  c.codebook[0] = 0;
  c.codes[999] = 3;
  SparseMatrix m = build_sparse_matrix(c.codes, 1000, 1, c.codebook, 1);
  EXPECT_FALSE(m.e8);
  EXPECT_EQ(m.csc_entries(), 4);
  std::vector<float> x = {2.0f};

  auto y = run_spmv(m, sparse_kernels_for(isa), x);
  EXPECT_EQ(y[999], 1.0f) << isa_name(isa);
  EXPECT_EQ(std::count(y.begin(), y.end(), 0.0f), 999) << isa_name(isa);
}

TEST_P(SparseKernelsPerIsa, SpmmEveryVariantMatchesAcrossBatchWidths) {
  uint32_t seed = 100;
  std::map<int, int> widths_seen;  // entry bits: matrices
  for (int64_t rows : {1, 17, 64})
    for (int64_t cols : {3, 40, 300})
      for (double density : {0.0, 0.1, 1.0})
        for (int64_t batch : {1, 5, 16, 17, 32, 45, 49, 64, 70, 96, 127, 128, 197, 240, 255})
          for (int cb : {16, 256}) {
            Case c = make_case(rows, cols, density, cb, seed++);
            SparseMatrix m =
                build_sparse_matrix(c.codes, rows, cols, c.codebook, 1, /*compact=*/batch % 2 == 1);
            ++widths_seen[m.csr_entry_bits];
            int64_t ldx = batch + 3;
            std::vector<float> xt(static_cast<size_t>(cols * ldx));
            auto vals = random_input(cols * ldx, 0.6, seed++);
            std::copy(vals.begin(), vals.end(), xt.begin());

            int64_t ldy = batch + 1;
            std::vector<float> y(static_cast<size_t>(rows * ldy), -7.0f);
            SpmmArgs a{&m, 0, rows, xt.data(), ldx, batch, y.data(), ldy};
            const SparseKernels k = sparse_kernels_for(isa);
            spmm_csr_of(k, m)(a);
            const std::string what = std::string(isa_name(isa)) + " " + std::to_string(rows) + "x" +
                                     std::to_string(cols) + " d=" + std::to_string(density) + " batch " +
                                     std::to_string(batch) + " csr" + std::to_string(m.csr_entry_bits);
            for (int64_t b = 0; b < batch; ++b) {
              std::vector<float> col(static_cast<size_t>(cols));
              for (int64_t j = 0; j < cols; ++j) col[j] = xt[j * ldx + b];
              auto want = dense_product(c, col);
              std::vector<float> got(static_cast<size_t>(rows));
              for (int64_t r = 0; r < rows; ++r) got[r] = y[r * ldy + b];
              expect_close(got, want, what);
            }
            for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(y[r * ldy + batch], -7.0f) << "wrote past the batch";
          }
  for (int bits : {8, 16}) EXPECT_GT(widths_seen[bits], 0) << bits << "-bit CSR entries tested";
}

TEST_P(SparseKernelsPerIsa, SpmmReadsOverlappingRowsThroughARowTable) {
  // Column j multiplies the row at x + x_rows[j]: rows that overlap, out of order, as a
  // convolution's taps read a padded plane.
  uint32_t seed = 700;
  for (int64_t batch : {1, 16, 40, 64, 100, 128, 200})
    for (int cb : {16, 256}) {
      const int64_t rows = 19, cols = 27, span = batch + 12;
      Case c = make_case(rows, cols, 0.3, cb, seed++);
      SparseMatrix m = build_sparse_matrix(c.codes, rows, cols, c.codebook, 1, batch % 2 == 1);
      std::vector<float> x = random_input(span, 0.8, seed++);
      std::vector<int64_t> x_rows;
      for (int64_t j = 0; j < cols; ++j) x_rows.push_back((j * 5) % 13);
      std::vector<float> y(static_cast<size_t>(rows * batch), -7.0f);
      spmm_csr_of(sparse_kernels_for(isa),
                  m)(SpmmArgs{&m, 0, rows, x.data(), 0, batch, y.data(), batch, x_rows.data()});
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<float> col(static_cast<size_t>(cols));
        for (int64_t j = 0; j < cols; ++j) col[j] = x[x_rows[j] + b];
        auto want = dense_product(c, col);
        std::vector<float> got(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) got[r] = y[r * batch + b];
        expect_close(got, want, std::string(isa_name(isa)) + " batch " + std::to_string(batch));
      }
    }
}

// Non-zeros in row blocks (kBlockRows aligned rows of one column): each block present with
// probability `density`, each of its rows non-zero with probability `fill` (zero weights inside
// blocks), the codes cycling through the codebook.
Case block_case(int64_t rows, int64_t cols, double density, double fill, int codebook, uint32_t seed) {
  Case c = make_case(rows, cols, 0.0, codebook, seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  int next = 0;
  for (int64_t g = 0; g * kBlockRows < rows; ++g)
    for (int64_t col = 0; col < cols; ++col)
      if (u(rng) < density)
        for (int64_t r = g * kBlockRows; r < std::min(rows, (g + 1) * kBlockRows); ++r)
          if (u(rng) < fill)
            c.codes[static_cast<size_t>(r * cols + col)] = static_cast<uint8_t>(1 + next++ % (codebook - 1));
  return c;
}

SparseMatrix with_row_blocks(const Case& c) {
  auto codes = dense_codes(c.codes, c.rows, c.cols);
  SparseMatrix m = sparse_matrix_header(*codes, c.codebook, 1);
  add_layouts(m, *codes, kLayoutRowBlocks);
  return m;
}

TEST_P(SparseKernelsPerIsa, SpmmRowBlocksMatchesAcrossBatchesRowRangesAndRowTables) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 4000;
  int cases = 0;
  for (int64_t rows : {1, 3, 4, 5, 17, 64})
    for (int64_t cols : {3, 40, 2500})  // 2500: several column blocks
      for (auto [density, fill] : {std::pair{0.0, 1.0}, {0.1, 1.0}, {0.3, 0.5}, {1.0, 1.0}})
        for (int cb : {16, 256})
          for (int64_t batch : {1, 5, 16, 17, 33, 49, 64, 70, 130}) {
            if (cols == 2500 && batch % 2 == 0) continue;  // keeps the grid fast
            Case c = block_case(rows, cols, density, fill, cb, seed++);
            SparseMatrix m = with_row_blocks(c);
            const bool table = batch % 3 == 0;  // columns read through a row table, as convolutions do
            const int64_t ldx = batch + 3, ldy = batch + 1;
            std::vector<float> xt = random_input((cols + 4) * ldx, 0.7, seed++);
            std::vector<int64_t> x_rows;
            for (int64_t j = 0; j < cols; ++j) x_rows.push_back(((j * 7) % (cols + 4)) * ldx);
            // Rows from the second group on (threads start at multiples of kBlockRows), or all.
            const int64_t begin = rows > kBlockRows && batch % 2 == 1 ? kBlockRows : 0;
            std::vector<float> y(static_cast<size_t>(rows * ldy), -7.0f);
            k.spmm_row_blocks(SpmmArgs{&m, begin, rows, xt.data(), ldx, batch, y.data(), ldy,
                                       table ? x_rows.data() : nullptr});
            const std::string what =
                fmt::format("{} {}x{} d={} fill={} cb={} batch {} rows {}- table {}", isa_name(isa), rows,
                            cols, density, fill, cb, batch, begin, table);
            for (int64_t b = 0; b < batch; ++b) {
              std::vector<float> col(static_cast<size_t>(cols));
              for (int64_t j = 0; j < cols; ++j) col[j] = xt[(table ? x_rows[j] : j * ldx) + b];
              auto want = dense_product(c, col);
              std::vector<float> got(static_cast<size_t>(rows));
              for (int64_t r = 0; r < rows; ++r)
                got[r] = r < begin ? static_cast<float>(want.y[r]) : y[r * ldy + b];
              expect_close(got, want, what);
            }
            for (int64_t r = 0; r < rows; ++r) {
              ASSERT_EQ(y[r * ldy + batch], -7.0f) << "wrote past the batch: " << what;
              if (r < begin) {
                ASSERT_EQ(y[r * ldy], -7.0f) << "wrote a row before row_begin: " << what;
              }
            }
            if (rows % kBlockRows != 0) {  // an empty range inside the last group writes nothing
              std::vector<float> before = y;
              k.spmm_row_blocks(SpmmArgs{&m, rows, rows, xt.data(), ldx, batch, y.data(), ldy,
                                         table ? x_rows.data() : nullptr});
              ASSERT_EQ(y, before) << "an empty range wrote: " << what;
            }
            ++cases;
          }
  EXPECT_GT(cases, 500);
}

// The same float, or NaN for NaN.
bool same_value(float a, float b) {
  return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b) || (std::isnan(a) && std::isnan(b));
}

// The epilogue the kernels apply as they store rows is the bias-and-activation kernel applied over
// the plain product afterwards, float for float: on the CSR walks (one- and two-byte entries, one and two
// column blocks) and the row blocks (several blocks, rows from the second group on, a short last
// group), with inputs holding NaN and infinities.
TEST_P(SparseKernelsPerIsa, SpmmEpilogueIsTheBiasAndClampOverTheStoredProduct) {
  const SparseKernels k = sparse_kernels_for(isa);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<RowEpilogue> epilogues = {RowEpilogue{nullptr, 0.0f, inf},
                                              RowEpilogue{nullptr, -0.5f, 0.5f}, RowEpilogue{},
                                              RowEpilogue{nullptr, 0.0f, 6.0f}};
  uint32_t seed = 5000;
  int checked = 0;
  for (bool blocks : {false, true})
    for (int64_t rows : {1, 6, 17, 64})
      for (int64_t cols : {40, 300, 2500})
        for (int64_t batch : {1, 17, 130})
          for (size_t e = 0; e < epilogues.size(); ++e) {
            if (cols == 2500 && !blocks) continue;  // 300 columns already make two CSR blocks
            const int cb = (batch + e) % 2 == 0 ? 16 : 256;
            Case c = blocks ? block_case(rows, cols, 0.1, 0.7, cb, seed++)
                            : make_case(rows, cols, 0.1, cb, seed++);
            SparseMatrix m = blocks ? with_row_blocks(c)
                                    : build_sparse_matrix(c.codes, rows, cols, c.codebook, 1,
                                                          /*compact=*/batch % 2 == 1);
            const int64_t ldx = batch + 3, ldy = batch + 1;
            std::vector<float> xt = random_input(cols * ldx, 0.7, seed++);
            xt[static_cast<size_t>(ldx + batch / 2)] = std::numeric_limits<float>::quiet_NaN();
            xt[static_cast<size_t>((cols - 1) * ldx)] = inf;
            const std::vector<float> bias = random_input(rows, 1.0, seed++);
            RowEpilogue epilogue = epilogues[e];
            if (e != 2 || rows % 2 == 0) epilogue.bias = bias.data();  // the third: no clamp, a bias or none
            const int64_t begin = blocks && rows > kBlockRows ? kBlockRows : 0;
            auto run = [&](const RowEpilogue& with) {
              std::vector<float> y(static_cast<size_t>(rows * ldy), -7.0f);
              const SpmmArgs a{&m, begin, rows, xt.data(), ldx, batch, y.data(), ldy, nullptr, with};
              if (blocks)
                k.spmm_row_blocks(a);
              else
                spmm_csr_of(k, m)(a);
              return y;
            };
            const std::vector<float> plain = run(RowEpilogue{}), given = run(epilogue);
            const std::string what =
                fmt::format("{} {} {}x{} batch {} epilogue {} bias {}", isa_name(isa),
                            blocks ? "row blocks" : "csr", rows, cols, batch, e, epilogue.bias != nullptr);
            // What the bias-and-activation kernel makes of the plain product, row by row.
            std::vector<float> after = plain;
            for (int64_t r = begin; r < rows; ++r)
              k.bias_activation(BiasActivationArgs{plain.data() + r * ldy, batch,
                                                   epilogue.bias ? bias[r] : kNoBias, epilogue.lo,
                                                   epilogue.hi, after.data() + r * ldy});
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t b = 0; b <= batch; ++b) {
                const float want = after[r * ldy + b];
                ASSERT_TRUE(same_value(given[r * ldy + b], want))
                    << what << " at " << r << "," << b << ": " << given[r * ldy + b] << " want " << want;
              }
            ++checked;
          }
  EXPECT_EQ(checked, 4 * 3 * 3 * 4 + 4 * 2 * 3 * 4);
}

TEST_P(SparseKernelsPerIsa, TransposeEveryVariantMatchesAPlainLoop) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 1500;
  for (auto [rows, cols] :
       {std::pair<int64_t, int64_t>{8, 8}, {1, 5}, {16, 24}, {17, 9}, {33, 70}, {64, 1024}})
    for (bool add : {false, true})
      for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, rows}, {std::min<int64_t>(8, rows), rows}}) {
        std::vector<float> src = random_input(rows * cols, 1.0, seed++);
        std::vector<float> dst = random_input(rows * cols, 1.0, seed++), before = dst;
        k.transpose(TransposeArgs{src.data(), rows, cols, begin, end, dst.data(), add});
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) {
            const float old = before[c * rows + r];
            const float want = r < begin || r >= end ? old
                               : add                 ? old + src[r * cols + c]
                                                     : src[r * cols + c];
            ASSERT_EQ(dst[c * rows + r], want)
                << isa_name(isa) << " " << rows << "x" << cols << " add " << add << " rows " << begin << "-"
                << end << " at " << r << "," << c;
          }
      }
}

TEST_P(SparseKernelsPerIsa, LstmCellEveryVariantMatchesDoublePrecision) {
  const SparseKernels k = sparse_kernels_for(isa);
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  uint32_t seed = 1700;
  for (int64_t hidden : {1, 7, 16, 33, 100})
    for (bool peephole : {false, true})
      for (float clip : {0.0f, 3.0f}) {
        std::vector<float> gates = random_input(4 * hidden, 1.0, seed++),
                           c = random_input(hidden, 1.0, seed++);
        for (float& g : gates) g *= 40.0f;  // far into the saturated tails, past the clamp of exp
        std::vector<float> p = random_input(3 * hidden, 1.0, seed++), c0 = c, h(static_cast<size_t>(hidden));
        k.lstm_cell(
            LstmCellArgs{gates.data(), peephole ? p.data() : nullptr, clip, hidden, c.data(), h.data()});
        for (int64_t j = 0; j < hidden; ++j) {
          auto clipped = [&](double v) { return clip > 0 ? std::clamp(v, -double(clip), double(clip)) : v; };
          const double pi = peephole ? p[j] : 0, po = peephole ? p[hidden + j] : 0,
                       pf = peephole ? p[2 * hidden + j] : 0;
          const double ig = sigmoid(clipped(gates[j] + pi * c0[j]));
          const double fg = sigmoid(clipped(gates[2 * hidden + j] + pf * c0[j]));
          const double cn = fg * c0[j] + ig * std::tanh(clipped(gates[3 * hidden + j]));
          const double og = sigmoid(clipped(gates[hidden + j] + po * cn));
          const std::string what = std::string(isa_name(isa)) + " hidden " + std::to_string(hidden) +
                                   " unit " + std::to_string(j) + (peephole ? " peephole" : "") +
                                   (clip > 0 ? " clip" : "");
          EXPECT_NEAR(c[j], cn, 2e-6 * (1 + std::abs(cn))) << what;
          EXPECT_NEAR(h[j], og * std::tanh(cn), 2e-6) << what;
        }
      }
  std::vector<float> gates(4, NAN), c = {0.5f}, h(1);
  k.lstm_cell(LstmCellArgs{gates.data(), nullptr, 0.0f, 1, c.data(), h.data()});
  EXPECT_TRUE(std::isnan(c[0]) && std::isnan(h[0])) << isa_name(isa) << ": NaN gates give NaN states";
}

// A window over one plane with its output size (floor mode).
Window2d plane_window(int64_t h, int64_t w, int64_t k, int64_t stride, int64_t dilation, int64_t pad_t,
                      int64_t pad_l, int64_t pad_b, int64_t pad_r) {
  Window2d win;
  win.in_h = h, win.in_w = w, win.k_h = win.k_w = k, win.s_h = win.s_w = stride, win.d_h = win.d_w = dilation;
  win.pad_t = pad_t, win.pad_l = pad_l, win.pad_b = pad_b, win.pad_r = pad_r;
  win.out_h = (h + pad_t + pad_b - (k - 1) * dilation - 1) / stride + 1;
  win.out_w = (w + pad_l + pad_r - (k - 1) * dilation - 1) / stride + 1;
  return win;
}

const std::vector<Window2d>& plane_window_grid() {
  static const std::vector<Window2d> grid = {
      plane_window(7, 7, 3, 1, 1, 1, 1, 1, 1),
      plane_window(14, 14, 3, 1, 1, 1, 1, 1, 1),
      plane_window(9, 40, 3, 1, 1, 1, 1, 1, 1),
      plane_window(12, 35, 3, 2, 1, 1, 1, 1, 1),
      plane_window(11, 70, 3, 2, 1, 0, 0, 1, 1),
      plane_window(8, 20, 5, 1, 1, 2, 2, 2, 2),
      plane_window(9, 44, 5, 1, 1, 2, 2, 2, 2),
      plane_window(13, 33, 5, 2, 1, 2, 2, 2, 2),
      plane_window(10, 17, 3, 1, 2, 2, 2, 2, 2),
      plane_window(6, 9, 7, 3, 1, 3, 1, 2, 3),
      plane_window(5, 5, 1, 1, 1, 0, 0, 0, 0),
      plane_window(4, 6, 3, 1, 1, 4, 4, 4, 4),
      plane_window(111, 111, 3, 2, 1, 0, 0, 1, 1),
      plane_window(8, 10, 2, 2, 1, 0, 0, 0, 0),
      plane_window(9, 9, 2, 2, 1, 1, 1, 1, 1),
      // rows of 16, 17, 16 + 16 and 33 outputs (AVX-512's masked 3x3 windows: whole, partial and
      // last vectors; at stride 2 the 33rd input column of a vector inside and outside the row)
      plane_window(5, 16, 3, 1, 1, 1, 1, 1, 1),
      plane_window(6, 17, 3, 1, 1, 1, 1, 1, 1),
      plane_window(5, 33, 3, 2, 1, 0, 0, 0, 0),
      plane_window(5, 32, 3, 2, 1, 1, 1, 1, 1),
      plane_window(7, 65, 3, 2, 1, 1, 1, 1, 1),
      plane_window(5, 31, 3, 2, 1, 1, 1, 1, 1),
      // a band of a taller plane (the fused expansion's): windows reaching past the rows given,
      // which read as padding; blocks of output rows and the rows left after them
      plane_window(6, 40, 3, 1, 1, 0, 1, 2, 1),
      plane_window(9, 37, 3, 2, 1, 0, 1, 2, 1),
      plane_window(10, 20, 3, 1, 1, 2, 1, 0, 1),
  };
  return grid;
}

TEST_P(SparseKernelsPerIsa, DepthwisePlaneEveryVariantMatchesAPlainLoop) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 900;
  const float inf = std::numeric_limits<float>::infinity();
  for (const Window2d& win : plane_window_grid())
    for (auto [lo, hi] : {std::pair{-inf, inf}, std::pair{0.0f, inf}, std::pair{0.0f, 0.5f}}) {
      std::vector<float> x = random_input(win.in_h * win.in_w, 0.9, seed++);
      std::vector<float> w = random_input(win.k_h * win.k_w, 1.0, seed++);
      std::vector<float> scratch(static_cast<size_t>(depthwise_scratch_floats(win)), NAN);
      std::vector<float> y(static_cast<size_t>(win.out_h * win.out_w + 1), -7.0f);
      k.depthwise_plane(DepthwiseArgs{x.data(), w.data(), 0.25f, &win, lo, hi, scratch.data(), y.data()});
      for (int64_t oh = 0; oh < win.out_h; ++oh)
        for (int64_t ow = 0; ow < win.out_w; ++ow) {
          double acc = 0.25, scale = 0.25;
          for (int64_t i = 0; i < win.k_h; ++i)
            for (int64_t j = 0; j < win.k_w; ++j) {
              const int64_t ih = oh * win.s_h - win.pad_t + i * win.d_h,
                            iw = ow * win.s_w - win.pad_l + j * win.d_w;
              if (ih < 0 || iw < 0 || ih >= win.in_h || iw >= win.in_w) continue;
              acc += double(w[i * win.k_w + j]) * x[ih * win.in_w + iw];
              scale += std::abs(double(w[i * win.k_w + j]) * x[ih * win.in_w + iw]);
            }
          const double want = std::min<double>(std::max<double>(acc, lo), hi);
          EXPECT_NEAR(y[oh * win.out_w + ow], want, 1e-6 * scale + 1e-7)
              << isa_name(isa) << " " << win.in_h << "x" << win.in_w << " k" << win.k_h << " s" << win.s_h
              << " d" << win.d_h << " at " << oh << "," << ow;
        }
      ASSERT_EQ(y.back(), -7.0f) << "wrote past the plane";
    }
}

// A band of output rows over the rows its windows reach, as the fused expansion runs it: the
// plane's rows [r0, r1) given as a plane of their own, the padding its first window reaches above
// them as its top padding. Every band of 1, 3 or 5 rows gives the whole plane's outputs bit for bit
// (the same sums in the same order), bands whose windows lie in the padding alone included.
TEST_P(SparseKernelsPerIsa, DepthwisePlaneInBandsOfRowsGivesTheWholePlanesBits) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 950;
  std::vector<Window2d> windows = plane_window_grid();
  windows.push_back(plane_window(12, 30, 3, 1, 1, 1, 1, 6, 1));  // the last rows read padding only
  for (const Window2d& win : windows)
    for (int64_t band : {1, 3, 5}) {
      std::vector<float> x = random_input(win.in_h * win.in_w, 0.9, seed++);
      std::vector<float> w = random_input(win.k_h * win.k_w, 1.0, seed++);
      std::vector<float> scratch(static_cast<size_t>(depthwise_scratch_floats(win)), NAN);
      std::vector<float> whole(static_cast<size_t>(win.out_h * win.out_w)), bands(whole.size(), -7.0f);
      k.depthwise_plane(
          DepthwiseArgs{x.data(), w.data(), 0.25f, &win, 0.0f, 6.0f, scratch.data(), whole.data()});
      for (int64_t o0 = 0; o0 < win.out_h; o0 += band) {
        const int64_t o1 = std::min(win.out_h, o0 + band), top = o0 * win.s_h - win.pad_t;
        const int64_t r0 = std::max<int64_t>(0, top);
        const int64_t r1 = std::min(win.in_h, (o1 - 1) * win.s_h - win.pad_t + (win.k_h - 1) * win.d_h + 1);
        Window2d part = win;
        part.in_h = std::max<int64_t>(0, r1 - r0);
        part.pad_t = r0 - top;
        part.out_h = o1 - o0;
        std::vector<float> part_scratch(static_cast<size_t>(depthwise_scratch_floats(part)), NAN);
        k.depthwise_plane(DepthwiseArgs{x.data() + std::min(r0, win.in_h) * win.in_w, w.data(), 0.25f, &part,
                                        0.0f, 6.0f, part_scratch.data(), bands.data() + o0 * win.out_w});
      }
      for (size_t i = 0; i < whole.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(bands[i]), std::bit_cast<uint32_t>(whole[i]))
            << isa_name(isa) << " " << win.in_h << "x" << win.in_w << " k" << win.k_h << " s" << win.s_h
            << " bands of " << band << " at " << i;
    }
}

// The interleaved kernel: each of the 16 channels in lanes against a plain loop in double
// precision over its own plane, with and without bias, for every window of the grid.
// Windows the square grid lacks: rectangular kernels, unequal strides and dilations, a 1-D row.
std::vector<Window2d> rectangular_windows() {
  auto make = [](int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                 int64_t pad) {
    Window2d win;
    win.in_h = h, win.in_w = w, win.k_h = kh, win.k_w = kw, win.s_h = sh, win.s_w = sw, win.d_h = dh,
    win.d_w = dw;
    win.pad_t = win.pad_l = win.pad_b = win.pad_r = pad;
    win.out_h = (h + 2 * pad - (kh - 1) * dh - 1) / sh + 1;
    win.out_w = (w + 2 * pad - (kw - 1) * dw - 1) / sw + 1;
    return win;
  };
  return {make(9, 12, 3, 5, 1, 2, 1, 1, 2), make(11, 8, 5, 3, 2, 1, 2, 1, 1),
          make(1, 30, 1, 3, 1, 1, 1, 1, 1)};
}

TEST_P(SparseKernelsPerIsa, DepthwiseLanesEveryVariantMatchesAPlainLoop) {
  constexpr int64_t L = kDepthwiseLanes;
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 2900;
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<Window2d> windows = plane_window_grid();
  for (const Window2d& win : rectangular_windows()) windows.push_back(win);
  for (const Window2d& win : windows)
    for (auto [lo, hi] : {std::pair{-inf, inf}, std::pair{0.0f, inf}, std::pair{0.0f, 0.5f}})
      for (bool with_bias : {false, true}) {
        const int64_t in_hw = win.in_h * win.in_w, out_hw = win.out_h * win.out_w, window = win.k_h * win.k_w;
        std::vector<float> x = random_input(in_hw * L, 0.9, seed++);
        std::vector<float> w = random_input(window * L, 1.0, seed++), bias = random_input(L, 1.0, seed++);
        std::vector<float> scratch(static_cast<size_t>(depthwise_lanes_scratch_floats(win)), NAN);
        std::vector<float> y(static_cast<size_t>(out_hw * L + 1), -7.0f);
        k.depthwise_lanes(DepthwiseLanesArgs{x.data(), w.data(), with_bias ? bias.data() : nullptr, &win, lo,
                                             hi, scratch.data(), y.data()});
        for (int64_t c = 0; c < L; ++c)
          for (int64_t oh = 0; oh < win.out_h; ++oh)
            for (int64_t ow = 0; ow < win.out_w; ++ow) {
              double acc = with_bias ? bias[c] : 0.0, scale = std::abs(acc);
              for (int64_t i = 0; i < win.k_h; ++i)
                for (int64_t j = 0; j < win.k_w; ++j) {
                  const int64_t ih = oh * win.s_h - win.pad_t + i * win.d_h,
                                iw = ow * win.s_w - win.pad_l + j * win.d_w;
                  if (ih < 0 || iw < 0 || ih >= win.in_h || iw >= win.in_w) continue;
                  const double term =
                      double(w[c * window + i * win.k_w + j]) * x[(ih * win.in_w + iw) * L + c];
                  acc += term;
                  scale += std::abs(term);
                }
              const double want = std::min<double>(std::max<double>(acc, lo), hi);
              ASSERT_NEAR(y[(oh * win.out_w + ow) * L + c], want, 1e-6 * scale + 1e-7)
                  << isa_name(isa) << " " << win.in_h << "x" << win.in_w << " k" << win.k_h << " s" << win.s_h
                  << " d" << win.d_h << " channel " << c << " at " << oh << "," << ow;
            }
        ASSERT_EQ(y.back(), -7.0f) << "wrote past the output";
      }
  std::vector<float> x(L, NAN), w(L, 1.0f),
      scratch(static_cast<size_t>(depthwise_lanes_scratch_floats(plane_window(1, 1, 1, 1, 1, 0, 0, 0, 0)))),
      y(L);
  const Window2d one = plane_window(1, 1, 1, 1, 1, 0, 0, 0, 0);
  k.depthwise_lanes(
      DepthwiseLanesArgs{x.data(), w.data(), nullptr, &one, -inf, inf, scratch.data(), y.data()});
  EXPECT_TRUE(std::isnan(y[0])) << isa_name(isa) << ": NaN stays NaN without an activation";
  k.depthwise_lanes(
      DepthwiseLanesArgs{x.data(), w.data(), nullptr, &one, 0.0f, 6.0f, scratch.data(), y.data()});
  EXPECT_EQ(y[0], 0.0f) << isa_name(isa) << ": a fused Relu/Clip makes NaN its lower bound";
  // The same on a 3x3 plane kernel (masked on AVX-512), NaN in one input position.
  const Window2d three = plane_window(4, 5, 3, 1, 1, 1, 1, 1, 1);
  std::vector<float> xp(20, 1.0f), wp(9, 1.0f), padded(static_cast<size_t>(depthwise_scratch_floats(three))),
      yp(20);
  xp[7] = NAN;
  k.depthwise_plane(DepthwiseArgs{xp.data(), wp.data(), 0.0f, &three, -inf, inf, padded.data(), yp.data()});
  EXPECT_TRUE(std::isnan(yp[2]) && !std::isnan(yp[19])) << isa_name(isa) << ": NaN reaches its windows only";
  k.depthwise_plane(DepthwiseArgs{xp.data(), wp.data(), 0.0f, &three, 0.0f, 6.0f, padded.data(), yp.data()});
  EXPECT_EQ(yp[2], 0.0f) << isa_name(isa) << ": a fused Relu/Clip makes NaN its lower bound";
  EXPECT_EQ(yp[19], 4.0f) << isa_name(isa) << ": a corner window holds four inputs";
  // An infinite weight on a tap that reads a row of padding: inf * 0, NaN, as on the padded copy.
  xp[7] = 1.0f;
  wp[0] = inf;
  k.depthwise_plane(DepthwiseArgs{xp.data(), wp.data(), 0.0f, &three, -inf, inf, padded.data(), yp.data()});
  EXPECT_TRUE(std::isnan(yp[0])) << isa_name(isa) << ": inf times the padding is NaN";
}

// With nan_free, the input holds other special values instead of NaN.
TEST_P(SparseKernelsPerIsa, MaxPoolPlaneEveryVariantMatchesAPlainLoop) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 1300;
  for (const Window2d& win : plane_window_grid())
    for (const bool nan_free : {false, true}) {
      std::vector<float> x = random_input(win.in_h * win.in_w, 1.0, seed++);
      const float specials[] = {NAN, NAN, NAN};
      const float nan_free_specials[] = {-std::numeric_limits<float>::infinity(), -0.0f, 0.0f};
      const uint32_t spreads[] = {1u, 7u, 13u};
      for (int i = 0; i < 3; ++i)
        x[static_cast<size_t>(seed * spreads[i] % x.size())] = nan_free ? nan_free_specials[i] : specials[i];
      std::vector<float> y(static_cast<size_t>(win.out_h * win.out_w + 1), -7.0f);
      k.max_pool_plane(MaxPoolArgs{x.data(), &win, y.data(), nan_free});
      for (int64_t oh = 0; oh < win.out_h; ++oh)
        for (int64_t ow = 0; ow < win.out_w; ++ow) {
          const test::WindowMax want = test::window_max(x.data(), win, oh, ow);
          const float got = y[oh * win.out_w + ow];
          if (want.nan)
            EXPECT_TRUE(std::isnan(got)) << isa_name(isa) << " at " << oh << "," << ow;
          else
            EXPECT_EQ(got, want.value)
                << isa_name(isa) << " " << win.in_h << "x" << win.in_w << " k" << win.k_h << " s" << win.s_h
                << " nan_free " << nan_free << " at " << oh << "," << ow;
        }
      ASSERT_EQ(y.back(), -7.0f) << "wrote past the plane";
    }
}

// Rows apart by strides (a padded-width product into a plane): every row as the one-row call
// computes it, and the entries between rows untouched.
TEST_P(SparseKernelsPerIsa, BiasActivationRowsMatchOneRowAtATime) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 1800;
  for (int64_t n : {1, 13, 16, 55, 111})
    for (const Activation& act : {Activation{}, Activation{0.0f, 6.0f}})
      for (bool in_place : {false, true})
        for (bool with_residual : {false, true}) {
          const int64_t rows = 4, ldx = n + 5, ldy = in_place ? ldx : n + 2;
          std::vector<float> x = random_input(rows * ldx, 1.0, seed++);
          x[static_cast<size_t>(ldx + n - 1)] = NAN;  // the second row's last entry
          // A fused Add's operand, laid out as y: an infinity in the third row, NaN in the last.
          std::vector<float> residual = random_input(rows * ldy, 1.0, seed++);
          residual[static_cast<size_t>(2 * ldy + n / 2)] = -INFINITY;
          residual[static_cast<size_t>(3 * ldy)] = NAN;
          std::vector<float> y(static_cast<size_t>(rows * ldy + 1), -7.0f);
          float* out = in_place ? x.data() : y.data();
          const std::vector<float> before = x, untouched = in_place ? x : y;
          k.bias_activation(BiasActivationArgs{x.data(), n, 0.25f, act.lo, act.hi, out, rows, ldx, ldy,
                                               with_residual ? residual.data() : nullptr});
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < ldy; ++i) {
              const float got = out[r * ldy + i];
              if (i >= n) {
                EXPECT_TRUE(std::isnan(got) ? std::isnan(untouched[r * ldy + i])
                                            : got == untouched[r * ldy + i])
                    << isa_name(isa) << " n " << n << ": wrote between rows at " << r << "," << i;
                continue;
              }
              const float sum = before[r * ldx + i] + 0.25f;
              const float want = act(with_residual ? sum + residual[r * ldy + i] : sum);
              EXPECT_TRUE(got == want || (std::isnan(got) && std::isnan(want)))
                  << isa_name(isa) << " n " << n << " row " << r << " at " << i << ": " << got << " want "
                  << want;
            }
          if (!in_place) {
            EXPECT_EQ(y.back(), -7.0f) << "wrote past the last row";
          }
        }
}

TEST_P(SparseKernelsPerIsa, BiasActivationEveryVariantMatchesTheActivation) {
  const SparseKernels k = sparse_kernels_for(isa);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const std::vector<Activation> activations = {Activation{}, Activation{0.0f}, Activation{0.0f, 6.0f},
                                               Activation{-1.0f, 1.0f}, Activation{2.0f, 2.0f}};
  uint32_t seed = 1700;
  for (int64_t n : {0, 1, 7, 8, 15, 16, 17, 31, 33, 100})
    for (const Activation& act : activations)
      for (float bias : {kNoBias, 0.0f, -0.5f, 3.0f})
        for (bool in_place : {false, true}) {
          std::vector<float> x = random_input(n, 1.0, seed++);
          for (auto& v : x) v *= 8.0f;
          const float specials[] = {-0.0f, NAN, kInf, -kInf, 1e30f};
          for (size_t i = 0; i < x.size() && i < 5; ++i) x[(i * 7) % x.size()] = specials[i];
          std::vector<float> y(static_cast<size_t>(n) + 1, -7.0f);
          float* out = in_place ? x.data() : y.data();
          const std::vector<float> before = x;
          k.bias_activation(BiasActivationArgs{x.data(), n, bias, act.lo, act.hi, out});
          for (int64_t i = 0; i < n; ++i) {
            const float want = act(before[i] + bias), got = out[i];
            EXPECT_TRUE((got == want && std::signbit(got) == std::signbit(want)) ||
                        (std::isnan(got) && std::isnan(want)))
                << isa_name(isa) << " n " << n << " [" << act.lo << ", " << act.hi << "] bias " << bias
                << " at " << i << ": " << got << " want " << want;
          }
          if (!in_place) {
            ASSERT_EQ(y.back(), -7.0f) << "wrote past n";
          }
        }
}

TEST_P(SparseKernelsPerIsa, SmoothActivationEveryVariantMatchesTheExactFunctions) {
  const SparseKernels k = sparse_kernels_for(isa);
  constexpr float kInf = std::numeric_limits<float>::infinity();
  uint32_t seed = 1900;
  for (int64_t n : {0, 1, 15, 16, 17, 100, 1000})
    for (SmoothActivation f : {SmoothActivation::sigmoid, SmoothActivation::tanh})
      for (bool in_place : {false, true}) {
        std::vector<float> x = random_input(n, 1.0, seed++);
        for (auto& v : x) v *= 12.0f;
        // Zeros of both signs, |x| on both sides of tanh's series (0.05), the ends of e^x's range.
        const float specials[] = {0.0f, -0.0f, 0.0499f, -0.0501f, 1e-20f, -88.5f, 89.0f, NAN, kInf, -kInf};
        for (size_t i = 0; i < x.size() && i < std::size(specials); ++i) x[(i * 7) % x.size()] = specials[i];
        std::vector<float> y(static_cast<size_t>(n) + 1, -7.0f);
        const std::vector<float> before = x;
        float* out = in_place ? x.data() : y.data();
        k.smooth_activation(SmoothActivationArgs{x.data(), n, f, out});
        for (int64_t i = 0; i < n; ++i) {
          const double v = before[i];
          const double want = f == SmoothActivation::sigmoid ? 1.0 / (1.0 + std::exp(-v)) : std::tanh(v);
          const float got = out[i];
          if (std::isnan(v)) {
            EXPECT_TRUE(std::isnan(got)) << isa_name(isa) << " at " << i;
            continue;
          }
          // A few float ulps; sigmoid below e^-88 is not resolved (about 6e-39 for a smaller value).
          EXPECT_NEAR(got, want, 4e-6 * std::abs(want) + 1e-38)
              << isa_name(isa) << (f == SmoothActivation::sigmoid ? " sigmoid(" : " tanh(") << v << ")";
          if (v == 0.0 && f == SmoothActivation::tanh) {
            EXPECT_EQ(std::signbit(got), std::signbit(v)) << "tanh(-0)";
          }
        }
        if (!in_place) {
          EXPECT_EQ(y.back(), -7.0f) << "wrote past the end";
        }
      }
}

TEST_P(SparseKernelsPerIsa, SoftmaxRowEveryVariantMatchesADoublePrecisionLoop) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 1800;
  for (int64_t n : {1, 5, 15, 16, 17, 33, 100, 1000})
    for (bool log : {false, true})
      for (float scale : {1.0f, 30.0f, 300.0f})
        for (bool in_place : {false, true}) {
          std::vector<float> x = random_input(n, 1.0, seed++);
          for (auto& v : x) v *= scale;
          std::vector<float> y(static_cast<size_t>(n) + 1, -7.0f);
          const std::vector<float> before = x;
          float* out = in_place ? x.data() : y.data();
          k.softmax_row(SoftmaxRowArgs{x.data(), n, log, out});
          double mx = -INFINITY, sum = 0;
          for (float v : before) mx = std::max(mx, static_cast<double>(v));
          for (float v : before) sum += std::exp(v - mx);
          for (int64_t i = 0; i < n; ++i) {
            const double want = log ? (before[i] - mx) - std::log(sum) : std::exp(before[i] - mx) / sum;
            // Softmax: relative to the value; log-softmax: to the operands of x - max - ln(sum),
            // which cancel near 0.
            const double tolerance =
                log ? 1e-6 * (std::abs(before[i] - mx) + std::log(sum) + 1.0) : 1e-5 * std::abs(want) + 1e-30;
            EXPECT_NEAR(out[i], want, tolerance)
                << isa_name(isa) << " n " << n << (log ? " log" : "") << " scale " << scale << " at " << i;
          }
          if (!in_place) {
            ASSERT_EQ(y.back(), -7.0f) << "wrote past n";
          }
        }
  for (bool log : {false, true}) {
    for (float special : {NAN, INFINITY}) {
      std::vector<float> x = random_input(20, 1.0, seed++), y(20);
      x[3] = special;
      k.softmax_row(SoftmaxRowArgs{x.data(), 20, log, y.data()});
      for (float v : y) EXPECT_TRUE(std::isnan(v)) << isa_name(isa) << ": a row holding " << special;
    }
    std::vector<float> all_masked(20, -INFINITY), y(20);
    k.softmax_row(SoftmaxRowArgs{all_masked.data(), 20, log, y.data()});
    for (float v : y) EXPECT_TRUE(std::isnan(v)) << isa_name(isa) << ": a row of -inf";
    // Masked entries (-inf) and entries far below the row's largest give exactly 0 (log: -inf, or
    // their finite difference).
    std::vector<float> masked = random_input(40, 1.0, seed++);
    for (size_t i = 0; i < masked.size(); i += 3) masked[i] = -INFINITY;
    masked[1] = masked[2] - 100.0f;
    y.assign(masked.size(), -7.0f);
    k.softmax_row(SoftmaxRowArgs{masked.data(), 40, log, y.data()});
    for (size_t i = 0; i < masked.size(); i += 3)
      EXPECT_EQ(y[i], log ? -INFINITY : 0.0f) << isa_name(isa) << " at " << i;
    if (!log) {
      EXPECT_EQ(y[1], 0.0f) << isa_name(isa);
    }
    // Logits far from zero: the log-softmax keeps x - max exact.
    for (float offset : {1000.0f, 1e5f}) {
      std::vector<float> x = {offset, offset, offset - 0.5f};
      std::vector<float> out(3);
      k.softmax_row(SoftmaxRowArgs{x.data(), 3, true, out.data()});
      const double log_sum = std::log(2.0 + std::exp(-0.5));
      EXPECT_NEAR(out[0], -log_sum, 1e-6) << isa_name(isa) << " offset " << offset;
      EXPECT_NEAR(out[2], -0.5 - log_sum, 1e-6) << isa_name(isa) << " offset " << offset;
    }
  }
  std::vector<float> none;
  k.softmax_row(SoftmaxRowArgs{none.data(), 0, false, none.data()});
}

TEST_P(SparseKernelsPerIsa, LayerNormRowEveryVariantMatchesADoublePrecisionLoop) {
  const SparseKernels k = sparse_kernels_for(isa);
  uint32_t seed = 1900;
  for (int64_t n : {1, 2, 15, 16, 17, 33, 256, 1000})
    for (bool affine : {false, true})
      for (float offset : {0.0f, 100.0f}) {
        std::vector<float> x = random_input(n, 1.0, seed++), y(static_cast<size_t>(n) + 1, -7.0f);
        for (auto& v : x) v += offset;
        const std::vector<float> scale = random_input(n, 1.0, seed++), bias = random_input(n, 1.0, seed++);
        k.layer_norm_row(LayerNormRowArgs{x.data(), n, affine ? scale.data() : nullptr,
                                          affine ? bias.data() : nullptr, 1e-5f, y.data()});
        double mean = 0, var = 0;
        for (float v : x) mean += v;
        mean /= static_cast<double>(n);
        for (float v : x) var += (v - mean) * (v - mean);
        var /= static_cast<double>(n);
        for (int64_t i = 0; i < n; ++i) {
          const double z = (x[i] - mean) / std::sqrt(var + 1e-5);
          const double want = affine ? z * scale[i] + bias[i] : z;
          EXPECT_NEAR(y[i], want, 2e-4 * (1.0 + std::abs(want)))
              << isa_name(isa) << " n " << n << " offset " << offset << " at " << i;
        }
        ASSERT_EQ(y.back(), -7.0f) << "wrote past n";
      }
}

TEST(SparseKernels, CompactMatricesTakeOneByteEntriesWithFillers) {
  // 9% of 300 x 300 at random: 4-bit gaps need fillers for about a fifth of the entries, too many
  // for one-byte entries by default, not for a compact matrix.
  Case c = make_case(300, 300, 0.09, 16, 5);
  SparseMatrix fast = build_sparse_matrix(c.codes, 300, 300, c.codebook, 1);
  SparseMatrix compact = build_sparse_matrix(c.codes, 300, 300, c.codebook, 1, true);
  EXPECT_FALSE(fast.e8);
  EXPECT_EQ(fast.csr_entry_bits, 16);
  EXPECT_TRUE(compact.e8);
  EXPECT_EQ(compact.csr_entry_bits, 8);
  EXPECT_GT(compact.csc_entries(), compact.nonzeros) << "fillers";
  EXPECT_LT(layout_row(kLayoutCsc).bytes_held(compact), layout_row(kLayoutCsc).bytes_held(fast));
  EXPECT_LT(layout_row(kLayoutCsr).bytes_held(compact), layout_row(kLayoutCsr).bytes_held(fast));
}

// Y = W Xt (Xt [cols, batch]) through the driver on one thread: what every split must give.
std::vector<float> one_thread_product(const SparseMatrix& m, const std::vector<float>& xt, int64_t batch) {
  std::vector<float> y(static_cast<size_t>(m.rows * batch));
  ThreadPool one(1);
  sparse_matmat(one, m, balanced_row_bounds(m, 1), xt.data(), batch, batch, y.data(), batch);
  return y;
}

TEST(SparseKernels, RowBlocksSplitOverThreadsAtWholeGroups) {
  // 4x1 blocks over 1002 rows (the last group holds two), several column blocks, enough products
  // for the pool: every thread's rows start at a group, and the result is the single thread's.
  Case c = block_case(1002, 3000, 0.1, 1.0, 16, 91);
  SparseMatrix m = build_sparse_matrix(c.codes, 1002, 3000, c.codebook, 1);
  ASSERT_TRUE(m.has(kLayoutRowBlocks))
      << "fill " << static_cast<double>(m.nonzeros) / (4.0 * m.blocks_of_rows);
  EXPECT_STREQ(batched_walk_of(m).name, "row blocks");
  EXPECT_GT(m.row_blocks.blocks.size(), 1u);
  const int64_t batch = 24;
  std::vector<float> xt = random_input(3000 * batch, 0.8, 92);
  const std::vector<float> want = one_thread_product(m, xt, batch);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    const std::vector<int64_t> bounds = balanced_row_bounds(m, threads);
    ASSERT_GT(bounds.size(), 3u);
    for (size_t i = 0; i + 1 < bounds.size(); ++i) EXPECT_EQ(bounds[i] % kBlockRows, 0) << bounds[i];
    EXPECT_EQ(bounds.back(), 1002);
    std::vector<float> y(want.size(), -7.0f);
    sparse_matmat(pool, m, bounds, xt.data(), batch, batch, y.data(), batch);
    EXPECT_EQ(y, want) << threads << " threads";
  }
  std::vector<float> col(3000);
  for (int64_t j = 0; j < 3000; ++j) col[j] = xt[j * batch + 5];
  auto dense = dense_product(c, col);
  std::vector<float> got(1002);
  for (int64_t r = 0; r < 1002; ++r) got[r] = want[r * batch + 5];
  expect_close(got, dense, "row blocks through the driver");
}

TEST(SparseKernels, RowBlocksWithAHeavyShortLastGroupSplitOverThreads) {
  // 10 rows, the last two (a short group) holding most of the entries: the row ranges end early at
  // the matrix's last row, and the empty ones after it must not compute that group again.
  Case c = block_case(10, 3000, 0.05, 1.0, 16, 95);
  for (int64_t r = 8; r < 10; ++r)
    for (int64_t j = 0; j < 3000; ++j)
      c.codes[static_cast<size_t>(r * 3000 + j)] = static_cast<uint8_t>(1 + j % 15);
  SparseMatrix m = build_sparse_matrix(c.codes, 10, 3000, c.codebook, 1);
  ASSERT_TRUE(m.has(kLayoutRowBlocks));
  const int64_t batch = 64;
  ASSERT_GE(m.nonzeros * batch, kParallelFromProducts);
  std::vector<float> xt = random_input(3000 * batch, 0.8, 96);
  const std::vector<float> want = one_thread_product(m, xt, batch);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    const std::vector<int64_t> bounds = balanced_row_bounds(m, threads);
    EXPECT_EQ(bounds[bounds.size() - 2], 10) << "an empty range at the end";
    for (int round = 0; round < 20; ++round) {
      std::vector<float> y(want.size(), -7.0f);
      // Each row's epilogue runs once, on the rows its range wrote.
      std::vector<int> done(10, 0);
      sparse_matmat(pool, m, bounds, xt.data(), batch, batch, y.data(), batch, nullptr,
                    [&](int64_t begin, int64_t end) {
                      for (int64_t r = begin; r < end; ++r) ++done[static_cast<size_t>(r)];
                    });
      ASSERT_EQ(y, want) << threads << " threads, round " << round;
      ASSERT_EQ(done, std::vector<int>(10, 1));
    }
  }
}

TEST(SparseKernels, EpiloguesRunOnPiecesOfRowsThatFitTheCache) {
  // 1003 rows of Y, 21 of them to kRowsDonePieceBytes: every range goes in pieces of at most 20 rows
  // (a multiple of kBlockRows), each handed to rows_done right after it was written, with 4x1 row
  // blocks and without.
  const int64_t batch = kRowsDonePieceBytes / 4 / 21;
  for (const bool blocks : {false, true}) {
    Case c = blocks ? block_case(1003, 200, 0.1, 1.0, 16, 97) : make_case(1003, 200, 0.1, 16, 97);
    SparseMatrix m = build_sparse_matrix(c.codes, 1003, 200, c.codebook, 1);
    ASSERT_EQ(m.has(kLayoutRowBlocks), blocks);
    std::vector<float> xt = random_input(200 * batch, 0.8, 98);
    const std::vector<float> want = one_thread_product(m, xt, batch);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      std::vector<float> y(want.size(), -7.0f);
      std::vector<int> done(1003, 0);
      std::mutex lock;
      bool in_order = true;
      int64_t largest = 0;
      sparse_matmat(pool, m, balanced_row_bounds(m, threads), xt.data(), batch, batch, y.data(), batch,
                    nullptr, [&](int64_t begin, int64_t end) {
                      std::lock_guard<std::mutex> hold(lock);
                      EXPECT_LE((end - begin) * batch * 4, kRowsDonePieceBytes);
                      largest = std::max(largest, end - begin);
                      EXPECT_EQ(begin % kBlockRows, 0);
                      for (int64_t r = begin; r < end; ++r) {
                        ++done[static_cast<size_t>(r)];
                        // Written already: a row's first entry is the single thread's.
                        in_order = in_order && y[r * batch] == want[r * batch];
                      }
                    });
      EXPECT_EQ(y, want) << threads << " threads";
      EXPECT_EQ(done, std::vector<int>(1003, 1));
      EXPECT_TRUE(in_order) << "rows_done ran before its rows were written";
      EXPECT_EQ(largest, 20) << "pieces as large as the budget allows";
    }
  }
}

TEST(SparseKernels, ParallelSchemesMatchTheReference) {
  // Both batch-1 schemes and the blocked CSR over several threads, on a matrix wide enough to have
  // several column blocks and enough non-zeros to use the pool.
  Case c = make_case(700, 5000, 0.05, 16, 77);
  auto x = random_input(5000, 0.4, 78);
  auto want = dense_product(c, x);
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (SpmvScheme scheme : {SpmvScheme::columns, SpmvScheme::rows}) {
      SparseMatrix m =
          build_sparse_matrix(c.codes, 700, 5000, c.codebook, scheme == SpmvScheme::rows ? threads : 1);
      ASSERT_GE(m.nonzeros, kParallelFromNonzeros);
      SpmvWorkspace ws;
      ws.reserve(m, threads);
      std::vector<float> y(700);
      sparse_matvec(pool, m, x.data(), y.data(), ws, scheme);
      expect_close(y, want, "threads " + std::to_string(threads));
      EXPECT_EQ(m.csr.size(), static_cast<size_t>((5000 + csr_block_columns(m.density()) - 1) /
                                                  csr_block_columns(m.density())));
      EXPECT_GT(m.csr.size(), 1u) << "several column blocks";
      std::vector<float> y2(700 * 2);
      std::vector<float> xt(5000 * 2);
      for (int64_t j = 0; j < 5000; ++j) xt[j * 2] = xt[j * 2 + 1] = x[j];
      sparse_matmat(pool, m, balanced_row_bounds(m, threads), xt.data(), 2, 2, y2.data(), 2);
      std::vector<float> first(700);
      for (int r = 0; r < 700; ++r) first[r] = y2[r * 2 + 1];
      expect_close(first, want, "batched, threads " + std::to_string(threads));
    }
  }
}

// y = W x over a one-sample layout (banded CSC or column tiles) with `kernel`; y carries a canary
// past its rows.
template <class Layout>
std::vector<float> run_layout(const Layout& layout, const Case& c,
                              void (*kernel)(const SpmvLayoutArgs<Layout>&), const std::vector<float>& x) {
  std::vector<int32_t> active;
  for (int64_t j = 0; j < c.cols; ++j)
    if (x[j] != 0.0f) active.push_back(static_cast<int32_t>(j));
  std::vector<float> codebook(16, 0.0f);
  std::copy(c.codebook.begin(), c.codebook.end(), codebook.begin());
  std::vector<float> y(static_cast<size_t>(c.rows) + 1, -7.0f);
  kernel(SpmvLayoutArgs<Layout>{&layout, c.rows, codebook.data(), active.data(),
                                static_cast<int64_t>(active.size()), x.data(), y.data()});
  EXPECT_EQ(y.back(), -7.0f) << "wrote past the rows";
  y.pop_back();
  return y;
}

// Every ISA's kernel for a one-sample layout against the dense double product, over rows x cols x
// weight densities x input densities. `build(case)` makes the layout; `kernel(kernels)` picks it.
template <class Build, class Kernel>
void check_layout_grid(Isa isa, std::initializer_list<int64_t> row_counts,
                       std::initializer_list<int64_t> col_counts, uint32_t seed, Build build, Kernel kernel,
                       const std::string& name) {
  for (int64_t rows : row_counts)
    for (int64_t cols : col_counts)
      for (double density : {0.0, 0.09, 0.5, 1.0}) {
        Case c = make_case(rows, cols, density, 16, seed++);
        auto layout = build(c);
        for (double x_density : {0.0, 0.35, 1.0}) {
          auto x = random_input(cols, x_density, seed++);
          auto want = dense_product(c, x);
          for (ScatterMode mode : scatter_modes(isa)) {
            ScatterScope scope(mode);
            expect_close(run_layout(layout, c, kernel(sparse_kernels_for(isa)), x), want,
                         std::string(isa_name(isa)) + " " + scatter_mode_name(mode) + " " + name + " " +
                             std::to_string(rows) + "x" + std::to_string(cols) +
                             " d=" + std::to_string(density));
          }
        }
      }
}

TEST_P(SparseKernelsPerIsa, TilesEveryVariantMatchesOnTheGrid) {
  // Rows below, at and above one tile and partial last tiles; empty, full and mixed tiles; active
  // column counts that are and are not multiples of the kernel's four-column passes.
  check_layout_grid(
      isa, {1, 15, 16, 17, 33, 64, 300}, {1, 4, 7, 33}, 500,
      [](const Case& c) {
        ColumnTiles t = build_column_tiles(c.codes, c.rows, c.cols);
        EXPECT_EQ(t.tiles_per_column, (c.rows + 15) / 16);
        return t;
      },
      [](const SparseKernels& k) { return k.spmv_tiles; }, "tiles");
}

TEST(SparseKernels, TilesLayoutHoldsMasksAndCodesInRowOrder) {
  // Column 0: rows 0, 17 and 31 (tiles 0 and 1); column 1: empty; column 2: row 18.
  Case c{std::vector<uint8_t>(32 * 3, 0), 32, 3, std::vector<float>(16, 0.0f)};
  c.codes[0 * 3 + 0] = 5;
  c.codes[17 * 3 + 0] = 6;
  c.codes[31 * 3 + 0] = 7;
  c.codes[18 * 3 + 2] = 15;
  ColumnTiles t = build_column_tiles(c.codes, 32, 3);
  EXPECT_EQ(t.masks, (std::vector<uint16_t>{1, 1u << 1 | 1u << 15, 0, 0, 0, 1u << 2}));
  EXPECT_EQ(t.code_ptr, (std::vector<uint32_t>{0, 3, 3, 4}));
  EXPECT_EQ(std::vector<uint8_t>(t.codes.begin(), t.codes.begin() + 4), (std::vector<uint8_t>{5, 6, 7, 15}));
  EXPECT_EQ(t.codes.size(), 4u + kTileRows) << "padding for 16-code loads";
}

TEST(SparseKernels, OneSampleLayoutChosenByCodebookDensityAndIsa) {
  Case dense_enough = make_case(160, 200, 0.4, 16, 901), sparse = make_case(160, 200, 0.05, 16, 902),
       wide_codebook = make_case(160, 200, 0.4, 256, 903);
  bool avx512 = sparse_kernels().isa == Isa::avx512;
  auto layout = [](const Case& c, int partitions) {
    return std::string(build_sparse_matrix(c.codes, c.rows, c.cols, c.codebook, partitions).batch1_layout());
  };
  EXPECT_EQ(layout(dense_enough, 1), avx512 ? "tiles" : "csc8");
  EXPECT_EQ(layout(sparse, 1).substr(0, avx512 ? 6 : 3), avx512 ? "banded" : "csc");
  EXPECT_EQ(layout(wide_codebook, 1), "csc16");
  EXPECT_EQ(layout(dense_enough, 2).substr(0, 3), "csc") << "EIE's row partitions run on the CSC walk";
}

TEST_P(SparseKernelsPerIsa, BandedEveryVariantMatchesOnTheGrid) {
  // Rows below, at and above 16 lanes and one 4096-row band; columns with fewer, exactly and more
  // than 16 entries; empty and full columns.
  check_layout_grid(
      isa, {1, 15, 16, 17, 300, 4096, 4097, 8200}, {1, 3, 9}, 700,
      [](const Case& c) {
        BandedCsc b = build_banded_csc(c.codes, c.rows, c.cols);
        EXPECT_EQ(b.bands, (c.rows + 4095) / 4096);
        return b;
      },
      [](const SparseKernels& k) { return k.spmv_banded; }, "banded");
}

TEST(SparseKernels, ScalarScatterGivesTheHardwareScattersBits) {
  if (best_supported_isa() < Isa::avx512) GTEST_SKIP() << "avx512: not supported on this CPU (or capped)";
  const SparseKernels k = sparse_kernels_for(Isa::avx512);
  uint32_t seed = 4000;
  // Columns of fewer, exactly and more than 16 entries (the masked tail), one- and two-byte
  // entries, 16- and 256-entry codebooks (the gathered lookup), and the banded CSC.
  for (int64_t rows : {5, 16, 40, 700})
    for (int cb : {16, 256}) {
      Case c = make_case(rows, 21, 0.6, cb, seed++);
      SparseMatrix m = build_sparse_matrix(c.codes, rows, 21, c.codebook, 1, cb == 16);
      auto x = random_input(21, 0.8, seed++);
      std::vector<float> got[2];
      for (ScatterMode mode : {ScatterMode::hardware, ScatterMode::scalar}) {
        ScatterScope scope(mode);
        got[static_cast<int>(mode)] = run_spmv(m, k, x);
      }
      EXPECT_EQ(got[0], got[1]) << rows << " rows, " << cb << "-entry codebook";
      if (cb != 16) continue;
      BandedCsc b = build_banded_csc(c.codes, rows, 21);
      for (ScatterMode mode : {ScatterMode::hardware, ScatterMode::scalar}) {
        ScatterScope scope(mode);
        got[static_cast<int>(mode)] = run_layout(b, c, k.spmv_banded, x);
      }
      EXPECT_EQ(got[0], got[1]) << rows << " rows, banded";
    }
}

TEST(SparseKernels, BandedLayoutHoldsRowsWithinTheBandAndCodes) {
  // Column 0: rows 3 and 4096 (band 1, row 0); column 1: row 4100 (band 1, row 4).
  Case c{std::vector<uint8_t>(4101 * 2, 0), 4101, 2, std::vector<float>(16, 0.0f)};
  c.codes[3 * 2 + 0] = 9;
  c.codes[4096 * 2 + 0] = 1;
  c.codes[4100 * 2 + 1] = 15;
  BandedCsc b = build_banded_csc(c.codes, 4101, 2);
  EXPECT_EQ(b.bands, 2);
  EXPECT_EQ(b.col_ptr, (std::vector<uint32_t>{0, 1, 1, 1, 2, 3}));
  EXPECT_EQ(b.entries, (std::vector<uint16_t>{3 << 4 | 9, 0 << 4 | 1, 4 << 4 | 15}));
}

// W x over the sliced rows [slice_begin, slice_end) with `kernel`; y starts at a canary value, and
// rows outside those slices must keep it.
std::vector<float> run_rows(const SlicedRows& s, const Case& c, void (*kernel)(const SpmvRowArgs&),
                            const std::vector<float>& x, int64_t slice_begin, int64_t slice_end) {
  std::vector<float> codebook(16, 0.0f);
  std::copy(c.codebook.begin(), c.codebook.end(), codebook.begin());
  std::vector<float> y(static_cast<size_t>(c.rows) + 1, -7.0f);
  kernel(SpmvRowArgs{&s, codebook.data(), x.data(), slice_begin, slice_end, y.data()});
  std::vector<bool> inside(static_cast<size_t>(c.rows) + 1, false);
  for (int64_t pos = slice_begin * kSliceRows; pos < std::min(slice_end * kSliceRows, c.rows); ++pos)
    inside[static_cast<size_t>(s.order[static_cast<size_t>(pos)])] = true;
  for (int64_t r = 0; r <= c.rows; ++r) {
    if (!inside[static_cast<size_t>(r)]) {
      EXPECT_EQ(y[r], -7.0f) << "wrote row " << r << " outside the slices";
    }
  }
  // The same sums to their sorted positions, whole slices (lanes past the rows included).
  std::vector<float> sorted(static_cast<size_t>(s.slices() * kSliceRows) + 1, -7.0f);
  kernel(SpmvRowArgs{&s, codebook.data(), x.data(), slice_begin, slice_end, nullptr, sorted.data()});
  for (int64_t pos = slice_begin * kSliceRows; pos < std::min(slice_end * kSliceRows, c.rows); ++pos)
    EXPECT_EQ(sorted[static_cast<size_t>(pos)], y[static_cast<size_t>(s.order[static_cast<size_t>(pos)])])
        << pos;
  EXPECT_EQ(sorted.back(), -7.0f) << "wrote past the slices";
  y.pop_back();
  return y;
}

TEST_P(SparseKernelsPerIsa, SlicedRowsEveryVariantMatchesOnTheGrid) {
  // Rows below, at and above one slice of 16; slices of fewer, exactly and more than 2 steps (the
  // kernel's two-register steps); gaps past 15 and 4095 columns (fillers in one- and two-byte
  // entries); empty and full rows; zero and dense inputs; every code.
  uint32_t seed = 1300;
  for (int64_t rows : {1, 15, 16, 17, 300})
    for (int64_t cols : {1, 15, 16, 17, 33, 4096, 4097, 8200})
      for (double density : {0.0, 0.02, 0.09, 0.5, 1.0})
        for (auto [compact, panelled] : {std::pair{false, true}, {false, false}, {true, false}}) {
          Case c = make_case(rows, cols, density, 16, seed++);
          SlicedRows s = build_sliced_rows(c.codes, rows, cols, compact, panelled);
          EXPECT_EQ(s.entry_bits, compact || panelled ? 8 : 16);
          EXPECT_EQ(s.panelled(), panelled);
          for (double x_density : {0.0, 0.35, 1.0}) {
            auto x = random_input(cols, x_density, seed++);
            auto want = dense_product(c, x);
            std::string what = std::string(isa_name(isa)) + " sliced rows " + std::to_string(rows) + "x" +
                               std::to_string(cols) + " d=" + std::to_string(density) + " " +
                               std::to_string(s.entry_bits) + "-bit" + (panelled ? " panelled" : "");
            auto kernel = sparse_kernels_for(isa).spmv_rows_sliced;
            expect_close(run_rows(s, c, kernel, x, 0, s.slices()), want, what);
            if (s.slices() > 2) {
              auto part = run_rows(s, c, kernel, x, 1, s.slices() - 1);
              for (int64_t pos = kSliceRows; pos < (s.slices() - 1) * kSliceRows; ++pos) {
                const int32_t r = s.order[static_cast<size_t>(pos)];
                ASSERT_NEAR(part[r], want.y[r], 1e-5 * want.abs_sum[r] + 1e-30)
                    << what << " slices, row " << r;
              }
            }
          }
        }
}

TEST_P(SparseKernelsPerIsa, PanelledSlicedRowsOfWiderCodebooksMatchOnTheGrid) {
  // Codebooks of 17 to 64 entries: two-byte panelled entries, looked up in one, two or four
  // registers by the largest code the layout holds; every code used where the density allows;
  // rows below, at and above a slice; a last panel of 1 to 16 columns.
  // Within a budget (compact), up to 32 entries take one-byte entries over 8-column panels.
  uint32_t seed = 5100;
  int cases = 0;
  for (int codebook : {17, 32, 33, 64})
    for (bool compact : {false, true})
      for (int64_t rows : {1, 17, 300})
        for (int64_t cols : {1, 7, 9, 16, 100, 4097})  // 16: full last panels of 8 and of 16
          for (double density : {0.02, 0.3, 1.0}) {
            if (compact && codebook > kNarrowPanelCodebookMost) continue;
            Case c = make_case(rows, cols, density, codebook, seed++);
            auto codes = dense_codes(c.codes, rows, cols);
            SparseMatrix m = sparse_matrix_header(*codes, c.codebook, 1);
            m.compact = compact;
            add_layouts(m, *codes, kLayoutSlicedRows);
            const SlicedRows& s = m.sliced_rows;
            ASSERT_TRUE(s.panelled());
            ASSERT_EQ(s.code_bits, compact ? 5 : 8);
            ASSERT_EQ(s.entry_bits, compact ? 8 : 16);
            ASSERT_EQ(s.panel_columns, compact ? kNarrowPanelColumns : kPanelColumns);
            const int largest = *std::max_element(c.codes.begin(), c.codes.end());
            EXPECT_EQ(s.code_limit, largest < 16 ? 16 : largest < 32 ? 32 : 64);
            const std::string what = fmt::format("{} codebook {} compact {} {}x{} d={}", isa_name(isa),
                                                 codebook, compact, rows, cols, density);
            for (double x_density : {0.0, 0.5, 1.0}) {
              auto x = random_input(cols, x_density, seed++);
              std::vector<float> y(static_cast<size_t>(rows) + 1, -7.0f);
              sparse_kernels_for(isa).spmv_rows_sliced(
                  SpmvRowArgs{&s, m.codebook.data(), x.data(), 0, s.slices(), y.data()});
              EXPECT_EQ(y.back(), -7.0f) << "wrote past the rows: " << what;
              y.pop_back();
              expect_close(y, dense_product(c, x), what);
            }
            // An infinite input reaches only the rows with a weight in its column (padding is masked).
            std::vector<float> x(static_cast<size_t>(cols), 1.0f);
            x[0] = INFINITY;
            std::vector<float> y(static_cast<size_t>(rows));
            sparse_kernels_for(isa).spmv_rows_sliced(
                SpmvRowArgs{&s, m.codebook.data(), x.data(), 0, s.slices(), y.data()});
            for (int64_t r = 0; r < rows; ++r)
              ASSERT_EQ(std::isfinite(y[r]), c.codes[static_cast<size_t>(r * cols)] == 0)
                  << what << " row " << r;
            ++cases;
          }
  EXPECT_EQ(cases, 6 * 3 * 6 * 3);
}

// Row 0: columns 3 and `far`; row 1: column 0; row 2: columns 1, 2, 40 and 41.
Case three_rows(int64_t cols, int64_t far) {
  Case c{std::vector<uint8_t>(static_cast<size_t>(3 * cols), 0), 3, cols, std::vector<float>(16, 0.0f)};
  c.codes[0 * cols + 3] = 9;
  c.codes[0 * cols + far] = 1;
  c.codes[1 * cols + 0] = 15;
  c.codes[2 * cols + 1] = 2;
  c.codes[2 * cols + 2] = 3;
  c.codes[2 * cols + 40] = 4;
  c.codes[2 * cols + 41] = 5;
  for (int i = 1; i < 16; ++i) c.codebook[static_cast<size_t>(i)] = 0.1f * static_cast<float>(i) - 0.7f;
  return c;
}

TEST(SparseKernels, PanelledSlicedRowsHoldEachPanelsEntriesInTurn) {
  // 100 columns: panels of 16 (the last 96-99). Sorted rows 2, 0, 1 in one slice; each panel as
  // many steps as its longest row there (row 2: two in panel 0 and two in panel 2; row 0 one in
  // panel 5; none elsewhere), one-byte entries of the column within the panel and the code, shorter
  // lanes padded with code 0.
  Case c = three_rows(100, 90);
  SlicedRows s = build_sliced_rows(c.codes, 3, 100);
  ASSERT_TRUE(s.panelled());
  ASSERT_EQ(s.entry_bits, 8);
  ASSERT_EQ(s.panels(), 7);
  EXPECT_EQ(s.order, (std::vector<int32_t>{2, 0, 1}));
  EXPECT_EQ(s.panel_steps, (std::vector<uint8_t>{2, 0, 2, 0, 0, 1, 0}));
  ASSERT_EQ(s.slice_ptr, (std::vector<uint32_t>{0, 5 * 16}));
  // (step, lane, entry): step 0-1 panel 0, 2-3 panel 2, 4 panel 5.
  const std::array<std::array<unsigned, 3>, 11> want = {{{0, 0, 1 << 4 | 2},
                                                         {0, 1, 3 << 4 | 9},
                                                         {0, 2, 0 << 4 | 15},
                                                         {0, 3, 0},  // lane past the rows
                                                         {1, 0, 2 << 4 | 3},
                                                         {1, 1, 0},  // row 0 has one entry in panel 0
                                                         {2, 0, (40 - 32) << 4 | 4},
                                                         {3, 0, (41 - 32) << 4 | 5},
                                                         {2, 1, 0},
                                                         {4, 1, (90 - 80) << 4 | 1},
                                                         {4, 0, 0}}};
  for (const auto& [step, lane, entry] : want)
    EXPECT_EQ(s.entries8[step * kSliceRows + lane], entry) << "step " << step << ", lane " << lane;
  // Read back row by row through the code source of a matrix that holds only these rows.
  SparseMatrix m = sparse_matrix_header(*dense_codes(c.codes, 3, 100), c.codebook, 1);
  m.sliced_rows = s;
  std::vector<uint8_t> back(c.codes.size(), 0);
  matrix_codes(m)->visit([&](int64_t r, int64_t col, uint8_t code) { back[r * 100 + col] = code; });
  EXPECT_EQ(back, c.codes);
}

TEST(SparseKernels, SlicedRowsSortByLengthAndHoldColumnsOrGaps) {
  // The classic format. Up to 4096 columns, two-byte entries hold columns: sorted rows 2, 0, 1, as
  // many steps as the longest row, shorter rows and the lanes past the rows padded, each lane's
  // count kept.
  Case c = three_rows(100, 90);
  SlicedRows s = build_sliced_rows(c.codes, 3, 100, false, false);
  ASSERT_EQ(s.entry_bits, 16);
  ASSERT_FALSE(s.gap_coded);
  EXPECT_EQ(s.order, (std::vector<int32_t>{2, 0, 1}));
  ASSERT_EQ(s.slice_ptr, (std::vector<uint32_t>{0, 4 * 16}));
  ASSERT_EQ(s.lengths.size(), 16u);
  EXPECT_EQ(std::vector<uint32_t>(s.lengths.begin(), s.lengths.begin() + 4),
            (std::vector<uint32_t>{4, 2, 1, 0}));
  auto lane = [&](int step, int i) { return s.entries16[static_cast<size_t>(step * 16 + i)]; };
  EXPECT_EQ(lane(0, 0), 1 << 4 | 2);
  EXPECT_EQ(lane(1, 0), 2 << 4 | 3);
  EXPECT_EQ(lane(2, 0), 40 << 4 | 4);
  EXPECT_EQ(lane(3, 0), 41 << 4 | 5);
  EXPECT_EQ(lane(0, 1), 3 << 4 | 9);
  EXPECT_EQ(lane(1, 1), 90 << 4 | 1);
  EXPECT_EQ(lane(2, 1), 0) << "padding";
  EXPECT_EQ(lane(0, 2), 0 << 4 | 15);
  EXPECT_EQ(lane(0, 3), 0) << "lane past the rows";

  // Past 4096 columns, 12-bit gaps: row 0's gap of 4096 columns takes one filler.
  c = three_rows(4101, 4100);
  s = build_sliced_rows(c.codes, 3, 4101, false, false);
  ASSERT_EQ(s.entry_bits, 16);
  ASSERT_TRUE(s.gap_coded);
  EXPECT_TRUE(s.lengths.empty());
  EXPECT_EQ(s.order, (std::vector<int32_t>{2, 0, 1}));
  ASSERT_EQ(s.slice_ptr, (std::vector<uint32_t>{0, 4 * 16}));
  EXPECT_EQ(lane(0, 0), 1 << 4 | 2);
  EXPECT_EQ(lane(1, 0), 0 << 4 | 3);
  EXPECT_EQ(lane(2, 0), 37 << 4 | 4);
  EXPECT_EQ(lane(0, 1), 3 << 4 | 9);
  EXPECT_EQ(lane(1, 1), 4095 << 4 | 0) << "filler";
  EXPECT_EQ(lane(2, 1), 0 << 4 | 1);
  EXPECT_EQ(lane(3, 1), 0) << "padding";

  // One-byte entries (a compact matrix): 4-bit gaps, so row 0's gap takes 256 fillers.
  SlicedRows narrow = build_sliced_rows(c.codes, 3, 4101, true);
  ASSERT_EQ(narrow.entry_bits, 8);
  ASSERT_TRUE(narrow.gap_coded);
  EXPECT_EQ(narrow.order, (std::vector<int32_t>{0, 2, 1}));
  ASSERT_EQ(narrow.slice_ptr, (std::vector<uint32_t>{0, 258 * 16}));
  auto byte = [&](int step, int i) { return narrow.entries8[static_cast<size_t>(step * 16 + i)]; };
  EXPECT_EQ(byte(0, 0), 3 << 4 | 9);
  EXPECT_EQ(byte(1, 0), 15 << 4 | 0) << "filler";
  EXPECT_EQ(byte(257, 0), 0 << 4 | 1) << "after 256 fillers of 16 columns, column 4100";
  EXPECT_EQ(byte(0, 1), 1 << 4 | 2);
  EXPECT_EQ(byte(1, 1), 0 << 4 | 3);
  EXPECT_EQ(byte(2, 1), 15 << 4 | 0) << "a gap of 37: two fillers first";
  EXPECT_EQ(byte(3, 1), 15 << 4 | 0);
  EXPECT_EQ(byte(4, 1), 5 << 4 | 4);
  EXPECT_EQ(byte(6, 1), 0) << "padding";

  // A non-finite input reaches only the rows that weigh it: padding and fillers gather nothing.
  // Infinite at column 0 (where padding of column entries points): only row 1 weighs it. At columns
  // 1 and 4099 (row 1's padding after its one gap-coded entry; row 0's last filler in both widths):
  // only row 2 weighs them.
  struct Infinite {
    int64_t cols;
    std::vector<int64_t> at;
    int64_t row;
  };
  for (const Infinite& t : {Infinite{100, {0}, 1}, Infinite{4101, {0}, 1}, Infinite{4101, {1, 4099}, 2}}) {
    Case m = three_rows(t.cols, t.cols - 1 == 4100 ? 4100 : 90);
    std::vector<float> x(static_cast<size_t>(t.cols), 1.0f);
    for (int64_t j : t.at) x[static_cast<size_t>(j)] = INFINITY;
    for (auto [compact, panelled] : {std::pair{false, true}, {false, false}, {true, false}}) {
      SlicedRows layout = build_sliced_rows(m.codes, 3, t.cols, compact, panelled);
      for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
        if (isa <= best_supported_isa()) {
          auto y = run_rows(layout, m, sparse_kernels_for(isa).spmv_rows_sliced, x, 0, 1);
          for (int64_t r = 0; r < 3; ++r)
            EXPECT_TRUE(r == t.row ? std::isinf(y[r]) : std::isfinite(y[r]))
                << isa_name(isa) << ", " << t.cols << " columns, " << layout.entry_bits << "-bit"
                << (panelled ? " panelled" : "") << ", row " << r << ": " << y[r];
        }
    }
  }

  // Every kernel walks the fillers of both widths to the right columns.
  auto x = random_input(4101, 1.0, 7);
  auto want = dense_product(c, x);
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    if (isa <= best_supported_isa())
      for (const SlicedRows* layout : {&s, &narrow})
        expect_close(run_rows(*layout, c, sparse_kernels_for(isa).spmv_rows_sliced, x, 0, 1), want,
                     std::string(isa_name(isa)) + " " + std::to_string(layout->entry_bits) + "-bit fillers");
}

void row_walk_through_the_driver(int64_t rows, int64_t cols);

TEST(SparseKernels, RowWalkChosenByActiveShareThroughTheDriver) {
  // Large enough to use the pool. With AVX-512 the matrix has the sliced rows; a sample with all
  // inputs non-zero walks the rows, one with a tenth walks the active columns. Any sample gives
  // W x (the last 40 rows empty: sorted last, in slices of no entries, and still written), and
  // the row walk gives the same bits on any number of threads. Wide or tall, the driver builds
  // panelled rows.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{700, 5000}, {3000, 600}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    row_walk_through_the_driver(rows, cols);
  }
}

void row_walk_through_the_driver(int64_t rows, int64_t cols) {
  Case c = make_case(rows, cols, 0.05, 16, 1400);
  std::fill(c.codes.begin() + (rows - 40) * cols, c.codes.end(), uint8_t{0});
  SparseMatrix m = build_sparse_matrix(c.codes, rows, cols, c.codebook, 1);
  ASSERT_GE(m.nonzeros, kParallelFromNonzeros);
  bool avx512 = sparse_kernels().isa == Isa::avx512;
  EXPECT_EQ(m.sliced_rows.empty(), !avx512);
  if (avx512) {
    EXPECT_TRUE(m.sliced_rows.panelled());
  }
  for (double x_density : {0.1, 0.6, 1.0}) {
    auto x = random_input(cols, x_density, 1401);
    int64_t active = std::count_if(x.begin(), x.end(), [](float v) { return v != 0.0f; });
    if (avx512 && x_density == 0.1) {
      EXPECT_FALSE(m.row_walk_pays(active));
    }
    if (avx512 && x_density == 1.0) {
      EXPECT_TRUE(m.row_walk_pays(active));
    }
    auto want = dense_product(c, x);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      SpmvWorkspace ws;
      ws.reserve(m, threads);
      std::vector<float> y(static_cast<size_t>(rows), NAN);
      sparse_matvec(pool, m, x.data(), y.data(), ws, SpmvScheme::columns);
      expect_close(y, want,
                   "x density " + std::to_string(x_density) + ", threads " + std::to_string(threads));
      if (!m.row_walk_pays(active)) continue;
      if (first.empty()) first = y;
      EXPECT_EQ(y, first) << "row walk on " << threads << " threads";
    }
  }
}

TEST(SparseKernels, RowWalkThresholdFollowsTheShape) {
  // With the panelled row walk, layers whose entries fit in L2 walk their rows from about a fifth of
  // active inputs, tall (NT-Wd's shape) or wide (NT-We's); a layer whose entries spill from L2
  // (Alex-7's shape) waits on the shared cache and needs more, and more still with a smaller cache
  // (a larger one counts as the 1 MiB the costs were fitted on).
  // An empty matrix walks its (no) columns.
  auto threshold_share = [](int64_t rows, int64_t cols, double density, int64_t l2) {
    Case c = make_case(rows, cols, density, 16, 1500);
    BandedCsc columns = build_banded_csc(c.codes, rows, cols);
    SlicedRows by_rows = build_sliced_rows(c.codes, rows, cols);
    return static_cast<double>(row_walk_from_active(columns, by_rows, l2)) / static_cast<double>(cols);
  };
  const int64_t mib = int64_t{1} << 20;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{8000, 600}, {600, 4096}}) {
    const double share = threshold_share(rows, cols, 0.11, mib);
    EXPECT_GT(share, 0.12) << rows << " x " << cols;
    EXPECT_LT(share, 0.35) << rows << " x " << cols;
  }
  const double spilled = threshold_share(4096, 4096, 0.09, mib);
  EXPECT_GT(spilled, 0.45);
  EXPECT_GT(threshold_share(4096, 4096, 0.09, mib / 4), spilled);
  EXPECT_EQ(threshold_share(4096, 4096, 0.09, 32 * mib), spilled)
      << "an L2 larger than the costs were fitted on counts as that";
  Case empty = make_case(50, 40, 0.0, 16, 1501);
  EXPECT_GT(
      row_walk_from_active(build_banded_csc(empty.codes, 50, 40), build_sliced_rows(empty.codes, 50, 40)),
      40);
  std::vector<uint8_t> none;
  EXPECT_GT(row_walk_from_active(build_banded_csc(none, 0, 40), build_sliced_rows(none, 0, 40)), 40)
      << "no rows";
  EXPECT_GT(row_walk_from_active(build_banded_csc(none, 50, 0), build_sliced_rows(none, 50, 0)), 0)
      << "no columns";
}

TEST(SparseKernels, TilesThroughTheParallelDriver) {
  // Dense enough for the tiles (where the CPU has AVX-512) and large enough to use the pool.
  Case c = make_case(1001, 600, 0.3, 16, 911);
  auto x = random_input(600, 0.5, 912);
  auto want = dense_product(c, x);
  SparseMatrix m = build_sparse_matrix(c.codes, 1001, 600, c.codebook, 1);
  ASSERT_GE(m.nonzeros, kParallelFromNonzeros);
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    SpmvWorkspace ws;
    ws.reserve(m, threads);
    std::vector<float> y(1001);
    sparse_matvec(pool, m, x.data(), y.data(), ws, SpmvScheme::columns);
    expect_close(y, want, std::string(m.batch1_layout()) + ", threads " + std::to_string(threads));
  }
}

TEST_P(SparseKernelsPerIsa, ListNonzeroEveryVariantMatchesTheReference) {
  // Lengths around the 8- and 16-lane steps; zero, -0, NaN, denormals and infinities; nothing is
  // written past active[n - 1].
  const float specials[] = {0.0f, -0.0f, std::nanf(""), 1e-42f, -1e-42f, INFINITY, -INFINITY, 3.5f};
  uint32_t seed = 1200;
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000})
    for (int pattern = 0; pattern < 5; ++pattern) {
      std::mt19937 rng(seed++);
      std::vector<float> x(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j)
        x[j] = pattern == 0   ? 0.0f
               : pattern == 1 ? 1.0f
               : pattern == 2 ? static_cast<float>(j % 2)
               : pattern == 3 ? specials[rng() % 8]
                              : (rng() % 5 == 0 ? 0.5f : 0.0f);
      std::vector<int32_t> want;
      for (int64_t j = 0; j < n; ++j)
        if (x[j] != 0.0f) want.push_back(static_cast<int32_t>(j));

      std::vector<int32_t> active(static_cast<size_t>(n) + 16, -7);
      int64_t count = -1;
      sparse_kernels_for(isa).list_nonzero(NonzeroArgs{x.data(), n, active.data(), &count});
      std::string what =
          std::string(isa_name(isa)) + " n=" + std::to_string(n) + " pattern " + std::to_string(pattern);
      ASSERT_EQ(count, static_cast<int64_t>(want.size())) << what;
      EXPECT_EQ(std::vector<int32_t>(active.begin(), active.begin() + count), want) << what;
      for (size_t i = static_cast<size_t>(n); i < active.size(); ++i)
        ASSERT_EQ(active[i], -7) << what << " wrote past n";
    }
}

TEST_P(SparseKernelsPerIsa, OneSampleKernelsAddToYWhenAskedTo) {
  // accumulate: y keeps what it held and gains W x (the parallel driver adds chunks of columns).
  Case c = make_case(300, 40, 0.3, 16, 1300);
  auto x = random_input(40, 0.5, 1301);
  auto want = dense_product(c, x);
  std::vector<int32_t> active;
  for (int64_t j = 0; j < 40; ++j)
    if (x[j] != 0.0f) active.push_back(static_cast<int32_t>(j));
  auto n = static_cast<int64_t>(active.size());
  SparseMatrix m = build_sparse_matrix(c.codes, 300, 40, c.codebook, 1);
  BandedCsc banded = build_banded_csc(c.codes, 300, 40);
  ColumnTiles tiles = build_column_tiles(c.codes, 300, 40);

  const SparseKernels& k = sparse_kernels_for(isa);
  for (int layout = 0; layout < 3; ++layout) {
    std::vector<float> y(300);
    for (int64_t r = 0; r < 300; ++r) y[r] = static_cast<float>(r);
    if (layout == 0)
      (m.e8 ? k.spmv_csc_e8 : k.spmv_csc_e16)(SpmvArgs{&m.csc[0], m.codebook.data(), m.small_codebook,
                                                       active.data(), n, x.data(), y.data(), true});
    else if (layout == 1)
      k.spmv_banded(
          SpmvBandArgs{&banded, 300, c.codebook.data(), active.data(), n, x.data(), y.data(), true});
    else
      k.spmv_tiles(SpmvTileArgs{&tiles, 300, c.codebook.data(), active.data(), n, x.data(), y.data(), true});
    for (int64_t r = 0; r < 300; ++r)
      ASSERT_NEAR(y[r], want.y[r] + r, 1e-5 * (want.abs_sum[r] + r) + 1e-30)
          << isa_name(isa) << " layout " << layout << " row " << r;
  }
}

TEST(SparseKernels, ColumnsSchemeWithFewOrNoActiveInputs) {
  // Through the parallel driver: no active input (y must be zeros, not what it held), fewer active
  // columns than one chunk, and many chunks over three threads.
  Case c = make_case(4100, 400, 0.1, 16, 1400);
  SparseMatrix m = build_sparse_matrix(c.codes, 4100, 400, c.codebook, 1);
  ASSERT_GE(m.nonzeros, kParallelFromNonzeros);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    SpmvWorkspace ws;
    ws.reserve(m, threads);
    for (double x_density : {0.0, 0.02, 0.9}) {
      auto x = random_input(400, x_density, 1401);
      auto want = dense_product(c, x);
      for (int call = 0; call < 3; ++call) {
        std::vector<float> y(4100, -7.0f);
        sparse_matvec(pool, m, x.data(), y.data(), ws, SpmvScheme::columns);
        expect_close(y, want,
                     "threads " + std::to_string(threads) + " x density " + std::to_string(x_density));
      }
    }
  }
}

TEST(SparseKernels, CapSelectsLowerIsas) {
  EXPECT_EQ(sparse_kernels_for(Isa::scalar).isa, Isa::scalar);
  EXPECT_LE(sparse_kernels_for(Isa::avx512).isa, best_supported_isa());
}

}  // namespace
}  // namespace sparrow
