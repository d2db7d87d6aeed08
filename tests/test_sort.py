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
    "{photo: set of classes} from a sorted folder; a photo found twice is an error (each photo lands once)."
    got = {}
    for f in Path(out).rglob("*"):
        if not f.is_file(): continue
        parts = f.relative_to(out).parts
        key, cls = (Path(*parts[2:]).as_posix(), set(parts[1].split("_"))) if parts[0] == "detected" else (Path(*parts[1:]).as_posix(), set())
        assert key not in got, f"{key} sorted twice"
        got[key] = cls
    return got


@pytest.mark.parametrize("thresh", [0.2, 0.6])
def test_sort_equals_megadetectors_own_decisions(sample_data, tmp_path, thresh):
    pytest.importorskip("megadetector", reason="megadetector-utils is installed by `make install` (--no-deps)")
    from trailnb.cli import Command
    cam = sample_data / "camtrap31"
    results, images = cam / "megadetector_v5_results.json", cam / "images"
    theirs = _megadetector_decisions(results, images, tmp_path / "md", thresh)
    # the same call `trailnb sort RESULTS --images ROOT --out DIR --sort-thresh T --sort hardlink` makes
    cmd = Command("sort images into folders from a results file", "trailnb.sort:run_sort",
                  config="trailnb.sort:SortConfig", positional=("results",))
    rep = cmd.run("sort", [str(results), "--images", str(images), "--out", str(tmp_path / "ours"),
                           "--sort-thresh", str(thresh), "--sort", "hardlink"])
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
    rep = run_sort(results=str(tmp_path / "r.json"), images=str(cam / "images"), out=str(tmp_path / "o"), sort="symlink")
    at_09 = sum(1 for im in d["images"] if any(x["conf"] >= 0.9 for x in im["detections"]))
    assert sum(v for k, v in rep.placed.items() if k != "empty") == at_09 and rep.placed["empty"] == 31 - at_09
    again = run_sort(results=str(tmp_path / "r.json"), images=str(cam / "images"), out=str(tmp_path / "o"), sort="symlink")
    assert sum(again.placed.values()) == 0 and again.skipped == 31


def test_a_photo_of_two_classes_is_sorted_once_in_a_combined_folder(tmp_path):
    "MegaDetector's rule: several classes present -> one folder named by them (alphabetical, `_`); counts are photos."
    from PIL import Image
    from trailnb.core import Detections
    from trailnb.results import ImageResult
    from trailnb.sort import sort_into_folders
    for f in ("cam1/a.jpg", "cam1/b.jpg", "cam1/c.jpg"):
        (tmp_path / "src" / f).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48)).save(tmp_path / "src" / f)
    res = [ImageResult("cam1/a.jpg", 64, 48, Detections([[4, 4, 30, 30], [30, 10, 60, 40]], [0.9, 0.8], [1, 0])),
           ImageResult("cam1/b.jpg", 64, 48, Detections([[4, 4, 30, 30]], [0.9], [1])),
           ImageResult("cam1/c.jpg", 64, 48, Detections.empty())]
    rep = sort_into_folders(res, tmp_path / "out", tmp_path / "src", ["fox", "deer"])
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert files == ["detected/deer/cam1/b.jpg", "detected/deer_fox/cam1/a.jpg", "empty/cam1/c.jpg"]
    assert sum(rep.placed.values()) == 3 and "one folder per photo" in str(rep)


def _md_made_elsewhere(cam, tmp_path) -> Path:
    "camtrap31's MegaDetector results as MD's batch tool writes them by default: absolute paths of another machine."
    import json
    d = json.loads((cam / "megadetector_v5_results.json").read_text())
    for e in d["images"]: e["file"] = "/home/someone/cards/card3/" + e["file"]
    d["images"].append({"file": "/home/someone/cards/card3/not_copied.jpg", "detections": []})
    (tmp_path / "abs.json").write_text(json.dumps(d))
    return tmp_path / "abs.json"


