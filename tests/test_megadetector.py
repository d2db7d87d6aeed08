"""A MegaDetector-v6-form file (an Ultralytics .pt with MegaDetector's classes and metadata) computes in trailnb
with MegaDetector's own rules (NMS IoU 0.45, whole-pixel boxes) and, with `channels_last = False`, exactly as in
MegaDetector's own batch tool: the same network outputs to the last bit on the same pixels, so the same NMS decisions
even at near ties (benchmarks/vs_megadetector.py measures the agreement at the defaults on real photos)."""
import json, math, subprocess, sys, textwrap
import numpy as np
import pytest

pytest.importorskip("megadetector.detection.pytorch_detector")

# MegaDetector's side runs in its own interpreter, as its batch tool does: its import rearranges sys.modules
# for YOLO code and relaxes PIL globally, which the rest of the suite should not inherit.
_MD = textwrap.dedent("""
    import json, sys, numpy as np, torch
    from megadetector.detection.pytorch_detector import PTDetector
    md = PTDetector(sys.argv[1], {"device": "cpu"})
    img = np.load(sys.argv[2])
    info = md.preprocess_image(img, image_size=int(sys.argv[3]))  # its letterbox ("classic" mode)
    x = torch.from_numpy(np.ascontiguousarray(info["img_processed"].transpose(2, 0, 1)))[None].float() / 255
    with torch.no_grad(): torch.save({"x": x, "raw": md.model(x)[0]}, sys.argv[4])
    res = md.generate_detections_one_batch([img], ["img"], 0.005, int(sys.argv[3]))[0]
    print(json.dumps(res["detections"]))
""")


