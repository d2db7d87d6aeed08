"""What training prints (issue 22, item 5): the result with or without progress, for both families; Ultralytics' log
follows trailnb's progress setting and carries no escape codes into a file or pipe; the outer bar shows each
epoch's own loss. And what it records: the held-out images in every checkpoint, last.pt read once on resume."""
import re
import pytest
import torch
from trailnb.cli import main
from trailnb.synthetic import make_synthetic_dataset
from trailnb.models import load_detector, read_checkpoint
from trailnb.train import train

TINY = dict(arch="fasterrcnn_mobilenet_v3_large_320_fpn", max_dim=64, batch_size=8, workers=0)  # 1 step an epoch
ULTRALYTICS_CHATTER = ("Epoch", "GPU_mem", "Ultralytics", "epochs completed", "Optimizer stripped", "summary", "Scanning")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n=8, size=(128, 96), seed=1)


def test_no_progress_still_prints_the_result(syn, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(syn), "--arch", TINY["arch"], "--max-dim", "64", "--batch-size", "8", "--workers", "0",
                 "--epochs", "1", "--split", "random", "--out", "runs", "--name", "tv", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"Trained {TINY['arch']} on ") and "for 1 epochs" in out, out
    assert "best val AP" in out and out.rstrip().endswith("Run folder: runs/tv (best.pt, last.pt, metrics.csv)"), out
    assert "%|" not in err and "\x1b" not in out + err  # no bars


def test_yolo_progress_off_is_quiet_but_prints_the_result(syn, tmp_path, monkeypatch, capfd):
    "The README tour's call, `train(..., progress=False)` on a yolov8n, without its hidden cell that silenced Ultralytics."
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert main(["train", "--data", str(syn), "--arch", "yolov8n", "--max-dim", "64", "--batch-size", "4", "--workers", "0",
                 "--epochs", "1", "--device", "cpu", "--split", "random", "--out", "runs", "--name", "y", "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("Trained yolov8n on ") and "Run folder: runs/y" in out, out  # trailnb's summary, for YOLO too
    assert len(out.splitlines()) <= 3, out
    for word in ULTRALYTICS_CHATTER: assert word not in out + err, (word, out, err)
    assert "\x1b" not in out + err


def test_ultralytics_log_in_a_file_is_plain_and_beside_trailnbs_progress(syn, tmp_path, monkeypatch, capfd):
    "With progress on and the output a file or pipe: Ultralytics' lines on stderr (where trailnb's progress goes), no escape codes."
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAILNB_PROGRESS", raising=False)  # decided by the stream: not a terminal here, so a log
    capfd.readouterr()
    res = train(data=str(syn), arch="yolov8n", max_dim=64, batch_size=4, workers=0, epochs=1, device="cpu", split="random",
                out="runs", name="log", progress=True)
    out, err = capfd.readouterr()
    assert "1 epochs completed" in err and "epochs completed" not in out, (out[-2000:], err[-2000:])
    assert "\x1b" not in out + err, [l for l in (out + err).splitlines() if "\x1b" in l][:5]
    assert "\r" not in err  # whole lines in a log, as trailnb's own bars write them
    assert res.summary().startswith("Trained yolov8n")


def test_outer_bar_shows_each_epochs_own_loss(syn, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAILNB_PROGRESS", "log")  # one whole line per update: what a log file holds
    res = train(data=str(syn), epochs=2, split="none", out=str(tmp_path), name="bar", progress=True, **TINY)
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("train bar") and "2/2" in l]
    assert lines, "no line of the outer bar after epoch 2"
    shown = re.search(r"loss=([0-9.]+)", lines[-1])[1]
    assert shown == f"{res.history[1]['loss']:.3f}", (lines[-1], [h["loss"] for h in res.history])


def test_checkpoints_record_held_out_images_and_resume_reads_last_pt_once(syn, tmp_path, monkeypatch):
    res = train(data=str(syn), epochs=1, split="random", val_frac=0.25, out=str(tmp_path), name="h", progress=False, **TINY)
    from trailnb.train import check_run_data, TrainConfig
    val = check_run_data(TrainConfig(data=str(syn), split="random", val_frac=0.25)).val
    held = [r.file_name for r in val.images]
    assert held and res.held_out == held
    for name in ("best.pt", "last.pt"): assert read_checkpoint(res.run_dir / name)["held_out"] == held, name
    assert load_detector(res.run_dir / "best.pt").checkpoint_info["held_out"] == held
    assert read_checkpoint(res.run_dir / "last.pt")["held_out"] == held
    none = train(data=str(syn), epochs=1, split="none", out=str(tmp_path), name="n", progress=False, **TINY)
    assert read_checkpoint(none.run_dir / "best.pt")["held_out"] == [] == none.held_out  # nothing was held out

    reads, load = [], torch.load
    def counting(f, *a, **k):
        if str(f).endswith("last.pt"): reads.append(str(f))
        return load(f, *a, **k)
    monkeypatch.setattr(torch, "load", counting)
    more = train(resume=str(res.run_dir), epochs=2, progress=False)
    assert [h["epoch"] for h in more.history] == [1, 2]
    assert reads == [str(res.run_dir / "last.pt")], reads  # the config resolved once, last.pt read once
