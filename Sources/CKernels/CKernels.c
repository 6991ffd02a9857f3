#include "CKernels.h"

#include <math.h>
#include <string.h>
#include <stdlib.h>

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

/// The widest instruction set the kernels may use, from `COHORT_ISA` read once: `scalar`
/// (0), `avx2` (1), or anything else / unset (2: all this CPU has). Tests run the kernels
/// once per level the machine can execute, so no path goes untested where a wider one exists.
int cohort_isa_limit(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *s = getenv("COHORT_ISA");
        cached = !s ? 2 : strcmp(s, "scalar") == 0 ? 0 : strcmp(s, "avx2") == 0 ? 1 : 2;
    }
    return cached;
}

int cohort_cpu_has_avx2(void) {
#if COHORT_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = cohort_isa_limit() >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
    }
    return cached;
#else
    return 0;
#endif
}

// MARK: - Activation quantization

/// 127 / amax, or 0 for a block of zeros, and also for one so small (below about 3.7e-37)
/// that the quotient overflows: its codes would otherwise convert to INT_MIN and pack to
/// −128, which the kernels' sign trick cannot negate.
static inline float quantize_scale(float amax) {
    const float id = 127.0f / amax;
    return isfinite(id) ? id : 0.0f;
}

static void quantize_block_scalar(const float *x, cohort_q8_block *y) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127.0f;
    const float id = quantize_scale(amax);
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
/// The largest of eight lanes.
__attribute__((target("avx2,fma,f16c")))
static inline float hmax_ps(__m256 v) {
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

__attribute__((target("avx2,fma,f16c")))
static void quantize_block_avx2(const float *x, cohort_q8_block *y) {
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_andnot_ps(signBit, v0);
    m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, v1));
    m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, v2));
    m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, v3));
    const float amax = hmax_ps(m);
    const float d = amax / 127.0f;
    const float id = quantize_scale(amax);
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
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } block_q5_0; // 22 bytes: value i's fifth bit is bit i of qh

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 block");
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

static float dot_q5_0_scalar(int nb, const block_q5_0 *x, const cohort_q8_block *y) {
    float sum = 0;
    for (int b = 0; b < nb; b++) {
        uint32_t qh;
        memcpy(&qh, x[b].qh, 4);
        int acc = 0;
        for (int j = 0; j < 16; j++) {
            const int low = (x[b].qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
            const int high = (x[b].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
            acc += (low - 16) * y[b].qs[j] + (high - 16) * y[b].qs[j + 16];
        }
        sum += cohort_f16_to_f32(x[b].d) * y[b].d * (float)acc;
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

/// IEEE half to float, through a general register and a zero-extending move (vmovd).
/// `_cvtsh_ss` (and any plain 16-bit load into a vector) is lowered by clang to `vpinsrw`
/// into whatever register is free, often the accumulator of the loop calling it: that false
/// dependency chained every block's scale to the previous block's FMA and halved the speed
/// of every row kernel.
__attribute__((target("avx2,fma,f16c")))
static inline float half(uint16_t h) {
    int bits = h;
    __asm__("" : "+r"(bits));  // keeps the value in a general register: clang must then use vmovd
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
}

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

/// A Q5_0 block's 32 values minus 16, as signed bytes: the nibbles, with 0xF0 or-ed into
/// those whose fifth bit is clear (nibble − 16 in two's complement; llama.cpp's trick).
__attribute__((target("avx2,fma,f16c")))
static inline __m256i unpack_q5_0(const block_q5_0 *x) {
    uint32_t qh;
    memcpy(&qh, x->qh, 4);
    // Byte i of `bits` is 0xFF when bit i of qh is set.
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    const __m256i bits = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
    return _mm256_or_si256(unpack_nibbles(x->qs), _mm256_andnot_si256(bits, _mm256_set1_epi8((char)0xF0)));
}

__attribute__((target("avx2,fma,f16c")))
static float dot_q5_0_avx2(int nb, const block_q5_0 *x, const cohort_q8_block *y) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const __m256i q = unpack_q5_0(x + b);
        const __m256i a = _mm256_loadu_si256((const __m256i *)y[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(x[b].d) * y[b].d), dot_s8_s8(q, a), acc);
    }
    return hsum_ps(acc);
}

/// Two tokens against one Q5_0 row: the values are unpacked once for both.
__attribute__((target("avx2,fma,f16c")))
static void dot2_q5_0_avx2(int nb, const block_q5_0 *x, const cohort_q8_block *y0,
                           const cohort_q8_block *y1, float *out0, float *out1) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const float d = half(x[b].d);
        const __m256i q = unpack_q5_0(x + b);
        const __m256i magnitude = _mm256_sign_epi8(q, q);
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)y0[b].qs);
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)y1[b].qs);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * y0[b].d), dot_u8_s8(magnitude, _mm256_sign_epi8(a0, q)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * y1[b].d), dot_u8_s8(magnitude, _mm256_sign_epi8(a1, q)), acc1);
    }
    *out0 = hsum_ps(acc0);
    *out1 = hsum_ps(acc1);
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

// MARK: - AVX2 tiles for batches (prefill)
//
// A tile is 2 weight rows × 4 tokens: each block of the two rows is unpacked once for the
// four tokens, each token's activations loaded once for the two rows, and the 8 products
// kept in registers. Per row-token pair and block that leaves 5-6 vector operations
// (sign, multiply-add twice, convert, scale, FMA), against 8 plus half an unpacking for
// `dot2`. Tokens are taken in chunks whose activations stay in L2 while rows stream.

#define TILE_TOKENS 4

static inline int block_bytes(int type) {
    switch (type) {
    case COHORT_TYPE_Q4_0: return 18;
    case COHORT_TYPE_Q4_1: return 20;
    case COHORT_TYPE_Q5_0: return 22;
    default: return 34;
    }
}

/// One block of weights unpacked for the tile: signed values with their magnitudes (for
/// the sign trick), or for Q4_1 unsigned codes with the block minimum, which meets the
/// activations' block sums (`s`) once per block. (Q5_0 as unsigned codes with a minimum of
/// −16d measured slower: the sums' gather costs more than the sign it saves.)
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void tile_unpack(const int type, const char *block, __m256i *q, __m256i *magnitude, __m256 *d, __m256 *m) {
    switch (type) {
    case COHORT_TYPE_Q4_0:
        *q = _mm256_sub_epi8(unpack_nibbles(((const block_q4_0 *)block)->qs), _mm256_set1_epi8(8));
        *d = _mm256_set1_ps(half(((const block_q4_0 *)block)->d));
        break;
    case COHORT_TYPE_Q4_1:
        *q = unpack_nibbles(((const block_q4_1 *)block)->qs);
        *d = _mm256_set1_ps(half(((const block_q4_1 *)block)->d));
        *m = _mm256_set1_ps(half(((const block_q4_1 *)block)->m));
        return;
    case COHORT_TYPE_Q5_0:
        *q = unpack_q5_0((const block_q5_0 *)block);
        *d = _mm256_set1_ps(half(((const block_q5_0 *)block)->d));
        break;
    default:
        *q = _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)block)->qs);
        *d = _mm256_set1_ps(half(((const block_q8_0 *)block)->d));
        break;
    }
    *magnitude = _mm256_sign_epi8(*q, *q);
}

