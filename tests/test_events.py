"Independent events (trailnb.events) on a synthetic card with EXIF capture times, known bursts and gaps."
import csv
import datetime as dt
import pytest
from PIL import Image
from trailnb.core import Detections
from trailnb.events import (DEFAULT_EVENT_GAP_MIN, capture_times, independent_events, media_items, suspect_times,
                            untimed, write_events_csv)
from trailnb.results import ImageResult

T0 = dt.datetime(2024, 5, 1, 6, 0, 0)
CLASSES = ["deer", "fox"]
DEER, FOX = [10, 10, 30, 30], [40, 10, 60, 30]

# (camera folder, minutes after T0, deer, fox) of every photo on the card; gaps between photos with animals in
# cam1: 10 s, 10 s (burst), 4 min, 45 min, 20 min (one empty photo between), 90 min; cam2: one burst
CARD = [("cam1", 0, 2, 0), ("cam1", 10 / 60, 1, 0), ("cam1", 20 / 60, 1, 0), ("cam1", 4 + 20 / 60, 1, 0),
        ("cam1", 49 + 20 / 60, 0, 1), ("cam1", 59, 0, 0), ("cam1", 69 + 20 / 60, 1, 1), ("cam1", 159 + 20 / 60, 3, 0),
        ("cam2", 10, 0, 2), ("cam2", 10.5, 0, 1)]
# expected events per gap (minutes): the photo indices of each, and the counts
EXPECTED = {
    1: [([0, 1, 2], {"deer": 2}), ([3], {"deer": 1}), ([4], {"fox": 1}), ([6], {"deer": 1, "fox": 1}), ([7], {"deer": 3}),
        ([8, 9], {"fox": 2})],
    30: [([0, 1, 2, 3], {"deer": 2}), ([4, 6], {"deer": 1, "fox": 1}), ([7], {"deer": 3}), ([8, 9], {"fox": 2})],
    60: [([0, 1, 2, 3, 4, 6], {"deer": 2, "fox": 1}), ([7], {"deer": 3}), ([8, 9], {"fox": 2})],
}


def _jpeg(path, when):
    ex = Image.Exif()
    ex.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (90, 90, 90)).save(path, "JPEG", exif=ex)


@pytest.fixture
def card(tmp_path):
    "Photos with EXIF times, and the detector's results on them (with a low-score box below the threshold)."
    results = []
    for i, (cam, minutes, deer, fox) in enumerate(CARD):
        f = f"{cam}/IMG_{i:04d}.jpg"
        _jpeg(tmp_path / f, T0 + dt.timedelta(minutes=minutes))
        boxes = [DEER] * deer + [FOX] * fox + [DEER]
        results.append(ImageResult(f, 64, 48, Detections(boxes, [0.9] * (deer + fox) + [0.1], [0] * deer + [1] * fox + [0])))
    return tmp_path, results


def test_default_gap_is_30_minutes():
    assert DEFAULT_EVENT_GAP_MIN == 30


@pytest.mark.parametrize("gap", [1, 30, 60])
def test_events_exact_at_gap(card, gap):
    root, results = card
    times = capture_times([r.file for r in results], root)
    assert {s for _, s in times.values()} == {"exif"}
    items = media_items(results, CLASSES, times, thresh=0.5)
    events = independent_events(items, gap)
    files = [r.file for r in results]
    got = [(e.media, e.counts) for e in events]
    assert got == [([files[i] for i in idx], counts) for idx, counts in EXPECTED[gap]]
    assert [e.deploymentID for e in events] == ["cam1"] * (len(EXPECTED[gap]) - 1) + ["cam2"]
    assert len({e.eventID for e in events}) == len(events)
    assert all(e.start == times[e.media[0]][0] and e.end == times[e.media[-1]][0] for e in events)


