// Native CPU FAST, gray, keypoint density and KAMIM weights, bit-exact with OpenCV and with the PyTorch references
// (kamim_fast/ops/rgb_to_gray_u8.py, fast_corners.py, keypoint_density.py, patch_weights.py).
//
// - fast_cpu.h: the torch-free interface (gray_rows, cell_cover) that the fused CPU loss also uses.
// - fast_cpu_simd.h: the vector kernels, compiled here once per instruction set (portable/SSE2, AVX2,
//   AVX-512BW) and chosen at run time (`kernels()`; KAMIM_FAST_CPU_ISA=portable|sse2|avx2|avx512 forces one).
// - The CPU implementations of `kamim_fast_cpp::{rgb_to_gray_u8, fast_corners, keypoint_density, patch_weights}`
//   (the schemas of the public ops of the same name, defined from Python: kamim_fast/_ext.py) and
//   `fast_cpu_isa`; parallel_for over (image, band of rows) work items of a fixed size, so the results do not
//   depend on the number of threads.

#include "fast_cpu.h"

#include "torch_stable.h"
#include "weights_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KF_X86 1
#include <immintrin.h>
#else
#define KF_X86 0
#endif

#include "opencv_constants.h"

namespace kamim_fast::cpu {
namespace {

// The ring of opencv_constants.h must be the dilations cover_from_bits builds (fast_cpu_simd.h).
constexpr bool ring_is_dilations() {
  for (int r = 0; r < 9; ++r)
    for (int c = 0; c < 9; ++c) {
      const int dy = r < 4 ? 4 - r : r - 4, dx = c < 4 ? 4 - c : c - 4;
      const bool want = dy == 4 ? dx <= 1 : dy == 3 ? dx <= 2 : dy == 2 ? dx <= 3 : (dx >= 2 && dx <= 4);
      if ((opencv::kDrawKeypointRing[r][c] == '#') != want) return false;
    }
  return opencv::kDrawKeypointRingRadius == 4;
}
static_assert(ring_is_dilations(), "cover_from_bits assumes drawKeypoints' ring of opencv_constants.h");
static_assert(opencv::kFastRadius == 3 && opencv::kFastArc == 9, "the kernels assume FAST-9/16 of radius 3");

// OpenCV's FAST score + 1 at a corner, else 0, one pixel at a time (narrow images; the vector code's twin).
inline int score_scalar(const uint8_t* const* r, int64_t x, int t) {
  const int c = r[3][x];
  int d[16 + 8];
  for (int k = 0; k < 16; ++k) d[k] = c - r[3 + opencv::kFastCircle[k][1]][x + opencv::kFastCircle[k][0]];
  for (int k = 0; k < 8; ++k) d[16 + k] = d[k];
  int A = -1024, B = 1024;
  for (int i = 0; i < 16; ++i) {
    int mn = d[i], mx = d[i];
    for (int j = 1; j < opencv::kFastArc; ++j) mn = std::min(mn, d[i + j]), mx = std::max(mx, d[i + j]);
    A = std::max(A, mn);
    B = std::min(B, mx);
  }
  const int e = std::max(A, -B);
  return e > t ? e : 0;
}

// round((x*std + mean)*255) clamped to [0, 255], NaN -> 0: three float32 roundings, as torch does them (no
// fused multiply-add: the vector copies that use this are compiled without FMA; see fast_cpu_simd.h).
inline int32_t unnormalise(float x, float s, float m) {
  float v = x * s;
#if defined(__FMA__) || !KF_X86
  __asm__("" : "+m"(v));  // keep the product rounded on its own where the compiler could fuse it
#endif
  v = (v + m) * 255.0f;
  v = v > 0.0f ? v : 0.0f;
  v = v < 255.0f ? v : 255.0f;
  return static_cast<int32_t>((v + 8388608.0f) - 8388608.0f);  // ties to even for 0 <= v < 2^23
}

}  // namespace
}  // namespace kamim_fast::cpu

