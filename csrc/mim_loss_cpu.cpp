// Native CPU kernels of SimMIM's masked L1 loss with KAMIM's weights, and its backward.
//
// CPU implementations of these kamim_fast_cpp ops (the schemas of the public ops of the same name, defined from
// Python: kamim_fast/_ext.py). Their semantics are the torch branches of the public kamim_fast:: ops:
//   weighted_mim_loss          -> (loss, signs)            == weighted_masked_l1
//   fast_weighted_mim_loss     -> (loss, weights, signs)   == fast_weighted_masked_l1
//   weighted_mim_loss_backward -> (grad_pred, grad_target) == weighted_masked_l1_backward
//
// Design (the Triton kernels', kamim_fast/kernels/mim_loss.py, on a CPU):
// - Tiles are (image, band of rows); the band height depends on the shape only (never on the thread
//   count). The threads of parallel_for claim tiles from a shared counter; each tile writes its own partial (the masked
//   |pred - target| sum, or per weight cell for the fused path) and the partials are summed in tile
//   order afterwards: the loss is bitwise the same for any number of threads, with no atomics.
// - One pass over pred and target: per row and channel, |pred - target| is added into a float row
//   accumulator and the 2-bit codes of sign(pred - target) are written (1 positive, 2 negative, 0 zero or
//   NaN, four per byte; kamim_fast/ops/weighted_mim_loss.py's SIGN_CODES). Every 8 rows the float accumulator
//   is flushed into a double one, and per band of rows sharing a mask cell row and a weight cell row the columns are
//   reduced per gcd(patch_size, weight_patch_size) segment and multiplied by the mask (and the weight).
// - The fused path calls kamim_fast::cpu::cell_cover (fast_cpu.h) on the same tile first: gray -> FAST
//   -> NMS -> rings -> covered pixels per weight cell, while the tile's target rows are in cache. The
//   epilogue is density_to_weights (weights_cpu.h), torch's own kernels (bit-exact with torch's exp).
// - The backward reads the sign codes only: grad = ((m * scale) * w) * sign, the reference's order of
//   float operations, so it is bitwise the reference's gradient.
// - SIMD: the row kernels have an AVX2+F16C version (__attribute__((target)), chosen at run time with
//   __builtin_cpu_supports) and a portable one; KAMIM_FAST_CPU_ISA=portable (or sse2) forces the portable one.
//   No -march flags: the shipped library runs on any x86-64 (and builds elsewhere without the AVX2 code).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define KAMIM_X86 1
#else
#define KAMIM_X86 0
#endif

#include "fast_cpu.h"
#include "torch_stable.h"
#include "weights_cpu.h"

