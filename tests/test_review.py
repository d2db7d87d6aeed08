"""FiftyOne review on real camera-trap data: the dataset, FP/FN views against our own counts, the App served
headless, and the tag -> COCO export -> load_coco round trip.

The FiftyOne database lives in the per-session temporary folder that conftest.py sets before anything imports
fiftyone; dataset names are unique and not persistent, and each test deletes what it made.
"""
import hashlib, json, os, queue, re, subprocess, sys, threading, time, urllib.error, urllib.request, uuid
from pathlib import Path

import numpy as np
import pytest

from trailnb.data import load_coco
from trailnb.evaluate import align, match_dataset, precision_recall_f1
from trailnb.results import read_results
from trailnb.core import DataError
from trailnb.review import (REVIEW_COLORS, ReviewError, evaluate_fiftyone, export_corrections, false_negatives,
                            false_positives, free_port, from_relative_boxes, launch, load_review, most_errors,
                            review_views, run_review, save_review_views, to_fiftyone)

import fiftyone as fo  # noqa: E402 (a requirement; conftest.py set its environment before this import)
from fiftyone import ViewField as F  # noqa: E402


@pytest.fixture(scope="module")
def camtrap(sample_data):
    "camtrap31: MegaDetector pseudo ground truth (COCO) and MegaDetector's own results (MD JSON) as predictions."
    d = sample_data / "camtrap31"
    gt = load_coco(d / "coco_md_pseudo_gt.json", images=d / "images")
    classes, preds, _ = read_results(d / "megadetector_v5_results.json", image_root=d / "images")
    assert classes == gt.classes == ["animal", "person", "vehicle"]
    return d, gt, preds


def _new(gt, preds, **kw):
    return to_fiftyone(gt, preds, name=f"trailnb-test-{uuid.uuid4().hex[:8]}", persistent=False, **kw)


@pytest.fixture(scope="module")
def review(camtrap):
    _, gt, preds = camtrap
    ds = _new(gt, preds)
    yield ds
    ds.delete()


def test_dataset_holds_gt_predictions_and_metadata(camtrap, review):
    _, gt, preds = camtrap
    assert len(review) == len(gt) == 31
    assert review.count("ground_truth.detections") == gt.num_boxes == 30
    assert review.count("predictions.detections") == sum(len(p) for p in preds.values()) == 79
    boxes = np.array([d.bounding_box for ds in review.values("predictions.detections") for d in ds])
    assert boxes.shape == (79, 4) and boxes.min() >= 0 and (boxes[:, :2] + boxes[:, 2:]).max() <= 1 + 1e-9
    by_name = gt.index_by_file_name()
    for s in review.iter_samples():                   # relative boxes map back to the same pixel boxes
        r = gt.images[by_name[s.file_name]]
        assert (s.metadata.width, s.metadata.height) == (r.width, r.height)
        back = from_relative_boxes([d.bounding_box for d in s.ground_truth.detections], r.width, r.height)
        np.testing.assert_allclose(back, r.boxes, atol=0.05)
        assert [d.label for d in s.ground_truth.detections] == [gt.classes[l] for l in r.labels]
    assert review.count("datetime") >= 20             # most camtrap31 images carry an EXIF capture time
    assert review.distinct("folder") == ["."]         # all in one folder
    assert set(review.info["trailnb_classes"]) == {"animal", "person", "vehicle"}


def test_existing_name_is_an_error_unless_overwrite(camtrap, review):
    _, gt, preds = camtrap
    with pytest.raises(ReviewError, match="load_review"):
        to_fiftyone(gt, preds, name=review.name)
    assert load_review(review.name).count() == 31
    with pytest.raises(ReviewError, match="No FiftyOne dataset named"):
        load_review("trailnb-test-no-such-dataset")


@pytest.mark.parametrize("thresh,iou", [(0.5, 0.5), (0.2, 0.5), (0.05, 0.5), (0.1, 0.75)])
def test_fp_fn_views_match_our_counts(camtrap, review, thresh, iou):
    _, gt, preds = camtrap
    evaluate_fiftyone(review, iou=iou, score_thresh=thresh, eval_key="eval")
    ours = precision_recall_f1(gt, align(gt, preds), score_thresh=thresh, iou_thresh=iou)["all"]
    assert len(false_positives(review)) == review.sum("eval_fp") == ours["fp"]
    assert len(false_negatives(review)) == review.sum("eval_fn") == ours["fn"]
    assert review.sum("eval_tp") == ours["tp"]
    M = match_dataset(gt, preds, iou)                 # matched once, counted at the threshold: the same
    assert (M.at(thresh).tp, M.at(thresh).fp, M.at(thresh).fn) == (ours["tp"], ours["fp"], ours["fn"])
    # image by image, too
    keep = M.score >= thresh
    for i, r in enumerate(gt.images):
        s = review.match(F("file_name") == r.file_name).first()
        on = keep & (M.image == i)
        assert s.eval_fp == int((on & (M.gt < 0)).sum()), r.file_name
    conf = np.array(false_positives(review).values("predictions.confidence"))
    assert (np.diff(conf) <= 0).all() and (conf >= thresh).all()


