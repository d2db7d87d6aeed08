"Integration tests of trailnb.data on the real camera-trap sample data (skipped when it is absent)."
import json, shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trailnb.core import DataError, sample_data_dir, write_json
from trailnb.data import (check_data, image_size, load_coco, load_dataset, load_image, load_yolo, save_coco, save_yolo,
                          split_by_sequence, strip_ls_prefix, validate_dataset)
from trailnb.torchdata import TorchDetectionDataset

SQ = sample_data_dir("squirrels")
CT = sample_data_dir("camtrap31")
needs_sq = pytest.mark.skipif(SQ is None, reason="squirrels sample data not found (set TRAILNB_SAMPLE_DATA)")
needs_ct = pytest.mark.skipif(CT is None, reason="camtrap31 sample data not found (set TRAILNB_SAMPLE_DATA)")


def _by_original_name(ds):
    return {strip_ls_prefix(r.path.name): r for r in ds}


@needs_sq
def test_label_studio_export_reads_14_boxes():
    ds = load_coco(SQ / "label_studio_export/result.json", images=SQ / "label_studio_export")
    assert (len(ds), ds.num_boxes, ds.classes) == (14, 14, ["animal"])
    assert not ds.problems and all(r.path.is_file() and r.labels.tolist() == [0] for r in ds)
    assert all(r.file_name.startswith("images/") for r in ds)


@needs_sq
def test_yolo_layout_gives_identical_boxes():
    ls = _by_original_name(load_coco(SQ / "label_studio_export/result.json", images=SQ / "label_studio_export"))
    yo = load_yolo(SQ / "data.yaml")
    assert len(yo) == 14 and sorted({r.meta["split"] for r in yo}) == ["train", "val"]
    assert yo.classes == ["animal", "person", "vehicle"]
    for r in yo:
        other = ls[r.path.name]
        assert (r.width, r.height) == (other.width, other.height) == (640, 640)
        np.testing.assert_allclose(r.boxes, other.boxes, atol=1e-3)
        assert r.labels.tolist() == other.labels.tolist() == [0]


@needs_ct
def test_camtrap31_reads_at_native_sizes():
    ds = load_coco(CT / "coco_md_pseudo_gt.json", images=CT / "images")
    assert (len(ds), ds.num_boxes) == (31, 30)
    assert all((r.width, r.height) == image_size(r.path) for r in ds)
    assert max(r.width for r in ds) == 5152
    clean, rep = validate_dataset(ds)
    assert rep.ok, str(rep)
    assert (len(clean), clean.num_boxes) == (31, 30)


@needs_sq
def test_label_studio_names_resolve_against_other_roots(tmp_path):
    "Upload paths, local-files URLs and Windows paths find the originals by path tail, then by name without the hash."
    d = json.loads((SQ / "label_studio_export/result.json").read_text())
    styles = [lambda n: f"/data/upload/7/{n}", lambda n: f"/data/local-files/?d=squirrels%2Fimages%2F{n}",
              lambda n: "C:\\Users\\me\\exports\\images\\" + n]
    for k, im in enumerate(d["images"]):
        im["file_name"] = styles[k % 3](Path(im["file_name"]).name)
    write_json(tmp_path / "ls.json", d)
    ds = load_coco(tmp_path / "ls.json", images=[SQ / "images/train", SQ / "images/val"])
    assert not ds.problems and len(ds) == 14
    assert all(r.path.is_file() and r.path.parent.parent == SQ / "images" for r in ds)  # the YOLO originals
    ref = _by_original_name(load_coco(SQ / "label_studio_export/result.json", images=SQ / "label_studio_export"))
    for r in ds:
        np.testing.assert_array_equal(r.boxes, ref[r.path.name].boxes)


