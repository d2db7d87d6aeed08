"Camtrap DP: read, write, round trip and offline validation (trailnb.camtrap_dp), on the standard's example."
import filecmp
import pytest
from trailnb.camtrap_dp import (CAMTRAP_DP_VERSION, PROFILE_URL, TABLES, is_camtrap_dp, locate_media, media_observations,
                                observation_box, read_camtrap_dp, schema_url, table_fields, validate_camtrap_dp,
                                write_camtrap_dp)
from trailnb.core import DataError, sample_data_dir

BOX_TOL = 1e-6


def tiny_package_rows():
    "A minimal valid package (one deployment, two photos, one box, one blank), made here, no sample data needed."
    desc = {"name": "tiny", "created": "2026-01-01T00:00:00Z",
            "contributors": [{"title": "A. Person", "role": "contact"}],
            "project": {"title": "Tiny", "samplingDesign": "opportunistic", "captureMethod": ["activityDetection"],
                        "individualAnimals": False, "observationLevel": ["media"]},
            "spatial": {"type": "Point", "coordinates": [4.0, 50.0]},
            "temporal": {"start": "2026-01-01", "end": "2026-01-02"},
            "taxonomic": [{"scientificName": "Vulpes vulpes"}]}
    deps = [{"deploymentID": "cam1", "latitude": 50.0, "longitude": 4.0,
             "deploymentStart": "2026-01-01T00:00:00Z", "deploymentEnd": "2026-01-02T00:00:00Z"}]
    media = [{"mediaID": f"m{i}", "deploymentID": "cam1", "captureMethod": "activityDetection",
              "timestamp": f"2026-01-01T10:0{i}:00Z", "filePath": f"cam1/{i}.jpg", "filePublic": False,
              "fileName": f"{i}.jpg", "fileMediatype": "image/jpeg"} for i in range(2)]
    obs = [{"observationID": "o0", "deploymentID": "cam1", "mediaID": "m0", "eventStart": "2026-01-01T10:00:00Z",
            "eventEnd": "2026-01-01T10:00:00Z", "observationLevel": "media", "observationType": "animal",
            "scientificName": "Vulpes vulpes", "count": 1, "bboxX": 0.125, "bboxY": 0.25, "bboxWidth": 0.5,
            "bboxHeight": 0.25, "classificationMethod": "machine", "classifiedBy": "trailnb test",
            "classificationProbability": 0.875},
           {"observationID": "o1", "deploymentID": "cam1", "mediaID": "m1", "eventStart": "2026-01-01T10:01:00Z",
            "eventEnd": "2026-01-01T10:01:00Z", "observationLevel": "media", "observationType": "blank",
            "classificationMethod": "machine", "classifiedBy": "trailnb test"}]
    return desc, deps, media, obs


@pytest.fixture(scope="module")
def example():
    d = sample_data_dir("camtrap_dp_example")
    if d is None or not (d / "datapackage.json").is_file():
        pytest.skip("the Camtrap DP example is not in the sample data (TRAILNB_SAMPLE_DATA)")
    return d


def test_tiny_package_writes_and_validates(tmp_path):
    out = write_camtrap_dp(tmp_path / "pkg", *tiny_package_rows())
    rep = validate_camtrap_dp(out)
    assert rep.valid, str(rep)
    assert rep.rows == {"deployments": 1, "media": 2, "observations": 2}
    assert is_camtrap_dp(out) and not is_camtrap_dp(tmp_path)
    back = read_camtrap_dp(out)
    assert back.descriptor["profile"] == PROFILE_URL and CAMTRAP_DP_VERSION in PROFILE_URL
    assert [r["schema"] for r in back.descriptor["resources"]] == [schema_url(t) for t in TABLES]
    assert list(back.observations[0]) == table_fields("observations")
    assert observation_box(back.observations[0]) == (0.125, 0.25, 0.5, 0.25)
    assert back.media[0]["filePublic"] == "false"


def test_injected_errors_have_row_and_field(tmp_path):
    desc, deps, media, obs = tiny_package_rows()
    obs[0]["bboxX"], obs[1]["classificationMethod"], obs[1]["mediaID"] = 1.7, "robot", "nope"
    desc = {k: v for k, v in desc.items() if k != "taxonomic"}
    rep = validate_camtrap_dp(write_camtrap_dp(tmp_path / "bad", desc, deps, media, obs))
    got = {(i.file, i.row, i.field) for i in rep.issues}
    assert ("observations.csv", 2, "bboxX") in got
    assert ("observations.csv", 3, "classificationMethod") in got
    assert any(i.row == 3 and "nope" in i.message for i in rep.issues)  # foreign key to media
    assert any(i.file == "datapackage.json" and "taxonomic" in i.message for i in rep.issues)
    assert not rep.valid and "row 2 [bboxX]" in str(rep)