namespace kamim_fast_cpp {
namespace {

using kamim_fast::stable::ScalarType;
using kamim_fast::stable::Tensor;
using Half = kamim_fast::stable::Half;
using BFloat16 = kamim_fast::stable::BFloat16;

// --- Row kernels -------------------------------------------------------------------------------------

inline float to_float(float v) { return v; }
inline float to_float(Half v) { return static_cast<float>(v); }
inline float to_float(BFloat16 v) { return static_cast<float>(v); }

// kSpread.v[m]: bit i of m moved to bit 2i (eight 1-bit flags -> eight 2-bit code slots).
struct Spread {
  uint16_t v[256];
  constexpr Spread() : v{} {
    for (int i = 0; i < 256; ++i) {
      uint16_t r = 0;
      for (int b = 0; b < 8; ++b)
        if ((i >> b) & 1) r = static_cast<uint16_t>(r | (1u << (2 * b)));
      v[i] = r;
    }
  }
};
constexpr Spread kSpread;

inline uint8_t sign_code(float d) { return static_cast<uint8_t>((d > 0.f ? 1 : 0) | (d < 0.f ? 2 : 0)); }

// acc[x] += |p[x] - t[x]| for x < W; signs[x / 4] gets the codes of the row (W starts at a byte boundary).
template <class P, class T>
void l1_row_generic(const P* p, const T* t, int64_t W, float* acc, uint8_t* signs) {
  for (int64_t x0 = 0; x0 < W; x0 += 4) {
    const int64_t n = std::min<int64_t>(4, W - x0);
    unsigned code = 0;
    for (int64_t k = 0; k < n; ++k) {
      const float d = to_float(p[x0 + k]) - to_float(t[x0 + k]);
      acc[x0 + k] += std::fabs(d);
      code |= static_cast<unsigned>(sign_code(d)) << (2 * k);
    }
    signs[x0 / 4] = static_cast<uint8_t>(code);
  }
}

// out[x] = O(g), g = coef[x] * sign(code x) (negated when `negate`): the reference's float product, then
// the reference's cast (c10's round to nearest even; bfloat16 NaN -> 0x7FC0 as c10's scalar conversion).
template <class O>
void grad_row_generic(const uint8_t* signs, const float* coef, int64_t W, O* out, bool negate) {
  for (int64_t x = 0; x < W; ++x) {
    const unsigned code = (signs[x >> 2] >> (2 * (x & 3))) & 3u;
    const float s = code == 1 ? 1.f : (code == 2 ? -1.f : 0.f);
    const float g = coef[x] * s;
    out[x] = static_cast<O>(negate ? -g : g);
  }
}

#if KAMIM_X86
#define KAMIM_AVX2 __attribute__((target("avx2,f16c")))

KAMIM_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
KAMIM_AVX2 inline __m256 load8(const BFloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
KAMIM_AVX2 inline __m256 load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

template <class P, class T>
KAMIM_AVX2 void l1_row_avx2(const P* p, const T* t, int64_t W, float* acc, uint8_t* signs) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int64_t x = 0;
  for (; x + 8 <= W; x += 8) {
    const __m256 d = _mm256_sub_ps(load8(p + x), load8(t + x));
    _mm256_storeu_ps(acc + x, _mm256_add_ps(_mm256_loadu_ps(acc + x), _mm256_and_ps(d, abs_mask)));
    const int gt = _mm256_movemask_ps(_mm256_cmp_ps(d, zero, _CMP_GT_OQ));  // NaN: neither
    const int lt = _mm256_movemask_ps(_mm256_cmp_ps(d, zero, _CMP_LT_OQ));
    const uint16_t code = static_cast<uint16_t>(kSpread.v[gt] | (kSpread.v[lt] << 1));
    std::memcpy(signs + x / 4, &code, 2);  // little endian: pixels x..x+3 in the first byte
  }
  if (x < W) l1_row_generic(p + x, t + x, W - x, acc + x, signs + x / 4);
}

KAMIM_AVX2 inline void store8(float* out, __m256 g) { _mm256_storeu_ps(out, g); }
KAMIM_AVX2 inline void store8(Half* out, __m256 g) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_cvtps_ph(g, _MM_FROUND_TO_NEAREST_INT));
}
KAMIM_AVX2 inline void store8(BFloat16* out, __m256 g) {
  const __m256i u = _mm256_castps_si256(g);
  const __m256i bias = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)),
                                        _mm256_set1_epi32(0x7fff));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(g, g, _CMP_UNORD_Q));
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // qwords 0, 2
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(packed));
}

template <class O>
KAMIM_AVX2 void grad_row_avx2(const uint8_t* signs, const float* coef, int64_t W, O* out, bool negate) {
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i three = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
  const __m256 plus = _mm256_set1_ps(1.f), minus = _mm256_set1_ps(-1.f);
  const __m256 flip = negate ? _mm256_set1_ps(-0.f) : _mm256_setzero_ps();
  int64_t x = 0;
  for (; x + 8 <= W; x += 8) {
    uint16_t bits;
    std::memcpy(&bits, signs + x / 4, 2);
    const __m256i code = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(bits), shifts), three);
    const __m256 s = _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(code, one)), plus),
                                  _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(code, two)), minus));
    store8(out + x, _mm256_xor_ps(_mm256_mul_ps(_mm256_loadu_ps(coef + x), s), flip));
  }
  if (x < W) grad_row_generic(signs + x / 4, coef + x, W - x, out + x, negate);
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

// The AVX2 kernels unless the CPU lacks them or KAMIM_FAST_CPU_ISA (fast_cpu.cpp's knob) is portable or sse2.
// Read per call, so that tests can compare both paths in one process (fast_cpu.cpp reads it once).
bool use_avx2() {
#if KAMIM_X86
  const char* isa = std::getenv("KAMIM_FAST_CPU_ISA");
  const bool portable = isa && (std::strcmp(isa, "portable") == 0 || std::strcmp(isa, "sse2") == 0);
  return cpu_has_avx2() && !portable;
#else
  return false;
#endif
}

