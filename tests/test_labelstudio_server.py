"""The Label Studio loop as a person runs it, against a real Label Studio 1.23.x server (from PyPI, in its own
environment built by `make labelstudio-env`), with its network calls off.

`trailnb label-studio start --data-roots PHOTOS` (a real subprocess, as a person types it) -> `project --photos`
(config + Local Storage + sync: the 14 squirrel frames as tasks, no hand-made API call) -> the backend served
with its defaults (Label Studio's URL, key and data root found from what `start` saved) -> `connect` ->
pre-labels through Label Studio: at most 20 boxes per task, each at the model's sorting threshold -> annotations
-> Start Training through Label Studio with the default retraining (a short fine-tune of the served model) ->
`push` of a results file onto the photos a second project already has -> an uploaded image pulled back ->
`pull` to COCO that `check-data` reads as 14 images.

Marked `labelstudio`: skipped locally when Label Studio's environment is missing, but a failure in CI (env CI
set), never a silent skip. About 2-4 minutes on 2 cores, most of it Label Studio's first start (database
migrations) and one short fine-tune."""
import contextlib, io, json, os, signal, subprocess, sys, threading, time
from pathlib import Path
import numpy as np
import pytest

from trailnb.core import Detections, sample_data_dir
from trailnb.labelstudio import (MAX_BOXES, LabelStudioBackend, label_studio_cli, label_studio_client, label_studio_program,
                                 labeling_config, parse_labeling_config, pull, saved_server, start_server, to_ls_results)

pytestmark = pytest.mark.labelstudio
CLASSES = ["animal", "person", "vehicle"]


def _needs(what: str):
    if os.environ.get("CI"): pytest.fail(f"{what} in CI: the Label Studio integration test must run there.")
    pytest.skip(what)


def _cli(*argv) -> str:
    "`trailnb label-studio ARGV` in this process; its printed output."
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): label_studio_cli([str(a) for a in argv])
    return buf.getvalue()