def test_unknown_column_and_partial_box_are_errors(tmp_path):
    desc, deps, media, obs = tiny_package_rows()
    obs[0]["species"] = "fox"
    with pytest.raises(DataError, match="species"): write_camtrap_dp(tmp_path / "p", desc, deps, media, obs)
    with pytest.raises(DataError, match="o9"): observation_box({"observationID": "o9", "bboxX": "0.1", "bboxY": "x"})


def test_shipped_schemas_are_the_standards(example):
    from importlib.resources import files
    ship = files("trailnb") / "camtrap_dp_schemas"
    for f in (example / "schemas_1.0.2").iterdir():
        assert filecmp.cmp(f, ship / f.name, shallow=False), f.name


def test_example_round_trip(example, tmp_path):
    pkg = read_camtrap_dp(example)
    assert validate_camtrap_dp(example).valid
    out = write_camtrap_dp(tmp_path / "rt", pkg.descriptor, pkg.deployments, pkg.media, pkg.observations)
    rep = validate_camtrap_dp(out)
    assert rep.valid, str(rep)
    back = read_camtrap_dp(out)
    assert len(back.observations) == len(pkg.observations) == 549
    boxes = 0
    for a, b in zip(pkg.observations, back.observations):
        assert (a["observationID"], a["mediaID"], a["observationType"], a["observationLevel"]) == \
               (b["observationID"], b["mediaID"], b["observationType"], b["observationLevel"])
        ba, bb = observation_box(a), observation_box(b)
        assert (ba is None) == (bb is None)
        if ba: boxes += 1; assert max(abs(x - y) for x, y in zip(ba, bb)) <= BOX_TOL
    assert boxes == 20
    assert [m["mediaID"] for m in back.media] == [m["mediaID"] for m in pkg.media]
    assert [r["name"] for r in back.descriptor["resources"]] == ["deployments", "media", "observations", "individuals"]


def test_example_media_local_and_web(example):
    pkg = read_camtrap_dp(example)
    loc = locate_media(pkg)
    assert (len(loc.found), len(loc.web), len(loc.missing)) == (10, 413, 0)
    assert all(p.is_file() and p.parent.name == "media" for p in loc.found.values())
    machine = media_observations(pkg, "machine")
    assert set(loc.found) <= set(machine)  # each local heron photo has a machine box
    assert {o["scientificName"] for m in loc.found for o in machine[m]} == {"Ardea"}


def test_example_injected_errors(example, tmp_path):
    pkg = read_camtrap_dp(example)
    obs = [dict(o) for o in pkg.observations]
    i = next(k for k, o in enumerate(obs) if o["bboxX"])
    obs[i]["bboxX"], obs[i + 1]["classificationMethod"] = "1.7", "robot"
    rep = validate_camtrap_dp(write_camtrap_dp(tmp_path / "bad", pkg.descriptor, pkg.deployments, pkg.media, obs))
    assert [(x.file, x.row, x.field) for x in rep.issues] == [("observations.csv", i + 2, "bboxX"),
                                                             ("observations.csv", i + 3, "classificationMethod")]
    assert "1.7" in rep.issues[0].message and "robot" in rep.issues[1].message


# ---- trailnb camtrap-dp: a run published (trailnb.publish) ----

METADATA = """\
contributors: [{title: A. Person, email: a.person@example.org, role: contact}]
project: {title: camtrap31, samplingDesign: opportunistic, captureMethod: [activityDetection], individualAnimals: false}
licenses: [{name: CC0-1.0, scope: data}, {name: CC-BY-4.0, scope: media}]
"""
DEPLOYMENTS = ("folder,deploymentID,latitude,longitude,deploymentStart,deploymentEnd\n"
               "root,lila-mix,0.0,0.0,2010-01-01T00:00:00+00:00,2030-01-01T00:00:00+00:00\n")


def _user_files(tmp_path):
    (tmp_path / "meta.yaml").write_text(METADATA)
    (tmp_path / "deployments.csv").write_text(DEPLOYMENTS)
    (tmp_path / "species.csv").write_text("class,scientificName,taxonRank\nanimal,Animalia,kingdom\n")
    return dict(metadata=str(tmp_path / "meta.yaml"), deployments=str(tmp_path / "deployments.csv"),
                species=str(tmp_path / "species.csv"))


