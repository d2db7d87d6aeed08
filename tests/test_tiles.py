"""Tiled prediction (trailnb.tiles + the prediction loop): a box cut by tile borders comes back as one box on the
photo's exact pixels, tiles of any size cover the whole image, and `infer --tiles` runs end to end (results files,
sorting, tracking, Camtrap DP export, resume) like a whole-image run."""
import json
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


class Bright:
    "A stand-in detector: one box around the bright pixels of each view it is shown, in that view's pixels / scale."
    device, classes = "cpu", ["patch"]

    def __init__(self, max_dim=64): self.max_dim, self.calls = max_dim, []

    def predict_tensors(self, batch, scales, score_thresh=0.05):
        out = []
        for t, s in zip(batch, scales):
            self.calls.append(tuple(t.shape))
            ys, xs = torch.nonzero(t[0] > 0.6, as_tuple=True)
            b = (np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32) / s if len(xs)
                 else np.zeros((0, 4), np.float32))
            from trailnb.core import Detections
            out.append(Detections(b, np.full(len(b), 0.9 if s == 1 else 0.5, np.float32), np.zeros(len(b), np.int64)))
        return out


def _patch_image(path, size, box):
    a = np.full((size[1], size[0], 3), 40, np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = 255
    Image.fromarray(a).save(path)


# patches cut by borders (one a corner where four tiles meet), in the image's last (shifted-back) tile, and at its start
@pytest.mark.parametrize("box,crossed", [((100, 50, 140, 80), True), ((40, 30, 70, 60), True), ((44, 44, 100, 100), True),
                                         ((230, 160, 250, 190), False), ((5, 5, 20, 20), False)])
def test_box_cut_by_tile_borders_is_one_box_on_exact_pixels(tmp_path, box, crossed):
    from trailnb.predict import InferItem, iter_predictions
    from trailnb.tiles import tile_grid
    _patch_image(tmp_path / "big.png", (250, 190), box)
    grid = tile_grid(250, 190, 64, 0.25)
    cut = [t for t in grid.tolist() if _overlap(t, box) and not _inside(box, t)]
    det = Bright()
    r = list(iter_predictions(det, [InferItem(str(tmp_path / "big.png"), "big.png")], workers=0, tiles=64, tile_overlap=0.25))[0]
    assert len(r.detections) == 1 and (r.width, r.height) == (250, 190)  # one box
    if any(_inside(box, t) for t in grid.tolist()):  # a tile sees it whole: its box, on the patch's own pixels
        assert r.detections.boxes.tolist() == [list(map(float, box))]
    else:  # every tile cuts it: the union of its pieces and the shrunken whole image's box (1 / 0.256 px per pixel)
        assert np.abs(r.detections.boxes[0] - box).max() <= 4 and _inside(box, r.detections.boxes[0])
    assert len(det.calls) == 1 + len(grid)  # the whole image and every tile, each once
    assert bool(cut) == crossed  # the case is what it says: some tile border crosses the patch, or none


def _overlap(t, b): return t[0] < b[2] and b[0] < t[2] and t[1] < b[3] and b[1] < t[3]
def _inside(b, t): return t[0] <= b[0] and t[1] <= b[1] and b[2] <= t[2] and b[3] <= t[3]


def test_boxes_map_back_to_original_pixels_exactly():
    "A tile's boxes, in its pixels over its scale, land on the photo's pixels by adding its offset: no rounding."
    from trailnb.core import Detections
    from trailnb.tiles import decode_tiles, tile_views, to_original
    im = Image.fromarray(np.zeros((3000, 4000, 3), np.uint8))
    d = {"i": 0, **decode_tiles(im, 4000, 3000, 1280, 640, 0.2)}  # tiles of 1280 shrunk to a 640 input
    views = tile_views(d)
    assert d["tile_scale"] == 0.5 and {tuple(v["img"].shape) for v in views} == {(3, 640, 640)}
    for v in views:
        x0, y0 = v["offset"]
        tile_px = np.array([[10.0, 20.0, 300.0, 400.0]])  # in the model's pixels of this tile
        got, _ = to_original(Detections(tile_px / v["scale"], np.ones(1), np.zeros(1, np.int64)), v)
        assert got.boxes.tolist() == [[x0 + 20.0, y0 + 40.0, x0 + 600.0, y0 + 800.0]]
    assert max(v["offset"][0] + 1280 for v in views) == 4000 and max(v["offset"][1] + 1280 for v in views) == 3000


@pytest.mark.parametrize("w,h,size,overlap", [(4000, 3000, 640, 0.2), (5152, 3968, 1280, 0.2), (1000, 701, 333, 0.1),
                                              (641, 640, 640, 0.0), (100, 3000, 64, 0.5), (64, 64, 64, 0.2)])
def test_tiles_of_a_non_multiple_size_cover_the_whole_image(w, h, size, overlap):
    from trailnb.tiles import tile_grid
    g = tile_grid(w, h, size, overlap)
    cover = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in g: cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert ((g[:, 2] - g[:, 0]) == min(size, w)).all() and ((g[:, 3] - g[:, 1]) == min(size, h)).all()  # each full size
    assert g.min() >= 0 and g[:, 2].max() == w and g[:, 3].max() == h
    xs = sorted(set(g[:, 0].tolist()))
    if len(xs) > 1: assert min(np.diff(xs)) >= 1 and max(np.diff(xs)) <= size - int(overlap * size)  # at least the overlap asked


def test_auto_rule_and_bad_settings():
    from trailnb.core import ConfigError
    from trailnb.tiles import tile_size, tile_grid
    assert tile_size(5152, 3968, 640) == 640 and tile_size(1279, 900, 640) is None and tile_size(1280, 900, 640) == 640
    assert tile_size(5152, 3968, 640, 1280) == 1280 and tile_size(1000, 800, 640, 1280) is None
    with pytest.raises(ConfigError, match="tile size"): tile_size(100, 100, 64, "small")
    with pytest.raises(ConfigError, match="tile_overlap"): tile_grid(100, 100, 64, 1.0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from trailnb.core import seed_everything
    from trailnb.models import build_detector
    seed_everything(0)
    p = tmp_path_factory.mktemp("model") / "tiny.pt"
    build_detector(ARCH, ["animal", "person", "vehicle"], weights=None, max_dim=64, device="cpu",  # few proposals: fast
                   rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_detections_per_img=20).save(p)
    return p


def _card(folder, n=3, size=(200, 150)):
    import datetime as dt
    for i in range(n):
        p = Path(folder) / "cam1" / f"IMG_{i:02d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        ex = Image.Exif()
        ex.get_ifd(0x8769)[0x9003] = (dt.datetime(2024, 5, 1, 6, 0) + dt.timedelta(seconds=2 * i)).strftime("%Y:%m:%d %H:%M:%S")
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (size[1], size[0], 3), np.uint8)).save(p, quality=90, exif=ex)


