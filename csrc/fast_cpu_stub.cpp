// TEMPORARY stand-in for fast_cpu.cpp (branch native-fast), so that the fused loss (mim_loss_cpu.cpp)
// builds and is tested before the native FAST lands. Plain scalar code, written for exactness, not speed.
// Delete this file when native-fast's fast_cpu.cpp is merged (both define the same functions).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "fast_cpu.h"

namespace kamim_fast::cpu {
namespace {

constexpr int kCircle[16][2] = {{0, 3},  {1, 3},   {2, 2},   {3, 1},   {3, 0},  {3, -1}, {2, -2}, {1, -3},
                                {0, -3}, {-1, -3}, {-2, -2}, {-3, -1}, {-3, 0}, {-3, 1}, {-2, 2}, {-1, 3}};
constexpr const char* kRing[9] = {"...###...", "..#####..", ".#######.", "###...###", "###...###",
                                  "###...###", ".#######.", "..#####..", "...###..."};
constexpr int kRingR = 4, kFastR = 3;

template <class T>
float as_float(T v) { return static_cast<float>(v); }

// One channel row -> uint8 values as channels_to_u8_ref: round((x*std + mean)*255) clamped, NaN -> 0.
template <class T>
void channel_row_u8(const T* src, int64_t stride_w, int64_t W, float mean, float std, int32_t* out) {
  for (int64_t x = 0; x < W; ++x) {
    const float t = as_float(src[x * stride_w]) * std;
    float v = (t + mean) * 255.0f;
    v = v > 0.f ? v : 0.f;
    v = v < 255.0f ? v : 255.0f;
    out[x] = static_cast<int32_t>((v + 8388608.0f) - 8388608.0f);  // ties to even, as torch.round, for 0 <= v < 2^23
  }
}

void channel_row(const ColourImage& img, int c, int64_t y, int32_t* out) {
  const int64_t off = c * img.stride_c + y * img.stride_h;
  const int64_t W = img.W, sw = img.stride_w;
  switch (img.dtype) {
    case ColourDtype::kU8: {
      const uint8_t* p = static_cast<const uint8_t*>(img.data) + off;
      for (int64_t x = 0; x < W; ++x) out[x] = p[x * sw];
      return;
    }
    case ColourDtype::kF32: return channel_row_u8(static_cast<const float*>(img.data) + off, sw, W, img.mean[c], img.std[c], out);
    case ColourDtype::kF16:
      return channel_row_u8(static_cast<const c10::Half*>(img.data) + off, sw, W, img.mean[c], img.std[c], out);
    case ColourDtype::kBF16:
      return channel_row_u8(static_cast<const c10::BFloat16*>(img.data) + off, sw, W, img.mean[c], img.std[c], out);
    case ColourDtype::kF64:
      return channel_row_u8(static_cast<const double*>(img.data) + off, sw, W, img.mean[c], img.std[c], out);
  }
}

// Whether the 16 circular flags hold 9 contiguous ones.
bool has_arc9(uint32_t m) {
  const uint32_t m2 = m | (m << 16);
  uint32_t r = m2 & (m2 >> 1);  // runs of 2
  r &= r >> 2;                   // 4
  r &= r >> 4;                   // 8
  r &= m2 >> 8;                  // 9
  return (r & 0xffffu) != 0;
}

}  // namespace

void gray_rows(const ColourImage& img, int64_t y0, int64_t y1, uint8_t* out, int64_t out_stride) {
  const int ci_r = img.bgr ? 2 : 0, ci_b = img.bgr ? 0 : 2;
  std::vector<int32_t> r(img.W), g(img.W), b(img.W);
  for (int64_t y = y0; y < y1; ++y) {
    channel_row(img, ci_r, y, r.data());
    channel_row(img, 1, y, g.data());
    channel_row(img, ci_b, y, b.data());
    uint8_t* o = out + (y - y0) * out_stride;
    for (int64_t x = 0; x < img.W; ++x)
      o[x] = static_cast<uint8_t>((r[x] * 9798 + g[x] * 19235 + b[x] * 3735 + 16384) >> 15);
  }
}

void cell_cover(const ColourImage& img, int64_t p, int64_t cy0, int64_t cy1, int threshold, bool ring,
                int32_t* cover) {
  const int64_t H = img.H, W = img.W, wc = W / p;
  const int64_t Y0 = cy0 * p, Y1 = cy1 * p;
  std::fill(cover, cover + (cy1 - cy0) * wc, 0);
  if (Y1 <= Y0 || W == 0) return;
  const int64_t kr = ring ? kRingR : 0;               // keypoints that reach the band
  const int64_t ky0 = std::max<int64_t>(Y0 - kr, 0), ky1 = std::min<int64_t>(Y1 + kr, H);
  const int64_t sy0 = std::max<int64_t>(ky0 - 1, 0), sy1 = std::min<int64_t>(ky1 + 1, H);  // scores for NMS
  const int64_t gy0 = std::max<int64_t>(sy0 - kFastR, 0), gy1 = std::min<int64_t>(sy1 + kFastR, H);
  std::vector<uint8_t> gray((gy1 - gy0) * W);
  gray_rows(img, gy0, gy1, gray.data(), W);
  std::vector<int> score((sy1 - sy0) * W, 0);
  for (int64_t y = std::max<int64_t>(sy0, kFastR); y < std::min<int64_t>(sy1, H - kFastR); ++y)
    for (int64_t x = kFastR; x < W - kFastR; ++x) {
      const uint8_t* c0 = &gray[(y - gy0) * W + x];
      const int v = *c0;
      // an arc of 9 holds circle pixel 0 or 8, and 4 or 12: reject on those four first
      const int d0 = v - c0[3 * W], d8 = v - c0[-3 * W], d4 = v - c0[3], d12 = v - c0[-3];
      const bool dark = (d0 > threshold || d8 > threshold) && (d4 > threshold || d12 > threshold);
      const bool bright = (-d0 > threshold || -d8 > threshold) && (-d4 > threshold || -d12 > threshold);
      if (!dark && !bright) continue;
      int d[16];
      uint32_t dark_bits = 0, bright_bits = 0;
      for (int k = 0; k < 16; ++k) {
        d[k] = v - c0[kCircle[k][1] * W + kCircle[k][0]];
        dark_bits |= static_cast<uint32_t>(d[k] > threshold) << k;
        bright_bits |= static_cast<uint32_t>(-d[k] > threshold) << k;
      }
      if (!has_arc9(dark_bits) && !has_arc9(bright_bits)) continue;  // not a corner
      int best = -1000;
      for (int s = 0; s < 16; ++s) {
        int mn = 1000, mx = -1000;
        for (int k = 0; k < 9; ++k) {
          mn = std::min(mn, d[(s + k) & 15]);
          mx = std::max(mx, d[(s + k) & 15]);
        }
        best = std::max(best, std::max(mn, -mx));
      }
      const int sc = best - 1;
      if (sc >= threshold) score[(y - sy0) * W + x] = sc;
    }
  std::vector<uint8_t> covered(ring ? (Y1 - Y0) * W : 0, 0);
  for (int64_t y = ky0; y < ky1; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const int s = score[(y - sy0) * W + x];
      if (s == 0) continue;  // not a corner, or a corner of score 0 (never beats its neighbours, all >= 0)
      bool keep = true;
      for (int dy = -1; dy <= 1 && keep; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          if (!dy && !dx) continue;
          const int64_t yy = y + dy, xx = x + dx;
          if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
          if (score[(yy - sy0) * W + xx] >= s) { keep = false; break; }
        }
      if (!keep) continue;
      if (!ring) {
        cover[(y / p - cy0) * wc + x / p] += 1;
        continue;
      }
      for (int dy = -kRingR; dy <= kRingR; ++dy) {
        const int64_t yy = y + dy;
        if (yy < Y0 || yy >= Y1) continue;
        for (int dx = -kRingR; dx <= kRingR; ++dx) {
          const int64_t xx = x + dx;
          if (xx < 0 || xx >= W || kRing[dy + kRingR][dx + kRingR] != '#') continue;
          covered[(yy - Y0) * W + xx] = 1;
        }
      }
    }
  if (ring)
    for (int64_t y = Y0; y < Y1; ++y)
      for (int64_t cx = 0; cx < wc; ++cx) {
        int32_t n = 0;
        for (int64_t x = cx * p; x < (cx + 1) * p; ++x) n += covered[(y - Y0) * W + x];
        cover[(y / p - cy0) * wc + cx] += n;
      }
}

}  // namespace kamim_fast::cpu
