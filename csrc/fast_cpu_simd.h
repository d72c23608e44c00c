// The vector kernels of the native CPU FAST (fast_cpu.cpp), written once with GCC/Clang vector extensions
// and compiled once per instruction set: fast_cpu.cpp includes this file several times, each time inside
// its own `#pragma GCC target` region and with its own macros (no include guard on purpose):
//   KF_NS   the namespace of this copy (kamim_fast::cpu::KF_NS)
//   KF_VB   bytes per vector: 16 (SSE2, or portable), 32 (AVX2), 64 (AVX-512BW)
//   KF_ISA  0 portable (no intrinsics), 1 SSE2, 2 AVX2, 3 AVX-512BW: which intrinsics `any` and `movemask` use
// Everything here is integer arithmetic on uint8 and int16 lanes, so every copy gives the same bits.
//
// Per image row y (REFERENCE.md sections 1 and 8):
//   score_row: the 4-point rejection on 8-bit lanes (a corner's 9-pixel arc holds two neighbouring compass
//     points of the circle, both brighter than v+t or both darker than v-t); chunks with no candidate
//     are zero; the others get the exact score, branch-free, on the same 8-bit lanes: with saturated
//     differences, e = max over the 16 arcs of the arc's minimum (pairwise minima of 2, 4, 8, then 9
//     neighbours) = score + 1, kept where e > t (a corner), else 0.
//   nms_row: 3x3 suppression on three rows of e; score = e - 1 (saturating), keypoint iff its score beats
//     the largest neighbouring score; optionally the keypoint row as bits (movemask).

namespace kamim_fast::cpu::KF_NS {

typedef uint8_t u8v __attribute__((vector_size(KF_VB)));
constexpr int VB = KF_VB;

static inline u8v ld(const uint8_t* p) {
  u8v v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void st(uint8_t* p, u8v v) { std::memcpy(p, &v, sizeof v); }
static inline u8v splat(int v) { return u8v{} + static_cast<uint8_t>(v); }
static inline u8v umax(u8v a, u8v b) { return a > b ? a : b; }

static inline bool any(u8v v) {
#if KF_ISA == 3
  __m512i x;
  std::memcpy(&x, &v, sizeof x);
  return _mm512_test_epi8_mask(x, x) != 0;
#elif KF_ISA == 2
  __m256i x;
  std::memcpy(&x, &v, sizeof x);
  return !_mm256_testz_si256(x, x);
#else
  uint64_t w[VB / 8];
  std::memcpy(w, &v, sizeof w);
  uint64_t o = 0;
  for (int i = 0; i < VB / 8; ++i) o |= w[i];
  return o != 0;
#endif
}

// Bit i = the top bit of byte i (a 0/0xFF mask -> 0/1 bits).
static inline uint64_t movemask(u8v v) {
#if KF_ISA == 3
  __m512i x;
  std::memcpy(&x, &v, sizeof x);
  return static_cast<uint64_t>(_mm512_movepi8_mask(x));
#elif KF_ISA == 2
  __m256i x;
  std::memcpy(&x, &v, sizeof x);
  return static_cast<uint32_t>(_mm256_movemask_epi8(x));
#elif KF_ISA == 1
  __m128i x;
  std::memcpy(&x, &v, sizeof x);
  return static_cast<uint32_t>(_mm_movemask_epi8(x));
#else
  uint64_t m = 0;
  for (int i = 0; i < VB; ++i) m |= static_cast<uint64_t>(v[i] >> 7) << i;
  return m;
#endif
}

// Saturating uint8 arithmetic (max(a - b, 0), min(a + b, 255)) and unsigned minima/maxima.
static inline u8v subs(u8v a, u8v b) {
#if KF_ISA == 3
  __m512i x, y;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y);
  x = _mm512_subs_epu8(x, y);
  std::memcpy(&a, &x, sizeof x);
  return a;
#elif KF_ISA == 2
  __m256i x, y;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y);
  x = _mm256_subs_epu8(x, y);
  std::memcpy(&a, &x, sizeof x);
  return a;
#elif KF_ISA == 1
  __m128i x, y;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y);
  x = _mm_subs_epu8(x, y);
  std::memcpy(&a, &x, sizeof x);
  return a;
