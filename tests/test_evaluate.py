"""trailnb.evaluate against pycocotools itself, on the real camera-trap sample and on synthetic sets.

The camtrap31 ground truth is *pseudo* ground truth (MegaDetector v5 detections at conf >= 0.2), not human
labels: the comparisons here check that our numbers are pycocotools' numbers, not how good MegaDetector is.
"""
import contextlib, hashlib, io, json
from pathlib import Path

import numpy as np
import pytest

from trailnb.core import ConfigError, DataError, Detections, read_json, write_json
from trailnb import models
from trailnb.data import DetectionDataset, ImageRecord, load_coco
from trailnb.synthetic import make_synthetic_dataset
from trailnb.evaluate import (METRIC_KEYS, EvalConfig, coco_metrics, evaluate, load_predictions, match_detections,
                              per_class_ap, precision_recall_f1, run_cocoeval, run_evaluation)

GT, MD = "coco_md_pseudo_gt.json", "megadetector_v5_results.json"


@pytest.fixture(scope="module")
def cam(sample_data):
    return sample_data / "camtrap31"


def _reference(gt_file: Path, md: dict):
    "pycocotools run directly on the files: COCO(gt) + loadRes(MD boxes scaled by the GT image sizes) + COCOeval."
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    g = json.loads(gt_file.read_text())
    ids = {im["file_name"]: (im["id"], im["width"], im["height"]) for im in g["images"]}
    res = []
    for e in md["images"]:
        iid, w, h = ids[e["file"]]
        for d in e["detections"]:
            x, y, bw, bh = d["bbox"]
            res.append({"image_id": iid, "category_id": int(d["category"]), "bbox": [x * w, y * h, bw * w, bh * h],
                        "score": d["conf"]})
    with contextlib.redirect_stdout(io.StringIO()):
        E = COCOeval(gt := COCO(str(gt_file)), gt.loadRes(res), "bbox")
        E.evaluate(); E.accumulate(); E.summarize()
    return E


def _perturbed_md(md: dict, seed: int = 0) -> dict:
    "MegaDetector output made worse: boxes jittered, some detections dropped, scores shuffled, some classes swapped."
    rng = np.random.default_rng(seed)
    out = json.loads(json.dumps(md))
    for e in out["images"]:
        dets = []
        for d in e["detections"]:
            if rng.random() < 0.2: continue
            x, y, w, h = d["bbox"]
            j = rng.normal(0, 0.05, 4) * [w, h, w, h]
            d["bbox"] = [float(np.clip(x + j[0], 0, 1)), float(np.clip(y + j[1], 0, 1)), float(abs(w + j[2])), float(abs(h + j[3]))]
            d["conf"] = float(np.clip(d["conf"] + rng.normal(0, 0.2), 0.001, 1))
            if rng.random() < 0.1: d["category"] = "2"
            dets.append(d)
        e["detections"] = dets
    return out


def _ours(cam: Path, md_file: Path, backend: str):
    ds = load_coco(cam / GT, images=cam / "images")
    preds = load_predictions(md_file, ds, gt_file=cam / GT)
    return ds, preds, run_cocoeval(ds, preds, backend=backend)