@pytest.fixture(scope="module")
def md_file(tmp_path_factory):
    "A random YOLOv8n at 64 px with MegaDetector's classes and metadata (written by MegaDetector's own function)."
    import torch
    import trailnb.yolo as ty
    from megadetector.detection.pytorch_detector import add_metadata_to_megadetector_model_file
    from trailnb.models import MEGADETECTOR_CLASSES
    d = tmp_path_factory.mktemp("md")
    torch.manual_seed(0)
    raw = ty.write_ultralytics_checkpoint("yolov8n.yaml", d / "raw.pt", names=MEGADETECTOR_CLASSES, imgsz=64)
    y = ty.open_ultralytics(raw)
    head = y.model.model[-1]
    with torch.no_grad():  # boxes of many sizes (fractions of a pixel) and scores that vary: random box and class biases
        for box, cls in zip(head.cv2, head.cv3): box[-1].bias.normal_(0, 2), cls[-1].bias.normal_(-3, 2)
    y.save(str(raw))
    add_metadata_to_megadetector_model_file(str(raw), str(d / "MDV6-test.pt"), {
        "model_type": "ultralytics", "image_size": 64, "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}})
    return d / "MDV6-test.pt"


@pytest.fixture(scope="module")
def both(md_file, tmp_path_factory):
    "MegaDetector's letterboxed input, network outputs and detections for one image, and trailnb's detector after predicting it."
    import torch
    from trailnb.models import load_detector
    d = tmp_path_factory.mktemp("run")
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)  # long side = the model size: no resize
    np.save(d / "img.npy", img)
    r = subprocess.run([sys.executable, "-c", _MD, str(md_file), str(d / "img.npy"), "64", str(d / "md.pt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    det = load_detector(md_file, device="cpu")
    assert det.channels_last is None  # the default: Ultralytics' (faster) layout
    det.channels_last = False  # MegaDetector's arithmetic to the last bit, for those who validate against it
    dets = det.predict(img, score_thresh=0.005)  # trailnb's own path: Ultralytics' predictor with MegaDetector's rules
    return img, torch.load(d / "md.pt"), json.loads(r.stdout.strip().splitlines()[-1]), det, dets


def test_megadetector_file_computes_what_megadetector_computes(both):
    """The network outputs trailnb gets for a MegaDetector file equal MegaDetector's (`PTDetector`) bit for bit.
    Ultralytics 8.4 moves the weights to channels-last on an x86 CPU, whose convolutions round differently (before:
    outputs 1e-5 apart on this tiny model, up to 0.002 in a score on a YOLOv9-c, and NMS at a near tie decided the
    other way); `channels_last = False` keeps MegaDetector's contiguous layout (the default keeps Ultralytics' faster one)."""
    import torch
    _, got, _, det, _ = both
    assert tuple(got["x"].shape) == (1, 3, 64, 64)
    with torch.inference_mode(): ours = det.yolo.predictor.model(got["x"])
    ours = ours[0] if isinstance(ours, (list, tuple)) else ours
    apart = (ours[0] - got["raw"][0]).abs().max().item()
    assert apart == 0.0, f"trailnb's network outputs differ from MegaDetector's by up to {apart:.3g}"


def test_megadetector_file_detects_what_megadetector_writes(both):
    """The same detections as MegaDetector's batch tool writes them: class, score (it truncates to 3 decimals) and
    box, which it rounds to whole pixels (before: trailnb's boxes kept fractions of a pixel, so a thin box was
    IoU < 0.9 from MegaDetector's and a box under half a pixel wide was a line in one tool only)."""
    img, _, md_dets, _, d = both
    h, w = img.shape[:2]
    assert len(md_dets) == len(d) > 0
    mine = sorted((str(int(l) + 1), math.floor(float(s) * 1000) / 1000, *(b / [w, h, w, h])) for l, s, b in zip(d.labels, d.scores, d.boxes))
    theirs = sorted((m["category"], m["conf"], m["bbox"][0], m["bbox"][1], m["bbox"][0] + m["bbox"][2], m["bbox"][1] + m["bbox"][3])
                    for m in md_dets)
    assert [m[:2] for m in mine] == [t[:2] for t in theirs]
    off = float(np.abs(np.array([m[2:] for m in mine]) - [t[2:] for t in theirs]).max())
    assert off < 3e-4, f"box corners up to {off * w:.2f} px from MegaDetector's"  # it truncates to 4 decimals: 0.02 px here


def test_megadetector_file_through_onnx_runtime_keeps_megadetector_rules(both, md_file, tmp_path):
    """`--engine onnx` (and `auto` where ONNX Runtime measured faster) on a MegaDetector file: its export keeps
    MegaDetector's classes, NMS IoU and whole-pixel boxes (before: the ONNX path kept fractions of a pixel), and finds
    what MegaDetector writes: as many boxes, of the same classes, with the same scores. Tolerance: ONNX Runtime's
    arithmetic is not torch's (outputs ~1e-6 apart), so a score may cross MegaDetector's 3rd-decimal truncation
    (within 0.0011), and where this tiny random model scores boxes the same to 1e-7 (it does: a near tie) NMS may keep
    the other one, so which boxes are kept is not compared here; `benchmarks/vs_megadetector.py` measures that
    agreement on real photos (99.4-100% on four random YOLOv9-c builds)."""
    pytest.importorskip("onnxruntime")
    from trailnb.export import export_onnx
    from trailnb.models import load_detector
    img, _, md_dets, _, _ = both
    export_onnx(md_file, tmp_path / "md.onnx")
    det = load_detector(tmp_path / "md.onnx", device="cpu")
    assert type(det).__name__ == "ONNXDetector" and det.megadetector and det.nms_iou == 0.45 and det.whole_pixels
    d = det.predict(img, score_thresh=0.005)
    assert len(d) == len(md_dets) > 0 and (d.boxes == d.boxes.round()).all() and d.boxes.min() >= 0
    mine = sorted((str(int(l) + 1), float(s)) for l, s in zip(d.labels, d.scores))
    theirs = sorted((m["category"], m["conf"]) for m in md_dets)
    assert [m[0] for m in mine] == [t[0] for t in theirs]
    assert max(abs(m[1] - t[1]) for m, t in zip(mine, theirs)) < 0.0011
