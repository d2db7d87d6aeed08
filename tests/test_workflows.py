"""The papermill workflows in nbs/workflows/, run headless on tiny parameters, as `trailnb run` and papermill run them;
their parameters generated from the config dataclasses; trailnb's state shared with the project folder."""
import dataclasses, json, os, subprocess, sys
from pathlib import Path
import pytest

pm = pytest.importorskip("papermill")
from trailnb.workflows import PARAMS_MARK, _type_name, run_workflow, sync_parameters, workflow_path
from trailnb.core import TrailnbError, load_config

BIN = Path(sys.executable).with_name("trailnb")
TINY = dict(synthetic_n=12, epochs=1, max_dim=128, batch_size=4, workers=0, arch="fasterrcnn_mobilenet_v3_large_320_fpn",
            progress=False, device="cpu")
STAGES = {"train": "trailnb.train:TrainConfig", "evaluate": "trailnb.evaluate:EvalConfig",
          "infer": "trailnb.infer:InferConfig", "review": "trailnb.review:ReviewConfig"}


def _config(name):
    mod, _, attr = STAGES[name].partition(":")
    return getattr(__import__(mod, fromlist=[attr]), attr)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_parameters_are_the_stage_config(name):
    "Every config field is a parameter with the field's own type and default; only the run-folder fields are left out."
    config = _config(name)
    nb = json.loads(workflow_path(name).read_text())
    cell = "".join(next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])
    mark = next(PARAMS_MARK.match(l) for l in cell.splitlines() if PARAMS_MARK.match(l))
    assert mark["cls"] == STAGES[name].replace(":", ".")
    skip = {s.strip() for s in (mark["skip"] or "").split(",") if s.strip()}
    assert skip == {"train": {"out", "name"}, "evaluate": {"out_dir"}, "infer": {"out"}, "review": set()}[name]
    params = pm.inspect_notebook(str(workflow_path(name)))
    fields = [f for f in dataclasses.fields(config) if f.name not in skip]
    assert [p for p in params if p not in ("run_dir", "config", "synthetic_n", "given_parameters")] == [f.name for f in fields]
    defaults = config()
    for f in fields:
        assert params[f.name]["default"] == repr(getattr(defaults, f.name)), f.name
        assert params[f.name]["inferred_type_name"] == _type_name(f), f.name
    assert sync_parameters([workflow_path(name)], check=True) == []  # what .ci/sync_check.sh runs


def test_changed_default_changes_the_parameter(monkeypatch, tmp_path):
    "A config default that changes makes the sync check fail, and regenerating puts the new default in the notebook."
    import trailnb.train
    nb = tmp_path / "train.ipynb"; nb.write_bytes(workflow_path("train").read_bytes())
    monkeypatch.setattr(trailnb.train.TrainConfig.__dataclass_fields__["epochs"], "default", 7)
    assert sync_parameters([nb], check=True) == [nb]
    assert pm.inspect_notebook(str(nb))["epochs"]["default"] == "30"  # check mode writes nothing
    assert sync_parameters([nb]) == [nb] and sync_parameters([nb], check=True) == []
    assert pm.inspect_notebook(str(nb))["epochs"]["default"] == "7"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "The train workflow on generated data, run through the `trailnb run` command."
    out = tmp_path_factory.mktemp("runs")
    args = [str(BIN), "run", "train", "--out", str(out), "--name", "t1", "--no-progress"]
    for k, v in TINY.items(): args += ["-p", k, str(v).lower() if isinstance(v, bool) else str(v)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "t1"


def test_train_workflow_outputs(trained):
    nb = json.loads((trained / "train.ipynb").read_text())
    assert not [c for c in nb["cells"] if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    injected = "".join(next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))["source"])
    assert f"given_parameters = {json.dumps(sorted(TINY))}" in injected  # `trailnb run` tells the notebook what it was given
    assert (trained / "model" / "best.pt").is_file() and (trained / "model" / "metrics.csv").is_file()
    assert (trained / "training_curves.png").stat().st_size > 1000
    m = json.loads((trained / "metrics.json").read_text())
    assert m["epochs"] == 1 and Path(m["checkpoint"]).is_file() and m["skipped_images"] == []
    # the reported val_AP is the checkpoint's AP on the run's own held-out split, recomputed here
    from trailnb.models import load_detector
    from trailnb.train import TrainConfig, load_run_data, validate
    cfg = load_config(TrainConfig, trained / "model" / "config.yaml")
    assert (cfg.epochs, cfg.max_dim, cfg.split) == (1, 128, "sequence")
    det = load_detector(trained / "model" / "best.pt", device="cpu")
    assert det.classes == ["deer", "fox", "bird"]
    _, val = load_run_data(cfg)
    # 1e-6: the same fp32 model and images; only the thread count of the two processes may differ
    assert m["val_AP"] == pytest.approx(validate(det, val)["AP"], abs=1e-6)


