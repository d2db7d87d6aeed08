"""Scaling out with torch.distributed: images/s of training (DDP) and inference (shards) with 1 and 2 processes.

Each measurement is a torchrun launch of this file in worker mode (`--worker train|infer`): every process joins
the group (`trailnb.distributed.init_distributed`: gloo on CPU, NCCL on CUDA), takes its share of the work
(`distributed_loader` batches / `shard_items` files) and times it between two barriers; rank 0 reports the
global images/s (each run uses every core: 1 process of 2 threads, 2 of 1; and 1 process of 1 thread for
a core's worth). Training: a from-scratch detector at --max-dim on synthetic camera-trap images, batch
--batch-size per process (so 2 processes train on twice the images per step), after one warm-up step.
Inference: `iter_predictions` over each process's shard of the same images. Processes default to the GPUs when
there are any (one process per GPU), else to CPU processes; it then says what limits the scaling here.

    .venv/bin/python benchmarks/scale.py [--nproc 1 2] [--steps 6] [--n 48] [--max-dim 160] [--device auto]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _setup(a):
    "The process group, the synthetic dataset (rank 0 writes it) and a fresh detector, the same on every rank."
    import torch
    from trailnb.core import seed_everything
    from trailnb.data import load_coco
    from trailnb.distributed import barrier, init_distributed
    from trailnb.models import build_detector
    info = init_distributed(a.device)
    barrier()
    ds = load_coco(Path(a.data))
    seed_everything(0)
    det = build_detector(ARCH, ds.classes, weights=None, max_dim=a.max_dim, device=info.device)
    return torch, info, ds, det


def worker_train(a):
    "Time `--steps` DDP steps (after one warm-up) with batch `--batch-size` per process; rank 0 reports images/s."
    torch, info, ds, det = _setup(a)
    from trailnb.torchdata import TorchDetectionDataset
    from trailnb.distributed import barrier, ddp_model, distributed_loader, set_epoch
    from trailnb.train import TrainConfig, make_loader, make_optimizer, train_one_epoch
    cfg = TrainConfig(arch=ARCH, max_dim=a.max_dim, batch_size=a.batch_size, workers=0, lr=0.005, amp=False)
    gen = torch.Generator()
    loader = distributed_loader(make_loader(TorchDetectionDataset(ds, a.max_dim, train=True), cfg, True, gen), info, gen)
    det.model = ddp_model(det.model, info)
    opt = make_optimizer(det.model, cfg)
    batches = [b for _, b in zip(range(a.steps + 1), loader)]
    train_one_epoch(det, opt, batches[:1], info.device, 0, progress=False)  # warm-up
    barrier(); t = time.perf_counter()
    train_one_epoch(det, opt, batches[1:], info.device, 0, progress=False)
    barrier(); secs = time.perf_counter() - t
    return {"images": (len(batches) - 1) * a.batch_size * info.world_size, "seconds": secs}


def worker_infer(a):
    "Time `iter_predictions` over this process's shard of the images; rank 0 reports images/s."
    torch, info, ds, det = _setup(a)
    from trailnb.distributed import barrier, gather_shards, shard_items
    from trailnb.predict import InferItem, iter_predictions
    det = det.optimize_for_inference()
    items = shard_items([InferItem(str(r.path), r.file_name) for r in ds.images], info.rank, info.world_size)
    list(iter_predictions(det, items[:2], batch_size=a.batch_size, workers=0))  # warm-up
    barrier(); t = time.perf_counter()
    got = list(iter_predictions(det, items, batch_size=a.batch_size, workers=0))
    barrier(); secs = time.perf_counter() - t
    return {"images": len(gather_shards([r.file for r in got])), "seconds": secs}


def run_worker(a):
    from trailnb.distributed import cleanup, init_distributed
    res = {"train": worker_train, "infer": worker_infer}[a.worker](a)
    if init_distributed(a.device).is_main: Path(a.result).write_text(json.dumps(res))
    cleanup()


def measure(kind, nproc, threads, a, tmp):
    "One torchrun launch of this file as a `kind` worker with `nproc` processes of `threads` threads: images/s."
    from trailnb.distributed import torchrun_command
    res = tmp / f"{kind}-{nproc}x{threads}.json"
    args = ["--worker", kind, "--result", res, "--data", a.data, "--steps", a.steps, "--max-dim", a.max_dim,
            "--batch-size", a.batch_size, "--device", a.device]
    p = subprocess.run(torchrun_command(nproc, args, script=__file__), capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if p.returncode: sys.exit(f"{kind} with {nproc} process(es) failed:\n{p.stderr[-3000:]}")
    r = json.loads(res.read_text())
    return r["images"] / r["seconds"]


def limits(rows, device):
    "What bounds the scaling on this machine, with the measured ratios."
    import torch
    cores, gpus = os.cpu_count(), torch.cuda.device_count()
    if device != "cpu" and gpus:
        return (f"{gpus} GPU(s), one process per GPU: the scaling is bounded by the gradient all-reduce (NCCL) of every "
                "step and by JPEG decoding, which needs CPU cores for every GPU; inference also by rank 0's merge.")
    n = max(p for p, _ in rows)
    lines = [f"{cores} CPU core(s) here, shared with other jobs."]
    if (1, 1) in rows and (n, 1) in rows:
        r, o = rows[(n, 1)], rows[(1, 1)]
        lines.append(f"{n} processes x 1 thread vs 1 x 1: train x{r['train'] / o['train']:.2f}, infer x{r['infer'] / o['infer']:.2f} "
                     f"(at most x{min(n, cores)}: one core each; more is noise from the other jobs).")
    wide = [(p, t) for p, t in rows if p == 1 and t > 1]
    if wide and (1, 1) in rows:
        w, o = rows[wide[0]], rows[(1, 1)]
        lines.append(f"1 process x {wide[0][1]} threads vs 1 x 1: train x{w['train'] / o['train']:.2f}, infer "
                     f"x{w['infer'] / o['infer']:.2f}: on shared cores OpenMP threads wait for each other, processes do not.")
    lines.append("What limits the scaling: the cores (each process needs one, and decoding more); then, for training, the "
                 "gradient all-reduce of every step (gloo over TCP on CPU), and for inference rank 0's merge and writing. "
                 "On CPU, more processes pay off across machines (or sockets); on GPUs, one process per GPU.")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per process")
    p.add_argument("--n", type=int, default=48, help="synthetic images (inference runs over all of them)")
    p.add_argument("--max-dim", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=2, help="images per step per process")
    p.add_argument("--device", default="auto", help="auto (GPUs if any), cpu or cuda")
    p.add_argument("--worker", choices=["train", "infer"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker: return run_worker(a)
    from trailnb.synthetic import make_synthetic_dataset
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    a.data = str(make_synthetic_dataset(tmp / "data", n=a.n, size=(a.max_dim * 2, a.max_dim * 3 // 2), seed=0))
    cores = os.cpu_count() or 1
    # every run uses all cores (1 process x 2 threads, 2 x 1), and one process on one thread shows a core's worth
    runs = [(n, max(1, cores // n)) for n in a.nproc] + ([(1, 1)] if cores > 1 and 1 in a.nproc else [])
    rows = {r: {kind: measure(kind, *r, a, tmp) for kind in ("train", "infer")} for r in runs}
    print(f"{'processes x threads':22}{'train images/s':>16}{'infer images/s':>16}")
    for (n, t), r in rows.items(): print(f"{f'{n} x {t}':22}{r['train']:16.2f}{r['infer']:16.2f}")
    print(limits(rows, a.device))


if __name__ == "__main__":
    main()