// --- the vector kernels, once per instruction set --------------------------------------------------------
// The portable copy (no intrinsics) is what other architectures run; x86-64 builds it too, so the tests run
// it (KAMIM_FAST_CPU_ISA=portable).
#define KF_NS portable
#define KF_VB 16
#define KF_ISA 0
#include "fast_cpu_simd.h"
#undef KF_NS
#undef KF_VB
#undef KF_ISA

#if KF_X86
#define KF_NS sse2
#define KF_VB 16
#define KF_ISA 1
#include "fast_cpu_simd.h"
#undef KF_NS
#undef KF_VB
#undef KF_ISA

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#endif
#define KF_NS avx2
#define KF_VB 32
#define KF_ISA 2
#include "fast_cpu_simd.h"
#undef KF_NS
#undef KF_VB
#undef KF_ISA
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,popcnt")
#endif
#define KF_NS avx512
#define KF_VB 64
#define KF_ISA 3
#include "fast_cpu_simd.h"
#undef KF_NS
#undef KF_VB
#undef KF_ISA
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // other architectures: the portable copy only (the compiler maps the vector extensions to its SIMD)

namespace kamim_fast::cpu {
namespace {

struct Kernels {
  const char* name;
  void (*fast_rows)(const uint8_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, uint8_t*,
                    uint8_t*, int64_t, uint64_t*, int64_t);
  void (*gray_row_u8)(const uint8_t*, const uint8_t*, const uint8_t*, int64_t, int32_t, int32_t, int32_t, uint8_t*);
  void (*gray_row_f32)(const float*, const float*, const float*, int64_t, const float*, const float*, int32_t,
                       int32_t, int32_t, uint8_t*, ColourStats*);
  void (*cover_from_bits)(const uint64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool,
                          int32_t*);
  void (*bool_row_bits)(const uint8_t*, int64_t, uint64_t*);
};

#define KF_KERNELS(ns, gray_ns) \
  Kernels {                                                                                        \
    #ns, &ns::fast_rows, &gray_ns::gray_row_u8, &gray_ns::gray_row_f32, &ns::cover_from_bits, &ns::bool_row_bits \
  }

Kernels choose_kernels() {
  const char* env = std::getenv("KAMIM_FAST_CPU_ISA");
  const std::string want = env ? env : "";
#if KF_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  if (want == "portable") return KF_KERNELS(portable, portable);
  if (want == "sse2") return KF_KERNELS(sse2, sse2);
  if (want == "avx2" && avx2) return KF_KERNELS(avx2, avx2);
  if (want == "avx512" && avx512) return KF_KERNELS(avx512, avx2);
  if (want.empty() && avx512) return KF_KERNELS(avx512, avx2);  // 15-20% faster than AVX2 on the EPYC measured
  if (avx2) return KF_KERNELS(avx2, avx2);
  return KF_KERNELS(sse2, sse2);
#else
  (void)want;
  return KF_KERNELS(portable, portable);
#endif
}

const Kernels& kernels() {
  static const Kernels k = choose_kernels();
  return k;
}

int64_t channel_bytes(ColourDtype d) {
  switch (d) {
    case ColourDtype::kU8: return 1;
    case ColourDtype::kF16:
    case ColourDtype::kBF16: return 2;
    case ColourDtype::kF32: return 4;
    case ColourDtype::kF64: return 8;
  }
  return 1;
}

// Element x of a channel row (element stride sw) as float32, as `images.to(torch.float32)` converts it.
inline float channel_value(const char* p, ColourDtype d) {
  switch (d) {
    case ColourDtype::kF32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case ColourDtype::kF64: {
      double v;
      std::memcpy(&v, p, 8);
      return static_cast<float>(v);
    }
    case ColourDtype::kF16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return static_cast<float>(stable::Half(v, stable::Half::from_bits()));
    }
    case ColourDtype::kBF16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return static_cast<float>(stable::BFloat16(v, stable::BFloat16::from_bits()));
    }
    case ColourDtype::kU8: return static_cast<float>(*reinterpret_cast<const uint8_t*>(p));
  }
  return 0.0f;
}