def _core(s):
    md = json.loads(s.outputs["md"].read_text())
    coco = json.loads(s.outputs["coco"].read_text())
    return md["images"], coco["images"], coco["annotations"], s.outputs["csv"].read_bytes()


class _Done:
    "The results files of a run in `out`, as `_core` reads them."
    def __init__(self, out): self.outputs = {"md": out / "results_md.json", "coco": out / "results_coco.json", "csv": out / "results.csv"}


@pytest.mark.slow
def test_infer_tiles_end_to_end_with_resume(tiny_model, tmp_path, capsys):
    "`trailnb infer --tiles 128` on a tiny card: results, sorting, tracks, Camtrap DP; a resumed run gives the same files (~35 s CPU)."
    from trailnb.cli import main
    from trailnb.core import ConfigError
    from trailnb.infer import plan_inference, run_inference, stream_predictions
    from trailnb.predict import iter_predictions, expand_items, find_inputs
    from trailnb.models import load_detector
    from trailnb.publish import run_camtrap_dp
    from trailnb.results import read_results
    src = tmp_path / "card"
    _card(src)  # 200x150 photos, a 64 px model: tiles of 128 px shrunk to 64, 2x2 of them and the whole image
    kw = dict(model=str(tiny_model), input=str(src), device="cpu", workers=0, score_thresh=0.0, sort_thresh=0.25,
              tiles="128", tile_overlap=0.25)
    assert main(["infer", str(tiny_model), str(src), "--out", str(tmp_path / "cli"), "--device", "cpu", "--workers", "0",
                 "--score-thresh", "0", "--sort-thresh", "0.25", "--tiles", "128", "--tile-overlap", "0.25",
                 "--sort", "copy", "--track"]) == 0
    capsys.readouterr()
    ref = _Done(tmp_path / "cli")
    # the results files hold exactly what the tiled loop gives, in the photos' own pixels
    det = load_detector(tiny_model, device="cpu")
    root, files = find_inputs(src)
    items = expand_items(root, files)[0][:2]
    loop = {r.file: r for r in iter_predictions(det, items, workers=0, score_thresh=0.0, tiles=128, tile_overlap=0.25)}
    classes, got, info = read_results(ref.outputs["md"])
    assert sorted(got) == [it.file for it in expand_items(root, files)[0]] and sum(len(d) for d in got.values()) > 0
    for f, d in ((f, got[f]) for f in loop):
        np.testing.assert_allclose(d.boxes, loop[f].detections.boxes, atol=0.5)  # MD JSON rounds to 4 decimals of the size
        assert (d.boxes[:, 2] <= 200).all() and (d.boxes[:, 3] <= 150).all()
    whole = {r.file: r for r in iter_predictions(det, items, workers=0, score_thresh=0.0)}
    assert any(len(whole[f].detections) != len(loop[f].detections) for f in loop)  # the tiles did something
    sorted_copies = [p for d in ("detected", "empty") for p in (tmp_path / "cli" / d).rglob("*.jpg")]
    assert len(sorted_copies) == 3 and (tmp_path / "cli" / "clips.csv").is_file()
    # interrupted after one photo, then resumed: the same files
    part = tmp_path / "part"
    plan = plan_inference(out=str(part), sort="copy", track=True, **kw)
    assert plan.signature["tiles"] == "128"
    stream_predictions(plan.detector, plan.items[:1], plan.open_log(), **plan.predict_kwargs())
    with pytest.raises(ConfigError, match="different settings.*tiles"):
        run_inference(out=str(part), resume=True, sort="copy", track=True, **{**kw, "tiles": "none"})
    s = run_inference(out=str(part), resume=True, sort="copy", track=True, **kw)
    assert s.resumed_from == 1 and s.images == 3
    assert _core(s) == _core(ref)
    # and a Camtrap DP package of the tiled run is valid
    (tmp_path / "meta.yaml").write_text(
        "contributors: [{title: A. Person, email: a.person@example.org, role: contact}]\n"
        "project: {title: tiles, samplingDesign: opportunistic, captureMethod: [activityDetection], individualAnimals: false}\n"
        "licenses: [{name: CC0-1.0, scope: data}, {name: CC-BY-4.0, scope: media}]\n")
    (tmp_path / "dep.csv").write_text("folder,deploymentID,latitude,longitude,deploymentStart,deploymentEnd\n"
                                      "cam1,cam1,0.0,0.0,2020-01-01T00:00:00+00:00,2030-01-01T00:00:00+00:00\n")
    exp = run_camtrap_dp(results=str(ref.outputs["md"]), images=str(src), out=str(tmp_path / "pkg"),
                         metadata=str(tmp_path / "meta.yaml"), deployments=str(tmp_path / "dep.csv"))
    assert exp.report.valid and exp.counts["media"] == 3


