"""torch.distributed with real processes (gloo on CPU, 2 ranks, tiny models): DDP with batch b per rank trains as one
process with batch 2b (a bare model, and trailnb's training loop); distributed validation equals one process exactly;
sharded inference over a card with hidden and broken files writes what one process writes, and a SIGKILLed rank
resumes without losing or repeating an image; torchrun launches `python -m trailnb` (`--nproc`, the workflow)."""
import json, os, signal, socket, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
import torch
import torch.multiprocessing as mp

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"
WORLD, B, STEPS, N = 2, 3, 4, 24  # 24 images: 4 global batches of 6 per epoch (an uneven last batch would be
# weighted differently: DDP averages the ranks' mean losses)


def _cli(*args, **kw):
    "`python -m trailnb ARGS` in a subprocess, its output captured."
    return subprocess.run([sys.executable, "-m", "trailnb", *map(str, args)], capture_output=True, text=True, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 4, generator=g)
    return torch.utils.data.TensorDataset(x, (x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))[:, None])


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _loader(batch_size, gen):
    "The one-process training loader: random order from `gen`, batches of `batch_size` (as trailnb.train.make_loader)."
    return torch.utils.data.DataLoader(_data(), batch_size=batch_size, sampler=torch.utils.data.RandomSampler(range(N), generator=gen))


def _train(model, loader, lr, steps, epoch_start=None):
    "`steps` SGD steps of mean squared error; `epoch_start(epoch)` before each pass over the loader."
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    done, epoch = 0, 0
    while done < steps:
        epoch_start(epoch)
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            done += 1
            if done == steps: break
        epoch += 1
    return model


def _refuse(rank):
    from trailnb.core import ConfigError
    raise ConfigError(f"refused on rank {rank}")