def _check_observations_equal_results(pkg_dir, results_file, images, thresh):
    "Every media-level observation is one detection at or above `thresh` (box, class, probability), and back."
    from trailnb.publish import media_id
    from trailnb.results import load_image_results
    classes, results, _ = load_image_results(results_file, image_root=images)
    pkg = read_camtrap_dp(pkg_dir)
    kinds = {"animal": ("animal", "Animalia"), "person": ("human", ""), "vehicle": ("vehicle", "")}
    want = {}
    for r in results:
        keep = r.detections.scores >= thresh
        want[media_id(r.file)] = sorted(
            (kinds[classes[int(l)]], round(float(s), 6), tuple(float(v) for v in (b[0] / r.width, b[1] / r.height,
             (b[2] - b[0]) / r.width, (b[3] - b[1]) / r.height)))
            for b, s, l in zip(r.detections.boxes[keep], r.detections.scores[keep], r.detections.labels[keep]))
    got = {m: [] for m in want}
    for o in media_observations(pkg).values():
        for x in o:
            if x["observationType"] == "blank": continue
            got[x["mediaID"]].append(((x["observationType"], x["scientificName"]), float(x["classificationProbability"]),
                                      observation_box(x)))
    assert set(got) == set(want) and len(pkg.media) == len(want)
    n = 0
    for m in want:
        g = sorted(got[m])
        assert [(k, p) for k, p, _ in g] == [(k, p) for k, p, _ in want[m]], m
        for (_, _, a), (_, _, b) in zip(g, want[m]):
            assert max(abs(x - y) for x, y in zip(a, b)) <= BOX_TOL
        n += len(g)
    blanks = {x["mediaID"] for o in media_observations(pkg).values() for x in o if x["observationType"] == "blank"}
    assert blanks == {m for m, w in want.items() if not w}
    return n, len(blanks)


def test_camtrap31_md_results_to_package(sample_data, tmp_path):
    "MegaDetector v5's real results on camtrap31 → a valid package whose observations are its detections >= 0.2."
    from trailnb.publish import run_camtrap_dp
    cam = sample_data / "camtrap31"
    exp = run_camtrap_dp(results=str(cam / "megadetector_v5_results.json"), images=str(cam / "images"),
                         out=str(tmp_path / "pkg"), **_user_files(tmp_path))
    assert exp.report.valid, str(exp.report)
    n, blanks = _check_observations_equal_results(tmp_path / "pkg", cam / "megadetector_v5_results.json", cam / "images", 0.2)
    assert exp.counts["observations"] == n + blanks and exp.counts["blank"] == blanks == 14
    assert exp.counts["media"] == 31 and exp.counts["deployments"] == 1
    assert any("file time" in note for note in exp.notes)  # photos without EXIF times are named, not hidden
    assert validate_camtrap_dp(tmp_path / "pkg").valid
    assert read_camtrap_dp(tmp_path / "pkg").observations[0]["classifiedBy"].startswith("megadetector_v5")


@pytest.mark.slow
def test_camtrap31_infer_run_to_package(sample_data, tmp_path):
    "`infer` on camtrap31 (capture times from EXIF) → camtrap-dp → a valid package equal to the run's detections (~50 s)."
    from trailnb.core import DataError, seed_everything
    from trailnb.infer import run_inference
    from trailnb.models import build_detector
    from trailnb.publish import run_camtrap_dp
    seed_everything(0)
    build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["animal", "person", "vehicle"], weights=None, max_dim=160,
                   device="cpu").save(tmp_path / "tiny.pt")
    imgs = sample_data / "camtrap31" / "images"
    s = run_inference(model=str(tmp_path / "tiny.pt"), input=str(imgs), out=str(tmp_path / "run"), max_dim=160,
                      score_thresh=0.0, sort_thresh=0.0, device="cpu", formats=("md",))
    assert s.images == 31 and not s.failures
    exp = run_camtrap_dp(results=str(s.outputs["md"]), images=str(imgs), out=str(tmp_path / "pkg"), **_user_files(tmp_path))
    assert exp.report.valid and exp.counts["media"] == 31
    n, _ = _check_observations_equal_results(tmp_path / "pkg", s.outputs["md"], imgs, 0.0)
    assert n == sum(len(r.detections) for r in _results(s.outputs["md"], imgs))  # the threshold 0 keeps every detection
    assert run_camtrap_dp(validate=str(tmp_path / "pkg")).valid
    media = tmp_path / "pkg" / "media.csv"
    media.write_text(media.read_text().replace("image/jpeg", "jpeg", 1))
    with pytest.raises(DataError, match=r"media.csv row 2 \[fileMediatype\]"): run_camtrap_dp(validate=str(tmp_path / "pkg"))


