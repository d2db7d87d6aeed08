"""Regenerate the parameters cells of the workflow notebooks (nbs/workflows/*.ipynb) from the config dataclasses.

    python tools/sync_workflow_params.py           # rewrite the notebooks whose parameters lag behind their configs
    python tools/sync_workflow_params.py --check   # only list them; exit 1 if any (what .ci/sync_check.sh runs)

Each workflow's parameters cell holds its own parameters, then a marker line naming the stage's config class;
the lines below the marker are generated from that class (trailnb.workflows.sync_parameters), so names, types,
defaults and docs are the config's own. Run after changing a field of TrainConfig, EvalConfig, InferConfig or
ReviewConfig (`make export` does).
"""
import sys
from pathlib import Path
from trailnb.workflows import sync_parameters

if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    root = Path(__file__).resolve().parents[1]
    changed = sync_parameters(sorted((root / "nbs" / "workflows").glob("*.ipynb")), check=check)
    for p in changed: print(f"{'out of date' if check else 'regenerated'}: {p.relative_to(root)}")
    if check and changed:
        print("FAIL: workflow parameters differ from their config classes; run 'python tools/sync_workflow_params.py' "
              "(or 'make export') and commit.", file=sys.stderr)
        sys.exit(1)
