"""tools/import_graph.py, the check that keeps the package a clean stack: it finds what it must find."""
import importlib.util, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reads_imports_at_top_and_inside_functions(tmp_path):
    ig = _tool()
    f = tmp_path / "m.py"
    f.write_text("from .core import x\nfrom trailnb.data import y\nimport os\n"
                 "def g():\n    from trailnb.models import z\n    import numpy\n")
    ig.PKG = ROOT / "trailnb"  # the imported names must be real modules of the package
    assert ig.module_imports(f) == [("core", 1, False), ("data", 2, False), ("models", 5, True)]


def test_finds_a_cycle_and_an_upward_import():
    ig = _tool()
    g = {"core": [], "data": [("core", 1, False)], "predict": [("data", 1, False), ("infer", 9, True)],
         "infer": [("predict", 3, False)]}
    assert ig.cycles(g) == [["infer", "predict"]]
    assert ig.upward(g) == [("predict", "infer", 9)]
    assert ig.cycles({k: v for k, v in g.items() if k != "infer"}) == []


def test_the_package_is_a_clean_stack(capsys):
    ig = _tool()
    assert ig.main(["--check"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "0 cycle(s)" in out and "0 import(s) from a lower layer" in out and "0 import(s) of trailnb modules inside" in out
