"""Species from crops: crops of labelled boxes, the classifier interface, its checkpoint and ONNX export, and
`trailnb train-classifier` / `trailnb info` / `trailnb export` on a classifier."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trailnb.classifier import (CLASSIFIER_FORMAT, ONNXClassifier, build_classifier, is_classifier_file, load_classifier,
                                model_card)
from trailnb.core import ConfigError, ModelError
from trailnb.crops import CROP_FILL, CropDataset, crop_box, crop_region, dataset_crops, split_crops
from trailnb.data import DetectionDataset, ImageRecord, load_coco, sequence_ids
from trailnb.synthetic import make_synthetic_dataset
from trailnb.train import TrainConfig, check_run_data
from trailnb.train_classifier import ClassifierConfig, classifier_data, crop_metrics, train_classifier

def cli(capsys, *args, check=True):
    "Run `trailnb ARGS` in this process (the console command is `trailnb.cli.main`): `(exit status, stdout, stderr)`."
    from trailnb.cli import main
    try: rc = main([str(a) for a in args])
    except SystemExit as e: rc = e.code  # --help
    out, err = capsys.readouterr()
    if check: assert rc in (0, None), err
    return rc, out, err


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    "A small synthetic world: 40 photos of 4 cameras, bursts, three species (shapes and colours)."
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n=40, seed=3, cameras=4)


@pytest.fixture(scope="module")
def tiny_clf(tmp_path_factory):
    "A tiny untrained classifier saved as a checkpoint (weights=None: no download)."
    d = tmp_path_factory.mktemp("clf")
    clf = build_classifier("mobilenet_v3_small", ["deer", "fox", "bird"], input_size=48, device="cpu")
    return clf, clf.save(d / "cls.pt", {"epochs": 0}, {"accuracy": 0.0})


def _numbered(w=100, h=80):
    arr = (np.arange(w * h * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    return arr, Image.fromarray(arr)


# --- crops -------------------------------------------------------------------------------------------------


def test_crop_of_a_known_box_is_the_hand_cut_pixels():
    "Margin widens each side by a fraction of the box; square: the longer side around the centre."
    arr, im = _numbered()
    # box 20 x 10 at (40, 30); margin 0.1 -> 24 x 12 -> square of 24 around (50, 35)
    assert crop_region([40, 30, 60, 40], 0.1) == (38, 23, 62, 47)
    np.testing.assert_array_equal(np.asarray(crop_box(im, [40, 30, 60, 40], margin=0.1)), arr[23:47, 38:62])
    np.testing.assert_array_equal(np.asarray(crop_box(im, [40, 30, 60, 40], margin=0.1, square=False)), arr[29:41, 38:62])
    np.testing.assert_array_equal(np.asarray(crop_box(im, [10, 20, 30, 50], margin=0.0)), arr[20:50, 5:35])  # 20 x 30: square 30
    np.testing.assert_array_equal(np.asarray(crop_box(im, [10, 20, 30, 50], margin=0.0, square=False)), arr[20:50, 10:30])


def test_crop_at_the_border_is_clipped_and_padded_with_the_fill():
    arr, im = _numbered()
    c = np.asarray(crop_box(im, [0, 0, 10, 10], margin=0.5))  # region (-5, -5, 15, 15)
    assert c.shape == (20, 20, 3)
    np.testing.assert_array_equal(c[5:, 5:], arr[:15, :15])
    assert (c[:5] == CROP_FILL).all() and (c[:, :5] == CROP_FILL).all()
    c = np.asarray(crop_box(im, [90, 60, 100, 80], margin=0.0))  # 10 x 20 at the bottom-right corner: region (85, 60, 105, 80)
    assert c.shape == (20, 20, 3)
    np.testing.assert_array_equal(c[:, :15], arr[60:80, 85:100])
    assert (c[:, 15:] == CROP_FILL).all()
    c = np.asarray(crop_box(im, [-10, 70, 20, 90], margin=0.0, square=False))  # not square: clipped only
    np.testing.assert_array_equal(c, arr[70:80, 0:20])


def test_tiny_boxes_are_listed_and_skipped(tmp_path):
    ds = DetectionDataset(["a", "b"], [ImageRecord(tmp_path / "x.jpg", 100, 80, [[0, 0, 5, 40], [10, 10, 50, 50], [60, 60, 90, 67]],
                                                   [0, 1, 0], file_name="cam/x.jpg")])
    kept, tiny = dataset_crops(ds, min_size=8)
    assert [c.key for c in kept] == ["cam/x.jpg#1"] and [c.key for c in tiny] == ["cam/x.jpg#0", "cam/x.jpg#2"]
    assert kept[0].label == 1 and kept[0].box.tolist() == [10, 10, 50, 50]


def test_no_burst_on_both_sides_of_the_split(syn):
    ds = load_coco(syn)
    for seed in (0, 1):
        tr, va = split_crops(ds, "sequence", 0.3, seed=seed)
        assert tr and va
        assert not {c.burst for c in tr} & {c.burst for c in va}
        ids = dict(zip((r.file_name for r in ds.images), sequence_ids(ds)))
        assert all(ids[c.file_name] == c.burst for c in tr + va)


def test_classifier_holds_out_exactly_the_photos_detection_training_holds_out(syn):
    for split in ("sequence", "folder"):
        d = classifier_data(ClassifierConfig(data=str(syn), split=split, val_frac=0.3, seed=1, progress=False))
        rd = check_run_data(TrainConfig(data=str(syn), split=split, val_frac=0.3, seed=1, progress=False))
        assert sorted({c.file_name for c in d.val}) == sorted({r.file_name for r in rd.val.images if len(r.boxes)})
        assert sorted({c.file_name for c in d.train}) == sorted({r.file_name for r in rd.train.images if len(r.boxes)})
        assert d.held_out == [r.file_name for r in rd.val.images]


def test_crop_dataset_serves_the_crops_crop_box_cuts(syn):
    ds = load_coco(syn)
    crops, _ = dataset_crops(ds)
    tds = CropDataset(crops[:3], input_size=40, margin=0.2)
    x, y = tds[1]
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32 and y == crops[1].label
    want = crop_box(Image.open(crops[1].path).convert("RGB"), crops[1].box, 0.2).resize((40, 40), Image.BILINEAR)
    np.testing.assert_array_equal((x * 255).round().byte().permute(1, 2, 0).numpy(), np.asarray(want))


# --- the classifier ----------------------------------------------------------------------------------------


def test_crop_metrics_hand_computed():
    r = crop_metrics([0, 0, 1, 2], np.array([[.8, .1, .1], [.4, .5, .1], [.2, .7, .1], [.5, .3, .2]]), ["a", "b", "c"])
    assert (r.accuracy, r.balanced_accuracy, r.top2) == (0.5, 0.5, 0.75)
    assert r.precision == [0.5, 0.5, None] and r.recall == [0.5, 1.0, 0.0]
    assert r.confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_predict_gives_probabilities_in_batches():
    clf = build_classifier("mobilenet_v3_small", ["a", "b", "c"], input_size=32, device="cpu")
    clf.batch_size = 2
    crops = [Image.new("RGB", (s, s), (s, 0, 0)) for s in (10, 40, 70, 100, 130)]
    p = clf.predict(crops)
    assert p.shape == (5, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p[2:4], clf.predict(crops[2:4]), atol=1e-6)
    assert clf.predict([]).shape == (0, 3)


def test_batch_norms_keep_statistics_a_short_training_can_move():
    "MobileNetV3's own BN momentum (0.01) would leave eval statistics near their initial values after a few hundred steps."
    clf = build_classifier("mobilenet_v3_small", ["a", "b"], input_size=32, device="cpu")
    moms = {m.momentum for m in clf.model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert moms == {0.1}


def test_unknown_arch_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"): build_classifier("resnet81", ["a", "b"])
    with pytest.raises(ModelError, match="not found"): build_classifier("resnet18", ["a", "b"], weights=tmp_path / "none.pth")


def test_checkpoint_round_trip(tiny_clf):
    clf, path = tiny_clf
    ck = torch.load(path, weights_only=True)
    assert ck["format"] == CLASSIFIER_FORMAT and ck["arch"] == "mobilenet_v3_small" and ck["input_size"] == 48
    assert ck["versions"]["trailnb"] and ck["train_config"] == {"epochs": 0}
    back = load_classifier(path, device="cpu")
    assert (back.classes, back.input_size, back.arch) == (clf.classes, 48, clf.arch)
    crops = [Image.new("RGB", (60, 60), c) for c in [(200, 10, 10), (10, 200, 10)]]
    np.testing.assert_allclose(back.predict(crops), clf.predict(crops), atol=1e-6)


def test_fine_tuning_keeps_the_backbone_and_renews_the_class_layer(tiny_clf):
    clf, path = tiny_clf
    ft = build_classifier("mobilenet_v3_small", ["x", "y"], input_size=48, weights=path, device="cpu")
    assert ft.load_info["reinitialised"] == ["net.classifier.3"]
    a, b = clf.model.state_dict(), ft.model.state_dict()
    assert torch.equal(a["net.features.0.0.weight"], b["net.features.0.0.weight"])


def test_a_classifier_is_not_taken_for_a_detector(tiny_clf):
    from trailnb.models import inspect_model_file, load_detector
    _, path = tiny_clf
    assert inspect_model_file(path)["kind"] == "classifier"
    with pytest.raises(ModelError, match="--classifier"): load_detector(path)
    assert is_classifier_file(path)


def test_onnx_export_agrees_with_torch(tiny_clf, tmp_path, syn):
    "fp32 ONNX probabilities equal torch's within 1e-4 (absolute); int8 loads, sums to 1 and says it is int8."
    pytest.importorskip("onnxruntime")
    from trailnb.export import export_onnx
    clf, path = tiny_clf
    rep = export_onnx(path, tmp_path / "cls.onnx")
    oc = load_classifier(rep.path, device="cpu")
    assert isinstance(oc, ONNXClassifier) and (oc.classes, oc.input_size) == (clf.classes, 48)
    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 255, (s, s, 3), dtype=np.uint8)) for s in (30, 48, 90)]
    np.testing.assert_allclose(oc.predict(crops), clf.predict(crops), atol=1e-4)
    q = export_onnx(path, tmp_path / "cls.int8.onnx", int8=True, calib=syn, calib_images=8)
    assert q.precision == "int8" and q.quantization["method"] == "static" and q.quantization["calibration_images"] == 8
    qc = load_classifier(q.path)
    assert qc.meta["precision"] == "int8"
    p = qc.predict(crops)
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1, atol=1e-4)
    assert model_card(q.path).kind == "classifier"


# --- training and the command line -------------------------------------------------------------------------


def test_train_classifier_cli_help_tiny_run_info_resume_and_export(syn, tmp_path, capsys):
    assert "--input-size INT" in cli(capsys, "train-classifier", "--help")[1]
    assert "train-classifier" in cli(capsys, "--help")[1]
    cli(capsys, "train-classifier", "--data", syn, "--arch", "mobilenet_v3_small", "--input-size", 32, "--epochs", 1, "--margin", 0.2,
        "--batch-size", 16, "--workers", 0, "--out", tmp_path, "--name", "c", "--no-progress")
    run = tmp_path / "c"
    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt", "metrics.csv", "config.yaml"}
    out = cli(capsys, "info", run / "best.pt")[1]
    assert "classifier" in out and "deer, fox, bird" in out and "32 px" in out
    assert load_classifier(run / "best.pt").margin == 0.2
    rc, _, err = cli(capsys, "train-classifier", "--resume", run, "--input-size", 64, check=False)
    assert rc == 2 and "--input-size 64" in err
    res = train_classifier(resume=str(run), epochs=2, progress=False)
    assert [h["epoch"] for h in res.history] == [1, 2] and res.report is not None
    if importlib.util.find_spec("onnxruntime"):  # the onnx extra
        cli(capsys, "export", run / "best.pt", "--out", tmp_path / "c.onnx")
        oc = load_classifier(tmp_path / "c.onnx")
        assert (oc.classes, oc.margin) == (["deer", "fox", "bird"], 0.2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_classifier_beats_chance_on_cameras_it_never_saw(tmp_path, seed):
    "Trained on the crops of some cameras, scored on others: balanced accuracy far above chance (1/3)."
    syn = make_synthetic_dataset(tmp_path / "syn", n=80, seed=0, cameras=5)
    res = train_classifier(data=str(syn), split="folder", val_frac=0.2, arch="resnet18", input_size=64, epochs=6,
                           batch_size=16, workers=0, seed=seed, out=str(tmp_path / "runs"), name="r", progress=False)
    cfg = ClassifierConfig(data=str(syn), split="folder", val_frac=0.2, seed=seed, progress=False)
    train_cams = {c.file_name.split("/")[-2] for c in classifier_data(cfg).train}
    val_cams = {n.split("/")[-2] for n in load_classifier(res.run_dir / "best.pt").checkpoint_info["held_out"]}
    assert val_cams and not train_cams & val_cams
    assert res.report.balanced_accuracy >= 0.6, res.report  # seen: 0.95-1.0 here; 0.58-0.67 on harder synthetic seeds
