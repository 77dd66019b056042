/* The general path (gdrelu.engine.paths._trained for 1-D data) of GD, SGD, heavy ball
 * (optax.sgd with momentum μ) and Adam (gdrelu.optim.scale_by_adam) as one native loop
 * for a CPU: `gdrelu.native_general`, with kernel="native". XLA's loop passes over the
 * (m, n) preactivations with about 40 operations per step, each a round trip through
 * memory; here a run's neurons stay in L1 or L2 for all the steps of a chunk, LANES runs
 * per vector.
 *
 * Arrays are (component, lanes), lanes contiguous, `lanes` a multiple of LANES:
 *   theta[3n + 1]: a_i at i, b_i at n + i, w_i at 2n + i, c at 3n;  mu, nu: Adam's moments,
 *   the same rows (heavy ball: mu its velocity; GD and SGD: neither);  count: Adam's step
 *   count;  kink: the largest |b_i / (s_a a_i)| of the
 *   chunk;  first, below: the first step whose activation pattern differs from the chunk's
 *   first, and whose loss is below `limit` = (1 - ε) L_lin (-1: none);  flags[n]: the
 *   neurons whose pattern or side of the origin changed (0/1);
 *   x, y, p[m]: the points, targets and weights;  h, sa, sw, limit;  key[2], step (uint32):
 *   the multinomial sampler's key and the chunk's first step;  thresholds[m - 1]
 *   (gdrelu.optim.multinomial_thresholds).
 *
 * Each step does one pass over the neurons: its gradient at θ_t from the outputs f(x_j)
 * of θ_t, the optimizer's update, and θ_{t+1}'s contribution to the next outputs and
 * pattern. The operations are the XLA loop's, but its sums over the neurons and points
 * run in another order: the parameters agree with XLA's to 1e-10 relative over 300 steps,
 * not to the bit (tests/test_native_general.py), so this loop is a kernel of its own,
 * chosen by name. */
#include <math.h>
#include <stdlib.h>

#include "lanes.h"

enum { MAX_POINTS = 63 }; /* a neuron's pattern is a bit mask of the points */
enum { PLAIN, HEAVY_BALL, ADAM }; /* θ - h g (GD, SGD); v ← g + μ v, θ - h v; Adam */

static const double B1 = 0.9, B2 = 0.999, EPS = 1e-8;
static const double COUNT_MAX = 2147483647.0; /* optax's int32 count saturates */

struct general_arrays {
  long n, m, lanes, steps, draws;
  double alpha, momentum;
  double *theta, *mu, *nu, *count, *kink, *first, *below, *flags;
  const double *x, *y, *p, *h, *sa, *sw, *limit, *thresholds;
  const unsigned *key, *step0;
  const double *c1, *c2; /* 1 / (1 - β^t) of the chunk's steps when every lane's count is
                            the same (else 0: each lane's, from pow) */
  vd *records;           /* (n + 1) records of `record(ADAM)` vectors */
};

/* Adam's update of one parameter: m ← (1 - β₁) g + β₁ m, v ← (1 - β₂) g² + β₂ v, then
 * θ ← θ - h m̂ / (√v̂ + ε) with m̂ = m · c1, v̂ = v · c2. */
static inline __attribute__((always_inline)) vd adam(vd theta, vd g, vd *mu, vd *nu, vd c1,
                                                    vd c2, vd minus_h) {
  vd m = (1.0 - B1) * g + B1 * *mu, v = (1.0 - B2) * (g * g) + B2 * *nu;
  *mu = m, *nu = v;
  vd root, scaled = v * c2;
  for (int q = 0; q < LANES; q++) root[q] = __builtin_sqrt(scaled[q]);
  return theta + (m * c1) / (root + EPS) * minus_h;
}

/* The optimizer's update of one parameter with gradient g (`mode`: PLAIN, HEAVY_BALL,
 * ADAM) and state mu, nu (as `adam`; a mode reads only the state it has). */
static inline __attribute__((always_inline)) vd update(const int mode, vd theta, vd g, vd *mu,
                                                      vd *nu, vd c1, vd c2, vd minus_h,
                                                      double momentum) {
  if (mode == ADAM) return adam(theta, g, mu, nu, c1, c2, minus_h);
  if (mode == PLAIN) return theta + g * minus_h;
  vd v = g + momentum * *mu;
  *mu = v;
  return theta + v * minus_h;
}

