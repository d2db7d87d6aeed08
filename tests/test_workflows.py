"""The papermill workflows in nbs/workflows/, run headless on tiny parameters, as `trailnb run` and papermill run them."""
import dataclasses, json, subprocess, sys
from pathlib import Path
import pytest

pm = pytest.importorskip("papermill")
from trailnb.workflows import run_workflow, workflow_path
from trailnb.core import TrailnbError

BIN = Path(sys.executable).with_name("trailnb")
TINY = dict(synthetic_n=12, epochs=1, max_dim=128, batch_size=4, workers=0, arch="fasterrcnn_mobilenet_v3_large_320_fpn",
            progress=False, device="cpu")


@pytest.mark.parametrize("name,cls", [("train", "trailnb.train:TrainConfig"), ("evaluate", "trailnb.evaluate:EvalConfig"),
                                      ("infer", "trailnb.infer:InferConfig"), ("review", "trailnb.review:ReviewConfig")])
def test_parameters_cover_the_stage_config(name, cls):
    "Every config setting is a papermill parameter of its workflow (the run folder sets the output ones)."
    mod, _, attr = cls.partition(":")
    config = getattr(__import__(mod, fromlist=[attr]), attr)
    params = set(pm.inspect_notebook(str(workflow_path(name))))
    set_by_run_dir = {"train": {"out", "name"}, "evaluate": {"out_dir"}, "infer": {"out"}, "review": set()}[name]
    missing = {f.name for f in dataclasses.fields(config)} - params - set_by_run_dir
    assert not missing, f"{name}.ipynb lacks parameters {missing}"
    assert {"run_dir", "config"} <= params


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
    assert (trained / "model" / "best.pt").is_file() and (trained / "model" / "metrics.csv").is_file()
    assert (trained / "training_curves.png").stat().st_size > 1000
    m = json.loads((trained / "metrics.json").read_text())
    assert m["epochs"] == 1 and Path(m["checkpoint"]).is_file() and 0 <= m["val_AP"] <= 1
    from trailnb.models import load_detector
    assert load_detector(trained / "model" / "best.pt", device="cpu").classes == ["deer", "fox", "bird"]


def test_evaluate_and_infer_and_review_workflows(trained, tmp_path):
    data = trained / "data" / "annotations.json"
    ckpt = trained / "model" / "best.pt"
    ev = run_workflow("evaluate", {"data": str(data), "checkpoint": str(ckpt), "device": "cpu"}, out=tmp_path, run_name="ev", progress=False)
    metrics = json.loads((ev / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["AP"] <= 1.0 and len(metrics["per_class"]) == 3
    assert list(ev.glob("*.png")) and (ev / "summary.md").is_file()

    inf = run_workflow("infer", {"model": str(ckpt), "input": str(data.parent / "images"), "workers": 0, "device": "cpu",
                                 "score_thresh": 0.01}, out=tmp_path, run_name="inf", progress=False)
    md = list(inf.glob("*.json"))
    assert md, sorted(p.name for p in inf.iterdir())
    from trailnb.results import read_results
    md_file = next(p for p in md if "megadetector" in p.name or "md" in p.name)
    classes, by_file, info = read_results(md_file)
    assert len(by_file) == 12 and classes == ["deer", "fox", "bird"]

    rv = run_workflow("review", {"data": str(data), "predictions": str(md_file), "name": "wf-test", "overwrite": True},
                      out=tmp_path, run_name="rv", progress=False)
    r = json.loads((rv / "review.json").read_text())
    from trailnb.data import load_coco
    assert r["images"] == 12 and r["tp"] + r["fn"] == load_coco(data).num_boxes  # every GT box is matched or missed
    assert (rv / "gallery_fp.png").is_file() and (rv / "gallery_fn.png").is_file()


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