// Rows [a, b) of the band's keypoint rows, bands of about 128 K pixels: a fixed size, so the work split
// (and nothing else) depends on the image alone.
int64_t bit_words(int64_t W) { return (W + 63) / 64 + 1; }

int64_t band_rows(int64_t W) { return std::max<int64_t>(16, (int64_t{1} << 17) / std::max<int64_t>(W, 1)); }

}  // namespace

void gray_rows(const ColourImage& img, int64_t y0, int64_t y1, uint8_t* out, int64_t out_stride, ColourStats* stats,
               int64_t sy0, int64_t sy1) {
  const Kernels& k = kernels();
  const int64_t W = img.W;
  int32_t w[3] = {opencv::kGrayWeightsRgb[0], opencv::kGrayWeightsRgb[1], opencv::kGrayWeightsRgb[2]};
  if (img.bgr) std::swap(w[0], w[2]);
  const int64_t eb = channel_bytes(img.dtype);
  const char* base = static_cast<const char*>(img.data);
  if (img.dtype == ColourDtype::kU8) {
    std::vector<uint8_t> tmp(img.stride_w == 1 ? 0 : 3 * W);
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* c[3];
      for (int ch = 0; ch < 3; ++ch) {
        const uint8_t* row = reinterpret_cast<const uint8_t*>(base) + ch * img.stride_c + y * img.stride_h;
        if (img.stride_w == 1) {
          c[ch] = row;
        } else {
          uint8_t* t = tmp.data() + ch * W;
          for (int64_t x = 0; x < W; ++x) t[x] = row[x * img.stride_w];
          c[ch] = t;
        }
      }
      k.gray_row_u8(c[0], c[1], c[2], W, w[0], w[1], w[2], out + (y - y0) * out_stride);
    }
    return;
  }
  const bool direct = img.dtype == ColourDtype::kF32 && img.stride_w == 1;
  std::vector<float> tmp(direct ? 0 : 3 * W);
  for (int64_t y = y0; y < y1; ++y) {
    const float* c[3];
    for (int ch = 0; ch < 3; ++ch) {
      const char* row = base + (ch * img.stride_c + y * img.stride_h) * eb;
      if (direct) {
        c[ch] = reinterpret_cast<const float*>(row);
      } else {
        float* t = tmp.data() + ch * W;
        for (int64_t x = 0; x < W; ++x) t[x] = channel_value(row + x * img.stride_w * eb, img.dtype);
        c[ch] = t;
      }
    }
    ColourStats* st = stats && y >= sy0 && y < sy1 ? stats : nullptr;
    k.gray_row_f32(c[0], c[1], c[2], W, img.mean, img.std, w[0], w[1], w[2], out + (y - y0) * out_stride, st);
  }
}

namespace {


// FAST with suppression on rows [ka, kb) of the image as keypoint bit rows (bit_words(W) words each).
// With `stats`, the statistics of gray rows [sy0, sy1) are merged into it.
std::vector<uint64_t> keypoint_bits(const ColourImage& img, int64_t ka, int64_t kb, int threshold,
                                    ColourStats* stats = nullptr, int64_t sy0 = 0, int64_t sy1 = 0) {
  const int64_t H = img.H, W = img.W, nw = bit_words(W);
  std::vector<uint64_t> bits((kb - ka) * nw, 0);
  if (kb <= ka) return bits;
  const int64_t ga = std::max<int64_t>(ka - 4, 0), gb = std::min<int64_t>(kb + 4, H);
  std::vector<uint8_t> gray((gb - ga) * W);
  gray_rows(img, ga, gb, gray.data(), W, stats, sy0, sy1);
  kernels().fast_rows(gray.data(), W, ga, H, W, ka, kb, threshold, true, nullptr, nullptr, 0, bits.data(), nw);
  return bits;
}

}  // namespace