#else
  return a > b ? a - b : u8v{};
#endif
}
static inline u8v adds(u8v a, u8v b) { return a + b < a ? splat(255) : a + b; }
static inline u8v umin(u8v a, u8v b) { return a < b ? a : b; }

// max over the 16 arcs of 9 circle pixels of the arc's minimum of d (uint8 lanes). Minima of 2, 4 and 8
// neighbours are needed at odd starts only: the arc at even start j-1 is d[j-1] with the 8 from j, the arc at
// odd start j is the 8 from j with d[j+8]. 24 + 16 minima, 15 maxima.
static inline u8v arc_max_min(const u8v* d) {
  u8v m2[8], m4[8], m8[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) m2[i] = umin(d[2 * i + 1], d[(2 * i + 2) & 15]);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) m4[i] = umin(m2[i], m2[(i + 1) & 7]);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) m8[i] = umin(m4[i], m4[(i + 2) & 7]);
  u8v r = umin(d[0], m8[0]);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    if (i) r = umax(r, umin(d[2 * i], m8[i]));
    r = umax(r, umin(m8[i], d[(2 * i + 9) & 15]));
  }
  return r;
}

// out[x] = e for x in [0, W) of row r[3] (r[k] = row y - 3 + k); 0 outside columns [3, W-3). e = score + 1 at
// a corner (score >= t), else 0. On uint8 lanes: with saturated differences max(v - x_k, 0) (circle darker)
// and max(x_k - v, 0) (brighter), e' = max of the two arc-max-mins equals score + 1 wherever that exceeds t
// >= 0, and is <= t exactly where the pixel is not a corner.
static void score_row(const uint8_t* const* r, int64_t W, int t, uint8_t* out) {
  const int64_t R = opencv::kFastRadius;
  std::memset(out, 0, R);
  std::memset(out + W - R, 0, R);
  if (W - 2 * R < VB) {
    for (int64_t x = R; x < W - R; ++x) out[x] = static_cast<uint8_t>(score_scalar(r, x, t));
    return;
  }
  using opencv::kFastCircle;
  const u8v T = splat(t), Z = u8v{};
  const int64_t last = W - R - VB;
  for (int64_t x0 = R;; x0 += VB) {
    if (x0 > last) x0 = last;  // the last chunk overlaps the one before: same values
    const u8v c = ld(r[3] + x0);
    const u8v hi = adds(c, T), lo = subs(c, T);
    // 4-point rejection: non-zero where two neighbouring compass points are both brighter or both darker.
    const u8v p0 = ld(r[6] + x0), p4 = ld(r[3] + x0 + 3), p8 = ld(r[0] + x0), p12 = ld(r[3] + x0 - 3);
    const u8v bright = umin(umax(subs(p0, hi), subs(p8, hi)), umax(subs(p4, hi), subs(p12, hi)));
    const u8v dark = umin(umax(subs(lo, p0), subs(lo, p8)), umax(subs(lo, p4), subs(lo, p12)));
    if (!any(umax(bright, dark))) {
      st(out + x0, Z);
    } else {
      u8v dp[16], dn[16];
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) {
        const u8v x = k == 0    ? p0
                      : k == 4  ? p4
                      : k == 8  ? p8
                      : k == 12 ? p12
                                : ld(r[3 + kFastCircle[k][1]] + x0 + kFastCircle[k][0]);
        dp[k] = subs(c, x);
        dn[k] = subs(x, c);
      }
      const u8v e = umax(arc_max_min(dp), arc_max_min(dn));
      st(out + x0, e & (u8v)(subs(e, T) != Z));
    }
    if (x0 == last) break;
  }
}

