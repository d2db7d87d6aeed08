"""People's privacy (`--blur person`) through the real commands: in every image trailnb writes (sorted copies,
drawn copies, track stills, track videos) the pixels inside a person's box lose their detail and a planted
face-sized checker cannot be read back; pixels outside every person box are unchanged (a PNG: every pixel
outside the box; a JPEG, edited in its DCT blocks: every pixel farther than one pixel from the box grown to the
file's MCU grid, `privacy.blur_jpeg`); the originals' bytes are unchanged; the EXIF thumbnail (a preview of the
unblurred photo) is emptied; links with blur are refused; Camtrap DP marks media with people `filePublic: false`.

The bounds: high-frequency energy (`privacy.hf_energy`) inside the box below `HF_MAX` of the original's, and the
checker's correlation with what is written in its place below `CORR_MAX` (1 would be the checker itself)."""
import csv, hashlib, io, json
from pathlib import Path
import numpy as np
import pytest
from PIL import Image, ImageOps
from trailnb.cli import main
from trailnb.core import Detections
from trailnb.privacy import _BACK, hf_energy, pattern_correlation
from trailnb.results import ImageResult, write_results

CLASSES = ["animal", "person", "vehicle"]  # MegaDetector's categories
GREY, ORANGE = (150, 150, 150), (230, 120, 20)  # a person's colour, an animal's
HF_MAX, CORR_MAX = 0.05, 0.2  # photos (written as images): detail left inside a person box, checker recovery
HF_MAX_VIDEO, CORR_MAX_VIDEO = 0.15, 0.3  # video frames: the mp4 codec adds its own block noise to the blurred box


