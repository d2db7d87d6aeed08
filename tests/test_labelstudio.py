"""The Label Studio ML backend driven through its HTTP app with payloads recorded from Label Studio 1.23.2:
response shape, Label Studio's percent coordinates back to pixels within 0.01 px, one model version across
/setup and /predict, uploads fetched once with the API key (legacy token and personal access token), Basic
auth, path-traversal refusal, bad requests answered with JSON errors, and the key never shown.

Uploads are served by a small stand-in for Label Studio's `/data/upload/` and `/api/token/refresh/` endpoints
(a real HTTP server on 127.0.0.1); the real Label Studio runs in tests/test_labelstudio_server.py."""
import base64, json, logging, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

from trailnb.core import Detections
from trailnb.labelstudio import (LabelStudioBackend, ModelHistory, accept_model, from_ls_results, label_studio_cli,
                                 labeling_config, make_app, parse_labeling_config, to_ls_results)

CLASSES = ["animal", "person", "vehicle"]
KEY = "5f0c2a9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"  # a legacy token's shape: 40 hex digits
FRAME = "squirrels/images/train/alka_squirrels.seqdd0bf15a-2335-4bd0-a534-edadae3ffa99.frame102542.jpg"
FRAME2 = "squirrels/images/train/alka_squirrels.seqdd0bf15a-2335-4bd0-a534-edadae3ffa99.frame102567.jpg"
UPLOAD = "/data/upload/3/0c7ebbc0-x.jpg"
CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
          '<Label value="animal"/><Label value="person"/></RectangleLabels></View>')

# Recorded from Label Studio 1.23.2 (trimmed to the fields it always sends; the upload's project id changed to 3).
SETUP = {"project": "1.1796035646", "schema": CONFIG, "hostname": "http://localhost:8089",
         "access_token": KEY, "extra_params": None}
def _task(tid, image, annotations=()):
    return {"id": tid, "data": {"image": image}, "meta": {}, "created_at": "2026-11-30T10:47:27.312517Z",
            "updated_at": "2026-11-30T10:47:36.464038Z", "is_labeled": bool(annotations), "overlap": 1, "inner_id": tid,
            "total_annotations": len(annotations), "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
            "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 1, "updated_by": 1,
            "file_upload": None, "comment_authors": [], "annotations": list(annotations), "predictions": []}
ANNOTATION = {"id": 1, "result": [{"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 640,
              "original_height": 640, "image_rotation": 0, "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0,
                                                                      "rectanglelabels": ["animal"]}}],
              "was_cancelled": False, "ground_truth": False, "completed_by": 1, "task": 1, "project": 1}
LOCAL_TASK = _task(1, f"/data/local-files/?d={FRAME}", [ANNOTATION])
BATCH = {"tasks": [LOCAL_TASK, _task(2, f"/data/local-files/?d={FRAME2}"), _task(11, UPLOAD)],
         "project": "1.1796035646", "label_config": CONFIG, "params": {"login": None, "password": None, "context": None}}
PROJECT = {"id": 1, "title": "probe", "label_config": CONFIG, "model_version": "cap"}
WEBHOOK_ANNOTATION = {"action": "ANNOTATION_CREATED", "annotation": ANNOTATION, "project": PROJECT,
                      "task": {"id": 2, "data": {"image": f"/data/local-files/?d={FRAME2}"}, "project": 1}}