@pytest.mark.parametrize("backend", ["pycocotools", "faster-coco-eval"])
@pytest.mark.parametrize("perturb", [False, True])
def test_coco_numbers_equal_pycocotools_on_camtrap31(cam, tmp_path, backend, perturb):
    md = read_json(cam / MD)
    md_file = cam / MD
    if perturb:
        md = _perturbed_md(md)
        md_file = write_json(tmp_path / "md_perturbed.json", md)
    ref = _reference(cam / GT, md)
    ds, preds, E = _ours(cam, md_file, backend)
    assert len(ds) == 31 and sum(len(p) for p in preds) == sum(len(e["detections"]) for e in md["images"])
    np.testing.assert_allclose(E.stats, ref.stats, rtol=0, atol=1e-9)
    np.testing.assert_allclose(E.eval["precision"], ref.eval["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(E.eval["recall"], ref.eval["recall"], rtol=0, atol=1e-9)
    m = coco_metrics(ds, preds, backend=backend)
    assert list(m) == list(METRIC_KEYS) and all(isinstance(v, float) for v in m.values())
    np.testing.assert_allclose([m[k] for k in METRIC_KEYS], ref.stats, rtol=0, atol=1e-9)
    if perturb:  # a non-trivial case: AP well below 1, so equality is not an accident of a perfect score
        assert 0.1 < m["AP"] < 0.95
        rows = per_class_ap(E, ds, preds)
        p = ref.eval["precision"][:, :, 0, 0, -1]
        assert rows[0]["class"] == "animal" and abs(rows[0]["AP"] - p[p > -1].mean()) < 1e-9
    else:  # pseudo GT = MD's own top detections, so AP is 1 while AR1 is not
        assert m["AP"] == 1.0 and abs(m["AR1"] - ref.stats[6]) < 1e-12 and m["AR1"] < 1


def test_backends_agree_on_a_larger_random_set():
    rng = np.random.default_rng(1)
    recs, preds = [], []
    for i in range(150):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 500, (n, 2)); wh = rng.uniform(8, 200, (n, 2))
        boxes = np.c_[xy, xy + wh]; labels = rng.integers(0, 3, n)
        recs.append(ImageRecord(Path(f"/x/{i}.jpg"), 720, 640, boxes, labels, image_id=i, file_name=f"{i}.jpg"))
        keep = rng.random(n) > 0.25
        jb = boxes[keep] + rng.normal(0, 6, (int(keep.sum()), 4))
        fp_xy = rng.uniform(0, 500, (2, 2))
        preds.append(Detections(np.r_[jb, np.c_[fp_xy, fp_xy + 60]], np.r_[rng.uniform(0.3, 1, int(keep.sum())), rng.uniform(0, 0.6, 2)],
                                np.r_[labels[keep], rng.integers(0, 3, 2)]))
    ds = DetectionDataset(["deer", "fox", "bird"], recs)
    a, b = run_cocoeval(ds, preds, backend="pycocotools"), run_cocoeval(ds, preds, backend="faster-coco-eval")
    np.testing.assert_allclose(a.stats, b.stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.eval["precision"], b.eval["precision"], rtol=0, atol=1e-12)
    assert 0.1 < a.stats[0] < 0.95


def test_threshold_matching_agrees_with_cocoeval(cam, tmp_path):
    "Our TP counts at a score threshold equal those read from pycocotools' own per-image matches (IoU 0.5)."
    md_file = write_json(tmp_path / "md.json", _perturbed_md(read_json(cam / MD), seed=3))
    ds, preds, _ = _ours(cam, md_file, "pycocotools")
    E = run_cocoeval(ds, preds, backend="pycocotools")
    t = 0  # IoU 0.5
    for thresh in (0.05, 0.2, 0.5):
        ref_tp = np.zeros(len(ds.classes), int)
        for e in E.evalImgs:
            if e is None or e["aRng"] != [0, 1e10] or e["maxDet"] != 100: continue
            s = np.asarray(e["dtScores"]); hit = (np.asarray(e["dtMatches"])[t] > 0) & (s >= thresh)
            ref_tp[e["category_id"] - 1] += int(hit.sum())
        prf = precision_recall_f1(ds, preds, score_thresh=thresh, iou_thresh=0.5)
        assert [prf["classes"][c]["tp"] for c in ds.classes] == ref_tp.tolist()
        n_dets = sum(int((p.scores >= thresh).sum()) for p in preds)
        assert prf["all"]["tp"] + prf["all"]["fp"] == n_dets and prf["all"]["tp"] + prf["all"]["fn"] == ds.num_boxes


def _digest(p: Path) -> str: return hashlib.sha256(p.read_bytes()).hexdigest()


def test_run_evaluation_writes_report_and_leaves_originals(cam, tmp_path):
    before = {p: _digest(cam / p) for p in (GT, MD)}
    out = tmp_path / "report"
    rep = run_evaluation(data=str(cam / GT), images=str(cam / "images"), predictions=str(cam / MD), out_dir=str(out),
                         score_thresh=0.2, target_recall=0.95)
    assert {p.name for p in out.iterdir()} == {"metrics.json", "summary.md", "pr_curves.png", "confusion.png",
                                               "per_class_ap.png", "image_level.png", "summary.png"}
    saved = read_json(out / "metrics.json")
    assert saved["metrics"] == rep.metrics and saved["settings"]["config"]["score_thresh"] == 0.2
    assert "not human labels" in (out / "summary.md").read_text()  # the COCO file's description is the note
    il = rep.image_level
    assert (il["n_positive"], il["n_empty"], il["recall"], il["empty_filtered"]) == (17, 14, 1.0, 1.0)
    assert il["suggested_thresh"] == pytest.approx(0.2113, abs=1e-4)  # the lowest-scoring animal frame
    assert rep.confusion[-1].sum() == 0 and rep.confusion[:, -1].sum() == 0  # at 0.2 MD reproduces its pseudo GT
    assert before == {p: _digest(cam / p) for p in (GT, MD)}


def test_run_evaluation_from_yaml_and_coco_results(tmp_path):
    root = make_synthetic_dataset(tmp_path / "syn", n=6, classes=("deer", "fox"), seed=2, size=(128, 96))
    data = root if root.suffix == ".json" else next(root.glob("*.json"))
    ds = load_coco(data)
    # a bare COCO results list with the dataset file's own ids: every box found, scores 0.9
    g = read_json(data)
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9} for a in g["annotations"]]
    write_json(tmp_path / "res.json", res)
    (tmp_path / "eval.yaml").write_text(f"data: {data}\npredictions: {tmp_path / 'res.json'}\nbackend: pycocotools\n")
    rep = run_evaluation(str(tmp_path / "eval.yaml"), out_dir=str(tmp_path / "out"))
    assert rep.settings["n_images"] == len(ds) and not rep.skipped
    assert rep.metrics["AP"] == pytest.approx(1.0, abs=1e-12) and rep.prf["all"]["f1"] == 1.0
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_predictions_for_other_images_are_a_clear_error(tmp_path):
    root = make_synthetic_dataset(tmp_path / "syn", n=3, classes=("deer",), seed=0, size=(96, 64))
    data = root if root.suffix == ".json" else next(root.glob("*.json"))
    md = {"info": {}, "detection_categories": {"1": "deer"},
          "images": [{"file": "elsewhere/x.jpg", "width": 96, "height": 64, "detections": []}]}
    write_json(tmp_path / "md.json", md)
    with pytest.raises(DataError, match="none of its 1 images match"):
        run_evaluation(data=str(data), predictions=str(tmp_path / "md.json"))
    with pytest.raises(ConfigError, match="exactly one of"):
        run_evaluation(EvalConfig(data=str(data)))