def _scene(w=320, h=240, seed=0):
    "A textured scene (a smooth random field, so a video codec keeps it), HxWx3 uint8."
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(30, 220, (h // 8, w // 8, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(low).copy()


def _person(a, box):
    "Paint a grey person at `box` whose 'face' (24 px, 16 px below its top) is a 4-pixel black-and-white checker."
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = GREY
    yy, xx = np.mgrid[0:24, 0:24]
    cx = (x0 + x1) // 2 - 12
    a[y0 + 16:y0 + 40, cx:cx + 24] = (((yy // 4 + xx // 4) % 2) * 255)[..., None]
    return (slice(y0 + 16, y0 + 40), slice(cx, cx + 24))  # the face


def _save(a, path, t=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    ex = Image.Exif()
    if t: ex[0x0132] = t
    Image.fromarray(a).save(path, quality=95, exif=ex) if path.suffix == ".jpg" else Image.fromarray(a).save(path)


def _card(root):
    """Photos: a burst of two (a person walking, and a deer), one PNG with a person, one deer alone;
    `{file: (person box or None, face slices or None, animal box)}`."""
    truth = {}
    for k, (px, t) in enumerate([(180, "2024:05:01 06:00:00"), (196, "2024:05:01 06:00:02")]):
        a, pbox, abox = _scene(seed=k), (px, 40, px + 60, 200), (20, 150, 110, 210)
        face = _person(a, pbox)
        a[abox[1]:abox[3], abox[0]:abox[2]] = ORANGE
        _save(a, root / "cam1" / f"IMG_{k + 1:04d}.jpg", t)
        truth[f"cam1/IMG_{k + 1:04d}.jpg"] = (pbox, face, abox)
    a, pbox = _scene(seed=5), (100, 60, 170, 230)
    truth["cam2/IMG_0001.png"] = (pbox, _person(a, pbox), None)
    _save(a, root / "cam2" / "IMG_0001.png")
    a, abox = _scene(seed=6), (200, 100, 300, 180)
    a[abox[1]:abox[3], abox[0]:abox[2]] = ORANGE
    _save(a, root / "cam3" / "IMG_0001.jpg", "2024:05:01 09:00:00")
    truth["cam3/IMG_0001.jpg"] = (None, None, abox)
    return truth


def _results_file(truth, out):
    "The MegaDetector batch file a detector would write for the card (person 0.9, animal 0.8)."
    res = []
    for f, (pbox, _, abox) in truth.items():
        boxes, labels = [b for b in (pbox, abox) if b], [l for b, l in ((pbox, 1), (abox, 0)) if b]
        res.append(ImageResult(f, 320, 240, Detections(boxes, [0.9 if l else 0.8 for l in labels], labels)))
    return write_results(res, CLASSES, out, ("md",), typical_thresh=0.5)["md"]


def _sha(root): return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
def _pixels(p): return np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"), np.int16)


def _inside(shape, box, grow=0):
    m = np.zeros(shape[:2], bool)
    x0, y0, x1, y1 = box
    m[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = True
    return m


def _mcu(shape, box, pad=2):
    "The box grown to the 16-pixel JPEG block grid (4:2:0 MCUs), plus `pad` pixels (chroma upsampling reads a neighbour)."
    x0, y0, x1, y1 = box
    return _inside(shape, (x0 // 16 * 16, y0 // 16 * 16, -(-x1 // 16) * 16, -(-y1 // 16) * 16), pad)


def _assert_hidden(orig, written, box, face, hf_max=HF_MAX, corr_max=CORR_MAX, shrink=3):
    "Inside `box` (less `shrink` px for a drawn outline): detail gone and the face checker not recoverable."
    x0, y0, x1, y1 = box
    inner = (slice(y0 + shrink, y1 - shrink), slice(x0 + shrink, x1 - shrink))
    e0, e1 = hf_energy(orig[inner]), hf_energy(written[inner])
    r = pattern_correlation(orig[face], written[face])
    assert e1 < hf_max * e0, (e0, e1)
    assert abs(r) < corr_max, r
    return e1 / e0, r


def _sort(results, card, out, *flags):
    return main(["sort", str(results), "--images", str(card), "--out", str(out), "--sort-thresh", "0.5", *flags])


def test_sort_copy_draw_blur_person_through_the_command(tmp_path, capsys):
    """`trailnb sort --sort copy --draw --blur person` on a MegaDetector file: blurred sorted copies and drawn
    copies of the photos with people, byte copies of the others, the summary says so, originals unchanged."""
    card = tmp_path / "card"
    truth = _card(card)
    md = _results_file(truth, tmp_path / "run")
    before = _sha(card)
    assert _sort(md, card, tmp_path / "plain", "--sort", "copy", "--draw") == 0
    capsys.readouterr()
    assert _sort(md, card, tmp_path / "out", "--sort", "copy", "--draw", "--blur", "person") == 0
    said = capsys.readouterr().out
    assert "3 placed as blurred copies (people's boxes blurred; originals unchanged)" in said, said
    assert _sha(card) == before  # the originals' bytes
    out, plain = tmp_path / "out", tmp_path / "plain"
    assert (out / "detected/animal/cam3/IMG_0001.jpg").read_bytes() == (card / "cam3/IMG_0001.jpg").read_bytes()  # no people: a byte copy
    for f, (pbox, face, abox) in truth.items():
        if pbox is None: continue
        folder = "detected/animal_person" if abox else "detected/person"
        orig, copy = _pixels(card / f), _pixels(out / folder / f)
        _assert_hidden(orig, copy, pbox, face, shrink=0)
        outside = ~_inside(orig.shape, pbox, 1)  # (1 px: the box went through the file's normalised numbers)
        if f.endswith(".png"): assert (orig == copy)[outside].all()  # lossless: every pixel outside exactly
        else:  # JPEG edited block by block: every pixel farther than 1 px from the box grown to the 16-px MCU grid, exactly
            assert (orig == copy)[~_mcu(orig.shape, (pbox[0] - 1, pbox[1] - 1, pbox[2] + 1, pbox[3] + 1), pad=1)].all()
            assert Image.open(out / folder / f).quantization == Image.open(card / f).quantization
            assert Image.open(out / folder / f).getexif()[0x0132] == Image.open(card / f).getexif()[0x0132]
        if abox:  # the animal is not blurred
            assert hf_energy(copy[abox[1] - 4:abox[3] + 4, abox[0] - 4:abox[2] + 4]) > 0.5 * hf_energy(orig[abox[1] - 4:abox[3] + 4, abox[0] - 4:abox[2] + 4])
        # the drawn copy: blurred inside; outside, every pixel as in the drawn copy without --blur (JPEG blocks
        # that do not touch the box are encoded alike)
        drawn, drawn0 = _pixels(out / "drawn" / f), _pixels(plain / "drawn" / f)
        _assert_hidden(drawn0, drawn, pbox, face)
        assert (drawn == drawn0)[~_mcu(drawn.shape, pbox)].all()


def test_links_with_blur_are_refused_before_anything_is_written(tmp_path, capsys):
    card = tmp_path / "card"
    md = _results_file(_card(card), tmp_path / "run")
    for mode in ("hardlink", "symlink"):
        assert _sort(md, card, tmp_path / mode, "--sort", mode, "--blur", "person") == 2
        err = capsys.readouterr().err
        assert f"--sort {mode} would link to the unblurred originals: use --sort copy" in err, err
        assert not (tmp_path / mode).exists()
    assert _sort(md, card, tmp_path / "x", "--blur", "deer") == 2
    assert "--blur deer: the model has no such class; its classes are ['animal', 'person', 'vehicle']" in capsys.readouterr().err


class _ColourDetector:
    "A stand-in detector: each solid grey region is a person, each solid orange one an animal (what inference uses of a `Detector`)."
    arch, megadetector, max_dim = "colours", False, 640
    usual_thresholds = {"score": 0.05, "sort": 0.5}
    classes = CLASSES

    def __init__(self):
        import torch
        self.device = torch.device("cpu")

    def optimize_for_inference(self): return self

    def predict_tensors(self, batch, scales, score_thresh: float = 0.05):
        import cv2
        out = []
        for t, s in zip(batch, scales):
            rgb = (t.permute(1, 2, 0).numpy() * 255).astype(np.int16)
            boxes, labels = [], []
            for label, col in ((1, GREY), (0, ORANGE)):
                mask = (np.abs(rgb - np.array(col)).max(2) < 16).astype(np.uint8)
                n, _, st, _ = cv2.connectedComponentsWithStats(mask)
                for i in range(1, n):
                    if st[i, 4] > 300:
                        boxes.append([st[i, 0], st[i, 1], st[i, 0] + st[i, 2], st[i, 1] + st[i, 3]])
                        labels.append(label)
            out.append(Detections(np.array(boxes, float).reshape(-1, 4) / s, [0.9] * len(boxes), labels))
        return out


def _video(path, n=20, fps=10):
    "A person walking left to right (its face a checker) over a textured scene; the original frames and boxes."
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    frames, boxes = [], []
    for k in range(n):
        a, box = _scene(seed=9), (40 + 8 * k, 40, 100 + 8 * k, 200)
        face = _person(a, box)
        w.write(np.ascontiguousarray(a[..., ::-1]))
        frames.append(a); boxes.append((box, face))
    w.release()
    return boxes


def test_infer_blur_person_in_track_stills_and_track_videos(tmp_path, monkeypatch, capsys):
    """`trailnb infer --sort copy --draw --track --track-videos --blur person` (a stand-in detector): the track
    stills of people and every frame of the annotated video are blurred where the person is; results keep the boxes."""
    import cv2
    import trailnb.infer
    monkeypatch.setattr(trailnb.infer, "load_detector", lambda path, device="auto": _ColourDetector())
    card = tmp_path / "card"
    truth = _card(card)
    walk = _video(card / "cam4" / "clip.mp4")
    before = _sha(card)
    (tmp_path / "model.pt").write_bytes(b"stand-in")
    assert main(["infer", str(tmp_path / "model.pt"), str(card), "--out", str(tmp_path / "out"), "--workers", "0",
                 "--device", "cpu", "--sort", "copy", "--draw", "--track", "--track-videos", "--blur", "person"]) == 0
    said = capsys.readouterr().out
    out = tmp_path / "out"
    assert _sha(card) == before
    assert "placed as blurred copies" in said and "1 errors" in said, said  # the video with people is not copied
    md = json.loads((out / "results_md.json").read_text())  # results keep every person box
    assert sum(d["category"] == "2" for im in md["images"] for d in im["detections"]) >= 3
    # the still of the burst's person track: a crop around the (blurred) person
    still = _pixels(next((out / "track_stills" / "cam1").glob("*_person.jpg")))
    assert hf_energy(still) < 0.2 * hf_energy(_pixels(card / "cam1/IMG_0001.jpg")[40:200, 180:240])
    # the annotated video: every frame, sampled or between samples, blurred where the person is
    cap, k, ratios = cv2.VideoCapture(str(out / "track_videos" / "cam4" / "clip.mp4")), 0, []
    orig = cv2.VideoCapture(str(card / "cam4" / "clip.mp4"))
    while True:
        ok, bgr = cap.read()
        ok0, bgr0 = orig.read()
        if not (ok and ok0): break
        box, face = walk[k]
        ratios.append(_assert_hidden(bgr0[..., ::-1].astype(np.int16), bgr[..., ::-1].astype(np.int16), box, face,
                                     HF_MAX_VIDEO, CORR_MAX_VIDEO))
        k += 1
    assert k == len(walk)


def test_camtrap_dp_media_with_people_are_not_public(tmp_path):
    "`trailnb camtrap-dp --media-url`: media with a person `filePublic: false`, the others true."
    from trailnb.publish import run_camtrap_dp
    card = tmp_path / "card"
    truth = _card(card)
    md = _results_file(truth, tmp_path / "run")
    (tmp_path / "meta.yaml").write_text(
        "contributors: [{title: A. Person, email: a.person@example.org, role: contact}]\n"
        "project: {title: t, samplingDesign: opportunistic, captureMethod: [activityDetection], individualAnimals: false}\n"
        "licenses: [{name: CC0-1.0, scope: data}, {name: CC-BY-4.0, scope: media}]\n")
    (tmp_path / "deployments.csv").write_text("folder,deploymentID,latitude,longitude,deploymentStart,deploymentEnd\n" + "".join(
        f"{c},{c},0.0,0.0,2010-01-01T00:00:00+00:00,2030-01-01T00:00:00+00:00\n" for c in ("cam1", "cam2", "cam3")))
    run_camtrap_dp(results=str(md), images=str(card), out=str(tmp_path / "pkg"), metadata=str(tmp_path / "meta.yaml"),
                   deployments=str(tmp_path / "deployments.csv"), media_url="https://example.org/media")
    rows = {r["fileName"] if r["deploymentID"] != "cam1" else r["filePath"].rsplit("/", 2)[-2] + "/" + r["fileName"]: r["filePublic"]
            for r in csv.DictReader(open(tmp_path / "pkg" / "media.csv"))}
    assert rows == {"cam1/IMG_0001.jpg": "false", "cam1/IMG_0002.jpg": "false", "IMG_0001.png": "false", "IMG_0001.jpg": "true"}, rows


# --- JPEG copies edited in their DCT blocks (`privacy.blur_jpeg`) ------------------------------------------------

def _exif_with_thumbnail(thumb: bytes, turn: int = 1, when: str = "2024:05:01 06:00:00") -> bytes:
    "Little-endian EXIF: orientation and DateTime in IFD 0, a JPEG thumbnail in IFD 1 (as many trail cameras write it)."
    import struct
    ifd0 = struct.pack("<HHHIHHHHII", 2, 0x0112, 3, 1, turn, 0, 0x0132, 2, 20, 68) + struct.pack("<I", 38)  # at 8
    ifd1 = struct.pack("<HHHIIHHIII", 2, 0x0201, 4, 1, 88, 0x0202, 4, 1, len(thumb), 0)  # at 38
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd0 + ifd1 + when.encode() + b"\x00"  # the date at 68
    assert len(tiff) == 88
    return b"Exif\x00\x00" + tiff + thumb


def _thumbnail_in(data: bytes) -> bool:
    "Whether a JPEG's header (before its image data) holds another JPEG (a thumbnail or preview)."
    from trailnb.privacy import jpeg_segments
    segs, _ = jpeg_segments(data)
    return any(b"\xff\xd8\xff" in s[4:] for _, s in segs)


def _outside(shape, area, ring):
    "Pixels outside the blurred area (displayed pixels, `blur_jpeg`'s second value) grown by `ring` px."
    x0, y0, x1, y1 = np.round(area).astype(int)
    return ~_inside(shape, (x0, y0, x1, y1), ring)


def _check_jpeg_copy(src, box, ring):
    "Blur `box` in the JPEG `src`: pixels outside the area + `ring` identical, the area MCU-aligned and holding the box."
    from trailnb.privacy import blur_jpeg, blurred_file_bytes
    data, area = blur_jpeg(src, np.array([box], float))
    assert blurred_file_bytes(src, np.array([box], float)) == data
    orig, copy = _pixels(src), np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"), np.int16)
    assert copy.shape == orig.shape
    a = area[0]
    assert a[0] <= box[0] and a[1] <= box[1] and a[2] >= min(box[2], orig.shape[1]) and a[3] >= min(box[3], orig.shape[0]), (a, box)
    assert (orig == copy)[_outside(orig.shape, a, ring)].all()
    return orig, copy, a, data


def test_jpeg_copy_is_identical_outside_the_grown_box_on_camtrap31(sample_data):
    """Real camera-trap JPEGs (4:2:0 and 4:2:2, with and without EXIF thumbnails): every pixel farther than one pixel
    from the box grown to the MCU grid is identical to the original's; inside, the detail is gone; the EXIF, comment and
    other APPn segments are the original's (less the thumbnail); the original's bytes are unchanged."""
    from trailnb.privacy import jpeg_segments
    root = sample_data / "camtrap31" / "images"
    if not root.is_dir(): pytest.skip("camtrap31 not in the sample data")
    names = ["caltech_camera_traps_58a022a4-23d2-11e8-a6a3-ec086b02610b.jpg",  # 4:2:0, JFIF
             "missouri_camera_traps_Set1_1.02-Agouti_SEQ89823_SEQ89823_IMG_0002.JPG",  # 4:2:2, EXIF + comment
             "snapshot_serengeti_S5_U10_U10_R4_S5_U10_R4_IMAG3595.JPG"]  # EXIF with a 45 kB thumbnail
    for n in names:
        src = root / n
        before = hashlib.sha256(src.read_bytes()).hexdigest()
        W, H = Image.open(src).size
        box = (W * 0.3 + 3.3, H * 0.25 + 5.1, W * 0.45 + 1.7, H * 0.6 + 0.2)
        orig, copy, area, data = _check_jpeg_copy(src, box, ring=1)
        assert area[2] - area[0] < box[2] - box[0] + 32 and area[3] - area[1] < box[3] - box[1] + 32  # grown by less than an MCU a side
        x0, y0, x1, y1 = (int(v) for v in np.ceil(box))
        assert hf_energy(copy[y0:y1, x0:x1]) < HF_MAX * hf_energy(orig[y0:y1, x0:x1])
        assert (orig == copy).all(2)[~_inside(orig.shape, (x0, y0, x1, y1))].mean() > 0.95  # the MCU ring is a sliver
        assert hashlib.sha256(src.read_bytes()).hexdigest() == before
        o, c = Image.open(src), Image.open(io.BytesIO(data))
        assert c.quantization == o.quantization
        assert c.getexif().get(0x0132) == o.getexif().get(0x0132) and c.getexif().get(0x010F) == o.getexif().get(0x010F)
        keep = lambda segs: [s for m, s in segs if (0xE0 <= m <= 0xEF or m == 0xFE) and m != 0xE1]
        assert keep(jpeg_segments(data)[0]) == keep(jpeg_segments(src.read_bytes())[0])  # JFIF, comments, others: byte for byte
        assert not _thumbnail_in(data)
    assert _thumbnail_in((root / names[2]).read_bytes())


@pytest.mark.parametrize("kind", ["4:2:0", "4:2:2", "4:4:4", "grey", "progressive", "restarts"])
def test_jpeg_copy_every_orientation_and_flavour(tmp_path, kind):
    """Synthetic JPEGs in every EXIF orientation: sampling 4:2:0 / 4:2:2 / 4:4:4, greyscale, progressive, with restart
    markers. Outside the grown box identical (exactly at the grid for 4:4:4 and grey; one pixel farther where colour is
    subsampled); the planted face not recoverable; orientation, ICC profile kept; the EXIF thumbnail emptied."""
    import cv2
    base = _scene(w=333, h=251, seed=3)
    face = _person(base, (190, 50, 260, 230))
    icc = b"not-a-real-profile" * 20
    for turn in range(1, 9):
        up = Image.fromarray(base if kind != "grey" else base[..., 0])
        stored = up.transpose(_BACK[turn]) if turn > 1 else up  # what a camera held that way stores
        buf = io.BytesIO()
        stored.resize((40, 30)).save(buf, "JPEG")
        exif = _exif_with_thumbnail(buf.getvalue(), turn)
        path = tmp_path / f"{kind}_{turn}.jpg"
        if kind == "restarts":  # OpenCV writes restart markers; the EXIF goes in by hand
            arr = np.asarray(stored)
            ok, enc = cv2.imencode(".jpg", np.ascontiguousarray(arr[..., ::-1]), [cv2.IMWRITE_JPEG_RST_INTERVAL, 3])
            data = enc.tobytes()
            assert b"\xff\xdd" in data
            path.write_bytes(data[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + data[2:])
        else:
            kw = {"4:2:0": dict(subsampling=2), "4:2:2": dict(subsampling=1), "4:4:4": dict(subsampling=0),
                  "progressive": dict(progressive=True), "grey": {}}[kind]
            stored.save(path, quality=90, exif=exif, icc_profile=icc, **kw)
        assert ImageOps.exif_transpose(Image.open(path)).size == (333, 251)
        ring = 0 if kind in ("4:4:4", "grey") else 1
        orig, copy, area, data = _check_jpeg_copy(path, (190.4, 50.2, 260.0, 230.7), ring)
        _assert_hidden(orig, copy, (190, 50, 260, 230), face, shrink=0)
        c = Image.open(io.BytesIO(data))
        assert c.getexif()[0x0112] == turn and c.getexif()[0x0132] == "2024:05:01 06:00:00"
        if kind != "restarts": assert c.info.get("icc_profile") == icc
        assert _thumbnail_in(path.read_bytes()) and not _thumbnail_in(data)


def test_no_boxes_is_a_byte_copy_and_png_exif_thumbnail_is_emptied(tmp_path):
    "No box inside the photo: the JPEG's bytes as they were. A PNG written again keeps its EXIF but not the thumbnail in it."
    from trailnb.privacy import blur_jpeg, blurred_file_bytes
    a = _scene()
    buf = io.BytesIO()
    Image.fromarray(a).resize((40, 30)).save(buf, "JPEG")
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=90, exif=_exif_with_thumbnail(buf.getvalue()))
    data, area = blur_jpeg(tmp_path / "a.jpg", np.array([[400, 300, 500, 400]], float))  # outside the photo
    assert data == (tmp_path / "a.jpg").read_bytes() and len(area) == 0
    Image.fromarray(a).save(tmp_path / "a.png", exif=_exif_with_thumbnail(buf.getvalue()))
    out = Image.open(io.BytesIO(blurred_file_bytes(tmp_path / "a.png", np.array([[10, 10, 60, 60]], float))))
    assert out.getexif()[0x0132] == "2024:05:01 06:00:00"
    assert b"\xff\xd8\xff" not in out.info["exif"]


# --- Label Studio push with --blur ---------------------------------------------------------------------------------

class _LSClient:
    "Stands in for `LabelStudioClient` in `push` (tested at the task-building level, no server): a project's config, its tasks, what is imported."
    url = "http://ls"
    CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
              '<Label value="animal"/><Label value="person"/></RectangleLabels></View>')

    def __init__(self, have=()): self.have, self.imported, self.added, self.storages = list(have), [], [], []

    def json(self, method, path, **kw):
        if path == "/api/tasks": return {"tasks": [{"id": 7 + k, "data": {"image": u}} for k, u in enumerate(self.have)]}
        if path == "/api/storages/localfiles": return self.storages if method == "GET" else self.storages.append(kw["json"]) or kw["json"]
        if method == "GET": return {"label_config": self.CONFIG}
        if path == "/api/predictions": return self.added.append(kw["json"]) or {}
        self.imported = kw["json"]
        return {"task_count": len(self.imported), "prediction_count": len(self.imported)}


def test_label_studio_push_blur_person_points_tasks_at_blurred_copies(tmp_path, caplog):
    """`trailnb label-studio push RESULTS --blur person`: the photos with people go as blurred copies written under the
    data root (default `blurred/` beside the results), their tasks point there; the others, and the originals, are untouched;
    a project that already shows such a photo unblurred is warned about; a folder outside the data roots is refused."""
    from trailnb.core import ConfigError
    from trailnb.labelstudio import _parsers, push
    photos = tmp_path / "photos"
    card = photos / "card1"
    truth = _card(card)
    md = _results_file(truth, photos / "run")
    before = _sha(card)
    have = ["/data/local-files/?d=card1/cam1/IMG_0001.jpg"]  # the project's Local Storage already has this photo
    c = _LSClient(have)
    with caplog.at_level("WARNING", logger="trailnb"):
        out = push(md, 1, client=c, image_root=card, data_roots=[photos], blur=["person"])
    assert (out["blurred"], out["blur_failed"], out["tasks"], out["new_tasks"]) == (3, 0, 4, 4), out
    urls = sorted(t["data"]["image"] for t in c.imported)
    assert urls == ["/data/local-files/?d=card1/cam3/IMG_0001.jpg", "/data/local-files/?d=run/blurred/cam1/IMG_0001.jpg",
                    "/data/local-files/?d=run/blurred/cam1/IMG_0002.jpg", "/data/local-files/?d=run/blurred/cam2/IMG_0001.png"], urls
    assert "already shows 1 photo(s) with people unblurred (tasks [7]" in caplog.text
    # Label Studio serves local files only under a Local Storage's path: one for the copies, importing nothing (once)
    assert [(s["path"], s["regex_filter"]) for s in c.storages] == [(str((photos / "run" / "blurred").resolve()), "(?!)")]
    push(md, 1, client=c, image_root=card, data_roots=[photos], blur=["person"])
    assert len(c.storages) == 1
    assert _sha(card) == before
    assert not (photos / "run" / "blurred" / "cam3").exists()  # no people: the original is pushed
    for f, (pbox, face, _) in truth.items():
        if pbox is None: continue
        orig, copy = _pixels(card / f), _pixels(photos / "run" / "blurred" / f)
        _assert_hidden(orig, copy, pbox, face, shrink=0)
        assert (orig == copy)[~_mcu(orig.shape, (pbox[0] - 1, pbox[1] - 1, pbox[2] + 1, pbox[3] + 1), pad=1)].all()
    with pytest.raises(ConfigError, match=r"not under its local-files roots \(.*photos\)\. Give --blur-dir"):
        push(md, 1, client=_LSClient(), image_root=card, data_roots=[photos], blur=["person"], blur_dir=tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="the blurred copies would replace the originals"):
        push(md, 1, client=_LSClient(), image_root=card, data_roots=[photos], blur=["person"], blur_dir=card)
    plain = _LSClient()
    push(md, 1, client=plain, image_root=card, data_roots=[photos])  # without --blur: the originals, as before
    assert all(t["data"]["image"].startswith("/data/local-files/?d=card1/") for t in plain.imported)
    a = _parsers(__import__("argparse").ArgumentParser())["push"].parse_args([str(md), "--project", "1", "--blur", "person", "--blur-dir", "x"])
    assert (a.blur, a.blur_dir) == (["person"], "x")


def test_a_jpeg_libjpeg_cannot_edit_by_blocks_is_written_again_whole(tmp_path, caplog):
    "A CMYK JPEG: `blur_jpeg` declines, `blurred_file_bytes` blurs and writes it again whole (with a warning), the box blurred."
    from trailnb.privacy import blur_jpeg, blurred_file_bytes
    a = _scene()
    face = _person(a, (180, 40, 240, 200))
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert blur_jpeg(tmp_path / "c.jpg", np.array([[180, 40, 240, 200]], float)) is None
    with caplog.at_level("WARNING", logger="trailnb"):
        data = blurred_file_bytes(tmp_path / "c.jpg", np.array([[180, 40, 240, 200]], float))
    assert "cannot edit block by block" in caplog.text
    out = Image.open(io.BytesIO(data))
    assert out.mode == "CMYK"
    _assert_hidden(_pixels(tmp_path / "c.jpg"), np.asarray(out.convert("RGB"), np.int16), (180, 40, 240, 200), face, shrink=0)


@pytest.mark.slow
@pytest.mark.labelstudio
def test_label_studio_serves_the_blurred_copies_push_points_at(tmp_path, monkeypatch):
    """A real Label Studio (`.venv-labelstudio`): a project made from the card (`project --photos`), then `push --blur
    person`: every task of a photo with people shows the blurred copy's bytes (Label Studio serves it: push registered
    the copies' folder as a Local Storage that imports nothing), the photo without people the original's."""
    from trailnb.labelstudio import LabelStudioError, launch_label_studio, label_studio_program, photo_project, push
    if label_studio_program() is None: pytest.skip("Label Studio's environment is missing (make labelstudio-env)")
    monkeypatch.setenv("TRAILNB_HOME", str(tmp_path / "home"))
    photos = tmp_path / "photos"
    card = photos / "card1"
    truth = _card(card)
    md = _results_file(truth, photos / "run")
    ls = launch_label_studio(tmp_path / "ls", photos, port=0)
    try:
        client = ls.client()
        pid = photo_project(card, CLASSES[:2], client=client, document_root=photos)["project"]
        out = push(md, pid, client=client, image_root=card, data_roots=[photos], blur=["person"])
        assert out["blurred"] == 3, out
        tasks = client.json("GET", "/api/tasks", params={"project": pid, "page_size": 100, "fields": "all"})
        urls = {t["data"]["image"] for t in (tasks.get("tasks", []) if isinstance(tasks, dict) else tasks)}
        for f, (pbox, _, _) in truth.items():
            blurred = "/data/local-files/?d=run/blurred/" + f
            if pbox is None: assert blurred not in urls
            else:
                assert blurred in urls, urls
                assert client.request("GET", blurred).content == (photos / "run" / "blurred" / f).read_bytes()
        assert client.request("GET", "/data/local-files/?d=card1/cam3/IMG_0001.jpg").content == (card / "cam3/IMG_0001.jpg").read_bytes()
        (photos / "elsewhere").mkdir()
        (photos / "elsewhere" / "x.jpg").write_bytes((card / "cam3/IMG_0001.jpg").read_bytes())
        with pytest.raises(LabelStudioError, match="HTTP 404"):  # a folder no storage covers is not served
            client.request("GET", "/data/local-files/?d=elsewhere/x.jpg")
    finally:
        ls.stop()


def test_crops_written_with_people_blurred(tmp_path, monkeypatch):
    """`save_crops(blur=...)`: an animal crop that overlaps a person's box is cut from the photo with the person
    blurred; the crop's pixels away from the person are the plain crop's, exactly (PNG crops: lossless)."""
    from trailnb.crops import Crop, crop_box, save_crops
    rng = np.random.default_rng(0)
    photo = tmp_path / "p.png"
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(photo)  # all high-frequency detail
    crop = Crop(photo, np.array([100, 50, 220, 150], np.float32), 0, "p.png")
    person = np.array([[180, 60, 260, 140]], np.float32)  # overlaps the animal's right part
    import trailnb.crops as tc
    write = tc.write_crop
    monkeypatch.setattr(tc, "write_crop", lambda img, path, quality=95: write(img, Path(path).with_suffix(".png")))
    plain = np.asarray(Image.open(save_crops([crop], ["deer"], tmp_path / "a", margin=0, square=False)[0]))
    hidden = np.asarray(Image.open(save_crops([crop], ["deer"], tmp_path / "b", margin=0, square=False,
                                              blur={"p.png": person})[0]))
    assert plain.shape == hidden.shape == (100, 120, 3)
    assert (plain == np.asarray(crop_box(Image.open(photo).convert("RGB"), crop.box, 0, False))).all()
    inside = (slice(10, 90), slice(80, 120))  # the person's box in crop coordinates (x 180-220 of 100-220, y 60-140 of 50-150)
    assert hf_energy(hidden[inside]) < 0.05 * hf_energy(plain[inside])
    assert (hidden[:, :80] == plain[:, :80]).all() and (hidden[:10] == plain[:10]).all()
