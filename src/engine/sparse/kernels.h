// Sparse kernels of the engine. One list drives declarations, dispatch, tests and benchmarks:
// every kernel has a scalar reference (`__ref`) and AVX2 / AVX-512 variants, each compiled in its
// own translation unit with its own flags. The variant is chosen once at start-up from the CPU's
// features, capped by SPARROW_MAX_ISA=scalar|avx2|avx512.
//
// spmv_csc: y[local rows] = sum over the listed active columns j of codebook[code] * x[j], for one
//   CSC partition (EIE: only the columns of non-zero inputs are walked). y is overwritten, or
//   added to when the arguments say accumulate (so do the one-sample kernels below).
// spmv_banded: the same product over the banded CSC (16-entry codebook): y[rows] is overwritten;
//   band by band, the entries of each active column are added at their rows.
// spmv_tiles: the same product over the column tiles (16-entry codebook): y[rows] is overwritten;
//   per active column, every 16-row tile of y gets codebook[codes] * x[j] at its mask's rows.
// spmv_rows_sliced: y[r] = W x for the rows r of slices [slice_begin, slice_end) of the sliced
//   rows, every row walked (no active list: zero inputs are multiplied like the others). Those y
//   rows are overwritten, no others touched.
// list_nonzero: EIE's leading non-zero detection. Writes the indices j of x[0:n] with x[j] != 0
//   (NaN counts as non-zero, -0 as zero) in increasing order to active[0:count] and sets *count.
//   active must hold n values; nothing past active[n - 1] is written.
// spmm_csr: Y[r, 0:batch] = sum over the entries of rows [row_begin, row_end) of codebook[code] *
//   Xt[col, 0:batch], with Xt the inputs laid out [cols, ldx] and Y [rows, ldy], then the
//   epilogue (RowEpilogue). Y rows are overwritten. Column blocks are walked one after the other, so each
//   block of Xt is reused from cache by every row.
// spmm_row_blocks: the same product over the row blocks (kBlockRows rows at a time, each row of Xt
//   loaded once for the four): row_begin is a multiple of kBlockRows, row_end one too or the
//   matrix's rows. Zero weights inside a block are multiplied like the others (an infinite or NaN
//   input there gives NaN in that row, as a dense product would).
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "engine/sparse/isa.h"
#include "engine/sparse/plane_window.h"
#include "engine/sparse/sparse_matrix.h"

