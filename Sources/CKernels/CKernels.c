#include "CKernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define COHORT_X86 1
#endif

// MARK: - Half precision

float cohort_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: renormalize
            exp = 127 - 15 + 1;
            while ((man & 0x400) == 0) { man <<= 1; exp--; }
            man &= 0x3FF;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000 | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t cohort_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7FFFFFFF;
    if (absx > 0x7F800000) return (uint16_t)(sign | 0x7E00);          // NaN
    if (absx >= 0x477FF000) return (uint16_t)(sign | 0x7C00);         // overflow → inf
    if (absx < 0x38800000) {                                           // subnormal or zero
        if (absx < 0x33000000) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7FFFFF) | 0x800000;
        uint32_t shift = 126 - e;  // 14 + (113 - e)
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t bits = absx - 0x38000000;  // rebias exponent
    uint32_t half = bits >> 13;
    uint32_t rem = bits & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}

// MARK: - CPU features

int cohort_cpu_has_avx2(void) {
#if COHORT_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
    }
    return cached;
#else
    return 0;
#endif
}

// MARK: - Activation quantization

static void quantize_block_scalar(const float *x, cohort_q8_block *y) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int i = 0; i < 32; i++) {
        int q = (int)roundf(x[i] * id);
        y->qs[i] = (int8_t)q;
        sum += q;
    }
    y->d = d;
    y->s = d * (float)sum;
}

#if COHORT_X86
__attribute__((target("avx2,fma,f16c")))
static void quantize_block_avx2(const float *x, cohort_q8_block *y) {
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_andnot_ps(signBit, v0);
    m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, v1));
    m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, v2));
    m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, v3));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 mul = _mm256_set1_ps(id);
    v0 = _mm256_round_ps(_mm256_mul_ps(v0, mul), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC);
    v1 = _mm256_round_ps(_mm256_mul_ps(v1, mul), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC);
    v2 = _mm256_round_ps(_mm256_mul_ps(v2, mul), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC);
    v3 = _mm256_round_ps(_mm256_mul_ps(v3, mul), _MM_ROUND_NEAREST | _MM_FROUND_NO_EXC);
    __m256i i0 = _mm256_cvtps_epi32(v0), i1 = _mm256_cvtps_epi32(v1);
    __m256i i2 = _mm256_cvtps_epi32(v2), i3 = _mm256_cvtps_epi32(v3);
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_extracti128_si256(sum, 1), _mm256_castsi256_si128(sum));
    s4 = _mm_hadd_epi32(s4, s4);
    s4 = _mm_hadd_epi32(s4, s4);
    y->d = d;
    y->s = d * (float)_mm_cvtsi128_si32(s4);
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    // packs interleaves 128-bit lanes; restore element order.
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    i0 = _mm256_permutevar8x32_epi32(i0, perm);
    _mm256_storeu_si256((__m256i *)y->qs, i0);
}
#endif

void cohort_quantize_row_q8(const float *x, cohort_q8_block *y, int n) {
    const int nb = n / 32;
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        for (int b = 0; b < nb; b++) quantize_block_avx2(x + 32 * b, y + b);
        return;
    }
#endif
    for (int b = 0; b < nb; b++) quantize_block_scalar(x + 32 * b, y + b);
}

// MARK: - Weight block layouts (ggml)

typedef struct { uint16_t d; uint8_t qs[16]; } block_q4_0;               // 18 bytes
typedef struct { uint16_t d; uint16_t m; uint8_t qs[16]; } block_q4_1;   // 20 bytes
typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;                // 34 bytes

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(cohort_q8_block) == 40, "q8 activation block");

// MARK: - Scalar dot products (fallback when the CPU lacks AVX2)