/// Y for rows [r, r + R) and tokens [t, t + 4), R ∈ {1, 2}: `a` is token t's first block.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void tile_avx2(const int type, const int R, int nb, const char *w, size_t rowBytes,
                             const cohort_q8_block *a, float *y, int ldy) {
    const int bytes = block_bytes(type);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][TILE_TOKENS];
    __m128 mins[2];  // Q4_1: Σ m · s per row, one lane per token
    for (int r = 0; r < R; r++) {
        mins[r] = _mm_setzero_ps();
        for (int t = 0; t < TILE_TOKENS; t++) acc[r][t] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        __m256i q[2], magnitude[2];
        __m256 d[2], m[2];
        for (int r = 0; r < R; r++) tile_unpack(type, w + (size_t)r * rowBytes + (size_t)b * bytes, &q[r], &magnitude[r], &d[r], &m[r]);
        if (type == COHORT_TYPE_Q4_1) {
            const __m128 s = _mm_set_ps(a[3 * nb + b].s, a[2 * nb + b].s, a[nb + b].s, a[b].s);
            for (int r = 0; r < R; r++) mins[r] = _mm_fmadd_ps(_mm256_castps256_ps128(m[r]), s, mins[r]);
        }
        for (int t = 0; t < TILE_TOKENS; t++) {
            const cohort_q8_block *at = a + (size_t)t * nb + b;
            const __m256i av = _mm256_loadu_si256((const __m256i *)at->qs);
            const __m256 da = _mm256_broadcast_ss(&at->d);
            for (int r = 0; r < R; r++) {
                const __m256i p = type == COHORT_TYPE_Q4_1 ? _mm256_maddubs_epi16(q[r], av)
                                                           : _mm256_maddubs_epi16(magnitude[r], _mm256_sign_epi8(av, q[r]));
                const __m256 v = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                acc[r][t] = _mm256_fmadd_ps(v, _mm256_mul_ps(d[r], da), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        float extra[4];
        _mm_storeu_ps(extra, mins[r]);
        for (int t = 0; t < TILE_TOKENS; t++) y[(size_t)t * ldy + r] = hsum_ps(acc[r][t]) + extra[t];
    }
}

/// Rows [rowBegin, rowEnd) × tokens [0, tokens - tokens % 4) through tiles; returns the
/// number of tokens done (the rest are left to the pair kernels).
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline int tiles_avx2(const int type, const char *w, size_t rowBytes, int rowBegin, int rowEnd, int nb,
                             const cohort_q8_block *a, int tokens, float *y, int ldy) {
    const int whole = tokens / TILE_TOKENS * TILE_TOKENS;
    // Tokens per chunk: their activations (40 bytes a block) fit in 256 KB of L2.
    int chunk = (256 * 1024) / (nb * (int)sizeof(cohort_q8_block));
    chunk = chunk < TILE_TOKENS ? TILE_TOKENS : chunk / TILE_TOKENS * TILE_TOKENS;
    for (int t0 = 0; t0 < whole; t0 += chunk) {
        const int t1 = t0 + chunk < whole ? t0 + chunk : whole;
        int r = rowBegin;
        for (; r + 1 < rowEnd; r += 2) {
            for (int t = t0; t < t1; t += TILE_TOKENS)
                tile_avx2(type, 2, nb, w + (size_t)r * rowBytes, rowBytes, a + (size_t)t * nb, y + (size_t)t * ldy + r, ldy);
        }
        if (r < rowEnd) {
            for (int t = t0; t < t1; t += TILE_TOKENS)
                tile_avx2(type, 1, nb, w + (size_t)r * rowBytes, rowBytes, a + (size_t)t * nb, y + (size_t)t * ldy + r, ldy);
        }
    }
    return whole;
}

#define TILES_FOR(name, type)                                                                                  \
    __attribute__((target("avx2,fma,f16c")))                                                                  \
    static int name(const char *w, size_t rowBytes, int rowBegin, int rowEnd, int nb, const cohort_q8_block *a, \
                    int tokens, float *y, int ldy) {                                                           \
        return tiles_avx2(type, w, rowBytes, rowBegin, rowEnd, nb, a, tokens, y, ldy);                         \
    }
TILES_FOR(tiles_q4_0_avx2, COHORT_TYPE_Q4_0)
TILES_FOR(tiles_q4_1_avx2, COHORT_TYPE_Q4_1)
TILES_FOR(tiles_q5_0_avx2, COHORT_TYPE_Q5_0)
TILES_FOR(tiles_q8_0_avx2, COHORT_TYPE_Q8_0)
#endif

float cohort_vec_dot_q8(int type, int n, const void *row, const cohort_q8_block *a) {
    const int nb = n / 32;
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        switch (type) {
        case COHORT_TYPE_Q4_0: return dot_q4_0_avx2(nb, row, a);
        case COHORT_TYPE_Q4_1: return dot_q4_1_avx2(nb, row, a);
        case COHORT_TYPE_Q5_0: return dot_q5_0_avx2(nb, row, a);
        case COHORT_TYPE_Q8_0: return dot_q8_0_avx2(nb, row, a);
        default: return NAN;
        }
    }
#endif
    switch (type) {
    case COHORT_TYPE_Q4_0: return dot_q4_0_scalar(nb, row, a);
    case COHORT_TYPE_Q4_1: return dot_q4_1_scalar(nb, row, a);
    case COHORT_TYPE_Q5_0: return dot_q5_0_scalar(nb, row, a);
    case COHORT_TYPE_Q8_0: return dot_q8_0_scalar(nb, row, a);
    default: return NAN;
    }
}

void cohort_matmul_q8(int type, const void *w, size_t rowBytes, int rowBegin, int rowEnd,
                      int k, const cohort_q8_block *a, int tokens, float *y, int ldy) {
    const int nb = k / 32;
    const char *base = (const char *)w;
    int first = 0;  // tokens [0, first) done by tiles
#if COHORT_X86
    if (tokens == 1 && cohort_cpu_has_avx2()) {
        // Decode: one row after another, the type switch hoisted out of the loop. Q8_0 rows
        // ask for the row two ahead: at 8.5 bits a weight its kernel outruns the hardware
        // prefetcher on weights streamed from memory (a 136 MB output head: 8.7 -> 10.8
        // GMAC/s on one core of this project's AMD EPYC machine). The other formats are
        // bound by their unpacking, and the prefetches only cost them.
#define DECODE_ROWS(dot, prefetch)                                                                      \
        for (int r = rowBegin; r < rowEnd; r++) {                                                       \
            if (prefetch && r + 2 < rowEnd) cohort_prefetch_rows(base + (size_t)(r + 2) * rowBytes, 0, 1, (int)rowBytes); \
            y[r] = dot(nb, (const void *)(base + (size_t)r * rowBytes), a);                             \
        }                                                                                               \
        return;
        switch (type) {
        case COHORT_TYPE_Q4_0: DECODE_ROWS(dot_q4_0_avx2, 0)
        case COHORT_TYPE_Q4_1: DECODE_ROWS(dot_q4_1_avx2, 0)
        case COHORT_TYPE_Q5_0: DECODE_ROWS(dot_q5_0_avx2, 0)
        case COHORT_TYPE_Q8_0: DECODE_ROWS(dot_q8_0_avx2, 1)
        }
#undef DECODE_ROWS
    }
    if (tokens >= TILE_TOKENS && cohort_cpu_has_avx2()) {
        switch (type) {
        case COHORT_TYPE_Q4_0: first = tiles_q4_0_avx2(base, rowBytes, rowBegin, rowEnd, nb, a, tokens, y, ldy); break;
        case COHORT_TYPE_Q4_1: first = tiles_q4_1_avx2(base, rowBytes, rowBegin, rowEnd, nb, a, tokens, y, ldy); break;
        case COHORT_TYPE_Q5_0: first = tiles_q5_0_avx2(base, rowBytes, rowBegin, rowEnd, nb, a, tokens, y, ldy); break;
        case COHORT_TYPE_Q8_0: first = tiles_q8_0_avx2(base, rowBytes, rowBegin, rowEnd, nb, a, tokens, y, ldy); break;
        }
        if (first == tokens) return;
    }
    if ((type == COHORT_TYPE_Q4_1 || type == COHORT_TYPE_Q5_0 || type == COHORT_TYPE_Q8_0) && tokens - first > 1 && cohort_cpu_has_avx2()) {
        // Batches: each row is decoded once per pair of tokens.
        for (int r = rowBegin; r < rowEnd; r++) {
            const void *row = base + (size_t)r * rowBytes;
            int t = first;
            for (; t + 1 < tokens; t += 2) {
                if (type == COHORT_TYPE_Q4_1) {
                    dot2_q4_1_avx2(nb, row, a + (size_t)t * nb, a + (size_t)(t + 1) * nb,
                                   &y[(size_t)t * ldy + r], &y[(size_t)(t + 1) * ldy + r]);
                } else if (type == COHORT_TYPE_Q5_0) {
                    dot2_q5_0_avx2(nb, row, a + (size_t)t * nb, a + (size_t)(t + 1) * nb,
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
        for (int t = first; t < tokens; t++) {
            y[(size_t)t * ldy + r] = cohort_vec_dot_q8(type, k, row, a + (size_t)t * nb);
        }
    }
}

// MARK: - Attention

/// Element `index` of a float32 or half-precision cache.
static inline float cache_at(const void *base, size_t index, int half) {
    return half ? cohort_f16_to_f32(((const uint16_t *)base)[index]) : ((const float *)base)[index];
}

static void attention_scores_scalar(int half, const float *q, int group, int hd, const void *k, int kStride, int count,
                                    float scale, float *scores, int ldScores) {
    for (int j = 0; j < count; j++) {
        for (int i = 0; i < group; i++) {
            float s = 0;
            for (int d = 0; d < hd; d++) s += q[i * hd + d] * cache_at(k, (size_t)j * kStride + d, half);
            scores[i * ldScores + j] = s * scale;
        }
    }
}

static void attention_values_scalar(int half, const float *p, int ldP, int group, int hd, const void *v, int vStride,
                                    int count, float *out) {
    for (int j = 0; j < count; j++) {
        for (int i = 0; i < group; i++) {
            const float w = p[i * ldP + j];
            for (int d = 0; d < hd; d++) out[i * hd + d] += w * cache_at(v, (size_t)j * vStride + d, half);
        }
    }
}

#if COHORT_X86
/// Eight cache values at element `index` as floats: float32, or half precision (`half`).
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 load_cache8(const void *base, size_t index, int half) {
    if (half) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + index)));
    return _mm256_loadu_ps((const float *)base + index);
}

/// The sums of eight vectors, one per lane.
__attribute__((target("avx2,fma,f16c")))
static inline __m256 hsum8_ps(const __m256 a[8]) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/// Eight keys at a time per head: eight running dot products, reduced together (one
/// horizontal sum per key costs more than the dot product itself at 64 dimensions).
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void attention_scores_avx2(int half, const float *q, int group, int hd, const void *k, int kStride,
                                         int count, float scale, float *scores, int ldScores) {
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int i = 0; i < group; i++) {
        const float *qi = q + i * hd;
        float *out = scores + i * ldScores;
        int j = 0;
        for (; j + 8 <= count; j += 8) {
            __m256 acc[8];
            for (int u = 0; u < 8; u++) acc[u] = _mm256_setzero_ps();
            for (int d = 0; d < hd; d += 8) {
                const __m256 qv = _mm256_loadu_ps(qi + d);
                for (int u = 0; u < 8; u++)
                    acc[u] = _mm256_fmadd_ps(qv, load_cache8(k, (size_t)(j + u) * kStride + d, half), acc[u]);
            }
            _mm256_storeu_ps(out + j, _mm256_mul_ps(hsum8_ps(acc), vscale));
        }
        for (; j < count; j++) {
            __m256 acc = _mm256_setzero_ps();
            for (int d = 0; d < hd; d += 8)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d), load_cache8(k, (size_t)j * kStride + d, half), acc);
            out[j] = hsum_ps(acc) * scale;
        }
    }
}