def _results(path, images):
    from trailnb.results import load_image_results
    return load_image_results(path, image_root=images)[1]


def test_cli_camtrap_dp_export_and_validate(tmp_path):
    "`trailnb camtrap-dp` exports a card's results and `--validate` checks a package (exit 2 with the errors)."
    from PIL import Image
    from trailnb.cli import main
    from trailnb.core import Detections
    from trailnb.results import ImageResult, write_results
    for i in range(3):
        Image.new("RGB", (80, 60)).save(tmp_path / f"p{i}.jpg")
    res = [ImageResult(f"p{i}.jpg", 80, 60, Detections([[8, 6, 48, 36]] * (i < 2), [0.9] * (i < 2), [0] * (i < 2))) for i in range(3)]
    md = write_results(res, ["animal", "person", "vehicle"], tmp_path / "run", ("md",))["md"]
    files = _user_files(tmp_path)
    argv = ["camtrap-dp", str(md), "--images", str(tmp_path), "--out", str(tmp_path / "pkg"), "--event-gap-min", "1"]
    assert main(argv + [x for k, v in files.items() for x in ("--" + k, v)]) == 0
    assert [o["observationType"] for o in read_camtrap_dp(tmp_path / "pkg").observations] == ["animal", "animal", "blank", "animal"]
    assert main(["camtrap-dp", "--validate", str(tmp_path / "pkg")]) == 0
    obs = tmp_path / "pkg" / "observations.csv"
    obs.write_text(obs.read_text().replace(",machine,", ",robot,", 1))
    assert main(["camtrap-dp", "--validate", str(tmp_path / "pkg")]) == 2


def test_missing_metadata_is_one_clear_error(tmp_path):
    from trailnb.core import ConfigError
    from trailnb.publish import read_metadata
    (tmp_path / "m.yaml").write_text(METADATA.replace("individualAnimals: false", ""))
    with pytest.raises(ConfigError, match="project.individualAnimals"): read_metadata(tmp_path / "m.yaml")


def test_megadetector_camtrap_dp_to_coco_cannot_read_1_0_2(example, tmp_path):
    "MegaDetector's own reader wants the pre-1.0 layout (events.csv) and profile 1.0: it reads neither the example nor ours."
    mod = pytest.importorskip("megadetector.data_management.camtrap_dp_to_coco")
    with pytest.raises(AssertionError, match="events.csv"): mod.camtrap_dp_to_coco(str(example))


def test_example_as_labels_and_predictions(example):
    from trailnb.camtrap_dp import activity_by_hour, package_labels
    pkg = read_camtrap_dp(example)
    loc = locate_media(pkg)
    names, labels, notes = package_labels(pkg, loc, "machine")
    assert names == ["Ardea"] and len(labels) == 10
    rows = {o["mediaID"]: o for o in pkg.observations if o["classificationMethod"] == "machine" and o["bboxX"]}
    for m in labels:
        assert m.path.is_file() and m.file_name.startswith("media/") and m.deploymentID == "62c200a9"
        assert m.boxes == [observation_box(rows[m.mediaID])] and m.scores == [float(rows[m.mediaID]["classificationProbability"])]
    assert any("413 media exist only as web URLs" in n for n in notes)
    _, everything, _ = package_labels(pkg, loc)
    assert sum(len(m.boxes) for m in everything) == 10  # the human rows of these photos carry no boxes
    assert sum(map(sum, activity_by_hour(pkg).values())) == sum(
        o["observationLevel"] == "media" and o["observationType"] == "animal" for o in pkg.observations)


def test_example_machine_rows_as_predictions(example):
    "A Camtrap DP package is a results file: its machine rows are predictions, boxes back in pixels."
    from trailnb.data import image_size
    from trailnb.results import load_image_results, read_results
    classes, res, info = load_image_results(example)
    assert classes == ["Ardea"] and len(res) == 10 and info["detector"] == "Western Europe species model Version 1"
    pkg = read_camtrap_dp(example)
    rows = {m["fileName"]: m["mediaID"] for m in pkg.media}
    machine = media_observations(pkg, "machine")
    for r in res:
        w, h = image_size(example / r.file)
        assert (r.width, r.height) == (w, h) == (2048, 1440)
        o = machine[rows[r.file.split("/")[-1]]][0]
        x, y, bw, bh = observation_box(o)
        b = r.detections.boxes[0]
        assert max(abs(b[0] / w - x), abs(b[1] / h - y), abs((b[2] - b[0]) / w - bw), abs((b[3] - b[1]) / h - bh)) <= BOX_TOL
        assert abs(float(r.detections.scores[0]) - float(o["classificationProbability"])) <= 1e-6
    assert len(read_results(example)[1]) == 10


