/* What gdrelu's C loops share: LANES runs per vector (GCC's vector extensions), the
 * vector helpers, and threefry2x32 for the multinomial sampler's words. */
#ifndef GDRELU_LANES_H
#define GDRELU_LANES_H
#define LANES 8
typedef double vd __attribute__((vector_size(8 * LANES)));
typedef long long vm __attribute__((vector_size(8 * LANES)));
typedef unsigned vu __attribute__((vector_size(4 * LANES)));
typedef int vs __attribute__((vector_size(4 * LANES)));

static inline vd load(const double *p) { vd v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void store(double *p, vd v) { __builtin_memcpy(p, &v, sizeof v); }
static inline vd pick(vm m, vd a, vd b) { return (vd)((m & (vm)a) | (~m & (vm)b)); }
static inline vd absolute(vd x) { return (vd)((vm)x & ~(((vm){} + 1) << 63)); }

static inline vu rotl(vu x, int r) { return (x << r) | (x >> (32 - r)); }

/* threefry2x32 (jax._src.random.threefry2x32, 20 rounds) of the counter pairs (x0, x1). */
static inline void threefry(vu k0, vu k1, vu *x0, vu *x1) {
  static const int rot[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};
  vu ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDA};
  vu a = *x0 + ks[0], b = *x1 + ks[1];
  for (int i = 0; i < 5; i++) {
    for (int r = 0; r < 4; r++) a = a + b, b = rotl(b, rot[i % 2][r]), b = a ^ b;
    a = a + ks[(i + 1) % 3], b = b + ks[(i + 2) % 3] + (unsigned)(i + 1);
  }
  *x0 = a, *x1 = b;
}

/* 32-bit words as doubles (gdrelu.optim.tail_counts' u_k in float64), through signed
 * words, which AVX2 converts: x - 2³¹, then + 2³¹, exact. */
static inline vd word_value(vu x) {
  return __builtin_convertvector((vs)(x ^ 0x80000000u), vd) + 2147483648.0;
}

/* Step `step`'s tail counts C[j] = #{draws k: thresholds[j] ≤ u_k}, j < tails, of the
 * `draws` words of counters (step·B' + k, step·B' + B'/2 + k) (gdrelu.optim.
 * multinomial_words, B' = draws rounded up to even) of the keys (k0, k1). */
static inline void tail_counts(vu k0, vu k1, vu step, long draws, long tails, const vd *TH,
                               vd *C) {
  const long even = draws + draws % 2, half = even / 2;
  vd one = (vd){} + 1.0, zero = (vd){};
  for (long j = 0; j < tails; j++) C[j] = zero;
  vu base = step * (unsigned)even;
  for (long k = 0; k < half; k++) {
    vu x0 = base + (unsigned)k, x1 = x0 + (unsigned)half;
    threefry(k0, k1, &x0, &x1);
    vd u0 = word_value(x0), u1 = word_value(x1);
    for (long j = 0; j < tails; j++) C[j] += pick(TH[j] <= u0, one, zero);
    if (half + k < draws)
      for (long j = 0; j < tails; j++) C[j] += pick(TH[j] <= u1, one, zero);
  }
}
#endif