static float dot_q4_0_scalar(int nb, const block_q4_0 *x, const cohort_q8_block *y) {
    float sum = 0;
    for (int b = 0; b < nb; b++) {
        int acc = 0;
        for (int j = 0; j < 16; j++) {
            acc += ((x[b].qs[j] & 0x0F) - 8) * y[b].qs[j];
            acc += ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        }
        sum += cohort_f16_to_f32(x[b].d) * y[b].d * (float)acc;
    }
    return sum;
}

static float dot_q4_1_scalar(int nb, const block_q4_1 *x, const cohort_q8_block *y) {
    float sum = 0;
    for (int b = 0; b < nb; b++) {
        int acc = 0;
        for (int j = 0; j < 16; j++) {
            acc += (x[b].qs[j] & 0x0F) * y[b].qs[j];
            acc += (x[b].qs[j] >> 4) * y[b].qs[j + 16];
        }
        sum += cohort_f16_to_f32(x[b].d) * y[b].d * (float)acc + cohort_f16_to_f32(x[b].m) * y[b].s;
    }
    return sum;
}

static float dot_q8_0_scalar(int nb, const block_q8_0 *x, const cohort_q8_block *y) {
    float sum = 0;
    for (int b = 0; b < nb; b++) {
        int acc = 0;
        for (int j = 0; j < 32; j++) acc += x[b].qs[j] * y[b].qs[j];
        sum += cohort_f16_to_f32(x[b].d) * y[b].d * (float)acc;
    }
    return sum;
}

// MARK: - AVX2 dot products

#if COHORT_X86
__attribute__((target("avx2,fma,f16c")))
static inline float hsum_ps(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

__attribute__((target("avx2,fma,f16c")))
static inline float half(uint16_t h) { return _cvtsh_ss(h); }

/// 32 nibbles of a 16-byte block as bytes 0..15: low nibbles first, then high.
__attribute__((target("avx2,fma,f16c")))
static inline __m256i unpack_nibbles(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/// Signed 8-bit products summed to eight int32 lanes, as floats.
__attribute__((target("avx2,fma,f16c")))
static inline __m256 dot_u8_s8(__m256i u, __m256i s) {
    const __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

__attribute__((target("avx2,fma,f16c")))
static inline __m256 dot_s8_s8(__m256i x, __m256i y) {
    return dot_u8_s8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q4_0_avx2(int nb, const block_q4_0 *x, const cohort_q8_block *y) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i eight = _mm256_set1_epi8(8);
    for (int b = 0; b < nb; b++) {
        const __m256i q = _mm256_sub_epi8(unpack_nibbles(x[b].qs), eight);
        const __m256i a = _mm256_loadu_si256((const __m256i *)y[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(x[b].d) * y[b].d), dot_s8_s8(q, a), acc);
    }
    return hsum_ps(acc);
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q4_1_avx2(int nb, const block_q4_1 *x, const cohort_q8_block *y) {
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int b = 0; b < nb; b++) {
        mins += half(x[b].m) * y[b].s;
        const __m256i q = unpack_nibbles(x[b].qs);
        const __m256i a = _mm256_loadu_si256((const __m256i *)y[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(x[b].d) * y[b].d), dot_u8_s8(q, a), acc);
    }
    return hsum_ps(acc) + mins;
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q8_0_avx2(int nb, const block_q8_0 *x, const cohort_q8_block *y) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const __m256i a = _mm256_loadu_si256((const __m256i *)y[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(x[b].d) * y[b].d), dot_s8_s8(q, a), acc);
    }
    return hsum_ps(acc);
}

/// Two tokens against one Q4_1 row: the nibbles are unpacked once for both.
__attribute__((target("avx2,fma,f16c")))
static void dot2_q4_1_avx2(int nb, const block_q4_1 *x, const cohort_q8_block *y0,
                           const cohort_q8_block *y1, float *out0, float *out1) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float mins0 = 0, mins1 = 0;
    for (int b = 0; b < nb; b++) {
        const float d = half(x[b].d), m = half(x[b].m);
        mins0 += m * y0[b].s;
        mins1 += m * y1[b].s;
        const __m256i q = unpack_nibbles(x[b].qs);
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)y0[b].qs);
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)y1[b].qs);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * y0[b].d), dot_u8_s8(q, a0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * y1[b].d), dot_u8_s8(q, a1), acc1);
    }
    *out0 = hsum_ps(acc0) + mins0;
    *out1 = hsum_ps(acc1) + mins1;
}