// Suppression of row e1 (rows e0, e1, e2 hold e for y-1, y, y+1, readable on [-VB, W + VB) with zeros
// outside [0, W)). Writes, for x in [0, W): kp[x] (0/1) and sc[x] when kp is not null, and the keypoint
// bits (bit x of bits[x / 64], the row zeroed first) when bits is not null.
static void nms_row(const uint8_t* e0, const uint8_t* e1, const uint8_t* e2, int64_t W, bool nms, uint8_t* kp,
                    uint8_t* sc, uint64_t* bits, uint8_t* tmp_kp, uint8_t* tmp_sc) {
  const u8v Z = u8v{}, One = splat(1);
  if (bits) std::memset(bits, 0, sizeof(uint64_t) * ((W + 63) / 64));
  const int64_t full = W / VB * VB;
  for (int64_t x0 = 0; x0 < W; x0 += VB) {
    const u8v ec = ld(e1 + x0);
    u8v k = Z, s = Z;
    if (any(ec)) {
      const u8v c = ec < One ? Z : ec - One;  // the score; non-corners count as 0
      if (nms) {
        u8v m = umax(umax(ld(e0 + x0 - 1), ld(e0 + x0)), umax(ld(e0 + x0 + 1), ld(e1 + x0 - 1)));
        m = umax(m, umax(umax(ld(e1 + x0 + 1), ld(e2 + x0 - 1)), umax(ld(e2 + x0), ld(e2 + x0 + 1))));
        m = m < One ? Z : m - One;
        k = (u8v)(c > m);
      } else {
        k = (u8v)(ec > Z);
      }
      s = c & k;
      if (bits) bits[x0 >> 6] |= movemask(k) << (x0 & 63);
    }
    if (kp) {
      if (x0 < full) {
        st(kp + x0, k & One);
        st(sc + x0, s);
      } else {
        st(tmp_kp, k & One);
        st(tmp_sc, s);
        std::memcpy(kp + x0, tmp_kp, W - x0);
        std::memcpy(sc + x0, tmp_sc, W - x0);
      }
    }
  }
}

// FAST with or without suppression for rows [ya, yb) of an H x W image whose gray row y is at
// g + (y - ga) * gs for y in [max(ya - 4, 0), min(yb + 4, H)). Row y goes to kp/sc + (y - ya) * out_stride
// (when kp is not null) and to bits + (y - ya) * bits_stride (when bits is not null).
static void fast_rows(const uint8_t* g, int64_t gs, int64_t ga, int64_t H, int64_t W, int64_t ya, int64_t yb, int t,
                      bool nms, uint8_t* kp, uint8_t* sc, int64_t out_stride, uint64_t* bits, int64_t bits_stride) {
  const int64_t R = opencv::kFastRadius;
  if (H <= 2 * R || W <= 2 * R) {
    for (int64_t y = ya; y < yb; ++y) {
      if (kp) std::memset(kp + (y - ya) * out_stride, 0, W), std::memset(sc + (y - ya) * out_stride, 0, W);
      if (bits) std::memset(bits + (y - ya) * bits_stride, 0, sizeof(uint64_t) * ((W + 63) / 64));
    }
    return;
  }
  const int64_t Wr = (W + VB - 1) / VB * VB, Wp = Wr + 2 * VB;
  std::vector<uint8_t> buf(3 * Wp + 2 * VB, 0);
  uint8_t* slots[3] = {buf.data() + VB, buf.data() + Wp + VB, buf.data() + 2 * Wp + VB};
  uint8_t* tmp_kp = buf.data() + 3 * Wp;
  uint8_t* tmp_sc = tmp_kp + VB;
  auto slot = [&](int64_t y) { return slots[(y + 3) % 3]; };
  auto score_into = [&](int64_t y) {
    uint8_t* dst = slot(y);
    if (y < R || y >= H - R) {
      std::memset(dst, 0, W);
      return;
    }
    const uint8_t* rows[7];
    for (int k = 0; k < 7; ++k) rows[k] = g + (y - R + k - ga) * gs;
    score_row(rows, W, t, dst);
  };
  score_into(ya - 1);
  score_into(ya);
  for (int64_t y = ya; y < yb; ++y) {
    score_into(y + 1);
    uint8_t* k = kp ? kp + (y - ya) * out_stride : nullptr;
    uint8_t* s = kp ? sc + (y - ya) * out_stride : nullptr;
    uint64_t* b = bits ? bits + (y - ya) * bits_stride : nullptr;
    if (y < R || y >= H - R) {
      if (k) std::memset(k, 0, W), std::memset(s, 0, W);
      if (b) std::memset(b, 0, sizeof(uint64_t) * ((W + 63) / 64));
      continue;
    }
    nms_row(slot(y - 1), slot(y), slot(y + 1), W, nms, k, s, b, tmp_kp, tmp_sc);
  }
}