def _exif_photo(path, when):
    from PIL import Image
    ex = Image.Exif()
    ex.get_ifd(0x8769)[0x9003] = when
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (160, 120), (40, 60, 40)).save(path, exif=ex)


def test_event_counts_from_tracks(tmp_path):
    "One deer leaves and another arrives within a burst: one at a time per photo, two individuals by their tracks."
    from trailnb.core import Detections
    from trailnb.publish import run_camtrap_dp
    from trailnb.results import ImageResult, write_results
    card, res = tmp_path / "card", []
    boxes = [[10, 40, 40, 70], [16, 40, 46, 70], [110, 40, 140, 70], [104, 40, 134, 70]]  # deer A twice, then deer B
    for k, b in enumerate(boxes):
        _exif_photo(card / "cam1" / f"IMG_{k}.jpg", f"2024:05:01 06:00:0{2 * k}")
        res.append(ImageResult(f"cam1/IMG_{k}.jpg", 160, 120, Detections([b], [0.9], [0])))
    md = write_results(res, ["animal", "person", "vehicle"], tmp_path / "run", ("md",), typical_thresh=0.5)["md"]
    files = _user_files(tmp_path)
    (tmp_path / "deployments.csv").write_text(DEPLOYMENTS.replace("root,", "cam1,"))
    counts = {}
    for track in (False, True):
        run_camtrap_dp(results=str(md), images=str(card), out=str(tmp_path / f"pkg{track}"), track=track, **files)
        ev = [o for o in read_camtrap_dp(tmp_path / f"pkg{track}").observations if o["observationLevel"] == "event"]
        counts[track] = [(o["eventID"], o["scientificName"], o["count"]) for o in ev]
    assert counts == {False: [("lila-mix:1", "Animalia", "1")], True: [("lila-mix:1", "Animalia", "2")]}


def test_bad_user_files_are_clear_errors(tmp_path):
    from trailnb.core import ConfigError
    from trailnb.publish import read_deployments, read_metadata
    (tmp_path / "m.yaml").write_text(METADATA.replace("scope: media", "scope: data"))
    with pytest.raises(ConfigError, match="scope `media`"): read_metadata(tmp_path / "m.yaml")
    (tmp_path / "d.csv").write_text(DEPLOYMENTS.replace("0.0,0.0", "north,0.0"))
    with pytest.raises(ConfigError, match="row 2: latitude"): read_deployments(tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text(DEPLOYMENTS.replace("+00:00", ""))
    with pytest.raises(ConfigError, match="UTC offset"): read_deployments(tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text(DEPLOYMENTS.replace("latitude", "lat"))
    with pytest.raises(ConfigError, match="latitude"): read_deployments(tmp_path / "d.csv")


def test_example_as_dataset_and_evaluated(example):
    "load_dataset reads a package (boxes become labels); its machine rows, read as predictions, score AP 1 against them."
    from trailnb.data import load_dataset, validate_dataset
    from trailnb.evaluate import evaluate
    from trailnb.results import read_results
    ds = load_dataset(example, method="machine")
    assert ds.classes == ["Ardea"] and len(ds) == 10 and ds.num_boxes == 10
    r = ds[0]
    assert (r.width, r.height) == (2048, 1440) and r.file_name.startswith("media/")
    assert r.meta["deploymentID"] == "62c200a9" and r.meta["datetime"].isoformat() == "2021-04-11T20:43:09"
    assert any("413 media exist only as web URLs" in p.detail for p in ds.problems)  # reported, not fatal
    everything = load_dataset(example / "datapackage.json")  # human rows too: these photos' human rows have no box
    assert everything.num_boxes == 10 and everything[0].meta["image_labels"]
    clean, report = validate_dataset(ds)
    assert len(clean) == 10
    _, by_file, _ = read_results(example)
    rep = evaluate(ds, [by_file.get(x.file_name) for x in ds.images])
    assert rep.metrics["AP50"] == pytest.approx(1.0) and rep.metrics["AP"] == pytest.approx(1.0)