/// Two tokens against one Q8_0 row (the tied output head at batch > 1): the weights are
/// loaded and their signs taken once for both.
__attribute__((target("avx2,fma,f16c")))
static void dot2_q8_0_avx2(int nb, const block_q8_0 *x, const cohort_q8_block *y0,
                           const cohort_q8_block *y1, float *out0, float *out1) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const float d = half(x[b].d);
        const __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const __m256i magnitude = _mm256_sign_epi8(q, q);
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)y0[b].qs);
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)y1[b].qs);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * y0[b].d), dot_u8_s8(magnitude, _mm256_sign_epi8(a0, q)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * y1[b].d), dot_u8_s8(magnitude, _mm256_sign_epi8(a1, q)), acc1);
    }
    *out0 = hsum_ps(acc0);
    *out1 = hsum_ps(acc1);
}
#endif

float cohort_vec_dot_q8(int type, int n, const void *row, const cohort_q8_block *a) {
    const int nb = n / 32;
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        switch (type) {
        case COHORT_TYPE_Q4_0: return dot_q4_0_avx2(nb, row, a);
        case COHORT_TYPE_Q4_1: return dot_q4_1_avx2(nb, row, a);
        case COHORT_TYPE_Q8_0: return dot_q8_0_avx2(nb, row, a);
        default: return NAN;
        }
    }
#endif
    switch (type) {
    case COHORT_TYPE_Q4_0: return dot_q4_0_scalar(nb, row, a);
    case COHORT_TYPE_Q4_1: return dot_q4_1_scalar(nb, row, a);
    case COHORT_TYPE_Q8_0: return dot_q8_0_scalar(nb, row, a);
    default: return NAN;
    }
}

void cohort_matmul_q8(int type, const void *w, size_t rowBytes, int rowBegin, int rowEnd,
                      int k, const cohort_q8_block *a, int tokens, float *y, int ldy) {
    const int nb = k / 32;
    const char *base = (const char *)w;
#if COHORT_X86
    if (tokens == 1 && cohort_cpu_has_avx2()) {
        // Decode: one row after another, the type switch hoisted out of the loop.
        switch (type) {
        case COHORT_TYPE_Q4_0:
            for (int r = rowBegin; r < rowEnd; r++) y[r] = dot_q4_0_avx2(nb, (const void *)(base + (size_t)r * rowBytes), a);
            return;
        case COHORT_TYPE_Q4_1:
            for (int r = rowBegin; r < rowEnd; r++) y[r] = dot_q4_1_avx2(nb, (const void *)(base + (size_t)r * rowBytes), a);
            return;
        case COHORT_TYPE_Q8_0:
            for (int r = rowBegin; r < rowEnd; r++) y[r] = dot_q8_0_avx2(nb, (const void *)(base + (size_t)r * rowBytes), a);
            return;
        }
    }
    if ((type == COHORT_TYPE_Q4_1 || type == COHORT_TYPE_Q8_0) && tokens > 1 && cohort_cpu_has_avx2()) {
        // Batches: each row is decoded once per pair of tokens.
        for (int r = rowBegin; r < rowEnd; r++) {
            const void *row = base + (size_t)r * rowBytes;
            int t = 0;
            for (; t + 1 < tokens; t += 2) {
                if (type == COHORT_TYPE_Q4_1) {
                    dot2_q4_1_avx2(nb, row, a + (size_t)t * nb, a + (size_t)(t + 1) * nb,
                                   &y[(size_t)t * ldy + r], &y[(size_t)(t + 1) * ldy + r]);
                } else {
                    dot2_q8_0_avx2(nb, row, a + (size_t)t * nb, a + (size_t)(t + 1) * nb,
                                   &y[(size_t)t * ldy + r], &y[(size_t)(t + 1) * ldy + r]);
                }
            }
            for (; t < tokens; t++) y[(size_t)t * ldy + r] = cohort_vec_dot_q8(type, k, row, a + (size_t)t * nb);
        }
        return;
    }
#endif
    for (int r = rowBegin; r < rowEnd; r++) {
        const void *row = base + (size_t)r * rowBytes;
        for (int t = 0; t < tokens; t++) {
            y[(size_t)t * ldy + r] = cohort_vec_dot_q8(type, k, row, a + (size_t)t * nb);
        }
    }
}

