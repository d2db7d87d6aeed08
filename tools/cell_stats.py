"""Exported-cell size statistics of the notebooks: how big is one exported concept, and do results stay visible.

    .venv/bin/python tools/cell_stats.py                 # one row per notebook and a total
    .venv/bin/python tools/cell_stats.py --largest 5     # also the five largest exported cells
    .venv/bin/python tools/cell_stats.py --rev 859ab51   # the notebooks as committed at a revision (before/after)
    .venv/bin/python tools/cell_stats.py --json          # the numbers as JSON (per notebook and in all)

A measurement of how the notebooks read (nbdev's own notebooks: exported cells of 3-20 lines, each followed by
a visible check), not a rule: nothing fails on these numbers. Notebooks that export nothing (the front page
`index.ipynb`) are listed with `-` for sizes and count only towards outputs and code cells.
"""
from __future__ import annotations
import argparse, ast, io, json, statistics, subprocess, tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def semicolon_lines(src: str) -> int:
    "Lines that join statements with `;` (tokens, so a ';' inside a string does not count)."
    try: toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError): return 0
    return len({t.start[0] for t in toks if t.type == tokenize.OP and t.string == ";"})


def notebook_stats(name: str, text: str) -> dict:
    cells = json.loads(text)["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    exported = [cell_source(c) for c in code if is_exported(cell_source(c))]
    return {"notebook": name, "exported": [(code_lines(s), definitions(s), s) for s in exported],
            "semicolons": sum(semicolon_lines(s) for s in exported),
            "with_output": sum(bool(c.get("outputs")) for c in code), "code_cells": len(code)}


def read_notebooks(nbs: str, rev: str | None) -> list[tuple[str, str]]:
    "(name, JSON text) of the notebooks in `nbs` (not `_scratch` ones), from the working tree or a git revision."
    if rev is None:
        return [(f.name, f.read_text(encoding="utf-8")) for f in sorted(Path(nbs).glob("*.ipynb"))
                if not f.name.startswith("_")]
    folder = Path(nbs).resolve().relative_to(ROOT).as_posix()
    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], check=True, capture_output=True, text=True).stdout
    names = sorted(n.rsplit("/", 1)[-1] for n in git("ls-tree", "--name-only", f"{rev}:{folder}").split() if n.endswith(".ipynb"))
    return [(n, git("show", f"{rev}:{folder}/{n}")) for n in names if not n.startswith("_")]


def summary(rows: list[dict]) -> dict:
    "The numbers of a set of notebooks: exported cells, median and largest size, most definitions, outputs."
    cells = [(n, d) for r in rows for n, d, _ in r["exported"]]
    sizes = [n for n, _ in cells]
    return {"exported": len(cells), "median": statistics.median(sizes) if sizes else None,
            "largest": max(sizes, default=None), "max_defs": max((d for _, d in cells), default=None),
            "semicolon_lines": sum(r["semicolons"] for r in rows),
            "with_output": sum(r["with_output"] for r in rows), "code_cells": sum(r["code_cells"] for r in rows)}


def _row(name: str, s: dict) -> str:
    num = lambda v, w, f="": f"{'-':>{w}}" if v is None else f"{v:>{w}{f}}"
    return (f"{name:<24}{s['exported']:>9}{num(s['median'], 8, '.0f')}{num(s['largest'], 8)}{num(s['max_defs'], 9)}"
            f"{s['semicolon_lines']:>6}{s['with_output']:>5}/{s['code_cells']:<3}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nbs", default=str(ROOT / "nbs"), help="notebook folder")
    p.add_argument("--rev", default=None, help="measure the notebooks as committed at this git revision")
    p.add_argument("--largest", type=int, default=0, help="also show the N largest exported cells")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    a = p.parse_args(argv)
    rows = [notebook_stats(n, t) for n, t in read_notebooks(a.nbs, a.rev)]
    allc = sorted(((n, d, r["notebook"], s) for r in rows for n, d, s in r["exported"]), key=lambda t: -t[0])
    if a.json:
        print(json.dumps({"rev": a.rev, "notebooks": {r["notebook"]: summary([r]) for r in rows}, "all": summary(rows),
                          "largest": [{"lines": n, "defs": d, "notebook": nb} for n, d, nb, _ in allc[: a.largest]]},
                         indent=1))
        return
    print(f"{'notebook':<24}{'exported':>9}{'median':>8}{'largest':>8}{'max defs':>9}{'semi':>6}{'outputs':>9}")
    for r in rows: print(_row(r["notebook"], summary([r])))
    print(_row("all" + (f" at {a.rev[:10]}" if a.rev else ""), summary(rows)))
    print("(exported: cells exported to the package; median/largest: code lines per exported cell; max defs: most "
          "functions+classes in one cell; semi: exported lines joining statements with ';'; outputs: code cells "
          "that keep an output / all code cells)")
    for n, d, nb, s in allc[: a.largest]:
        first = next((l for l in s.splitlines() if l.strip().startswith(("def ", "class ", "@"))), "").strip()
        print(f"  {n:>4} lines, {d} defs  {nb}: {first[:80]}")


if __name__ == "__main__":
    main()