/// Weighted sums of the values for G heads (1…3): 16 output dimensions of each head stay
/// in registers across the run, and each value is loaded (and converted) once for all G.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void values_heads(int half, int G, const float *p, int ldP, int hd, const void *v, int vStride, int count,
                                float *out) {
    int d = 0;
    for (; d + 16 <= hd; d += 16) {
        __m256 acc[3][2];
        for (int g = 0; g < G; g++) {
            acc[g][0] = _mm256_loadu_ps(out + g * hd + d);
            acc[g][1] = _mm256_loadu_ps(out + g * hd + d + 8);
        }
        for (int j = 0; j < count; j++) {
            const size_t e = (size_t)j * vStride + d;
            const __m256 v0 = load_cache8(v, e, half), v1 = load_cache8(v, e + 8, half);
            for (int g = 0; g < G; g++) {
                const __m256 w = _mm256_set1_ps(p[g * ldP + j]);
                acc[g][0] = _mm256_fmadd_ps(w, v0, acc[g][0]);
                acc[g][1] = _mm256_fmadd_ps(w, v1, acc[g][1]);
            }
        }
        for (int g = 0; g < G; g++) {
            _mm256_storeu_ps(out + g * hd + d, acc[g][0]);
            _mm256_storeu_ps(out + g * hd + d + 8, acc[g][1]);
        }
    }
    for (; d < hd; d += 8) {
        __m256 acc[3];
        for (int g = 0; g < G; g++) acc[g] = _mm256_loadu_ps(out + g * hd + d);
        for (int j = 0; j < count; j++) {
            const __m256 vv = load_cache8(v, (size_t)j * vStride + d, half);
            for (int g = 0; g < G; g++) acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(p[g * ldP + j]), vv, acc[g]);
        }
        for (int g = 0; g < G; g++) _mm256_storeu_ps(out + g * hd + d, acc[g]);
    }
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void attention_values_avx2(int half, const float *p, int ldP, int group, int hd, const void *v, int vStride,
                                         int count, float *out) {
    for (int h = 0; h < group; h += 3) {
        const float *ph = p + h * ldP;
        float *oh = out + h * hd;
        switch (group - h) {
        case 1: values_heads(half, 1, ph, ldP, hd, v, vStride, count, oh); break;
        case 2: values_heads(half, 2, ph, ldP, hd, v, vStride, count, oh); break;
        default: values_heads(half, 3, ph, ldP, hd, v, vStride, count, oh); break;
        }
    }
}

