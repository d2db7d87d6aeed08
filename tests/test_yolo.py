"""YOLO through Ultralytics: no network, nothing in the home folder, one call for both families, and the
squirrel frames evaluated by trailnb (pycocotools) and by Ultralytics' own val."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest

# Runs in a fresh interpreter so that Ultralytics is imported for the first time *after* the socket
# functions are replaced: every network attempt (DNS lookup or connect) is recorded and refused.
_NO_NET = textwrap.dedent("""
    import json, os, socket, sys
    from pathlib import Path
    attempts = []
    def refuse(what):
        def f(*a, **k):
            attempts.append(f"{what}{a[1:3] if what == 'connect' else a[:2]}")
            raise OSError(f"network access attempted in a no-network test: {what}")
        return f
    socket.getaddrinfo = refuse("getaddrinfo"); socket.gethostbyname = refuse("gethostbyname")
    socket.create_connection = refuse("create_connection")
    socket.socket.connect = refuse("connect"); socket.socket.connect_ex = refuse("connect_ex")
    out = Path(sys.argv[1])
    try:
        import trailnb.yolo_train as ty
        from trailnb.data import load_dataset, split_by_sequence
        from trailnb.synthetic import make_synthetic_dataset
        from trailnb.models import load_detector
        ds = load_dataset(make_synthetic_dataset(out / "syn", n=10, size=(128, 96), seed=1))
        tr, va = split_by_sequence(ds, val_frac=0.3)
        from trailnb.train import TrainConfig
        cfg = TrainConfig(arch="yolo11n", epochs=1, batch_size=4, max_dim=96, device="cpu", workers=0)
        det, hist, mets = ty.train_yolo_on(tr, va, cfg, out / "ours" / "r", workers=0)   # plots on: fonts!
        det2 = load_detector(out / "ours" / "r" / "best.pt", device="cpu")
        n = sum(len(d) for d in det2.predict([r.path for r in va.images], score_thresh=0.0))
        ty.ultralytics_val(det2, va)
    finally:
        (out / "attempts.json").write_text(json.dumps(attempts))
    print("PREDICTED", n)
