// Streaming CPU kernels for additive attention (docs/design.md §1); built and loaded by additive_stream.py.
//
// Plain C++17 with OpenMP and no torch headers: the .py builds this file with the system compiler into a cached
// shared library and calls the extern "C" entry points at the bottom through ctypes, passing raw pointers,
// sizes and strides. Every pass streams its column once, in blocks of TB tokens: the block's scores (dot
// products with a per-(b, h) vector) are taken from memory, the softmax weights of the whole block are computed
// at once, and the block is read again from L1/L2 to accumulate. Reductions over tokens are split in chunks of
// N (tasks for the threads), each an online softmax, combined at the end of the call.
//
// Two code paths: a generic one for every element type (float, double, bfloat16, float16; accumulation in float,
// double for double) and, for float with Dh % 8 == 0, one written with explicit 8-float vectors (GCC / clang
// vector extensions, AVX intrinsics where available): scores of eight tokens at a time, a vector exp, register-
// resident accumulators, and streaming stores for large outputs.
//
// Layout: x is one column [B, N, D] with element strides (sb, sn, 1); the mask is bytes (0 = padding) with
// strides (mb, mn); small vectors (score vectors, global vectors, statistics) are contiguous in the
// accumulation type A; outputs written here are contiguous [B, N, D]. Padding is never read.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#if defined(__AVX__)
#include <immintrin.h>
#endif

typedef int64_t i64;

