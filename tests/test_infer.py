"""Batch inference end to end: MegaDetector's own validator and FiftyOne accept our results, bad files are
failures, a SIGKILLed run resumes to the same results, sorting never loses or duplicates files, videos, and
videos and bursts tracked end to end."""
import csv, json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    "A tiny from-scratch detector saved as a trailnb checkpoint (its detections are noise, which is fine here)."
    from trailnb.core import seed_everything
    from trailnb.models import build_detector
    seed_everything(0)
    p = tmp_path_factory.mktemp("model") / "tiny.pt"
    build_detector(ARCH, ["animal", "person", "vehicle"], weights=None, max_dim=160, device="cpu").save(p)
    return p


def _images(folder, names, size=(128, 96)):
    for i, n in enumerate(names):
        p = Path(folder) / n; p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (size[1], size[0], 3), np.uint8)).save(p, quality=90)


def _md_core(path):
    d = json.loads(Path(path).read_text())
    return d["detection_categories"], d["images"]


def test_camtrap_md_json_valid_and_loads_in_fiftyone(sample_data, tiny_model, tmp_path):
    pytest.importorskip("megadetector", reason="install megadetector-utils (--no-deps) + jsonpickle for its validator")
    from megadetector.postprocessing.validate_batch_results import validate_batch_results
    from trailnb.infer import run_inference
    from trailnb.results import read_results
    imgs = sample_data / "camtrap31" / "images"
    s = run_inference(model=str(tiny_model), input=str(imgs), out=str(tmp_path / "out"), max_dim=160,
                      score_thresh=0.0, workers=2, batch_size=4, device="cpu")
    assert s.images == 31 and not s.failures
    v = validate_batch_results(str(s.outputs["md"]))["validation_results"]
    assert v["errors"] == [], v
    assert v["warnings"] == [], v
    classes, dets, info = read_results(s.outputs["md"])
    assert classes == ["animal", "person", "vehicle"] and len(dets) == 31
    # the sizes we store are the true (EXIF-oriented) image sizes
    from trailnb.data import image_size
    f0 = sorted(dets)[0]
    assert tuple(info["image_sizes"][f0]) == image_size(imgs / f0)

    import fiftyone as fo
    # FiftyOne's own COCO importer reads our COCO results file (scores become confidences)
    ds = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path=str(imgs),
                             labels_path=str(s.outputs["coco"]), label_types="detections", label_field="pred")
    try:
        assert len(ds) == 31
        n_coco = ds.count("pred.detections")
        assert n_coco == sum(len(d) for d in dets.values())
        # and the MegaDetector file maps onto FiftyOne's relative [x, y, w, h] boxes directly
        md = json.loads(s.outputs["md"].read_text())
        cats = md["detection_categories"]
        ds2 = fo.Dataset()
        ds2.add_samples([fo.Sample(filepath=str(imgs / im["file"]), md=fo.Detections(detections=[
            fo.Detection(label=cats[d["category"]], bounding_box=d["bbox"], confidence=d["conf"])
            for d in im["detections"]])) for im in md["images"]])
        assert len(ds2) == 31 and ds2.count("md.detections") == n_coco
        ds2.delete()
    finally:
        ds.delete()


def test_bad_files_are_failures(tiny_model, tmp_path):
    from trailnb.infer import run_inference
    from trailnb.results import read_results
    src = tmp_path / "in"
    _images(src, ["cam1/ok.jpg", "cam1/ok2.png"])
    (src / "cam1/zero.jpg").write_bytes(b"")
    (src / "cam1/text.jpg").write_text("this is not a JPEG")
    (src / "cam1/trunc.jpg").write_bytes((src / "cam1/ok.jpg").read_bytes()[:700])
    s = run_inference(model=str(tiny_model), input=str(src), out=str(tmp_path / "out"), workers=2, batch_size=2)
    fails = dict(s.failures)
    assert sorted(fails) == ["cam1/text.jpg", "cam1/trunc.jpg", "cam1/zero.jpg"]
    assert "0 bytes" in fails["cam1/zero.jpg"] and "truncated" in fails["cam1/trunc.jpg"].lower()
    assert s.images == 2
    _, dets, info = read_results(s.outputs["md"])
    assert sorted(dets) == ["cam1/ok.jpg", "cam1/ok2.png"] and sorted(info["failures"]) == sorted(fails)
    rows = s.outputs["csv"].read_text().splitlines()
    assert sum("0 bytes" in r for r in rows) == 1