template <class P, class T>
void l1_row(bool avx2, const P* p, const T* t, int64_t W, float* acc, uint8_t* signs) {
#if KAMIM_X86
  if (avx2) return l1_row_avx2(p, t, W, acc, signs);
#endif
  (void)avx2;
  l1_row_generic(p, t, W, acc, signs);
}

template <class O>
void grad_row(bool avx2, const uint8_t* signs, const float* coef, int64_t W, O* out, bool negate) {
#if KAMIM_X86
  if constexpr (!std::is_same_v<O, double>) {
    if (avx2) return grad_row_avx2(signs, coef, W, out, negate);
  }
#endif
  (void)avx2;
  grad_row_generic(signs, coef, W, out, negate);
}

// --- Checks of the kernels' invariants (the op boundary checks the arguments first) -------------------

bool is_loss_dtype(ScalarType t) { return t == ScalarType::Float || t == ScalarType::Half || t == ScalarType::BFloat16; }

bool same_sizes(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) != b.size(d)) return false;
  return true;
}

void check_pred_target(const Tensor& pred, const Tensor& target) {
  KF_CHECK_VALUE(pred.dim() == 4, "pred must be (B, C, H, W), got shape ", kamim_fast::stable::shape(pred));
  KF_CHECK_VALUE(pred.is_cpu(), "pred must be a CPU tensor for the native CPU kernel");
  KF_CHECK(is_loss_dtype(pred.scalar_type()),
           "pred must be float32, float16 or bfloat16 (float64 takes the PyTorch reference), got ", pred.scalar_type());
  KF_CHECK_VALUE(same_sizes(target, pred), "target must have pred's shape ", kamim_fast::stable::shape(pred),
                 ", got ", kamim_fast::stable::shape(target));
  KF_CHECK_VALUE(target.is_cpu(), "target must be a CPU tensor like pred");
  KF_CHECK(is_loss_dtype(target.scalar_type()),
           "target must be float32, float16 or bfloat16 (float64 takes the PyTorch reference), got ",
           target.scalar_type());
}

void check_grid(const char* name, const Tensor& grid, int64_t B, int64_t H, int64_t W, int64_t patch,
                const char* patch_name) {
  kamim_fast::cpu::check_patch(patch, H, W, patch_name, "pred");
  KF_CHECK(grid.scalar_type() == ScalarType::Float, name, " must be float32, got ", grid.scalar_type());
  KF_CHECK_VALUE(grid.is_cpu(), name, " must be a CPU tensor");
  const bool ok = grid.dim() == 3 && grid.size(0) == B && grid.size(1) == H / patch && grid.size(2) == W / patch;
  KF_CHECK_VALUE(ok, name, " must be (B, H/", patch_name, ", W/", patch_name, ") = [", B, ", ", H / patch, ", ",
                 W / patch, "], got ", kamim_fast::stable::shape(grid));
}

// The mask grid and the optional weight grid, checked against a (B, C, H, W) batch and made contiguous
// (an undefined tensor without weights).
std::pair<Tensor, Tensor> checked_grids(const Tensor& mask_grid, const std::optional<Tensor>& weights, int64_t B,
                                        int64_t H, int64_t W, int64_t patch_size, int64_t weight_patch_size) {
  check_grid("mask_grid", mask_grid, B, H, W, patch_size, "patch_size");
  Tensor w;  // undefined without weights
  if (weights.has_value()) {
    check_grid("weights", *weights, B, H, W, weight_patch_size, "weight_patch_size");
    w = torch::stable::contiguous(*weights);
  }
  return {torch::stable::contiguous(mask_grid), w};
}

// --- The forward: tiles of one image's rows ---------------------------------------------------------

struct Grids {
  int64_t B = 0, C = 0, H = 0, W = 0, W4 = 0;
  int64_t patch_size = 1, weight_patch_size = 1;  // the mask's and the weights' cells
  int64_t seg = 1;                                 // gcd of the cells that split the columns
  const float* mask = nullptr;                     // contiguous (B, H/patch_size, W/patch_size)
  const float* weights = nullptr;                  // contiguous (B, H/weight_patch_size, W/weight_patch_size), or null
  uint8_t* signs = nullptr;                        // (B, C, H, W4)
};