def _worker(rank, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from trailnb.core import ConfigError
    from trailnb.distributed import (all_gather_object, broadcast_object, cleanup, distributed_loader, gather_batches,
                                     gather_shards, init_distributed, run_on_main, scale_lr, set_epoch, shard_batches,
                                     shard_items)
    info = init_distributed("cpu")
    try:
        gen = torch.Generator()
        loader = distributed_loader(_loader(B, gen), info, gen, seed=0)
        # lr 0.05 is tuned for one process with batch B; scaled for the global batch of WORLD * B
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        _train(ddp, loader, scale_lr(0.05, info.world_size), 2 * STEPS, lambda e: set_epoch(loader, e))
        params = torch.cat([p.detach().flatten() for p in ddp.module.parameters()])
        g9 = torch.Generator()  # 9 items in batches of 2: 5 batches, so rank 1 repeats one to keep in step
        odd = distributed_loader(torch.utils.data.DataLoader(list(range(9)), batch_size=2,
                                 sampler=torch.utils.data.RandomSampler(range(9), generator=g9)), info, g9, seed=1)
        res = {"rank": info.rank, "world": info.world_size, "backend": info.backend, "is_main": info.is_main,
               "params": params.tolist(), "all_params": [p.tolist() for p in all_gather_object(params)],
               "batches": len(loader), "odd": [b.tolist() for b in odd],
               "name": broadcast_object(f"from-{info.rank}"),
               "gathered": gather_shards(shard_items(list(range(7)), info.rank, info.world_size))}
        res["batched"] = gather_batches([f"p{i}" for i in shard_batches(7, 2, info.rank, info.world_size)], 2)
        try: run_on_main(_refuse, info.rank)
        except ConfigError as e: res["error"] = str(e)
        Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    finally: cleanup()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_process_group_and_collectives(ranks):
    assert [(r["rank"], r["world"], r["backend"], r["is_main"]) for r in ranks] == [(0, 2, "gloo", True), (1, 2, "gloo", False)]
    assert [r["name"] for r in ranks] == ["from-0", "from-0"]  # rank 0 decides
    assert [r["batches"] for r in ranks] == [4, 4]  # 24 images in batches of 3: 8 batches, 4 per rank
    # 5 batches of 9 items: 3 per rank, every item in one, and the first batch repeated by rank 1
    odd = ranks[0]["odd"] + ranks[1]["odd"]
    assert [len(r["odd"]) for r in ranks] == [3, 3] and odd[-1] == odd[0]
    assert sorted(i for b in odd[:-1] for i in b) == list(range(9))
    for r in ranks:
        assert r["gathered"] == list(range(7))  # 7 items sharded and gathered: each once, in order
        assert r["batched"] == [f"p{i}" for i in range(7)]  # whole batches of 2 sharded and gathered
        assert r["error"] == "refused on rank 0"  # rank 0's error, raised on every rank


def test_ddp_equals_one_process_with_the_global_batch(ranks):
    "8 DDP steps (2 epochs) with batch 3 on each of 2 ranks == 8 one-process steps with batch 6, same data order."
    from trailnb.distributed import epoch_seed
    p0, p1 = (torch.tensor(r["params"]) for r in ranks)
    assert torch.equal(p0, p1)  # DDP keeps the ranks identical (bit for bit)
    assert torch.equal(torch.tensor(ranks[0]["all_params"][1]), p1)
    gen = torch.Generator()
    one = _train(_model(), _loader(WORLD * B, gen), 0.05 * WORLD, 2 * STEPS, lambda e: gen.manual_seed(epoch_seed(0, e)))
    ref = torch.cat([p.detach().flatten() for p in one.parameters()])
    # the same arithmetic up to the order of float additions (gradient all-reduce): 1e-5 relative is generous
    torch.testing.assert_close(p0, ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ref, torch.cat([p.detach().flatten() for p in _model().parameters()]))  # it did train


def test_torchrun_launches_python_m_trailnb(capfd):
    "`launch_torchrun` runs `python -m torch.distributed.run --standalone ... -m trailnb ARGS` and waits for it."
    from trailnb.distributed import launch_torchrun
    assert launch_torchrun(2, ["--version"]) == 0
    assert capfd.readouterr().out.count("trailnb ") == 2


def test_merge_refuses_a_shard_of_another_run(tmp_path):
    from trailnb.core import ConfigError, Detections
    from trailnb.distributed import shard_checkpoint, shard_checkpoints, shard_items
    from trailnb.predict import ResultsLog, merge_shards
    from trailnb.results import ImageResult
    files = [f"cam{i % 3}/img{i}.jpg" for i in range(7)]
    for r, sig in enumerate([{"model": "a.pt"}, {"model": "b.pt"}]):
        log = ResultsLog(shard_checkpoint(tmp_path, r), sig)
        for f in shard_items(files, r, 2): log.add(ImageResult(f, 8, 8, Detections.empty()))
        log.close()
    assert [p.name for p in shard_checkpoints(tmp_path)] == ["checkpoint.rank0.jsonl", "checkpoint.rank1.jsonl"]
    with pytest.raises(ConfigError, match="different settings"): merge_shards(shard_checkpoints(tmp_path), {"model": "a.pt"})
    assert sorted(merge_shards(shard_checkpoints(tmp_path)[:1], {"model": "a.pt"})) == sorted(files[0::2])


# ---- distributed validation: each image once, the one-process metrics exactly -------------------------------------

class GridDetector(torch.nn.Module):
    """A deterministic test detector with non-trivial metrics on the synthetic frames: boxes on a grid of three sizes,
    scored by how much they differ from the whole image (the synthetic animals are shapes on a plain scene)."""
    def __init__(self, num_classes, max_dim=64, pretrained_backbone=False):
        super().__init__()
        self.num_classes, self.unused = num_classes, torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, targets=None):
        out = []
        for im in images:
            boxes, scores = [], []
            for s in (12, 20, 32):
                if min(im.shape[-2:]) < s: continue
                pooled = torch.nn.functional.avg_pool2d(im[None], s, stride=4)[0]
                score = (pooled - im.mean((1, 2))[:, None, None]).abs().sum(0)
                ys, xs = torch.meshgrid(torch.arange(score.shape[0]) * 4., torch.arange(score.shape[1]) * 4., indexing="ij")
                boxes.append(torch.stack([xs, ys, xs + s, ys + s], -1).reshape(-1, 4)); scores.append(score.flatten())
            b, sc = torch.cat(boxes), torch.cat(scores)
            top = sc.argsort(descending=True)[:100]
            out.append({"boxes": b[top], "scores": sc[top] / (1 + sc[top]), "labels": top % (self.num_classes - 1) + 1})
        return out