/// Eight floats to half precision, rounded to nearest even (as cohort_f32_to_f16).
__attribute__((target("avx2,fma,f16c")))
static void store_half8(const float *x, uint16_t *y) {
    _mm_storeu_si128((__m128i *)y, _mm256_cvtps_ph(_mm256_loadu_ps(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

#define WIDE_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl")))

/// With AVX-512's 32 vector registers: eight keys for up to three heads at once (24
/// running dot products), so each key is loaded and widened once per group, not once per
/// head. The same operations per (head, key) as `attention_scores_avx2`, so the same bits.
/// A harness of decode attention (16 sequences at 96 tokens, half cache): 2.9-3.1 → 2.6-2.8 ms a step.
WIDE_TARGET __attribute__((always_inline))
static inline void scores_heads_wide(int half, int G, const float *q, int hd, const void *k, int kStride, int count,
                                     float scale, float *scores, int ldScores) {
    const __m256 vscale = _mm256_set1_ps(scale);
    int j = 0;
    for (; j + 8 <= count; j += 8) {
        __m256 acc[3][8];
        for (int g = 0; g < G; g++)
            for (int u = 0; u < 8; u++) acc[g][u] = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8) {
            __m256 qv[3];
            for (int g = 0; g < G; g++) qv[g] = _mm256_loadu_ps(q + g * hd + d);
            for (int u = 0; u < 8; u++) {
                const __m256 kv = load_cache8(k, (size_t)(j + u) * kStride + d, half);
                for (int g = 0; g < G; g++) acc[g][u] = _mm256_fmadd_ps(qv[g], kv, acc[g][u]);
            }
        }
        for (int g = 0; g < G; g++) _mm256_storeu_ps(scores + g * ldScores + j, _mm256_mul_ps(hsum8_ps(acc[g]), vscale));
    }
    if (j < count) {
        const size_t offset = (size_t)j * kStride;
        const void *rest = half ? (const void *)((const uint16_t *)k + offset) : (const void *)((const float *)k + offset);
        attention_scores_avx2(half, q, G, hd, rest, kStride, count - j, scale, scores + j, ldScores);
    }
}

WIDE_TARGET static void attention_scores_wide(int half, const float *q, int group, int hd, const void *k, int kStride,
                                              int count, float scale, float *scores, int ldScores) {
    for (int h = 0; h < group; h += 3) {
        const float *qh = q + h * hd;
        float *sh = scores + h * ldScores;
        switch (group - h) {
        case 1: scores_heads_wide(half, 1, qh, hd, k, kStride, count, scale, sh, ldScores); break;
        case 2: scores_heads_wide(half, 2, qh, hd, k, kStride, count, scale, sh, ldScores); break;
        default: scores_heads_wide(half, 3, qh, hd, k, kStride, count, scale, sh, ldScores); break;
        }
    }
}

static int cpu_has_avx512vl(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = cohort_isa_limit() >= 2 && cohort_cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512vl");
    }
    return cached;
}

// One instance per cache element type.
__attribute__((target("avx2,fma,f16c")))
static void scores_f32(const float *q, int group, int hd, const void *k, int kStride, int count, float scale,
                       float *scores, int ldScores) {
    if (cpu_has_avx512vl()) attention_scores_wide(0, q, group, hd, k, kStride, count, scale, scores, ldScores);
    else attention_scores_avx2(0, q, group, hd, k, kStride, count, scale, scores, ldScores);
}
__attribute__((target("avx2,fma,f16c")))
static void scores_f16(const float *q, int group, int hd, const void *k, int kStride, int count, float scale,
                       float *scores, int ldScores) {
    if (cpu_has_avx512vl()) attention_scores_wide(1, q, group, hd, k, kStride, count, scale, scores, ldScores);
    else attention_scores_avx2(1, q, group, hd, k, kStride, count, scale, scores, ldScores);
}
__attribute__((target("avx2,fma,f16c")))
static void values_f32(const float *p, int ldP, int group, int hd, const void *v, int vStride, int count, float *out) {
    attention_values_avx2(0, p, ldP, group, hd, v, vStride, count, out);
}
__attribute__((target("avx2,fma,f16c")))
static void values_f16(const float *p, int ldP, int group, int hd, const void *v, int vStride, int count, float *out) {
    attention_values_avx2(1, p, ldP, group, hd, v, vStride, count, out);
}

/// e^x for eight lanes (Cephes' expf: range reduction by ln 2, degree-5 polynomial;
/// within 2 ulp of libm over the clamped range, 0 below it).
__attribute__((target("avx2,fma,f16c")))
static inline __m256 exp256_ps(__m256 x) {
    const __m256 below = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.3762626647949f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(below, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

__attribute__((target("avx2,fma,f16c")))
static void softmax_avx2(float *x, int n) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float maxValue = hmax_ps(vmax);
    for (; i < n; i++) maxValue = fmaxf(maxValue, x[i]);
    const __m256 m = _mm256_set1_ps(maxValue);
    __m256 vsum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = exp256_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum_ps(vsum);
    for (; i < n; i++) {
        x[i] = expf(x[i] - maxValue);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    for (; i < n; i++) x[i] *= inv;
}

__attribute__((target("avx2,fma,f16c")))
static void swiglu_avx2(float *gate, const float *up, int n) {
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp256_ps(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/// Sum of squares in double precision, four lanes × two chains (a single scalar chain
/// waits on each add's latency: 3% of a batched decode step).
__attribute__((target("avx2,fma,f16c")))
static double sum_squares_avx2(const float *x, int n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), hi = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    const __m256d a = _mm256_add_pd(a0, a1);
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; i++) sum += (double)x[i] * (double)x[i];
    return sum;
}

/// The largest value: max_ps returns its second operand when the first is NaN, so NaNs
/// never win.
__attribute__((target("avx2,fma,f16c")))
static int argmax_avx2(const float *x, int n) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(_mm256_loadu_ps(x + i), m8);
    float best = hmax_ps(m8);
    for (; i < n; i++)
        if (x[i] > best) best = x[i];
    const __m256 b8 = _mm256_set1_ps(best);
    for (i = 0; i + 8 <= n; i += 8) {
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), b8, _CMP_EQ_OQ));
        if (mask) return i + __builtin_ctz(mask);
    }
    for (; i < n; i++)
        if (x[i] == best) return i;
    return 0;
}
#endif

