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

/* threefry2x32 (jax._src.random.threefry2x32, 20 rounds) of GROUP counter pairs (x0[g],
 * x1[g]) at once. A pair's rounds are one chain of dependent operations; GROUP chains side
 * by side keep the vector units busy (8 fit AVX-512's 32 registers, 4 AVX2's 16). */
#ifdef __AVX512F__
enum { GROUP = 8 };
#else
enum { GROUP = 4 };
#endif
static inline void threefry(vu k0, vu k1, vu *x0, vu *x1) {
  static const int rot[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};
  vu ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDA}, a[GROUP], b[GROUP];
  for (int g = 0; g < GROUP; g++) a[g] = x0[g] + ks[0], b[g] = x1[g] + ks[1];
  for (int i = 0; i < 5; i++) {
    for (int r = 0; r < 4; r++)
      for (int g = 0; g < GROUP; g++)
        a[g] = a[g] + b[g], b[g] = rotl(b[g], rot[i % 2][r]), b[g] = a[g] ^ b[g];
    for (int g = 0; g < GROUP; g++)
      a[g] = a[g] + ks[(i + 1) % 3], b[g] = b[g] + ks[(i + 2) % 3] + (unsigned)(i + 1);
  }
  for (int g = 0; g < GROUP; g++) x0[g] = a[g], x1[g] = b[g];
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
  for (long first = 0; first < half; first += GROUP) { /* a last group past `half`: unread */
    vu x0[GROUP], x1[GROUP];
    for (int g = 0; g < GROUP; g++)
      x0[g] = base + (unsigned)(first + g), x1[g] = x0[g] + (unsigned)half;
    threefry(k0, k1, x0, x1);
    for (long k = first; k < half && k < first + GROUP; k++) {
      vd u0 = word_value(x0[k - first]), u1 = word_value(x1[k - first]);
      for (long j = 0; j < tails; j++) C[j] += pick(TH[j] <= u0, one, zero);
      if (half + k < draws)
        for (long j = 0; j < tails; j++) C[j] += pick(TH[j] <= u1, one, zero);
    }
  }
}
#endif