class TinyDetector(torch.nn.Module):
    """A detector whose training loss is a mean over images of per-image terms, and no batch statistics: DDP's
    average over ranks of each rank's mean is then exactly the mean over the global batch (real detectors differ:
    BatchNorm statistics and losses normalised per batch, see 03a_distributed)."""
    def __init__(self, num_classes, max_dim=64, pretrained_backbone=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 4 + num_classes - 1)

    def forward(self, images, targets=None):
        outs = [self.head(torch.relu(self.conv(im[None])).mean((2, 3)))[0] for im in images]
        sizes = [torch.tensor([im.shape[-1], im.shape[-2]] * 2, dtype=torch.float32) for im in images]
        boxes = []
        for o, s in zip(outs, sizes):
            a, b = o[:4].sigmoid().view(2, 2)
            boxes.append(torch.cat([torch.minimum(a, b), torch.maximum(a, b)]) * s)
        if self.training:
            per = []
            for o, bx, s, t in zip(outs, boxes, sizes, targets):
                if len(t["labels"]): per.append(torch.nn.functional.cross_entropy(o[4:][None], t["labels"][:1] - 1) + torch.nn.functional.l1_loss(bx / s, t["boxes"][0] / s))
                else: per.append((o ** 2).mean())
            return {"loss_tiny": torch.stack(per).mean()}
        res = []
        for o, bx in zip(outs, boxes):
            p = o[4:].softmax(0)
            res.append({"boxes": bx[None], "scores": p.max()[None], "labels": p.argmax()[None] + 1})
        return res




def _register_test_archs():
    from trailnb.models import register_architecture
    register_architecture("grid_test", GridDetector, description="test only", overwrite=True)
    register_architecture("tiny_test", TinyDetector, description="test only", overwrite=True)


def _validate_worker(rank, port, out, data):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _register_test_archs()
    from trailnb.data import load_coco
    from trailnb.distributed import cleanup, init_distributed
    from trailnb.models import build_detector
    from trailnb.train import validate
    info = init_distributed("cpu")
    try:
        ds = load_coco(data)
        m = validate(build_detector("grid_test", ds.classes, max_dim=64, device="cpu"), ds, batch_size=2, info=info)
        Path(out, f"val{rank}.json").write_text(json.dumps(m))
    finally: cleanup()


def test_distributed_validation_equals_one_process_exactly(tmp_path):
    "7 images (odd), batch 2, 2 ranks: every image counted once, the same COCO metrics to the last digit, on both ranks."
    from trailnb.data import load_coco
    from trailnb.synthetic import make_synthetic_dataset
    from trailnb.models import build_detector
    from trailnb.train import validate
    _register_test_archs()
    data = make_synthetic_dataset(tmp_path / "data", n=7, size=(96, 64), seed=1)
    mp.spawn(_validate_worker, args=(_free_port(), str(tmp_path), str(data)), nprocs=WORLD, join=True)
    ds = load_coco(data)
    one = json.loads(json.dumps(validate(build_detector("grid_test", ds.classes, max_dim=64, device="cpu"), ds, batch_size=2)))
    got = [json.loads((tmp_path / f"val{r}.json").read_text()) for r in range(WORLD)]
    assert got[0] == got[1] == one
    assert one["AP50"] > 0 and one["AR100"] > 0  # not a trivial zero


# ---- distributed inference: the same results as one process, a killed rank resumed -------------------------------


from test_infer import tiny_model  # the inference tests' tiny from-scratch checkpoint (a fixture)