_SLOW_RUN = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises, even if started in the background
    import trailnb.models as M
    _orig = M.load_detector
    calls = Path(sys.argv[3]).parent / "model_calls.txt"
    def _slow(*a, **k):
        d = _orig(*a, **k); f = d.predict_tensors
        def g(*a, **k):
            with open(calls, "a") as fh: fh.write("call\\n")
            time.sleep(0.5); return f(*a, **k)
        d.predict_tensors = g
        return d
    M.load_detector = _slow
    from trailnb.infer import run_inference
    run_inference(model=sys.argv[1], input=sys.argv[2], out=sys.argv[3], batch_size=1, workers=1,
                  checkpoint_every=int(sys.argv[4]), device="cpu", resume=True)
""")


def _lines_in(f): return f.read_bytes().count(b"\n") if f.exists() else 0


def _start_slow_run(tmp_path, model, src, out, every):
    "A run_inference subprocess slowed to 0.5 s per image, so it can be interrupted part-way."
    script = tmp_path / "slow_run.py"; script.write_text(_SLOW_RUN)
    return subprocess.Popen([sys.executable, str(script), str(model), str(src), str(out), str(every)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _assert_same_results(s, ref):
    assert _md_core(s.outputs["md"]) == _md_core(ref.outputs["md"])
    assert s.outputs["csv"].read_bytes() == ref.outputs["csv"].read_bytes()
    coco, coco_ref = (json.loads(x.outputs["coco"].read_text()) for x in (s, ref))
    assert coco["images"] == coco_ref["images"] and coco["annotations"] == coco_ref["annotations"]


def test_sigkill_then_resume_matches_uninterrupted(tiny_model, tmp_path):
    from trailnb.infer import run_inference
    src = tmp_path / "in"
    _images(src, [f"cam{i % 3}/img{i:02d}.jpg" for i in range(12)])
    kw = dict(model=str(tiny_model), input=str(src), batch_size=1, workers=1, device="cpu")
    ref = run_inference(out=str(tmp_path / "ref"), **kw)

    out = tmp_path / "killed"; ck = out / "checkpoint.jsonl"
    p = _start_slow_run(tmp_path, tiny_model, src, out, every=2)
    t0 = time.time()
    while _lines_in(ck) < 3 and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)  # first group of 2 in
    time.sleep(0.6)
    assert p.poll() is None, "the slowed-down run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL); p.wait()
    lines = ck.read_bytes().split(b"\n")  # signature, finished images, then "" (or a line cut short by the kill)
    assert "signature" in json.loads(lines[0])
    done = len(lines) - 2
    assert 2 <= done < 12
    assert not (out / "results_md.json").exists()

    s = run_inference(out=str(out), resume=True, **kw)
    assert s.resumed_from == done and s.images == 12
    _assert_same_results(s, ref)
    assert not ck.exists()


def test_ctrl_c_keeps_every_finished_image(tiny_model, tmp_path):
    "Ctrl-C between checkpoints: the images finished since the last one are appended before the run stops."
    from trailnb.infer import run_inference
    src = tmp_path / "in"
    _images(src, [f"cam{i % 2}/img{i:02d}.jpg" for i in range(10)])
    kw = dict(model=str(tiny_model), input=str(src), batch_size=1, workers=1, device="cpu")
    ref = run_inference(out=str(tmp_path / "ref"), **kw)
    out = tmp_path / "interrupted"; ck = out / "checkpoint.jsonl"
    p = _start_slow_run(tmp_path, tiny_model, src, out, every=1000)  # no periodic checkpoint would come in time
    t0 = time.time()
    calls = tmp_path / "model_calls.txt"
    while _lines_in(calls) < 4 and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)  # 3+ images done
    assert p.poll() is None and _lines_in(ck) == 1, "nothing but the signature should be on disk yet"
    os.kill(p.pid, signal.SIGINT); p.wait(timeout=60)
    done = _lines_in(ck) - 1
    assert 1 <= done < 10, done
    s = run_inference(out=str(out), resume=True, **kw)
    assert s.resumed_from == done and s.images == 10
    _assert_same_results(s, ref)


def test_bf16_inference_on_cpu(tiny_model, tmp_path):
    "precision='bf16' runs on CPU and writes plain float results; fp16 on CPU is refused with a clear error."
    from trailnb.core import ConfigError
    from trailnb.infer import run_inference
    src = tmp_path / "in"; _images(src, ["a.jpg", "b.jpg"])
    s = run_inference(model=str(tiny_model), input=str(src), out=str(tmp_path / "o"), precision="bf16", workers=0, device="cpu")
    assert s.images == 2 and not s.failures
    md = json.loads(s.outputs["md"].read_text())
    assert all(isinstance(d["conf"], float) for im in md["images"] for d in im["detections"])
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        run_inference(model=str(tiny_model), input=str(src), out=str(tmp_path / "o2"), precision="fp16", device="cpu")

@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_sort_twice_with_duplicate_names(tiny_model, tmp_path, mode):
    from trailnb.infer import run_inference
    src = tmp_path / "in"
    names = ["cam1/a.jpg", "cam2/a.jpg", "cam2/deep/a.jpg", "cam3/b.jpg"]
    _images(src, names)
    before = {n: (src / n).read_bytes() for n in names}
    kw = dict(model=str(tiny_model), input=str(src), out=str(tmp_path / "out"), sort=mode, sort_thresh=0.0,
              workers=0, device="cpu", draw=mode == "copy")
    s1 = run_inference(**kw)
    placed = sum(s1.sort_report.placed.values())

    def tree():
        return sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    t1 = tree()
    # every image is in empty/ or in each class folder it was detected as, under its own relative path
    for n in names:
        hits = [t for t in t1 if t.endswith("/" + n) and not t.startswith("drawn/")]
        assert hits and all(h.count(n) == 1 for h in hits)
    s2 = run_inference(**kw, resume=True)  # the same run again, continued: nothing new to place
    assert sum(s2.sort_report.placed.values()) == 0 and not s2.sort_report.conflicts
    assert s2.sort_report.skipped == placed + s1.sort_report.drawn
    assert tree() == t1
    assert {n: (src / n).read_bytes() for n in names} == before  # originals untouched
    assert placed == len([t for t in t1 if not t.startswith("drawn/")])


def test_video_frames(tiny_model, tmp_path):
    cv2 = pytest.importorskip("cv2")
    from megadetector.postprocessing.validate_batch_results import validate_batch_results
    from trailnb.infer import run_inference
    src = tmp_path / "in"; src.mkdir()
    w = cv2.VideoWriter(str(src / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 96))
    for i in range(30): w.write(np.random.RandomState(i).randint(0, 255, (96, 128, 3), np.uint8))
    w.release()
    _images(src, ["still.jpg"])
    s = run_inference(model=str(tiny_model), input=str(src), out=str(tmp_path / "out"), video_every_s=1.0,
                      workers=1, device="cpu")
    assert s.images == 4 and not s.failures  # 3 frames (0, 1, 2 s) + 1 image
    md = json.loads(s.outputs["md"].read_text())
    vid = next(im for im in md["images"] if im["file"] == "clip.mp4")
    assert vid["frames_processed"] == [0, 10, 20] and vid["frame_rate"] == 10.0
    assert validate_batch_results(md)["validation_results"]["errors"] == []
    import csv
    rows = list(csv.DictReader(s.outputs["csv"].open()))  # by column name: the run's CSV also has capture time columns
    assert {r["frame_time"] for r in rows if r["file"].startswith("clip.mp4/")} == {"0.000", "1.000", "2.000"}
    assert {r["deployment"] for r in rows} == {"root"} and {r["time_source"] for r in rows} <= {"exif", "mtime"}


class _BlobDetector:
    """A stand-in detector for synthetic scenes (coloured boxes on a dark ground, `trailnb.track.Walker`): the
    bright blobs of each decoded image, class by colour. It has what inference uses of a trailnb `Detector`."""
    arch, megadetector, max_dim, device = "blobs", False, 640, "cpu"
    usual_thresholds = {"score": 0.05, "sort": 0.5}

    def __init__(self, classes): self.classes = list(classes)
    def optimize_for_inference(self): return self

    def predict_tensors(self, batch, scales, score_thresh: float = 0.05):
        import cv2
        from trailnb.core import Detections, class_color
        out = []
        for t, s in zip(batch, scales):
            rgb = (t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            n, _, st, _ = cv2.connectedComponentsWithStats((rgb.max(2) > 80).astype(np.uint8))
            keep = [i for i in range(1, n) if st[i, 4] > 20]
            boxes = np.array([[st[i, 0], st[i, 1], st[i, 0] + st[i, 2], st[i, 1] + st[i, 3]] for i in keep], float).reshape(-1, 4)
            cols = [rgb[int((b[1] + b[3]) / 2), int((b[0] + b[2]) / 2)].astype(int) for b in boxes]
            labs = [int(np.argmin([np.abs(c - class_color(k)).sum() for k in range(len(self.classes))])) for c in cols]
            out.append(Detections(boxes / s, [0.9] * len(keep), labs))
        return out


def _burst(folder, boxes_per_photo, t0="2024:05:01 06:00:0"):
    "Photos 2 s apart (EXIF DateTime) with a filled box in its class colour where `boxes_per_photo` has one."
    from trailnb.core import class_color
    for k, box in enumerate(boxes_per_photo):
        img = np.full((120, 160, 3), 30, np.uint8)
        if box is not None:
            (x0, y0, x1, y1), label = box
            img[y0:y1, x0:x1] = class_color(label)
        p = Path(folder) / f"IMG_{k + 1:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        ex = Image.Exif()
        ex[0x0132] = f"{t0}{2 * k}"
        Image.fromarray(img).save(p, quality=95, exif=ex)


def test_video_and_bursts_tracked_end_to_end(tmp_path, monkeypatch):
    """An encoded mp4 (a deer and a fox passing, then a second deer) and two bursts (a deer hidden in the middle
    photo; three empty photos with a one-photo blip) through `run_inference(track=True)`: exact counts, the
    hidden-deer photo sorted as detected, the blip's photo as empty, track ids in results MegaDetector's
    validator accepts, in the CSV and on the drawn copies; stills, clips.csv and an annotated video."""
    pytest.importorskip("megadetector", reason="install megadetector-utils (--no-deps) + jsonpickle for its validator")
    from megadetector.postprocessing.validate_batch_results import validate_batch_results
    import trailnb.infer
    from trailnb.infer import run_inference
    from trailnb.results import load_image_results
    from trailnb.track import Walker, write_synthetic_video
    classes = ["deer", "fox"]
    monkeypatch.setattr(trailnb.infer, "load_detector", lambda path, device="auto": _BlobDetector(classes))  # the name infer loads with
    src = tmp_path / "card"
    write_synthetic_video(src / "cam1" / "clip.mp4", [Walker(0, (40, 70), (6, 0)), Walker(1, (600, 190), (-6, 0), (50, 36), (0, 50)),
                                                      Walker(0, (960, 190), (-6, 0), frames=(60, 99))], 100, fps=10)
    _burst(src / "cam2", [([20, 40, 60, 70], 0), None, ([30, 40, 70, 70], 0)])  # the deer is hidden in the middle photo
    _burst(src / "cam3", [None, ([100, 10, 130, 30], 1), None])  # a one-photo blip
    (tmp_path / "model.pt").write_bytes(b"stand-in")
    s = run_inference(model=str(tmp_path / "model.pt"), input=str(src), out=str(tmp_path / "out"), workers=0, device="cpu",
                      video_every_s=0.5, track=True, track_videos=True, sort="copy", draw=True)
    by = {c.name: c for c in s.clips}
    assert sorted(by) == ["cam1/clip.mp4", "cam2/IMG_0001.jpg", "cam3/IMG_0001.jpg"]
    assert by["cam1/clip.mp4"].counts == {0: 2, 1: 1} and by["cam1/clip.mp4"].max_at_once == {0: 2, 1: 1}
    assert by["cam2/IMG_0001.jpg"].counts == {0: 1} and not by["cam3/IMG_0001.jpg"].detected
    assert len(by["cam3/IMG_0001.jpg"].blips) == 1
    assert "tracked 3 videos/bursts, 2 detected; individuals: deer 3, fox 1; 1 blips set aside" in str(s)
    out = tmp_path / "out"
    placed = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*") if p.relative_to(out).parts[0] in ("detected", "empty"))
    assert "detected/deer/cam2/IMG_0002.jpg" in placed  # hidden in its photo, detected in its burst
    assert {f"empty/cam3/IMG_000{k}.jpg" for k in (1, 2, 3)} <= set(placed)  # the blip does not pull its burst out
    assert (out / "detected/deer_fox/cam1/clip.mp4").is_file()  # deer and fox in the clip: one folder, as MegaDetector sorts
    assert (out / "drawn/cam2/IMG_0001.jpg").is_file()
    # results files: MegaDetector's validator accepts the per-detection track_id; the CSV has it with frame times
    v = validate_batch_results(str(s.outputs["md"]))["validation_results"]
    assert v["errors"] == [] and v["warnings"] == [], v
    md = json.loads(s.outputs["md"].read_text())
    vid = next(im for im in md["images"] if im["file"] == "cam1/clip.mp4")
    assert {d["track_id"] for d in vid["detections"]} == {1, 2, 3} and len(vid["frames_processed"]) == 20
    assert md["info"]["detector_metadata"]["tracked"] is True
    rows = list(csv.DictReader(s.outputs["csv"].open()))
    assert {r["track_id"] for r in rows if r["file"].startswith("cam1/clip.mp4/")} == {"1", "2", "3"}
    assert {r["frame_time"] for r in rows if r["file"].startswith("cam1/clip.mp4/frame000005")} == {"0.500"}
    assert [r["track_id"] for r in rows if r["file"].startswith("cam3/") and r["class"]] == ["-1"]
    _, back, _ = load_image_results(s.outputs["md"])
    assert {int(i) for r in back if r.file.startswith("cam1/") for i in r.track_ids} == {1, 2, 3}
    # the per-clip table, the stills of the four counted tracks, the annotated video
    clips = list(csv.DictReader(s.outputs["clips"].open()))
    assert [(r["clip"], r["individuals"], r["detected"]) for r in clips] == [
        ("cam1/clip.mp4", "deer:2 fox:1", "yes"), ("cam2/IMG_0001.jpg", "deer:1", "yes"), ("cam3/IMG_0001.jpg", "-", "no")]
    assert sorted(p.relative_to(s.outputs["track_stills"]).as_posix() for p in s.outputs["track_stills"].rglob("*.jpg")) == [
        "cam1/clip_track001_deer.jpg", "cam1/clip_track002_fox.jpg", "cam1/clip_track003_deer.jpg", "cam2/IMG_0001_track001_deer.jpg"]
    assert (s.outputs["track_videos"] / "cam1" / "clip.mp4").is_file()


def test_infer_workflow_with_tracking(tiny_model, tmp_path):
    "The infer workflow with `track`: the per-clip table and the timeline run (an untrained model: format only)."
    from trailnb.track import Walker, write_synthetic_video
    from trailnb.workflows import run_workflow
    src = tmp_path / "card"
    write_synthetic_video(src / "cam1" / "clip.mp4", [Walker(0, (40, 70), (6, 0))], 30, fps=10)
    _burst(src / "cam2", [([20, 40, 60, 70], 0), None, ([30, 40, 70, 70], 0)])
    run = run_workflow("infer", {"model": str(tiny_model), "input": str(src), "workers": 0, "device": "cpu", "track": True,
                                 "score_thresh": 0.0, "sort_thresh": 0.0}, out=tmp_path, run_name="inf", progress=False)
    assert (run / "clips.csv").is_file() and (run / "timeline.png").is_file()
    rows = list(csv.DictReader((run / "clips.csv").open()))
    assert [r["clip"] for r in rows] == ["cam1/clip.mp4", "cam2/IMG_0001.jpg"]


@pytest.fixture(scope="module")
def ultralytics_md_files(tmp_path_factory):
    """Random-init checkpoints written by Ultralytics itself in MegaDetector v6 form (MD's 3 classes, trained at
    640 px): a YOLOv9 and an RT-DETR. Class-score biases near logit(0.2) make a random model detect something."""
    import trailnb.yolo as ty
    d = tmp_path_factory.mktemp("md")
    names = ["animal", "person", "vehicle"]
    return {a: ty.write_ultralytics_checkpoint(f"{a}.yaml", d / f"MDV6-{a}.pt", names, imgsz=640, score_bias=-1.4)
            for a in ("yolov9t", "rtdetr-l")}


def _run_md_file(model, sample_data, out, n_images):
    from trailnb.infer import run_inference
    imgs = sample_data / "camtrap31" / "images"
    photos = sorted(p for p in imgs.iterdir() if p.suffix.lower() == ".jpg")[:n_images]
    Path(out).mkdir(parents=True); (Path(out) / "card.txt").write_text("\n".join(map(str, photos)))
    s = run_inference(model=str(model), input=str(imgs if n_images == 31 else Path(out) / "card.txt"), out=str(Path(out) / "run"),
                      max_dim=160, sort="hardlink", workers=1, batch_size=8, device="cpu")
    return s, photos


@pytest.fixture(scope="module")
def md6_yolo_run(ultralytics_md_files, sample_data, tmp_path_factory):
    "`trailnb infer` with the MDv6-form YOLOv9 file on all 31 camtrap31 photos, sorting (~25 s on 2 busy cores)."
    return _run_md_file(ultralytics_md_files["yolov9t"], sample_data, tmp_path_factory.mktemp("md6") / "x", 31)


def _check_md_run(s, photos):
    "The results file passes MegaDetector's validator as MD's own: ids 1/2/3, MD's thresholds; every photo sorted."
    from megadetector.postprocessing.validate_batch_results import validate_batch_results
    assert s.images == len(photos) and not s.failures
    v = validate_batch_results(str(s.outputs["md"]))["validation_results"]
    assert v["errors"] == [] and v["warnings"] == [], v
    md = json.loads(s.outputs["md"].read_text())
    assert md["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    meta = md["info"]["detector_metadata"]  # MegaDetector's usual thresholds were the defaults
    assert (meta["typical_detection_threshold"], meta["conservative_detection_threshold"]) == (0.2, 0.005)
    confs = [d["conf"] for im in md["images"] for d in im["detections"]]
    assert confs and min(confs) >= 0.005
    assert {d["category"] for im in md["images"] for d in im["detections"]} <= {"1", "2", "3"}
    out = s.outputs["md"].parent
    sorted_files = [p.relative_to(out) for p in out.rglob("*.*") if p.relative_to(out).parts[0] in ("detected", "empty")]
    assert {p.name for p in sorted_files} == {p.name for p in photos}  # every photo is in detected/<class>/ or empty/
    above = {im["file"] for im in md["images"] if any(d["conf"] >= 0.2 for d in im["detections"])}
    assert {p.name for p in sorted_files if p.parts[0] == "detected"} == above


def test_megadetector_v6_yolo_file_infers_sorts_and_validates(md6_yolo_run, ultralytics_md_files):
    pytest.importorskip("megadetector", reason="install megadetector-utils (--no-deps) + jsonpickle for its validator")
    from trailnb.models import load_detector
    det = load_detector(ultralytics_md_files["yolov9t"], device="cpu")
    assert (det.arch, det.classes, det.max_dim, det.megadetector) == ("yolov9t", ["animal", "person", "vehicle"], 640, True)
    _check_md_run(*md6_yolo_run)


# RT-DETR-l (33 M parameters, ~5 s per photo on 2 busy cores): 3 photos in CI, all 31 in the slow run
@pytest.mark.parametrize("n_images", [3, pytest.param(31, marks=pytest.mark.slow)])
def test_megadetector_v6_rtdetr_file_infers_sorts_and_validates(n_images, ultralytics_md_files, sample_data, tmp_path):
    pytest.importorskip("megadetector", reason="install megadetector-utils (--no-deps) + jsonpickle for its validator")
    from trailnb.models import load_detector
    det = load_detector(ultralytics_md_files["rtdetr-l"], device="cpu")
    assert (det.arch, det.classes, det.max_dim, det.megadetector) == ("rtdetr-l", ["animal", "person", "vehicle"], 640, True)
    _check_md_run(*_run_md_file(ultralytics_md_files["rtdetr-l"], sample_data, tmp_path / "x", n_images))


def _agree():
    import importlib.util
    spec = importlib.util.spec_from_file_location("agree_megadetector", Path(__file__).parents[1] / "benchmarks" / "agree_megadetector.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_agree_megadetector_benchmark(md6_yolo_run, sample_data, tmp_path):
    """The agreement benchmark: exact on the published file against itself and on a one-image edit of it; with a
    random MDv6-form model (no weights can be downloaded here) only its plumbing is checked."""
    agree = _agree()
    cam = sample_data / "camtrap31"
    ref = cam / "megadetector_v5_results.json"
    same = agree.main(["--results", str(ref)])
    d = json.loads(ref.read_text())
    n_boxes = sum(x["conf"] >= 0.2 for im in d["images"] for x in im["detections"])
    assert same["image_agreement"] == 1.0 and same["boxes"]["matched"] == same["boxes"]["reference"] == n_boxes
    assert same["image_level"]["neither"] == 14 and same["differences"] == []  # README: 14 empty at 0.2
    first = next(im for im in d["images"] if any(x["conf"] >= 0.2 and x["category"] == "1" for x in im["detections"]))
    first["detections"] = []
    (tmp_path / "edited.json").write_text(json.dumps(d))
    one = agree.main(["--results", str(tmp_path / "edited.json"), "--json", str(tmp_path / "rep.json")])
    assert [x["file"] for x in one["differences"]] == [first["file"]] and one["image_level"]["only_reference"] == 1
    assert json.loads((tmp_path / "rep.json").read_text())["images"] == 31
    s, _ = md6_yolo_run
    rnd = agree.main(["--results", str(s.outputs["md"])])
    assert rnd["images"] == 31 and sum(rnd["image_level"].values()) == 31 and rnd["missing_in_ours"] == []


# Mixed image sizes through the batch loop. Tolerance: a batch of one shape runs the same convolutions as one
# image; only matrix products whose row count is the batch's (torchvision's box head over every proposal of the
# batch) may sum in another order: at most an ulp or two of float32 (~4e-6 px seen on boxes of ~100 px, scores
# exact; YOLOs, convolutions only, gave the same bits on this machine, which oneDNN does not promise across CPUs).
# Scores to 1e-5 and boxes to 1e-3 px are far above that rounding and far below what the old padding
# to a batch-wide canvas changed (scores by ~1e-3, boxes by pixels, detections appearing and disappearing).
@pytest.mark.parametrize("arch", [ARCH, "yolov8n"])
def test_detections_do_not_depend_on_batch_or_workers(arch, tmp_path):
    from trailnb.core import seed_everything
    from trailnb.infer import torch_threads
    from trailnb.predict import InferItem, iter_predictions
    from trailnb.models import build_detector
    seed_everything(0)
    det = build_detector(arch, ["animal", "person", "vehicle"], weights=None, max_dim=96, device="cpu").optimize_for_inference()
    sizes = [(96, 72), (72, 96), (96, 54), (64, 64), (96, 72), (96, 54), (72, 96), (96, 72)]
    items = []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"img{i}.jpg"
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (h, w, 3), np.uint8)).save(p, quality=90)
        items.append(InferItem(str(p), p.name))
    with torch_threads(1):  # one thread: the same arithmetic, and quick on a busy machine
        runs = {(bs, w): list(iter_predictions(det, items, batch_size=bs, workers=w, score_thresh=0.0))
                for bs, w in [(1, 0), (8, 0), (8, 2), (3, 0)]}
        default = list(iter_predictions(det, items, workers=0, score_thresh=0.0))  # the detector's own CPU batch
    ref = runs.pop((1, 0))
    assert all(r.ok and len(r.detections) for r in ref)
    for key, got in runs.items():
        assert [r.file for r in got] == [it.file for it in items], key  # item order
        for a, b in zip(ref, got):
            assert len(a.detections) == len(b.detections), (key, a.file)
            np.testing.assert_array_equal(a.detections.labels, b.detections.labels, err_msg=f"{key} {a.file}")
            np.testing.assert_allclose(a.detections.scores, b.detections.scores, rtol=0, atol=1e-5, err_msg=f"{key} {a.file}")
            np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, rtol=0, atol=1e-3, err_msg=f"{key} {a.file}")
    assert det.cpu_batch == (8 if arch == "yolov8n" else 1)  # the run's CPU default (`compute_split`)
    for a, b in zip(ref, default):  # the default batch (8 for the YOLO) within the same tolerance of batch 1
        np.testing.assert_allclose(a.detections.scores, b.detections.scores, rtol=0, atol=1e-5, err_msg=f"default {a.file}")


def test_earlier_run_in_out_is_refused_unless_resume_or_overwrite(tiny_model, tmp_path, capsys):
    """A second run into an `--out` holding a run: refused (naming --resume and --overwrite), nothing touched;
    --overwrite removes the old run's outputs (stale sorted copies included) and nothing of the user's."""
    from trailnb.cli import main
    from trailnb.core import ConfigError
    from trailnb.infer import run_inference
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src, ["cam1/a.jpg", "cam1/b.jpg", "cam2/c.jpg"])
    photos = {p: p.read_bytes() for p in src.rglob("*.jpg")}
    kw = dict(model=str(tiny_model), input=str(src), out=str(out), workers=0, device="cpu", sort="copy")
    run_inference(**kw, sort_thresh=0.0)  # every photo detected
    (out / "my notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(p.relative_to(out).parts[0] == "detected" for p in before)
    with pytest.raises(ConfigError, match=r"--resume.*--overwrite"):
        run_inference(**kw, sort_thresh=1.01)
    assert main(["infer", str(tiny_model), str(src), "--out", str(out), "--device", "cpu", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "earlier run" in err and "--resume" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # refused: nothing changed
    with pytest.raises(ConfigError, match="contradict"):
        run_inference(**kw, resume=True, overwrite=True)
    s = run_inference(**kw, sort_thresh=1.01, overwrite=True)  # nothing detected now: every photo empty
    assert not (out / "detected").exists()  # the old run's sorted copies are gone, not left beside the new ones
    assert sorted(p.relative_to(out / "empty").as_posix() for p in (out / "empty").rglob("*.jpg")) == ["cam1/a.jpg", "cam1/b.jpg", "cam2/c.jpg"]
    assert (out / "my notes.txt").read_text() == "mine" and s.images == 3
    assert {p: p.read_bytes() for p in src.rglob("*.jpg")} == photos


def test_failing_command_leaves_no_out_folder(tiny_model, tmp_path, capsys):
    "A command that fails on its arguments or its model creates no --out folder."
    from trailnb.cli import main
    src = tmp_path / "in"; _images(src, ["a.jpg"])
    bad = tmp_path / "bad.pt"; bad.write_text("not a model")
    cases = [[str(bad), str(src)], [str(tiny_model), str(tmp_path / "missing")], [str(tiny_model), str(src), "--class-thresh", "elk=0.5"],
             [str(tiny_model), str(src), "--formats", "xml"], [str(tiny_model), str(src), "--threads", "0"]]
    for i, args in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["infer", *args, "--out", str(out), "--device", "cpu"]) == 2, args
        assert not out.exists(), args
    assert "not a model file" in capsys.readouterr().err


def test_threads_are_trailnbs_through_a_yolo_run(tmp_path, monkeypatch):
    """`--threads N`: torch computes on N threads in every model call, also after Ultralytics' first predict (which
    sets its own count); the summary says the split; the caller's count is back after the run."""
    import torch
    import trailnb.yolo as ty
    from trailnb.core import seed_everything
    from trailnb.infer import run_inference
    from trailnb.models import build_detector
    seed_everything(0)
    ckpt = tmp_path / "yolo.pt"
    build_detector("yolov8n", ["animal", "person", "vehicle"], weights=None, max_dim=64, device="cpu").save(ckpt)
    src = tmp_path / "in"; _images(src, ["a.jpg", "b.jpg", "c.jpg"], size=(64, 48))
    n = min(8, max(1, (os.cpu_count() or 1) - 1)) + 1  # a count Ultralytics never picks on this machine
    seen, predict = [], ty.YOLODetector.predict_tensors
    monkeypatch.setattr(ty.YOLODetector, "predict_tensors", lambda self, *a, **k: (seen.append(torch.get_num_threads()), predict(self, *a, **k))[1])
    caller = torch.get_num_threads()
    s = run_inference(model=str(ckpt), input=str(src), out=str(tmp_path / "out"), device="cpu", threads=n, workers=0, batch_size=1)
    assert seen == [n, n, n]
    assert f"batch 1, 0 decoding worker(s), {n} torch thread(s)" in str(s)
    assert torch.get_num_threads() == caller


def test_infer_help_names_threads_and_overwrite_and_no_unmeasured_speedup(capsys):
    from trailnb.cli import main
    with pytest.raises(SystemExit): main(["infer", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--threads" in out and "--overwrite" in out and "os.sched_getaffinity" in out
    assert "2x" not in out and "benchmarks/infer.py" in out