#if KF_ISA != 3  // AVX-512F implies FMA, which would contract the float un-normalisation: that copy uses AVX2's
// OpenCV's fixed-point gray of one row from three channel rows (uint8 values).
static void gray_row_u8(const uint8_t* __restrict c0, const uint8_t* __restrict c1, const uint8_t* __restrict c2,
                        int64_t W, int32_t w0, int32_t w1, int32_t w2, uint8_t* __restrict out) {
  for (int64_t x = 0; x < W; ++x)
    out[x] = static_cast<uint8_t>((c0[x] * w0 + c1[x] * w1 + c2[x] * w2 + opencv::kGrayRound) >> opencv::kGrayShift);
}

// The same from float32 channel rows, un-normalised first: round((x*std + mean)*255) clamped to [0, 255],
// NaN -> 0, in float32 in this order (channels_to_u8_ref); ties to even via the 2^23 trick. Vector lanes of
// float32 (the compiler does not vectorise the scalar loop); no FMA in this copy's target, so the product
// is rounded on its own as torch rounds it.
typedef float f32v __attribute__((vector_size(KF_VB)));
typedef int32_t i32v __attribute__((vector_size(KF_VB)));
typedef uint8_t u8q __attribute__((vector_size(KF_VB / 4)));
static inline f32v ldf(const float* p) {
  f32v v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// a < b ? a : b and a > b ? a : b (b where a is NaN): minps/maxps exactly; GCC makes a compare and a blend of the
// plain ternary.
static inline f32v min_lanes(f32v a, f32v b) {
#if KF_ISA == 2
  __m256 x, y;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y);
  x = _mm256_min_ps(x, y);
  std::memcpy(&a, &x, sizeof x);
  return a;
#elif KF_ISA == 1
  __m128 x, y;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y);
  x = _mm_min_ps(x, y);
  std::memcpy(&a, &x, sizeof x);
  return a;
#else
  return a < b ? a : b;
#endif
}
static inline f32v max_lanes(f32v a, f32v b) {
#if KF_ISA == 2
  __m256 x, y;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y);
  x = _mm256_max_ps(x, y);
  std::memcpy(&a, &x, sizeof x);
  return a;
#elif KF_ISA == 1
  __m128 x, y;
  std::memcpy(&x, &a, sizeof x), std::memcpy(&y, &b, sizeof y);
  x = _mm_max_ps(x, y);
  std::memcpy(&a, &x, sizeof x);
  return a;
#else
  return a > b ? a : b;
#endif
}

static inline f32v unnormalised(f32v x, float s, float m) { return (x * s + m) * 255.0f; }  // unclamped v
static inline f32v round_clamped(f32v v) {  // round(clamp(v, 0, 255)), ties to even; NaN -> 0
  const f32v magic = f32v{} + 8388608.0f;
  return (min_lanes(max_lanes(v, f32v{}), f32v{} + 255.0f) + magic) - magic;
}

// The normalisation check's statistics of one channel's lanes: x the values, v their unclamped un-normalised
// values, r = round_clamped(v) (the gray pass's own). Minimum and maximum of x (NaN lanes are skipped: the
// compare is false, as minps/maxps keep the accumulator), and -1 per lane where |v - r| > kGridTolerance
// (subtracted from `off`; NaN compares false: not counted). Four vector operations besides min and max.
struct LaneStats {
  f32v lo[3], hi[3];
  i32v off;  // all three channels
};
static inline void lane_stats(LaneStats& a, int c, f32v x, f32v v, f32v r) {
  a.lo[c] = min_lanes(x, a.lo[c]);
  a.hi[c] = max_lanes(x, a.hi[c]);
  const f32v d = (f32v)((i32v)(v - r) & 0x7fffffff);  // |v - r|
  a.off += (i32v)(d > kGridTolerance);
}
static inline void scalar_stats(ColourStats& st, int c, float x, float v, float r) {
  st.lo[c] = x < st.lo[c] ? x : st.lo[c];
  st.hi[c] = x > st.hi[c] ? x : st.hi[c];
  const float d = v - r;
  st.off += (d > kGridTolerance || d < -kGridTolerance) ? 1 : 0;
}