@needs_sq
def test_round_trips_through_coco_and_yolo(tmp_path):
    ds = load_coco(SQ / "label_studio_export/result.json", images=SQ / "label_studio_export")
    back = load_coco(save_coco(ds, tmp_path / "copy.json"))
    assert back.classes == ds.classes
    for a, b in zip(ds, back):
        assert (a.path, a.file_name, a.image_id, a.width, a.height) == (b.path, b.file_name, b.image_id, b.width, b.height)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    tr, va = ds.subset(range(10)), ds.subset(range(10, 14))
    yo = load_yolo(save_yolo(ds, tmp_path / "yolo", {"train": tr, "val": va}))
    assert yo.classes == ds.classes and len(yo) == 14
    ref = _by_original_name(ds)
    for r in yo:
        np.testing.assert_allclose(r.boxes, ref[strip_ls_prefix(r.path.name)].boxes, atol=1e-3)
    # the originals are untouched: the YOLO images are links (or copies), never moves
    assert all(r.path.is_file() for r in ds)


def _bad_dataset(tmp_path, src_jpg: Path):
    "A COCO dataset with one of each problem a user can cause, built from a real JPEG."
    root = tmp_path / "imgs"
    (root / "camA").mkdir(parents=True)
    (root / "camB").mkdir()
    data = src_jpg.read_bytes()
    w, h = Image.open(src_jpg).size
    for f in ["ok.jpg", "dup.jpg", "wrongsize.jpg", "camA/same.jpg", "camB/same.jpg", "boxes.jpg"]:
        (root / f).write_bytes(data)
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "zero.jpg").write_bytes(b"")
    names = ["ok.jpg", "truncated.jpg", "zero.jpg", "dropped.jpg", "wrongsize.jpg", "same.jpg", "boxes.jpg", "dup.jpg"]
    images = [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, n in enumerate(names)]
    images[4]["width"] = w * 2
    images[7]["id"] = 1  # duplicate image id
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]},
            {"id": 2, "image_id": 1, "category_id": 42, "bbox": [10, 10, 50, 50]},                # unknown category
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [w - 20, 10, 60, 30]},           # outside: clamped
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [30, 30, -5, 20]},               # negative width
            {"id": 5, "image_id": 7, "category_id": 1, "bbox": [w + 10, 10, 20, 20]},           # wholly outside
            {"id": 6, "image_id": 7, "category_id": 1, "bbox": ["a", 1, 2]}]                    # not a box
    write_json(tmp_path / "bad.json", {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "animal"}]})
    return tmp_path / "bad.json", root


@needs_sq
def test_every_bad_input_is_named_in_the_report(tmp_path):
    src = next((SQ / "images/train").glob("*.jpg"))
    js, root = _bad_dataset(tmp_path, src)
    rep = check_data(js, images=root)
    found = {(p.kind, p.file) for p in rep.problems}
    expected = {("truncated_image", "truncated.jpg"), ("zero_byte_image", "zero.jpg"), ("missing_image", "dropped.jpg"),
                ("size_mismatch", "wrongsize.jpg"), ("ambiguous_file_name", "same.jpg"), ("box_outside", "boxes.jpg"),
                ("degenerate_box", "boxes.jpg"), ("bad_box", "boxes.jpg"), ("unknown_category", "ok.jpg"),
                ("duplicate_image_id", "dup.jpg")}
    assert expected <= found, found
    assert sum(p.kind == "degenerate_box" for p in rep.problems) == 2
    text = str(rep)
    for kind, f in expected: assert kind in text and f in text
    assert "annotation id 4" in text and "annotation id 42" not in text
    md = rep._repr_markdown_()
    assert md.count("\n| ") >= len(rep.problems) and "| kind | file | where | detail | action |" in md

    clean, _ = validate_dataset(js, images=root)
    assert sorted(r.file_name for r in clean) == ["boxes.jpg", "ok.jpg", "wrongsize.jpg"]
    boxes = {r.file_name: r for r in clean}["boxes.jpg"]
    assert len(boxes.boxes) == 1 and boxes.boxes[0, 2] == boxes.width  # the one box left, clamped to the image
    assert {r.file_name: r for r in clean}["wrongsize.jpg"].width == Image.open(src).size[0]

    with pytest.raises(DataError) as e:
        check_data(js, images=root, strict=True)
    msg = str(e.value)
    assert f"{len(rep.problems)} problem(s)" in msg and all(f in msg for _, f in expected)