def _card(root) -> list:
    """A card with what real cards hold besides photos: hidden files and folders (macOS `._` forks, `.DS_Store`, a
    `.thumbnails/` folder), unreadable files, and photos of two orientations; 13 inputs (odd: 2 ranks cannot split
    it evenly). Returns the keys a run must report."""
    from PIL import Image
    import numpy as np
    keys = []
    for i in range(10):
        k = f"cam{i % 3}/{'deep/' if i % 4 == 0 else ''}img{i:02d}.jpg"
        p = root / k; p.parent.mkdir(parents=True, exist_ok=True)
        size = (96, 64) if i % 2 else (64, 96)
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (size[1], size[0], 3), np.uint8)).save(p, quality=90)
        keys.append(k)
    (root / "cam0/zero.jpg").write_bytes(b"")
    (root / "cam1/text.jpg").write_text("not a JPEG")
    (root / "cam2/trunc.jpg").write_bytes((root / keys[0]).read_bytes()[:300])
    keys += ["cam0/zero.jpg", "cam1/text.jpg", "cam2/trunc.jpg"]
    for hidden in ["cam0/._img00.jpg", "cam1/.DS_Store", ".thumbnails/img01.jpg", "cam2/.hidden/img.jpg"]:
        (root / hidden).parent.mkdir(parents=True, exist_ok=True)
        (root / hidden).write_bytes((root / keys[1]).read_bytes())
    return sorted(keys)


def _outputs(out) -> dict:
    "What a run wrote, comparable between runs: results files without run-specific info, and the sorted tree."
    md = json.loads((out / "results_md.json").read_text())
    coco = json.loads((out / "results_coco.json").read_text())
    tree = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.parent != out)
    return {"md": (md["detection_categories"], md["images"]), "coco": (coco["images"], coco["annotations"]),
            "csv": (out / "results.csv").read_text(), "tree": tree,
            "left": sorted(p.name for p in out.glob("checkpoint*"))}


@pytest.fixture(scope="module")
def card_and_ref(tiny_model, tmp_path_factory):
    from trailnb.infer import run_inference
    tmp = tmp_path_factory.mktemp("card")
    keys = _card(tmp / "in")
    ref = run_inference(model=str(tiny_model), input=str(tmp / "in"), out=str(tmp / "ref"), **RUN)
    return tmp / "in", keys, ref, _outputs(tmp / "ref")


RUN = dict(batch_size=2, workers=0, device="cpu", sort="copy", sort_thresh=0.0, score_thresh=0.0)


def _flags(d):
    return [x for k, v in d.items() for x in (f"--{k.replace('_', '-')}", v)]


def test_sharded_inference_equals_one_process(tiny_model, card_and_ref, tmp_path):
    src, keys, ref, ref_out = card_and_ref
    assert sorted([f for f, _ in ref.failures] + [k for k in keys if k not in dict(ref.failures)]) == keys
    assert len(ref.failures) == 3 and ref.images == 10  # hidden files are not inputs
    p = _cli("infer", tiny_model, src, "--out", tmp_path / "out", "--nproc", 2, *_flags(RUN))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("images/frames") == 1, p.stdout  # one summary: rank 0's
    got = _outputs(tmp_path / "out")
    assert got == ref_out  # same files, detections, failures and sorted tree; no checkpoint left
    files = [im["file"] for im in got["md"][1]]
    assert len(files) == len(set(files)) == 13