void cell_cover(const ColourImage& img, int64_t p, int64_t cy0, int64_t cy1, int threshold, bool ring,
                int32_t* cover, ColourStats* stats) {
  const int64_t H = img.H, W = img.W, halo = ring ? opencv::kDrawKeypointRingRadius : 0;
  if (cy1 <= cy0) return;
  const int64_t ka = std::max<int64_t>(cy0 * p - halo, 0), kb = std::min<int64_t>(cy1 * p + halo, H);
  const std::vector<uint64_t> bits = keypoint_bits(img, ka, kb, threshold, stats, cy0 * p, cy1 * p);
  kernels().cover_from_bits(bits.data(), bit_words(W), ka, kb, W, p, cy0, cy1, ring, cover);
}

const char* isa_name() { return kernels().name; }

bool ring_density(const std::string& density) {
  KF_CHECK_VALUE(density == "ring" || density == "count", "density must be one of ('ring', 'count'), got '",
                    density, "'");
  return density == "ring";
}

bool bgr_order(const std::string& channel_order) {
  KF_CHECK_VALUE(channel_order == "rgb" || channel_order == "bgr",
                    "channel_order must be one of ('rgb', 'bgr'), got '", channel_order, "'");
  return channel_order == "bgr";
}

void check_patch(int64_t p, int64_t H, int64_t W, const char* name, const char* what) {
  KF_CHECK_VALUE(p >= 1, name, " must be >= 1, got ", p);
  KF_CHECK_VALUE(H % p == 0 && W % p == 0, what, ": height ", H, " and width ", W, " must be divisible by ", name,
                 "=", p);
}

}  // namespace kamim_fast::cpu

// --- the ops ----------------------------------------------------------------------------------------------
// Arguments arrive checked (the op boundary, in Python); what is checked here guards the kernels' reads.
namespace kamim_fast {
namespace {

using cpu::check_patch;
using cpu::ColourDtype;
using cpu::ColourImage;
using stable::ScalarType;
using stable::Tensor;

void check_cpu(const Tensor& t, const char* name) {
  KF_CHECK_VALUE(t.is_cpu(), name, " must be a CPU tensor for the native CPU kernels");
}

ColourDtype colour_dtype(const Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case ScalarType::Byte: return ColourDtype::kU8;
    case ScalarType::Float: return ColourDtype::kF32;
    case ScalarType::Half: return ColourDtype::kF16;
    case ScalarType::BFloat16: return ColourDtype::kBF16;
    case ScalarType::Double: return ColourDtype::kF64;
    default:
      KF_CHECK(false, name, " must be uint8, float32, float16, bfloat16 or float64, got ", t.scalar_type());
  }
  return ColourDtype::kU8;
}

void check_colour(const Tensor& t, const char* name) {
  check_cpu(t, name);
  KF_CHECK_VALUE(t.dim() == 4 && t.size(1) == 3, name, " must be (B, 3, H, W), got shape ", stable::shape(t));
  colour_dtype(t, name);
}

// mean/std: empty (defaults 0 and 1) or 3 values.
void channel_stats(const std::vector<double>& v, const char* name, double fill, float out[3]) {
  KF_CHECK_VALUE(v.empty() || v.size() == 3, name, " must hold 3 values (one per channel) or none, got ", v.size());
  for (int c = 0; c < 3; ++c) out[c] = static_cast<float>(v.empty() ? fill : v[c]);
}

ColourImage colour_image(const Tensor& t, int64_t b, bool bgr, const float mean[3], const float std_[3]) {
  ColourImage img{};
  img.dtype = colour_dtype(t, "images");
  img.data = static_cast<const char*>(t.const_data_ptr()) + b * t.stride(0) * static_cast<int64_t>(t.element_size());
  img.stride_c = t.stride(1);
  img.stride_h = t.stride(2);
  img.stride_w = t.stride(3);
  img.H = t.size(2);
  img.W = t.size(3);
  for (int c = 0; c < 3; ++c) img.mean[c] = mean[c], img.std[c] = std_[c];
  img.bgr = bgr;
  return img;
}

Tensor rgb_to_gray_u8_cpu(const Tensor& images, std::string channel_order, std::vector<double> mean,
                          std::vector<double> std_) {
  const bool bgr = cpu::bgr_order(channel_order);
  check_colour(images, "images");
  float m[3], s[3];
  channel_stats(mean, "mean", 0.0, m);
  channel_stats(std_, "std", 1.0, s);
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3);
  Tensor out = stable::empty_like_device(images, {B, H, W}, ScalarType::Byte);
  if (out.numel() == 0) return out;
  const int64_t R = cpu::band_rows(W), nb = (H + R - 1) / R;
  uint8_t* o = out.mutable_data_ptr<uint8_t>();
  // one image view per image, made before the threads start (colour_image reads the tensor's metadata)
  std::vector<ColourImage> views;
  for (int64_t b = 0; b < B; ++b) views.push_back(colour_image(images, b, bgr, m, s));
  torch::stable::parallel_for(0, B * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / nb, y0 = (i % nb) * R, y1 = std::min(H, y0 + R);
      cpu::gray_rows(views[b], y0, y1, o + (b * H + y0) * W, W);
    }
  });
  return out;
}