def test_rates_follow_the_evaluation_convention(camtrap):
    "A review's precision/recall/F1 are evaluation's, the undefined ones included: -1.0 (\"–\" in text), never 1.0."
    _, gt, preds = camtrap
    M = match_dataset(gt, preds)
    for thresh in (0.05, 0.5, 1.01):   # 1.01: above every score, nothing kept, precision is 0/0
        assert M.at(thresh).rates() == precision_recall_f1(gt, align(gt, preds), score_thresh=thresh)["all"]
    assert (M.at(1.01).precision, M.at(1.01).recall) == (-1.0, 0.0)
    assert "precision –" in str(M.at(1.01))


def test_counts_follow_from_how_the_pseudo_gt_was_made(camtrap, review, sample_data):
    "The pseudo GT is MegaDetector's own output at conf >= 0.2: at 0.2 nothing is wrong, above it only misses."
    from trailnb.core import read_json
    gt_conf = np.array([a["md_conf"] for a in read_json(sample_data / "camtrap31/coco_md_pseudo_gt.json")["annotations"]])
    evaluate_fiftyone(review, iou=0.5, score_thresh=0.2, eval_key="at02")
    assert (review.sum("at02_fp"), review.sum("at02_fn")) == (0, 0)
    evaluate_fiftyone(review, iou=0.5, score_thresh=0.5, eval_key="at05")
    assert review.sum("at05_fp") == 0 and review.sum("at05_fn") == int((gt_conf < 0.5).sum()) > 0
    errs = most_errors(review, "at05").values(F("at05_fp") + F("at05_fn"))
    assert errs == sorted(errs, reverse=True) and min(errs) > 0


def test_review_views_are_saved_for_the_app(review):
    evaluate_fiftyone(review, score_thresh=0.1)
    names = save_review_views(review)
    assert {"above_threshold", "all_predictions", "false_positives", "false_negatives", "most_errors", "class-animal",
            "folder-root", "patches"} <= set(names)
    assert set(review.list_saved_views()) >= set(names)
    views = review_views(review)
    # what the App shows is what was evaluated: 31 of MegaDetector's 79 boxes score >= 0.1, the rest one view away
    conf = np.array(review.values("predictions.detections.confidence", unwind=True))
    assert (len(conf), int((conf >= 0.1).sum())) == (79, 31)
    assert len(views["patches"]) == views["above_threshold"].count("predictions.detections") == 31
    assert views["all_predictions"].count("predictions.detections") == 79
    assert views["most_errors"].count("predictions.detections") <= 31
    assert len(views["folder-root"]) == 31
    assert views["class-animal"].count("ground_truth.detections") == review.count_values(
        "ground_truth.detections.label")["animal"]
    save_review_views(review)                          # saving again replaces, does not fail
    # the score is written on each box (the label text), from the stored confidence; the stored labels keep the class
    shown = review.load_saved_view("above_threshold")
    for text, c in zip(shown.values("predictions.detections.label", unwind=True),
                       shown.values("predictions.detections.confidence", unwind=True)):
        cls, score = re.fullmatch(r"(animal|person|vehicle) (\d\.\d\d)", text).groups()
        assert float(score) == pytest.approx(c, abs=0.005)
    assert set(review.distinct("predictions.detections.label")) <= {"animal", "person", "vehicle"}
    # one fixed colour per field, the same on day and night frames
    scheme = review.app_config.color_scheme
    assert scheme.color_by == "field" and {f["path"]: f["fieldColor"] for f in scheme.fields} == REVIEW_COLORS


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


def test_app_serves_headless_and_closes(review):
    t0 = time.monotonic()
    session = launch(false_positives(review) if "eval" in review.list_evaluations() else review,
                     port=None, remote=True, wait_s=90)
    try:
        port = session.server_port
        assert session.url.startswith("http://") and str(port) in session.url
        assert _get(f"http://127.0.0.1:{port}/") == 200
        assert time.monotonic() - t0 < 120             # launch returned without waiting for a browser
    finally:
        session.close()
    deadline = time.monotonic() + 60                   # the server stops once its last session is closed
    while time.monotonic() < deadline:
        try: _get(f"http://127.0.0.1:{port}/", timeout=2)
        except (urllib.error.URLError, ConnectionError, OSError): break
        time.sleep(1)
    else:
        pytest.fail(f"the App on port {port} still answers 60 s after session.close()")