constexpr int64_t kFlushRows = 8;  // float accumulation over at most this many rows (x C channels)

// Per-thread scratch, sized once per chunk of tiles.
struct Scratch {
  std::vector<float> acc;
  std::vector<double> dacc;
  std::vector<char> pbuf, tbuf;  // rows of pred/target gathered when their last stride is not 1
};

// The masked |pred - target| of rows [y0, y1) of image b (y0, y1 multiples of g.seg). Adds, per
// segment of g.seg columns, m * sum|d| times the weight into `*partial`, or, with `cells`, into the
// double per-weight-cell sums cells[(b * H/wp + y/wp) * W/wp + x/wp]. Writes the rows' sign codes.
template <class P, class T>
void l1_tile(const Grids& g, const P* pred, const T* target, const int64_t* ps, const int64_t* ts, int64_t b,
             int64_t y0, int64_t y1, bool avx2, Scratch& s, double* partial, double* cells) {
  const int64_t W = g.W, C = g.C, seg = g.seg;
  s.acc.resize(W);
  s.dacc.resize(W);
  const bool p_rows = ps[3] == 1, t_rows = ts[3] == 1;
  if (!p_rows) s.pbuf.resize(W * sizeof(P));
  if (!t_rows) s.tbuf.resize(W * sizeof(T));
  const int64_t mw = W / g.patch_size, ww = W / g.weight_patch_size;
  double total = 0.0;
  for (int64_t ys = y0; ys < y1; ys += seg) {
    std::fill(s.dacc.begin(), s.dacc.end(), 0.0);
    for (int64_t yr = ys; yr < ys + seg; yr += kFlushRows) {
      std::fill(s.acc.begin(), s.acc.end(), 0.f);
      for (int64_t y = yr; y < std::min(yr + kFlushRows, ys + seg); ++y)
        for (int64_t c = 0; c < C; ++c) {
          const P* prow = pred + b * ps[0] + c * ps[1] + y * ps[2];
          const T* trow = target + b * ts[0] + c * ts[1] + y * ts[2];
          if (!p_rows) {
            P* buf = reinterpret_cast<P*>(s.pbuf.data());
            for (int64_t x = 0; x < W; ++x) buf[x] = prow[x * ps[3]];
            prow = buf;
          }
          if (!t_rows) {
            T* buf = reinterpret_cast<T*>(s.tbuf.data());
            for (int64_t x = 0; x < W; ++x) buf[x] = trow[x * ts[3]];
            trow = buf;
          }
          l1_row(avx2, prow, trow, W, s.acc.data(), g.signs + ((b * C + c) * g.H + y) * g.W4);
        }
      for (int64_t x = 0; x < W; ++x) s.dacc[x] += static_cast<double>(s.acc[x]);
    }
    const float* mrow = g.mask + (b * (g.H / g.patch_size) + ys / g.patch_size) * mw;
    const float* wrow =
        g.weights ? g.weights + (b * (g.H / g.weight_patch_size) + ys / g.weight_patch_size) * ww : nullptr;
    double* crow = cells ? cells + (b * (g.H / g.weight_patch_size) + ys / g.weight_patch_size) * ww : nullptr;
    for (int64_t x0 = 0; x0 < W; x0 += seg) {
      double sum = 0.0;
      for (int64_t x = x0; x < x0 + seg; ++x) sum += s.dacc[x];
      const double v = static_cast<double>(mrow[x0 / g.patch_size]) * sum;
      if (crow)
        crow[x0 / g.weight_patch_size] += v;
      else
        total += wrow ? v * static_cast<double>(wrow[x0 / g.weight_patch_size]) : v;
    }
  }
  if (partial) *partial = total;
}

// body(i, scratch) for every tile i in [0, tiles): the threads of parallel_for claim tiles one at a time
// from a shared counter, so a thread the OS deschedules does not hold back a fixed share of the work. Which
// thread runs a tile never matters: each tile writes only its own outputs and partials.
template <class MakeScratch, class Body>
void for_each_tile(int64_t tiles, MakeScratch make_scratch, Body body) {
  std::atomic<int64_t> next{0};
  torch::stable::parallel_for(0, tiles, 1, [&](int64_t, int64_t) {
    auto scratch = make_scratch();
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < tiles;
         i = next.fetch_add(1, std::memory_order_relaxed))
      body(i, scratch);
  });
}