def test_tracked_counts_replace_per_photo_max(card):
    root, results = card
    items = media_items(results, CLASSES, capture_times([r.file for r in results], root))
    # the tracker saw three deer across the first burst (one left and another came back)
    ev = independent_events(items, 30, clips=[([r.file for r in results[:3]], {"deer": 3})])
    assert ev[0].counts == {"deer": 3}
    assert ev[1].counts == {"deer": 1, "fox": 1}  # untracked photos keep the per-photo maximum


def test_untimed_and_wrong_clock(card):
    root, results = card
    (root / "cam3").mkdir()
    Image.new("RGB", (64, 48)).save(root / "cam3/noexif.jpg")
    results = results + [ImageResult("cam3/noexif.jpg", 64, 48, Detections([DEER], [0.9], [0]))]
    times = capture_times([r.file for r in results], root)
    assert times["cam3/noexif.jpg"][1] == "mtime"  # the stated fallback
    times["cam3/noexif.jpg"] = (None, "none")
    items = media_items(results, CLASSES, times)
    assert untimed(items) == ["cam3/noexif.jpg"]
    assert all("cam3/noexif.jpg" not in e.media for e in independent_events(items))
    bad = suspect_times(items, {"cam1": T0 + dt.timedelta(minutes=1)})
    assert [f for f, _, _ in bad] == ["cam1/IMG_0000.jpg", "cam1/IMG_0001.jpg", "cam1/IMG_0002.jpg"]


def test_deployment_mapping_and_csv(card, tmp_path):
    root, results = card
    items = media_items(results, CLASSES, capture_times([r.file for r in results], root), deployments={"cam2": "D-02"})
    events = independent_events(items)
    assert [(e.deploymentID, e.eventID) for e in events][0] == ("D-02", "D-02:1")  # deployments in name order
    rows = list(csv.DictReader(open(write_events_csv(tmp_path / "events.csv", events), newline="")))
    assert list(rows[0]) == ["deploymentID", "eventID", "start", "end", "classes", "counts", "media"]
    assert rows[2]["classes"] == "deer;fox" and rows[2]["counts"] == "1;1"
    assert rows[1]["start"] == "2024-05-01T06:00:00" and len(rows) == 4


def test_results_files_carry_capture_time_and_deployment(card, tmp_path):
    "With `media_info`, results.csv has capture_time / time_source / deployment and MD entries EXIF's `datetime`."
    import json
    from trailnb.events import media_info
    from trailnb.results import CSV_COLUMNS, MEDIA_COLUMNS, write_results
    root, results = card
    media = media_info([r.file for r in results], root, {"cam2": "D-02"})
    paths = write_results(results, CLASSES, tmp_path / "out", ("md", "csv"), media=media)
    rows = list(csv.DictReader(open(paths["csv"], newline="")))
    assert list(rows[0]) == CSV_COLUMNS + MEDIA_COLUMNS
    assert (rows[0]["capture_time"], rows[0]["time_source"], rows[0]["deployment"]) == ("2024-05-01T06:00:00", "exif", "cam1")
    assert {r["deployment"] for r in rows if r["file"].startswith("cam2/")} == {"D-02"}
    md = json.loads(paths["md"].read_text())
    assert md["images"][0]["datetime"] == "2024:05:01 06:00:00"
    plain = write_results(results, CLASSES, tmp_path / "plain", ("csv",))  # without media: the file as before
    assert list(csv.DictReader(open(plain["csv"], newline="")))[0].keys() == set(CSV_COLUMNS)


def test_md_with_datetime_passes_megadetector_validator(card, tmp_path):
    pytest.importorskip("megadetector", reason="MegaDetector's validator (megadetector-utils)")
    from megadetector.postprocessing.validate_batch_results import validate_batch_results
    from trailnb.events import media_info
    from trailnb.results import write_results
    root, results = card
    p = write_results(results, CLASSES, tmp_path, ("md",), media=media_info([r.file for r in results], root))["md"]
    v = validate_batch_results(str(p))["validation_results"]
    assert v["errors"] == [] and v["warnings"] == [], v
