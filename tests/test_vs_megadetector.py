"""benchmarks/vs_megadetector.py compares fairly: both tools run in the environment the script started with, and
its agreement measure does not count a box against a tool for the other's rounding."""
import importlib.util, json, os, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    "The benchmark module, imported afresh in an environment without OMP_NUM_THREADS (as a user's shell has it)."
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spec = importlib.util.spec_from_file_location("vs_megadetector_under_test", ROOT / "benchmarks" / "vs_megadetector.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_both_tools_run_in_the_environment_the_script_started_with(bench, monkeypatch, tmp_path):
    """Importing Ultralytics (the script builds its model with it) puts OMP_NUM_THREADS=1 in os.environ; before, the
    MegaDetector child inherited it and ran on one core (its torch default threads) while trailnb set its own, so the
    speed ratio and the last bits of MegaDetector's scores were those of a one-thread run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what `import ultralytics` does to the running script
    seen = []
    def fake_run(cmd, **kw):
        seen.append(kw.get("env", dict(os.environ)))  # no env given: the child inherits this process's
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    bench.run_md(tmp_path / "m.pt", tmp_path, tmp_path / "md.json", 640)
    bench.run_trailnb(tmp_path / "m.pt", tmp_path, tmp_path / "tn", 640)
    assert [env.get("OMP_NUM_THREADS") for env in seen] == [None, None]  # MegaDetector, trailnb
    assert seen[1]["TRAILNB_PROGRESS"] == "off"


def _md_file(path: Path, boxes: list):
    "A MegaDetector results file for one 100 x 50 photo: boxes as (category, conf, [x, y, w, h] normalised)."
    path.write_text(json.dumps({"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
                                "images": [{"file": "a.jpg", "width": 100, "height": 50,
                                            "detections": [{"category": c, "conf": s, "bbox": b} for c, s, b in boxes]}]}))
    return path


def test_agreement_counts_the_same_box_written_two_ways(bench, tmp_path):
    """A box MegaDetector rounded to zero width (it writes whole pixels) agrees with the same one from trailnb (IoU of
    two lines is 0/0: before, never a partner); a box a few pixels thin whose corners are within a pixel agrees
    (IoU 0.8 for 4 px vs 5 px); a box just over the 0.1 cut agrees with its partner just under it (before: the
    partner was left out by the cut). A box with no partner, or of another class, still does not agree."""
    from PIL import Image
    Image.new("RGB", (100, 50)).save(tmp_path / "a.jpg")
    a = _md_file(tmp_path / "a.json", [("3", 0.9, [0.72, 0.0, 0.0, 1.0]),  # zero width, 72 px from the left
                                       ("1", 0.5, [0.10, 0.1, 0.05, 0.8]),  # 5 px wide
                                       ("2", 0.1004, [0.5, 0.2, 0.3, 0.3]),  # just over the cut
                                       ("1", 0.8, [0.0, 0.0, 0.5, 0.5]),  # a class the other tool says is a person
                                       ("1", 0.7, [0.6, 0.6, 0.3, 0.3])])  # nothing there in the other file
    b = _md_file(tmp_path / "b.json", [("3", 0.9, [0.7201, 0.0, 0.0, 1.0]), ("1", 0.5, [0.10, 0.1, 0.04, 0.8]),
                                       ("2", 0.0996, [0.5, 0.2, 0.3, 0.3]), ("2", 0.8, [0.0, 0.0, 0.5, 0.5])])
    ag = bench.agreement(a, b, tmp_path, min_score=0.1)
    assert (ag["boxes"], ag["agree"]) == (5 + 3, 3 + 2)  # b's 0.0996 box is under the cut: not counted itself
    assert sorted((m[1], m[2]) for m in ag["misses"]) == [("megadetector", "person"), ("trailnb", "animal"), ("trailnb", "animal")]