// Band height of a tile: a multiple of `unit` near `rows`, independent of the thread count.
int64_t band_rows(int64_t unit, int64_t rows, int64_t H) {
  return std::max<int64_t>(unit, std::min<int64_t>(H, (rows + unit - 1) / unit * unit));
}

// sum(mask_grid) in a fixed order, as the float32 the reference's mask_grid.sum() gives (exactly for
// sums of integers below 2^24; within an ulp otherwise).
float mask_sum(const Tensor& mask) {
  const float* m = mask.const_data_ptr<float>();
  double s = 0.0;
  for (int64_t i = 0; i < mask.numel(); ++i) s += m[i];
  return static_cast<float>(s);
}

// _per_mask_pixel: total / (sum(m) * patch_size^2 + eps) / C in float32, the reference's operations.
float per_mask_pixel(float total, float msum, int64_t patch_size, double eps, int64_t C) {
  const float den = msum * static_cast<float>(patch_size * patch_size) + static_cast<float>(eps);
  return total / den / static_cast<float>(C);
}

template <class F>
void dispatch_pair(ScalarType pt, ScalarType tt, F&& f) {
  auto with_target = [&](auto p_tag) {
    using P = decltype(p_tag);
    switch (tt) {
      case ScalarType::Float: return f(P{}, float{});
      case ScalarType::Half: return f(P{}, Half{});
      case ScalarType::BFloat16: return f(P{}, BFloat16{});
      default: KF_CHECK(false, "target: unsupported dtype ", tt);
    }
  };
  switch (pt) {
    case ScalarType::Float: return with_target(float{});
    case ScalarType::Half: return with_target(Half{});
    case ScalarType::BFloat16: return with_target(BFloat16{});
    default: KF_CHECK(false, "pred: unsupported dtype ", pt);
  }
}

Tensor new_signs(const Tensor& pred) {
  return kamim_fast::stable::empty_like_device(pred, {pred.size(0), pred.size(1), pred.size(2), (pred.size(3) + 3) / 4},
                                               ScalarType::Byte);
}

// A float32 scalar tensor holding v (the loss).
Tensor scalar_f32(const Tensor& like, float v) {
  Tensor t = kamim_fast::stable::empty_like_device(like, {}, ScalarType::Float);
  *t.mutable_data_ptr<float>() = v;
  return t;
}

// Runs l1_tile over every (image, band) tile; per-tile partials (or per-cell sums) land in fixed slots.
// `before_l1(b, y0, y1)` runs first in the same tile (the fused path's FAST and rings).
template <class Before>
void run_tiles(const Tensor& pred, const Tensor& target, const Grids& g, int64_t band, std::vector<double>* partials,
               double* cells, Before&& before_l1) {
  const int64_t tiles_per_image = (g.H + band - 1) / band, tiles = g.B * tiles_per_image;
  if (partials) partials->assign(tiles, 0.0);
  const bool avx2 = use_avx2();
  const int64_t ps[4] = {pred.stride(0), pred.stride(1), pred.stride(2), pred.stride(3)};
  const int64_t ts[4] = {target.stride(0), target.stride(1), target.stride(2), target.stride(3)};
  dispatch_pair(pred.scalar_type(), target.scalar_type(), [&](auto p_tag, auto t_tag) {
    using P = decltype(p_tag);
    using T = decltype(t_tag);
    const P* p = reinterpret_cast<const P*>(pred.const_data_ptr());
    const T* t = reinterpret_cast<const T*>(target.const_data_ptr());
    for_each_tile(tiles, [] { return Scratch{}; }, [&](int64_t i, Scratch& s) {
      const int64_t b = i / tiles_per_image, y0 = (i % tiles_per_image) * band, y1 = std::min(y0 + band, g.H);
      before_l1(b, y0, y1);
      l1_tile(g, p, t, ps, ts, b, y0, y1, avx2, s, partials ? partials->data() + i : nullptr, cells);
    });
  });
}

