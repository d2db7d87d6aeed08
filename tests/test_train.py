"""Integration tests of trailnb.train: learning, exact resume, run folder contents, sampling options."""
import csv
from pathlib import Path
import numpy as np
import pytest
import torch
from trailnb.core import ConfigError, sample_data_dir
from trailnb.data import load_dataset, make_synthetic_dataset
from trailnb.models import load_detector, read_checkpoint
from trailnb.train import TrainConfig, validate as evaluate, train


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n=8, size=(128, 96), seed=1)


class StopAfter:
    "Interrupt training after `n` epochs, as Ctrl-C would."
    def __init__(self, n): self.n = n
    def on_epoch_end(self, s):
        if s.epoch == self.n: raise KeyboardInterrupt


def test_resume_equals_uninterrupted(syn, tmp_path):
    kw = dict(data=str(syn), arch="fasterrcnn_mobilenet_v3_large_320_fpn", max_dim=96, epochs=4, batch_size=2,
              accumulate=2, ema=True, aspect_group=True, workers=0, out=str(tmp_path), split="random",
              val_frac=0.25, progress=False)
    full = train(name="full", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(name="cut", callbacks=[StopAfter(2)], **kw)
    assert len(read_checkpoint(tmp_path / "cut" / "last.pt")["resume"]["history"]) == 2
    resumed = train(resume=str(tmp_path / "cut"), workers=0, progress=False)
    np.testing.assert_allclose([h["loss"] for h in resumed.history], [h["loss"] for h in full.history], rtol=1e-5)
    a = load_detector(full.run_dir / "last.pt").model.state_dict()
    b = load_detector(resumed.run_dir / "last.pt").model.state_dict()
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # metrics.csv holds all four epochs, with validation columns
    rows = list(csv.DictReader(open(resumed.run_dir / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and "val_AP50" in rows[0]


def test_training_lowers_loss_and_writes_run(syn, tmp_path):
    res = train(data=str(syn), max_dim=96, epochs=4, batch_size=4, lr=5e-4, workers=0, out=str(tmp_path),
                name="r", split="none", balanced=True, optimizer="adamw", scheduler="cosine_restarts",
                restart_epochs=2, progress=False)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0], losses
    assert {"best.pt", "last.pt", "metrics.csv", "config.yaml"} <= {p.name for p in res.run_dir.iterdir()}
    ck = read_checkpoint(res.run_dir / "best.pt")
    assert ck["train_config"]["optimizer"] == "adamw" and ck["versions"]["torch"]
    with pytest.raises(ConfigError, match="already exists"):
        train(data=str(syn), workers=0, out=str(tmp_path), name="r", progress=False)
    with pytest.raises(ConfigError, match="last.pt"):
        train(resume=str(tmp_path / "nothing-here"), progress=False)


def test_early_stopping(syn, tmp_path):
    res = train(data=str(syn), max_dim=96, epochs=6, batch_size=4, lr=1e-7, warmup_epochs=0, patience=1,
                workers=0, out=str(tmp_path), name="es", split="random", val_frac=0.25, metric="AP50", progress=False)
    assert len(res.history) < 6, "training should stop once val AP50 stops improving"


@pytest.mark.slow
def test_learns_squirrels_from_scratch(tmp_path):
    d = sample_data_dir("squirrels")
    if d is None: pytest.skip("squirrels sample data not found: set TRAILNB_SAMPLE_DATA")
    res = train(data=str(d / "data.yaml"), split="none", arch="fasterrcnn_resnet18", max_dim=384, epochs=40,
                lr=0.02, batch_size=2, warmup_epochs=2, workers=0, scale_jitter=(0.8, 1.0), color_jitter=0.1,
                out=str(tmp_path), name="sq", progress=False)
    m = evaluate(res.detector, load_dataset(d / "data.yaml"))
    assert m["AP50"] >= 0.9, m
