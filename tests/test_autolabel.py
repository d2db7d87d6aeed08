"""Auto-labelling end to end on real camera-trap photos with tiny random-weight OWLv2 and SAM2 models.

The models are built from configs (random weights, a CLIP tokenizer over a toy vocabulary), saved with
`save_pretrained` and loaded back through trailnb's loader: no weights can be downloaded here. Random models
give random boxes, so the tests label with threshold 0 and `max_dets`: they test the plumbing (scaling,
clipping, masks, the COCO file, resume, training on it), not the labels.
"""
import json
import numpy as np
import pytest
import torch
from trailnb.autolabel import (AutolabelConfig, OwlLabeller, autolabel, load_hf_model, make_tiny_owlv2,
                               make_tiny_sam2, mask_to_rle, rle_to_mask)
from trailnb.core import ConfigError, ModelError
from trailnb.data import check_data, decode_image, load_coco

# five photos of five sizes, 1280x1024 up to 5152x3968
PHOTOS = ["channel_islands_camera_traps_loc-h500ee05127658_007_194.jpg",  # 1920x1080
          "island_conservation_camera_traps_dominicanrepublic_camara04_cam0425abril2015_dominicanrepublic_cam0425abril2015_20130824_043601_sunp5152.jpg",  # 1280x1024
          "snapshot_camdeboo_CDB_S1_A05_A05_R2_CDB_S1_A05_R2_IMAG0084.JPG",  # 2592x2000
          "snapshot_kruger_KRU_S1_25_25_R1_KRU_S1_25_R1_IMAG0012.JPG",  # 5152x3968
          "island_conservation_camera_traps_palau_cam10a_cam10a12122018_palau_cam10a12122018_20181108_174532_rcnx1035.jpg"]  # 2048x1440
