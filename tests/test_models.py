"""Integration tests of trailnb.models: every registered architecture trains a step and round-trips a checkpoint."""
import urllib.error
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from trailnb.core import ModelError
from trailnb.models import TorchvisionDetector, build_detector, list_architectures, load_detector

TORCHVISION_ARCHS = [a for a, d in list_architectures().items() if d.startswith("[torchvision]") and "<" not in a]
BACKBONES = ["fasterrcnn_resnet18", "fasterrcnn_efficientnet_b0", "fasterrcnn_convnext_tiny", "fasterrcnn_regnet_y_400mf"]
HEAVY = {"fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "ssd300_vgg16", "fasterrcnn_convnext_tiny"}


def smoke_step(det: TorchvisionDetector, size: int = 96) -> dict:
    "One SGD step on two random `size`-px images with one box each, then a prediction: a quick self-check."
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, size, size, generator=g), torch.rand(3, size * 3 // 4, size, generator=g)]
    tg = [{"boxes": torch.tensor([[10., 12., 60., 70.]]), "labels": torch.tensor([0])},
          {"boxes": torch.tensor([[30., 20., 80., 60.]]), "labels": torch.tensor([det.num_classes - 1])}]
    det.train()
    opt = torch.optim.SGD([p for p in det.model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    losses = det.losses(imgs, tg)
    loss = sum(losses.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    preds = det.eval().predict_tensors(imgs, [1.0, 1.0], score_thresh=0.0)
    return {"loss": loss.item(), "n_pred": [len(p) for p in preds]}


def _param(a):
    return pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a


def _mdv5_form_file(path, monkeypatch):
    "A file in MegaDetector v5's form: a pickle of YOLOv5's own model class (a stand-in `models.yolo.Model`)."
    import sys, types
    yolo = types.ModuleType("models.yolo")
    exec("import torch\nclass Model(torch.nn.Module):\n    pass", yolo.__dict__)
    yolo.Model.__module__ = "models.yolo"
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.yolo", yolo)
    torch.save({"model": yolo.Model()}, path)
    monkeypatch.delitem(sys.modules, "models.yolo"); monkeypatch.delitem(sys.modules, "models")
    return path


@pytest.mark.parametrize("arch", [_param(a) for a in TORCHVISION_ARCHS + BACKBONES])
def test_arch_trains_predicts_and_round_trips(arch, tmp_path):
    det = build_detector(arch, ["deer", "fox"], max_dim=96, device="cpu")
    r = smoke_step(det)
    assert np.isfinite(r["loss"]) and len(r["n_pred"]) == 2
    im = Image.new("RGB", (150, 100), (80, 110, 70))
    d = det.predict(im, score_thresh=0.0)
    assert len(d) and d.boxes[:, 2].max() <= 150.5 and d.boxes[:, 3].max() <= 100.5
    back = load_detector(det.save(tmp_path / "m.pt"), device="cpu")
    np.testing.assert_allclose(back.predict(im, score_thresh=0.0).boxes, d.boxes, atol=1e-3)


def test_predict_on_files_uses_the_shared_decoder(tmp_path):
    from torchvision.transforms.v2 import functional as F
    from trailnb.data import load_image
    det = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["deer"], max_dim=96, device="cpu")
    Image.fromarray((np.random.default_rng(0).random((120, 200, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    im, s = load_image(tmp_path / "a.png", 96)
    want = det.predict_tensors([F.to_dtype(F.pil_to_tensor(im), torch.float32, scale=True)], [s], score_thresh=0.0)[0]
    got = det.predict([tmp_path / "a.png"], score_thresh=0.0)[0]
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
    assert got.boxes[:, 2].max() > 96  # original pixels (200 wide), not the 96-px input


def test_offline_coco_weights_give_one_clear_error(monkeypatch, tmp_path):
    def no_network(*a, **k): raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # an empty weights cache
    try:
        for arch in ["fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn_v2"]:
            with pytest.raises(ModelError, match="weights=None to train from scratch"):
                build_detector(arch, ["deer"], weights="coco")
        with pytest.raises(ModelError, match="offline"):
            build_detector("fasterrcnn_efficientnet_b0", ["deer"], weights="imagenet")
    finally:
        torch.hub.set_dir(old)


def test_coco_weights_from_local_file_resize_the_head(tmp_path):
    # a torchvision-style COCO state_dict (91 classes) saved locally, as a user would download it elsewhere
    import torchvision
    coco = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    torch.save(coco.state_dict(), tmp_path / "ssdlite_coco.pth")
    det = build_detector("ssdlite320_mobilenet_v3_large", ["deer", "fox"], weights=tmp_path / "ssdlite_coco.pth", device="cpu")
    assert det.load_info["skipped"] > 0 and det.load_info["loaded"] > det.load_info["skipped"]
    sd = det.model.state_dict()
    k = "backbone.features.0.0.0.weight"
    assert torch.equal(sd[k], coco.state_dict()[k])


def test_bad_files_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_detector(tmp_path / "missing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_detector(tmp_path / "empty.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a model file trailnb can use"):
        load_detector(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="Weights file not found"):
        build_detector("fasterrcnn_resnet18", ["a"], weights=tmp_path / "nope.pth")


def test_coco_state_dict_loads_and_finetunes_to_squirrels(sample_data, tmp_path):
    """A torchvision COCO-style state_dict (91 outputs, random) loads as a 90-class COCO detector, and fine-tunes to
    the squirrels' 3 classes: the backbone is the file's at step 0, the box predictor is new, and the checkpoint says so."""
    import torchvision
    from trailnb.models import read_checkpoint
    from trailnb.train import train
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    coco = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91)
    src = tmp_path / f"{arch}-coco.pth"  # named as torchvision names its released file
    torch.save(coco.state_dict(), src)
    det = load_detector(src, device="cpu")
    assert (det.arch, det.num_classes, det.classes[0], det.classes[17]) == (arch, 90, "person", "dog")

    seen = {}
    class AtStepZero:
        def on_train_start(self, state):
            sd = state.detector.model.state_dict()
            seen["backbone_same"] = [torch.equal(sd[k], v) for k, v in coco.state_dict().items()
                                     if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
            seen["head"] = state.detector.model.roi_heads.box_predictor.cls_score.out_features
    res = train(data=str(sample_data / "squirrels" / "data.yaml"), split="given", arch=arch, weights=str(src), epochs=1,
                max_dim=160, batch_size=4, device="cpu", workers=0, out=str(tmp_path), name="ft", progress=False,
                callbacks=[AtStepZero()])
    assert len(seen["backbone_same"]) > 200 and all(seen["backbone_same"])  # every backbone tensor is the file's
    assert seen["head"] == 4  # animal, person, vehicle + background
    ck = read_checkpoint(res.run_dir / "best.pt")
    assert ck["weights_source"] == str(src) and ck["classes"] == ["animal", "person", "vehicle"]
    assert ck["weights_init"]["reinitialised"] == ["roi_heads.box_predictor.bbox_pred", "roi_heads.box_predictor.cls_score"]
    assert ck["weights_init"]["loaded"] == ck["weights_init"]["model_tensors"] - 4


def test_megadetector_v5_pickle_needs_the_extra(tmp_path, monkeypatch):
    """A YOLOv5 pickle (MegaDetector v5's format) is recognised from its contents, whatever its name, and without
    MegaDetector's package and its YOLOv5 code the error names the extra to install. The pickle is built with a
    stand-in `models.yolo.Model` class: the real MDv5 weights cannot be downloaded here."""
    import sys
    from trailnb.models import inspect_model_file
    _mdv5_form_file(tmp_path / "detector.pt", monkeypatch)
    assert inspect_model_file(tmp_path / "detector.pt")["kind"] == "yolov5"
    monkeypatch.setitem(sys.modules, "yolov5", None)  # as on any machine without trailnb[megadetector]
    with pytest.raises(ModelError, match=r"pip install 'trailnb\[megadetector\]'"):
        load_detector(tmp_path / "detector.pt")


def test_unknown_files_get_one_clear_error(tmp_path):
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.pt", "JPEG")
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "dict.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    for f, what in [("photo.pt", "a JPEG image"), ("dict.pt", "a PyTorch file holding a dict with keys ['epoch', 'notes']"),
                    ("module.pt", "a pickled Python object that needs torch.nn.modules.linear.Linear")]:
        with pytest.raises(ModelError) as e:
            load_detector(tmp_path / f)
        assert f"it looks like {what}" in str(e.value) and "Accepted: a trailnb checkpoint" in str(e.value), str(e.value)


def test_info_of_a_yolo_checkpoint_states_agpl_and_shows_undefined_metrics_as_dash(tmp_path):
    "`trailnb info` on a trailnb checkpoint of an Ultralytics architecture: AGPL-3.0 as the raw file says; -1 shows as '–'."
    from trailnb.cli import main
    from trailnb.models import model_info
    p = build_detector("yolov8n", ["deer", "fox"], weights=None, max_dim=64, device="cpu").save(
        tmp_path / "yolo.pt", metrics={"AP50": 0.25, "precision": -1.0, "recall": -1, "images": 3})
    card = model_info(p)
    assert card.family == "ultralytics" and "AGPL-3.0" in card.license
    text = str(card)
    metrics = next(l for l in text.splitlines() if "AP50" in l)  # (the card's path line may hold a "-1": pytest-1/)
    assert "AP50 0.2500, precision –, recall –, images 3" in metrics and "-1" not in metrics
    assert "unknown" not in text.split("licence")[1].splitlines()[0]


def test_predict_on_mixed_sizes_matches_one_image_at_a_time():
    """`Detector.predict` on a list of images of several sizes gives each image the detections it gets alone
    (batches hold one shape; tolerance: float rounding of batched matrix products, see tests/test_infer.py)."""
    from trailnb.core import seed_everything
    seed_everything(0)
    det = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["a", "b"], weights=None, max_dim=128, device="cpu")
    imgs = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (h, w, 3), np.uint8))
            for i, (w, h) in enumerate([(128, 96), (96, 128), (128, 64), (128, 96), (96, 128)])]
    alone = [det.predict(im, score_thresh=0.0) for im in imgs]
    together = det.predict(imgs, score_thresh=0.0, batch_size=8)
    for a, b in zip(alone, together):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.boxes, b.boxes, rtol=0, atol=1e-3)


_TINY_FAMILY = '''
"A family of its own: a text file that starts with TINYDET and lists its classes."
from trailnb.models import register_file_format

def sniff(probe): return {"what": "a tinydet file", "classes": probe.path.read_text().split()[1:]} if probe.head.startswith(b"TINYDET") else None

register_file_format("tinydet", sniff, "tinydet_loader:load_tiny", arch="tinydet_loader:arch_of",
                     description="a tinydet file (TINYDET and its classes)")
'''
_TINY_LOADER = '''
"The loader, named by module path: imported only when a tinydet file is loaded."
from trailnb.core import Detections
from trailnb.models import Detector

class Tiny(Detector):
    family = "tinydet"
    family_license = "CC0 (tinydet)"
    def predict_tensors(self, batch, scales, score_thresh=0.05):
        return [Detections([[0, 0, t.shape[-1] / s, t.shape[-2] / s]], [1.0], [0]) for t, s in zip(batch, scales)]

def load_tiny(path, device, info): return Tiny("tiny-v1", info["classes"], max_dim=64, device=device)
def arch_of(path, info): return "tiny-v1"
'''


def test_a_user_registered_file_format_is_recognised_and_loaded(tmp_path, monkeypatch):
    """A family module of the user's, named in FAMILY_MODULES, registers its file format when trailnb first needs the
    registry; its loader, named by module path, is imported only when such a file is loaded. load_detector,
    arch_of_weights, inspect_model_file and model_info then take its files, and the error for an unknown file lists it."""
    import sys
    from trailnb import models
    (tmp_path / "tinydet_family.py").write_text(_TINY_FAMILY)
    (tmp_path / "tinydet_loader.py").write_text(_TINY_LOADER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(models, "FAMILY_MODULES", [*models.FAMILY_MODULES, "tinydet_family"])
    monkeypatch.setattr(models, "_FORMATS", dict(models._FORMATS))  # the registration ends with the test
    for m in ("tinydet_family", "tinydet_loader"): monkeypatch.delitem(sys.modules, m, raising=False)
    f = tmp_path / "model.bin"
    f.write_text("TINYDET deer fox")
    assert models.inspect_model_file(f) == {"kind": "tinydet", "what": "a tinydet file", "classes": ["deer", "fox"]}
    assert "tinydet_family" in sys.modules and "tinydet_loader" not in sys.modules  # the loader stays lazy
    det = load_detector(f, device="cpu")
    assert (type(det).__name__, det.arch, det.classes, det.family) == ("Tiny", "tiny-v1", ["deer", "fox"], "tinydet")
    assert det.predict(Image.new("RGB", (100, 50))).boxes.tolist() == [[0, 0, 100, 50]]
    assert models.arch_of_weights(f) == "tiny-v1"
    card = models.model_info(f)
    assert (card.kind, card.family, card.arch, card.license) == ("tinydet", "tinydet", "tiny-v1", "CC0 (tinydet)")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match=r"ONNX model \(\.onnx\), or a tinydet file \(TINYDET and its classes\)"):
        load_detector(tmp_path / "notes.txt")
    with pytest.raises(Exception, match="already registered"):
        models.register_file_format("tinydet", lambda p: None, "tinydet_loader:load_tiny")


def test_every_file_kind_loads_through_the_registry(tmp_path, monkeypatch):
    """Every kind of file a test can build (trailnb checkpoint, torchvision .pth, Ultralytics .pt, MegaDetector-form .pt,
    .onnx) is recognised by its family's registered format and loads as before: the same detector class, architecture,
    classes and input size, and the same boxes as the detector it was written from."""
    import sys
    from trailnb import models
    from trailnb.export import export_onnx
    from trailnb.yolo import write_ultralytics_checkpoint
    det = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["deer", "fox"], max_dim=96, device="cpu").eval()
    im = Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8))
    want = det.predict(im, score_thresh=0.0)
    ckpt, pth = det.save(tmp_path / "best.pt"), tmp_path / "fasterrcnn_mobilenet_v3_large_320_fpn.pth"
    torch.save(det.model.state_dict(), pth)
    onnx_file = export_onnx(det, tmp_path / "m.onnx").path
    ul = write_ultralytics_checkpoint("yolov8n.yaml", tmp_path / "MDV6-yolov8n.pt", ["animal", "person", "vehicle"], imgsz=320)
    _mdv5_form_file(tmp_path / "md_v5a.0.0.pt", monkeypatch)  # MegaDetector v5's form

    expect = {ckpt: ("trailnb", "TorchvisionDetector", "fasterrcnn_mobilenet_v3_large_320_fpn", ["deer", "fox"], 96),
              pth: ("state_dict", "TorchvisionDetector", "fasterrcnn_mobilenet_v3_large_320_fpn", ["class1", "class2"], 320),
              onnx_file: ("onnx", "ONNXDetector", "fasterrcnn_mobilenet_v3_large_320_fpn", ["deer", "fox"], 96),
              ul: ("ultralytics", "YOLODetector", "yolov8n", ["animal", "person", "vehicle"], 320)}
    for f, (kind, cls, arch, classes, max_dim) in expect.items():
        assert models.inspect_model_file(f)["kind"] == kind, f
        got = load_detector(f, device="cpu")
        assert (type(got).__name__, got.arch, got.classes, got.max_dim) == (cls, arch, classes, max_dim), f
        assert models.model_info(f).kind == kind
    assert load_detector(ul, device="cpu").megadetector and load_detector(ul, device="cpu").usual_thresholds["sort"] == 0.2
    assert [models.arch_of_weights(f) for f in (ckpt, pth, ul, onnx_file)] == [
        "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn", "yolov8n", None]
    np.testing.assert_allclose(load_detector(ckpt, device="cpu").predict(im, score_thresh=0.0).boxes, want.boxes, atol=1e-4)
    top = np.sort(load_detector(onnx_file, device="cpu").predict(im, score_thresh=0.0).scores)[-5:]
    np.testing.assert_allclose(top, np.sort(want.scores)[-5:], atol=1e-4)
    assert models.inspect_model_file(tmp_path / "md_v5a.0.0.pt")["kind"] == "yolov5"
    monkeypatch.setitem(sys.modules, "yolov5", None)  # as on any machine without trailnb[megadetector]
    with pytest.raises(ModelError, match=r"pip install 'trailnb\[megadetector\]'"):
        load_detector(tmp_path / "md_v5a.0.0.pt")