std::tuple<Tensor, Tensor> fast_corners_cpu(const Tensor& image, int64_t threshold, bool nonmax_suppression,
                                            std::string channel_order, std::vector<double> mean,
                                            std::vector<double> std_) {
  const bool bgr = cpu::bgr_order(channel_order);
  check_cpu(image, "image");
  KF_CHECK_VALUE(image.dim() == 3 || image.dim() == 4,
                 "image must be (B, H, W) uint8 gray or (B, 3, H, W) colour, got shape ", stable::shape(image));
  const bool colour = image.dim() == 4;
  if (colour) {
    check_colour(image, "image");
  } else {
    KF_CHECK(image.scalar_type() == ScalarType::Byte, "image (B, H, W) gray must be uint8, got ",
             image.scalar_type());
  }
  float m[3], s[3];
  channel_stats(mean, "mean", 0.0, m);
  channel_stats(std_, "std", 1.0, s);
  const int64_t B = image.size(0), H = image.size(image.dim() - 2), W = image.size(image.dim() - 1);
  Tensor kp = stable::empty_like_device(image, {B, H, W}, ScalarType::Bool);
  Tensor sc = stable::empty_like_device(image, {B, H, W}, ScalarType::Byte);
  if (kp.numel() == 0) return {kp, sc};
  const int64_t R = cpu::band_rows(W), nb = (H + R - 1) / R;
  uint8_t* kpo = static_cast<uint8_t*>(kp.mutable_data_ptr());
  uint8_t* sco = sc.mutable_data_ptr<uint8_t>();
  const int t = static_cast<int>(threshold);
  std::vector<ColourImage> views;
  if (colour)
    for (int64_t b = 0; b < B; ++b) views.push_back(colour_image(image, b, bgr, m, s));
  const uint8_t* gray = colour ? nullptr : image.const_data_ptr<uint8_t>();
  const int64_t s0 = image.stride(0), sh = colour ? 0 : image.stride(1), sw = colour ? 0 : image.stride(2);
  torch::stable::parallel_for(0, B * nb, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> buf;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / nb, ya = (i % nb) * R, yb = std::min(H, ya + R);
      const int64_t ga = std::max<int64_t>(ya - 4, 0), gb = std::min<int64_t>(yb + 4, H);
      const uint8_t* g;
      int64_t gs = W;
      if (colour) {
        buf.resize((gb - ga) * W);
        cpu::gray_rows(views[b], ga, gb, buf.data(), W);
        g = buf.data();
      } else {
        const uint8_t* src = gray + b * s0;
        if (sw == 1) {
          g = src + ga * sh;
          gs = sh;
        } else {
          buf.resize((gb - ga) * W);
          for (int64_t y = ga; y < gb; ++y)
            for (int64_t x = 0; x < W; ++x) buf[(y - ga) * W + x] = src[y * sh + x * sw];
          g = buf.data();
        }
      }
      cpu::kernels().fast_rows(g, gs, ga, H, W, ya, yb, t, nonmax_suppression, kpo + (b * H + ya) * W,
                               sco + (b * H + ya) * W, W, nullptr, 0);
    }
  });
  return {kp, sc};
}

