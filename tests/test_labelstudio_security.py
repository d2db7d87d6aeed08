"""The Label Studio backend as a network service, and pre-labels a person can use (issue 23).

Each test here failed on the backend as it was before: the API key went to whatever address a `/setup` named;
a task URL on Label Studio's origin that was not an image (its own /api/projects JSON) was fetched with the
key and stored in the image cache; a request body was read whole whatever its size; any number of tasks was
taken in one request; error bodies named the server's data root and work folder; pre-labels used a 0.25
threshold and up to 50 boxes per image; push repeated that and could not derive the local-files prefix; help
texts showed "(default: None; none for None)".

Label Studio is played by small real HTTP servers on 127.0.0.1 that record every request's headers."""
import json, logging, os, re, socket, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

import trailnb.labelstudio as tls
from trailnb.labelstudio import LabelStudioBackend, label_studio_cli, make_app, push, start_server

CLASSES = ["animal", "person", "vehicle"]
KEY = "5f0c2a9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
          '<Label value="animal"/><Label value="person"/></RectangleLabels></View>')


class Recorder:
    "A local HTTP server that records every request's path and headers; `routes` maps a path to (status, type, body, headers)."
    def __init__(self, routes=None):
        self.routes, self.seen = dict(routes or {}), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                outer.seen.append((self.path, dict(self.headers)))
                status, ctype, body, extra = outer.routes.get(self.path, (404, "application/json", b'{"detail": "Not found."}', {}))
                self.send_response(status)
                self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items(): self.send_header(k, v)
                self.end_headers(); self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def headers_text(self) -> str: return json.dumps([h for _, h in self.seen])
    def close(self): self.server.shutdown(); self.server.server_close()


def _jpeg(path, size=(160, 120), seed=0) -> bytes:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 255, (size[1], size[0], 3), np.uint8)).save(path, quality=90)
    return Path(path).read_bytes()


