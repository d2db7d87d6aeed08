"""Integration tests of trailnb.train: learning, exact resume, resume with given settings, run folder contents,
bad images skipped before training, sampling options."""
import argparse, csv, dataclasses, shutil, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from trailnb.core import ConfigError, DataError, add_config_args, args_settings, load_settings, sample_data_dir
from trailnb.data import load_yolo
from trailnb.synthetic import make_synthetic_dataset
from trailnb.models import load_detector, read_checkpoint
from trailnb.train import TrainConfig, resolve_config, validate as evaluate, train


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


TINY = dict(arch="fasterrcnn_mobilenet_v3_large_320_fpn", max_dim=64, batch_size=8, workers=0, split="none", progress=False)  # 1 step an epoch


def test_resume_with_more_epochs_trains_them(syn, tmp_path):
    "1 epoch, then resumed with epochs=3 given: 3 epochs in the history, the same run as 3 epochs straight through."
    short = train(data=str(syn), epochs=1, out=str(tmp_path), name="short", **TINY)
    assert [h["epoch"] for h in short.history] == [1]
    longer = train(resume=str(short.run_dir), epochs=3, progress=False)
    assert longer.run_dir == short.run_dir and [h["epoch"] for h in longer.history] == [1, 2, 3]
    assert [r["epoch"] for r in csv.DictReader(open(short.run_dir / "metrics.csv"))] == ["1", "2", "3"]
    assert read_checkpoint(short.run_dir / "last.pt")["train_config"]["epochs"] == 3
    # the schedule is the one of a 3-epoch run (warm-up fills epoch 1 of both), so the result is that run's
    straight = train(data=str(syn), epochs=3, out=str(tmp_path), name="straight", **TINY)
    np.testing.assert_allclose([h["loss"] for h in longer.history], [h["loss"] for h in straight.history], rtol=1e-5)
    np.testing.assert_allclose([h["lr"] for h in longer.history], [h["lr"] for h in straight.history], rtol=1e-9)

    # a setting given through any door wins even when it equals TrainConfig's default (the saved run says 3)
    default, run = TrainConfig().epochs, str(short.run_dir)
    parser = add_config_args(argparse.ArgumentParser(), TrainConfig)
    def flags(*argv):  # (config, given) of a command line, as `trailnb train` hands them to train()
        cfg_file, given_flags = args_settings(TrainConfig, parser.parse_args(list(argv)))
        return load_settings(TrainConfig, cfg_file, **given_flags)
    for cfg, given in (load_settings(TrainConfig, resume=run, epochs=default),  # keyword
                       (TrainConfig(resume=run, epochs=default), {"resume", "epochs"}),  # a config and its given names
                       flags("--resume", run, "--epochs", str(default)),  # flags
                       load_settings(TrainConfig, {"resume": run, "epochs": default})):  # YAML keys
        assert resolve_config(cfg, given)[0].epochs == default
    assert resolve_config(*load_settings(TrainConfig, resume=run))[0].epochs == 3  # not given: the saved value
    assert resolve_config(TrainConfig(resume=run, epochs=default))[0].epochs == 3  # a config alone: its changed fields
    assert resolve_config(*flags("--resume", run, "--lr", "none"))[0].lr is None
    assert read_checkpoint(short.run_dir / "last.pt")["train_config"]["lr"] is None
    with pytest.raises(ConfigError, match="max_dim=96.*input size"):
        train(resume=str(short.run_dir), max_dim=96)
    with pytest.raises(ConfigError, match="arch='fasterrcnn_resnet18'"):
        train(resume=str(short.run_dir), arch="fasterrcnn_resnet18", epochs=4)
    with pytest.raises(ConfigError, match="trained 3 epochs"):
        train(resume=str(short.run_dir), epochs=2)


def test_replace_marks_nothing_given(syn, tmp_path):
    "A config made by `dataclasses.replace` counts only its changed fields as given: it resumes a run with other settings."
    short = train(data=str(syn), epochs=1, out=str(tmp_path), name="short", **TINY)  # max_dim 64, saved
    cfg = dataclasses.replace(TrainConfig(), resume=str(short.run_dir), epochs=2, progress=False)
    resumed = train(cfg)  # max_dim is 640 in cfg but was not given: the run keeps its 64
    assert [h["epoch"] for h in resumed.history] == [1, 2] and resumed.detector.max_dim == 64
    with pytest.raises(ConfigError, match="max_dim=640"):  # given explicitly, it is refused by name
        train(cfg, given={"resume", "epochs", "max_dim"})