class FakeLabelStudio:
    "Label Studio's file and token endpoints: `/data/upload/...` with Token or Bearer auth, `/api/token/refresh/`."
    def __init__(self, files: dict, key: str):
        self.files, self.key, self.requests, self.auth_seen = files, key, [], []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def _send(self, code, body, ctype="application/json"):
                self.send_response(code); self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def do_GET(self):
                outer.requests.append(self.path); auth = self.headers.get("Authorization", ""); outer.auth_seen.append(auth)
                ok = auth == f"Token {outer.key}" or auth == "Bearer access-1"
                if not ok: return self._send(401, b'{"detail": "Authentication credentials were not provided."}')
                if self.path not in outer.files: return self._send(404, b'{"detail": "Not found."}')
                self._send(200, outer.files[self.path], "image/jpeg")
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/api/token/refresh/" and body.get("refresh") == outer.key:
                    return self._send(200, b'{"access": "access-1"}')
                self._send(401, b'{"detail": "Token is invalid"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self): self.server.shutdown(); self.server.server_close()


def _jpeg(path, size=(160, 120), seed=0) -> bytes:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 255, (size[1], size[0], 3), np.uint8)).save(path, quality=90)
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "A data root with the recorded tasks' frames (160x120, not square), a checkpoint, and a fake LS serving the upload."
    from trailnb.core import seed_everything
    from trailnb.models import build_detector
    d = tmp_path_factory.mktemp("ls")
    _jpeg(d / "root" / FRAME, seed=1); _jpeg(d / "root" / FRAME2, seed=2)
    (d / "outside.jpg").write_bytes(_jpeg(d / "tmp.jpg", seed=3))
    os.symlink(d / "outside.jpg", d / "root" / "squirrels" / "escape.jpg")
    (d / "root" / "squirrels" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    seed_everything(0)
    build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", CLASSES, max_dim=96, device="cpu").save(d / "model.pt")
    fake = FakeLabelStudio({UPLOAD: _jpeg(d / "upload.jpg", (100, 140), seed=4)}, KEY)
    yield {"dir": d, "fake": fake}
    fake.close()


def _backend(env, name, **kw):
    from starlette.testclient import TestClient
    kw = {"model": str(env["dir"] / "model.pt"), "workdir": str(env["dir"] / name), "data_roots": [str(env["dir"] / "root")],
          "label_studio_url": env["fake"].url, "score_thresh": 0.0, "max_boxes": 100, "device": "cpu", **kw}
    be = LabelStudioBackend(api_key=kw.pop("api_key", KEY), password=kw.pop("password", None), **kw)
    return be, TestClient(make_app(be))


def test_setup_and_batch_predict_shape_and_version(env):
    be, api = _backend(env, "shape")
    version = api.post("/setup", json=SETUP).json()["model_version"]
    test = api.post("/predict", json=BATCH); out = test.json()
    assert test.status_code == 200 and version == be.version == out["model_version"]
    assert len(out["results"]) == 3 and all(p["model_version"] == version for p in out["results"])
    sizes = [(160, 120), (160, 120), (100, 140)]
    for p, (w, h) in zip(out["results"], sizes):
        assert p["result"], "a from-scratch detector at score_thresh=0 gives boxes"
        assert p["score"] == max(r["score"] for r in p["result"])
        for r in p["result"]:
            assert (r["from_name"], r["to_name"], r["type"]) == ("label", "image", "rectanglelabels")
            assert (r["original_width"], r["original_height"]) == (w, h)
            v = r["value"]
            assert set(v) == {"x", "y", "width", "height", "rotation", "rectanglelabels"}
            assert v["rectanglelabels"][0] in ("animal", "person")  # 'vehicle' is not in the project: never sent
            assert 0 <= v["x"] <= 100 and 0 <= v["y"] <= 100 and v["x"] + v["width"] <= 100 + 1e-9 and v["y"] + v["height"] <= 100 + 1e-9


def test_predictions_round_trip_to_the_detectors_pixel_boxes(env):
    "Percent boxes sent to Label Studio convert back to the detector's own pixel boxes within 0.01 px."
    be, api = _backend(env, "coords")
    res = api.post("/predict", json={"tasks": [BATCH["tasks"][1]], "project": 1, "label_config": CONFIG}).json()["results"][0]
    det = be.detector.predict(env["dir"] / "root" / FRAME2, score_thresh=0.0)
    keep = np.isin(det.labels, [0, 1])  # animal, person: the project's labels
    want = det[keep]; want.boxes[:, [0, 2]] = want.boxes[:, [0, 2]].clip(0, 160); want.boxes[:, [1, 3]] = want.boxes[:, [1, 3]].clip(0, 120)
    got = from_ls_results(res["result"], ["animal", "person"])
    o1, o2 = np.argsort(-want.scores, kind="stable"), np.argsort(-got.scores, kind="stable")
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got.boxes[o2], want.boxes[o1], atol=0.01)
    np.testing.assert_array_equal(got.labels[o2], want.labels[o1])


