"""Edit notebooks as percent-format text drafts (jupytext) and turn them back into clean nbdev notebooks.

    python tools/nbdraft.py out nbs/01_data.ipynb /tmp/01_data.py   # notebook -> editable draft
    python tools/nbdraft.py in  /tmp/01_data.py nbs/01_data.ipynb   # draft -> notebook (the source of truth)

The notebook stays the source of truth; the draft is a scratch copy. `# %% [markdown]` starts a prose cell,
`# %%` a code cell, `# %% tags=["parameters"]` a tagged one (kept by nbdev_clean for papermill).
"""
import json, subprocess, sys
from pathlib import Path

def _jupytext(*args):
    exe = Path(sys.executable).with_name("jupytext")
    subprocess.run([str(exe), *args, "-q"], check=True)

def to_draft(nb, draft): _jupytext("--to", "py:percent", "--opt", "notebook_metadata_filter=-all",
                                   "--opt", "cell_metadata_filter=tags", str(nb), "-o", str(draft))

def from_draft(draft, nb):
    _jupytext("--to", "ipynb", str(draft), "-o", str(nb))
    d = json.loads(Path(nb).read_text())
    d["metadata"] = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    for c in d["cells"]:
        tags = c.get("metadata", {}).get("tags")
        c["metadata"] = {"tags": tags} if tags else {}
    Path(nb).write_text(json.dumps(d, indent=1, ensure_ascii=False) + "\n")

if __name__ == "__main__":
    cmd, src, dst = sys.argv[1:4]
    {"out": to_draft, "in": from_draft}[cmd](src, dst)
