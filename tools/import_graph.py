#!/usr/bin/env python
"""The import graph of the `trailnb` package, read from the code with `ast`, checked against the layers.

    python tools/import_graph.py            # the graph, cycles, upward imports, imports inside functions
    python tools/import_graph.py --check    # exit 1 on a cycle or an import from a lower layer to a higher one
    python tools/import_graph.py --dot      # the graph in Graphviz dot (e.g. `| dot -Tpng > graph.png`)

The layers (DEVELOPING.md "Layers"; each module imports only from layers below it, or its own layer where
the table says so) are the LAYERS table below: a module missing from it is reported, so a new module must
take its place there. Imports of trailnb modules inside functions are listed with the line they stand on:
they hide a dependency from a reader, so `--check` fails on them (only optional or heavy libraries such as
Ultralytics, FiftyOne or onnxruntime are imported inside functions, and those are not trailnb modules); they
count as edges like any other import.
"""
from __future__ import annotations
import argparse, ast, sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "trailnb"

# layer of each module: imports run from a higher number to a lower one (ARCHITECTURE.md's plan)
LAYERS = {
    "core": 0,
    "data": 1, "synthetic": 1, "torchdata": 1, "crops": 1, "privacy": 1, "camtrap_dp": 1, "results": 1, "distributed": 1,
    "models": 2, "megadetector": 2, "onnx_detector": 2, "yolo": 2, "classifier": 2,
    "predict": 3, "tiles": 3,
    "evaluate": 4, "sort": 4, "repeats": 4, "track": 4, "events": 4,
    "train": 5, "yolo_train": 5, "train_classifier": 5, "infer": 5, "classify": 5, "autolabel": 5, "review": 5, "labelstudio": 5, "export": 5, "publish": 5,
    "cli": 6, "__main__": 6, "workflows": 6, "demo": 6,
}
SKIP = {"__init__", "_modidx"}


def module_imports(path: Path) -> list[tuple[str, int, bool]]:
    "(imported trailnb module, line, inside a function) for every import of a trailnb module in `path`."
    tree, out = ast.parse(path.read_text(encoding="utf-8")), []

    def visit(node, in_fn: bool):
        for ch in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(ch, ast.ImportFrom):
                if ch.level == 1 and ch.module: out.append((ch.module.split(".")[0], ch.lineno, in_fn))
                elif ch.level == 1: out.extend((a.name, ch.lineno, in_fn) for a in ch.names)
                elif ch.module and ch.module.startswith("trailnb."): out.append((ch.module.split(".")[1], ch.lineno, in_fn))
                elif ch.module == "trailnb": out.extend((a.name, ch.lineno, in_fn) for a in ch.names)
            elif isinstance(ch, ast.Import):
                out.extend((a.name.split(".")[1], ch.lineno, in_fn) for a in ch.names if a.name.startswith("trailnb."))
            visit(ch, fn)
    visit(tree, False)
    return [(m, l, f) for m, l, f in out if (PKG / f"{m}.py").is_file() and m not in SKIP]


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    "{module: [(imported module, line, inside a function), ...]} over the package."
    return {p.stem: module_imports(p) for p in sorted(PKG.glob("*.py")) if p.stem not in SKIP}


def cycles(g: dict) -> list[list[str]]:
    "The strongly connected components with more than one module (Tarjan)."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in {m for m, _, _ in g.get(v, [])}:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in g:
        if v not in index: strong(v)
    return out


def upward(g: dict) -> list[tuple[str, str, int]]:
    "(importer, imported, line) where a module imports one of a higher layer (same layer is allowed)."
    return [(a, b, l) for a, es in g.items() for b, l, _ in es
            if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]]


def dot(g: dict) -> str:
    "Graphviz dot: one cluster per layer, dashed edges for imports inside functions."
    lines = ["digraph trailnb {", "  rankdir=BT; node [shape=box, fontname=Helvetica];"]
    for layer in sorted(set(LAYERS.values())):
        mods = [m for m in g if LAYERS.get(m) == layer]
        lines.append(f'  subgraph cluster_{layer} {{ label="layer {layer}"; ' + " ".join(f'"{m}";' for m in mods) + " }")
    for a, es in g.items():
        for b, f in sorted({(b, f) for b, _, f in es}):
            lines.append(f'  "{a}" -> "{b}"' + (" [style=dashed]" if f else "") + ";")
    return "\n".join(lines + ["}"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="exit 1 on a cycle, an upward import, a trailnb import inside a function or an unplaced module")
    p.add_argument("--dot", action="store_true", help="print the graph as Graphviz dot and nothing else")
    a = p.parse_args(argv)
    g = graph()
    if a.dot:
        print(dot(g))
        return 0
    cyc, up = cycles(g), upward(g)
    unplaced = sorted(set(g) - set(LAYERS))
    inner = [(m, b, l) for m, es in g.items() for b, l, f in es if f]
    for m, es in g.items():
        print(f"{m:12s} (layer {LAYERS.get(m, '?')}) -> {', '.join(sorted({b for b, _, _ in es})) or '-'}")
    print(f"\n{len(cyc)} cycle(s)" + "".join(f"\n  {' <-> '.join(c)}" for c in cyc))
    print(f"{len(up)} import(s) from a lower layer to a higher one" +
          "".join(f"\n  {a} -> {b} (trailnb/{a}.py:{l})" for a, b, l in up))
    print(f"{len(inner)} import(s) of trailnb modules inside functions" +
          "".join(f"\n  {a} -> {b} (trailnb/{a}.py:{l})" for a, b, l in inner))
    if unplaced: print(f"modules without a layer (add them to LAYERS in {Path(__file__).name}): {', '.join(unplaced)}")
    bad = bool(cyc or up or unplaced or inner)
    if a.check and bad: print("FAIL: the package is not a clean stack", file=sys.stderr)
    return 1 if (a.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
