#!/usr/bin/env bash
# Fails when `nbdev_clean` or `nbdev_export` would change anything: the notebooks are clean and the
# generated package is in sync with them, and the workflow notebooks' parameters match their config classes.
# Compares the working tree before and after, so it also works
# on a developer's checkout with uncommitted changes.
set -euo pipefail
snap() { { git diff HEAD -- nbs trailnb; git ls-files --others --exclude-standard -- nbs trailnb | xargs -r sha1sum; } | sha1sum; }
before=$(snap)
nbdev_clean
after_clean=$(snap)
if [ "$before" != "$after_clean" ]; then
  echo "FAIL: nbdev_clean changed notebooks; run 'make export' and commit." >&2
  git status --short -- nbs >&2; exit 1
fi
nbdev_export
after_export=$(snap)
if [ "$before" != "$after_export" ]; then
  echo "FAIL: nbdev_export changed trailnb/: the package had drifted from the notebooks; run 'make export' and commit." >&2
  git status --short -- trailnb >&2; exit 1
fi
# The workflow notebooks' parameters cells are generated from the config dataclasses: fail when one lags behind.
python tools/sync_workflow_params.py --check
# Outputs kept in a notebook must come from its current code (and its modules' code): see tools/run_nb.py.
python tools/run_nb.py --check
# The package is a clean stack: no import cycle, no import from a lower layer to a higher one, no trailnb import
# hidden inside a function (DEVELOPING.md "Layers").
python tools/import_graph.py --check
# README.md is produced from nbs/index.ipynb: fail when it was edited by hand or lags behind the notebook.
python tools/make_readme.py --check
echo "sync-check: notebooks clean, package in sync, workflow parameters match their configs, a clean import stack, README from index.ipynb"