// Work items (image, band of cell rows) of a fixed size; `fn(b, cy0, cy1, cover)` fills the band's counts.
template <class Fn>
Tensor density_from_cover(const Tensor& like, int64_t B, int64_t H, int64_t W, int64_t p, Fn fn) {
  const int64_t h = H / p, w = W / p;
  Tensor density = stable::empty_like_device(like, {B, h, w}, ScalarType::Float);
  if (density.numel() == 0) return density;
  const int64_t cpb = std::max<int64_t>(1, cpu::band_rows(W) / p), nb = (h + cpb - 1) / cpb;
  float* d = density.mutable_data_ptr<float>();
  const float area = static_cast<float>(p * p);  // avg_pool2d: float(sum) / float(p*p)
  torch::stable::parallel_for(0, B * nb, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> cover;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / nb, cy0 = (i % nb) * cpb, cy1 = std::min(h, cy0 + cpb);
      cover.assign((cy1 - cy0) * w, 0);
      fn(b, cy0, cy1, cover.data());
      float* o = d + (b * h + cy0) * w;
      for (int64_t j = 0; j < (cy1 - cy0) * w; ++j) o[j] = static_cast<float>(cover[j]) / area;
    }
  });
  return density;
}

Tensor keypoint_density_cpu(const Tensor& keypoints, int64_t patch_size, std::string density) {
  const bool ring = cpu::ring_density(density);
  check_cpu(keypoints, "keypoints");
  KF_CHECK_VALUE(keypoints.dim() == 3, "keypoints must be (B, H, W), got shape ", stable::shape(keypoints));
  KF_CHECK(keypoints.scalar_type() == ScalarType::Bool, "keypoints must be bool, got ", keypoints.scalar_type());
  const int64_t B = keypoints.size(0), H = keypoints.size(1), W = keypoints.size(2);
  check_patch(patch_size, H, W, "patch_size", "keypoints");
  const int64_t p = patch_size, nw = cpu::bit_words(W);
  const uint8_t* base = static_cast<const uint8_t*>(keypoints.const_data_ptr());
  const int64_t s0 = keypoints.stride(0), s1 = keypoints.stride(1), s2 = keypoints.stride(2);
  return density_from_cover(keypoints, B, H, W, p, [&](int64_t b, int64_t cy0, int64_t cy1, int32_t* cover) {
    const int64_t halo = ring ? opencv::kDrawKeypointRingRadius : 0;
    const int64_t ka = std::max<int64_t>(cy0 * p - halo, 0), kb = std::min<int64_t>(cy1 * p + halo, H);
    std::vector<uint64_t> bits((kb - ka) * nw, 0);
    for (int64_t y = ka; y < kb; ++y) {
      const uint8_t* row = base + b * s0 + y * s1;
      uint64_t* out = bits.data() + (y - ka) * nw;
      if (s2 == 1) {
        cpu::kernels().bool_row_bits(row, W, out);
      } else {
        for (int64_t x = 0; x < W; ++x)
          if (row[x * s2]) out[x >> 6] |= uint64_t{1} << (x & 63);
      }
    }
    cpu::kernels().cover_from_bits(bits.data(), nw, ka, kb, W, p, cy0, cy1, ring, cover);
  });
}

}  // namespace