/* A lane group's neurons while it steps: one record of `record(mode)` vectors each,
 * contiguous (a, b, w; the optimizer's state, MU and NU; the chunk's first pattern, side
 * and realness, and whether it changed), then c's (its state at MU and NU). The arrays'
 * rows are `lanes` doubles apart, a multiple of 4 KiB for 512 or 1024 lanes: loads and
 * stores of different rows then share their address bits below 4 KiB, and the CPU stalls
 * each load behind the stores it cannot tell apart (about twice as slow for heavy ball
 * and Adam, 2026-12-06). */
enum { MU = 3, NU = 6 };
enum { START = 4, PLUS = 3, REAL = 2, CHANGED = 1 }; /* counted back from a record's end */
/* The optimizer's state per parameter (mu, nu), and a record's length. */
static inline long states(const int mode) { return mode == ADAM ? 2 : mode == HEAVY_BALL; }
static inline long record(const int mode) { return 7 + 3 * states(mode); }

/* max(K, |b / sa_a|) where `real`, keeping a NaN as XLA's maximum does. The division
 * only where some lane may raise K: |b| < fl(K |sa_a|)(1 - 2⁻⁵⁰) proves |b / sa_a| < K,
 * and otherwise (a NaN, a zero sa_a, a larger |b|) the quotient decides. */
static inline __attribute__((always_inline)) vd largest_kink(vd K, vd b, vd sa_a, vm real) {
  vm below = absolute(b) < K * absolute(sa_a) * (1.0 - 0x1p-50);
  vm open = real & ~below;
  for (int q = 0; q < LANES; q++)
    if (open[q]) {
      vd ratio = pick(real, absolute(b / sa_a), (vd){});
      return pick((K != K) | (ratio <= K), K, ratio);
    }
  return K;
}

/* σ_α(z) and the gradient's σ'_α(z)·r, ReLU (relu: α = 0) as masks. */
static inline __attribute__((always_inline)) vd hidden(const int relu, vm on, vd z, double alpha) {
  return relu ? (vd)((vm)z & on) : pick(on, z, alpha * z);
}

/* What one step's pass over the neurons reads and writes (`neurons`). */
struct neuron_step {
  vd *rec;
  const vd *X, *R;
  vd SA, SW, c1, c2, minus_h;
  double alpha, momentum;
  vd *K, *S;
  vm *differs;
};

/* Neurons i, …, i + P - 1 (P = 1 or 2) of one step: the gradient at θ_t (from the
 * residuals R), the optimizer's update, the largest kink, and θ_{t+1}'s share S of the next outputs
 * and its pattern. Two neurons' independent chains interleave, which the CPU's window
 * would not hold otherwise; the sums over the neurons keep their order. */
static inline __attribute__((always_inline)) void neurons(const int P, const int mode,
                                                          const int relu, const long m,
                                                          const struct neuron_step *t, long i) {
  const long size = record(mode);
  vd a[2], b[2], w[2], ga[2], gb[2], gw[2], theta[3][2], *r[2];
  for (int k = 0; k < P; k++) {
    r[k] = t->rec + (i + k) * size;
    a[k] = r[k][0], b[k] = r[k][1], w[k] = r[k][2];
    ga[k] = gb[k] = gw[k] = (vd){};
  }
  for (long j = 0; j < m; j++)
    for (int k = 0; k < P; k++) {
      vd z = t->SA * (t->X[j] * a[k]) + b[k];
      vm on = z >= 0;
      vd back = hidden(relu, on, t->R[j], t->alpha);
      ga[k] += t->X[j] * back, gb[k] += back, gw[k] += t->R[j] * hidden(relu, on, z, t->alpha);
    }
  for (int k = 0; k < P; k++) {
    vd outer = t->SW * w[k];
    vd g[3] = {t->SA * outer * ga[k], outer * gb[k], t->SW * gw[k]}, old[3] = {a[k], b[k], w[k]};
    for (int f = 0; f < 3; f++) {
      theta[f][k] = update(mode, old[f], g[f], r[k] + MU + f, r[k] + NU + f, t->c1, t->c2,
                           t->minus_h, t->momentum);
      r[k][f] = theta[f][k];
    }
  }
  vm bits[2] = {(vm){}, (vm){}};
  for (int k = 0; k < P; k++)
    *t->K = largest_kink(*t->K, theta[1][k], t->SA * theta[0][k], (vm)r[k][size - REAL]);
  for (long j = 0; j < m; j++)
    for (int k = 0; k < P; k++) {
      vd z = t->SA * (t->X[j] * theta[0][k]) + theta[1][k];
      vm on = z >= 0;
      t->S[j] += hidden(relu, on, z, t->alpha) * theta[2][k];
      bits[k] |= on & ((vm){} + (1ll << j));
    }
  for (int k = 0; k < P; k++) {
    vm moved = bits[k] != (vm)r[k][size - START];
    *t->differs |= moved;
    vm side = (theta[0][k] > 0) != (vm)r[k][size - PLUS];
    r[k][size - CHANGED] = (vd)((vm)r[k][size - CHANGED] | moved | side);
  }
}

