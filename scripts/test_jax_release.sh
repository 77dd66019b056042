#!/usr/bin/env bash
# The test suite on another Python or jax release than the development venv's: a fresh
# virtual environment with $PYTHON (default python3), this checkout installed with the
# test extras and the requirements given (default: whatever pip picks for that Python),
# then the README's test command; extra pytest arguments after --. For example, the GPU
# image's jax on Python 3.12, and the slow checks of the C loops on the newest jax:
#
#   PYTHON=python3.12 bash scripts/test_jax_release.sh "jax==0.11.2" "jaxlib==0.11.2"
#   PYTHON=python3.12 bash scripts/test_jax_release.sh -- -m slow tests/test_native.py
#
# The venv is removed at the end. Exit status: pytest's (2: bad arguments).
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
requirements=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do requirements+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the --
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null; then
  echo "PYTHON=$PYTHON: no such interpreter" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q ".[test]" "${requirements[@]}"
"$work/venv/bin/python" -c "import sys, jax, jaxlib, optax; print('python', sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'optax', optax.__version__)"
"$work/venv/bin/python" -m pytest "$@"
