"""`trailnb sort` from an existing results file decides exactly as MegaDetector's own
`separate_detections_into_folders` does, on MegaDetector v5's real output for camtrap31."""
import shutil
from pathlib import Path
import pytest

# MegaDetector's folder for each set of classes present (postprocessing/separate_detections_into_folders.py)
_MD_FOLDERS = {"animals": {"animal"}, "people": {"person"}, "vehicles": {"vehicle"}, "empty": set(),
               "animal_person": {"animal", "person"}, "animal_vehicle": {"animal", "vehicle"},
               "person_vehicle": {"person", "vehicle"}, "animal_person_vehicle": {"animal", "person", "vehicle"}}


def _megadetector_decisions(results, images, out, thresh):
    from megadetector.postprocessing.separate_detections_into_folders import (
        SeparateDetectionsIntoFoldersOptions, separate_detections_into_folders)
    o = SeparateDetectionsIntoFoldersOptions(thresh)
    o.results_file, o.base_input_folder, o.base_output_folder = str(results), str(images), str(out)
    o.category_name_to_threshold = {k: thresh for k in ("animal", "person", "vehicle")}
    separate_detections_into_folders(o)
    got = {}
    for f in Path(out).rglob("*"):
        if f.is_file():
            folder, rel = f.relative_to(out).parts[0], f.relative_to(out).parts[1:]
            got[Path(*rel).as_posix()] = _MD_FOLDERS[folder]
    return got


def _our_decisions(out):
    got = {}
    for f in Path(out).rglob("*"):
        if not f.is_file(): continue
        parts = f.relative_to(out).parts
        key, cls = (Path(*parts[2:]).as_posix(), {parts[1]}) if parts[0] == "detected" else (Path(*parts[1:]).as_posix(), set())
        got[key] = got.get(key, set()) | cls
    return got


@pytest.mark.parametrize("thresh", [0.2, 0.6])
def test_sort_equals_megadetectors_own_decisions(sample_data, tmp_path, thresh):
    pytest.importorskip("megadetector", reason="megadetector-utils is installed by `make install` (--no-deps)")
    from trailnb.cli import Command
    cam = sample_data / "camtrap31"
    results, images = cam / "megadetector_v5_results.json", cam / "images"
    theirs = _megadetector_decisions(results, images, tmp_path / "md", thresh)
    # the same call `trailnb sort RESULTS --images ROOT --out DIR --thresh T --mode hardlink` makes
    cmd = Command("sort images into folders from a results file", "trailnb.sort:run_sort",
                  config="trailnb.sort:SortConfig", positional=("results",))
    rep = cmd.run("sort", [str(results), "--images", str(images), "--out", str(tmp_path / "ours"),
                           "--thresh", str(thresh), "--mode", "hardlink"])
    ours = _our_decisions(tmp_path / "ours")
    assert len(theirs) == 31 and ours == theirs
    assert not rep.errors and not rep.conflicts
    n_empty = sum(not v for v in ours.values())
    assert rep.placed["empty"] == n_empty and (thresh != 0.2 or n_empty == 14)  # README: 14 empty at 0.2
    assert all((images / f).is_file() for f in ours)  # originals stay where they were


def test_sort_defaults_to_the_files_threshold_and_never_overwrites(sample_data, tmp_path):
    import json
    from trailnb.sort import run_sort
    cam = sample_data / "camtrap31"
    d = json.loads((cam / "megadetector_v5_results.json").read_text())
    d["info"]["detector_metadata"] = {"typical_detection_threshold": 0.9}
    (tmp_path / "r.json").write_text(json.dumps(d))
    rep = run_sort(results=str(tmp_path / "r.json"), images=str(cam / "images"), out=str(tmp_path / "o"), mode="symlink")
    at_09 = sum(1 for im in d["images"] if any(x["conf"] >= 0.9 for x in im["detections"]))
    assert sum(v for k, v in rep.placed.items() if k != "empty") == at_09 and rep.placed["empty"] == 31 - at_09
    again = run_sort(results=str(tmp_path / "r.json"), images=str(cam / "images"), out=str(tmp_path / "o"), mode="symlink")
    assert sum(again.placed.values()) == 0 and again.skipped == 31
