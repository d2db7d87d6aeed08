"""YOLO runs resume like torchvision runs (issue 22, item 4): after Ctrl-C (only Ultralytics' weights/last.pt need
exist), from RUN/weights/last.pt, and a finished run with more epochs; offline, no traceback, the epochs done are not
trained again, and every checkpoint names the held-out images. Also: trailnb's calls into Ultralytics leave torch's
thread count as it was (issue 28)."""
import socket
from pathlib import Path
import pytest
import torch
from trailnb.cli import main
from trailnb.synthetic import make_synthetic_dataset
from trailnb.models import load_detector, read_checkpoint
from trailnb.train import TrainConfig, check_run_data, held_out_names, train


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n=12, size=(128, 96), seed=1)


@pytest.fixture
def no_network(monkeypatch):
    "Every DNS lookup or connection is recorded and refused (Ultralytics is imported already: it looks them up at call time)."
    tried = []
    def refuse(what):
        def f(*a, **k):
            tried.append(what)
            raise OSError(f"network access attempted in an offline test: {what}")
        return f
    for name in ("getaddrinfo", "gethostbyname", "create_connection"): monkeypatch.setattr(socket, name, refuse(name))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    return tried


@pytest.fixture
def epochs_started(monkeypatch):
    "Ultralytics' trainer reports each epoch it starts (0-based) here; `stop_at[0]` set: Ctrl-C as that epoch starts."
    import trailnb.yolo as ty
    ty.import_ultralytics()
    from ultralytics.utils import callbacks
    seen, stop_at = [], [None]
    def record(trainer):
        seen.append(trainer.epoch)
        if trainer.epoch == stop_at[0]:
            stop_at[0] = None
            raise KeyboardInterrupt
    monkeypatch.setitem(callbacks.default_callbacks, "on_train_epoch_start",
                        [*callbacks.default_callbacks["on_train_epoch_start"], record])
    return seen, stop_at


@pytest.mark.slow  # three short YOLO trainings (95 s measured on a busy 2-core machine); more epochs alone: nbs/07a_yolo_train.ipynb
def test_yolo_run_resumes_after_ctrl_c_and_with_more_epochs(syn, tmp_path, monkeypatch, capsys, no_network, epochs_started):
    seen, stop_at = epochs_started
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    flags = ["--data", str(syn), "--arch", "yolov8n", "--epochs", "2", "--max-dim", "64", "--batch-size", "4", "--workers", "0",
             "--device", "cpu", "--split", "random", "--val-frac", "0.25", "--out", "runs", "--name", "y", "--no-progress"]
    stop_at[0] = 1  # Ctrl-C as epoch 2 starts
    assert main(["train", *flags]) == 130
    err = capsys.readouterr().err
    assert "interrupted after epoch 1 of 2; continue it with --resume runs/y" in err and "Traceback" not in err, err
    run = tmp_path / "runs" / "y"
    held = held_out_names(*check_run_data(TrainConfig(data=str(syn), split="random", val_frac=0.25))[:2])
    assert held and read_checkpoint(run / "last.pt")["held_out"] == held
    assert read_checkpoint(run / "last.pt")["resume"]["epochs_done"] == 1

    (run / "last.pt").unlink()  # Ctrl-C before trailnb wrote its own: only Ultralytics' weights/last.pt is there
    seen.clear()
    assert main(["train", "--resume", "runs/y", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert seen == [1], seen  # epoch 2 only: the finished epoch 1 is not trained again
    assert "Trained yolov8n" in out and "for 2 epochs" in out and "Run folder: runs/y" in out, out
    assert "Traceback" not in err and "\x1b" not in out + err, err
    assert [h["epoch"] for h in load_run_history(run)] == [1, 2]

    seen.clear()  # finished, then more epochs, naming Ultralytics' own (stripped) file: trailnb's last.pt holds the state
    assert main(["train", "--resume", "runs/y/weights/last.pt", "--epochs", "3", "--no-progress"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert seen == [2] and "for 3 epochs" in out, (seen, out)
    assert "Traceback" not in err and "\x1b" not in out + err and "coco8" not in out + err, err
    assert [h["epoch"] for h in load_run_history(run)] == [1, 2, 3]
    for name in ("best.pt", "last.pt"):
        assert read_checkpoint(run / name)["held_out"] == held, name
    assert load_detector(run / "best.pt", device="cpu").checkpoint_info["held_out"] == held
    assert no_network == []  # offline: no coco8.yaml, no download
    assert torch.get_num_threads() == threads  # Ultralytics' trainer left torch's thread count alone


def load_run_history(run: Path) -> list:
    import csv
    with open(run / "metrics.csv", newline="") as f: return [{"epoch": int(r["epoch"])} for r in csv.DictReader(f)]


def test_yolo_calls_keep_torch_threads(tmp_path):
    "Ultralytics' select_device sets torch's threads to min(8, cores - 1); a trailnb build, load or predict leaves them."
    import numpy as np
    import trailnb.yolo as ty
    from trailnb.models import build_detector
    ty.import_ultralytics()
    from ultralytics.utils import NUM_THREADS
    before = torch.get_num_threads()
    want = NUM_THREADS + 1  # never what Ultralytics would set
    torch.set_num_threads(want)
    try:
        img = np.zeros((96, 128, 3), np.uint8)
        det = build_detector("yolov8n", ["a", "b"], max_dim=64, device="cpu")
        det.predict(img, score_thresh=0.0)
        assert torch.get_num_threads() == want
        pt = ty.write_ultralytics_checkpoint("yolov8n.yaml", tmp_path / "y.pt", ["a"])
        loaded = load_detector(pt, device="cpu")
        loaded.predict([img, img], score_thresh=0.0)
        assert torch.get_num_threads() == want
        loaded.save(tmp_path / "t.pt")
        load_detector(tmp_path / "t.pt", device="cpu").predict(img)
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
