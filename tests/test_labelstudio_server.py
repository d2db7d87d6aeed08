"""The whole Label Studio loop against a real Label Studio 1.23.x server (from PyPI, in its own environment built
by `make labelstudio-env`), started on a free 127.0.0.1 port with its network calls off.

Project with trailnb's generated config -> the 14 squirrel frames imported as local files (Local Storage) ->
trailnb backend connected -> predictions through Label Studio with the backend's model version -> annotations
through the API -> training started through Label Studio -> the new model version served and in new
predictions -> a restarted backend serves it -> `push` of a results file -> `pull` to COCO that `check-data`
reads as 14 images.

Marked `labelstudio`: skipped locally when Label Studio's environment is missing, but a failure in CI (env CI
set), never a silent skip. Takes about 2-4 minutes on 2 cores, most of it Label Studio's first start
(database migrations) and one tiny training round."""
import os, time
from pathlib import Path
import numpy as np
import pytest

from trailnb.core import Detections, sample_data_dir
from trailnb.labelstudio import (LabelStudioBackend, add_local_storage, connect_ml_backend, create_project,
                                 label_studio_program, labeling_config, launch_label_studio, parse_labeling_config,
                                 pull, push, start_server, to_ls_results)

pytestmark = pytest.mark.labelstudio
CLASSES = ["animal", "person", "vehicle"]


def _needs(what: str):
    if os.environ.get("CI"): pytest.fail(f"{what} in CI: the Label Studio integration test must run there.")
    pytest.skip(what)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory, request):
    program = label_studio_program()
    if program is None: _needs("Label Studio's environment is missing (make labelstudio-env)")
    sq = sample_data_dir("squirrels")
    if sq is None: _needs("the squirrels sample data is missing (TRAILNB_SAMPLE_DATA)")
    d = tmp_path_factory.mktemp("label-studio")
    ls = launch_label_studio(d / "data", document_root=sq.parent, program=program)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():  # shown in the test log, not captured
        print(f"\nLabel Studio {ls.url} started in {ls.startup_s} s (fresh database)", flush=True)
    yield ls, sq, d
    ls.stop()