@needs_ct
def test_torch_dataset_on_full_size_photos():
    ds = load_coco(CT / "coco_md_pseudo_gt.json", images=CT / "images")
    big = max(range(len(ds)), key=lambda i: ds[i].width * (len(ds[i].boxes) > 0))
    tds = TorchDetectionDataset(ds, max_dim=512)
    img, tgt = tds[big]
    r = ds[big]
    assert max(img.shape[-2:]) == 512 and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert tgt["orig_size"].tolist() == [r.height, r.width]
    np.testing.assert_allclose(tgt["boxes"].numpy(), r.boxes * (512 / max(r.width, r.height)), rtol=1e-5)
    im, s = load_image(r.path, 512)
    assert im.size == (img.shape[-1], img.shape[-2]) and abs(s - tgt["scale"]) < 1e-9


def _burst_card(root: Path, bursts: int = 10, frames: int = 3) -> tuple[Path, dict]:
    "Tiny JPEGs in two camera folders whose only capture time is EXIF DateTimeOriginal; returns (COCO json, file -> burst)."
    import datetime as dt, os
    t0, images, anns, burst_of, k = dt.datetime(2024, 6, 1, 6, 0), [], [], {}, 0
    for b in range(bursts):
        cam = f"cam{b % 2 + 1}"
        for f in range(frames):
            k += 1
            t = t0 + dt.timedelta(minutes=20 * b, seconds=2 * f)
            rel = f"images/{cam}/IMG_{k:04d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            ex = Image.Exif()
            ex.get_ifd(0x8769)[0x9003] = t.strftime("%Y:%m:%d %H:%M:%S")
            Image.new("RGB", (64, 48), (40 * b % 255, 90, 60)).save(root / rel, "JPEG", exif=ex)
            # modification times 5 minutes apart: grouping by them would make every frame its own "burst"
            os.utime(root / rel, (1.7e9 + 300 * k, 1.7e9 + 300 * k))
            images.append({"id": k, "file_name": rel, "width": 64, "height": 48})  # no date_captured
            anns.append({"id": k, "image_id": k, "category_id": 1, "bbox": [8, 8, 20, 16], "area": 320, "iscrowd": 0})
            burst_of[rel] = b
    return write_json(root / "coco.json", {"images": images, "annotations": anns,
                                           "categories": [{"id": 1, "name": "deer"}]}), burst_of


def _straddling(tr, va, burst_of) -> set:
    return {burst_of[r.file_name] for r in tr} & {burst_of[r.file_name] for r in va}


def test_sequence_split_uses_exif_times(tmp_path):
    "Bursts known only from EXIF never straddle train and val; a random split of the same images does straddle."
    from trailnb.data import capture_time, split_random
    ann, burst_of = _burst_card(tmp_path)
    ds = load_coco(ann)
    assert {capture_time(r)[1] for r in ds} == {"exif"}
    tr, va = split_by_sequence(ds, val_frac=0.3, seed=0)
    assert len(tr) + len(va) == 30 and len(va) == 9  # three whole bursts of three frames
    assert _straddling(tr, va, burst_of) == set()
    assert [r.file_name for r in split_by_sequence(ds, 0.3, seed=0)[1]] == [r.file_name for r in va]
    rtr, rva = split_random(ds, val_frac=0.3, seed=0)  # what a split blind to bursts does with these images
    assert len(rva) == 9 and _straddling(rtr, rva, burst_of)


@needs_sq
def test_load_dataset_detects_formats():
    assert len(load_dataset(SQ)) == 14  # folder with data.yaml: YOLO
    assert load_dataset(SQ / "label_studio_export").classes == ["animal"]  # folder with one JSON: COCO
    with pytest.raises(DataError, match="not found"):
        load_dataset(SQ / "no_such_thing")