def test_infer_refuses_a_bad_tiles_setting_before_loading(tiny_model, tmp_path):
    from trailnb.core import ConfigError
    from trailnb.infer import run_inference
    _card(tmp_path / "card", n=1)
    with pytest.raises(ConfigError, match="tiles='big'"):
        run_inference(model=str(tiny_model), input=str(tmp_path / "card"), out=str(tmp_path / "o"), tiles="big")
    assert not (tmp_path / "o").exists()


def test_train_at_tile_scale_validates_with_tiles(tmp_path):
    "A torchvision run with tiles: crops of large photos in training, and validation through the tiled loop."
    from trailnb.synthetic import make_large_synthetic_dataset
    from trailnb.train import train
    import trailnb.train as tr
    data = make_large_synthetic_dataset(tmp_path / "w", n=3, size=(400, 300), animal_px=(12, 30), animals=(2, 3))
    seen = []
    real = tr.validate
    def spy(*a, **kw):
        seen.append((kw.get("tiles"), kw.get("tile_overlap")))
        return real(*a, **kw)
    tr.validate = spy
    try:
        res = train(data=str(data), split="random", val_frac=0.34, arch=ARCH, max_dim=64, epochs=1, batch_size=2, workers=0,
                    out=str(tmp_path / "runs"), name="t", tiles="128", tile_overlap=0.3, progress=False)
    finally: tr.validate = real
    assert seen == [("128", 0.3)] and "val_AP50" in res.history[-1]
    assert (tmp_path / "runs" / "t" / "best.pt").is_file()