// density_to_weights (kamim_fast/ops/patch_weights.py) of a (B, h, w) float32 density: exp(clip(d / T, -20, 20))
// divided by its per-image minimum, with torch's own kernels in the reference's order, so the weights are torch's
// to the bit.
// Shared with the fused CPU loss (mim_loss_cpu.cpp).
stable::Tensor density_to_weights(const stable::Tensor& density, double temperature) {
  using stable::aten;
  using stable::scalar;
  const Tensor scaled = aten("aten::div", "Tensor", density, scalar(temperature));
  const Tensor clipped = aten("aten::clamp", "Tensor", scaled, std::optional<Tensor>(scalar(-20.0)),
                              std::optional<Tensor>(scalar(20.0)));
  const Tensor w = aten("aten::exp", "", clipped);
  return aten("aten::div", "Tensor", w, aten("aten::amin", "", w, std::vector<int64_t>{-2, -1}, true));
}

namespace {

// (weights, stats): stats is colour_stats_ref's (7,) float32 for float images with `with_stats` (gathered in the
// gray pass, per band of cell rows, merged in band order), else empty.
std::tuple<Tensor, Tensor> patch_weights_cpu(const Tensor& images, int64_t weight_patch_size, double temperature,
                                             int64_t threshold, std::string density, std::string channel_order,
                                             std::vector<double> mean, std::vector<double> std_, bool with_stats) {
  const bool ring = cpu::ring_density(density);
  const bool bgr = cpu::bgr_order(channel_order);
  check_colour(images, "images");
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3);
  check_patch(weight_patch_size, H, W, "weight_patch_size", "images");
  KF_CHECK_VALUE(H > 0 && W > 0, "images must have a positive height and width, got shape ", stable::shape(images));
  float m[3], s[3];
  channel_stats(mean, "mean", 0.0, m);
  channel_stats(std_, "std", 1.0, s);
  const int64_t p = weight_patch_size, h = H / p;
  std::vector<ColourImage> views;
  for (int64_t b = 0; b < B; ++b) views.push_back(colour_image(images, b, bgr, m, s));
  const bool stats = with_stats && colour_dtype(images, "images") != ColourDtype::kU8;
  std::vector<cpu::ColourStats> band_stats(stats ? B * h : 0);  // by (image, first cell row of the band)
  auto band = [&](int64_t b, int64_t cy0, int64_t cy1, int32_t* cover) {
    cpu::cell_cover(views[b], p, cy0, cy1, static_cast<int>(threshold), ring, cover,
                    stats ? &band_stats[b * h + cy0] : nullptr);
  };
  Tensor weights = density_to_weights(density_from_cover(images, B, H, W, p, band), temperature);
  Tensor out = stable::empty_like_device(images, {stats ? 7 : 0}, ScalarType::Float);
  if (stats) {
    cpu::ColourStats all;
    for (const cpu::ColourStats& st : band_stats) all.merge(st);
    float* o = out.mutable_data_ptr<float>();
    for (int c = 0; c < 3; ++c) o[c] = all.lo[c], o[3 + c] = all.hi[c];
    o[6] = static_cast<float>(all.off);
  }
  return {weights, out};
}

std::string fast_cpu_isa() { return cpu::isa_name(); }

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(kamim_fast_cpp, CPU, m) {
  m.impl("rgb_to_gray_u8", TORCH_BOX(&rgb_to_gray_u8_cpu));
  m.impl("fast_corners", TORCH_BOX(&fast_corners_cpu));
  m.impl("keypoint_density", TORCH_BOX(&keypoint_density_cpu));
  m.impl("patch_weights", TORCH_BOX(&patch_weights_cpu));
}

// No tensor argument: every backend (which vector copy runs; benchmarks and tests read it).
STABLE_TORCH_LIBRARY_IMPL(kamim_fast_cpp, CompositeExplicitAutograd, m) {
  m.impl("fast_cpu_isa", TORCH_BOX(&fast_cpu_isa));
}

}  // namespace kamim_fast