_SLOW_SHARD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import trailnb.models as M
    _orig = M.load_detector
    def _slow(*a, **k):
        d = _orig(*a, **k); f = d.predict_tensors
        def g(*a, **k):
            time.sleep(1.0); return f(*a, **k)
        d.predict_tensors = g
        return d
    M.load_detector = _slow
    out = Path(sys.argv[3]); out.mkdir(parents=True, exist_ok=True)
    (out / f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
    from trailnb.infer import run_inference
    run_inference(model=sys.argv[1], input=sys.argv[2], out=sys.argv[3], checkpoint_every=1, batch_size=2, workers=0,
                  device="cpu", sort="copy", sort_thresh=0.0, score_thresh=0.0)
""")


def _lines(f): return f.read_bytes().count(b"\n") if f.exists() else 0


def test_sigkill_one_rank_then_resume(tiny_model, card_and_ref, tmp_path):
    "SIGKILL rank 1 part-way; torchrun stops rank 0; `--resume` under torchrun again gives the uninterrupted results."
    from trailnb.distributed import shard_checkpoint, torchrun_command
    src, keys, ref, ref_out = card_and_ref
    out = tmp_path / "out"
    script = tmp_path / "slow_shard.py"; script.write_text(_SLOW_SHARD)
    p = subprocess.Popen(torchrun_command(2, [tiny_model, src, out], script=str(script)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while (_lines(shard_checkpoint(out, 1)) < 2 or _lines(shard_checkpoint(out, 0)) < 2) and p.poll() is None \
            and time.time() - t0 < 180: time.sleep(0.05)  # a batch of each rank is in
    assert p.poll() is None, "the slowed-down run finished before it could be killed"
    os.kill(int((out / "pid1").read_text()), signal.SIGKILL)
    assert p.wait(timeout=120) != 0  # torchrun reports the failure (and stops rank 0)
    done = sum(_lines(shard_checkpoint(out, r)) - 1 for r in range(2))
    assert 2 <= done < 13 and not (out / "results_md.json").exists()
    r = _cli("infer", tiny_model, src, "--out", out, "--nproc", 2, "--resume", *_flags(RUN))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"({done} from checkpoint)" in r.stdout, r.stdout
    assert _outputs(out) == ref_out  # nothing lost, nothing twice, no shard left


# ---- DDP training through trailnb.train: the same model as one process with the global batch ---------------------

def _dump_params(out, rank):
    "A callback writing the live model's parameters at the start and end of training (it runs on every rank)."
    def flat(s): return torch.cat([p.detach().flatten() for p in s.detector.model.parameters()])
    class Dump:
        def on_train_start(self, s): torch.save(flat(s), Path(out, f"start{rank}.pt"))
        def on_train_end(self, s): torch.save(flat(s), Path(out, f"params{rank}.pt"))
    return Dump()


def _train_worker(rank, port, out, kw):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TRAILNB_PROGRESS="off")
    torch.set_num_threads(1)
    _register_test_archs()
    from trailnb.distributed import cleanup
    from trailnb.train import train
    try: train(callbacks=[_dump_params(out, rank)], **kw)
    finally: cleanup()


@pytest.fixture(scope="module")
def finetune(tmp_path_factory):
    """Fine-tuning settings for a tiny Faster R-CNN at 64 px: starting from a checkpoint freezes BatchNorm (as with
    pretrained weights), no augmentation, 8 synthetic images of one size."""
    from trailnb.core import seed_everything
    from trailnb.synthetic import make_synthetic_dataset
    from trailnb.models import build_detector
    tmp = tmp_path_factory.mktemp("finetune")
    data = make_synthetic_dataset(tmp / "data", n=12, size=(96, 64), seed=0)
    seed_everything(0)
    start = tmp / "start.pt"
    build_detector(ARCH, ["deer", "fox", "bird"], weights=None, max_dim=64, device="cpu").save(start)
    return tmp, dict(data=str(data), arch=ARCH, weights=str(start), max_dim=64, epochs=2, workers=0, device="cpu",
                     hflip=0.0, scale_jitter=(1.0, 1.0), color_jitter=0.0, split="random", val_frac=0.34,
                     warmup_epochs=0.0, progress=False, out=str(tmp / "runs"))


@pytest.mark.parametrize("arch, tol", [("tiny_test", 1e-5), (ARCH, 1e-2)])
def test_ddp_training_equals_one_process_with_twice_the_batch(finetune, arch, tol):
    """2 epochs (8 steps) of DDP with batch 1 on each of 2 ranks == one process with batch 2, same data order.
    tiny_test's loss is a mean of per-image terms, so the two are the same arithmetic up to the order of float
    additions (tolerance 1e-5 of the distance trained). Faster R-CNN normalises its box-head losses by the proposals
    of the whole batch, so DDP's mean of per-rank means weighs images a little differently: measured 7e-4 of the
    distance trained (BatchNorm frozen, as when fine-tuning; trained from scratch, BatchNorm statistics per rank
    differ more: SyncBatchNorm on GPUs); tolerance 1e-2."""
    _register_test_archs()
    tmp, kw = finetune
    kw = {**kw, "arch": arch, "weights": kw["weights"] if arch == ARCH else None}
    out = tmp / f"ddp-{arch}"; out.mkdir()
    # lr is the one-process value for batch 1; trailnb scales it by the world size (linear rule)
    mp.spawn(_train_worker, args=(_free_port(), str(out), {**kw, "batch_size": 1, "lr": 0.005, "name": f"ddp-{arch}"}),
             nprocs=WORLD)
    r0, r1 = (torch.load(out / f"params{r}.pt") for r in range(WORLD))
    assert torch.equal(r0, r1)  # the ranks hold identical parameters
    from trailnb.train import train
    train(callbacks=[_dump_params(out, "one")], **{**kw, "batch_size": 2, "lr": 0.01, "name": f"one-{arch}"})
    ref, start = torch.load(out / "paramsone.pt"), torch.load(out / "startone.pt")
    assert torch.equal(start, torch.load(out / "start0.pt"))  # the same start
    moved = (ref - start).norm()
    assert moved > 0 and (r0 - ref).norm() < tol * moved, ((r0 - ref).norm() / moved).item()
    # rank 0 wrote the run folder as one process does; validation counted every held-out image once
    ddp, one = tmp / f"runs/ddp-{arch}", tmp / f"runs/one-{arch}"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in one.iterdir())
    assert _col(ddp / "metrics.csv", "epoch") == [1, 2]
    assert _col(ddp / "metrics.csv", "val_AP") == pytest.approx(_col(one / "metrics.csv", "val_AP"), abs=1e-3)


def _col(csv_path, name):
    import csv
    return [float(r[name]) for r in csv.DictReader(open(csv_path))]


# ---- YOLO: Ultralytics' own processes, never inside trailnb's ------------------------------------------------------

def test_yolo_with_nproc_or_under_torchrun_is_a_config_error(monkeypatch, tmp_path):
    "Ultralytics starts its own processes for device='0,1': nproc > 1, or an outer torchrun, is a clear error, not a hang."
    from trailnb.core import ConfigError
    from trailnb.synthetic import make_synthetic_dataset
    from trailnb.train import train
    data = str(make_synthetic_dataset(tmp_path / "data", n=4, size=(96, 64)))
    with pytest.raises(ConfigError, match="device='0,1'"): train(data=data, arch="yolov8n", nproc=2, out=str(tmp_path / "runs"))
    for k, v in dict(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1").items(): monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match="torchrun"): train(data=data, arch="yolov8n", out=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()  # refused before anything was written


# ---- the command line and the workflow start torchrun --------------------------------------------------------------

def test_train_nproc_then_resume_in_two_processes(finetune):
    "`trailnb train --nproc 2` writes one run folder (rank 0); `--resume --epochs 2 --nproc 2` continues it."
    tmp, kw = finetune
    run = tmp / "runs" / "cli"
    args = ["train", "--data", kw["data"], "--weights", kw["weights"], "--max-dim", 64, "--epochs", 1, "--batch-size", 2,
            "--workers", 0, "--device", "cpu", "--split", "random", "--out", tmp / "runs", "--name", "cli", "--nproc", 2]
    p = _cli(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("Trained ") == 1  # rank 0's summary only
    assert sorted(f.name for f in run.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.csv"]
    p = _cli("train", "--resume", run, "--epochs", 2, "--nproc", 2, "--workers", 0)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _col(run / "metrics.csv", "epoch") == [1, 2]
    from trailnb.models import read_checkpoint
    assert read_checkpoint(run / "last.pt")["resume"]["epoch"] == 2


def test_train_workflow_with_nproc(tmp_path):
    "The papermill train workflow with nproc=2 trains in two processes and reports the run as usual."
    from trailnb.workflows import run_workflow
    params = {"nproc": 2, "epochs": 1, "max_dim": 64, "synthetic_n": 8, "workers": 0, "device": "cpu", "batch_size": 2,
              "split": "random"}
    out = run_workflow("train", params, out=tmp_path, run_name="ddp", progress=False)
    m = json.loads((Path(out) / "metrics.json").read_text())
    assert m["epochs"] == 1 and Path(m["checkpoint"]).is_file()
