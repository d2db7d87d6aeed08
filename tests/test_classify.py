"""Species on crops (`trailnb classify`, `trailnb infer --classifier`): MegaDetector's own validator accepts the
classified files, every detection at or above the threshold has a classification, a resumed run classifies nothing
twice, a burst's vote is the hand-computed one, the CSV gains the species, sorting by species, and evaluation of
the species of each animal photo."""
import csv, json, shutil
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

SYN = ["deer", "fox", "bird"]  # the synthetic world's classes (shapes and colours)


def _validate(path):
    pytest.importorskip("megadetector", reason="install megadetector-utils (--no-deps) + jsonpickle for its validator")
    from megadetector.postprocessing.validate_batch_results import validate_batch_results
    return validate_batch_results(str(path))["validation_results"]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    "A tiny from-scratch classifier of the synthetic world's classes, saved (its answers are noise: plumbing only)."
    from trailnb.classifier import build_classifier
    from trailnb.core import seed_everything
    seed_everything(0)
    p = tmp_path_factory.mktemp("classifier") / "cls.pt"
    build_classifier("mobilenet_v3_small", SYN, input_size=32, weights=None, device="cpu").save(p)
    return p


class _ColourClassifier:
    "A stand-in classifier for scenes of filled boxes in class colours: the class whose colour is nearest the crop's centre."
    input_size, checkpoint_info = 32, {}

    def __init__(self, classes): self.classes = list(classes)

    def predict(self, crops):
        from trailnb.core import class_color
        out = []
        for c in crops:
            a = np.asarray(c.convert("RGB"), np.int64)
            px = a[a.shape[0] // 2, a.shape[1] // 2]
            d = np.array([np.abs(px - class_color(k)).sum() for k in range(len(self.classes))], float)
            p = np.exp(-d / 40.0)
            out.append(p / p.sum())
        return np.array(out).reshape(-1, len(self.classes))


def _md_lines(ckpt): return [json.loads(l) for l in Path(ckpt).read_text().splitlines()[1:]]


def test_camtrap31_megadetector_results_classified_validated_and_resumed(sample_data, tiny_classifier, tmp_path, capsys):
    """MegaDetector v5's published results on camtrap31, classified with `trailnb classify`: the output validates
    with MegaDetector's validator, every detection at or above the threshold (MegaDetector's 0.2: the file states
    none) has a ranked classification and no other one has; the input is untouched; `--resume` after a finished run
    classifies nothing, and after an interrupted one only what was missing, to the same file."""
    from trailnb.classify import classify_results
    from trailnb.cli import main
    src = sample_data / "camtrap31" / "megadetector_v5_results.json"
    before = src.read_bytes()
    out = tmp_path / "classified.json"
    args = ["classify", str(src), "--images", str(sample_data / "camtrap31" / "images"), "--classifier", str(tiny_classifier),
            "--out", str(out), "--device", "cpu", "--csv"]
    assert main(args) == 0
    assert "crops classified" in capsys.readouterr().out
    assert src.read_bytes() == before
    v = _validate(out)
    assert v["errors"] == [], v
    d = json.loads(out.read_text())
    assert d["classification_categories"] == {"0": "deer", "1": "fox", "2": "bird"}
    assert d["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    dets = [x for e in d["images"] for x in e.get("detections") or []]
    above = [x for x in dets if x["conf"] >= 0.2]
    assert len(above) >= 10 and all(len(x["classifications"]) == 3 for x in above)
    assert all("classifications" not in x for x in dets if x["conf"] < 0.2)
    for x in above:
        confs = [c for _, c in x["classifications"]]
        assert confs == sorted(confs, reverse=True) and all(0 <= c <= 1 for c in confs)
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert sum(bool(r["species"]) for r in rows) == len(above)
    # a finished run, resumed: nothing classified again
    again = classify_results(results=src, images=sample_data / "camtrap31" / "images", classifier=tiny_classifier, out=out,
                             device="cpu", resume=True)
    assert again.classified == 0 and again.resumed == len({e["file"] for e in d["images"] if any(x["conf"] >= 0.2 for x in e.get("detections") or [])})
    assert json.loads(out.read_text())["images"] == d["images"]
    # an interrupted run (the checkpoint cut after its first two photos), resumed: only the rest, same answers
    ck = again.outputs["checkpoint"]
    lines = ck.read_text().splitlines(keepends=True)
    ck.write_text("".join(lines[:3]) + lines[3][:20])  # and a partial line, as a kill leaves
    kept = sum(sum(1 for c in r["classifications"] if c) for r in map(json.loads, lines[1:3]))
    third = classify_results(results=src, images=sample_data / "camtrap31" / "images", classifier=tiny_classifier, out=out,
                             device="cpu", resume=True)
    assert third.resumed == 2 and third.classified == len(above) - kept
    got = json.loads(out.read_text())["images"]
    assert [[x.get("classifications") for x in e.get("detections") or []] for e in got] == \
           [[x.get("classifications") for x in e.get("detections") or []] for e in d["images"]]


def test_refuses_to_overwrite_input_or_earlier_output(tmp_path, tiny_classifier):
    from trailnb.classify import classify_results
    from trailnb.core import ConfigError
    from trailnb.results import ImageResult, write_results
    from trailnb.core import Detections
    (tmp_path / "card").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "card" / "a.jpg")
    md = write_results([ImageResult("a.jpg", 64, 48, Detections(np.array([[5, 5, 30, 30.]]), [0.9], [0]))], ["animal"], tmp_path, ["md"])["md"]
    with pytest.raises(ConfigError, match="never overwritten"):
        classify_results(results=md, images=tmp_path / "card", classifier=tiny_classifier, out=md)
    classify_results(results=md, images=tmp_path / "card", classifier=tiny_classifier, out=tmp_path / "c.json", device="cpu")
    with pytest.raises(ConfigError, match="resume"):
        classify_results(results=md, images=tmp_path / "card", classifier=tiny_classifier, out=tmp_path / "c.json", device="cpu")


def test_missing_photo_is_logged_skipped_and_retried_on_resume(tmp_path, tiny_classifier, caplog):
    "A photo that is gone: its detections are kept unclassified, the others classified, and a resume tries it again."
    from trailnb.classify import classify_results
    from trailnb.core import Detections
    from trailnb.results import ImageResult, write_results
    (tmp_path / "card").mkdir()
    for n in ("a.jpg", "b.jpg"): Image.new("RGB", (64, 48), (90, 40, 20)).save(tmp_path / "card" / n)
    recs = [ImageResult(n, 64, 48, Detections(np.array([[5, 5, 30, 30.]]), [0.9], [0])) for n in ("a.jpg", "b.jpg", "gone.jpg")]
    md = write_results(recs, ["animal"], tmp_path, ["md"])["md"]
    s = classify_results(results=md, images=tmp_path / "card", classifier=tiny_classifier, out=tmp_path / "c.json", device="cpu")
    assert s.classified == 2 and [f for f, _ in s.failures] == ["gone.jpg"] and "gone.jpg" in caplog.text
    d = {e["file"]: e for e in json.loads((tmp_path / "c.json").read_text())["images"]}
    assert "classifications" not in d["gone.jpg"]["detections"][0] and d["gone.jpg"]["detections"][0]["conf"] == 0.9
    Image.new("RGB", (64, 48)).save(tmp_path / "card" / "gone.jpg")  # put back: a resume classifies it, and only it
    s2 = classify_results(results=md, images=tmp_path / "card", classifier=tiny_classifier, out=tmp_path / "c.json", device="cpu", resume=True)
    assert (s2.classified, s2.resumed, s2.failures) == (1, 2, [])


def test_burst_vote_equals_hand_computed(tmp_path, monkeypatch):
    """A burst of three photos of one animal (EXIF times 2 s apart), classified by a stand-in whose answers are set per
    photo: with vote=burst every crop carries the burst's confidence-weighted vote, computed here by hand, and keeps
    its own answer in crop_classifications."""
    import trailnb.classify
    from trailnb.classify import classify_results
    from trailnb.core import Detections
    from trailnb.results import ImageResult, write_results, load_image_results
    answers = {0: [0.6, 0.3, 0.1], 1: [0.2, 0.7, 0.1], 2: [0.5, 0.1, 0.4]}  # per photo: deer, fox, bird
    scores = [0.9, 0.4, 0.7]

    class _Set:
        classes, input_size, checkpoint_info = SYN, 32, {}
        def predict(self, crops): return np.array([answers[int(np.asarray(c)[0, 0, 0]) // 50] for c in crops])

    monkeypatch.setattr(trailnb.classify, "load_classifier", lambda path, device="auto": _Set())
    card = tmp_path / "card" / "cam1"
    card.mkdir(parents=True)
    recs = []
    for k in range(3):
        ex = Image.Exif()
        ex[0x0132] = f"2024:05:01 06:00:0{2 * k}"
        Image.new("RGB", (80, 60), (50 * k + 10,) * 3).save(card / f"IMG_{k}.jpg", exif=ex, quality=100)
        recs.append(ImageResult(f"cam1/IMG_{k}.jpg", 80, 60, Detections(np.array([[10, 10, 40, 40.]]), [scores[k]], [0])))
    md = write_results(recs, ["animal"], tmp_path, ["md"])["md"]
    (tmp_path / "cls.pt").write_bytes(b"stand-in")
    classify_results(results=md, images=tmp_path / "card", classifier=tmp_path / "cls.pt", out=tmp_path / "v.json", vote="burst")
    w = sum(scores)
    hand = sorted(((c, sum(s * answers[k][c] for k, s in enumerate(scores)) / w) for c in range(3)), key=lambda t: -t[1])
    _, res, _ = load_image_results(tmp_path / "v.json")
    for k, r in enumerate(res):
        assert [i for i, _ in r.classifications[0]] == [c for c, _ in hand]
        np.testing.assert_allclose([c for _, c in r.classifications[0]], [c for _, c in hand], atol=1e-4)
        assert r.crop_classifications[0][0] == (int(np.argmax(answers[k])), pytest.approx(max(answers[k]), abs=1e-4))
    assert _validate(tmp_path / "v.json")["errors"] == []


def test_classify_help():
    from trailnb.cli import main
    with pytest.raises(SystemExit) as e: main(["classify", "--help"])
    assert e.value.code == 0


def test_classify_help_text(capsys):
    from trailnb.cli import main
    with pytest.raises(SystemExit): main(["classify", "--help"])
    out = capsys.readouterr().out
    for flag in ("--images", "--classifier", "--out", "--resume", "--vote", "--sort-thresh", "--only"):
        assert flag in out


def _card(root):
    "Two bursts of photos with filled boxes in class colours (deer, then fox), and one empty photo."
    from trailnb.core import class_color
    for cam, label in (("cam1", 0), ("cam2", 1)):
        for k in range(2):
            img = np.full((120, 160, 3), 30, np.uint8)
            img[30:80, 40 + 10 * k:100 + 10 * k] = class_color(label)
            ex = Image.Exif()
            ex[0x0132] = f"2024:05:01 06:00:0{2 * k}"
            p = Path(root) / cam / f"IMG_{k}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p, quality=95, exif=ex)
    Image.fromarray(np.full((120, 160, 3), 30, np.uint8)).save(Path(root) / "cam1" / "IMG_9.jpg")


def test_infer_with_classifier_end_to_end(tmp_path, monkeypatch):
    """`run_inference(classifier=..., sort="copy", by_species=True, track=True)` on a tiny synthetic card with a
    one-class ("animal") detector: species in MegaDetector's format (validated), the CSV's species columns, photos
    sorted into detected/<species>/, the classify checkpoint gone at the end."""
    import trailnb.infer, trailnb.classify
    from trailnb.infer import run_inference
    from test_infer import _BlobDetector
    monkeypatch.setattr(trailnb.infer, "load_detector", lambda path, device="auto": _BlobDetector(["animal"]))
    monkeypatch.setattr(trailnb.classify, "load_classifier", lambda path, device="auto": _ColourClassifier(["deer", "fox"]))
    _card(tmp_path / "card")
    for n in ("det.pt", "cls.pt"): (tmp_path / n).write_bytes(b"stand-in")
    out = tmp_path / "out"
    s = run_inference(model=str(tmp_path / "det.pt"), input=str(tmp_path / "card"), out=str(out), workers=0, device="cpu",
                      classifier=str(tmp_path / "cls.pt"), sort="copy", by_species=True, track=True, engine="torch")
    assert _validate(s.outputs["md"])["errors"] == []
    md = json.loads(s.outputs["md"].read_text())
    assert md["classification_categories"] == {"0": "deer", "1": "fox"} and md["info"]["classifier"] == "cls.pt"
    top = {e["file"]: [x["classifications"][0][0] for x in e["detections"]] for e in md["images"]}
    assert top == {"cam1/IMG_0.jpg": ["0"], "cam1/IMG_1.jpg": ["0"], "cam1/IMG_9.jpg": [], "cam2/IMG_0.jpg": ["1"], "cam2/IMG_1.jpg": ["1"]}
    rows = list(csv.DictReader(s.outputs["csv"].open()))
    assert [(r["file"], r["class"], r["species"]) for r in rows if r["class"]] == [
        ("cam1/IMG_0.jpg", "animal", "deer"), ("cam1/IMG_1.jpg", "animal", "deer"), ("cam2/IMG_0.jpg", "animal", "fox"), ("cam2/IMG_1.jpg", "animal", "fox")]
    assert all(float(r["species_score"]) > 0.5 for r in rows if r["class"])
    placed = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg") if p.relative_to(out).parts[0] in ("detected", "empty"))
    assert placed == ["detected/deer/cam1/IMG_0.jpg", "detected/deer/cam1/IMG_1.jpg", "detected/fox/cam2/IMG_0.jpg",
                      "detected/fox/cam2/IMG_1.jpg", "empty/cam1/IMG_9.jpg"]
    assert not (out / "checkpoint.classify.jsonl").exists()


def test_sort_by_species_from_a_classified_file(tmp_path):
    "`trailnb sort --by-species` puts each photo in detected/<species>/ by its detections' top species; a file without species is refused."
    from trailnb.cli import main
    from trailnb.core import Detections
    from trailnb.results import ImageResult, write_results
    _card(tmp_path / "card")
    box = Detections(np.array([[40, 30, 100, 80.]]), [0.8], [0])
    recs = [ImageResult("cam1/IMG_0.jpg", 160, 120, box, classifications=[[(1, 0.9), (0, 0.1)]]),
            ImageResult("cam1/IMG_1.jpg", 160, 120, box, classifications=[[(0, 0.7), (1, 0.3)]]),
            ImageResult("cam2/IMG_0.jpg", 160, 120, box, classifications=[[]]),  # below the classification threshold
            ImageResult("cam2/IMG_1.jpg", 160, 120, Detections(np.zeros((0, 4)), [], []), classifications=[])]
    md = write_results(recs, ["animal"], tmp_path, ["md"], species=["deer", "fox"])["md"]
    assert main(["sort", str(md), "--images", str(tmp_path / "card"), "--out", str(tmp_path / "s"), "--by-species"]) == 0
    placed = sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*.jpg"))
    assert placed == ["detected/deer/cam1/IMG_1.jpg", "detected/fox/cam1/IMG_0.jpg", "empty/cam2/IMG_0.jpg", "empty/cam2/IMG_1.jpg"]
    plain = write_results(recs, ["animal"], tmp_path / "plain", ["md"])["md"]
    assert main(["sort", str(plain), "--images", str(tmp_path / "card"), "--out", str(tmp_path / "s2"), "--by-species"]) == 2


def test_results_edge_round_trips_classifications(tmp_path):
    "classifications and crop_classifications through MD JSON and the checkpoint's dicts; species columns in the CSV only when asked."
    from trailnb.core import Detections
    from trailnb.results import ImageResult, load_image_results, write_results, CSV_COLUMNS
    r = ImageResult("a.jpg", 100, 80, Detections(np.array([[0, 0, 10, 10], [5, 5, 50, 50.]]), [0.9, 0.1], [0, 0]),
                    classifications=[[(1, 0.7), (0, 0.2)], []], crop_classifications=[[(0, 0.6), (1, 0.4)], []])
    assert ImageResult.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()
    assert ImageResult.from_dict(json.loads(json.dumps(r.to_dict()))).classifications == r.classifications
    p = write_results([r], ["animal"], tmp_path, ["md", "csv"], species=["deer", "fox"])
    _, (back,), info = load_image_results(p["md"])
    assert back.classifications == [[(1, 0.7), (0, 0.2)], []] and back.crop_classifications == [[(0, 0.6), (1, 0.4)], []]
    assert info["species_classes"] == ["deer", "fox"]
    classes, (sp,), _ = load_image_results(p["md"], species=True)
    assert classes == ["deer", "fox"] and sp.detections.labels.tolist() == [1] and sp.detections.scores.tolist() == pytest.approx([0.9])
    assert next(csv.reader(p["csv"].open()))[-2:] == ["species", "species_score"]
    p2 = write_results([r], ["animal"], tmp_path / "plain", ["csv"])
    assert next(csv.reader(p2["csv"].open())) == CSV_COLUMNS


def test_evaluate_species_of_each_animal_photo(tmp_path):
    """`trailnb evaluate --predictions CLASSIFIED.json` against species labels reads the species (not the detector's
    "animal"), and the image-level view gains the species of each animal photo: all but the one called wrong."""
    from trailnb.core import Detections
    from trailnb.data import load_coco
    from trailnb.evaluate import run_evaluation
    from trailnb.results import ImageResult, write_results
    from trailnb.synthetic import make_synthetic_dataset
    gt = make_synthetic_dataset(tmp_path / "syn", n=12, size=(128, 96), seed=3)
    ds = load_coco(gt)
    target = next(r for r in ds.images if len(r.labels) == 1)
    recs = []
    for r in ds.images:
        cl = [[(int(l), 0.9)] for l in r.labels]
        if r is target: cl = [[((int(l) + 1) % 3, 0.9)] for l in r.labels]  # the one animal of this photo called the wrong species
        recs.append(ImageResult(r.file_name, r.width, r.height, Detections(r.boxes, np.full(len(r.labels), 0.8), np.zeros(len(r.labels), int)),
                                classifications=cl))
    md = write_results(recs, ["animal"], tmp_path, ["md"], species=list(ds.classes))["md"]
    rep = run_evaluation(data=str(gt), predictions=str(md))
    il = rep.image_level
    n = sum(len(r.labels) > 0 for r in ds.images)
    assert il["species_photos"] == n and il["species_missed"] == 0
    assert il["species_right"] == n - 1
    assert "Species of each animal photo" in rep.summary()
    assert rep.metrics["AP50"] > 0.5  # box-level metrics are on the species too


def test_unlocated_photo_of_a_megadetector_file_keeps_its_detections(tmp_path, tiny_classifier):
    """A MegaDetector file states no image sizes; a photo of it that is not under --images cannot be placed or cropped:
    its entry is written as the input had it (detections kept, unclassified), the others are classified."""
    from trailnb.classify import classify_results
    (tmp_path / "card").mkdir()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(tmp_path / "card" / "a.jpg")
    det = lambda c: {"category": "1", "conf": c, "bbox": [0.1, 0.1, 0.3, 0.4]}
    md = {"info": {"format_version": "1.1", "detector": "md_v5a.0.0.pt"}, "detection_categories": {"1": "animal", "2": "person"},
          "images": [{"file": "a.jpg", "max_detection_conf": 0.9, "detections": [det(0.9)]},
                     {"file": "gone.jpg", "max_detection_conf": 0.8, "detections": [det(0.8)]}]}
    (tmp_path / "md.json").write_text(json.dumps(md))
    s = classify_results(results=tmp_path / "md.json", images=tmp_path / "card", classifier=tiny_classifier, out=tmp_path / "c.json", device="cpu")
    assert s.classified == 1
    got = {e["file"]: e for e in json.loads((tmp_path / "c.json").read_text())["images"]}
    assert got["gone.jpg"] == md["images"][1]
    assert len(got["a.jpg"]["detections"][0]["classifications"]) == 3
    assert _validate(tmp_path / "c.json")["errors"] == []
