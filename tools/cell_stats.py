"""Exported-cell size statistics of the notebooks: how big is one exported concept, and do results stay visible.

    .venv/bin/python tools/cell_stats.py            # one row per notebook and a total
    .venv/bin/python tools/cell_stats.py --largest 5   # also the five largest exported cells

A measurement of how the notebooks read (nbdev's own notebooks: exported cells of 3-20 lines, each followed by
a visible check), not a rule: nothing fails on these numbers.
"""
from __future__ import annotations
import argparse, ast, json, statistics
from pathlib import Path

EXPORT_FLAGS = ("#| export", "#|export", "#| exports", "#|exports")


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_exported(src: str) -> bool:
    return any(line.strip().startswith(EXPORT_FLAGS) for line in src.splitlines()[:3])


def code_lines(src: str) -> int:
    "Lines that are neither blank, nor comments, nor nbdev directives."
    return sum(1 for line in src.splitlines() if line.strip() and not line.strip().startswith("#"))


def definitions(src: str) -> int:
    "Top-level functions and classes defined in a cell (0 where it does not parse, e.g. IPython magics)."
    try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))))
    except SyntaxError: return 0
    return sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)


def notebook_stats(path: Path) -> dict:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    exported = [cell_source(c) for c in code if is_exported(cell_source(c))]
    return {"notebook": path.name, "exported": [(code_lines(s), definitions(s), s) for s in exported],
            "with_output": sum(bool(c.get("outputs")) for c in code), "code_cells": len(code)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nbs", default=str(Path(__file__).resolve().parents[1] / "nbs"), help="notebook folder")
    p.add_argument("--largest", type=int, default=0, help="also show the N largest exported cells")
    a = p.parse_args(argv)
    rows = [notebook_stats(f) for f in sorted(Path(a.nbs).glob("*.ipynb")) if not f.name.startswith("_")]
    print(f"{'notebook':<24}{'exported':>9}{'median':>8}{'largest':>8}{'max defs':>9}{'outputs':>9}")
    for r in rows:
        sizes = [n for n, _, _ in r["exported"]] or [0]
        print(f"{r['notebook']:<24}{len(r['exported']):>9}{statistics.median(sizes):>8.0f}{max(sizes):>8}"
              f"{max([d for _, d, _ in r['exported']] or [0]):>9}{r['with_output']:>5}/{r['code_cells']:<3}")
    allc = [(n, d, r["notebook"], s) for r in rows for n, d, s in r["exported"]]
    sizes = [n for n, *_ in allc] or [0]
    print(f"{'all':<24}{len(allc):>9}{statistics.median(sizes):>8.0f}{max(sizes):>8}{max([d for _, d, *_ in allc] or [0]):>9}"
          f"{sum(r['with_output'] for r in rows):>5}/{sum(r['code_cells'] for r in rows):<3}")
    print("(exported: cells exported to the package; median/largest: code lines per exported cell; max defs: most "
          "functions+classes in one cell; outputs: code cells that keep an output / all code cells)")
    for n, d, nb, s in sorted(allc, key=lambda t: -t[0])[: a.largest]:
        first = next((l for l in s.splitlines() if l.strip().startswith(("def ", "class ", "@"))), "").strip()
        print(f"  {n:>4} lines, {d} defs  {nb}: {first[:80]}")


if __name__ == "__main__":
    main()