def _sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_tags_export_and_reread_change_exactly_the_tagged_labels(camtrap, tmp_path):
    d, gt, preds = camtrap
    before = _sha(d / "coco_md_pseudo_gt.json")
    ds = _new(gt, preds)
    try:
        # pick labels the way a reviewer would, from the error views at 0.1
        evaluate_fiftyone(ds, score_thresh=0.1)
        fp = false_positives(ds).first()                          # most confident FP: really an animal
        ds.select_labels(ids=[fp.predictions.id]).tag_labels("fp_real", label_fields="predictions")
        others = ds.exclude([fp.sample_id])                       # each edit on its own image
        multi = others.match(F("ground_truth.detections").length() >= 2).sort_by("file_name")
        s_rel, s_rm = multi.first(), multi.skip(1).first()
        relabel = s_rel.ground_truth.detections[0]
        ds.select_labels(ids=[relabel.id]).tag_labels(["wrong_class", "class:person"], label_fields="ground_truth")
        drop = s_rm.ground_truth.detections[-1]
        ds.select_labels(ids=[drop.id]).tag_labels("remove", label_fields="ground_truth")
        left = others.match(F("ground_truth.detections").length() == 1).sort_by("file_name").first()
        ds.select(left.id).tag_samples("missing_label")
        ds.select_labels(ids=[fp.predictions.id]).tag_labels("looks odd", label_fields="predictions")  # a note: ignored

        out = tmp_path / "reviewed" / "corrections.json"
        summ = export_corrections(ds, out)
        assert (len(summ.added), len(summ.relabelled), len(summ.removed), summ.left_out) == (1, 1, 1, [left.file_name])
        assert summ.problems == []
        assert (tmp_path / "reviewed" / "corrections.review.json").is_file()
        with pytest.raises(ReviewError, match="overwrite=True"):
            export_corrections(ds, out)
    finally:
        ds.delete()

    new = load_coco(out)                                          # finds the images through the stored root
    assert not new.problems and new.classes == gt.classes
    old_by, new_by = gt.index_by_file_name(), new.index_by_file_name()
    assert set(old_by) - set(new_by) == {left.file_name} and len(new) == len(gt) - 1
    fp_file = fp.file_name
    w, h = fp.metadata.width, fp.metadata.height
    fp_box = from_relative_boxes([fp.predictions.bounding_box], w, h)[0]
    changed = set()
    for fn, i in new_by.items():
        a, b = gt.images[old_by[fn]], new.images[i]
        same = len(a.boxes) == len(b.boxes) and np.allclose(a.boxes, b.boxes, atol=0.05) and (a.labels == b.labels).all()
        if not same: changed.add(fn)
    assert changed == {fp_file, s_rel.file_name, s_rm.file_name}   # nothing else moved
    r = new.images[new_by[fp_file]]; o = gt.images[old_by[fp_file]]
    assert len(r.boxes) == len(o.boxes) + 1 and np.allclose(r.boxes[-1], fp_box, atol=0.05)
    assert gt.classes[r.labels[-1]] == fp.predictions.label
    r = new.images[new_by[s_rel.file_name]]; o = gt.images[old_by[s_rel.file_name]]
    assert r.labels.tolist() == [gt.classes.index("person")] + o.labels[1:].tolist()
    r = new.images[new_by[s_rm.file_name]]; o = gt.images[old_by[s_rm.file_name]]
    np.testing.assert_allclose(r.boxes, o.boxes[:-1], atol=0.05)
    assert _sha(d / "coco_md_pseudo_gt.json") == before           # the original annotations are untouched


def test_run_review_from_files(camtrap):
    "What `trailnb review` does: dataset file + results file -> evaluated FiftyOne dataset with saved views."
    from trailnb.review import run_review
    d, gt, preds = camtrap
    name = f"trailnb-test-{uuid.uuid4().hex[:8]}"
    run = run_review(data=str(d / "coco_md_pseudo_gt.json"), images=str(d / "images"),
                     predictions=str(d / "megadetector_v5_results.json"), name=name, score_thresh=0.05)
    try:
        ref = match_dataset(gt, preds).at(0.05)
        assert (run.counts.tp, run.counts.fp, run.counts.fn) == (ref.tp, ref.fp, ref.fn)
        assert run.counts.fp > 0 and run.session is None
        assert "false_positives" in run.views and load_review(name).persistent
        M = match_dataset(run.ground_truth, run.predictions).at(0.05)   # what the run reviewed, for galleries
        assert (M.tp, M.fp, M.fn) == (ref.tp, ref.fp, ref.fn)
    finally:
        run.dataset.delete()


