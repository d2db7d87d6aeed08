"""Execute notebooks in place so that they keep their outputs, and check that kept outputs are current.

    .venv/bin/python tools/run_nb.py nbs/01_data.ipynb     # run it, keep the outputs, stamp it
    .venv/bin/python tools/run_nb.py --all                 # every notebook in nbs/ (not nbs/workflows/)
    .venv/bin/python tools/run_nb.py --stale               # re-run only those whose stamp is out of date
    .venv/bin/python tools/run_nb.py --check               # fail when a notebook's outputs are out of date

The notebooks are the manual, so they keep the small outputs that teach (a validation table, a plot, a
summary). Cells are run the way `nbdev_test` runs them: `#| slow`, `#| cuda`, `#| notest` and `#| eval: false`
cells are skipped (and lose any output). Progress bars are off while running, so outputs hold results, not
bars. After a run the notebook's metadata gets `trailnb.outputs_of`: a hash of its code cells and of the
source of every `trailnb` module it imports. `--check` (part of the sync check) recomputes that hash; a
notebook whose code, or whose modules' code, changed since its outputs were made fails with the command that
refreshes it; so does a notebook that lost its outputs (e.g. edited as a text draft) and was never re-run.

Kept outputs never show this machine's paths: a run writes a temporary folder as `…/`, the repository as a
path relative to it and the home folder as `~`; `--check` fails on a notebook whose outputs still hold an
absolute path under a temporary folder, the repository or the home folder (as nbdev's own outputs never do).
"""
from __future__ import annotations
import argparse, hashlib, json, os, re, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SKIP_FLAGS = {"slow", "cuda", "notest"}
_IMPORT = re.compile(r"^\s*(?:from\s+trailnb\.(\w+)\s+import|import\s+trailnb\.(\w+))", re.M)


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def code_cells(nb: dict) -> list[str]:
    return [_src(c) for c in nb["cells"] if c["cell_type"] == "code"]


def imported_modules(nb: dict) -> list[str]:
    "The `trailnb` modules a notebook imports (and the one it exports), sorted."
    mods = set()
    for s in code_cells(nb):
        mods |= {a or b for a, b in _IMPORT.findall(s)}
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", s, re.M)
        if m: mods.add(m.group(1))
    return sorted(m for m in mods if (ROOT / "trailnb" / f"{m}.py").exists())


def outputs_hash(nb: dict) -> str:
    "Hash of what a notebook's outputs depend on: its code cells and its imported modules' sources."
    h = hashlib.sha256()
    for s in code_cells(nb): h.update(s.strip().encode() + b"\0")
    for m in imported_modules(nb): h.update(m.encode() + b"\0" + (ROOT / "trailnb" / f"{m}.py").read_bytes())
    return h.hexdigest()[:16]


def _machine_paths() -> list[tuple[re.Pattern, str]]:
    "(pattern, replacement) for the paths that differ from machine to machine, most specific first."
    tmp = sorted({str(Path(tempfile.gettempdir())), "/tmp", str(Path(tempfile.gettempdir()).resolve())}, key=len, reverse=True)
    pats = [(re.compile(re.escape(str(ROOT)) + r"/"), ""), (re.compile(re.escape(str(ROOT)) + r"\b"), ".")]
    pats += [(re.compile(re.escape(t) + r"/[^/\s'\"\\]+/?"), "…/") for t in tmp]
    home = str(Path.home())
    if home not in ("/", ""): pats.append((re.compile(re.escape(home) + r"(?=/)"), "~"))
    return pats


def scrub_outputs(nb) -> int:
    "Replace machine-specific paths in the kept outputs of `nb` (in place); returns how many were replaced."
    pats, n = _machine_paths(), 0

    def fix(o):
        nonlocal n
        if isinstance(o, str):
            for pat, rep in pats:
                o, k = pat.subn(rep, o)
                n += k
            return o
        if isinstance(o, list): return [fix(x) for x in o]
        if isinstance(o, dict):
            for k in list(o): o[k] = fix(o[k])
        return o
    for c in nb["cells"]:
        if c.get("outputs"): fix(c["outputs"])
    return n