@pytest.fixture(scope="module")
def label_studio(request):
    "`trailnb label-studio start` in a subprocess, sharing this test run's TRAILNB_HOME (so the commands find it)."
    from trailnb.labelstudio import _free_port
    program = label_studio_program()
    if program is None: _needs("Label Studio's environment is missing (make labelstudio-env)")
    sq = sample_data_dir("squirrels")
    if sq is None: _needs("the squirrels sample data is missing (TRAILNB_SAMPLE_DATA)")
    proc = subprocess.Popen([sys.executable, "-m", "trailnb", "label-studio", "start", "--data-roots", str(sq.parent),
                             "--port", str(_free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    threading.Thread(target=lambda: [lines.append(l) for l in proc.stdout], daemon=True).start()
    t0 = time.time()
    while not any("Stop Label Studio with Ctrl-C" in l for l in lines):
        if proc.poll() is not None or time.time() - t0 > 600:
            proc.kill()
            pytest.fail("trailnb label-studio start did not come up:\n" + "".join(lines))
        time.sleep(0.5)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():  # shown in the test log, not captured
        print("\n" + "".join(l for l in lines if "password" not in l), flush=True)
    yield sq, "".join(lines)
    proc.send_signal(signal.SIGTERM)  # as Ctrl-C: start stops Label Studio
    assert proc.wait(60) == 0 and _wait(lambda: not Path(f"/proc/{saved_server()['pid']}").exists(), 30), "Label Studio kept running"


def _wait(cond, timeout=300, step=0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond(): return True
        time.sleep(step)
    return False


def _hot_model(path: Path) -> Path:
    "A from-scratch detector made to score 'animal' ~0.999 everywhere: far more than MAX_BOXES candidates per frame."
    import torch
    from trailnb.core import seed_everything
    from trailnb.models import build_detector
    seed_everything(0)
    det = build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", CLASSES, max_dim=128, device="cpu")
    with torch.no_grad(): det.model.roi_heads.box_predictor.cls_score.bias[1] += 8
    return det.save(path)


def test_label_studio_as_people_run_it(label_studio, tmp_path):
    sq, started = label_studio
    server = saved_server()
    assert server["url"] in started and server["document_root"] == str(sq.parent.resolve())
    assert oct(os.stat(Path(os.environ["TRAILNB_HOME"]) / "label-studio" / "trailnb-server.json").st_mode)[-3:] == "600"
    assert "trailnb label-studio project --photos" in started
    client = label_studio_client()  # the saved URL and token
    assert client.url == server["url"]

    # a first project from the folder of photos: one command
    proj = json.loads(_cli("project", "--photos", sq / "images", "--classes", *CLASSES, "--title", "squirrels").splitlines()[0])
    pid = proj["project"]
    tasks = client.json("GET", "/api/tasks", params={"project": pid, "page_size": 100})["tasks"]
    assert proj["tasks"] == len(tasks) == 14
    assert all(t["data"]["image"].startswith("/data/local-files/?d=squirrels/images/") for t in tasks)

    # the backend with its defaults: Label Studio's URL, key and data root come from what `start` saved
    backend = LabelStudioBackend(model=str(_hot_model(tmp_path / "hot.pt")), workdir=str(tmp_path / "backend"), device="cpu")
    assert backend.client.url == server["url"] and backend.cfg.data_roots == (server["document_root"],)
    srv = start_server(backend)
    try:
        ml = json.loads(_cli("connect", "--project", pid, "--backend", srv.url))
        v0 = backend.version
        assert ml["state"] == "CO" and ml["model_version"] == v0

        # pre-labels through Label Studio: each task at most MAX_BOXES boxes, each at the sorting threshold
        ids = [t["id"] for t in tasks]
        client.json("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                    json={"selectedItems": {"all": False, "included": ids}})
        preds = client.json("GET", "/api/predictions", params={"project": pid})
        assert sorted(p["task"] for p in preds) == sorted(ids) and {p["model_version"] for p in preds} == {v0}
        sort_t = backend.detector.usual_thresholds["sort"]
        assert max(len(p["result"]) for p in preds) == MAX_BOXES == 20  # the model offers more: the cap holds
        assert all(r["score"] >= sort_t and r["value"]["rectanglelabels"] == ["animal"] for p in preds for r in p["result"])
        r = preds[0]["result"][0]
        assert (r["from_name"], r["to_name"], r["original_width"], r["original_height"]) == ("label", "image", 640, 640)

        # annotations through the API: the sample's own labels, as a labeller's corrections would be
        from trailnb.data import load_coco
        gt = load_coco(sq / "label_studio_export" / "result.json")
        by_name = {Path(r.file_name).name.split("-", 1)[1]: r for r in gt.images}
        iface = parse_labeling_config(labeling_config(CLASSES))
        for t in tasks:
            g = by_name[Path(t["data"]["image"]).name]
            res, _ = to_ls_results(Detections(g.boxes, np.ones(len(g.boxes)), g.labels), gt.classes, g.width, g.height, iface)
            client.json("POST", f"/api/tasks/{t['id']}/annotations", json={"result": res})
        assert _wait(lambda: sum(backend.annotation_events.values()) >= 14, 30), "Label Studio's webhook did not arrive"

        # Start Training through Label Studio, with no --train-config: a short fine-tune of the served model
        client.request("POST", f"/api/ml/{ml['id']}/train")
        assert _wait(lambda: backend.jobs, 30), "no training job started"
        job = next(iter(backend.jobs.values()))
        assert _wait(lambda: job["status"] in ("finished", "failed"), 600), "training did not finish"
        assert job["status"] == "finished", job
        assert job["metrics"]["n_train"] + job["metrics"]["n_heldout"] == 14 and job["metrics"]["n_heldout"] >= 2
        import yaml
        entry = backend.history.entries[-1]
        run_cfg = yaml.safe_load((Path(entry["metrics"]["run_dir"]) / "config.yaml").read_text())
        assert (run_cfg["arch"], run_cfg["max_dim"], run_cfg["epochs"]) == ("fasterrcnn_mobilenet_v3_large_320_fpn", 128, 3)
        assert Path(run_cfg["weights"]) == Path(backend.history.entries[0]["checkpoint"])
        assert backend.version == (job["version"] if job["accepted"] else v0)
    finally:
        srv.stop()

    # push: a results file onto the photos a second project already has: predictions added, no duplicate tasks
    from trailnb.results import ImageResult, write_results
    det = backend.detector
    val = sq / "images" / "val"
    pid2 = json.loads(_cli("project", "--photos", val, "--classes", *CLASSES).splitlines()[0])["project"]
    files = sorted(val.glob("*.jpg"))
    results = [ImageResult(f.name, 640, 640, Detections(np.tile([[100, 120, 300, 360]], (30, 1)), np.linspace(0.9, 0.1, 30),
                                                        [0] * 30)) for f in files]
    paths = write_results(results, det.classes, tmp_path / "results", formats=("md",), typical_thresh=0.5)
    summary = json.loads(_cli("push", paths["md"], "--project", pid2, "--image-root", val, "--max-boxes", 5, "--model-version", "infer"))
    assert (summary["tasks"], summary["new_tasks"], summary["score_thresh"]) == (len(files), 0, 0.5)
    pushed = client.json("GET", "/api/predictions", params={"project": pid2})
    assert len(pushed) == len(files) and all(0 < len(p["result"]) <= 5 and min(r["score"] for r in p["result"]) >= 0.5 for p in pushed)
    assert client.json("GET", f"/api/projects/{pid2}")["task_number"] == len(files)

    # an uploaded image (/data/upload/...) with an annotation: pull fetches it from Label Studio with the key
    up = files[0]
    with open(up, "rb") as f:
        client.json("POST", f"/api/projects/{pid2}/import", files={"file": (up.name, f, "image/jpeg")})
    utask = [t for t in client.json("GET", "/api/tasks", params={"project": pid2, "page_size": 100})["tasks"]
             if t["data"]["image"].startswith("/data/upload/")][0]
    client.json("POST", f"/api/tasks/{utask['id']}/annotations", json={"result": to_ls_results(
        Detections([[100, 120, 300, 360]], [1.0], [0]), CLASSES, 640, 640, iface)[0]})
    up_ds = load_coco(pull(pid2, tmp_path / "pulled-upload", client=client))
    assert len(up_ds) == 1 and up_ds.images[0].path.read_bytes() == up.read_bytes()
    np.testing.assert_allclose(up_ds.images[0].boxes, [[100, 120, 300, 360]], atol=0.01)

    # pull: the project's annotations as COCO that check-data reads as 14 images (data root from `start`)
    out = Path(_cli("pull", "--project", pid, "--out", tmp_path / "pulled").strip())
    from trailnb.data import check_data
    rep = check_data(out)
    assert rep.ok and rep.stats["images"] == 14 and rep.stats["boxes"] == gt.num_boxes
    back = load_coco(out)
    orig = {Path(r.file_name).name.split("-", 1)[1]: r.boxes for r in gt.images}
    for r in back.images:
        np.testing.assert_allclose(r.boxes, orig[Path(r.file_name).name], atol=0.01)