namespace sparrow {

struct SpmvArgs {
  const CscPartition* part;
  const float* codebook;  // 16 or 256 entries
  bool small_codebook;    // 16 entries (codes < 16)
  const int32_t* active;  // indices of non-zero inputs
  int64_t n_active;
  const float* x;
  float* y;                 // part->local_rows values
  bool accumulate = false;  // add to y instead of overwriting it
};

// What a batched product applies to each row r it writes as it stores the row's sums the last
// time: y = clamp(y + bias[r], lo, hi), no bias when null (bias is indexed by matrix row), and no
// clamp when lo = -inf and hi = inf; else the clamp as a fused Relu/Clip takes it (NaN becomes lo).
// The same floats as BiasActivationArgs over the stored product.
struct RowEpilogue {
  const float* bias = nullptr;
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
  bool clamps() const {
    return lo != -std::numeric_limits<float>::infinity() || hi != std::numeric_limits<float>::infinity();
  }
  bool none() const { return bias == nullptr && !clamps(); }
  // One value of row r, as the vector variants compute it lane by lane.
  float operator()(float v, int64_t r) const {
    if (bias) v += bias[r];
    if (!clamps()) return v;
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
  }
};

struct SpmmArgs {
  const SparseMatrix* m;
  int64_t row_begin, row_end;
  const float* xt;  // [cols, ldx]
  int64_t ldx;
  int64_t batch;  // columns of Xt/Y used, <= ldx
  float* y;       // [rows, ldy]
  int64_t ldy;
  // Where given, the row of X that matrix column j multiplies starts at xt + x_rows[j] instead of
  // xt + j * ldx: rows may overlap, as the shifted views of a padded input plane that a stride-1
  // convolution's (channel, tap) columns read in place of an im2col matrix.
  const int64_t* x_rows = nullptr;
  RowEpilogue epilogue;  // applied to rows [row_begin, row_end) of Y
};

// One sample over a layout built for one partition and a 16-entry codebook (banded CSC, tiles).
template <class Layout>
struct SpmvLayoutArgs {
  const Layout* layout;
  int64_t rows;
  const float* codebook;  // 16 entries, entry 0 == 0
  const int32_t* active;  // indices of non-zero inputs
  int64_t n_active;
  const float* x;
  float* y;                 // rows values
  bool accumulate = false;  // add to y instead of overwriting it
};
using SpmvBandArgs = SpmvLayoutArgs<BandedCsc>;
using SpmvTileArgs = SpmvLayoutArgs<ColumnTiles>;

struct SpmvRowArgs {
  const SlicedRows* layout;
  const float* codebook;  // 16 entries, or 256 for a wider codebook (code_bits 5 or 8); entry 0 == 0
  const float* x;         // all inputs
  int64_t slice_begin, slice_end;
  float* y;  // [rows]: the slices' rows written
  // When set, slice s's sums go to y_sorted[16 s + lane] (the rows' sorted positions, so threads
  // walking other slices never write the same cache line) instead of to y.
  float* y_sorted = nullptr;
};

// One depthwise convolution output plane: y[out_h, out_w] = clamp(bias + the window of w slid over
// the input plane x[in_h, in_w] with win's strides, dilations and zero padding, lo, hi), the
// clamp as a fused Relu/Clip applies it (NaN becomes lo). scratch holds
// depthwise_scratch_floats(*win) floats.
struct DepthwiseArgs {
  const float* x;
  const float* w;  // [k_h, k_w]
  float bias;
  const Window2d* win;
  float lo, hi;
  float* scratch;
  float* y;
};

// Whether depthwise_plane of `isa` runs `w` with 16 output columns to a vector straight over the
// unpadded plane, a row's last, partial vector and the padding under lane masks (AVX-512: 3x3,
// undilated, stride 1 or 2); small planes then gain nothing from depthwise_lanes.
inline bool depthwise_plane_masked(Isa isa, const Window2d& w) {
  return isa == Isa::avx512 && w.k_h == 3 && w.k_w == 3 && w.d_h == 1 && w.d_w == 1 && w.s_h == w.s_w &&
         (w.s_w == 1 || w.s_w == 2);
}

// Depthwise convolution of kDepthwiseLanes channels at once, the channels in vector lanes: x is
// their input planes interleaved, x[p * kDepthwiseLanes + c] = channel c at position p of
// [in_h, in_w]; w is [kDepthwiseLanes, k_h * k_w] (ONNX's order), bias [kDepthwiseLanes] or null;
// y[q * kDepthwiseLanes + c] = clamp(bias[c] + channel c's window at output position q of
// [out_h, out_w], lo, hi), the clamp as in DepthwiseArgs. Any window (strides, dilations, zero
// padding). scratch holds depthwise_lanes_scratch_floats(*win) floats.
struct DepthwiseLanesArgs {
  const float* x;
  const float* w;
  const float* bias;
  const Window2d* win;
  float lo, hi;
  float* scratch;
  float* y;
};

// One MaxPool plane: y[out_h, out_w] = the max over each window of x[in_h, in_w] (padding never
// wins; NaN does). With nan_free the caller promises x holds no NaN, and the kernel skips what
// would propagate one (y is unspecified where x does hold NaN).
struct MaxPoolArgs {
  const float* x;
  const Window2d* win;
  float* y;
  bool nan_free = false;
};

// y[i] = act(x[i] + bias) for i in [0, n), act the fused activation (epilogue.h) with bounds lo, hi:
// NaN becomes lo unless there is no activation (lo = -inf, hi = inf), which leaves x[i] + bias as
// it is; the same for `rows` rows of n, row r at x + r * ldx and y + r * ldy (a convolution's
// output plane from its padded-width product). y may be x (with ldy = ldx). With a residual (a
// fused Add, laid out as y: row r at residual + r * ldy), y[i] = act((x[i] + bias) + residual[i]);
// it must not overlap y unless it is y itself.
// The bias that adds nothing: x + -0.0 is x for every x, -0.0 included (+0.0 would turn -0.0 into +0.0).
inline constexpr float kNoBias = -0.0f;
struct BiasActivationArgs {
  const float* x;
  int64_t n;
  float bias;
  float lo, hi;
  float* y;
  int64_t rows = 1;
  int64_t ldx = 0, ldy = 0;
  const float* residual = nullptr;
};

// One softmax row: y[i] = e^(x[i] - m) / sum_j e^(x[j] - m), m the row's largest value, or with
// `log` y[i] = x[i] - m - ln(sum_j e^(x[j] - m)). A NaN (or an infinity that makes x[i] - m NaN)
// makes the whole row NaN. y may be x.
struct SoftmaxRowArgs {
  const float* x;
  int64_t n;
  bool log;
  float* y;
};

// One layer-normalization row: y[i] = (x[i] - mean) / sqrt(var + epsilon) * scale[i] + bias[i], mean
// and var (biased) over the row's n values; scale or bias null: 1 or 0. y may be x.
struct LayerNormRowArgs {
  const float* x;
  int64_t n;
  const float* scale;
  const float* bias;
  float epsilon;
  float* y;
};

// dst[c * rows + r] = src[r * cols + c] (or += with `add`) for rows [row_begin, row_end) of
// src[rows, cols]: the batched products take their inputs and give their outputs with the batch
// along rows.
struct TransposeArgs {
  const float* src;
  int64_t rows, cols;
  int64_t row_begin, row_end;
  float* dst;
  bool add;
};

// One step of an LSTM cell (ONNX's default activations: sigmoid, tanh, tanh) for one sample: from
// gates[4H] (order i, o, f, c; input and recurrent products and biases already summed) and the cell
// state c[H], writes the new c and h[H]. peephole (or null) is [3H] in order i, o, f; clip > 0
// clamps the gates' inputs.
struct LstmCellArgs {
  const float* gates;
  const float* peephole;
  float clip;
  int64_t hidden;
  float* c;
  float* h;
};

// y[i] = sigmoid(x[i]) or tanh(x[i]) for i in [0, n), as the LSTM cell computes them: a few float
// ulps from the exact values, NaN stays NaN, tanh(+-inf) = +-1, sigmoid(+inf) = 1 and sigmoid(x)
// about 6e-39 for x <= -88 (where the exact value is smaller still). y may be x.
enum class SmoothActivation { sigmoid, tanh };
struct SmoothActivationArgs {
  const float* x;
  int64_t n;
  SmoothActivation f;
  float* y;
};

struct NonzeroArgs {
  const float* x;
  int64_t n;
  int32_t* active;  // room for n indices
  int64_t* count;   // out: number of indices written
};

using SpmvFn = void (*)(const SpmvArgs&);
using SpmmFn = void (*)(const SpmmArgs&);

// The kernel list: name and argument type. It generates the per-ISA declarations below, the
// dispatch table, and the tests and benchmarks that iterate over every variant.
#define SPARROW_SPARSE_KERNELS(X)        \
  X(list_nonzero, NonzeroArgs)           \
  X(spmv_csc_e8, SpmvArgs)               \
  X(spmv_csc_e16, SpmvArgs)              \
  X(spmv_banded, SpmvBandArgs)           \
  X(spmv_tiles, SpmvTileArgs)            \
  X(spmv_rows_sliced, SpmvRowArgs)       \
  X(spmm_csr_e8, SpmmArgs)               \
  X(spmm_csr_e16, SpmmArgs)              \
  X(spmm_row_blocks, SpmmArgs)           \
  X(depthwise_plane, DepthwiseArgs)      \
  X(depthwise_lanes, DepthwiseLanesArgs) \
  X(max_pool_plane, MaxPoolArgs)         \
  X(bias_activation, BiasActivationArgs) \
  X(softmax_row, SoftmaxRowArgs)         \
  X(layer_norm_row, LayerNormRowArgs)    \
  X(transpose, TransposeArgs)            \
  X(lstm_cell, LstmCellArgs)             \
  X(smooth_activation, SmoothActivationArgs)

namespace kernels {
#define SPARROW_DECLARE_VARIANTS(name, args) \
  void name##__ref(const args& a);           \
  void name##__avx2(const args& a);          \
  void name##__avx512(const args& a);
SPARROW_SPARSE_KERNELS(SPARROW_DECLARE_VARIANTS)
#undef SPARROW_DECLARE_VARIANTS
}  // namespace kernels

struct SparseKernels {
  Isa isa = Isa::scalar;
#define SPARROW_KERNEL_FIELD(name, args) void (*name)(const args&) = nullptr;
  SPARROW_SPARSE_KERNELS(SPARROW_KERNEL_FIELD)
#undef SPARROW_KERNEL_FIELD
};

// The batched kernel for m's CSR entry width.
inline SpmmFn spmm_csr_of(const SparseKernels& k, const SparseMatrix& m) {
  return m.csr_entry_bits == 8 ? k.spmm_csr_e8 : k.spmm_csr_e16;
}

// How the AVX-512 CSC and banded CSC walks add their 16 decoded updates into y: one gather and one
// vpscatterdd, or 16 scalar fused multiply-adds (the same rounding). AMD's Zen 4 and Zen 5 run
// vpscatterdd several times slower than as many stores, Intel's cores do not (docs/engine.md,
// "Scatter on AMD"). Chosen once from the CPU's vendor, overridden by
// SPARROW_SCATTER=hardware|scalar; tests and benchmarks set it to cover both.
enum class ScatterMode { hardware, scalar };
ScatterMode avx512_scatter();
void set_avx512_scatter(ScatterMode mode);
const char* scatter_mode_name(ScatterMode mode);

// The kernels for one ISA (falls back to lower ISAs the CPU or build lacks).
SparseKernels sparse_kernels_for(Isa isa);
// The best ISA this CPU supports, capped by SPARROW_MAX_ISA; chosen once and logged at info level.
const SparseKernels& sparse_kernels();
Isa best_supported_isa();

}  // namespace sparrow