int cohort_argmax(const float *x, int n) {
#if COHORT_X86
    if (cohort_cpu_has_avx2()) return argmax_avx2(x, n);
#endif
    // The first largest value; NaNs never win (a NaN first must not stick: every `>` with it is false).
    int best = -1;
    for (int i = 0; i < n; i++)
        if (x[i] == x[i] && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}

void cohort_rms_norm(const float *x, const float *weight, float epsilon, float *out, int n) {
    double sum = 0;
#if COHORT_X86
    if (cohort_cpu_has_avx2()) sum = sum_squares_avx2(x, n);
    else
#endif
        for (int i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    const float scale = (float)(1.0 / sqrt(sum / n + (double)epsilon));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * weight[i];
}

void cohort_softmax(float *x, int n) {
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        softmax_avx2(x, n);
        return;
    }
#endif
    float maxValue = -INFINITY;
    for (int i = 0; i < n; i++) maxValue = fmaxf(maxValue, x[i]);
    float sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - maxValue);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void cohort_swiglu(float *gate, const float *up, int n) {
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        swiglu_avx2(gate, up, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void cohort_attention_scores(const float *q, int group, int hd, const void *k, int half, int kStride, int count,
                             float scale, float *scores, int ldScores) {
#if COHORT_X86
    if (cohort_cpu_has_avx2() && hd % 8 == 0) {
        (half ? scores_f16 : scores_f32)(q, group, hd, k, kStride, count, scale, scores, ldScores);
        return;
    }
#endif
    attention_scores_scalar(half, q, group, hd, k, kStride, count, scale, scores, ldScores);
}

void cohort_attention_values(const float *p, int ldP, int group, int hd, const void *v, int half, int vStride, int count,
                             float *out) {
#if COHORT_X86
    if (cohort_cpu_has_avx2() && hd % 8 == 0) {
        (half ? values_f16 : values_f32)(p, ldP, group, hd, v, vStride, count, out);
        return;
    }
#endif
    attention_values_scalar(half, p, ldP, group, hd, v, vStride, count, out);
}

// Into L2 (prefetcht1), not L1: an L1 prefetch holds one of the core's few L1 miss
// buffers until its line arrives, so only ~24 lines are ever in flight; L2 keeps many
// more. Decode attention of 16 sequences at 96 tokens over scattered 16-token blocks,
// fetched two blocks ahead: 5.5 → 3.1 ms a step (the same arithmetic in cache: 2.0).
void cohort_prefetch_rows(const void *base, size_t strideBytes, int rows, int rowBytes) {
    for (int r = 0; r < rows; r++) {
        const char *row = (const char *)base + (size_t)r * strideBytes;
        for (int b = 0; b < rowBytes; b += 64) __builtin_prefetch(row + b, 0, 2);
    }
}

void cohort_f32_to_f16_row(const float *x, uint16_t *y, int n) {
    int i = 0;
#if COHORT_X86
    if (cohort_cpu_has_avx2()) {
        for (; i + 8 <= n; i += 8) store_half8(x + i, y + i);
    }
#endif
    for (; i < n; i++) y[i] = cohort_f32_to_f16(x[i]);
}

// MARK: - Packed panels (AVX-512 VNNI)
//
// The batched path. Weights are repacked once at load into panels of 8 rows whose blocks
// interleave the rows 4 bytes at a time, so one 256-bit register holds 4 consecutive
// values of each of 8 rows and `vpdpbusd` against 4 activation bytes broadcast to every
// lane yields 8 rows' partial sums at once. Every format becomes "unsigned q · d + m":
// Q4_1 as stored; Q4_0 with m = −8d; Q8_0 offset by 128 with m = −128d. The block's scale
// is applied once per 8 rows instead of once per row (the row-at-a-time kernels above
// spend more on that and on horizontal sums than on the products), the unpacked weights
// are reused for up to eight tokens, and no horizontal sum is needed: lane i is row i.
// A (row, token) result is the same sequence of operations for every batch size, so
// batched outputs equal single-token outputs bit for bit.

typedef struct { uint16_t d[8]; uint16_t m[8]; uint8_t qs[128]; } panel_block4;  // 160 bytes
typedef struct { uint16_t d[8]; uint16_t m[8]; uint8_t qs[256]; } panel_block8;  // 288 bytes
/// Q5_0 in panels: the nibbles as in `panel_block4`; `qh` holds one 32-bit word per group g
/// of four values (4g…4g+3) whose bit 4i + t is the fifth bit of row i's value 4g + t, so a
/// group's fifth bits spread over its 32 bytes the way `unpack_q5_0` spreads a block's.
/// Codes are unsigned (0…31) with the minimum −16d applied through the activations' sums.
typedef struct { uint16_t d[8]; uint8_t qh[32]; uint8_t qs[128]; } panel_block5;  // 176 bytes
_Static_assert(sizeof(panel_block4) == 160, "4-bit panel block");
_Static_assert(sizeof(panel_block5) == 176, "5-bit panel block");
_Static_assert(sizeof(panel_block8) == 288, "8-bit panel block");

int cohort_cpu_has_vnni(void) {
#if COHORT_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = cohort_isa_limit() >= 2 && cohort_cpu_has_avx2() && __builtin_cpu_supports("avx512vnni") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    }
    return cached;
#else
    return 0;
#endif
}

static int packed_block_bytes(int type) {
    switch (type) {
    case COHORT_TYPE_Q4_0:
    case COHORT_TYPE_Q4_1: return (int)sizeof(panel_block4);
    case COHORT_TYPE_Q5_0: return (int)sizeof(panel_block5);
    case COHORT_TYPE_Q8_0: return (int)sizeof(panel_block8);
    default: return 0;
    }
}

size_t cohort_packed_bytes(int type, int rows, int k) {
    const int blockBytes = packed_block_bytes(type);
    if (blockBytes == 0 || rows <= 0 || rows % 8 != 0 || k <= 0 || k % 32 != 0) return 0;
    return (size_t)(rows / 8) * (size_t)(k / 32) * (size_t)blockBytes;
}

int cohort_pack_weights(int type, const void *w, size_t rowBytes, int rows, int k, void *packed) {
    if (cohort_packed_bytes(type, rows, k) == 0) return -1;
    const int nb = k / 32;
    const char *base = (const char *)w;
    for (int p = 0; p < rows / 8; p++) {
        for (int b = 0; b < nb; b++) {
            const size_t index = (size_t)p * nb + b;
            for (int i = 0; i < 8; i++) {
                const char *row = base + (size_t)(8 * p + i) * rowBytes;
                if (type == COHORT_TYPE_Q8_0) {
                    const block_q8_0 *x = (const block_q8_0 *)row + b;
                    panel_block8 *y = (panel_block8 *)packed + index;
                    const float d = cohort_f16_to_f32(x->d);
                    y->d[i] = x->d;
                    y->m[i] = cohort_f32_to_f16(-128.0f * d);
                    for (int g = 0; g < 8; g++)
                        for (int t = 0; t < 4; t++) y->qs[g * 32 + i * 4 + t] = (uint8_t)(x->qs[4 * g + t] + 128);
                } else if (type == COHORT_TYPE_Q5_0) {
                    const block_q5_0 *x = (const block_q5_0 *)row + b;
                    panel_block5 *y = (panel_block5 *)packed + index;
                    uint32_t qh;
                    memcpy(&qh, x->qh, 4);
                    y->d[i] = x->d;
                    for (int c = 0; c < 4; c++)
                        for (int t = 0; t < 4; t++) y->qs[c * 32 + i * 4 + t] = x->qs[4 * c + t];
                    for (int g = 0; g < 8; g++) {
                        uint32_t word;
                        memcpy(&word, y->qh + 4 * g, 4);
                        word = (word & ~(0xFu << (4 * i))) | (((qh >> (4 * g)) & 0xFu) << (4 * i));
                        memcpy(y->qh + 4 * g, &word, 4);
                    }
                } else {
                    panel_block4 *y = (panel_block4 *)packed + index;
                    const uint8_t *qs;
                    if (type == COHORT_TYPE_Q4_1) {
                        const block_q4_1 *x = (const block_q4_1 *)row + b;
                        y->d[i] = x->d;
                        y->m[i] = x->m;
                        qs = x->qs;
                    } else {
                        const block_q4_0 *x = (const block_q4_0 *)row + b;
                        y->d[i] = x->d;
                        y->m[i] = cohort_f32_to_f16(-8.0f * cohort_f16_to_f32(x->d));
                        qs = x->qs;
                    }
                    // Byte j holds values j (low nibble) and j + 16 (high): chunk c's low
                    // nibbles are values 4c…4c+3, its high nibbles 16+4c…16+4c+3.
                    for (int c = 0; c < 4; c++)
                        for (int t = 0; t < 4; t++) y->qs[c * 32 + i * 4 + t] = qs[4 * c + t];
                }
            }
        }
    }
    return 0;
}

void cohort_unpack_row(int type, const void *packed, int row, int k, void *out) {
    const int nb = k / 32, i = row % 8;
    const size_t first = (size_t)(row / 8) * nb;
    for (int b = 0; b < nb; b++) {
        if (type == COHORT_TYPE_Q8_0) {
            const panel_block8 *x = (const panel_block8 *)packed + first + b;
            block_q8_0 *y = (block_q8_0 *)out + b;
            y->d = x->d[i];
            for (int g = 0; g < 8; g++)
                for (int t = 0; t < 4; t++) y->qs[4 * g + t] = (int8_t)(x->qs[g * 32 + i * 4 + t] - 128);
        } else if (type == COHORT_TYPE_Q5_0) {
            const panel_block5 *x = (const panel_block5 *)packed + first + b;
            block_q5_0 *y = (block_q5_0 *)out + b;
            y->d = x->d[i];
            uint32_t qh = 0;
            for (int g = 0; g < 8; g++) {
                uint32_t word;
                memcpy(&word, x->qh + 4 * g, 4);
                qh |= ((word >> (4 * i)) & 0xFu) << (4 * g);
            }
            memcpy(y->qh, &qh, 4);
            for (int c = 0; c < 4; c++)
                for (int t = 0; t < 4; t++) y->qs[4 * c + t] = x->qs[c * 32 + i * 4 + t];
        } else {
            const panel_block4 *x = (const panel_block4 *)packed + first + b;
            uint8_t *qs;
            if (type == COHORT_TYPE_Q4_1) {
                block_q4_1 *y = (block_q4_1 *)out + b;
                y->d = x->d[i];
                y->m = x->m[i];
                qs = y->qs;
            } else {
                block_q4_0 *y = (block_q4_0 *)out + b;
                y->d = x->d[i];
                qs = y->qs;
            }
            for (int c = 0; c < 4; c++)
                for (int t = 0; t < 4; t++) qs[4 * c + t] = x->qs[c * 32 + i * 4 + t];
        }
    }
}

#if COHORT_X86
#define VNNI_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))

/// Group g's fifth bits of a 5-bit panel block as 0x10 in each of its 32 bytes.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256i panel_fifth_bits(const panel_block5 *x, int g) {
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(((const int32_t *)x->qh)[g]),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

/// Broadcast of activation bytes 4g…4g+3.
#define ACT4(a, g) _mm256_set1_epi32(((const int32_t *)(a))[g])

/// Tokens per tile: the unpacked weights (8 registers) serve this many tokens, each with
/// its own accumulator, within AVX-512's 32 vector registers.
#ifndef PANEL_TOKENS
#define PANEL_TOKENS 8
#endif

/// Bytes of panels the tiles of a batch walk in turn: well inside one core's L2 (1 MB on
/// the Zen 4 this was measured on; 128 and 256 KB measured alike, 512 KB slower).
#define PANEL_RUN_BYTES (128 * 1024)

/// T tokens (1…PANEL_TOKENS) against one panel of 8 rows; writes y[t * ldy + 0…7].
/// With `ahead`, block b of the panel there is prefetched while block b is computed.
VNNI_TARGET __attribute__((always_inline))
static inline void panel_tile(int bits, int T, int nb, const void *panel, const cohort_q8_block *const *a,
                              float *y, int ldy, const char *ahead) {
    const int blockBytes = bits == 4 ? (int)sizeof(panel_block4) : bits == 5 ? (int)sizeof(panel_block5) : (int)sizeof(panel_block8);
    __m256 acc[PANEL_TOKENS];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    const __m256i low = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < nb; b++) {
        if (ahead)
            for (int o = 0; o < blockBytes; o += 64) __builtin_prefetch(ahead + (size_t)b * blockBytes + o, 0, 3);
        __m256i w[8];
        __m256 d, m;
        if (bits == 4) {
            const panel_block4 *x = (const panel_block4 *)panel + b;
            d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->d));
            m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->m));
            for (int c = 0; c < 4; c++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
                w[c] = _mm256_and_si256(raw, low);
                w[c + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
            }
        } else if (bits == 5) {
            const panel_block5 *x = (const panel_block5 *)panel + b;
            d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->d));
            m = _mm256_mul_ps(d, _mm256_set1_ps(-16.0f));
            for (int c = 0; c < 4; c++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
                w[c] = _mm256_or_si256(_mm256_and_si256(raw, low), panel_fifth_bits(x, c));
                w[c + 4] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), low), panel_fifth_bits(x, c + 4));
            }
        } else {
            const panel_block8 *x = (const panel_block8 *)panel + b;
            d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->d));
            m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->m));
            for (int g = 0; g < 8; g++) w[g] = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * g));
        }
        for (int t = 0; t < T; t++) {
            const cohort_q8_block *ab = a[t] + b;
            // Two chains so the dot products' latency overlaps even for one token.
            __m256i s0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[0], ACT4(ab->qs, 0));
            __m256i s1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w[1], ACT4(ab->qs, 1));
            s0 = _mm256_dpbusd_epi32(s0, w[2], ACT4(ab->qs, 2));
            s1 = _mm256_dpbusd_epi32(s1, w[3], ACT4(ab->qs, 3));
            s0 = _mm256_dpbusd_epi32(s0, w[4], ACT4(ab->qs, 4));
            s1 = _mm256_dpbusd_epi32(s1, w[5], ACT4(ab->qs, 5));
            s0 = _mm256_dpbusd_epi32(s0, w[6], ACT4(ab->qs, 6));
            s1 = _mm256_dpbusd_epi32(s1, w[7], ACT4(ab->qs, 7));
            const __m256 sum = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
            acc[t] = _mm256_fmadd_ps(sum, _mm256_mul_ps(d, _mm256_set1_ps(ab->d)), acc[t]);
            acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(ab->s), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) _mm256_storeu_ps(y + (size_t)t * ldy, acc[t]);
}