""")


def test_no_network_and_nothing_in_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "TRAILNB_PROGRESS"))}  # trailnb sets them itself
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
               MPLCONFIGDIR=str(tmp_path / "mpl"),  # matplotlib's own font cache is not under test here
               TRAILNB_HOME=str(tmp_path / "trailnb_home"), MPLBACKEND="Agg")
    (tmp_path / "home").mkdir()
    p = subprocess.run([sys.executable, "-c", _NO_NET, str(tmp_path)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "PREDICTED" in p.stdout
    assert "Creating new Ultralytics Settings" not in p.stdout + p.stderr  # trailnb's set-up, not a note to the user
    assert "\x1b" not in p.stdout + p.stderr  # its training log (progress on) reached a pipe: plain text, no colour codes
    assert "epochs completed" in p.stderr and "epochs completed" not in p.stdout  # beside trailnb's progress, on stderr
    assert json.loads((tmp_path / "attempts.json").read_text()) == []
    assert list((tmp_path / "home").rglob("*")) == []  # Ultralytics wrote nothing to the home folder
    ud = tmp_path / "trailnb_home" / "ultralytics" / "Ultralytics"
    assert (ud / "settings.json").is_file() and (ud / "Arial.ttf").is_file()
    assert not (tmp_path / "runs").exists()  # its run folder is ours, not ./runs


def test_importing_does_no_work(tmp_path):
    "`import trailnb.yolo` neither imports Ultralytics nor sets its environment or writes its folder: that is first use."
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["TRAILNB_HOME"] = str(tmp_path / "home")
    code = ("import os, sys, trailnb.yolo; "
            "print(sorted(k for k in os.environ if k.startswith('YOLO_')), 'ultralytics' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split("\n")[-2] == "[] False"
    assert not (tmp_path / "home").exists()


@pytest.fixture(scope="module")
def synthetic_coco(tmp_path_factory):
    from trailnb.synthetic import make_synthetic_dataset
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n=10, size=(128, 96), seed=2)


@pytest.mark.parametrize("arch", ["fasterrcnn_mobilenet_v3_large_320_fpn", "yolo11n"])
def test_one_call_trains_either_family(arch, synthetic_coco, tmp_path):
    from trailnb.core import Detections
    from trailnb.models import load_detector
    from trailnb.train import train
    res = train(data=str(synthetic_coco), arch=arch, epochs=1, batch_size=4, max_dim=96, device="cpu", workers=0,
                out=str(tmp_path), name="run", progress=False)
    assert res.run_dir == tmp_path / "run" and len(res.history) == 1
    det = load_detector(res.run_dir / "best.pt", device="cpu")
    assert det.arch == arch and det.classes == res.detector.classes
    from trailnb.data import load_dataset
    rec = load_dataset(synthetic_coco)[0]
    d = det.predict(rec.path, score_thresh=0.0)
    assert isinstance(d, Detections) and (d.labels < len(det.classes)).all()
    assert len(d) == 0 or (d.boxes[:, 2].max() <= rec.width + 0.5 and d.boxes[:, 3].max() <= rec.height + 0.5)


def test_unsupported_setting_is_an_error_before_any_work(synthetic_coco, tmp_path):
    from trailnb.core import ConfigError
    from trailnb.train import train
    with pytest.raises(ConfigError, match="balanced=True"):
        train(data=str(synthetic_coco), arch="yolo11n", balanced=True, out=str(tmp_path), name="x")
    assert not (tmp_path / "x").exists()
    from trailnb.train import CSVLogger
    with pytest.raises(ConfigError, match="CSVLogger"):  # callbacks Ultralytics' trainer cannot call are refused, not dropped
        train(data=str(synthetic_coco), arch="yolo11n", callbacks=[CSVLogger()], out=str(tmp_path), name="y")
    assert not (tmp_path / "y").exists()


def _squirrel_splits(sq):
    from trailnb.data import load_yolo
    ds = load_yolo(sq / "data.yaml")
    return {s: ds.subset([i for i, r in enumerate(ds) if r.meta["split"] == s]) for s in ("train", "val")}


def test_squirrels_evaluated_by_trailnb_and_ultralytics(sample_data, tmp_path):
    import trailnb.yolo_train as ty
    from trailnb.train import train
    res = train(data=str(sample_data / "squirrels" / "data.yaml"), split="given", arch="yolo11n", epochs=2,
                max_dim=160, device="cpu", workers=0, out=str(tmp_path), name="sq", progress=False)
    val = _squirrel_splits(sample_data / "squirrels")["val"]
    assert len(val) == 4  # the file's own split is kept, not re-drawn
    rows = ty.compare_with_ultralytics(res.detector, val)
    assert [r["metric"] for r in rows] == ["AP", "AP50", "AP75"]
    # same pixels (rect=False) and the same 300 boxes per image: only the integration rules differ, by at most
    # the documented bound (nbs/07a_yolo_train.ipynb, "trailnb's COCO metrics next to Ultralytics' own val")
    for r in rows: assert abs(r["trailnb_300"] - r["ultralytics_square"]) <= r["bound"], r
    for r in rows: assert abs(r["trailnb_300"] - r["ultralytics_on_ours"]) <= r["bound"], r  # same detections
    assert all(abs(r["bound"] - (1 / 8 + 1 / 101)) < 1e-9 for r in rows)  # 4 boxes of one class: 1/(2*4) + 1/101
    table = ty.format_comparison(rows)
    assert "trailnb (pycocotools)" in table and "Ultralytics val" in table
    assert "ultralytics" in res.metrics and "AP" in res.metrics  # both recorded in the checkpoint's metrics


def test_80_class_ultralytics_pt_finetunes_to_squirrels(sample_data, tmp_path):
    """An Ultralytics yolo11n .pt with 80 classes (random, written by Ultralytics' own `save`) fine-tunes to the
    squirrels' 3 classes the Ultralytics way: at step 0 of its trainer every backbone tensor is the file's, only the
    class outputs of the head start afresh; the checkpoint records it and holds a 3-class head."""
    import trailnb.yolo as ty
    from trailnb.core import ConfigError
    from trailnb.models import build_detector, load_detector, read_checkpoint
    from trailnb.train import train
    src = ty.write_ultralytics_checkpoint("yolo11n.yaml", tmp_path / "yolo11n-coco.pt")
    start = load_detector(src, device="cpu")
    assert (start.arch, start.num_classes, start.megadetector) == ("yolo11n", 80, False)
    for other in ("yolov8n", "fasterrcnn_mobilenet_v3_large_320_fpn"):  # the file says which architecture it is
        with pytest.raises(ConfigError, match="pass arch='yolo11n'"):
            build_detector(other, ["a"], weights=src)
    res = train(data=str(sample_data / "squirrels" / "data.yaml"), split="given", arch="yolo11n", weights=str(src),
                epochs=1, max_dim=96, batch_size=4, device="cpu", workers=0, out=str(tmp_path), name="ft", progress=False)
    rep = res.detector.load_info
    n_backbone = len(start.yolo.model.yaml["backbone"])  # layers 0..10 of yolo11n
    head = len(start.yolo.model.yaml["backbone"]) + len(start.yolo.model.yaml["head"]) - 1  # the Detect layer
    fresh = rep["reinitialised"]
    assert fresh and all(m.startswith(f"model.{head}.cv3.") for m in fresh), fresh  # only the class branch's outputs
    assert not any(int(m.split(".")[1]) < n_backbone for m in fresh)
    assert rep["loaded"] > 0.9 * rep["model_tensors"]
    ck = read_checkpoint(res.run_dir / "best.pt")
    assert ck["weights_init"] == rep and ck["weights_source"] == str(src)
    tuned = load_detector(res.run_dir / "best.pt", device="cpu")
    assert tuned.yolo.model.model[-1].nc == 3 and tuned.classes == ["animal", "person", "vehicle"]


def test_a_megadetector_file_decides_with_megadetectors_nms(tmp_path):
    """A MegaDetector-v6-form file (Ultralytics, classes animal/person/vehicle) keeps MegaDetector's own NMS IoU
    (0.45, its batch tool's default "classic" mode) and thresholds; any other Ultralytics file keeps Ultralytics'
    0.7. With overlapping boxes from a random network, 0.45 keeps fewer of them: the rule is applied, not just set."""
    import numpy as np
    import trailnb.yolo as ty
    from trailnb.models import MEGADETECTOR_CLASSES, MEGADETECTOR_NMS_IOU, load_detector
    md = load_detector(ty.write_ultralytics_checkpoint("yolov8n.yaml", tmp_path / "md.pt", names=MEGADETECTOR_CLASSES,
                                                       imgsz=64, score_bias=0.0), device="cpu")
    other = load_detector(ty.write_ultralytics_checkpoint("yolov8n.yaml", tmp_path / "o.pt", names=["deer", "fox"],
                                                          imgsz=64), device="cpu")
    assert (md.megadetector, md.nms_iou, md.usual_thresholds) == (True, MEGADETECTOR_NMS_IOU, {"score": 0.005, "sort": 0.2})
    assert (other.megadetector, other.nms_iou) == (False, 0.7)
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    n45 = len(md.predict(img, score_thresh=0.0))
    md.nms_iou = 0.7
    assert len(md.predict(img, score_thresh=0.0)) > n45


def test_importing_ultralytics_leaves_child_processes_their_threads():
    "Ultralytics' import sets OMP_NUM_THREADS=1 in the environment: a process started afterwards (MegaDetector's tool, a "
    "papermill kernel, torchrun's workers) would compute on one thread. trailnb's import takes that back."
    import os, subprocess, sys
    code = ("import os, subprocess, sys\n"
            "from trailnb.yolo import import_ultralytics\n"
            "import_ultralytics()\n"
            "print(os.environ.get('OMP_NUM_THREADS'))\n"
            "print(subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'], capture_output=True, text=True).stdout.strip())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout.split()
    fresh = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], capture_output=True, text=True,
                           env=env, timeout=300).stdout.strip()
    assert out == ["None", fresh], out