// MARK: - Attention

static void attention_scores_scalar(const float *q, int group, int hd, const float *k, int kStride, int count,
                                    float scale, float *scores, int ldScores) {
    for (int j = 0; j < count; j++) {
        for (int i = 0; i < group; i++) {
            float s = 0;
            for (int d = 0; d < hd; d++) s += q[i * hd + d] * k[(size_t)j * kStride + d];
            scores[i * ldScores + j] = s * scale;
        }
    }
}

static void attention_values_scalar(const float *p, int ldP, int group, int hd, const float *v, int vStride, int count,
                                    float *out) {
    for (int j = 0; j < count; j++) {
        for (int i = 0; i < group; i++) {
            const float w = p[i * ldP + j];
            for (int d = 0; d < hd; d++) out[i * hd + d] += w * v[(size_t)j * vStride + d];
        }
    }
}

#if COHORT_X86
__attribute__((target("avx2,fma,f16c")))
static void attention_scores_avx2(const float *q, int group, int hd, const float *k, int kStride, int count,
                                  float scale, float *scores, int ldScores) {
    for (int j = 0; j < count; j++) {
        const float *kj = k + (size_t)j * kStride;
        for (int i = 0; i < group; i++) {
            const float *qi = q + i * hd;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int d = 0;
            for (; d + 16 <= hd; d += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d), _mm256_loadu_ps(kj + d), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d + 8), _mm256_loadu_ps(kj + d + 8), a1);
            }
            for (; d + 8 <= hd; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d), _mm256_loadu_ps(kj + d), a0);
            float s = hsum_ps(_mm256_add_ps(a0, a1));
            for (; d < hd; d++) s += qi[d] * kj[d];
            scores[i * ldScores + j] = s * scale;
        }
    }
}

__attribute__((target("avx2,fma,f16c")))
static void attention_values_avx2(const float *p, int ldP, int group, int hd, const float *v, int vStride, int count,
                                  float *out) {
    for (int j = 0; j < count; j++) {
        const float *vj = v + (size_t)j * vStride;
        for (int i = 0; i < group; i++) {
            const __m256 w = _mm256_set1_ps(p[i * ldP + j]);
            float *o = out + i * hd;
            int d = 0;
            for (; d + 8 <= hd; d += 8) {
                _mm256_storeu_ps(o + d, _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + d), _mm256_loadu_ps(o + d)));
            }
            for (; d < hd; d++) o[d] += p[i * ldP + j] * vj[d];
        }
    }
}
#endif

void cohort_attention_scores(const float *q, int group, int hd, const float *k, int kStride, int count,
                             float scale, float *scores, int ldScores) {
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        attention_scores_avx2(q, group, hd, k, kStride, count, scale, scores, ldScores);
        return;
    }
#endif
    attention_scores_scalar(q, group, hd, k, kStride, count, scale, scores, ldScores);
}

void cohort_attention_values(const float *p, int ldP, int group, int hd, const float *v, int vStride, int count,
                             float *out) {
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        attention_values_avx2(p, ldP, group, hd, v, vStride, count, out);
        return;
    }
#endif
    attention_values_scalar(p, ldP, group, hd, v, vStride, count, out);
}