/* Lane group l's parameters and optimizer state (c's state too) copied from the arrays
 * into its records (`back` = 0), or from the records back, with the change flags
 * (`back` = 1). */
static inline void copy(double *row, vd *slot, int back) {
  if (back)
    store(row, *slot);
  else
    *slot = load(row);
}

static inline __attribute__((always_inline)) void records(const int mode,
                                                          const struct general_arrays *A,
                                                          long l, int back) {
  const long n = A->n, L = A->lanes, size = record(mode), kept = states(mode);
  double *theta = A->theta + l, *state[2] = {A->mu + l, A->nu + l};
  for (long i = 0; i < n; i++) {
    vd *r = A->records + i * size;
    for (long f = 0; f < 3; f++) {
      long at = (f * n + i) * L;
      copy(theta + at, r + f, back);
      for (long q = 0; q < kept; q++) copy(state[q] + at, r + MU + 3 * q + f, back);
    }
    if (back) store(A->flags + i * L + l, pick((vm)r[size - CHANGED], (vd){} + 1.0, (vd){}));
  }
  for (long q = 0; q < kept; q++) /* c's state; the loop holds c itself */
    copy(state[q] + 3 * n * L, A->records + n * size + MU + 3 * q, back);
}

static inline __attribute__((always_inline)) void lanes_at(const int mode, const int relu,
                                                           const long m,
                                                           const struct general_arrays *A,
                                                           long l) {
  const long n = A->n, L = A->lanes, rows = 3 * n;
  vd X[MAX_POINTS], Y[MAX_POINTS], P[MAX_POINTS], TH[MAX_POINTS], F[MAX_POINTS], S[MAX_POINTS];
  vd R[MAX_POINTS];
  for (long j = 0; j < m; j++)
    X[j] = load(A->x + j * L + l), Y[j] = load(A->y + j * L + l), P[j] = load(A->p + j * L + l);
  for (long j = 0; j + 1 < m; j++) TH[j] = load(A->thresholds + j * L + l);
  vu k0, k1, s0;
  __builtin_memcpy(&k0, A->key + l, sizeof k0);
  __builtin_memcpy(&k1, A->key + L + l, sizeof k1);
  __builtin_memcpy(&s0, A->step0 + l, sizeof s0);
  vd SA = load(A->sa + l), SW = load(A->sw + l), MINUS_H = -load(A->h + l);
  vd LIMIT = load(A->limit + l), COUNT = load(A->count + l), K = (vd){};
  vd FIRST = (vd){} - 1.0, BELOW = (vd){} - 1.0, STEP0 = __builtin_convertvector(s0, vd);
  const long size = record(mode);
  vd *rec = A->records, C = load(A->theta + l + rows * L);
  records(mode, A, l, 0);

  /* the chunk's first outputs, and each neuron's pattern, side and realness */
  for (long j = 0; j < m; j++) S[j] = (vd){};
  for (long i = 0; i < n; i++) {
    vd *r = rec + i * size, a = r[0], b = r[1], w = r[2];
    vm bits = (vm){};
    for (long j = 0; j < m; j++) {
      vd z = SA * (X[j] * a) + b;
      vm on = z >= 0;
      S[j] += hidden(relu, on, z, A->alpha) * w;
      bits |= on & ((vm){} + (1ll << j));
    }
    r[size - START] = (vd)bits, r[size - PLUS] = (vd)(a > 0), r[size - CHANGED] = (vd){};
    r[size - REAL] = (vd)((a != 0) | (b != 0) | (w != 0));
  }
  for (long j = 0; j < m; j++) F[j] = C + SW * S[j];

  for (long s = 0;; s++) {
    vd now = STEP0 + (double)s, loss = (vd){};
    for (long j = 0; j < m; j++) {
      vd e = F[j] - Y[j];
      loss += P[j] * e * e;
      R[j] = e;
    }
    loss = 0.5 * loss;
    vm low = (loss < LIMIT) & (BELOW < 0);
    if (s > 0 || A->steps == 0) BELOW = pick(low, now, BELOW); /* θ_0 is the chunk's start */
    if (s == A->steps) break;
    if (A->draws) {
      vd tails[MAX_POINTS], B = (vd){} + (double)A->draws;
      tail_counts(k0, k1, s0 + (unsigned)s, A->draws, m - 1, TH, tails);
      vd above = B;
      for (long j = 0; j + 1 < m; j++) R[j] = (above - tails[j]) / B * R[j], above = tails[j];
      R[m - 1] = (above - (vd){}) / B * R[m - 1];
    } else {
      for (long j = 0; j < m; j++) R[j] = P[j] * R[j];
    }
    vd c1 = (vd){}, c2 = (vd){};
    if (mode == ADAM) {
      COUNT = COUNT + 1.0;
      COUNT = pick(COUNT > COUNT_MAX, (vd){} + COUNT_MAX, COUNT);
    }
    if (mode != ADAM) {
    } else if (A->c1) {
      c1 = (vd){} + A->c1[s], c2 = (vd){} + A->c2[s];
    } else {
      for (int q = 0; q < LANES; q++)
        c1[q] = 1.0 / (1.0 - pow(B1, COUNT[q])), c2[q] = 1.0 / (1.0 - pow(B2, COUNT[q]));
    }
    vd gc = R[0];
    for (long j = 1; j < m; j++) gc += R[j];
    C = update(mode, C, gc, rec + n * size + MU, rec + n * size + NU, c1, c2, MINUS_H,
               A->momentum);
    vm differs = (vm){};
    for (long j = 0; j < m; j++) S[j] = (vd){};
    struct neuron_step step = {rec, X, R, SA, SW, c1, c2, MINUS_H, A->alpha, A->momentum,
                               &K, S, &differs};
    long i = 0;
    for (; i + 1 < n; i += 2) neurons(2, mode, relu, m, &step, i);
    if (i < n) neurons(1, mode, relu, m, &step, i);
    for (long j = 0; j < m; j++) F[j] = C + SW * S[j];
    FIRST = pick(differs & (FIRST < 0), now + 1.0, FIRST);
  }
  store(A->theta + l + rows * L, C);
  records(mode, A, l, 1);
  store(A->count + l, COUNT), store(A->kink + l, K);
  store(A->first + l, FIRST), store(A->below + l, BELOW);
}

