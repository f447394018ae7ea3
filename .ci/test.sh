#!/usr/bin/env bash
# `make test` (the fast tier, the README's test command): the notebooks must already be clean and exported and
# README.md current with index.ipynb; then every notebook runs under nbdev_test (slow cells skipped) and pytest runs
# tests/ without the tests marked slow.
# `make test-slow` (`.ci/test.sh slow`): the slow tier only: the notebooks that hold `#| slow` cells, run with them,
# and the pytest tests marked slow. `make test-all` = both; CI runs it.
# Both print the slowest notebooks (--timing) and tests (--durations), so where the time goes is visible on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-fast}
# Every temporary folder of this run (notebook examples, pytest's tmp_path, checkpoints) goes below one private
# TMPDIR, removed on exit, pass or fail: runs on one machine must not fill its disk (a full /tmp failed CI once).
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/medsft-test.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
if [ "$tier" == fast ]; then
  state() { git status --porcelain -- nbs medsft README.md; git diff -- nbs medsft README.md | sha1sum; }
  before=$(state)
  nbdev_clean
  [ "$(state)" == "$before" ] || { git status --short -- nbs; echo "FAIL: nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1; }
  nbdev_export
  [ "$(state)" == "$before" ] || { git status --short -- medsft; echo "FAIL: nbdev_export changed medsft/: run nbdev_export and commit"; exit 1; }
  python .ci/readme.py --check
  echo "== nbdev_test (fast tier: slow cells skipped)"
  start=$SECONDS
  nbdev_test --n_workers 2 --timing
  echo "nbdev_test: all notebooks passed in $((SECONDS-start)) s"
  echo "== pytest (fast tier)"
  pytest tests -q -p no:cacheprovider -m "not slow" --durations=20
else
  echo "== nbdev_test --flags slow (the notebooks that hold slow cells, all their cells)"
  start=$SECONDS
  names=$(grep -l '"#| slow' nbs/[0-9]*.ipynb | xargs -n1 basename | sed 's/\./\\./' | paste -sd'|')
  nbdev_test --flags slow --n_workers 2 --timing --file_re "^($names)\$"
  echo "nbdev_test slow: passed in $((SECONDS-start)) s"
  echo "== pytest (slow tier)"
  pytest tests -q -p no:cacheprovider -m slow --durations=20
fi