namespace {

// Tokens per block: 16 rows of D = 512 floats are 32 KiB, what L1 holds while the block is read a second time.
constexpr i64 TB = 16;
static_assert(TB % 8 == 0, "the float path scores tokens in groups of eight within a block");

struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// IEEE half <-> float, branch-free (after Maratyszcza's FP16 library), round to nearest even.
inline float half_to_float(uint16_t h) {
  const uint32_t w = (uint32_t)h << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = bits_to_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = bits_to_f32((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t r = sign | (two_w < (1u << 27) ? f32_to_bits(denormalized) : f32_to_bits(normalized));
  return bits_to_f32(r);
}

inline uint16_t float_to_half(float f) {
  float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = f32_to_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_to_f32((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_to_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = f32_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);  // NaN stays NaN
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// Element type T -> accumulation type A and back.
template <class T> struct Cvt;
template <> struct Cvt<float> {
  typedef float A;
  static inline float ld(float v) { return v; }
  static inline float st(float a) { return a; }
};
template <> struct Cvt<double> {
  typedef double A;
  static inline double ld(double v) { return v; }
  static inline double st(double a) { return a; }
};
template <> struct Cvt<bf16_t> {
  typedef float A;
  static inline float ld(bf16_t v) { return bits_to_f32((uint32_t)v.bits << 16); }
  static inline bf16_t st(float a) { return bf16_t{float_to_bf16(a)}; }
};
template <> struct Cvt<f16_t> {
  typedef float A;
  static inline float ld(f16_t v) { return half_to_float(v.bits); }
  static inline f16_t st(float a) { return f16_t{float_to_half(a)}; }
};

// exp for softmax weights, arguments <= 0 (a score minus a running maximum). float: Cephes' expf polynomial
// after rounding x / ln 2 to an integer n (about 1 ulp), 2^n put into the exponent bits; branch-free so the
// block loops vectorise. Below -87.3 the result (< 2^-126) is returned as 0, and so is exp(-inf).
inline float fexp(float x) {
  const float lo = -87.3f, hi = 88.0f;
  const bool tiny = !(x >= lo);  // -inf too
  float xc = x < lo ? lo : x;  // value selects, not std::min/max (references): the loops stay branch-free
  xc = xc > hi ? hi : xc;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (round to nearest)
  float t = xc * 1.44269504088896341f + magic;
  float n = t - magic;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t e = (int32_t)n + 127;
  const float p2 = bits_to_f32((uint32_t)e << 23);
  return tiny ? 0.0f : y * p2;
}
inline double fexp(double x) { return std::exp(x); }

template <class A> inline A neg_inf() { return -std::numeric_limits<A>::infinity(); }

// Passes over fewer elements than this run on one thread: waking the others would cost more.
constexpr i64 kParallelMin = 1 << 15;

inline i64 cdiv(i64 a, i64 b) { return (a + b - 1) / b; }

// Chunks of N per batch row for the reductions: one per row on one thread; with more threads enough tasks to
// balance them (about 4 per thread), each at least 256 tokens. chunk_n > 0 forces the chunk size (tests).
inline i64 chunks_per_row(i64 B, i64 N, int nt, i64 chunk_n) {
  if (chunk_n > 0) return cdiv(N, chunk_n);
  if (nt <= 1) return 1;
  const i64 want = cdiv(4 * (i64)nt, B);
  return std::max<i64>(1, std::min<i64>(want, N / 256));
}

inline bool is_real(const uint8_t* mask, i64 mb, i64 mn, i64 b, i64 n) {
  return mask == nullptr || mask[b * mb + n * mn] != 0;
}

template <class T, class A>
inline A dot(const T* x, const A* v, i64 n) {
  A s = 0;
#pragma omp simd reduction(+ : s)
  for (i64 d = 0; d < n; ++d) s += Cvt<T>::ld(x[d]) * v[d];
  return s;
}

// Fold per-chunk online-softmax partials (m, l, acc) of one (b, h) into the row's m, l and acc / l (nch >= 1).
template <class A>
void combine(const A* pm, const A* pl, const A* pacc, i64 nch, i64 H, i64 D, i64 h, i64 Dh,
             A* m_out, A* l_out, A* u_out) {
  A M = neg_inf<A>();
  for (i64 k = 0; k < nch; ++k) M = std::max(M, pm[k * H + h]);
  A L = 0;
  A* u = u_out;
  for (i64 d = 0; d < Dh; ++d) u[d] = 0;
  for (i64 k = 0; k < nch; ++k) {
    const A mk = pm[k * H + h];
    if (mk == neg_inf<A>()) continue;  // a chunk of padding only
    const A sc = fexp(mk - M);
    L += sc * pl[k * H + h];
    const A* acc = pacc + k * D + h * Dh;
    for (i64 d = 0; d < Dh; ++d) u[d] += sc * acc[d];
  }
  const A inv = L > 0 ? A(1) / L : A(0);
  for (i64 d = 0; d < Dh; ++d) u[d] *= inv;
  *m_out = M;
  *l_out = L;
}


// ------------------------------------------------------------------------------ float fast path (Dh % 8 == 0)
// Explicit 8-float vectors (GCC / clang vector extensions; any ISA): per (block, head, tile of up to 64
// floats) the accumulators stay in registers while the block's rows stream past them.

typedef float v8f __attribute__((vector_size(32), aligned(4), may_alias));

typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f ld8(const float* p) { return *(const v8f*)p; }
inline void st8(float* p, v8f v) { *(v8f*)p = v; }
inline v8f splat8(float a) { return v8f{a, a, a, a, a, a, a, a}; }
inline float hsum8(v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// The eight horizontal sums of a[0..7], as one vector: r[i] = sum of the lanes of a[i].
inline v8f reduce8(const v8f* a) {
#if defined(__AVX__)
  const __m256 t0 = _mm256_hadd_ps((__m256)a[0], (__m256)a[1]), t1 = _mm256_hadd_ps((__m256)a[2], (__m256)a[3]);
  const __m256 t2 = _mm256_hadd_ps((__m256)a[4], (__m256)a[5]), t3 = _mm256_hadd_ps((__m256)a[6], (__m256)a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return (v8f)_mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
#else
  v8f r;
  for (int i = 0; i < 8; ++i) r[i] = hsum8(a[i]);
  return r;
#endif
}

inline v8f select8(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }

// Stores of results nobody reads soon (outputs and gradients larger than the caches): non-temporal stores
// skip the read-for-ownership of each destination line, a third of a streaming pass's traffic. Destinations
// must be 32-byte aligned; each thread fences its own stores before the kernel returns.
#if defined(__AVX__)
constexpr bool kHaveStreamingStores = true;
template <bool NT> inline void put8(float* p, v8f v) {
  if constexpr (NT) _mm256_stream_ps(p, (__m256)v); else st8(p, v);
}
inline void store_fence() { _mm_sfence(); }
#else
constexpr bool kHaveStreamingStores = false;
template <bool NT> inline void put8(float* p, v8f v) { st8(p, v); }
inline void store_fence() {}
#endif

// Outputs at least this large (bytes) are written with streaming stores: they would not stay in cache anyway.
constexpr i64 kStreamMin = i64(16) << 20;

inline bool use_streaming_stores(const void* dst, i64 D, i64 elems) {
  return kHaveStreamingStores && dst != nullptr && D % 8 == 0 && (uintptr_t)dst % 32 == 0 &&
         elems * (i64)sizeof(float) >= kStreamMin;
}

// fexp on eight lanes with explicit vector operations (the scalar version does not vectorise reliably).
inline v8f exp8(v8f x) {
  const v8f lo = splat8(-87.3f), hi = splat8(88.0f), magic = splat8(12582912.0f);
  const v8i tiny = (v8i)(x < lo);  // -inf too
  v8f xc = select8(tiny, lo, x);
  xc = select8((v8i)(xc > hi), hi, xc);
  const v8f t = xc * splat8(1.44269504088896341f) + magic;
  const v8f n = t - magic;
  v8f r = xc - n * splat8(0.693359375f);
  r = r - n * splat8(-2.12194440e-4f);
  v8f y = splat8(1.9875691500e-4f);
  y = y * r + splat8(1.3981999507e-3f);
  y = y * r + splat8(8.3334519073e-3f);
  y = y * r + splat8(4.1665795894e-2f);
  y = y * r + splat8(1.6666665459e-1f);
  y = y * r + splat8(5.0000001201e-1f);
  y = y * r * r + r + splat8(1.0f);
  const v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  return (v8f)((v8i)(y * (v8f)e) & ~tiny);
}

// The online-softmax step of one block for the float path: per head, the block maximum (padding is -inf, and
// so is every slot of the last group past the block's end), a rescale of the chunk's l and acc when the
// running maximum rises, then p = exp(s - m) and l += sum p, eight tokens at a time.
inline void softmax_block_f32(const float* s, float* p, i64 tn, i64 H, i64 Dh, float* m, float* l, float* acc) {
  const i64 tg = (tn + 7) / 8 * 8;
  for (i64 h = 0; h < H; ++h) {
    const float* sh = s + h * TB;
    float* ph = p + h * TB;
    v8f bmv = splat8(-std::numeric_limits<float>::infinity());
    for (i64 t = 0; t < tg; t += 8) {
      const v8f sv = ld8(sh + t);
      bmv = select8((v8i)(sv > bmv), sv, bmv);
    }
    float bm = bmv[0];
    for (int i = 1; i < 8; ++i) bm = bmv[i] > bm ? bmv[i] : bm;
    if (bm > m[h]) {
      const float sc = m[h] == -std::numeric_limits<float>::infinity() ? 0.0f : fexp(m[h] - bm);
      l[h] *= sc;
      for (i64 d = 0; d < Dh; ++d) acc[h * Dh + d] *= sc;
      m[h] = bm;
    }
    const v8f mh = splat8(m[h]);
    v8f sum = splat8(0);
    for (i64 t = 0; t < tg; t += 8) {
      const v8f e = exp8(ld8(sh + t) - mh);
      st8(ph + t, e);
      sum += e;
    }
    l[h] += hsum8(sum);
  }
}

// Rows of up to 8 tokens starting at t0: the block's row pointers, padded with row t0 past the block's end.
inline void group_rows(const float* rows, i64 sn, i64 t0, i64 tn, const float** r) {
  for (i64 i = 0; i < 8; ++i) r[i] = rows + (t0 + i < tn ? t0 + i : t0) * sn;
}

// Blocks ahead of the one being scored whose lines scores_f32 requests into L2 (prefetcht1). Scoring reads a
// group's eight rows side by side, eight interleaved streams 2 KiB apart that the hardware prefetchers follow
// poorly (measured: docs/design.md §1.4).
constexpr i64 kPrefetchBlocks = 2;

// s[h * TB + t] = <row_t[h], v[h]> for the block's rows (-inf for padding), eight tokens at a time so that each
// head's vector is loaded once per eight rows and the eight sums are reduced together.
inline void scores_f32(const float* rows, i64 sn, i64 tn, const uint8_t* real, i64 H, i64 Dh,
                       const float* __restrict v, float* __restrict s) {
  for (i64 t0 = 0; t0 < tn; t0 += 8) {
    bool any = false;
    for (i64 t = t0; t < std::min(tn, t0 + 8); ++t) any |= real[t] != 0;
    if (!any) {  // all padding: not even read
      for (i64 h = 0; h < H; ++h) st8(s + h * TB + t0, splat8(-std::numeric_limits<float>::infinity()));
      continue;
    }
    const float* r[8];
    group_rows(rows, sn, t0, tn, r);
    v8i keep;  // all ones for the group's real tokens, 0 for padding
    for (i64 i = 0; i < 8; ++i) keep[i] = t0 + i < tn && real[t0 + i] ? -1 : 0;
    const v8i ninf = (v8i)splat8(-std::numeric_limits<float>::infinity());
    for (i64 h = 0; h < H; ++h) {
      v8f a[8];
      for (int i = 0; i < 8; ++i) a[i] = splat8(0);
      const i64 o = h * Dh;
      for (i64 d = 0; d < Dh; d += 8) {
        const v8f vv = ld8(v + o + d);
        if (d % 16 == 0) {  // one request per 64-byte line; a prefetch past the end of x never faults
#pragma GCC unroll 8
          for (int i = 0; i < 8; ++i) __builtin_prefetch(r[i] + kPrefetchBlocks * TB * sn + o + d, 0, 2);
        }
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) a[i] += ld8(r[i] + o + d) * vv;
      }
      const v8i sums = (v8i)reduce8(a);
      st8(s + h * TB + t0, (v8f)((sums & keep) | (ninf & ~keep)));  // TB % 8 == 0: the group fits
    }
  }
}

// acc[0 : 8 NV] += sum_t p[t] rows_t[0 : 8 NV] over the block's real rows.
template <int NV, bool ALL_REAL>
inline void accumulate_tile_f32(float* acc, const float* rows, i64 sn, i64 tn, const uint8_t* real,
                                const float* p) {
  v8f a[NV];
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) a[i] = ld8(acc + 8 * i);
  for (i64 t = 0; t < tn; ++t) {
    if (!ALL_REAL && !real[t]) continue;
    const float* r = rows + t * sn;
    const v8f pt = splat8(p[t]);
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) a[i] += pt * ld8(r + 8 * i);
  }
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) st8(acc + 8 * i, a[i]);
}

template <bool ALL_REAL>
inline void accumulate_f32(float* acc, const float* rows, i64 sn, i64 tn, const uint8_t* real, i64 H, i64 Dh,
                           const float* p) {
  for (i64 h = 0; h < H; ++h) {
    const i64 nv = Dh / 8;
    const float* ph = p + h * TB;
    i64 k = 0;
    auto tile = [&](auto width) {
      constexpr int NV = decltype(width)::value;
      accumulate_tile_f32<NV, ALL_REAL>(acc + h * Dh + 8 * k, rows + h * Dh + 8 * k, sn, tn, real, ph);
      k += NV;
    };
    while (k + 8 <= nv) tile(std::integral_constant<int, 8>());
    if (k + 4 <= nv) tile(std::integral_constant<int, 4>());
    if (k + 2 <= nv) tile(std::integral_constant<int, 2>());
    if (k + 1 <= nv) tile(std::integral_constant<int, 1>());
  }
}

// s[h * TB + t] = <row_t[h], v[h]> and da[h * TB + t] = <row_t[h], du[h]>, four tokens at a time (as
// scores_f32); padding, and every slot up to the next multiple of eight, gets s = -inf and da = 0.
inline void scores2_f32(const float* rows, i64 sn, i64 tn, const uint8_t* real, i64 H, i64 Dh,
                        const float* __restrict v, const float* __restrict du, float* __restrict s,
                        float* __restrict da) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const i64 tg = (tn + 7) / 8 * 8;
  for (i64 t0 = 0; t0 < tg; t0 += 4) {
    bool any = false;
    for (i64 t = t0; t < std::min(tn, t0 + 4); ++t) any |= real[t] != 0;
    if (!any) {  // all padding (or past the block): not even read
      for (i64 h = 0; h < H; ++h)
        for (i64 i = 0; i < 4; ++i) { s[h * TB + t0 + i] = ninf; da[h * TB + t0 + i] = 0; }
      continue;
    }
    const float* r[4];
    for (i64 i = 0; i < 4; ++i) r[i] = rows + (t0 + i < tn ? t0 + i : t0) * sn;
    v8i keep;  // lanes i and 4 + i: all ones when token t0 + i is real
    for (i64 i = 0; i < 4; ++i) keep[i] = keep[4 + i] = t0 + i < tn && real[t0 + i] ? -1 : 0;
    const v8f pad = {ninf, ninf, ninf, ninf, 0, 0, 0, 0};
    for (i64 h = 0; h < H; ++h) {
      v8f a[8];  // a[0..3]: scores of the four rows, a[4..7]: their products with du
      for (int i = 0; i < 8; ++i) a[i] = splat8(0);
      const i64 o = h * Dh;
      for (i64 d = 0; d < Dh; d += 8) {
        const v8f vv = ld8(v + o + d), dd = ld8(du + o + d);
        if (d % 16 == 0) {  // as in scores_f32: the four rows are interleaved streams
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) __builtin_prefetch(r[i] + kPrefetchBlocks * TB * sn + o + d, 0, 2);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          const v8f xv = ld8(r[i] + o + d);
          a[i] += xv * vv;
          a[4 + i] += xv * dd;
        }
      }
      const v8f sums = select8(keep, reduce8(a), pad);
      for (int i = 0; i < 4; ++i) {
        s[h * TB + t0 + i] = sums[i];
        da[h * TB + t0 + i] = sums[4 + i];
      }
    }
  }
}

// Softmax weights back from the saved statistics, in place: s <- a = exp(s - m) / l, da <- ds = a (da - delta),
// eight tokens at a time (padding: s = -inf and da = 0 give a = ds = 0).
inline void softmax_backward_block_f32(float* s, float* da, i64 tn, i64 H, const float* m, const float* l,
                                       const float* delta) {
  const i64 tg = (tn + 7) / 8 * 8;
  for (i64 h = 0; h < H; ++h) {
    const v8f mh = splat8(m[h]), inv = splat8(1.0f / l[h]), dl = splat8(delta[h]);
    for (i64 t = 0; t < tg; t += 8) {
      const v8f a = exp8(ld8(s + h * TB + t) - mh) * inv;
      st8(s + h * TB + t, a);
      st8(da + h * TB + t, a * (ld8(da + h * TB + t) - dl));
    }
  }
}

// Backward over one block, given a = softmax weights and ds per (head, token): dv += sum_t ds_t row_t (loads
// only, accumulators in registers, as the forward's accumulate), then, when dx is given, dx_t = a_t du + ds_t v
// row after row (stores only; 0 at padding). Keeping loads and stores in separate loops matters: interleaved,
// the loads of x rows wait behind stores to dx rows whose addresses agree modulo 4 KiB (rows of 2 KiB, and
// buffers alike modulo 4 KiB), which cost a third of the time.
template <bool ALL_REAL, bool NT>
inline void backward_block_f32(float* dv, const float* rows, i64 sn, float* dx, i64 dxn, i64 tn,
                               const uint8_t* real, i64 H, i64 Dh, const float* a, const float* ds,
                               const float* du, const float* v) {
  accumulate_f32<ALL_REAL>(dv, rows, sn, tn, real, H, Dh, ds);
  if (!dx) return;
  for (i64 t = 0; t < tn; ++t) {
    float* o = dx + t * dxn;
    if (!ALL_REAL && !real[t]) {
      for (i64 d = 0; d < H * Dh; d += 8) put8<NT>(o + d, splat8(0));
      continue;
    }
    for (i64 h = 0; h < H; ++h) {
      const v8f at = splat8(a[h * TB + t]), dst = splat8(ds[h * TB + t]);
      const i64 o0 = h * Dh;
      for (i64 d = o0; d < o0 + Dh; d += 8) put8<NT>(o + d, at * ld8(du + d) + dst * ld8(v + d));
    }
  }
}

template <class T> constexpr bool fast_f32() { return std::is_same<T, float>::value; }

// ---------------------------------------------------------------------------------------------- forward

// For every (b, h): m = max_n s_n, l = sum_n exp(s_n - m), u = sum_n softmax(s)_n x[b, n, h, :], where
// s_n = <x[b, n, h, :], v[b, h, :]> (v carries the 1/sqrt(Dh) and, past column 0, the previous global vector).
template <class T>
void pool(const T* x, i64 sb, i64 sn, i64 B, i64 N, i64 H, i64 Dh, const typename Cvt<T>::A* v,
          const uint8_t* mask, i64 mb, i64 mn, typename Cvt<T>::A* m_out, typename Cvt<T>::A* l_out,
          typename Cvt<T>::A* u_out, int nt, i64 chunk_n) {
  typedef typename Cvt<T>::A A;
  const i64 D = H * Dh;
  const i64 nch = chunks_per_row(B, N, nt, chunk_n);
  const i64 chunk = cdiv(N, nch);
  std::vector<A> pm(B * nch * H), pl(B * nch * H), pacc(B * nch * D);
  const bool vec8 = fast_f32<T>() && Dh % 8 == 0;
#pragma omp parallel num_threads(nt) if (nt > 1 && B * nch > 1 && B * N * D >= kParallelMin)
  {
    std::vector<A> s(TB * H), p(TB * H);
    uint8_t real[TB];
#pragma omp for schedule(static)
    for (i64 task = 0; task < B * nch; ++task) {
      const i64 b = task / nch, n0 = (task % nch) * chunk, n1 = std::min(N, n0 + chunk);
      A* m = pm.data() + task * H;
      A* l = pl.data() + task * H;
      A* acc = pacc.data() + task * D;
      for (i64 h = 0; h < H; ++h) { m[h] = neg_inf<A>(); l[h] = 0; }
      for (i64 d = 0; d < D; ++d) acc[d] = 0;
      const A* vb = v + b * D;
      for (i64 nb = n0; nb < n1; nb += TB) {
        const i64 tn = std::min(TB, n1 - nb);
        i64 nreal = 0;
        for (i64 t = 0; t < tn; ++t) {
          real[t] = is_real(mask, mb, mn, b, nb + t);
          nreal += real[t] != 0;
        }
        if (nreal == 0) continue;
        const T* rows = x + b * sb + nb * sn;
        if constexpr (fast_f32<T>()) {
          if (vec8) scores_f32(rows, sn, tn, real, H, Dh, vb, s.data());
        }
        if (!vec8) {
          for (i64 t = 0; t < tn; ++t)
            for (i64 h = 0; h < H; ++h)
              s[h * TB + t] = real[t] ? dot(rows + t * sn + h * Dh, vb + h * Dh, Dh) : neg_inf<A>();
        }
        if constexpr (fast_f32<T>()) {
          if (vec8) softmax_block_f32(s.data(), p.data(), tn, H, Dh, m, l, acc);
        }
        for (i64 h = 0; h < H && !vec8; ++h) {
          A* sh = s.data() + h * TB;
          A* ph = p.data() + h * TB;
          A bm = neg_inf<A>();  // padding scores are -inf: their weights below are exactly 0
          for (i64 t = 0; t < tn; ++t) bm = sh[t] > bm ? sh[t] : bm;
          if (bm > m[h]) {  // a new running maximum: rescale what this chunk accumulated so far
            const A sc = m[h] == neg_inf<A>() ? A(0) : fexp(m[h] - bm);
            l[h] *= sc;
            for (i64 d = 0; d < Dh; ++d) acc[h * Dh + d] *= sc;
            m[h] = bm;
          }
          const A mh = m[h];
          A sum = 0;
#pragma omp simd reduction(+ : sum)
          for (i64 t = 0; t < tn; ++t) {
            ph[t] = fexp(sh[t] - mh);
            sum += ph[t];
          }
          l[h] += sum;
        }
        if constexpr (fast_f32<T>()) {
          if (vec8) {  // padding is never read: garbage (inf, nan) there must not leak
            if (nreal == tn) accumulate_f32<true>(acc, rows, sn, tn, real, H, Dh, p.data());
            else accumulate_f32<false>(acc, rows, sn, tn, real, H, Dh, p.data());
            continue;
          }
        }
        for (i64 t = 0; t < tn; ++t) {
          if (!real[t]) continue;  // never read padding: garbage (inf, nan) there must not leak
          const T* row = rows + t * sn;
          for (i64 h = 0; h < H; ++h) {
            const A pt = p[h * TB + t];
            A* ah = acc + h * Dh;
            const T* rh = row + h * Dh;
#pragma omp simd
            for (i64 d = 0; d < Dh; ++d) ah[d] += pt * Cvt<T>::ld(rh[d]);
          }
        }
      }
    }
  }
  for (i64 b = 0; b < B; ++b)
    for (i64 h = 0; h < H; ++h)
      combine(pm.data() + b * nch * H, pl.data() + b * nch * H, pacc.data() + b * nch * D, nch, H, D, h, Dh,
              m_out + b * H + h, l_out + b * H + h, u_out + b * D + h * Dh);
}

// out[b, n, :] = x[b, n, :] * g[b, :], 0 at padding; out contiguous [B, N, D].
template <bool NT>
inline void output_row_f32(const float* row, const float* g, float* o, i64 D, bool real) {
  if (!real) {
    for (i64 d = 0; d < D; d += 8) put8<NT>(o + d, splat8(0));
    return;
  }
  for (i64 d = 0; d < D; d += 8) put8<NT>(o + d, ld8(row + d) * ld8(g + d));
}

template <class T>
void output(const T* x, i64 sb, i64 sn, i64 B, i64 N, i64 D, const typename Cvt<T>::A* g, const uint8_t* mask,
            i64 mb, i64 mn, T* out, int nt) {
  typedef typename Cvt<T>::A A;
  const bool vec8 = fast_f32<T>() && D % 8 == 0;
  const bool nt_out = vec8 && use_streaming_stores(out, D, B * N * D);
  const i64 rows_per_task = 64;
  const i64 tasks = cdiv(B * N, rows_per_task);
#pragma omp parallel for num_threads(nt) if (nt > 1 && tasks > 1 && B * N * D >= kParallelMin) schedule(static)
  for (i64 task = 0; task < tasks; ++task) {
    for (i64 r = task * rows_per_task; r < std::min(B * N, (task + 1) * rows_per_task); ++r) {
      const i64 b = r / N, n = r % N;
      T* o = out + r * D;
      const bool real = is_real(mask, mb, mn, b, n);
      const T* row = x + b * sb + n * sn;
      const A* gb = g + b * D;
      if constexpr (fast_f32<T>()) {
        if (vec8) {
          if (nt_out) output_row_f32<true>(row, gb, o, D, real);
          else output_row_f32<false>(row, gb, o, D, real);
          continue;
        }
      }
      if (!real) {
        for (i64 d = 0; d < D; ++d) o[d] = Cvt<T>::st(A(0));
        continue;
      }
#pragma omp simd
      for (i64 d = 0; d < D; ++d) o[d] = Cvt<T>::st(Cvt<T>::ld(row[d]) * gb[d]);
    }
    if (nt_out) store_fence();
  }
}

// --------------------------------------------------------------------------------------------- backward

// The output pass backwards: dx = dout * g (0 at padding) when dx is given, and dg = sum_n dout * x over real
// tokens. dout has element strides (ob, on, 1).
template <bool NT>
inline void backward_last_row_f32(const float* row, const float* go, const float* g, float* dg, float* dxr, i64 D) {
  if (dxr) {
    for (i64 d = 0; d < D; d += 8) {
      const v8f gd = ld8(go + d);
      st8(dg + d, ld8(dg + d) + gd * ld8(row + d));
      put8<NT>(dxr + d, gd * ld8(g + d));
    }
  } else {
    for (i64 d = 0; d < D; d += 8) st8(dg + d, ld8(dg + d) + ld8(go + d) * ld8(row + d));
  }
}

template <class T>
void backward_last(const T* x, i64 sb, i64 sn, const T* dout, i64 ob, i64 on, i64 B, i64 N, i64 D,
                   const typename Cvt<T>::A* g, const uint8_t* mask, i64 mb, i64 mn, T* dx,
                   typename Cvt<T>::A* dg_out, int nt, i64 chunk_n) {
  typedef typename Cvt<T>::A A;
  const i64 nch = chunks_per_row(B, N, nt, chunk_n);
  const i64 chunk = cdiv(N, nch);
  const bool vec8 = fast_f32<T>() && D % 8 == 0;
  const bool nt_dx = vec8 && use_streaming_stores(dx, D, B * N * D);
  std::vector<A> part(B * nch * D);
#pragma omp parallel for num_threads(nt) if (nt > 1 && B * nch > 1 && B * N * D >= kParallelMin) schedule(static)
  for (i64 task = 0; task < B * nch; ++task) {
    const i64 b = task / nch, n0 = (task % nch) * chunk, n1 = std::min(N, n0 + chunk);
    A* dg = part.data() + task * D;
    for (i64 d = 0; d < D; ++d) dg[d] = 0;
    const A* gb = g + b * D;
    for (i64 n = n0; n < n1; ++n) {
      T* dxr = dx ? dx + (b * N + n) * D : nullptr;
      if (!is_real(mask, mb, mn, b, n)) {
        if (dxr) for (i64 d = 0; d < D; ++d) dxr[d] = Cvt<T>::st(A(0));
        continue;
      }
      const T* row = x + b * sb + n * sn;
      const T* go = dout + b * ob + n * on;
      if constexpr (fast_f32<T>()) {
        if (vec8) {
          if (nt_dx) backward_last_row_f32<true>(row, go, gb, dg, dxr, D);
          else backward_last_row_f32<false>(row, go, gb, dg, dxr, D);
          continue;
        }
      }
      if (dxr) {
#pragma omp simd
        for (i64 d = 0; d < D; ++d) {
          const A gd = Cvt<T>::ld(go[d]);
          dg[d] += gd * Cvt<T>::ld(row[d]);
          dxr[d] = Cvt<T>::st(gd * gb[d]);
        }
      } else {
#pragma omp simd
        for (i64 d = 0; d < D; ++d) dg[d] += Cvt<T>::ld(go[d]) * Cvt<T>::ld(row[d]);
      }
    }
    if (nt_dx) store_fence();
  }
  for (i64 b = 0; b < B; ++b) {
    A* o = dg_out + b * D;
    for (i64 d = 0; d < D; ++d) o[d] = 0;
    for (i64 k = 0; k < nch; ++k) {
      const A* pk = part.data() + (b * nch + k) * D;
      for (i64 d = 0; d < D; ++d) o[d] += pk[d];
    }
  }
}

// One pooled column backwards, recomputing its softmax from the saved statistics (m, l) and score vector v:
//   a_n = exp(<x_n, v> - m) / l,  ds_n = a_n (<x_n, du> - delta),  delta = <du, u>
//   dx_n = a_n du + ds_n v (0 at padding; when dx is given),  dv = sum_n ds_n x_n.
template <class T>
void backward_column(const T* x, i64 sb, i64 sn, i64 B, i64 N, i64 H, i64 Dh, const typename Cvt<T>::A* v,
                     const typename Cvt<T>::A* m, const typename Cvt<T>::A* l, const typename Cvt<T>::A* du,
                     const typename Cvt<T>::A* delta, const uint8_t* mask, i64 mb, i64 mn, T* dx,
                     typename Cvt<T>::A* dv_out, int nt, i64 chunk_n) {
  typedef typename Cvt<T>::A A;
  const i64 D = H * Dh;
  const i64 nch = chunks_per_row(B, N, nt, chunk_n);
  const i64 chunk = cdiv(N, nch);
  std::vector<A> part(B * nch * D);
  const bool vec8 = fast_f32<T>() && Dh % 8 == 0;
  const bool nt_dx = vec8 && use_streaming_stores(dx, D, B * N * D);
#pragma omp parallel num_threads(nt) if (nt > 1 && B * nch > 1 && B * N * D >= kParallelMin)
  {
    std::vector<A> s((TB + 8) * H), da((TB + 8) * H);
    uint8_t real[TB];
#pragma omp for schedule(static)
    for (i64 task = 0; task < B * nch; ++task) {
      const i64 b = task / nch, n0 = (task % nch) * chunk, n1 = std::min(N, n0 + chunk);
      A* dv = part.data() + task * D;
      for (i64 d = 0; d < D; ++d) dv[d] = 0;
      const A* vb = v + b * D;
      const A* dub = du + b * D;
      for (i64 nb = n0; nb < n1; nb += TB) {
        const i64 tn = std::min(TB, n1 - nb);
        for (i64 t = 0; t < tn; ++t) real[t] = is_real(mask, mb, mn, b, nb + t);
        const T* rows = x + b * sb + nb * sn;
        if constexpr (fast_f32<T>()) {
          if (vec8) scores2_f32(rows, sn, tn, real, H, Dh, vb, dub, s.data(), da.data());
        }
        for (i64 t = 0; t < tn && !vec8; ++t) {
          const T* row = rows + t * sn;
          for (i64 h = 0; h < H; ++h) {
            A sv = 0, sd = 0;
            if (real[t]) {
              const T* rh = row + h * Dh;
              const A* vh = vb + h * Dh;
              const A* duh = dub + h * Dh;
#pragma omp simd reduction(+ : sv, sd)
              for (i64 d = 0; d < Dh; ++d) {
                const A xv = Cvt<T>::ld(rh[d]);
                sv += xv * vh[d];
                sd += xv * duh[d];
              }
            }
            s[h * TB + t] = sv;
            da[h * TB + t] = sd;
          }
        }
        if constexpr (fast_f32<T>()) {
          if (vec8) softmax_backward_block_f32(s.data(), da.data(), tn, H, m + b * H, l + b * H, delta + b * H);
        }
        for (i64 h = 0; h < H && !vec8; ++h) {  // s <- a, da <- ds
          const A mh = m[b * H + h], inv = A(1) / l[b * H + h], dl = delta[b * H + h];
          A* sh = s.data() + h * TB;
          A* dh = da.data() + h * TB;
#pragma omp simd
          for (i64 t = 0; t < tn; ++t) {
            const A a = real[t] ? fexp(sh[t] - mh) * inv : A(0);
            sh[t] = a;
            dh[t] = real[t] ? a * (dh[t] - dl) : A(0);
          }
        }
        if constexpr (fast_f32<T>()) {
          if (vec8) {
            float* dxb = dx ? dx + (b * N + nb) * D : nullptr;
            bool all_real = true;
            for (i64 t = 0; t < tn; ++t) all_real &= real[t] != 0;
            auto run = [&](auto all, auto nts) {
              backward_block_f32<decltype(all)::value, decltype(nts)::value>(dv, rows, sn, dxb, D, tn, real, H, Dh,
                                                                             s.data(), da.data(), dub, vb);
            };
            using yes = std::true_type;
            using no = std::false_type;
            if (all_real) { if (nt_dx) run(yes(), yes()); else run(yes(), no()); }
            else { if (nt_dx) run(no(), yes()); else run(no(), no()); }
            continue;
          }
        }
        for (i64 t = 0; t < tn; ++t) {
          T* dxr = dx ? dx + (b * N + nb + t) * D : nullptr;
          if (!real[t]) {
            if (dxr) for (i64 d = 0; d < D; ++d) dxr[d] = Cvt<T>::st(A(0));
            continue;
          }
          const T* row = rows + t * sn;
          for (i64 h = 0; h < H; ++h) {
            const A a = s[h * TB + t], ds = da[h * TB + t];
            const T* rh = row + h * Dh;
            A* dvh = dv + h * Dh;
            const A* vh = vb + h * Dh;
            const A* duh = dub + h * Dh;
            if (dxr) {
              T* dxh = dxr + h * Dh;
#pragma omp simd
              for (i64 d = 0; d < Dh; ++d) {
                dvh[d] += ds * Cvt<T>::ld(rh[d]);
                dxh[d] = Cvt<T>::st(a * duh[d] + ds * vh[d]);
              }
            } else {
#pragma omp simd
              for (i64 d = 0; d < Dh; ++d) dvh[d] += ds * Cvt<T>::ld(rh[d]);
            }
          }
        }
      }
      if (nt_dx) store_fence();
    }
  }
  for (i64 b = 0; b < B; ++b) {
    A* o = dv_out + b * D;
    for (i64 d = 0; d < D; ++d) o[d] = 0;
    for (i64 k = 0; k < nch; ++k) {
      const A* pk = part.data() + (b * nch + k) * D;
      for (i64 d = 0; d < D; ++d) o[d] += pk[d];
    }
  }
}

// ------------------------------------------------------------------------------------------ whole passes
// The column loop of each direction, with the small per-(b, h) vectors between the passes computed here: one
// call from Python per direction: as a dozen torch ops per column they cost more than the passes themselves at
// small N (docs/design.md §1.4).
// x: C columns [B, N, D] at element strides (sc, sb, sn, 1); wa = w / sqrt(Dh) [C-1, H, Dh]; u, g [C-1, B, D]
// and m, l [C-1, B, H] are the saved statistics (written by forward, read by backward); dx [C, B, N, D]
// contiguous (nullptr: not wanted); dw [C-1, H, Dh] is written, not accumulated.

template <class T>
void forward_all(const T* x, i64 sc, i64 sb, i64 sn, i64 C, i64 B, i64 N, i64 H, i64 Dh,
                 const typename Cvt<T>::A* wa, const uint8_t* mask, i64 mb, i64 mn, T* out, typename Cvt<T>::A* u,
                 typename Cvt<T>::A* g, typename Cvt<T>::A* m, typename Cvt<T>::A* l, int nt, i64 chunk_n) {
  typedef typename Cvt<T>::A A;
  const i64 D = H * Dh, BD = B * D;
  std::vector<A> v(BD);
  for (i64 c = 0; c + 1 < C; ++c) {
    const A* g_prev = c > 0 ? g + (c - 1) * BD : nullptr;  // v_c = g_{c-1} ⊙ w_c / sqrt(Dh); g_{-1} = 1
    for (i64 i = 0; i < BD; ++i) v[i] = (g_prev ? g_prev[i] : A(1)) * wa[c * D + i % D];
    A* uc = u + c * BD;
    pool<T>(x + c * sc, sb, sn, B, N, H, Dh, v.data(), mask, mb, mn, m + c * B * H, l + c * B * H, uc, nt,
            chunk_n);
    for (i64 i = 0; i < BD; ++i) g[c * BD + i] = (g_prev ? g_prev[i] : A(1)) * uc[i];
  }
  output<T>(x + (C - 1) * sc, sb, sn, B, N, D, g + (C - 2) * BD, mask, mb, mn, out, nt);
}

template <class T>
void backward_all(const T* x, i64 sc, i64 sb, i64 sn, const T* dout, i64 ob, i64 on, i64 C, i64 B, i64 N,
                  i64 H, i64 Dh, const typename Cvt<T>::A* wa, double scale, const typename Cvt<T>::A* u,
                  const typename Cvt<T>::A* g, const typename Cvt<T>::A* m, const typename Cvt<T>::A* l,
                  const uint8_t* mask, i64 mb, i64 mn, T* dx, typename Cvt<T>::A* dw, int nt, i64 chunk_n) {
  typedef typename Cvt<T>::A A;
  const i64 D = H * Dh, BD = B * D, NBD = N * BD;
  std::vector<A> dg(BD), du(BD), v(BD), dv(BD), delta(B * H);
  backward_last<T>(x + (C - 1) * sc, sb, sn, dout, ob, on, B, N, D, g + (C - 2) * BD, mask, mb, mn,
                   dx ? dx + (C - 1) * NBD : nullptr, dg.data(), nt, chunk_n);  // dg = d loss / d g_{C-2}
  for (i64 c = C - 2; c >= 0; --c) {
    // g_c = g_{c-1} ⊙ u_c, u_c = Σ_n a_n x_c[n], a = softmax(<x_c[n], v_c>), v_c = g_{c-1} ⊙ w_c / sqrt(Dh)
    const A* g_prev = c > 0 ? g + (c - 1) * BD : nullptr;
    const A* uc = u + c * BD;
    for (i64 i = 0; i < BD; ++i) {
      const A gp = g_prev ? g_prev[i] : A(1);
      du[i] = dg[i] * gp;
      v[i] = gp * wa[c * D + i % D];
    }
    for (i64 bh = 0; bh < B * H; ++bh) {
      A sum = 0;
      for (i64 e = 0; e < Dh; ++e) sum += du[bh * Dh + e] * uc[bh * Dh + e];
      delta[bh] = sum;
    }
    backward_column<T>(x + c * sc, sb, sn, B, N, H, Dh, v.data(), m + c * B * H, l + c * B * H, du.data(),
                       delta.data(), mask, mb, mn, dx ? dx + c * NBD : nullptr, dv.data(), nt, chunk_n);
    for (i64 d = 0; d < D; ++d) {  // d loss / d w_c = scale Σ_b dv ⊙ g_{c-1}
      A sum = 0;
      for (i64 b = 0; b < B; ++b) sum += dv[b * D + d] * (g_prev ? g_prev[b * D + d] : A(1));
      dw[c * D + d] = sum * A(scale);
    }
    if (c > 0)
      for (i64 i = 0; i < BD; ++i) dg[i] = dg[i] * uc[i] + dv[i] * wa[c * D + i % D];
  }
}

}  // namespace