#define PANEL_KERNEL(name, bits, T)                                                                         \
    VNNI_TARGET static void name(int nb, const void *panel, const cohort_q8_block *const *a, float *y, int ldy, \
                                 const char *ahead) {                                                       \
        panel_tile(bits, T, nb, panel, a, y, ldy, ahead);                                                   \
    }
PANEL_KERNEL(panel4x1, 4, 1)
PANEL_KERNEL(panel4x2, 4, 2)
PANEL_KERNEL(panel4x3, 4, 3)
PANEL_KERNEL(panel4x4, 4, 4)
PANEL_KERNEL(panel4x5, 4, 5)
PANEL_KERNEL(panel4x6, 4, 6)
PANEL_KERNEL(panel4x7, 4, 7)
PANEL_KERNEL(panel4x8, 4, 8)
PANEL_KERNEL(panel8x1, 8, 1)
PANEL_KERNEL(panel8x2, 8, 2)
PANEL_KERNEL(panel8x3, 8, 3)
PANEL_KERNEL(panel8x4, 8, 4)
PANEL_KERNEL(panel8x5, 8, 5)
PANEL_KERNEL(panel8x6, 8, 6)
PANEL_KERNEL(panel8x7, 8, 7)
PANEL_KERNEL(panel8x8, 8, 8)
PANEL_KERNEL(panel5x1, 5, 1)
PANEL_KERNEL(panel5x2, 5, 2)
PANEL_KERNEL(panel5x3, 5, 3)
PANEL_KERNEL(panel5x4, 5, 4)
PANEL_KERNEL(panel5x5, 5, 5)
PANEL_KERNEL(panel5x6, 5, 6)
PANEL_KERNEL(panel5x7, 5, 7)
PANEL_KERNEL(panel5x8, 5, 8)