// Gray of L pixels at x (i32 lanes in [0, 255]); with kStats, their statistics into a.
template <bool kStats>
static inline i32v gray_lanes(const float* c0, const float* c1, const float* c2, int64_t x, const float* mean,
                              const float* std_, int32_t w0, int32_t w1, int32_t w2, LaneStats* a) {
  const f32v x0 = ldf(c0 + x), x1 = ldf(c1 + x), x2 = ldf(c2 + x);
  const f32v v0 = unnormalised(x0, std_[0], mean[0]), v1 = unnormalised(x1, std_[1], mean[1]),
             v2 = unnormalised(x2, std_[2], mean[2]);
  const f32v r0 = round_clamped(v0), r1 = round_clamped(v1), r2 = round_clamped(v2);
  if (kStats) {
    lane_stats(*a, 0, x0, v0, r0);
    lane_stats(*a, 1, x1, v1, r1);
    lane_stats(*a, 2, x2, v2, r2);
  }
  return (__builtin_convertvector(r0, i32v) * w0 + __builtin_convertvector(r1, i32v) * w1 +
          __builtin_convertvector(r2, i32v) * w2 + opencv::kGrayRound) >>
         opencv::kGrayShift;
}

// Four vectors of i32 lanes in [0, 255] -> 4 * L bytes at out, in order: two saturating packs (i32 -> i16 ->
// u8; AVX2 packs within 128-bit halves, so a dword permutation restores the order). GCC turns a plain
// __builtin_convertvector to u8 into one extract and shift per pixel.
static inline void store_u8x4(uint8_t* out, const i32v* g) {
#if KF_ISA == 2
  __m256i q[4];
  std::memcpy(q, g, sizeof q);
  const __m256i r = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                      _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
#elif KF_ISA == 1
  __m128i q[4];
  std::memcpy(q, g, sizeof q);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                   _mm_packus_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3])));
#else
  constexpr int L = KF_VB / 4;
  for (int k = 0; k < 4; ++k) {
    const u8q b = __builtin_convertvector(g[k], u8q);
    std::memcpy(out + k * L, &b, sizeof b);
  }
#endif
}

template <bool kStats>
static inline void gray_row_f32_impl(const float* __restrict c0, const float* __restrict c1,
                                     const float* __restrict c2, int64_t W, const float* mean, const float* std_,
                                     int32_t w0, int32_t w1, int32_t w2, uint8_t* __restrict out, ColourStats* st) {
  constexpr int L = KF_VB / 4;
  LaneStats a;
  for (int c = 0; c < 3; ++c) a.lo[c] = f32v{} + __builtin_inff(), a.hi[c] = f32v{} - __builtin_inff();
  a.off = i32v{};
  int64_t x = 0;
  for (; x + 4 * L <= W; x += 4 * L) {
    i32v g[4];
    for (int k = 0; k < 4; ++k) g[k] = gray_lanes<kStats>(c0, c1, c2, x + k * L, mean, std_, w0, w1, w2, &a);
    store_u8x4(out + x, g);
  }
  for (; x + L <= W; x += L) {
    const u8q b = __builtin_convertvector(gray_lanes<kStats>(c0, c1, c2, x, mean, std_, w0, w1, w2, &a), u8q);
    std::memcpy(out + x, &b, sizeof b);
  }
  if (kStats) {
    for (int i = 0; i < L; ++i) {
      for (int c = 0; c < 3; ++c) {
        st->lo[c] = a.lo[c][i] < st->lo[c] ? a.lo[c][i] : st->lo[c];
        st->hi[c] = a.hi[c][i] > st->hi[c] ? a.hi[c][i] : st->hi[c];
      }
      st->off -= a.off[i];
    }
  }
  for (; x < W; ++x) {
    const float* ch[3] = {c0, c1, c2};
    int32_t u[3];
    for (int c = 0; c < 3; ++c) {
      float v = ch[c][x] * std_[c];
#if defined(__FMA__) || !KF_X86
      __asm__("" : "+m"(v));  // the product rounded on its own, as in unnormalise
#endif
      v = (v + mean[c]) * 255.0f;
      float r = v > 0.0f ? v : 0.0f;
      r = r < 255.0f ? r : 255.0f;
      r = (r + 8388608.0f) - 8388608.0f;
      if (kStats) scalar_stats(*st, c, ch[c][x], v, r);
      u[c] = static_cast<int32_t>(r);
    }
    out[x] = static_cast<uint8_t>((u[0] * w0 + u[1] * w1 + u[2] * w2 + opencv::kGrayRound) >> opencv::kGrayShift);
  }
}

