// Cohort's numeric C shim. It holds only what Swift cannot express efficiently:
// AVX2 integer dot products on 8-bit activations (Swift never emits vpmaddubsw /
// vpmaddwd, measured in shared/NOTES.md at ~60% of this speed) and the attention inner
// loops (without -target-cpu Swift emits 4-wide SSE and no FMA: they took 16% of decode
// time). Everything else lives in Swift. Every AVX2 path is chosen at run time, with a
// scalar fallback. (Futexes and atomics on raw words are in CPlatform.)
#ifndef COHORT_CKERNELS_H
#define COHORT_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Activations quantized to 8 bits, 32 values per block (ggml's Q8_1 idea):
/// x[i] ≈ d * qs[i]; s = d * sum(qs), used by formats with a per-block minimum.
typedef struct {
    float d;
    float s;
    int8_t qs[32];
} cohort_q8_block;

/// Weight formats the integer kernels understand (values are ggml's type ids).
enum {
    COHORT_TYPE_Q4_0 = 2,
    COHORT_TYPE_Q4_1 = 3,
    COHORT_TYPE_Q5_0 = 6,
    COHORT_TYPE_Q8_0 = 8,
};

/// 1 when the running CPU has AVX2, FMA and F16C (the fast paths), else 0.
/// The widest instruction set the kernels may use: 0 scalar, 1 AVX2, 2 all (from `COHORT_ISA`).
int cohort_isa_limit(void);
int cohort_cpu_has_avx2(void);

/// Quantizes `n` floats (a multiple of 32) into n/32 blocks.
void cohort_quantize_row_q8(const float *x, cohort_q8_block *y, int n);

/// Dot product of one weight row (`n` values, n % 32 == 0, in ggml block layout
/// of `type`) with quantized activations.
float cohort_vec_dot_q8(int type, int n, const void *row, const cohort_q8_block *a);

/// Y[t * ldy + r] = dot(W row r, A token t) for r in [rowBegin, rowEnd), t in [0, tokens).
/// W rows are `rowBytes` apart; A holds `tokens` rows of k/32 blocks each.
void cohort_matmul_q8(int type, const void *w, size_t rowBytes, int rowBegin, int rowEnd,
                      int k, const cohort_q8_block *a, int tokens, float *y, int ldy);

/// 1 when the running CPU has AVX-512 VNNI (with VL and BW): the widest panel kernels.
int cohort_cpu_has_vnni(void);

/// 1 when the running CPU runs the packed-panel kernels: AVX-512 VNNI, or AVX2 (within
/// `COHORT_ISA`'s limit).
int cohort_cpu_has_panels(void);

/// Bytes of the packed form of `rows` × `k` weights of `type`, or 0 when the shape or
/// type cannot be packed (rows must be a multiple of 8, k of 32; Q4_0, Q4_1, Q5_0 or Q8_0).
size_t cohort_packed_bytes(int type, int rows, int k);

/// Repacks `rows` weight rows (`rowBytes` apart) into panels of 8 interleaved rows at
/// `packed` (cohort_packed_bytes bytes). Returns 0, or -1 for a shape that cannot be packed.
int cohort_pack_weights(int type, const void *w, size_t rowBytes, int rows, int k, void *packed);

/// Row `row` of packed weights back in `type`'s own block layout at `out`, exactly as it
/// was packed (the inverse of cohort_pack_weights for one row).
void cohort_unpack_row(int type, const void *packed, int row, int k, void *out);

/// Y[t * ldy + r] for r in [rowBegin, rowEnd) (multiples of 8), t in [0, tokens), from
/// packed weights. - Precondition: cohort_cpu_has_panels().
void cohort_matmul_packed(int type, const void *packed, int rowBegin, int rowEnd, int k,
                          const cohort_q8_block *a, int tokens, float *y, int ldy);

/// Attention scores against `count` cached keys `kStride` elements apart, for `group`
/// query heads of `hd` floats each: scores[i * ldScores + j] = scale · dot(q_i, k_j). The
/// cache holds float32, or IEEE half when `half` is 1.
void cohort_attention_scores(const float *q, int group, int hd, const void *k, int half, int kStride, int count,
                             float scale, float *scores, int ldScores);

/// out_i += Σ_j p[i * ldP + j] · v_j over `count` cached values `vStride` elements apart
/// (float32, or IEEE half when `half` is 1), for `group` heads of `hd` floats (out_i at
/// out + i · hd).
void cohort_attention_values(const float *p, int ldP, int group, int hd, const void *v, int half, int vStride, int count,
                             float *out);

/// Asks the CPU to fetch `rows` rows of `rowBytes` bytes, `strideBytes` apart, into L2
/// (the keys or values two blocks ahead while this one is computed).
void cohort_prefetch_rows(const void *base, size_t strideBytes, int rows, int rowBytes);

/// y[i] = half(x[i]) for `n` floats, rounded to nearest even.
void cohort_f32_to_f16_row(const float *x, uint16_t *y, int n);

/// In-place softmax over `n` floats (a vectorized exp on AVX2).
void cohort_softmax(float *x, int n);

/// The first index of the largest of `n` floats (NaNs never win; 0 when none is a number).
int cohort_argmax(const float *x, int n);

/// out[i] = x[i] · weight[i] / sqrt(mean(x²) + epsilon), the mean taken in double precision.
void cohort_rms_norm(const float *x, const float *weight, float epsilon, float *out, int n);

/// gate[i] = silu(gate[i]) · up[i] (SwiGLU) over `n` floats (a vectorized exp on AVX2).
void cohort_swiglu(float *gate, const float *up, int n);

/// Converts IEEE half bits to float (exact).
float cohort_f16_to_f32(uint16_t h);
/// Converts float to IEEE half bits, round to nearest even.
uint16_t cohort_f32_to_f16(float f);

#ifdef __cplusplus
}
#endif
#endif