// MARK: - Panels on AVX2 (no VNNI)
//
// The same panels through `vpmaddubsw` + `vpmaddwd` instead of `vpdpbusd`. 4-bit codes
// (0…15) times activations (−127…127) never saturate `vpmaddubsw`'s 16-bit pairs, even
// summed over a block's eight groups (8 × 2 × 15 × 127 < 2¹⁵): one `vpmaddwd` per block and
// token. The 8-bit panels hold q + 128, whose products would saturate: the codes are
// turned back into signed q (xor 0x80), and the sign trick multiplies |q| by ±a, exactly,
// with no minimum to add. AVX2 has 16 vector registers: up to 4 tokens a tile.

#define PANEL_TOKENS_AVX2 4

/// T tokens (1…PANEL_TOKENS_AVX2) against one panel of 8 rows on AVX2; as `panel_tile`.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void panel_tile_avx2(int bits, int T, int nb, const void *panel, const cohort_q8_block *const *a,
                                   float *y, int ldy, const char *ahead) {
    const int blockBytes = bits == 4 ? (int)sizeof(panel_block4) : bits == 5 ? (int)sizeof(panel_block5) : (int)sizeof(panel_block8);
    __m256 acc[PANEL_TOKENS_AVX2];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; b++) {
        if (ahead)
            for (int o = 0; o < blockBytes; o += 64) __builtin_prefetch(ahead + (size_t)b * blockBytes + o, 0, 3);
        __m256i sum[PANEL_TOKENS_AVX2];
        __m256 d;
        if (bits == 4) {
            const panel_block4 *x = (const panel_block4 *)panel + b;
            const __m256i low = _mm256_set1_epi8(0x0F);
            for (int t = 0; t < T; t++) sum[t] = _mm256_setzero_si256();
            for (int c = 0; c < 4; c++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
                const __m256i lo = _mm256_and_si256(raw, low), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
                for (int t = 0; t < T; t++) {
                    const cohort_q8_block *ab = a[t] + b;
                    sum[t] = _mm256_add_epi16(sum[t], _mm256_maddubs_epi16(lo, ACT4(ab->qs, c)));
                    sum[t] = _mm256_add_epi16(sum[t], _mm256_maddubs_epi16(hi, ACT4(ab->qs, c + 4)));
                }
            }
            for (int t = 0; t < T; t++) sum[t] = _mm256_madd_epi16(sum[t], ones);
            d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->d));
            const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->m));
            for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(a[t][b].s), acc[t]);
        } else if (bits == 5) {
            // Codes up to 31: four groups' pairs fit in 16 bits (4 × 2 × 31 × 127 < 2¹⁵), so
            // each half of the block gets its own vpmaddwd.
            const panel_block5 *x = (const panel_block5 *)panel + b;
            const __m256i low = _mm256_set1_epi8(0x0F);
            for (int t = 0; t < T; t++) sum[t] = _mm256_setzero_si256();
            for (int half = 0; half < 2; half++) {
                __m256i pairs[PANEL_TOKENS_AVX2];
                for (int t = 0; t < T; t++) pairs[t] = _mm256_setzero_si256();
                for (int c = 2 * half; c < 2 * half + 2; c++) {
                    const __m256i raw = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
                    const __m256i lo = _mm256_or_si256(_mm256_and_si256(raw, low), panel_fifth_bits(x, c));
                    const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), low), panel_fifth_bits(x, c + 4));
                    for (int t = 0; t < T; t++) {
                        const cohort_q8_block *ab = a[t] + b;
                        pairs[t] = _mm256_add_epi16(pairs[t], _mm256_maddubs_epi16(lo, ACT4(ab->qs, c)));
                        pairs[t] = _mm256_add_epi16(pairs[t], _mm256_maddubs_epi16(hi, ACT4(ab->qs, c + 4)));
                    }
                }
                for (int t = 0; t < T; t++) sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(pairs[t], ones));
            }
            d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->d));
            const __m256 m = _mm256_mul_ps(d, _mm256_set1_ps(-16.0f));
            for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(a[t][b].s), acc[t]);
        } else {
            const panel_block8 *x = (const panel_block8 *)panel + b;
            const __m256i bias = _mm256_set1_epi8((char)0x80);
            for (int t = 0; t < T; t++) sum[t] = _mm256_setzero_si256();
            for (int g = 0; g < 8; g++) {
                const __m256i q = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x->qs + 32 * g)), bias);
                const __m256i magnitude = _mm256_sign_epi8(q, q);
                for (int t = 0; t < T; t++) {
                    const __m256i p = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(ACT4(a[t][b].qs, g), q));
                    sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, ones));
                }
            }
            d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x->d));
        }
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_mul_ps(d, _mm256_set1_ps(a[t][b].d)), acc[t]);
    }
    for (int t = 0; t < T; t++) _mm256_storeu_ps(y + (size_t)t * ldy, acc[t]);
}