def test_checkpoint_evaluation_and_a_bad_image_is_skipped(tmp_path, caplog):
    root = make_synthetic_dataset(tmp_path / "syn", n=4, classes=("deer", "fox"), seed=0, size=(128, 96))
    data = root if root.suffix == ".json" else next(root.glob("*.json"))
    det = models.build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["fox", "deer"], weights=None, max_dim=128,
                                device="cpu")
    ckpt = det.save(tmp_path / "m.pt")
    rep = run_evaluation(data=str(data), checkpoint=str(ckpt), device="cpu", batch_size=2, out_dir=str(tmp_path / "out"))
    assert rep.settings["n_images"] == 4 and set(rep.metrics) == set(METRIC_KEYS)
    assert (tmp_path / "out" / "summary.png").is_file()
    ds = load_coco(data)
    bad = ds.images[1].path
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])  # a corrupt file: this image fails to decode
    rep = evaluate(ds, models.load_detector(ckpt, device="cpu"), batch_size=2)
    assert rep.skipped == [ds.images[1].file_name] and rep.settings["n_images"] == 3
    assert f"evaluate: skipping image {ds.images[1].file_name}" in caplog.text  # the warning names the file


def test_evaluation_runs_the_data_checks_a_truncated_image_is_listed_and_skipped(tmp_path, capsys):
    "The checks of `trailnb check-data` run before evaluating: a truncated JPEG is listed and left out, never a crash."
    data = make_synthetic_dataset(tmp_path / "syn", n=5, classes=("deer", "fox"), seed=4, size=(128, 96))
    ds = load_coco(data)
    bad = ds.images[2]
    raw = bad.path.read_bytes(); bad.path.write_bytes(raw[: len(raw) // 2])  # a card pulled out mid-write
    g = read_json(data)
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9} for a in g["annotations"]]
    write_json(tmp_path / "res.json", res)
    rep = run_evaluation(data=str(data), predictions=str(tmp_path / "res.json"))
    assert rep.settings["n_images"] == 4  # the other four, each box found: AP exactly 1
    assert rep.metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    listed = rep.settings["data_problems"]
    assert [(p["kind"], p["file"]) for p in listed] == [("truncated_image", bad.file_name)]
    assert bad.file_name in capsys.readouterr().out  # the report is shown, naming the file
    det = models.build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["deer", "fox"], weights=None, max_dim=96, device="cpu")
    rep = run_evaluation(data=str(data), checkpoint=str(det.save(tmp_path / "m.pt")), device="cpu", batch_size=2)
    assert rep.settings["n_images"] == 4 and not rep.skipped  # the bad image never reached the detector
    with pytest.raises(DataError, match=bad.file_name):
        run_evaluation(data=str(data), predictions=str(tmp_path / "res.json"), strict=True)


def test_a_runs_checkpoint_is_scored_on_the_images_it_held_out(tmp_path, capsys):
    "evaluate --checkpoint scores the images the run recorded as held out, and says so; --all-images scores all, and says what that measures."
    from trailnb.cli import main
    root = make_synthetic_dataset(tmp_path / "syn", n=4, classes=("deer", "fox"), seed=0, size=(96, 64))
    data = root if root.suffix == ".json" else next(root.glob("*.json"))
    ds = load_coco(data)
    held = [ds.images[1].file_name, ds.images[3].file_name]
    det = models.build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["deer", "fox"], weights=None, max_dim=96, device="cpu")
    ckpt = det.save(tmp_path / "best.pt", train_config={"data": str(data)}, extra={"held_out": held})
    rep = run_evaluation(data=str(data), checkpoint=str(ckpt), device="cpu", batch_size=2)
    assert rep.settings["n_images"] == 2 and sorted(rep.settings["scored_images"]) == sorted(held)
    assert "Scored the 2 of 4 images that the checkpoint's run held out" in rep.summary()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--device", "cpu", "--all-images"]) == 0
    out = capsys.readouterr().out
    assert "Scored all 4 images (--all-images): scores on images the model trained on measure nothing" in out
    old = det.save(tmp_path / "old.pt")  # a checkpoint that records nothing: all images, with a note
    rep = run_evaluation(data=str(data), checkpoint=str(old), device="cpu", batch_size=2)
    assert rep.settings["n_images"] == 4 and "does not record which images" in rep.summary()