Grids make_grids(const Tensor& pred, const Tensor& mask, const Tensor* weights, int64_t patch_size,
                 int64_t weight_patch_size, Tensor& signs) {
  Grids g;
  g.B = pred.size(0), g.C = pred.size(1), g.H = pred.size(2), g.W = pred.size(3), g.W4 = (g.W + 3) / 4;
  g.patch_size = patch_size;
  g.weight_patch_size = weight_patch_size;
  g.seg = std::gcd(patch_size, weight_patch_size);
  g.mask = mask.const_data_ptr<float>();
  g.weights = weights ? weights->const_data_ptr<float>() : nullptr;
  g.signs = signs.mutable_data_ptr<uint8_t>();
  return g;
}

constexpr int64_t kBandRows = 32;       // rows per tile of the plain loss
constexpr int64_t kFusedBandRows = 128;  // rows per tile of the fused loss: FAST's 8-row halos cost 6-12%

std::tuple<Tensor, Tensor> weighted_mim_loss_cpu(const Tensor& pred, const Tensor& target, const Tensor& mask_grid,
                                                 const std::optional<Tensor>& weights, int64_t patch_size,
                                                 int64_t weight_patch_size, double eps) {
  check_pred_target(pred, target);
  const int64_t B = pred.size(0), C = pred.size(1), H = pred.size(2), W = pred.size(3);
  const auto [mask, w] = checked_grids(mask_grid, weights, B, H, W, patch_size, weight_patch_size);
  Tensor signs = new_signs(pred);
  // Without weights, weight_patch_size plays no part (the Python side passes 1): mask cells split the columns.
  const Grids g = make_grids(pred, mask, w.defined() ? &w : nullptr, patch_size,
                             w.defined() ? weight_patch_size : patch_size, signs);
  std::vector<double> partials;
  if (B * C * H * W > 0)
    run_tiles(pred, target, g, band_rows(g.seg, kBandRows, H), &partials, nullptr, [](int64_t, int64_t, int64_t) {});
  double total = 0.0;
  for (double v : partials) total += v;  // tile order: independent of the thread count
  const float loss = per_mask_pixel(static_cast<float>(total), mask_sum(mask), patch_size, eps, C);
  return {scalar_f32(pred, loss), signs};
}

kamim_fast::cpu::ColourDtype colour_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return kamim_fast::cpu::ColourDtype::kF32;
    case ScalarType::Half: return kamim_fast::cpu::ColourDtype::kF16;
    case ScalarType::BFloat16: return kamim_fast::cpu::ColourDtype::kBF16;
    default: KF_CHECK(false, "target: unsupported dtype ", t);
  }
  return kamim_fast::cpu::ColourDtype::kF32;
}