def test_relaunch_hands_on_exactly_the_given_settings(syn, tmp_path, monkeypatch):
    "nproc > 1 starts torchrun with a YAML file of exactly the settings given (and the run's name), never the defaults."
    import trailnb.distributed as D, trailnb.train as T, yaml
    sent = []
    monkeypatch.setattr(D, "launch_torchrun", lambda n, args: sent.append((n, yaml.safe_load(open(args[-1])))) or 0)
    monkeypatch.setattr(T, "read_run", lambda run_dir: run_dir)  # no processes ran: nothing to read back
    train(dataclasses.replace(TrainConfig(data=str(syn)), nproc=2, out=str(tmp_path)))
    train(data=str(syn), nproc=2, epochs=TrainConfig().epochs, name="n")  # a default given by keyword travels
    (n1, a), (n2, b) = sent
    assert n1 == n2 == 2 and set(a) == {"data", "nproc", "out", "name"} and a["out"] == str(tmp_path)
    assert b == {"data": str(syn), "nproc": 2, "epochs": TrainConfig().epochs, "name": "n"}


def test_a_run_resolves_its_config_once_reads_last_pt_once_and_chooses_the_device_once(syn, tmp_path, monkeypatch):
    "Counted calls: `resolve_config` once per train(), last.pt read once on resume, the device chosen once per run."
    import trailnb.train as T
    calls = {"resolve": 0, "device": 0, "last.pt": 0}
    resolve, load = T.resolve_config, torch.load
    def counted_resolve(*a, **k):
        calls["resolve"] += 1
        return resolve(*a, **k)
    def counted_load(f, *a, **k):
        calls["last.pt"] += Path(str(f)).name == "last.pt"
        return load(f, *a, **k)
    monkeypatch.setattr(T, "resolve_config", counted_resolve)
    monkeypatch.setattr(torch, "load", counted_load)
    for name, mod in list(sys.modules.items()):  # every module's name for get_device: count the choices made
        get = getattr(mod, "get_device", None) if name.startswith("trailnb") else None
        if get is None: continue
        def counted_device(device="auto", _get=get):
            calls["device"] += not isinstance(device, torch.device)  # a torch.device passed on is a choice already made
            return _get(device)
        monkeypatch.setattr(mod, "get_device", counted_device)
    fresh = train(data=str(syn), epochs=1, out=str(tmp_path), name="fresh", **TINY)
    assert calls == {"resolve": 1, "device": 1, "last.pt": 0}, calls
    calls.update(resolve=0, device=0)
    train(resume=str(fresh.run_dir), epochs=2, progress=False)
    assert calls == {"resolve": 1, "device": 1, "last.pt": 1}, calls


def test_truncated_jpeg_is_listed_and_skipped_before_training(syn, tmp_path):
    "A truncated JPEG (as a Label Studio export can hold) is found by the same check as check-data, never mid-epoch."
    data = tmp_path / "messy"; shutil.copytree(syn.parent, data)
    bad = sorted((data / "images").rglob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:bad.stat().st_size // 3])
    name = bad.relative_to(data).as_posix()
    res = train(data=str(data / syn.name), epochs=1, out=str(tmp_path / "runs"), name="messy", **{**TINY, "progress": True})
    assert [h["epoch"] for h in res.history] == [1] and res.skipped == [name]
    assert name in res.summary()  # the run's summary (what `trailnb train` prints) lists it
    check = (res.run_dir / "data_check.txt").read_text()
    assert "truncated_image" in check and name in check
    with pytest.raises(DataError, match=bad.name):  # strict: refused before anything starts
        train(data=str(data / syn.name), epochs=1, out=str(tmp_path / "runs"), name="strict", strict=True, **TINY)
    assert not (tmp_path / "runs" / "strict").exists()


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
    "Trained on the 10 earlier frames of the burst, the detector finds the squirrel in the 4 later, held-out frames."
    d = sample_data_dir("squirrels")
    if d is None: pytest.skip("squirrels sample data not found: set TRAILNB_SAMPLE_DATA")
    res = train(data=str(d / "data.yaml"), split="given", arch="fasterrcnn_resnet18", max_dim=384, epochs=40,
                lr=0.02, batch_size=2, warmup_epochs=2, workers=0, scale_jitter=(0.8, 1.0), color_jitter=0.1,
                val_every=40, out=str(tmp_path), name="sq", progress=False)  # validated once, at the end: no choice made on val
    val, trained_on = load_yolo(d / "data.yaml", split="val"), load_yolo(d / "data.yaml", split="train")
    assert len(val) == 4 and not {r.file_name for r in val.images} & {r.file_name for r in trained_on.images}
    m = evaluate(load_detector(res.run_dir / "last.pt"), val)
    assert m["AP50"] >= 0.9, m


def test_callbacks_are_checked_and_never_dropped(syn, tmp_path):
    "A callback the loop would never call is an error, and so is any callback given to a family with its own trainer."
    class Typo:
        def on_epoch_ends(self, state): pass
    class Fine:
        def on_epoch_end(self, state): pass
    with pytest.raises(ConfigError, match="did you mean on_epoch_end"):
        train(data=str(syn), workers=0, out=str(tmp_path), name="typo", callbacks=[Typo()], progress=False)
    with pytest.raises(ConfigError, match="cannot run trailnb callbacks"):
        train(data=str(syn), arch="yolo11n", out=str(tmp_path), name="yolo", callbacks=[Fine()], progress=False)
    assert not (tmp_path / "typo").exists() and not (tmp_path / "yolo").exists()  # refused before a run folder exists