def test_an_unreadable_file_is_reported_after_ultralytics_patched_pil(tmp_path):
    """Ultralytics replaces PIL.Image.open on import (it loads pi-heif on the first unreadable file): a non-image is
    still listed as unreadable, never a crash (a missing pi-heif used to raise ModuleNotFoundError)."""
    from trailnb.data import validate_dataset
    from trailnb.synthetic import make_synthetic_dataset
    from trailnb.yolo import import_ultralytics
    import_ultralytics()
    import PIL.Image
    assert PIL.Image.open.__module__.startswith("ultralytics")  # the patch this test is about is in place
    data = make_synthetic_dataset(tmp_path / "syn", n=3, classes=("deer",), seed=0, size=(96, 64))
    ds = load_coco(data)
    ds.images[1].path.write_bytes(b"not an image")
    clean, report = validate_dataset(ds, progress=False)
    assert [(p.kind, p.file) for p in report.problems] == [("unreadable_image", ds.images[1].file_name)]
    assert len(clean) == 2


@needs_sq
def test_one_burst_is_split_by_holding_out_its_last_frames(caplog):
    "The squirrels are one burst: split_by_sequence holds out the last frames (by frame number: no capture times), warns."
    import logging, re
    ds = load_coco(SQ / "label_studio_export/result.json", images=SQ / "label_studio_export")
    with caplog.at_level(logging.WARNING, logger="trailnb"):
        tr, va = split_by_sequence(ds, val_frac=0.2)
    frame = lambda r: int(re.search(r"frame(\d+)", r.file_name).group(1))
    assert (len(tr), len(va)) == (11, 3) and max(map(frame, tr)) < min(map(frame, va))
    assert "one burst" in caplog.text and "held out its last 3 frame(s)" in caplog.text
    assert "gap_s" not in caplog.text and "split_random" not in caplog.text   # only names a user can give


@pytest.mark.slow  # ~35 s on 2 cores: a real (tiny) training run in a fresh process
@needs_sq
def test_readme_train_line_on_the_squirrels_exits_0(tmp_path):
    "README's `trailnb train --data labels/result.json --images labels/ --arch ...` on the one-burst squirrels, tiny."
    import os, subprocess, sys
    from trailnb.cli import COMMANDS
    lab = SQ / "label_studio_export"
    line = ["train", "--data", str(lab / "result.json"), "--images", str(lab), "--arch", "fasterrcnn_mobilenet_v3_large_320_fpn",
            "--epochs", "1", "--max-dim", "64", "--batch-size", "8", "--workers", "0", "--out", str(tmp_path / "runs")]
    env = {**os.environ, "TRAILNB_HOME": str(tmp_path / "home"), "TRAILNB_PROGRESS": "off"}
    r = subprocess.run([str(Path(sys.executable).with_name("trailnb")), *line], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "held out its last 3 frame(s)" in r.stderr and "(--val-data FILE)" in r.stderr   # the flag, which exists
    COMMANDS["train"].parser("train").parse_args(["--val-data", "v.json", "--split", "none"])
    assert list((tmp_path / "runs").glob("*/best.pt"))


@needs_ct
def test_check_data_on_a_results_file_says_what_it_is(tmp_path, capsys):
    "check-data on MegaDetector output or a COCO results list: named for what it is, what to do instead, exit 2."
    from trailnb.cli import main
    md = CT / "megadetector_v5_results.json"
    assert main(["check-data", str(md), "--images", str(CT / "images")]) == 2
    err = capsys.readouterr().err
    assert "is a MegaDetector results file (detections on 31 images" in err
    assert f"trailnb sort {md} --images" in err and f"trailnb evaluate --predictions {md}" in err
    write_json(tmp_path / "res.json", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.4}])
    assert main(["check-data", str(tmp_path / "res.json")]) == 2
    err = capsys.readouterr().err
    assert "is a COCO results list (1 detections with scores)" in err and "evaluate --predictions" in err