/* Every lane group of the first `count` lanes, in `mode`'s loop; ReLU and the paper's six
 * points compiled apart, so that their loops over the points unroll. */
static inline __attribute__((always_inline)) void mode_lanes(const int mode,
                                                             const struct general_arrays *A,
                                                             long count) {
  const int relu = A->alpha == 0.0;
  for (long l = 0; l < count; l += LANES) {
    if (relu && A->m == 6)
      lanes_at(mode, 1, 6, A, l);
    else if (relu)
      lanes_at(mode, 1, A->m, A, l);
    else if (A->m == 6)
      lanes_at(mode, 0, 6, A, l);
    else
      lanes_at(mode, 0, A->m, A, l);
  }
}

static void general_lanes(int mode, const struct general_arrays *A, long count) {
  if (mode == ADAM)
    mode_lanes(ADAM, A, count);
  else if (mode == HEAVY_BALL)
    mode_lanes(HEAVY_BALL, A, count);
  else
    mode_lanes(PLAIN, A, count);
}

/* Adam's bias corrections 1 / (1 - β^t) for the chunk's steps t, c1 then c2 (`steps` + 1
 * apart), when the first `count` lanes' counts agree (they do within a batch) and stay
 * below optax's saturation: a table the caller frees; else 0 (each lane's, from pow). */