PROMPTS = {"deer": ["deer", "a deer"], "fox": ["fox"], "boar": ["wild boar"]}
KW = dict(threshold=0.0, max_dets=3, workers=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return make_tiny_owlv2(d / "owlv2"), make_tiny_sam2(d / "sam2")


@pytest.fixture(scope="module")
def photos(sample_data):
    return [sample_data / "camtrap31" / "images" / p for p in PHOTOS]


@pytest.fixture(scope="module")
def labelled(models, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "labels.json"
    summary = autolabel(photos, PROMPTS, models[0], out, masks=models[1], **KW)
    return out, summary


def test_labels_lie_inside_their_images_and_pass_check_data(labelled, photos):
    out, s = labelled
    assert (s.images, s.failures) == (5, [])
    d = json.loads(out.read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in d["images"]}
    assert sorted(sizes.values()) == [(1280, 1024), (1920, 1080), (2048, 1440), (2592, 2000), (5152, 3968)]
    assert len(d["annotations"]) == 15  # max_dets=3 on each of the five photos
    for a in d["annotations"]:
        w, h = sizes[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3, (a, w, h)
        cls = d["categories"][a["category_id"] - 1]["name"]
        assert a["prompt"] in PROMPTS[cls] and 0 <= a["score"] <= 1
    info = d["info"]["autolabel"]
    assert info["prompts"] == PROMPTS and info["thresholds"] == {"deer": 0.0, "fox": 0.0, "boar": 0.0}
    assert info["labeller"] == "owlv2" and info["model"].endswith("owlv2") and info["masks"].endswith("sam2")
    report = check_data(out)
    assert report.problems == [] and report.stats["boxes"] == 15
    ds = load_coco(out)  # the images are found through info.trailnb_root, wherever the labels file is
    assert all(r.path.is_file() for r in ds.images)
    from trailnb.evaluate import load_predictions  # what `review --data labels.json --predictions labels.json` reads
    preds = load_predictions(out, ds, gt_file=out)
    for r, p in zip(ds.images, preds):
        np.testing.assert_array_equal(p.boxes, r.boxes); np.testing.assert_array_equal(p.labels, r.labels)
    np.testing.assert_allclose(sorted(v for p in preds for v in p.scores), sorted(a["score"] for a in d["annotations"]),
                               rtol=0, atol=1e-7)  # Detections keep float32 scores


def test_masks_round_trip_through_rle_exactly(labelled):
    d = json.loads(labelled[0].read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in d["images"]}
    areas = []
    for a in d["annotations"]:
        m = rle_to_mask(a["segmentation"])
        assert m.shape == sizes[a["image_id"]]  # masks at the original image size
        assert mask_to_rle(m) == a["segmentation"]  # decode + encode gives back the very same RLE
        areas.append(int(m.sum()))
    from pycocotools import mask as mu
    assert areas == [int(mu.area({**a["segmentation"], "counts": a["segmentation"]["counts"].encode()})) for a in d["annotations"]]
    m = np.random.default_rng(0).random((97, 131)) > 0.6  # a ragged mask: RLE is exact, not approximately
    assert (rle_to_mask(mask_to_rle(m)) == m).all()


def test_owlv2_scaling_matches_a_hand_computed_case(models, photos):
    "Boxes from the labeller equal boxes computed by hand from OWLv2's raw output for a 1920x1080 photo."
    owl = OwlLabeller(models[0], device="cpu")
    img, s, (w, h) = decode_image(photos[0], max_dim=owl.max_dim)
    assert (w, h) == (1920, 1080) and img.size == (64, 36)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    (boxes, scores), = owl.candidates([t], [(w, h)], ["deer"])
    inp = owl.processor(text=[["deer"]], images=[t], return_tensors="pt")
    with torch.inference_mode(): raw = owl.model(**inp).pred_boxes[0].numpy()  # normalised cx, cy, w, h on the padded square
    cx, cy, bw, bh = raw.T.astype(np.float64)
    side = 1920  # OWLv2 pads 1920x1080 to a 1920x1920 square: one unit is 1920 px in x and in y
    hand = np.stack([np.clip((cx - bw / 2) * side, 0, 1920), np.clip((cy - bh / 2) * side, 0, 1080),
                     np.clip((cx + bw / 2) * side, 0, 1920), np.clip((cy + bh / 2) * side, 0, 1080)], 1)
    np.testing.assert_allclose(boxes, hand, rtol=0, atol=1e-3)  # float32 vs float64 of pixel values up to 1920
    assert (boxes[:, 3] <= 1080).all() and (hand[:, 3] == 1080).any()  # some boxes reached into the padding: clipped


class Interrupting:
    "A labeller that stops (as Ctrl-C would) at its `stop_at`-th call, and counts the images it labelled."
    def __init__(self, inner, stop_at=None): self.inner, self.stop_at, self.calls, self.labelled = inner, stop_at, 0, 0
    def __getattr__(self, k): return getattr(self.inner, k)
    def candidates(self, images, sizes, queries):
        self.calls += 1
        if self.calls == self.stop_at: raise KeyboardInterrupt
        self.labelled += len(images)
        return self.inner.candidates(images, sizes, queries)


def test_interrupted_run_resumes_and_labels_every_image_once(models, photos, tmp_path):
    owl = OwlLabeller(models[0], device="cpu")
    kw = dict(KW, batch_size=2, checkpoint_every=1)
    full = autolabel(photos, PROMPTS, owl, tmp_path / "full.json", **kw)
    first = Interrupting(owl, stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        autolabel(photos, PROMPTS, first, tmp_path / "cut.json", **kw)
    assert first.labelled == 2 and not (tmp_path / "cut.json").exists()
    assert len((tmp_path / "cut.checkpoint.jsonl").read_text().splitlines()) == 1 + 2  # signature + two images
    with pytest.raises(ConfigError, match="different settings"):  # resuming with other settings is refused
        autolabel(photos, PROMPTS, owl, tmp_path / "cut.json", resume=True, **{**kw, "threshold": 0.5})
    second = Interrupting(owl)
    resumed = autolabel(photos, PROMPTS, second, tmp_path / "cut.json", resume=True, **kw)
    assert second.labelled == 3 and first.labelled + second.labelled == len(photos)  # each image labelled once
    assert resumed.resumed_from == 2 and not (tmp_path / "cut.checkpoint.jsonl").exists()
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("full.json", "cut.json"))
    assert a["images"] == b["images"] and a["annotations"] == b["annotations"]
    with pytest.raises(ConfigError, match="never replaced"):  # a finished labels file is never relabelled over
        autolabel(photos, PROMPTS, owl, tmp_path / "full.json", resume=True, **kw)


def test_training_takes_the_labels_as_they_are(labelled, tmp_path):
    from trailnb.train import train
    res = train(data=str(labelled[0]), arch="fasterrcnn_mobilenet_v3_large_320_fpn", max_dim=64, epochs=1,
                batch_size=5, split="none", workers=0, out=str(tmp_path), name="r", progress=False)
    assert len(res.history) == 1 and np.isfinite(res.history[0]["loss"])
    assert res.detector.classes == list(PROMPTS)


def test_a_trailnb_detector_is_a_labeller_with_the_same_output(photos, tmp_path):
    from trailnb.models import build_detector
    ck = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["animal", "person", "vehicle"], max_dim=64,
                        device="cpu").save(tmp_path / "md.pt")
    s = autolabel(photos[:2], {"animal": ["animal"]}, ck, tmp_path / "md.json", **KW)
    d = json.loads((tmp_path / "md.json").read_text())
    assert s.images == 2 and [c["name"] for c in d["categories"]] == ["animal"]
    assert d["info"]["autolabel"]["labeller"] == "detector" and all(a["prompt"] == "animal" for a in d["annotations"])
    assert check_data(tmp_path / "md.json").problems == []
    with pytest.raises(ConfigError, match="its class names"):
        autolabel(photos[:1], ["deer"], ck, tmp_path / "bad.json", **KW)


def test_missing_or_wrong_model_folder_says_how_to_fill_it(models, tmp_path):
    with pytest.raises(ModelError) as e:
        load_hf_model(tmp_path / "nowhere", "owlv2")
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "hf download google/owlv2-base-patch16-ensemble --local-dir" in msg
    assert "save_pretrained" in msg
    (tmp_path / "half").mkdir(); (tmp_path / "half" / "config.json").write_text(json.dumps({"model_type": "sam2"}))
    with pytest.raises(ModelError, match="Cannot load the sam2 model"):
        load_hf_model(tmp_path / "half", "sam2")


def test_command_line(models, photos, tmp_path):
    "The `trailnb autolabel` command: the exact COMMANDS entry the CLI gets (see trailnb.cli)."
    from trailnb.cli import Command
    cmd = Command("label images from text prompts (OWLv2) or with a detector, masks with SAM2; write a COCO dataset",
                  "trailnb.autolabel:run_autolabel", config="trailnb.autolabel:AutolabelConfig", positional=("images",))
    lst = tmp_path / "photos.txt"; lst.write_text("\n".join(map(str, photos[:2])) + "\n")
    s = cmd.run("autolabel", [str(lst), "--prompts", "deer=deer,a deer", "fox", "--model", str(models[0]),
                              "--out", str(tmp_path / "cli.json"), "--threshold", "0", "--class-thresh", "fox=0.9",
                              "--max-dets", "2", "--workers", "0", "--device", "cpu"])
    assert s.images == 2
    info = json.loads((tmp_path / "cli.json").read_text())["info"]["autolabel"]
    assert info["prompts"] == {"deer": ["deer", "a deer"], "fox": ["fox"]} and info["thresholds"]["fox"] == 0.9
    assert {f.name for f in __import__("dataclasses").fields(AutolabelConfig)} >= {"images", "prompts", "model", "out", "masks"}


def test_autolabel_defaults_are_the_configs():
    "autolabel's keyword defaults (and those of its widget and steps) are AutolabelConfig's: each setting defined once."
    import dataclasses, inspect
    from trailnb.autolabel import autolabel_widget, label_items, select_labels
    from trailnb.core import field_default
    defaults = {f.name: field_default(f) for f in dataclasses.fields(AutolabelConfig)}
    for fn in (autolabel, autolabel_widget, label_items, select_labels):
        sig = inspect.signature(fn).parameters
        shared = {k for k in sig if k in defaults and sig[k].default is not inspect.Parameter.empty} - {"class_thresh"}
        assert shared and {k: sig[k].default for k in shared} == {k: defaults[k] for k in shared}, fn.__name__
    # class_thresh: None in Python (no per-class thresholds) is the command line's empty list
    assert inspect.signature(autolabel).parameters["class_thresh"].default is None and AutolabelConfig().class_thresh == ()