def _task(tid, image): return {"id": tid, "data": {"image": image}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "A data root with one frame, a detector that scores everything 'animal' ~0.999 (32 boxes a frame), and two servers."
    import torch
    from trailnb.core import seed_everything
    from trailnb.models import build_detector
    d = tmp_path_factory.mktemp("lssec")
    jpg = _jpeg(d / "root" / "cam1" / "a.jpg", seed=1)
    (d / "root" / "cam1" / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    seed_everything(0)
    det = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", CLASSES, max_dim=96, device="cpu")
    with torch.no_grad(): det.model.roi_heads.box_predictor.cls_score.bias[1] += 8  # 'animal' everywhere, at ~0.999
    det.save(d / "hot.pt")
    other = Recorder({"/img.jpg": (200, "image/jpeg", jpg, {})})  # a second origin
    ls = Recorder({"/data/upload/1/a.jpg": (200, "image/jpeg", jpg, {}),
                   "/data/upload/1/moved.jpg": (302, "text/plain", b"", {"Location": other.url + "/img.jpg"}),
                   "/api/projects": (200, "application/json", b'[{"id": 1, "title": "secret project"}]', {}),
                   "/data/upload/1/huge.jpg": (200, "image/jpeg", jpg * 40, {})})
    yield {"dir": d, "ls": ls, "other": other}
    ls.close(); other.close()


def _backend(env, name, **kw):
    from starlette.testclient import TestClient
    kw = {"model": str(env["dir"] / "hot.pt"), "workdir": str(env["dir"] / name), "data_roots": [str(env["dir"] / "root")],
          "label_studio_url": env["ls"].url, "device": "cpu", **kw}
    be = LabelStudioBackend(api_key=kw.pop("api_key", KEY), password=None, **kw)
    return be, TestClient(make_app(be))


def _predict(api, *urls, **kw):
    return api.post("/predict", json={"tasks": [_task(i + 1, u) for i, u in enumerate(urls)], "project": 1, "label_config": CONFIG}, **kw)


def test_the_key_never_reaches_a_second_origin(env):
    "Neither through a redirect from Label Studio's origin, nor a third-party task URL, nor a /setup that names another host."
    ls, other = env["ls"], env["other"]
    be, api = _backend(env, "origin")
    assert _predict(api, "/data/upload/1/moved.jpg", other.url + "/img.jpg", "/data/upload/1/a.jpg").status_code == 200
    assert any(f"Token {KEY}" == h.get("Authorization") for _, h in ls.seen)  # Label Studio itself gets the key
    assert [p for p, _ in other.seen] == ["/img.jpg", "/img.jpg"] and KEY not in other.headers_text()
    # a backend without --label-studio-url: a /setup (anyone's, without Basic auth) naming another host gets no key of ours
    be2, api2 = _backend(env, "origin-setup", label_studio_url=None)
    assert api2.post("/setup", json={"project": 1, "schema": CONFIG, "hostname": other.url}).status_code == 200
    n = len(other.seen)
    _predict(api2, "/data/upload/1/elsewhere.jpg")
    assert len(other.seen) == n + 1 and KEY not in other.headers_text()


def test_a_non_image_on_label_studios_origin_is_refused_and_nothing_is_cached(env):
    be, api = _backend(env, "notimage")
    for url in ("/api/projects", env["ls"].url + "/api/projects"):
        r = _predict(api, url)
        assert r.status_code == 415 and "not an image" in r.json()["error"], r.text
    be2, api2 = _backend(env, "toolarge", max_image_mb=0.1)
    r = _predict(api2, "/data/upload/1/huge.jpg")  # an image over --max-image-mb
    assert r.status_code == 413 and "max-image-mb" in r.json()["error"], r.text
    assert not list((Path(be2.workdir) / "cache").rglob("*.jpg"))
    cache = Path(be.workdir) / "cache"
    stored = [p for p in cache.rglob("*") if p.is_file() and p.name != "index.json"]
    index = json.loads((cache / "index.json").read_text()) if (cache / "index.json").is_file() else {}
    assert not any("secret project" in p.read_text(errors="ignore") for p in stored)
    assert not [u for u in index if "api/projects" in u]


def test_a_body_over_the_cap_gets_413_before_it_is_read(env):
    "Over real HTTP: Content-Length says 300 MB, 64 KB are sent, and the answer comes at once (the rest is never read)."
    be, _ = _backend(env, "body")  # the default cap (10 MB)
    srv = start_server(be)
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 300000000\r\n\r\n")
            s.sendall(b" " * 65536)
            answer = ""
            while chunk := s.recv(4096):  # a timeout here: the server waited for the 300 MB
                answer += chunk.decode("latin-1")
                if "max-body-mb" in answer: break
        assert answer.startswith("HTTP/1.1 413") and "max-body-mb" in answer, answer[:300]
    finally: srv.stop()


def test_a_chunked_body_over_the_cap_is_stopped_while_streaming(env):
    "No Content-Length: 64 KB chunks are sent one by one; the 413 comes after the default cap (10 MB), long before 20 MB."
    import select
    be, _ = _backend(env, "chunked")
    srv = start_server(be)
    try:
        port, sent, answer = int(srv.url.rsplit(":", 1)[1]), 0, b""
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(300):
                if select.select([s], [], [], 0.01)[0]: break  # the server has answered
                try: s.sendall(b"10000\r\n" + b" " * 65536 + b"\r\n")
                except OSError: break  # it closed the connection
                sent += 1
            while b"max-body-mb" not in answer and (chunk := s.recv(4096)): answer += chunk
        assert answer.startswith(b"HTTP/1.1 413") and b"max-body-mb" in answer, answer[:300]
        assert sent < 250, sent  # stopped near the cap (153 chunks), not read whole
    finally: srv.stop()


def test_too_many_tasks_in_one_request_get_4xx(env):
    be, api = _backend(env, "tasks")  # the default: 200
    r = _predict(api, *["/data/local-files/?d=cam1/not-there.jpg"] * 201)  # refused before any task is looked at
    assert r.status_code == 413 and "at most 200" in r.json()["error"] and "--max-tasks" in r.json()["error"]
    be2, api2 = _backend(env, "tasks3", max_tasks=3)
    assert _predict(api2, *["/data/local-files/?d=cam1/a.jpg"] * 4).status_code == 413
    assert _predict(api2, *["/data/local-files/?d=cam1/a.jpg"] * 3).status_code == 200


def test_no_absolute_server_path_in_any_error_body(env, caplog):
    from trailnb.core import DataError
    be, api = _backend(env, "paths")
    root, work = str((env["dir"] / "root").resolve()), str(Path(be.workdir).resolve())
    bodies = [_predict(api, "/data/local-files/?d=../outside.jpg"), _predict(api, "/data/local-files/?d=cam1/none.jpg"),
              _predict(api, "/data/local-files/?d=cam1/broken.jpg"), _predict(api, "/data/upload/1/missing.jpg"),
              _predict(api, "/api/projects")]
    be.train_round = lambda project, force=False, job="": (_ for _ in ()).throw(DataError(f"no annotations in {work}/data/round001"))
    job = api.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).json()["job"]
    for _ in range(100):
        if be.jobs[job]["status"] == "failed": break
        time.sleep(0.05)
    bodies.append(api.post("/job_status", json={"job": job}))
    assert [r.status_code for r in bodies] == [403, 404, 422, 502, 415, 200]
    folders = {root, work, str(env["dir"]), str(env["dir"].resolve()), str(Path.cwd()), str(Path.home())}
    for r in bodies:
        assert not [f for f in folders if f in r.text], r.text
    assert "not under any data root (<data root>)" in bodies[1].json()["error"]
    assert "<work folder>/data/round001" in bodies[-1].json()["error"]
    assert root in caplog.text  # the server's log keeps the detail


def test_prelabels_are_at_the_sorting_threshold_at_most_max_boxes_of_known_classes(env):
    "The detector finds 32 'animal' boxes a frame at ~0.999; the project knows animal and person."
    be, api = _backend(env, "prelabel")
    res = _predict(api, "/data/local-files/?d=cam1/a.jpg").json()["results"][0]["result"]
    assert be.score_thresh(be.detector) == be.detector.usual_thresholds["sort"] == 0.5
    assert len(res) == 20 and all(r["score"] >= 0.5 for r in res)
    only_person = CONFIG.replace('<Label value="animal"/>', "")
    r = api.post("/predict", json={"tasks": [_task(1, "/data/local-files/?d=cam1/a.jpg")], "label_config": only_person, "project": 2})
    assert r.json()["results"][0]["result"] == []  # no 'person' box: none sent, whatever the 'animal' ones scored


class _Client:
    "Stands in for LabelStudioClient in push: the project's config, and the tasks it imports."
    url = "http://ls"
    def __init__(self): self.imported, self.added = None, []
    def json(self, method, path, **kw):
        if path == "/api/tasks": return {"tasks": [{"id": 7, "data": {"image": "/data/local-files/?d=card1/b.jpg"}}]}
        if method == "GET": return {"label_config": CONFIG}
        if path == "/api/predictions": return self.added.append(kw["json"]) or {}
        self.imported = kw["json"]
        return {"task_count": len(self.imported), "prediction_count": len(self.imported)}


def test_push_uses_the_files_sorting_threshold_max_boxes_and_derives_the_local_files_prefix(tmp_path):
    from trailnb.core import Detections
    from trailnb.results import ImageResult, write_results
    rng = np.random.default_rng(0)
    dets = Detections(np.tile([[5, 5, 60, 50]], (60, 1)), rng.uniform(0, 1, 60), rng.integers(0, 3, 60))
    files = ["sub dir/a.jpg", "b.jpg"]
    paths = write_results([ImageResult(f, 160, 120, dets) for f in files], CLASSES, tmp_path, formats=("md",), typical_thresh=0.3)
    card = tmp_path / "photos" / "card1"
    card.mkdir(parents=True)
    c = _Client()
    out = push(paths["md"], 1, client=c, image_root=card, data_roots=[tmp_path / "photos"])
    assert out["score_thresh"] == 0.3 and out["max_boxes"] == 20 and (out["tasks"], out["new_tasks"]) == (2, 1)
    assert [p["task"] for p in c.added] == [7]  # the photo the project has gets the prediction; the other is imported
    for res in [t["predictions"][0]["result"] for t in c.imported] + [p["result"] for p in c.added]:
        assert 0 < len(res) <= 20 and all(r["score"] >= 0.3 for r in res)
        assert {r["value"]["rectanglelabels"][0] for r in res} <= {"animal", "person"}
    assert [t["data"]["image"] for t in c.imported] == ["/data/local-files/?d=card1/sub%20dir/a.jpg"]


def test_help_texts_define_each_setting_once_and_explain_the_setup(capsys):
    texts = {n: p.format_help() for n, p in tls._parsers(__import__("argparse").ArgumentParser()).items()}
    for name, t in texts.items():
        flat = " ".join(t.split())
        assert "(default: None" not in flat and "none for None" not in flat, (name, flat)
        assert not re.search(r"\(default:[^()]*\)\s*\(default:", flat), (name, flat)  # a default said twice
    flat = {n: " ".join(t.split()) for n, t in texts.items()}
    assert "0.25" not in flat["push"] and "LOCAL_FILES_DOCUMENT_ROOT" in flat["pull"] and "LOCAL_FILES_DOCUMENT_ROOT" in flat["push"]
    assert "short fine-tune of the served model" in flat["serve"] and "backend.log" in flat["serve"]
    for n in ("start", "project", "serve", "connect", "push", "pull"):
        assert "LABEL_STUDIO_API_KEY" in flat[n] and "trailnb label-studio start --data-roots" in flat[n], n
    with pytest.raises(SystemExit): label_studio_cli(["--help"])
    out = capsys.readouterr().out
    assert all(c in out for c in ("start", "project", "serve", "connect", "push", "pull", "config"))


def test_retraining_defaults_to_a_short_fine_tune_of_the_served_model(env, tmp_path):
    import yaml
    be, _ = _backend(env, "roundcfg")
    cfg = tls._round_config(be, tmp_path / "annotations.json", "round001-x")
    served = be.detector
    assert (cfg.arch, cfg.max_dim, cfg.epochs) == (served.arch, served.max_dim, be.cfg.train_epochs) and cfg.epochs <= 10
    assert cfg.weights == be.history.current["checkpoint"] and cfg.data == str(tmp_path / "annotations.json")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"arch": served.arch, "epochs": 7, "max_dim": 64}))
    be.cfg.train_config = str(tmp_path / "t.yaml")
    mine = tls._round_config(be, tmp_path / "annotations.json", "round002-x")
    assert (mine.epochs, mine.max_dim, mine.weights) == (7, 64, be.history.current["checkpoint"])


def test_pulled_classes_follow_the_detectors_order():
    from trailnb.data import DetectionDataset, ImageRecord
    rec = ImageRecord(Path("/x/a.jpg"), 10, 10, np.array([[1, 1, 5, 5], [2, 2, 6, 6]], np.float32), np.array([0, 1]), 1, "a.jpg")
    ds = tls._in_order(DetectionDataset(["person", "animal"], [rec], Path("/x"), "p"), CLASSES)
    assert ds.classes == CLASSES and ds.images[0].labels.tolist() == [1, 0]  # person, animal by name