def _synthetic_files(d: Path, n: int = 8):
    "A synthetic COCO dataset and a bare COCO results list: every GT box at score 0.9, plus one box at 0.03."
    from trailnb.synthetic import make_synthetic_dataset
    ann = make_synthetic_dataset(d / "syn", n=n, size=(96, 64), seed=1)
    coco = json.loads(ann.read_text())
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
           for a in coco["annotations"]]
    res.append({"image_id": coco["images"][0]["id"], "category_id": coco["categories"][0]["id"], "bbox": [2, 2, 10, 10],
                "score": 0.03})
    (d / "preds.json").write_text(json.dumps(res))
    return ann, d / "preds.json", coco


def test_review_build_runs_the_checks_of_check_data(tmp_path):
    "A truncated JPEG (a card pulled out too early) is listed as check-data lists it and left out; strict refuses."
    from trailnb.data import check_data
    ann, preds, coco = _synthetic_files(tmp_path)
    bad = coco["images"][2]
    f = ann.parent / bad["file_name"]; f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    name = f"trailnb-test-{uuid.uuid4().hex[:8]}"
    run = run_review(data=str(ann), predictions=str(preds), name=name)
    try:
        ref = check_data(ann)
        assert [(p.kind, p.file) for p in run.report.problems] == [(p.kind, p.file) for p in ref.problems] \
            == [("truncated_image", bad["file_name"])]
        assert len(run.dataset) == len(coco["images"]) - 1 and bad["file_name"] not in run.dataset.distinct("file_name")
        good = sum(a["image_id"] != bad["id"] for a in coco["annotations"])
        assert (run.counts.tp, run.counts.fp, run.counts.fn) == (good, 0, 0)   # the 0.03 box is under the 0.1 threshold
        assert "truncated_image" in run.summary() and bad["file_name"] in run.summary()
        with pytest.raises(DataError, match="truncated"):
            run_review(data=str(ann), predictions=str(preds), name=name, strict=True)
    finally:
        run.dataset.delete()


def test_review_refreshes_until_tagged_then_reopens(tmp_path):
    ann, preds, coco = _synthetic_files(tmp_path)
    name = f"trailnb-test-{uuid.uuid4().hex[:8]}"
    kw = dict(data=str(ann), predictions=str(preds), name=name)
    run_review(**kw)
    try:
        again = run_review(**kw, score_thresh=0.02)       # nothing tagged yet: rebuilt, evaluated at the new threshold
        assert (again.counts.fp, len(again.dataset)) == (1, len(coco["images"]))
        again.dataset.take(1, seed=0).tag_samples("missing_label")
        with pytest.raises(ReviewError, match="holds review tags"):
            run_review(**kw)
        back = run_review(open=name)                      # reopened as it is: tags, counts and views
        assert back.dataset.count_sample_tags() == {"missing_label": 1}
        assert (back.counts.thresh, back.counts.tp, back.counts.fp, back.counts.fn) == \
            (0.02, again.counts.tp, again.counts.fp, again.counts.fn)
        assert set(back.views) == set(again.views) and back.report is None
        assert f"trailnb review --open {name} --app" in back.summary()
    finally:
        load_review(name).delete()
    with pytest.raises(ReviewError, match="No FiftyOne dataset named"):
        run_review(open=name)


def _read_until(stream, text, timeout):
    "What `stream` printed until a line contains `text` (or the time is up); the stream is read by a thread."
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in iter(stream.readline, "")], daemon=True).start()
    out, deadline = "", time.monotonic() + timeout
    while text not in out and time.monotonic() < deadline:
        try: out += lines.get(timeout=1)
        except queue.Empty: pass
    return out


def test_cli_app_is_served_while_a_terminal_is_attached(tmp_path):
    "`trailnb review --open NAME --app` in a terminal: serves the App until Enter, then closes it and exits."
    ann, preds, coco = _synthetic_files(tmp_path)
    name = f"trailnb-test-{uuid.uuid4().hex[:8]}"
    run_review(data=str(ann), predictions=str(preds), name=name)
    port = free_port()
    master, slave = os.openpty()                          # a real terminal for the child's standard input
    proc = subprocess.Popen([str(Path(sys.executable).with_name("trailnb")), "review", "--open", name, "--app",
                             "--port", str(port)], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _read_until(proc.stdout, "press Enter", 150)
        assert "press Enter" in out, out
        assert f"{name!r}: {len(coco['images'])} images" in out and "at score >= 0.1" in out
        assert _get(f"http://127.0.0.1:{port}/") == 200   # served, and the command is still waiting
        assert proc.poll() is None
        os.write(master, b"\n")                          # the reviewer is done
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None: proc.kill()
        os.close(master); os.close(slave)
        load_review(name).delete()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:                    # and the App stops with it
        try: _get(f"http://127.0.0.1:{port}/", timeout=2)
        except (urllib.error.URLError, ConnectionError, OSError): break
        time.sleep(1)
    else:
        pytest.fail(f"the App on port {port} still answers 60 s after the command ended")