@pytest.mark.parametrize("w,h", [(640, 640), (4000, 3000), (97, 1021)])
def test_percent_round_trip(w, h):
    rng = np.random.default_rng(w)
    xy = rng.uniform(0, 1, (50, 2)) * [w, h]; wh = rng.uniform(1, 0.5 * min(w, h), (50, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
    iface = parse_labeling_config(labeling_config(CLASSES))
    res, dropped = to_ls_results(Detections(boxes, rng.uniform(0, 1, 50), rng.integers(0, 3, 50)), CLASSES, w, h, iface)
    back = from_ls_results(json.loads(json.dumps(res)), CLASSES)  # through JSON, as Label Studio stores them
    assert dropped == [] and len(back) == 50
    assert np.abs(back.boxes - boxes).max() < 0.01


def test_unknown_classes_are_dropped_and_logged(caplog):
    iface = parse_labeling_config(CONFIG)
    with caplog.at_level(logging.WARNING, logger="trailnb"):
        res, dropped = to_ls_results(Detections([[1, 1, 5, 5], [2, 2, 8, 8]], [0.9, 0.8], [0, 2]), CLASSES, 10, 10, iface)
    assert [r["value"]["rectanglelabels"] for r in res] == [["animal"]] and dropped == ["vehicle"]
    assert "vehicle" in caplog.text


def test_upload_fetched_once_with_legacy_token_and_cached_by_content(env):
    fake = env["fake"]; n0 = len(fake.requests)
    be, api = _backend(env, "upload")
    for _ in range(3): assert api.post("/predict", json={"tasks": [BATCH["tasks"][2]], "project": 1, "label_config": CONFIG}).status_code == 200
    assert fake.requests[n0:] == [UPLOAD] and fake.auth_seen[-1] == f"Token {KEY}"
    cached = list((Path(be.workdir) / "cache").rglob("*.jpg"))
    import hashlib
    assert len(cached) == 1 and cached[0].stem == hashlib.sha256(cached[0].read_bytes()).hexdigest()
    be2, api2 = _backend(env, "upload")  # a restarted backend reads the same cache
    api2.post("/predict", json={"tasks": [BATCH["tasks"][2]], "project": 1, "label_config": CONFIG})
    assert fake.requests[n0:] == [UPLOAD]


def test_personal_access_token_is_refreshed_and_sent_as_bearer(env):
    fake = env["fake"]
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"
    saved, fake.key = fake.key, jwt
    try:
        be, api = _backend(env, "pat", api_key=jwt)
        r = api.post("/predict", json={"tasks": [BATCH["tasks"][2]], "project": 1, "label_config": CONFIG})
        assert r.status_code == 200 and fake.auth_seen[-1] == "Bearer access-1"
    finally: fake.key = saved


def test_basic_auth_guards_every_endpoint(env):
    fake = env["fake"]; n0 = len(fake.requests)
    be, api = _backend(env, "auth", basic_auth_user="ls", password="s3cret-pw")
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:s3cret-pw").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ls:wrong").decode()}
    for headers in ({}, bad, {"Authorization": "Basic !!notbase64"}):
        assert api.get("/health", headers=headers).status_code == 401
        r = api.post("/predict", json=BATCH, headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        assert api.post("/setup", json=SETUP, headers=headers).status_code == 401
    assert len(fake.requests) == n0  # nothing was read on their behalf
    assert api.post("/predict", json=BATCH, headers=good).status_code == 200


@pytest.mark.parametrize("d", ["../outside.jpg", "squirrels/../../outside.jpg", "/etc/passwd", "squirrels/escape.jpg",
                               "%2e%2e/outside.jpg", "C:/Windows/win.ini"])
def test_paths_outside_the_data_roots_are_refused(env, d):
    be, api = _backend(env, "traversal")
    r = api.post("/predict", json={"tasks": [_task(5, f"/data/local-files/?d={d}")], "project": 1, "label_config": CONFIG})
    assert r.status_code == 403 and "Refused" in r.json()["error"]
    assert api.get("/health").status_code == 200


def test_bad_requests_get_clear_json_errors_and_the_server_keeps_serving(env):
    be, api = _backend(env, "bad")
    cases = [(api.post("/predict", content=b'{"tasks": [', headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
             (api.post("/predict", json=[1, 2]), 400, "JSON object"),
             (api.post("/predict", json={"project": 1, "label_config": CONFIG}), 400, "'tasks'"),
             (api.post("/predict", json={"tasks": [{"id": 4}], "project": 1, "label_config": CONFIG}), 400, "'data'"),
             (api.post("/predict", json={"tasks": [_task(4, "")], "project": 1, "label_config": CONFIG}), 400, "image URL"),
             (api.post("/predict", json={"tasks": [LOCAL_TASK], "project": 42}), 404, "Unknown project"),
             (api.post("/predict", json={"tasks": [_task(6, "/data/local-files/?d=squirrels/nope.jpg")], "project": 1,
                                         "label_config": CONFIG}), 404, "not under any data root"),
             (api.post("/predict", json={"tasks": [_task(7, "/data/local-files/?d=squirrels/broken.jpg")], "project": 1,
                                         "label_config": CONFIG}), 422, "cannot be read"),
             (api.post("/predict", json={"tasks": [_task(8, "/data/upload/3/missing.jpg")], "project": 1,
                                         "label_config": CONFIG}), 502, "HTTP 404"),
             (api.post("/predict", json={"tasks": [LOCAL_TASK], "project": 1, "label_config": "<View>"}), 400, "not valid XML"),
             (api.post("/setup", json={"project": 1}), 400, "schema"),
             (api.post("/webhook", json={"project": PROJECT}), 400, "action"),
             (api.post("/job_status", json={"job": "nope"}), 404, "Unknown training job")]
    for r, status, text in cases:
        assert r.status_code == status, (r.status_code, r.text)
        assert text in r.json()["error"], r.json()
    assert api.get("/health").json()["status"] == "UP"


def test_the_api_key_never_appears_in_logs_or_responses(env, caplog):
    be, api = _backend(env, "secret")
    with caplog.at_level(logging.DEBUG):
        texts = [api.post("/setup", json=SETUP).text, api.post("/predict", json=BATCH).text,
                 api.post("/predict", json={"tasks": [_task(8, "/data/upload/3/missing.jpg")], "project": 1, "label_config": CONFIG}).text,
                 api.get("/health").text, repr(be.client)]
    assert KEY not in "".join(texts) and KEY not in caplog.text
    assert "502" in caplog.text or "HTTP 404" in caplog.text  # the failure itself is logged


def test_webhook_counts_annotations_and_a_second_training_request_is_busy(env):
    "Training is replaced by a run that waits on an event (a stand-in for a long run; real training is in the server test)."
    be, api = _backend(env, "webhook")
    assert api.post("/webhook", json=WEBHOOK_ANNOTATION).json() == {"status": "counted", "annotations_since_training": 1}
    assert api.post("/webhook", json={**WEBHOOK_ANNOTATION, "action": "ANNOTATION_UPDATED"}).json()["annotations_since_training"] == 2
    release, calls = threading.Event(), []
    def long_round(project, force=False, job=""):
        calls.append(project); release.wait(30); return {"version": be.version, "accepted": False}
    be.train_round = long_round
    first = api.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
    assert first.status_code == 201 and first.json()["status"] == "started"
    second = api.post("/train", json={"annotations": [LOCAL_TASK], "project": "1.1796035646", "label_config": CONFIG})
    assert second.status_code == 200 and second.json()["status"] == "busy" and second.json()["job"] == first.json()["job"]
    assert api.post("/predict", json={"tasks": [LOCAL_TASK], "project": 1, "label_config": CONFIG}).status_code == 200
    assert api.get("/health").json()["training"] is True
    release.set()
    for _ in range(100):
        if api.post("/job_status", json={"job": first.json()["job"]}).json()["job_status"] == "finished": break
        threading.Event().wait(0.05)
    assert calls == [1] and api.get("/health").json()["training"] is False


def test_train_every_starts_a_round_after_enough_annotations(env):
    be, api = _backend(env, "every", train_every=2)
    started = []
    be.train_round = lambda project, force=False, job="": started.append(project) or {}
    assert api.post("/webhook", json=WEBHOOK_ANNOTATION).json()["status"] == "counted"
    r = api.post("/webhook", json=WEBHOOK_ANNOTATION).json()
    assert r["status"] == "started" and r["trigger"] == "2 annotations since the last round"
    for _ in range(100):
        if be.jobs[r["job"]]["status"] == "finished": break
        threading.Event().wait(0.05)
    assert started == [1] and api.post("/webhook", json=WEBHOOK_ANNOTATION).json()["annotations_since_training"] == 1


def test_model_history_serves_the_latest_accepted_model_after_restart(env, tmp_path):
    import shutil
    h = ModelHistory(tmp_path, env["dir"] / "model.pt")
    m2 = tmp_path / "m2.pt"; shutil.copy(env["dir"] / "model.pt", m2); m2.write_bytes(m2.read_bytes() + b"\0")  # other bytes
    e1 = h.add(m2, {"heldout_AP": 0.5}, True, "better"); e2 = h.add(m2, {"heldout_AP": 0.1}, False, "not better")
    assert e1["version"] != h.entries[0]["version"] and e1["version"].startswith("trailnb-1-")
    again = ModelHistory(tmp_path)
    assert again.current == e1 and [e["accepted"] for e in again.entries] == [True, True, False]
    be = LabelStudioBackend(workdir=str(tmp_path), device="cpu")
    assert be.version == e1["version"]


def test_accept_only_better_unless_forced():
    assert accept_model(0.31, 0.30) == (True, "better on held-out images: 0.3100 > 0.3000")
    assert accept_model(0.30, 0.30)[0] is False and accept_model(0.2, 0.3, "always")[0] is True
    assert accept_model(0.0, 0.3, force=True) == (True, "forced")


def test_cli_help_and_config(capsys):
    with pytest.raises(SystemExit) as e: label_studio_cli(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(c in out for c in ("serve", "push", "pull", "config"))
    with pytest.raises(SystemExit): label_studio_cli(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--data-roots" in out and "--basic-auth-user" in out and "LOCAL_FILES_DOCUMENT_ROOT" in out
    assert label_studio_cli(["config", "deer", "wild boar"]) is None
    assert parse_labeling_config(capsys.readouterr().out).labels == ["deer", "wild boar"]


def test_push_and_pull_flags_default_to_their_functions_defaults():
    "Each push/pull flag's default is the function's own (one definition): --url none, --score-thresh none, --max-boxes."
    import inspect
    from trailnb.core import CommandParser
    from trailnb.labelstudio import MAX_BOXES, _parsers, pull, push
    sub = _parsers(CommandParser(prog="trailnb label-studio"))
    for cmd, fn, argv in (("push", push, ["r.json", "--project", "1"]), ("pull", pull, ["--project", "1", "--out", "o"])):
        ns = vars(sub[cmd].parse_args(argv))
        sig = inspect.signature(fn).parameters
        shared = {k: v for k, v in ns.items() if k in sig and sig[k].default is not inspect.Parameter.empty}
        assert shared and shared == {k: sig[k].default for k in shared}, (cmd, shared)
        assert ns["url"] is None  # Label Studio's address is found as the function finds it, not a second default
    assert vars(sub["push"].parse_args(["r.json", "--project", "1"]))["score_thresh"] is None
    assert vars(sub["push"].parse_args(["r.json", "--project", "1"]))["max_boxes"] == MAX_BOXES
    assert "(default: " in sub["push"].format_help() and "--score-thresh" in sub["push"].format_help()