std::tuple<Tensor, Tensor, Tensor> fast_weighted_mim_loss_cpu(
    const Tensor& pred, const Tensor& target, const Tensor& mask_grid, int64_t patch_size, int64_t weight_patch_size,
    double temperature, int64_t threshold, std::string density, std::string channel_order, std::vector<double> mean,
    std::vector<double> std, double eps) {
  const bool ring = kamim_fast::cpu::ring_density(density);
  const bool bgr = kamim_fast::cpu::bgr_order(channel_order);
  check_pred_target(pred, target);
  const int64_t B = pred.size(0), C = pred.size(1), H = pred.size(2), W = pred.size(3);
  KF_CHECK_VALUE(C == 3, "target must be RGB (B, 3, H, W) for FAST weights, got shape ",
                 kamim_fast::stable::shape(target));
  check_grid("mask_grid", mask_grid, B, H, W, patch_size, "patch_size");
  kamim_fast::cpu::check_patch(weight_patch_size, H, W, "weight_patch_size", "pred");
  KF_CHECK_VALUE(mean.size() == 3, "mean must hold 3 values (one per channel), got ", mean.size());
  KF_CHECK_VALUE(std.size() == 3, "std must hold 3 values (one per channel), got ", std.size());
  const Tensor mask = torch::stable::contiguous(mask_grid);
  Tensor signs = new_signs(pred);
  const int64_t hw = H / weight_patch_size, ww = W / weight_patch_size;
  Tensor cover = kamim_fast::stable::empty_like_device(pred, {B, hw, ww}, ScalarType::Int);
  std::vector<double> cells(B * hw * ww, 0.0);
  const Grids g = make_grids(pred, mask, nullptr, patch_size, weight_patch_size, signs);

  kamim_fast::cpu::ColourImage base{};
  base.dtype = colour_dtype(target.scalar_type());
  base.stride_c = target.stride(1), base.stride_h = target.stride(2), base.stride_w = target.stride(3);
  base.H = H, base.W = W, base.bgr = bgr;
  for (int c = 0; c < 3; ++c) base.mean[c] = static_cast<float>(mean[c]), base.std[c] = static_cast<float>(std[c]);
  const char* tbytes = static_cast<const char*>(target.const_data_ptr());
  const int64_t tb = target.stride(0) * static_cast<int64_t>(target.element_size());
  int32_t* cov = cover.mutable_data_ptr<int32_t>();

  if (B * H * W > 0)
    run_tiles(pred, target, g, band_rows(weight_patch_size, kFusedBandRows, H), nullptr, cells.data(),
              [&](int64_t b, int64_t y0, int64_t y1) {
                kamim_fast::cpu::ColourImage img = base;
                img.data = tbytes + b * tb;
                const int64_t cy0 = y0 / weight_patch_size, cy1 = y1 / weight_patch_size;
                kamim_fast::cpu::cell_cover(img, weight_patch_size, cy0, cy1, static_cast<int>(threshold), ring,
                                            cov + (b * hw + cy0) * ww);
              });

  // density_to_weights with torch's own kernels, so exp and the per-image min are torch's to the bit.
  Tensor weights;
  if (cover.numel() > 0) {
    const Tensor density_map = kamim_fast::stable::aten(
        "aten::div", "Tensor", torch::stable::to(cover, ScalarType::Float),
        kamim_fast::stable::scalar(static_cast<double>(weight_patch_size * weight_patch_size)));
    weights = kamim_fast::density_to_weights(density_map, temperature);
  } else {
    weights = kamim_fast::stable::empty_like_device(pred, {B, hw, ww}, ScalarType::Float);
  }
  const float* wp = weights.const_data_ptr<float>();
  double total = 0.0;
  for (int64_t i = 0; i < B * hw * ww; ++i) total += static_cast<double>(wp[i]) * cells[i];  // fixed order
  const float loss = per_mask_pixel(static_cast<float>(total), mask_sum(mask), patch_size, eps, C);
  return {scalar_f32(pred, loss), weights, signs};
}

// --- The backward from the sign codes ---------------------------------------------------------------

bool is_float_dtype(ScalarType t) { return is_loss_dtype(t) || t == ScalarType::Double; }

template <class F>
void dispatch_out(ScalarType t, F&& f) {
  switch (t) {
    case ScalarType::Float: return f(float{});
    case ScalarType::Half: return f(Half{});
    case ScalarType::BFloat16: return f(BFloat16{});
    case ScalarType::Double: return f(double{});
    default: KF_CHECK(false, "unsupported gradient dtype ", t);
  }
}

// The one value of a float tensor, as float32 (grad.to(float32).item()).
float item_f32(const Tensor& t) {
  const Tensor f = torch::stable::to(t, ScalarType::Float);
  return *f.const_data_ptr<float>();
}