// ---------------------------------------------------------------------------------- extern "C" entry points
// One set per element type: f32, f64 (accumulating in double), bf16 and f16 (accumulating in float).

#define FFS_ENTRY_POINTS(SUFFIX, T, A)                                                                         \
  extern "C" void ffs_forward_##SUFFIX(const void* x, i64 sc, i64 sb, i64 sn, i64 C, i64 B, i64 N, i64 H,    \
                                       i64 Dh, const A* wa, const uint8_t* mask, i64 mb, i64 mn, void* out,  \
                                       A* u, A* g, A* m, A* l, int nt, i64 chunk_n) {                        \
    forward_all<T>((const T*)x, sc, sb, sn, C, B, N, H, Dh, wa, mask, mb, mn, (T*)out, u, g, m, l, nt,       \
                   chunk_n);                                                                                \
  }                                                                                                          \
  extern "C" void ffs_backward_##SUFFIX(const void* x, i64 sc, i64 sb, i64 sn, const void* dout, i64 ob,     \
                                        i64 on, i64 C, i64 B, i64 N, i64 H, i64 Dh, const A* wa,             \
                                        double scale, const A* u, const A* g, const A* m, const A* l,        \
                                        const uint8_t* mask, i64 mb, i64 mn, void* dx, A* dw, int nt,        \
                                        i64 chunk_n) {                                                       \
    backward_all<T>((const T*)x, sc, sb, sn, (const T*)dout, ob, on, C, B, N, H, Dh, wa, scale, u, g, m, l,  \
                    mask, mb, mn, (T*)dx, dw, nt, chunk_n);                                                  \
  }

FFS_ENTRY_POINTS(f32, float, float)
FFS_ENTRY_POINTS(f64, double, double)
FFS_ENTRY_POINTS(bf16, bf16_t, float)
FFS_ENTRY_POINTS(f16, f16_t, float)

// The build's own check that OpenMP made it in (1) or not (0): the Python side reports it.
extern "C" int ffs_has_openmp() {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

// The write roof's fill (measure/env.py): n floats set to `value` with the same streaming stores as the kernels'
// large outputs, so their share of a write roof is taken against stores like their own. Returns 1 where it used
// streaming stores, 0 where it could not (no AVX, or dst not 32-byte aligned) and wrote plain stores.
extern "C" int ffs_fill_streaming_f32(float* dst, i64 n, float value, int nt) {
  const bool streaming = kHaveStreamingStores && (uintptr_t)dst % 32 == 0;
  const i64 body = streaming ? n / 8 * 8 : 0;
  const v8f v = splat8(value);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#pragma omp for schedule(static)
    for (i64 i = 0; i < body; i += 8) put8<true>(dst + i, v);
    store_fence();
  }
  for (i64 i = body; i < n; ++i) dst[i] = value;
  return streaming ? 1 : 0;
}
