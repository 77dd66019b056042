/* The propagator's full-batch GD and heavy-ball steps (gdrelu.propagator._block_steps,
 * gdrelu.kernel.lane_step) as one native loop for a CPU: `gdrelu.native`,
 * kernel="native". XLA's CPU loop dispatches about 14 operations per step; here every
 * value of a run stays in registers (or L1) for all the steps of a chunk.
 *
 * Four lanes (runs) per vector of GCC's vector extensions (one AVX2 register); each group
 * of four runs takes all its steps before the next. Arrays are (component, lanes), lanes
 * contiguous, `lanes` a multiple of 4; D = 3 (GD: z = θ) or 6 (heavy ball: z = (θ, v)):
 *   phi[2D²]: Φ_t[i][j] at t*D² + i*D + j;  c;  tracked[T*D]: neuron k's z at D*k;
 *   kink;  moved (0/1);  c_velocity (heavy ball);  grams[2D²]: Σ_t like phi;
 *   plus[T], real[T] (0/1);  moments[10]: p, px, pxx, py, pxy at 2f + s (s = +, -);  h.
 * The operations are the XLA loop's in the same order, and the largest kink keeps a NaN
 * as XLA's maximum does. Compiled with -ffp-contract=fast, as XLA's CPU backend contracts
 * a*b + c: Φ_t, c and the flags are the XLA loop's to the last bit; a few of the tracked
 * neurons' entries differ in their last bits, where the two compilers contract other
 * multiply-adds (tests/test_native.py). */
typedef double v4 __attribute__((vector_size(32)));
typedef long long m4 __attribute__((vector_size(32)));
enum { T = 6, DMAX = 6 };

static inline v4 load(const double *p) { v4 v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void store(double *p, v4 v) { __builtin_memcpy(p, &v, sizeof v); }
static inline v4 select(m4 m, v4 a, v4 b) { return (v4)((m & (m4)a) | (~m & (m4)b)); }
static inline v4 absolute(v4 x) { return (v4)((m4)x & ~((m4){1, 1, 1, 1} << 63)); }

/* One optimizer step of the rows z = (a, b, w[, va, vb, vw]) at z[0], z[s], …, z[(D-1)s]:
 * GD θ ← θ - (h g1, h g0)·∇ (g1, g0 already times h), heavy ball v ← μ v + ∇, θ ← θ - h v. */
static inline __attribute__((always_inline)) void step_rows(v4 *z, int s, int heavy, v4 g1,
                                                             v4 g0, v4 h, double mu) {
  v4 a = z[0], b = z[s], w = z[2 * s];
  if (!heavy) {
    z[0] = a - g1 * w;
    z[s] = b - g0 * w;
    z[2 * s] = w - (g1 * a + g0 * b);
    return;
  }
  v4 va = mu * z[3 * s] + g1 * w, vb = mu * z[4 * s] + g0 * w;
  v4 vw = mu * z[5 * s] + (g1 * a + g0 * b);
  z[0] = a - h * va, z[s] = b - h * vb, z[2 * s] = w - h * vw;
  z[3 * s] = va, z[4 * s] = vb, z[5 * s] = vw;
}

static inline __attribute__((always_inline)) void steps_of(
    const int D, const int heavy, long lanes, long steps, double alpha, double mu, double *phi,
    double *c, double *tracked, double *kink, double *moved, double *c_velocity,
    const double *grams, const double *plus, const double *real, const double *moments,
    const double *h) {
  const int DD = D * D;
  for (long l = 0; l < lanes; l += 4) {
    v4 P[2 * DMAX * DMAX], G[2 * DMAX * DMAX], TR[DMAX * T], M[10];
    m4 PL[T], RE[T];
    for (int i = 0; i < 2 * DD; i++) {
      P[i] = load(phi + i * lanes + l);
      G[i] = load(grams + i * lanes + l);
    }
    for (int i = 0; i < D * T; i++) TR[i] = load(tracked + i * lanes + l);
    for (int i = 0; i < 10; i++) M[i] = load(moments + i * lanes + l);
    for (int k = 0; k < T; k++) {
      PL[k] = load(plus + k * lanes + l) > 0.5;
      RE[k] = load(real + k * lanes + l) > 0.5;
    }
    v4 C = load(c + l), K = load(kink + l), H = load(h + l);
    v4 CV = heavy ? load(c_velocity + l) : (v4){0, 0, 0, 0};
    m4 MV = load(moved + l) > 0.5;
    for (long s = 0; s < steps; s++) {
      v4 wa[2], wb[2];
      for (int t = 0; t < 2; t++) {
        const v4 *p = P + DD * t, *g = G + DD * t;
        v4 u[DMAX];
        for (int i = 0; i < D; i++) {
          u[i] = g[D * i] * p[2 * D];
          for (int j = 1; j < D; j++) u[i] = u[i] + g[D * i + j] * p[2 * D + j];
        }
        wa[t] = p[0] * u[0], wb[t] = p[D] * u[0];
        for (int j = 1; j < D; j++) wa[t] = wa[t] + p[j] * u[j], wb[t] = wb[t] + p[D + j] * u[j];
      }
      v4 slope[2] = {wa[0] + alpha * wa[1], alpha * wa[0] + wa[1]};
      v4 level[2] = {C + (wb[0] + alpha * wb[1]), C + (alpha * wb[0] + wb[1])};
      v4 r0[2], r1[2];
      for (int d = 0; d < 2; d++) {
        r0[d] = level[d] * M[0 + d] + slope[d] * M[2 + d] - M[6 + d];
        r1[d] = level[d] * M[2 + d] + slope[d] * M[4 + d] - M[8 + d];
      }
      v4 g1[2] = {r1[0] + alpha * r1[1], alpha * r1[0] + r1[1]};
      v4 g0[2] = {r0[0] + alpha * r0[1], alpha * r0[0] + r0[1]};
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
        v4 t1 = select(PL[k], g1[0], g1[1]), t0 = select(PL[k], g0[0], g0[1]);
        step_rows(TR + D * k, 1, heavy, t1, t0, H, mu);
        v4 na = TR[D * k], nb = TR[D * k + 1];
        v4 ratio = select(RE[k], absolute(nb / na), (v4){0, 0, 0, 0});
        K = select((K != K) | (ratio <= K), K, ratio);
        MV = MV | (RE[k] & ((na > 0) != PL[k]));
      }
    }
    for (int i = 0; i < 2 * DD; i++) store(phi + i * lanes + l, P[i]);
    for (int i = 0; i < D * T; i++) store(tracked + i * lanes + l, TR[i]);
    store(c + l, C);
    if (heavy) store(c_velocity + l, CV);
    store(kink + l, K);
    store(moved + l, select(MV, (v4){1, 1, 1, 1}, (v4){0, 0, 0, 0}));
  }
}

void gd_steps(long lanes, long steps, double alpha, double *phi, double *c, double *tracked,
              double *kink, double *moved, const double *grams, const double *plus,
              const double *real, const double *moments, const double *h) {
  steps_of(3, 0, lanes, steps, alpha, 0.0, phi, c, tracked, kink, moved, 0, grams, plus, real,
           moments, h);
}

void heavy_ball_steps(long lanes, long steps, double alpha, double mu, double *phi, double *c,
                      double *tracked, double *kink, double *moved, double *c_velocity,
                      const double *grams, const double *plus, const double *real,
                      const double *moments, const double *h) {
  steps_of(6, 1, lanes, steps, alpha, mu, phi, c, tracked, kink, moved, c_velocity, grams, plus,
           real, moments, h);
}