std::tuple<Tensor, Tensor> weighted_mim_loss_backward_cpu(const Tensor& grad, const Tensor& signs,
                                                          const Tensor& mask_grid, const std::optional<Tensor>& weights,
                                                          int64_t patch_size, int64_t weight_patch_size, double eps,
                                                          int64_t W, ScalarType pred_dtype, ScalarType target_dtype,
                                                          bool grad_target) {
  KF_CHECK_VALUE(grad.numel() == 1, "grad must hold one value (the loss's gradient), got shape ",
                 kamim_fast::stable::shape(grad));
  KF_CHECK(kamim_fast::stable::is_float(grad.scalar_type()), "grad must be a float tensor, got ", grad.scalar_type());
  KF_CHECK_VALUE(signs.dim() == 4, "signs must be (B, C, H, ceil(W/4)), got shape ", kamim_fast::stable::shape(signs));
  KF_CHECK(signs.scalar_type() == ScalarType::Byte, "signs must be uint8, got ", signs.scalar_type());
  KF_CHECK_VALUE(signs.is_cpu(), "signs must be a CPU tensor for the native CPU kernel");
  KF_CHECK_VALUE(W >= 0 && (W + 3) / 4 == signs.size(3), "W=", W, " does not match signs of shape ",
                 kamim_fast::stable::shape(signs), " (ceil(W/4) bytes per row)");
  KF_CHECK(is_float_dtype(pred_dtype), "pred_dtype must be a float dtype, got ", pred_dtype);
  KF_CHECK(is_float_dtype(target_dtype), "target_dtype must be a float dtype, got ", target_dtype);
  const int64_t B = signs.size(0), C = signs.size(1), H = signs.size(2);
  const auto [mask, w] = checked_grids(mask_grid, weights, B, H, W, patch_size, weight_patch_size);
  const Tensor s = torch::stable::contiguous(signs);
  const float g0 = item_f32(grad);
  const float scale = per_mask_pixel(g0, mask_sum(mask), patch_size, eps, C);

  using kamim_fast::stable::empty_like_device;
  Tensor gp = empty_like_device(signs, {B, C, H, W}, pred_dtype);
  Tensor gt = empty_like_device(signs, grad_target ? std::vector<int64_t>{B, C, H, W} : std::vector<int64_t>{0},
                                target_dtype);
  if (B * C * H * W == 0) return {gp, gt};
  const int64_t wpatch = w.defined() ? weight_patch_size : patch_size, seg = std::gcd(patch_size, wpatch);
  const int64_t band = band_rows(seg, kBandRows, H), tiles_per_image = (H + band - 1) / band;
  const int64_t mw = W / patch_size, ww = W / wpatch, W4 = s.size(3);
  const float* m = mask.const_data_ptr<float>();
  const float* wt = w.defined() ? w.const_data_ptr<float>() : nullptr;
  const uint8_t* sp = s.const_data_ptr<uint8_t>();
  const bool avx2 = use_avx2();
  dispatch_out(pred_dtype, [&](auto p_tag) {
    dispatch_out(target_dtype, [&](auto t_tag) {
      using P = decltype(p_tag);
      using T = decltype(t_tag);
      P* op = reinterpret_cast<P*>(gp.mutable_data_ptr());
      T* ot = grad_target ? reinterpret_cast<T*>(gt.mutable_data_ptr()) : nullptr;
      for_each_tile(B * tiles_per_image, [W] { return std::vector<float>(W); }, [&](int64_t i, std::vector<float>& coef) {
        {
          const int64_t b = i / tiles_per_image, y0 = (i % tiles_per_image) * band, y1 = std::min(y0 + band, H);
          for (int64_t ys = y0; ys < y1; ys += seg) {
            // coef = (m * scale) * w per column: weighted_masked_l1_backward_ref's float operations
            const float* mrow = m + (b * (H / patch_size) + ys / patch_size) * mw;
            const float* wrow = wt ? wt + (b * (H / wpatch) + ys / wpatch) * ww : nullptr;
            for (int64_t x = 0; x < W; ++x) {
              const float c = mrow[x / patch_size] * scale;
              coef[x] = wrow ? c * wrow[x / wpatch] : c;
            }
            for (int64_t y = ys; y < ys + seg; ++y)
              for (int64_t c = 0; c < C; ++c) {
                const int64_t row = (b * C + c) * H + y;
                grad_row(avx2, sp + row * W4, coef.data(), W, op + row * W, false);
                if (ot) grad_row(avx2, sp + row * W4, coef.data(), W, ot + row * W, true);
              }
          }
        }
      });
    });
  });
  return {gp, gt};
}

}  // namespace
}  // namespace kamim_fast_cpp

STABLE_TORCH_LIBRARY_IMPL(kamim_fast_cpp, CPU, m) {
  m.impl("weighted_mim_loss", TORCH_BOX(&kamim_fast_cpp::weighted_mim_loss_cpu));
  m.impl("fast_weighted_mim_loss", TORCH_BOX(&kamim_fast_cpp::fast_weighted_mim_loss_cpu));
  m.impl("weighted_mim_loss_backward", TORCH_BOX(&kamim_fast_cpp::weighted_mim_loss_backward_cpu));
}
