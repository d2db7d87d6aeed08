"""Integration tests of trailnb.models: every registered architecture trains a step and round-trips a checkpoint."""
import urllib.error
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from trailnb.core import ModelError
from trailnb.models import build_detector, list_architectures, load_detector, smoke_step

TORCHVISION_ARCHS = [a for a, d in list_architectures().items() if d.startswith("[torchvision]") and "<" not in a]
BACKBONES = ["fasterrcnn_resnet18", "fasterrcnn_efficientnet_b0", "fasterrcnn_convnext_tiny", "fasterrcnn_regnet_y_400mf"]
HEAVY = {"fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "ssd300_vgg16", "fasterrcnn_convnext_tiny"}


def _param(a):
    return pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a


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
    with pytest.raises(ModelError, match="not a trailnb checkpoint"):
        load_detector(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="Weights file not found"):
        build_detector("fasterrcnn_resnet18", ["a"], weights=tmp_path / "nope.pth")