def test_sort_finds_photos_of_results_made_on_another_machine(sample_data, tmp_path):
    "Absolute paths from another machine resolve against --images by their tail; mapped and missing are reported."
    from trailnb.cli import main
    import contextlib, io
    cam = sample_data / "camtrap31"
    with contextlib.redirect_stdout(io.StringIO()) as o:
        rc = main(["sort", str(_md_made_elsewhere(cam, tmp_path)), "--images", str(cam / "images"),
                   "--out", str(tmp_path / "o"), "--sort", "symlink"])
    assert rc == 0, o.getvalue()
    got = _our_decisions(tmp_path / "o")
    assert len(got) == 31 and sum(not v for v in got.values()) == 14       # README: 14 empty at MD's 0.2
    assert "31 of 32 image paths found under" in o.getvalue() and "1 of 32 not found" in o.getvalue()
    assert "/home/someone/cards/card3/not_copied.jpg" in o.getvalue()


def test_sort_track_on_a_megadetector_file_says_what_it_did(sample_data, tmp_path):
    "`sort --track` tracks from the local files' EXIF times; when it finds nothing to track it says why."
    from trailnb.cli import main
    import contextlib, io
    cam = sample_data / "camtrap31"
    with contextlib.redirect_stdout(io.StringIO()) as o:
        rc = main(["sort", str(_md_made_elsewhere(cam, tmp_path)), "--images", str(cam / "images"),
                   "--out", str(tmp_path / "o"), "--sort", "symlink", "--track"])
    assert rc == 0
    out = o.getvalue()
    assert "nothing to track" in out and "EXIF capture time" in out and "--burst-gap-s 60" in out


def test_sort_track_uses_the_local_files_exif_times(tmp_path):
    "Photos of one burst (EXIF 2 s apart) named by absolute paths of another machine are tracked as one burst."
    import json
    from PIL import Image
    from trailnb.sort import run_sort
    src, entries = tmp_path / "card", []
    for k in range(3):
        f = src / "cam1" / f"IMG_{k}.jpg"
        f.parent.mkdir(parents=True, exist_ok=True)
        ex = Image.Exif(); ex[0x0132] = f"2024:05:01 06:00:0{2 * k}"
        Image.new("RGB", (64, 48), (90, 120, 60)).save(f, exif=ex)
        dets = [] if k == 1 else [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.3, 0.3]}]  # the deer hides in photo 2
        entries.append({"file": f"/mnt/other/DCIM/cam1/IMG_{k}.jpg", "detections": dets})
    (tmp_path / "r.json").write_text(json.dumps({"info": {}, "detection_categories": {"1": "deer"}, "images": entries}))
    rep = run_sort(results=str(tmp_path / "r.json"), images=str(src), out=str(tmp_path / "o"), track=True)
    assert len(rep.clips) == 1 and dict(rep.placed) == {"detected/deer": 3}   # the burst decided as a whole


def test_sort_flags_are_infers(capsys):
    "`sort` names its settings as `infer` does: --sort and --sort-thresh; the old --mode/--thresh say the new names."
    import dataclasses
    from trailnb.cli import COMMANDS, main
    from trailnb.infer import InferConfig
    from trailnb.sort import SortConfig
    shared = {"sort_thresh", "sort", "class_thresh", "draw", "track", "min_track_frames", "burst_gap_s"}
    assert shared <= {f.name for f in dataclasses.fields(SortConfig)} and shared <= {f.name for f in dataclasses.fields(InferConfig)}
    ns = COMMANDS["sort"].parser("sort").parse_args(["r.json", "--sort", "hardlink", "--sort-thresh", "0.3"])
    assert (ns.sort, ns.sort_thresh) == ("hardlink", "0.3")
    for old, new in (("--mode", "--sort"), ("--thresh", "--sort-thresh")):
        with pytest.raises(SystemExit): main(["sort", "r.json", old, "copy"])
        assert f"{old}: did you mean {new}?" in capsys.readouterr().err