def test_evaluate_and_infer_and_review_workflows(trained, tmp_path):
    from trailnb.data import load_coco
    from trailnb.evaluate import run_evaluation
    from trailnb.results import RESULT_FILES, read_results
    data = trained / "data" / "annotations.json"
    ckpt = trained / "model" / "best.pt"
    ev = run_workflow("evaluate", {"data": str(data), "checkpoint": str(ckpt), "device": "cpu"}, out=tmp_path, run_name="ev", progress=False)
    metrics = json.loads((ev / "metrics.json").read_text())
    ours = run_evaluation(data=str(data), checkpoint=str(ckpt), device="cpu").to_dict()  # the same settings, in this process
    assert set(metrics["metrics"]) == set(ours["metrics"]) and len(metrics["per_class"]) == 3
    for k, v in ours["metrics"].items():  # 1e-6 as above: same model, images and evaluator
        assert metrics["metrics"][k] == pytest.approx(v, abs=1e-6), k
    assert list(ev.glob("*.png")) and (ev / "summary.md").is_file()

    inf = run_workflow("infer", {"model": str(ckpt), "input": str(data.parent / "images"), "workers": 0, "device": "cpu",
                                 "score_thresh": 0.01}, out=tmp_path, run_name="inf", progress=False)
    md_file = inf / RESULT_FILES["md"]
    assert md_file.is_file(), sorted(p.name for p in inf.iterdir())
    classes, by_file, info = read_results(md_file)
    gt = load_coco(data)
    assert classes == ["deer", "fox", "bird"] and set(by_file) == {r.file_name.removeprefix("images/") for r in gt.images}

    rv = run_workflow("review", {"data": str(data), "predictions": str(md_file), "name": "wf-test", "overwrite": True},
                      out=tmp_path, run_name="rv", progress=False)
    r = json.loads((rv / "review.json").read_text())
    assert r["images"] == 12 and r["tp"] + r["fn"] == gt.num_boxes  # every GT box is matched or missed
    assert (rv / "gallery_fp.png").is_file() and (rv / "gallery_fn.png").is_file()


def test_review_from_trailnb_run_reopens_from_the_project(tmp_path):
    "`trailnb run review` runs its notebook in the run folder, yet the review lands in the project's .trailnb/."
    import trailnb.review
    if not hasattr(trailnb.review, "home_database"):  # FiftyOne joins any database service the user already runs
        pytest.skip("needs trailnb.review.home_database: FiftyOne attaches to any running database service, whatever "
                    "its folder (issue 11 item 5, patch to nbs/06_review.ipynb)")
    from trailnb.synthetic import make_synthetic_dataset
    project = tmp_path / "project"; (project / ".trailnb").mkdir(parents=True); (project / "nbs").mkdir()
    ann = make_synthetic_dataset(project / "data", n=4, size=(96, 64), seed=3)
    gt = json.loads(ann.read_text())
    preds = project / "preds_coco.json"  # COCO results: every ground-truth box found with score 0.9
    preds.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
                                 for a in gt["annotations"]]))
    env = {k: v for k, v in os.environ.items()  # a user's shell in the project folder
           if k not in ("TRAILNB_HOME", "FIFTYONE_DATABASE_DIR", "FIFTYONE_PRIVATE_DATABASE_PORT")}
    r = subprocess.run([str(BIN), "run", "review", "--out", "runs", "--name", "rv", "--no-progress", "-p", "data", str(ann),
                        "-p", "predictions", str(preds), "-p", "name", "persist-test"], cwd=project, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (project / ".trailnb" / "fiftyone").is_dir() and not (project / "runs" / "rv" / ".trailnb").exists()
    show = ("from trailnb.review import load_review; ds = load_review('persist-test'); import fiftyone.core.odm as o; "
            "print(o.get_db_conn().client.admin.command('getCmdLineOpts')['parsed']['storage']['dbPath']); "
            "print(len(ds), ds.count('ground_truth.detections'), sorted(ds.list_saved_views()))")
    r = subprocess.run([sys.executable, "-c", show], cwd=project / "nbs", env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    served, counts = r.stdout.strip().splitlines()[-2:]  # from nbs/, as a notebook there would
    assert Path(served).resolve() == (project / ".trailnb" / "fiftyone").resolve()  # the project's database, no other
    n, boxes, views = counts.split(" ", 2)
    assert (int(n), int(boxes)) == (4, len(gt["annotations"])) and views != "[]"


def test_failing_run_exits_nonzero_and_keeps_the_error(tmp_path):
    r = subprocess.run([str(BIN), "run", "train", "--out", str(tmp_path), "--name", "bad", "--no-progress",
                        "-p", "arch", "no_such_arch", "-p", "synthetic_n", "4"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "bad/train.ipynb" in r.stderr
    nb = json.loads((tmp_path / "bad" / "train.ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and "no_such_arch" in errors[0]["evalue"]


def test_unknown_parameter_is_an_error(tmp_path):
    with pytest.raises(TrailnbError, match="no parameter"):
        run_workflow("train", {"epochz": 3}, out=tmp_path)


def test_run_takes_its_settings_file_as_config_like_every_command(tmp_path, capsys):
    "`trailnb run WORKFLOW --config FILE.yaml` (not `-f`) reads the settings file; its names are checked before anything runs."
    from trailnb.cli import COMMANDS, main
    (tmp_path / "s.yaml").write_text("epochz: 3\n")
    assert main(["run", "train", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path)]) == 2
    assert "has no parameter(s) 'epochz'" in capsys.readouterr().err
    with pytest.raises(SystemExit): main(["run", "--help"])
    h = capsys.readouterr().out
    assert "--config FILE.yaml" in h and "--parameters-file" not in h and "-f " not in h
    for name, cmd in COMMANDS.items():   # every command with a settings file calls it --config
        if not cmd.raw and cmd.config: assert "--config FILE.yaml" in cmd.parser(name).format_help()
