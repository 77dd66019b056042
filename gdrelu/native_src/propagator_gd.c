/* The propagator's GD, heavy-ball and SGD steps (gdrelu.propagator._block_steps,
 * gdrelu.kernel.lane_step) as one native loop for a CPU: `gdrelu.native`,
 * kernel="native". XLA's CPU loop dispatches about 14 operations per step; here every
 * value of a run stays in registers (or L1) for all the steps of a chunk.
 *
 * LANES = 8 runs per vector of GCC's vector extensions: two AVX2 registers, so that two
 * chains of dependent operations overlap (docs/performance-log.md); each group of eight
 * runs takes all its steps before the next. Arrays are (component, lanes), lanes
 * contiguous, `lanes` a multiple of LANES; D = 3 (GD: z = θ) or 6 (heavy ball: z = (θ, v)):
 *   phi[2D²]: Φ_t[i][j] at t*D² + i*D + j;  c;  tracked[T*D]: neuron k's z at D*k;
 *   kink;  moved (0/1);  c_velocity (heavy ball);  grams[2D²]: Σ_t like phi;
 *   plus[T], real[T] (0/1);  moments[10]: p, px, pxx, py, pxy at 2f + s (s = +, -);  h;
 *   with minibatches, `struct noise` instead of the moments.
 * The operations are the XLA loop's in the same order, and the largest kink keeps a NaN
 * as XLA's maximum does. Compiled with -ffp-contract=fast, as XLA's CPU backend contracts
 * a*b + c: Φ_t, c and the flags are the XLA loop's to the last bit; a few of the tracked
 * neurons' entries differ in their last bits, where the two compilers contract other
 * multiply-adds (tests/test_native.py). */
#include <stdlib.h>

#include "lanes.h"

enum { T = 6, DMAX = 6 };

/* SGD's minibatches (gdrelu.optim.multinomial_words, tail_counts; propagator.DrawTable):
 * key[2] and step0 (uint32 per lane), thresholds[points-1], first[10] (s*5 + f) and
 * table[(points-1)*10] ((j*2 + s)*5 + f), each (component, lanes). */
struct noise {
  long draws, points;
  const unsigned *key, *step0;
  const double *thresholds, *first, *table;
  vd *counts, *limits; /* scratch, points - 1 vectors each */
  vd *scaled;          /* scratch: B·first of the current lanes, 10 vectors */
};

/* a·b, out of line: XLA computes B·first once per chunk, rounded, before the steps' adds */
__attribute__((noinline)) static vd product(vd a, vd b) { return a * b; }

/* One optimizer step of the rows z = (a, b, w[, va, vb, vw]) at z[0], z[s], …, z[(D-1)s]:
 * GD θ ← θ - (h g1, h g0)·∇ (g1, g0 already times h), heavy ball v ← μ v + ∇, θ ← θ - h v. */
static inline __attribute__((always_inline)) void step_rows(vd *z, int s, int heavy, vd g1,
                                                             vd g0, vd h, double mu) {
  vd a = z[0], b = z[s], w = z[2 * s];
  if (!heavy) {
    z[0] = a - g1 * w;
    z[s] = b - g0 * w;
    z[2 * s] = w - (g1 * a + g0 * b);
    return;
  }
  vd va = mu * z[3 * s] + g1 * w, vb = mu * z[4 * s] + g0 * w;
  vd vw = mu * z[5 * s] + (g1 * a + g0 * b);
  z[0] = a - h * va, z[s] = b - h * vb, z[2 * s] = w - h * vw;
  z[3 * s] = va, z[4 * s] = vb, z[5 * s] = vw;
}

/* a·b + c in one rounding, as XLA's CPU backend contracts Σ_j C_j table_j: the first
 * product into the second's, then each next one; with one tail, its product into B·first.
 * XLA then multiplies by 1/B (tests/test_native.py). */
static inline vd fused(vd a, vd b, vd c) {
  vd r;
  for (int i = 0; i < LANES; i++) r[i] = __builtin_fma(a[i], b[i], c[i]);
  return r;
}

/* Step `step`'s minibatch moments M[2f + s] of the LANES lanes at l: the tail counts of its
 * `draws` words against the thresholds, then (B·first + Σ_j C_j table_j) / B. */
static inline void minibatch_moments(const struct noise *z, long lanes, long l, unsigned step,
                                     vd *M) {
  const long tails = z->points - 1;
  vu k0, k1, s0;
  __builtin_memcpy(&k0, z->key + l, sizeof k0);
  __builtin_memcpy(&k1, z->key + lanes + l, sizeof k1);
  __builtin_memcpy(&s0, z->step0 + l, sizeof s0);
  vd *C = z->counts, *TH = z->limits;
  for (long j = 0; j < tails; j++) TH[j] = load(z->thresholds + j * lanes + l);
  tail_counts(k0, k1, s0 + step, z->draws, tails, TH, C);
  for (int s = 0; s < 2; s++)
    for (int f = 0; f < 5; f++) {
      vd base = z->scaled[s * 5 + f], total;
      vd S0 = load(z->table + (s * 5 + f) * lanes + l);
      if (tails == 1) {
        total = fused(C[0], S0, base);
      } else {
        vd sum = fused(C[0], S0, C[1] * load(z->table + ((2 + s) * 5 + f) * lanes + l));
        for (long j = 2; j < tails; j++)
          sum = fused(C[j], load(z->table + ((j * 2 + s) * 5 + f) * lanes + l), sum);
        total = base + sum;
      }
      M[2 * f + s] = total * (1.0 / (double)z->draws);
    }
}