static double *bias_corrections(const double *counts, long count, long steps) {
  int same = 1;
  for (long q = 1; q < count; q++) same &= counts[q] == counts[0];
  if (!same || counts[0] + (double)steps >= COUNT_MAX) return 0;
  double *table = malloc(2 * (size_t)(steps + 1) * sizeof(double));
  for (long s = 0; table && s < steps; s++) {
    double t = counts[0] + (double)(s + 1);
    table[s] = 1.0 / (1.0 - pow(B1, t));
    table[steps + 1 + s] = 1.0 / (1.0 - pow(B2, t));
  }
  return table;
}

#ifdef GDRELU_XLA_FFI
/* The loop as an XLA FFI handler (`native_general.general_chunk`). Operands: the carry
 * (theta, mu, nu, count, kink, first, below, flags; mu, nu and count of one row where the
 * optimizer has none), then x, y, p, h, sa, sw, limit, key, step, thresholds, then config
 * = (alpha, steps, draws or 0, active, mode, μ); results: the carry after the steps of the
 * first `active` lanes (rounded up to LANES), the others copied. */
#include "ffi.h"

XLA_FFI_Error *gdrelu_general_steps(XLA_FFI_CallFrame *call) {
  if (metadata_query(call)) return 0;
  void **in = call->args.args, **out = call->rets.rets;
  const long carried = 8;
  if (call->rets.size != carried || call->args.size != carried + 11)
    return failure(call, "gdrelu's general loop takes 8 carried and 11 fixed operands",
                   XLA_FFI_Error_Code_INVALID_ARGUMENT);
  double *v[8];
  for (long i = 0; i < carried; i++) {
    v[i] = buffer(out[i])->data;
    memcpy(v[i], buffer(in[i])->data, bytes(buffer(in[i])));
  }
  const double *config = buffer(in[carried + 10])->data;
  long lanes = lanes_of(buffer(in[0])), rows = buffer(in[0])->dims[0];
  long m = buffer(in[carried])->dims[0], active = (long)config[3], mode = (long)config[4];
  long state_rows = mode == PLAIN ? 1 : rows;
  if (lanes % LANES || m < 1 || m > MAX_POINTS || rows % 3 != 1 || mode < PLAIN ||
      mode > ADAM || buffer(in[1])->dims[0] != state_rows ||
      buffer(in[2])->dims[0] != (mode == ADAM ? rows : 1))
    return failure(call, "gdrelu's general loop takes lanes in multiples of LANES, 1-63 "
                         "points, 3n + 1 parameter rows and the optimizer's state rows",
                   XLA_FFI_Error_Code_INVALID_ARGUMENT);
  long count = (active + LANES - 1) / LANES * LANES;
  count = count < lanes ? count : lanes;
  const double *f[10];
  for (int i = 0; i < 10; i++) f[i] = buffer(in[carried + i])->data;
  struct general_arrays A = {
      rows / 3, m, lanes, (long)config[1], (long)config[2], config[0], config[5],
      v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
      f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[9],
      (const unsigned *)f[7], (const unsigned *)f[8], 0, 0, 0};
  if (!count) return 0;
  double *table = mode == ADAM ? bias_corrections(v[3], count, A.steps) : 0;
  if (table) A.c1 = table, A.c2 = table + A.steps + 1;
  A.records = aligned_alloc(sizeof(vd), (size_t)(A.n + 1) * record(ADAM) * sizeof(vd));
  if (!A.records) {
    free(table);
    return failure(call, "gdrelu's general loop could not allocate its scratch",
                   XLA_FFI_Error_Code_RESOURCE_EXHAUSTED);
  }
  general_lanes((int)mode, &A, count);
  free(A.records);
  free(table);
  return 0;
}
#endif
