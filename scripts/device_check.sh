#!/usr/bin/env bash
# The GPU checks of one device session, run from the repository root on a machine with
# JAX installed (installs nothing). Every stage has a time limit and appends to
# $OUT/log.txt, so a stage that fails or runs out of time leaves the others' results.
#
#   OUT=/tmp/out bash scripts/device_check.sh [stage ...]
#
# Its run directories and compilation cache are new folders of each call (a warm machine
# called twice measures a cold cache again). At the end every result but log.txt is packed
# into $OUT/results.tar.gz and removed: the device tool brings back only a few files. So
# $OUT must be empty or new (exit 2 otherwise); without OUT, a new folder under /tmp is
# used and named. The exit status is the number of stages that failed (0: all ran).
#
# Stages (functions below): versions, figure, kernel, figure_kernel (the default, in this
# order), unroll, check, bench, optimizers. All of them together stop at $BUDGET seconds (default 540,
# to fit one device call of at most 600 s): each stage's limit is cut to what is left, and
# a stage that would get under 30 s is skipped, with a line in the log saying so.
set -u
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
DEADLINE=$((SECONDS + ${BUDGET:-540}))
OUT=${OUT:-$(mktemp -d /tmp/gdrelu-device.XXXXXX)}
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "OUT=$OUT is not empty: its files would be packed and removed; give an empty or new folder" >&2
  exit 2
fi
mkdir -p "$OUT"
WORK=$(mktemp -d)  # this call's run directories and compilation cache
trap 'rm -rf "$WORK"' EXIT
echo "== results in $OUT" >&2
CACHE="$WORK/xla"
FAILED=0
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG="$OUT/log.txt"
FIGURE=(--widths 16,32,64,128,256,512,1024,2048 --deltas 0,0.01,0.1 --runs 1000 --quiet)

stage() {  # stage LIMIT_SECONDS COMMAND...
  local limit=$1 left=$((DEADLINE - SECONDS))
  shift
  if [ "$left" -lt 30 ]; then
    echo "== $(date +%T) skipped, ${left}s of the budget left: $*" | tee -a "$LOG"
    return 0
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "== $(date +%T) [limit ${limit}s] $*" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  echo "== $(date +%T) exit $status" | tee -a "$LOG"
  [ "$status" -eq 0 ] || FAILED=$((FAILED + 1))
}

versions() {
  stage 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  stage 60 "$PY" -c "import jax, jaxlib, optax, chex, scipy, tqdm; print(jax.__version__, jaxlib.__version__, optax.__version__, jax.devices())"
}

unroll() {  # the propagator and general paths at the figure's batch size, loops unrolled or not
  for u in ${UNROLLS:-1 8}; do
    stage 90 "$PY" benchmarks/bench_engine.py --no-numpy --dtypes float64 --widths 2048 \
      --neurons $((2048 * 3008)) --runs 3008 --repeats 2 --paths general propagator --unroll "$u"
  done
}

figure() {  # the paper's GD figure at 1000 runs per cell: cold compilation cache, then warm
  stage 240 "$PY" scripts/profile_run.py --json "$OUT/figure_cold.json" -- run "${FIGURE[@]}" \
    --out "$WORK/figure_cold" --cache-dir "$CACHE"
  stage 150 "$PY" scripts/profile_run.py --json "$OUT/figure_warm.json" -- run "${FIGURE[@]}" \
    --out "$WORK/figure_warm" --cache-dir "$CACHE"
  for d in "$WORK/figure_warm" "$WORK/figure_cold"; do
    if [ -f "$d/runs.csv" ]; then
      cp "$d/runs.csv" "$d/failure_probability.png" "$OUT/" && cat "$d/summary.json" >>"$LOG"
      break
    fi
  done
}

check() {  # versions, agreement with the CPU on the golden data, throughput at 10 000 runs
  stage 200 "$PY" scripts/gpu_check.py --out "$OUT"
}

kernel() {  # the propagator's steps as one Pallas (Triton) kernel: agreement, throughput, bench
  mkdir -p "$OUT/kernel"
  stage 200 env GDRELU_PROPAGATOR_KERNEL=pallas "$PY" scripts/gpu_check.py --out "$OUT/kernel"
  for k in xla pallas; do
    stage 90 env GDRELU_PROPAGATOR_KERNEL=$k "$PY" benchmarks/bench_engine.py --no-numpy \
      --dtypes float64 --widths 2048 --neurons $((2048 * 3008)) --runs 3008 --repeats 3 \
      --paths propagator
  done
}

figure_kernel() {  # the paper's GD figure with the kernel (its programs are new to the cache)
  stage 200 env GDRELU_PROPAGATOR_KERNEL=pallas "$PY" scripts/profile_run.py \
    --json "$OUT/figure_kernel.json" -- run "${FIGURE[@]}" --out "$WORK/figure_kernel" \
    --cache-dir "$CACHE"
  [ -f "$WORK/figure_kernel/runs.csv" ] && cp "$WORK/figure_kernel/runs.csv" "$OUT/runs_kernel.csv"
}

optimizers() {  # GD, SGD, heavy ball (propagator) and Adam against NumPy, paper protocols
  stage 300 "$PY" benchmarks/bench_vs_numpy.py --widths 16,128 --runs 2000 --steps 5000 \
    --protocol crossing
}

bench() {  # the engine's paths with enough runs to fill the device
  stage 240 "$PY" benchmarks/bench_engine.py --no-numpy --neurons 4194304 --repeats 2 \
    --widths 16 256 2048 --runs 1024 16384 --json "$OUT/bench.json" --plot "$OUT/bench.png"
}

echo "== $(date -u '+%F %T UTC') $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname)" | tee -a "$LOG"
for s in "${@:-versions figure kernel figure_kernel}"; do
  for name in $s; do
    case " versions figure kernel figure_kernel unroll check bench optimizers " in
      *" $name "*) "$name" ;;
      *) echo "== unknown stage $name (see --help)" | tee -a "$LOG"; FAILED=$((FAILED + 1)) ;;
    esac
  done
done
(cd "$OUT" && find . -type f ! -name log.txt ! -name results.tar.gz | tar -czf results.tar.gz -T - \
  && find . -type f ! -name log.txt ! -name results.tar.gz -delete)
exit "$FAILED"