def test_yolo_trains_at_tile_scale(tmp_path, monkeypatch):
    """A YOLO run with tiles: Ultralytics trains on tile-scale crops (every animal whole, the photo's own pixels),
    validates on inference's tile grid, trailnb's final metrics predict with the run's tiles; a bad setting is refused
    before any data is read."""
    from trailnb.core import ConfigError
    from trailnb.data import load_yolo
    from trailnb.synthetic import make_large_synthetic_dataset
    from trailnb.tiles import tile_grid
    from trailnb.train import train
    import trailnb.yolo_train as yt
    monkeypatch.setenv("TRAILNB_HOME", str(tmp_path / "home"))
    data = make_large_synthetic_dataset(tmp_path / "w", n=3, size=(400, 300), animal_px=(12, 30), animals=(2, 3))
    with pytest.raises(ConfigError, match="tiles='big'"):
        train(data=str(data), arch="yolov8n", tiles="big", epochs=1, out=str(tmp_path / "runs"), progress=False)
    assert not (tmp_path / "home" / "yolo_datasets").exists()
    seen, layouts, real_val, real_layout = [], [], yt.validate, yt.tiled_yolo_layout
    monkeypatch.setattr(yt, "validate", lambda *a, **kw: seen.append((kw.get("tiles"), kw.get("tile_overlap"))) or real_val(*a, **kw))
    monkeypatch.setattr(yt, "tiled_yolo_layout", lambda *a, **kw: layouts.append(real_layout(*a, **kw)) or layouts[-1])
    res = train(data=str(data), split="random", val_frac=0.34, arch="yolov8n", max_dim=64, epochs=1, batch_size=4, workers=0,
                out=str(tmp_path / "runs"), name="t", tiles="128", tile_overlap=0.3, progress=False)
    assert seen == [("128", 0.3)] and res.metrics.get("AP50") is not None
    assert (tmp_path / "runs" / "t" / "best.pt").is_file()
    crops = load_yolo(layouts[0])
    train_crops = [c for c in crops if c.meta["split"] == "train"]
    assert len(train_crops) == 2 * 4 * 3  # ceil(400/128) x ceil(300/128) windows for each of the 2 training photos
    assert sum(c.meta["split"] == "val" for c in crops) == len(tile_grid(400, 300, 128, 0.3))
    assert all(c.width >= 64 and c.height >= 64 for c in crops)  # a 128 px tile at the input scale (64 / 128), grown only to keep an animal whole
    assert sum(len(c.boxes) for c in train_crops) > 0


def test_tiled_results_do_not_depend_on_batch_size_or_workers(tmp_path):
    "Tiles go through the same shape batching as whole images: batch size and decoding workers change nothing."
    from trailnb.predict import InferItem, iter_predictions
    _patch_image(tmp_path / "p.png", (250, 190), (100, 50, 140, 80))
    _patch_image(tmp_path / "q.png", (190, 250), (30, 100, 75, 160))
    items = [InferItem(str(tmp_path / f), f"{f}{i}") for i in range(2) for f in ("p.png", "q.png")]
    ref = [r.detections.boxes.tolist() for r in iter_predictions(Bright(), items, workers=0, batch_size=1, tiles=64, tile_overlap=0.25)]
    got = [r.detections.boxes.tolist() for r in iter_predictions(Bright(), items, workers=2, batch_size=3, tiles=64, tile_overlap=0.25)]
    assert got == ref and ref[0] == [[100.0, 50.0, 140.0, 80.0]]


@pytest.mark.parametrize("w,h,size", [(4000, 3000, 640), (700, 500, 640), (300, 200, 640), (1000, 1000, 100)])
def test_tile_scale_crops_keep_every_animal_whole(w, h, size):
    "Training crops at tile scale: each labelled box is inside the crop or outside it, never cut; crops lie in the image."
    from trailnb.torchdata import keep_whole_crop
    rng, g = np.random.default_rng(w + size), torch.Generator().manual_seed(0)
    for _ in range(100):
        xy = rng.uniform(0, [w - 5, h - 5], (int(rng.integers(0, 12)), 2))
        b = np.c_[xy, np.minimum(xy + rng.uniform(4, size * 0.8, xy.shape), [w, h])]
        x0, y0, x1, y1 = keep_whole_crop(b, w, h, size, generator=g)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 >= min(size, w) and y1 - y0 >= min(size, h)
        inside = (b[:, 0] >= x0) & (b[:, 1] >= y0) & (b[:, 2] <= x1) & (b[:, 3] <= y1)
        apart = (b[:, 2] <= x0) | (b[:, 0] >= x1) | (b[:, 3] <= y0) | (b[:, 1] >= y1)
        assert (inside | apart).all()