def machine_paths_in(nb: dict) -> list[str]:
    "Absolute paths under a temporary folder, the repository or the home folder that a notebook's outputs show."
    text = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    roots = {str(ROOT), str(Path.home()), "/tmp", str(Path(tempfile.gettempdir()))} - {"/", ""}
    return sorted({m.group(0) for r in roots for m in re.finditer(re.escape(r) + r"/[^\s'\"\\]*", text)})


def stamp_of(nb: dict) -> str | None:
    return nb.get("metadata", {}).get("trailnb", {}).get("outputs_of")


def run(path: Path) -> float:
    "Execute `path` in place the way nbdev_test does (same skips), keep outputs, stamp it; returns seconds."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from nbdev.processors import FrontmatterProc
    from fastcore.xtras import working_directory
    os.environ.setdefault("TRAILNB_PROGRESS", "off")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = read_nb(path)
    directives = {i: (getattr(c, "directives_", {}) or {})
                  for i, c in enumerate(NBProcessor(path, procs=FrontmatterProc, process=True).nb.cells)}

    def skip(cell):
        if cell.cell_type != "code": return True
        d = directives.get(cell.idx_, {})
        if d.get("eval:", [""])[0].lower() == "false" or SKIP_FLAGS & d.keys() or "nbdev_export(" in cell.source:
            cell.outputs = []
            return True
        return False

    t = time.time()
    shell = CaptureShell(path)
    with working_directory(path.parent):
        try: shell.run_all(nb, exc_stop=True, preproc=skip)
        except Exception:
            sys.stderr.write(shell.prettytb(fname=path) + "\n"); raise SystemExit(f"{path}: a cell failed; nothing written")
    for c in nb.cells:
        if c.cell_type == "code": c.execution_count = None
    scrub_outputs(nb)
    nb.metadata["trailnb"] = {"outputs_of": outputs_hash(json.loads(json.dumps(nb, default=dict)))}
    write_nb(nb, path)
    return time.time() - t


def notebooks(args) -> list[Path]:
    if args.notebooks: return [Path(p).resolve() for p in args.notebooks]
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default with --all/--stale/--check: nbs/*.ipynb)")
    p.add_argument("--all", action="store_true", help="run every notebook in nbs/")
    p.add_argument("--stale", action="store_true", help="run only notebooks whose outputs are out of date or missing a stamp")
    p.add_argument("--check", action="store_true", help="run nothing; fail when kept outputs are out of date")
    a = p.parse_args(argv)
    if not (a.notebooks or a.all or a.stale or a.check): p.error("name notebooks, or give --all, --stale or --check")
    stale = []
    for path in notebooks(a):
        nb = json.loads(path.read_text(encoding="utf-8"))
        current = stamp_of(nb) == outputs_hash(nb)
        if a.check:
            if not current: stale.append(path)
            elif machine_paths_in(nb):
                shown = ", ".join(machine_paths_in(nb)[:3])
                print(f"FAIL: {path.relative_to(ROOT)} keeps outputs that show this machine's paths ({shown}); "
                      f"re-run it with tools/run_nb.py (which writes them as relative paths)", file=sys.stderr)
                stale.append(path)
            continue
        if a.stale and current: continue
        print(f"running {path.relative_to(ROOT)} ...", flush=True)
        print(f"  {run(path):.0f} s", flush=True)
        if path.name == "index.ipynb":  # README.md is produced from the front page's cells and outputs
            import subprocess
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_readme.py")], check=True)
    if stale:
        names = " ".join(str(s.relative_to(ROOT)) for s in stale)
        print(f"FAIL: outputs out of date (the code they came from changed): {names}\n"
              f"  refresh them with: .venv/bin/python tools/run_nb.py {names}", file=sys.stderr)
        raise SystemExit(1)
    if a.check: print("outputs: every notebook's kept outputs come from its current code")


if __name__ == "__main__":
    main()