def _wait(cond, timeout=300, step=0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond(): return True
        time.sleep(step)
    return False


def test_label_studio_loop(label_studio, tmp_path):
    ls, sq, d = label_studio
    client = ls.client()
    # a project with the generated config, the 14 frames as local files
    pid = create_project(client, "squirrels", CLASSES)
    for split in ("train", "val"): add_local_storage(client, pid, sq / "images" / split)
    tasks = client.json("GET", "/api/tasks", params={"project": pid, "page_size": 100})["tasks"]
    assert len(tasks) == 14 and all(t["data"]["image"].startswith("/data/local-files/?d=squirrels/images/") for t in tasks)

    # the backend: a tiny from-scratch model; one 1-epoch round at 128 px; accepts every retrained model (the
    # 14 frames are one burst, so this test holds out random frames and cannot expect a better model)
    from trailnb.core import seed_everything
    from trailnb.models import build_detector
    seed_everything(0)
    build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", CLASSES, max_dim=128, device="cpu").save(tmp_path / "start.pt")
    (tmp_path / "train.yaml").write_text("arch: fasterrcnn_mobilenet_v3_large_320_fpn\nmax_dim: 128\nepochs: 1\nbatch_size: 4\n"
                                         "split: random\nval_frac: 0.3\nworkers: 0\nseed: 0\n")
    kw = dict(workdir=str(tmp_path / "backend"), data_roots=[str(sq.parent)], label_studio_url=ls.url, api_key=ls.api_key,
              train_config=str(tmp_path / "train.yaml"), accept="always", score_thresh=0.0, max_boxes=3, device="cpu")
    backend = LabelStudioBackend(model=str(tmp_path / "start.pt"), **kw)
    srv = start_server(backend)
    try:
        ml = connect_ml_backend(client, pid, srv.url)
        v0 = backend.version
        assert ml["state"] == "CO" and ml["model_version"] == v0

        # predictions through Label Studio, with the backend's model version
        ids = [t["id"] for t in tasks]
        client.json("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                    json={"selectedItems": {"all": False, "included": ids}})
        preds = client.json("GET", "/api/predictions", params={"project": pid})
        assert sorted(p["task"] for p in preds) == sorted(ids) and {p["model_version"] for p in preds} == {v0}
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

        # training through Label Studio (the Start Training button's call): START_TRAINING reaches the backend
        client.request("POST", f"/api/ml/{ml['id']}/train")
        assert _wait(lambda: backend.jobs, 30), "no training job started"
        job = next(iter(backend.jobs.values()))
        busy = backend.webhook({"action": "START_TRAINING", "project": {"id": pid}})
        assert job["status"] in ("finished", "failed") or (busy["status"] == "busy" and busy["job"] == job["job"])
        assert _wait(lambda: job["status"] in ("finished", "failed"), 600), "training did not finish"
        assert job["status"] == "finished", job
        v1 = backend.version
        assert v1 != v0 and job["version"] == v1 and job["accepted"] is True
        assert job["metrics"]["n_train"] + job["metrics"]["n_heldout"] == 14 and job["metrics"]["n_heldout"] >= 3
        run_dir = Path(backend.history.current["metrics"]["run_dir"])
        assert (run_dir / "best.pt").is_file() and (run_dir / "metrics.csv").is_file()

        # the new version is what /setup reports to Label Studio and what new predictions carry
        client.json("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                    json={"selectedItems": {"all": False, "included": ids[:2]}})  # Label Studio calls /setup first
        assert client.json("GET", f"/api/ml/{ml['id']}")["model_version"] == v1
        new = [p for p in client.json("GET", "/api/predictions", params={"project": pid}) if p["model_version"] == v1]
        assert sorted(p["task"] for p in new) == sorted(ids[:2])
    finally:
        srv.stop()

    # a restarted backend serves the latest accepted model; with accept="better" a round swaps only a better model
    again = LabelStudioBackend(**{**kw, "accept": "better"})
    assert again.version == v1
    r2 = again.train_round(pid)
    new, old = r2["metrics"]["heldout_AP"], r2["metrics"]["served_heldout_AP"]
    assert r2["accepted"] == (new > old) and again.history.entries[-1]["accepted"] == r2["accepted"]
    assert again.version == (r2["version"] if r2["accepted"] else v1)

    # push: a results file of trailnb predictions becomes tasks with pre-annotations in a second project
    from trailnb.results import ImageResult, write_results
    det = backend.detector
    files = sorted((sq / "images").rglob("*.jpg"))[:3]
    results = [ImageResult(f.relative_to(sq / "images").as_posix(), 640, 640, det.predict(f, score_thresh=0.0)[:2]) for f in files]
    paths = write_results(results, det.classes, tmp_path / "results", formats=("md",))
    pid2 = create_project(client, "pushed", CLASSES)
    summary = push(paths["md"], pid2, client=client, url_prefix="/data/local-files/?d=squirrels/images/", score_thresh=0.0,
                   model_version="trailnb-infer")
    assert summary["tasks"] == 3 and summary["boxes"] == 6
    pushed = client.json("GET", "/api/predictions", params={"project": pid2})
    assert len(pushed) == 3 and {p["model_version"] for p in pushed} == {"trailnb-infer"}

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

    # pull: the project's annotations as COCO that check-data reads as 14 images
    out = pull(pid, tmp_path / "pulled", client=client, data_roots=[sq.parent])
    from trailnb.data import check_data
    rep = check_data(out)
    assert rep.ok and rep.stats["images"] == 14 and rep.stats["boxes"] == gt.num_boxes
    back = load_coco(out)
    orig = {Path(r.file_name).name.split("-", 1)[1]: r.boxes for r in gt.images}
    for r in back.images:
        np.testing.assert_allclose(r.boxes, orig[Path(r.file_name).name], atol=0.01)
    import subprocess, sys
    cli = subprocess.run([sys.executable, "-c", "import sys; from trailnb.cli import check_data; check_data(sys.argv[1])", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "14" in cli.stdout, cli.stdout + cli.stderr