// Gray of float32 channel rows; with `st`, the normalisation check's statistics of the row merged into it.
static void gray_row_f32(const float* __restrict c0, const float* __restrict c1, const float* __restrict c2,
                         int64_t W, const float* mean, const float* std_, int32_t w0, int32_t w1, int32_t w2,
                         uint8_t* __restrict out, ColourStats* st) {
  if (st)
    gray_row_f32_impl<true>(c0, c1, c2, W, mean, std_, w0, w1, w2, out, st);
  else
    gray_row_f32_impl<false>(c0, c1, c2, W, mean, std_, w0, w1, w2, out, nullptr);
}
#endif

// --- keypoint bit rows -> covered pixels per cell ------------------------------------------------------
// Bit x of a row is pixel x (bit x % 64 of word x / 64). Rows hold nw >= (W + 63) / 64 + 1 words; bits at
// x >= W may be set by the dilations and are never counted.

static inline void shl_or(const uint64_t* a, int s, uint64_t* out, int64_t nw) {  // out |= a shifted to +x
  for (int64_t i = nw - 1; i > 0; --i) out[i] |= (a[i] << s) | (a[i - 1] >> (64 - s));
  out[0] |= a[0] << s;
}
static inline void shr_or(const uint64_t* a, int s, uint64_t* out, int64_t nw) {  // out |= a shifted to -x
  for (int64_t i = 0; i + 1 < nw; ++i) out[i] |= (a[i] >> s) | (a[i + 1] << (64 - s));
  out[nw - 1] |= a[nw - 1] >> s;
}
static inline uint64_t low_bits(int n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

// The number of set bits x in [a, b), b > a.
static inline int64_t popcount_range(const uint64_t* row, int64_t a, int64_t b) {
  const int64_t wa = a >> 6, wb = (b - 1) >> 6;
  const int oa = static_cast<int>(a & 63), ob = static_cast<int>((b - 1) & 63);
  if (wa == wb) return __builtin_popcountll((row[wa] >> oa) & low_bits(ob - oa + 1));
  int64_t n = __builtin_popcountll(row[wa] >> oa);
  for (int64_t w = wa + 1; w < wb; ++w) n += __builtin_popcountll(row[w]);
  return n + __builtin_popcountll(row[wb] & low_bits(ob + 1));
}

// cover[(cy - cy0) * (W / p) + cx] for cell rows [cy0, cy1): keypoints (ring == false) or pixels covered by
// the union of the drawKeypoints rings (ring == true) in each p x p cell. K holds the keypoint bit rows
// [ka, kb), nw words each, with ka <= max(cy0*p - 4, 0) and kb >= min(cy1*p + 4, H) for rings.
static void cover_from_bits(const uint64_t* K, int64_t nw, int64_t ka, int64_t kb, int64_t W, int64_t p,
                            int64_t cy0, int64_t cy1, bool ring, int32_t* cover) {
  const int64_t ncx = W / p, nk = kb - ka;
  std::fill(cover, cover + (cy1 - cy0) * ncx, 0);
  auto nonzero = [&](const uint64_t* row) {
    uint64_t o = 0;
    for (int64_t i = 0; i < nw; ++i) o |= row[i];
    return o != 0;
  };
  // The ring's rows as horizontal dilations of a keypoint row (checked against the constant at compile
  // time, see ring_is_dilations): |dy| = 4: [-1, 1]; 3: [-2, 2]; 2: [-3, 3]; <= 1: [-4, -2] and [2, 4].
  std::unique_ptr<uint64_t[]> dil(ring ? new uint64_t[4 * nk * nw] : nullptr);  // per keypoint row: D1, D2, D3, hollow
  std::vector<char> has(nk, 0);
  for (int64_t i = 0; i < nk; ++i) {
    const uint64_t* k = K + i * nw;
    if (!nonzero(k)) continue;
    has[i] = 1;
    if (!ring) continue;
    uint64_t* d1 = dil.get() + (4 * i) * nw;
    uint64_t *d2 = d1 + nw, *d3 = d2 + nw, *hl = d3 + nw;
    for (int64_t w = 0; w < nw; ++w) d1[w] = k[w], hl[w] = 0;
    shl_or(k, 1, d1, nw);
    shr_or(k, 1, d1, nw);
    for (int64_t w = 0; w < nw; ++w) d2[w] = d1[w];
    shl_or(d1, 1, d2, nw);
    shr_or(d1, 1, d2, nw);
    for (int64_t w = 0; w < nw; ++w) d3[w] = d2[w];
    shl_or(d2, 1, d3, nw);
    shr_or(d2, 1, d3, nw);
    for (int sft = 2; sft <= 4; ++sft) shl_or(k, sft, hl, nw), shr_or(k, sft, hl, nw);  // not from d1: clipped at x < 0
  }
  std::vector<uint64_t> row(nw), acc(nw);
  // Row y's covered pixels (or keypoints) into row; false when there are none.
  auto covered = [&](int64_t y) {
    if (!ring) {
      const int64_t j = y - ka;
      if (!has[j]) return false;
      std::memcpy(row.data(), K + j * nw, nw * sizeof(uint64_t));
      return true;
    }
    bool hit = false;
    for (int dy = -4; dy <= 4; ++dy) {
      const int64_t j = y + dy - ka;
      if (j < 0 || j >= nk || !has[j]) continue;
      const int ady = dy < 0 ? -dy : dy;
      const uint64_t* src = dil.get() + (4 * j + (ady == 4 ? 0 : ady == 3 ? 1 : ady == 2 ? 2 : 3)) * nw;
      if (!hit) {
        std::memcpy(row.data(), src, nw * sizeof(uint64_t));
        hit = true;
      } else {
        for (int64_t w = 0; w < nw; ++w) row[w] |= src[w];
      }
    }
    return hit;
  };
  const bool swar = p == 8 || p == 16 || p == 32 || p == 64;  // cells are aligned fields of the words
  for (int64_t cy = cy0; cy < cy1; ++cy) {
    int32_t* c = cover + (cy - cy0) * ncx;
    if (!swar) {
      for (int64_t y = cy * p; y < cy * p + p; ++y)
        if (covered(y))
          for (int64_t cx = 0; cx < ncx; ++cx)
            c[cx] += static_cast<int32_t>(popcount_range(row.data(), cx * p, cx * p + p));
      continue;
    }
    // Per-field bit counts of each row (SWAR), summed over the cell's p rows: fields of p bits hold <= p*p.
    std::fill(acc.begin(), acc.end(), 0);
    bool any_row = false;
    for (int64_t y = cy * p; y < cy * p + p; ++y) {
      if (!covered(y)) continue;
      any_row = true;
      for (int64_t w = 0; w < nw; ++w) {
        uint64_t x = row[w];
        if (p == 64) {
          acc[w] += static_cast<uint64_t>(__builtin_popcountll(x));
          continue;
        }
        x = x - ((x >> 1) & 0x5555555555555555ull);
        x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;  // counts per 8 bits
        if (p >= 16) x = (x + (x >> 8)) & 0x00FF00FF00FF00FFull;
        if (p >= 32) x = (x + (x >> 16)) & 0x0000FFFF0000FFFFull;
        acc[w] += x;
      }
    }
    if (!any_row) continue;
    const uint64_t field = low_bits(static_cast<int>(p));
    for (int64_t cx = 0; cx < ncx; ++cx) {
      const int64_t bit = cx * p;
      c[cx] = static_cast<int32_t>((acc[bit >> 6] >> (bit & 63)) & field);
    }
  }
}

// Bits of a bool/uint8 row (bit x set where row[x] != 0) OR-ed into out (zeroed by the caller).
static void bool_row_bits(const uint8_t* row, int64_t W, uint64_t* out) {
  int64_t x = 0;
  for (; x + VB <= W; x += VB) out[x >> 6] |= movemask((u8v)(ld(row + x) != u8v{})) << (x & 63);
  for (; x < W; ++x)
    if (row[x]) out[x >> 6] |= uint64_t{1} << (x & 63);
}

}  // namespace kamim_fast::cpu::KF_NS
