#!/usr/bin/env bash
# `make docs`: the documentation site in _docs/. nbdev_docs needs Quarto; without it the processed
# notebooks are rendered by smalldocs (pure Python, renders nbdev_proc_nbs output).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v quarto >/dev/null 2>&1; then exec nbdev_docs; fi
python .ci/proc_nbs.py
smalldocs render --quiet _proc
rm -rf _docs && mv _proc/_docs _docs
python .ci/site_links.py _docs _proc
echo "docs: $(ls _docs/*.html | wc -l) pages in _docs/; open _docs/index.html"
