"""README.md's command lines, run as written against the real sample data (only paths adapted, and tiny sizes).

The synthetic run of the same lines is in test_readme.py; this one takes what a new user brings: the 14
squirrel frames as a Label Studio export (one burst, so no split by sequence is possible) as `labels/`, and
camtrap31's 31 full-size photos from 16 datasets, in nested folders, as the memory card. Then `sort` from
MegaDetector's own published results file on those photos. Each line must exit 0; what each printed is checked
where a user would look. Skipped without the sample data (TRAILNB_SAMPLE_DATA)."""
import json, os, shutil, subprocess
from pathlib import Path

import pytest

from test_readme import BIN, README, SMALL, _fresh_env, using_it


@pytest.fixture
def project(tmp_path, sample_data):
    "labels/ = the squirrels' Label Studio export (result.json + images/), card/ = camtrap31's photos (copies)."
    shutil.copytree(sample_data / "squirrels" / "label_studio_export", tmp_path / "labels")
    shutil.copytree(sample_data / "camtrap31" / "images", tmp_path / "card")
    return tmp_path, sample_data


def _run(line: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    for k, v in {**SMALL, ".venv/bin/trailnb": str(BIN)}.items(): line = line.replace(k, v)
    runs = sorted(p.name for p in (cwd / "runs").glob("*") if (p / "best.pt").is_file())
    if "<run>" in line: line = line.replace("<run>", runs[0])
    r = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_readme_sequence_on_real_photos(project):
    "check-data -> train -> evaluate -> infer -> review -> review-export -> run train on the squirrels + camtrap31."
    d, _ = project
    env = _fresh_env(d / "home")
    outs = [_run(line, d, env) for line in using_it()]
    check, train, evaluate = outs[1].stdout, outs[2], outs[3].stdout
    assert "14 images, 14 boxes" in check
    assert "one burst" in (train.stdout + train.stderr).lower() or "sequence" in (train.stdout + train.stderr).lower()
    assert "held-out" in evaluate.lower() or "held out" in evaluate.lower()   # it says which images it scored
    md = json.loads((d / "sorted" / "results_md.json").read_text())
    card = sorted(p.relative_to(d / "card").as_posix() for p in (d / "card").rglob("*") if p.is_file())
    assert sorted(im["file"] for im in md["images"]) == card                   # all 31 photos, nested paths kept
    placed = [p for f in ("detected", "empty") for p in (d / "sorted" / f).rglob("*") if p.is_file()]
    assert len(placed) == len(card)                                             # each photo sorted once


def test_readme_sort_line_on_megadetectors_own_results(project):
    "`trailnb sort megadetector_results.json --images DCIM --out sorted/` on MegaDetector v5's published output."
    d, data = project
    line = next(l for l in README.splitlines() if "trailnb sort megadetector_results.json" in l).split("#")[0]
    line = line.replace("megadetector_results.json", str(data / "camtrap31" / "megadetector_v5_results.json"))
    _run(line, d, _fresh_env(d / "home"))
    md = json.loads((data / "camtrap31" / "megadetector_v5_results.json").read_text())
    placed = [p for f in ("detected", "empty") for p in (d / "sorted" / f).rglob("*") if p.is_file()]
    assert len(placed) == len(md["images"])                                     # each photo once, none lost
    thresh = md["info"].get("detector_metadata", {}).get("typical_detection_threshold", 0.2)
    n_det = sum(any(x["conf"] >= thresh for x in im.get("detections") or []) for im in md["images"])
    assert len([p for p in placed if "detected" in p.parts]) == n_det
