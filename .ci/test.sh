#!/usr/bin/env bash
# `make test`: the notebooks must already be clean and exported, README.md current with index.ipynb;
# then every notebook runs under nbdev_test (default flags) and pytest runs tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every temporary folder of this run (notebook examples, pytest's tmp_path, checkpoints) goes below one private
# TMPDIR, removed on exit, pass or fail: runs on one machine must not fill its disk (a full /tmp failed CI once).
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/medsft-test.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
state() { git status --porcelain -- nbs medsft README.md; git diff -- nbs medsft README.md | sha1sum; }
before=$(state)
nbdev_clean
[ "$(state)" == "$before" ] || { git status --short -- nbs; echo "FAIL: nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1; }
nbdev_export
[ "$(state)" == "$before" ] || { git status --short -- medsft; echo "FAIL: nbdev_export changed medsft/: run nbdev_export and commit"; exit 1; }
python .ci/readme.py --check
echo "== nbdev_test"
start=$SECONDS
nbdev_test --n_workers 2 --timing
echo "nbdev_test: all notebooks passed in $((SECONDS-start)) s"
echo "== pytest"
pytest tests -q -p no:cacheprovider
