/* The propagator's full-batch GD steps (gdrelu.kernel.lane_step) as one native loop for a
 * CPU: `gdrelu.native`, kernel="native". XLA's CPU loop dispatches about 14 operations per
 * step; here every value of a run stays in registers for all the steps of a chunk.
 *
 * Four lanes (runs) per vector of GCC's vector extensions (one AVX2 register); each group
 * of four runs takes all its steps before the next. Arrays are (component, lanes), lanes
 * contiguous, `lanes` a multiple of 4:
 *   phi[18]: Φ_t[i][j] at t*9 + i*3 + j;  c;  tracked[T*3]: neuron k's (a, b, w) at 3k;
 *   kink;  moved (0/1);  grams[18]: Σ_t like phi;  plus[T], real[T] (0/1);
 *   moments[10]: p, px, pxx, py, pxy at 2f + s (s = +, -);  h.
 * The operations are those of lane_step in the same order, and the largest kink keeps a
 * NaN as XLA's maximum does. Compiled with -ffp-contract=fast, as XLA's CPU backend
 * contracts a*b + c: Φ_t, c and the flags are the XLA loop's to the last bit; a few of
 * the tracked neurons' entries differ in their last bits, where the two compilers
 * contract other multiply-adds (tests/test_native.py). */
typedef double v4 __attribute__((vector_size(32)));
typedef long long m4 __attribute__((vector_size(32)));
enum { T = 6 };

static inline v4 load(const double *p) { v4 v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void store(double *p, v4 v) { __builtin_memcpy(p, &v, sizeof v); }
static inline v4 select(m4 m, v4 a, v4 b) { return (v4)((m & (m4)a) | (~m & (m4)b)); }
static inline v4 absolute(v4 x) { return (v4)((m4)x & ~((m4){1, 1, 1, 1} << 63)); }

void gd_steps(long lanes, long steps, double alpha, double *phi, double *c, double *tracked,
              double *kink, double *moved, const double *grams, const double *plus,
              const double *real, const double *moments, const double *h) {
  for (long l = 0; l < lanes; l += 4) {
    v4 P[18], G[18], TR[3 * T], M[10];
    m4 PL[T], RE[T];
    for (int i = 0; i < 18; i++) {
      P[i] = load(phi + i * lanes + l);
      G[i] = load(grams + i * lanes + l);
    }
    for (int i = 0; i < 3 * T; i++) TR[i] = load(tracked + i * lanes + l);
    for (int i = 0; i < 10; i++) M[i] = load(moments + i * lanes + l);
    for (int k = 0; k < T; k++) {
      PL[k] = load(plus + k * lanes + l) > 0.5;
      RE[k] = load(real + k * lanes + l) > 0.5;
    }
    v4 C = load(c + l), K = load(kink + l), H = load(h + l);
    m4 MV = load(moved + l) > 0.5;
    for (long s = 0; s < steps; s++) {
      v4 wa[2], wb[2];
      for (int t = 0; t < 2; t++) {
        const v4 *p = P + 9 * t, *g = G + 9 * t;
        v4 u[3];
        for (int i = 0; i < 3; i++) u[i] = g[3 * i] * p[6] + g[3 * i + 1] * p[7] + g[3 * i + 2] * p[8];
        wa[t] = p[0] * u[0] + p[1] * u[1] + p[2] * u[2];
        wb[t] = p[3] * u[0] + p[4] * u[1] + p[5] * u[2];
      }
      v4 slope[2] = {wa[0] + alpha * wa[1], alpha * wa[0] + wa[1]};
      v4 level[2] = {C + (wb[0] + alpha * wb[1]), C + (alpha * wb[0] + wb[1])};
      v4 r0[2], r1[2];
      for (int d = 0; d < 2; d++) {
        r0[d] = level[d] * M[0 + d] + slope[d] * M[2 + d] - M[6 + d];
        r1[d] = level[d] * M[2 + d] + slope[d] * M[4 + d] - M[8 + d];
      }
      v4 g1[2] = {H * (r1[0] + alpha * r1[1]), H * (alpha * r1[0] + r1[1])};
      v4 g0[2] = {H * (r0[0] + alpha * r0[1]), H * (alpha * r0[0] + r0[1])};
      for (int t = 0; t < 2; t++) {
        v4 *p = P + 9 * t;
        for (int j = 0; j < 3; j++) {
          v4 a = p[j], b = p[3 + j], w = p[6 + j];
          p[j] = a - g1[t] * w;
          p[3 + j] = b - g0[t] * w;
          p[6 + j] = w - (g1[t] * a + g0[t] * b);
        }
      }
      C = C - H * (r0[0] + r0[1]);
      for (int k = 0; k < T; k++) {
        v4 t1 = select(PL[k], g1[0], g1[1]), t0 = select(PL[k], g0[0], g0[1]);
        v4 a = TR[3 * k], b = TR[3 * k + 1], w = TR[3 * k + 2];
        v4 na = a - w * t1, nb = b - w * t0, nw = w - (a * t1 + b * t0);
        TR[3 * k] = na, TR[3 * k + 1] = nb, TR[3 * k + 2] = nw;
        v4 ratio = select(RE[k], absolute(nb / na), (v4){0, 0, 0, 0});
        K = select((K != K) | (ratio <= K), K, ratio);
        MV = MV | (RE[k] & ((na > 0) != PL[k]));
      }
    }
    for (int i = 0; i < 18; i++) store(phi + i * lanes + l, P[i]);
    for (int i = 0; i < 3 * T; i++) store(tracked + i * lanes + l, TR[i]);
    store(c + l, C);
    store(kink + l, K);
    store(moved + l, select(MV, (v4){1, 1, 1, 1}, (v4){0, 0, 0, 0}));
  }
}