#define PANEL_KERNEL_AVX2(name, bits, T)                                                                    \
    __attribute__((target("avx2,fma,f16c"))) static void name(int nb, const void *panel,                    \
                                                              const cohort_q8_block *const *a, float *y,     \
                                                              int ldy, const char *ahead) {                 \
        panel_tile_avx2(bits, T, nb, panel, a, y, ldy, ahead);                                              \
    }
PANEL_KERNEL_AVX2(panel4x1_avx2, 4, 1)
PANEL_KERNEL_AVX2(panel4x2_avx2, 4, 2)
PANEL_KERNEL_AVX2(panel4x3_avx2, 4, 3)
PANEL_KERNEL_AVX2(panel4x4_avx2, 4, 4)
PANEL_KERNEL_AVX2(panel8x1_avx2, 8, 1)
PANEL_KERNEL_AVX2(panel8x2_avx2, 8, 2)
PANEL_KERNEL_AVX2(panel8x3_avx2, 8, 3)
PANEL_KERNEL_AVX2(panel8x4_avx2, 8, 4)
PANEL_KERNEL_AVX2(panel5x1_avx2, 5, 1)
PANEL_KERNEL_AVX2(panel5x2_avx2, 5, 2)
PANEL_KERNEL_AVX2(panel5x3_avx2, 5, 3)
PANEL_KERNEL_AVX2(panel5x4_avx2, 5, 4)
#endif

int cohort_cpu_has_panels(void) {
#if COHORT_X86
    return cohort_cpu_has_vnni() || cohort_cpu_has_avx2();
#else
    return 0;
#endif
}

void cohort_matmul_packed(int type, const void *packed, int rowBegin, int rowEnd, int k,
                          const cohort_q8_block *a, int tokens, float *y, int ldy) {
#if COHORT_X86
    typedef void (*tile_fn)(int, const void *, const cohort_q8_block *const *, float *, int, const char *);
    static const tile_fn four[8] = {panel4x1, panel4x2, panel4x3, panel4x4, panel4x5, panel4x6, panel4x7, panel4x8};
    static const tile_fn eight[8] = {panel8x1, panel8x2, panel8x3, panel8x4, panel8x5, panel8x6, panel8x7, panel8x8};
    static const tile_fn fourAVX2[4] = {panel4x1_avx2, panel4x2_avx2, panel4x3_avx2, panel4x4_avx2};
    static const tile_fn eightAVX2[4] = {panel8x1_avx2, panel8x2_avx2, panel8x3_avx2, panel8x4_avx2};
    static const tile_fn five[8] = {panel5x1, panel5x2, panel5x3, panel5x4, panel5x5, panel5x6, panel5x7, panel5x8};
    static const tile_fn fiveAVX2[4] = {panel5x1_avx2, panel5x2_avx2, panel5x3_avx2, panel5x4_avx2};
    const int nb = k / 32;
    const size_t panelBytes = (size_t)nb * (size_t)packed_block_bytes(type);
    const int vnni = cohort_cpu_has_vnni();
    const int tileTokens = vnni ? PANEL_TOKENS : PANEL_TOKENS_AVX2;
    const tile_fn *tiles = type == COHORT_TYPE_Q8_0   ? (vnni ? eight : eightAVX2)
                           : type == COHORT_TYPE_Q5_0 ? (vnni ? five : fiveAVX2)
                                                      : (vnni ? four : fourAVX2);
    // Tiles as even as possible (17 tokens: 6 + 6 + 5, not 8 + 8 + 1): a small tile
    // unpacks the weights for few tokens.
    const int tileCount = (tokens + tileTokens - 1) / tileTokens;
    // With more than one tile, each tile walks a run of panels that stays in L2, so the
    // weights come from memory once per run, not once per panel while the tiles take
    // turns (that left the hardware prefetcher behind: 1536 × 576 Q4_1 streamed from
    // memory, 16 tokens, 123 → 97 µs in one core; 12 tokens 94 → 73).
    const int runPanels = tileCount == 1 ? rowEnd / 8 : (int)(PANEL_RUN_BYTES / panelBytes) + 1;
    // From 7 tokens on, the first tile fetches the next panel while it computes this one
    // (the same sweep over SmolLM2's layer matrices: 8 tokens 6.8 → 5.9 ms, 16 tokens
    // 12.7 → 11.2); with fewer tokens the loads outrun the arithmetic and the hardware
    // prefetcher does better alone (4 tokens 3.1 → 3.3 ms with it).
    const int fetchAhead = tokens >= 7;
    for (int p0 = rowBegin / 8; p0 < rowEnd / 8; p0 += runPanels) {
        const int p1 = rowEnd / 8 - p0 < runPanels ? rowEnd / 8 : p0 + runPanels;
        for (int tile = 0, t = 0; tile < tileCount; tile++) {
            const int T = tokens / tileCount + (tile < tokens % tileCount ? 1 : 0);
            const cohort_q8_block *rows[PANEL_TOKENS];
            for (int i = 0; i < T; i++) rows[i] = a + (size_t)(t + i) * nb;
            for (int p = p0; p < p1; p++) {
                const char *panel = (const char *)packed + (size_t)p * panelBytes;
                const char *ahead = fetchAhead && tile == 0 && p + 1 < rowEnd / 8 ? panel + panelBytes : NULL;
                tiles[T - 1](nb, panel, rows, y + (size_t)t * ldy + 8 * p, ldy, ahead);
            }
            t += T;
        }
    }
#else
    (void)type; (void)packed; (void)rowBegin; (void)rowEnd; (void)k; (void)a; (void)tokens; (void)y; (void)ldy;
#endif
}