static inline __attribute__((always_inline)) void steps_of(
    const int D, const int heavy, long lanes, long count, long steps, double alpha, double mu,
    double *phi,
    double *c, double *tracked, double *kink, double *moved, double *c_velocity,
    const double *grams, const double *plus, const double *real, const double *moments,
    const double *h, const struct noise *noise) {
  const int DD = D * D;
  for (long l = 0; l < count; l += LANES) {
    vd P[2 * DMAX * DMAX], G[2 * DMAX * DMAX], TR[DMAX * T], M[10];
    vm PL[T], RE[T];
    for (int i = 0; i < 2 * DD; i++) {
      P[i] = load(phi + i * lanes + l);
      G[i] = load(grams + i * lanes + l);
    }
    for (int i = 0; i < D * T; i++) TR[i] = load(tracked + i * lanes + l);
    if (!noise)
      for (int i = 0; i < 10; i++) M[i] = load(moments + i * lanes + l);
    else
      for (int i = 0; i < 10; i++) {
        double b = (double)noise->draws;
        noise->scaled[i] = product((vd){} + b, load(noise->first + i * lanes + l));
      }
    for (int k = 0; k < T; k++) {
      PL[k] = load(plus + k * lanes + l) > 0.5;
      RE[k] = load(real + k * lanes + l) > 0.5;
    }
    vd C = load(c + l), K = load(kink + l), H = load(h + l);
    vd CV = heavy ? load(c_velocity + l) : (vd){};
    vm MV = load(moved + l) > 0.5;
    for (long s = 0; s < steps; s++) {
      if (noise) minibatch_moments(noise, lanes, l, (unsigned)s, M);
      vd wa[2], wb[2];
      for (int t = 0; t < 2; t++) {
        const vd *p = P + DD * t, *g = G + DD * t;
        vd u[DMAX];
        for (int i = 0; i < D; i++) {
          u[i] = g[D * i] * p[2 * D];
          for (int j = 1; j < D; j++) u[i] = u[i] + g[D * i + j] * p[2 * D + j];
        }
        wa[t] = p[0] * u[0], wb[t] = p[D] * u[0];
        for (int j = 1; j < D; j++) wa[t] = wa[t] + p[j] * u[j], wb[t] = wb[t] + p[D + j] * u[j];
      }
      vd slope[2] = {wa[0] + alpha * wa[1], alpha * wa[0] + wa[1]};
      vd level[2] = {C + (wb[0] + alpha * wb[1]), C + (alpha * wb[0] + wb[1])};
      vd r0[2], r1[2];
      for (int d = 0; d < 2; d++) {
        r0[d] = level[d] * M[0 + d] + slope[d] * M[2 + d] - M[6 + d];
        r1[d] = level[d] * M[2 + d] + slope[d] * M[4 + d] - M[8 + d];
      }
      vd g1[2] = {r1[0] + alpha * r1[1], alpha * r1[0] + r1[1]};
      vd g0[2] = {r0[0] + alpha * r0[1], alpha * r0[0] + r0[1]};
      if (!heavy)
        for (int t = 0; t < 2; t++) g1[t] = H * g1[t], g0[t] = H * g0[t];
      for (int t = 0; t < 2; t++)
        for (int j = 0; j < D; j++) step_rows(P + DD * t + j, D, heavy, g1[t], g0[t], H, mu);
      if (heavy) {
        CV = mu * CV + (r0[0] + r0[1]);
        C = C - H * CV;
      } else {
        C = C - H * (r0[0] + r0[1]);
      }
      for (int k = 0; k < T; k++) {
        vd t1 = pick(PL[k], g1[0], g1[1]), t0 = pick(PL[k], g0[0], g0[1]);
        step_rows(TR + D * k, 1, heavy, t1, t0, H, mu);
        vd na = TR[D * k], nb = TR[D * k + 1];
        vd ratio = pick(RE[k], absolute(nb / na), (vd){});
        K = pick((K != K) | (ratio <= K), K, ratio);
        MV = MV | (RE[k] & ((na > 0) != PL[k]));
      }
    }
    for (int i = 0; i < 2 * DD; i++) store(phi + i * lanes + l, P[i]);
    for (int i = 0; i < D * T; i++) store(tracked + i * lanes + l, TR[i]);
    store(c + l, C);
    if (heavy) store(c_velocity + l, CV);
    store(kink + l, K);
    store(moved + l, pick(MV, (vd){} + 1.0, (vd){}));
  }
}

void gd_steps(long lanes, long steps, double alpha, double *phi, double *c, double *tracked,
              double *kink, double *moved, const double *grams, const double *plus,
              const double *real, const double *moments, const double *h) {
  steps_of(3, 0, lanes, lanes, steps, alpha, 0.0, phi, c, tracked, kink, moved, 0, grams, plus,
           real, moments, h, 0);
}

void heavy_ball_steps(long lanes, long steps, double alpha, double mu, double *phi, double *c,
                      double *tracked, double *kink, double *moved, double *c_velocity,
                      const double *grams, const double *plus, const double *real,
                      const double *moments, const double *h) {
  steps_of(6, 1, lanes, lanes, steps, alpha, mu, phi, c, tracked, kink, moved, c_velocity, grams,
           plus, real, moments, h, 0);
}

/* SGD (mu < 0: D = 3) or heavy ball with minibatches (D = 6) on the first `count` of
 * `lanes`: each step's moments from its multinomial draws (struct noise), from `points` ≥ 2
 * data points. Returns 0, or -1 when its scratch memory could not be allocated (nothing
 * stepped then). */
static int minibatch_lanes(long lanes, long count, long steps, double alpha, double mu,
                           double *phi, double *c, double *tracked, double *kink, double *moved,
                           double *c_velocity, const double *grams, const double *plus,
                           const double *real, const double *h, long draws, long points,
                           const unsigned *key, const unsigned *step0, const double *thresholds,
                           const double *first, const double *table) {
  vd *scratch = aligned_alloc(sizeof(vd), (2 * (size_t)(points - 1) + 10) * sizeof(vd));
  if (!scratch) return -1;
  struct noise z = {draws, points, key, step0, thresholds, first, table, scratch,
                    scratch + (points - 1), scratch + 2 * (points - 1)};
  if (mu < 0)
    steps_of(3, 0, lanes, count, steps, alpha, 0.0, phi, c, tracked, kink, moved, 0, grams, plus,
             real, 0, h, &z);
  else
    steps_of(6, 1, lanes, count, steps, alpha, mu, phi, c, tracked, kink, moved, c_velocity,
             grams, plus, real, 0, h, &z);
  free(scratch);
  return 0;
}

#ifdef GDRELU_XLA_FFI
/* The same loops as an XLA FFI handler (`native.native_steps`), so that a program calling
 * them holds a target's name, not a host callback's address, and JAX can keep it in its
 * compilation cache. Operands, (component, lanes) with lanes a multiple of LANES: the carry
 * (phi, c, tracked, kink, moved[, c_velocity]), then grams, plus, real, moments, h[, key,
 * step, thresholds, first, table], then config = (alpha, mu or -1, steps, draws or 0,
 * active); results: the carry after the steps of the first `active` lanes (rounded up to
 * LANES), the others copied. */
#include "ffi.h"

XLA_FFI_Error *gdrelu_steps(XLA_FFI_CallFrame *call) {
  if (metadata_query(call)) return 0;
  void **in = call->args.args, **out = call->rets.rets;
  long carried = call->rets.size, operands = call->args.size;
  const double *config = buffer(in[operands - 1])->data;
  double alpha = config[0], mu = config[1];
  long steps = (long)config[2], draws = (long)config[3], active = (long)config[4];
  double *v[6];
  for (long i = 0; i < carried; i++) {
    v[i] = buffer(out[i])->data;
    memcpy(v[i], buffer(in[i])->data, bytes(buffer(in[i])));
  }
  long lanes = lanes_of(buffer(in[1]));
  if (lanes % LANES) /* whole vectors only: the loop would read past the arrays */
    return failure(call, "gdrelu's C loop takes lanes in multiples of LANES",
                   XLA_FFI_Error_Code_INVALID_ARGUMENT);
  long count = (active + LANES - 1) / LANES * LANES;
  count = count < lanes ? count : lanes;
  const double *f[5];
  for (int i = 0; i < 5; i++) f[i] = buffer(in[carried + i])->data;
  double *velocity = carried == 6 ? v[5] : 0;
  if (!draws) {
    if (carried == 6)
      steps_of(6, 1, lanes, count, steps, alpha, mu, v[0], v[1], v[2], v[3], v[4], velocity, f[0],
               f[1], f[2], f[3], f[4], 0);
    else
      steps_of(3, 0, lanes, count, steps, alpha, 0.0, v[0], v[1], v[2], v[3], v[4], 0, f[0], f[1],
               f[2], f[3], f[4], 0);
    return 0;
  }
  void **noise = in + carried + 5;
  XLA_FFI_Buffer *thresholds = buffer(noise[2]);
  long points = (long)(bytes(thresholds) / 8 / (size_t)lanes) + 1;
  if (minibatch_lanes(lanes, count, steps, alpha, mu, v[0], v[1], v[2], v[3], v[4], velocity,
                      f[0], f[1], f[2], f[4], draws, points, buffer(noise[0])->data,
                      buffer(noise[1])->data, thresholds->data, buffer(noise[3])->data,
                      buffer(noise[4])->data)) {
    return failure(call, "gdrelu's C loop could not allocate its counts",
                   XLA_FFI_Error_Code_RESOURCE_EXHAUSTED);
  }
  return 0;
}
#endif
