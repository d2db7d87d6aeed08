"""Batch inference speed and memory on the real camtrap31 photos (1.3-20 MP), cycled to N images.

Prints images/s for (1) the naive loop simple scripts use (PIL at full size, to tensor, one image at a time,
a plain torchvision model doing its own resize), (2) trailnb's streaming pipeline (`iter_predictions` after
`optimize_for_inference`: JPEG draft decoding at max_dim, batches of one shape, at the package's default batch
size, workers and threads unless --batch-size/--workers/--threads say otherwise) and (3) the model alone on
pre-decoded tensors in the very batches the pipeline forms, the ceiling for any input pipeline, each in fp32
(the default) and, on a CPU with native bfloat16, bf16 (opt-in), with ratios against the naive loop and
pipeline / model alone. Then peak memory of the whole `run_inference` path after --rss-n and 10x as many
images, each in a fresh subprocess (goal: flat). With --model CKPT --data COCO it also compares fp32 and bf16
AP on labelled images. --split measures batch size x decoding workers x torch threads (what `compute_split`'s
defaults come from); --arch yolov9c --max-dim 640 runs a large YOLO (random weights: speed only).
It runs against an older trailnb too (PYTHONPATH=a copy of it): then the old loop's own defaults apply.

Measured on a 2-core Xeon (AVX512-BF16/AMX), no GPU, shared with other jobs (load 5-11), the 31 camtrap31
photos, untrained fasterrcnn_mobilenet_v3_large_320_fpn at 320 px, the old loop (batch 8 padded to a
batch-wide canvas, 2 workers) and the new one (batches of one shape, batch 1, no worker) run alternately, 2
rounds. Wall-clock images/s on that machine swung 3x between runs at 2 threads (OpenMP threads wait for each
other when the system parks one: 2 threads ran 5x slower than 1 there), so compare CPU seconds per image at
--threads 1 (model alone / pipeline, higher is less overhead):
                       old loop         new loop
  fp32                 0.79, 0.80       0.91, 0.92
  bf16                 0.68, 0.70       0.81, 0.83
  wall-clock pipeline / model alone at 1 thread: old fp32 0.84, 0.83, bf16 0.84, 0.69; new fp32 0.75, 0.94,
  bf16 0.79, 0.69 (noise of this size).
bf16 vs fp32, model alone, CPU s per image: 1.3x less at batch 1 (new default), 1.6-1.7x at batch 8.
Batch size, one shape, 1 thread, CPU s per image: YOLOv9-c at 640: batch 1 0.65-0.68, batch 8 0.72-0.76;
this small model at 320: batch 1 0.081-0.086, batch 8 0.071-0.077. Decoding: ~0.01 s of CPU per photo at 320.
--split on that busy machine (best of 2 rounds, images/s; CPU s per image): 1 thread 10.6-11.0 (0.088-0.094) for
batch 1 or 8 and 0-2 workers alike; 2 threads 0.6-2.3 (0.35-0.64): threads, not workers or batch, decide there.
YOLO11n (untrained) at 640 px, 62 photos, 2 threads, on the idle machine, 2026-12-07 evening, at its new CPU
default batch 8: pipeline / model alone fp32 0.70, 0.77; bf16 0.60, 0.59 (bf16 / fp32: pipeline 1.35-1.40x,
model 1.65-1.76x); CPU per image pipeline / model fp32 0.103-0.104 / 0.085-0.092. For a model this small the
decoding of full-size JPEGs (~0.012 s each even in draft mode) is a fifth of the work; decoding in a thread ahead
of the model was tried and gave no measurable gain (0.68, 0.70).
Usage: python benchmarks/infer.py [--n 300] [--naive 40] [--rss-n 300] [--only-rss] [--split] [--model M --data D]
"""
import argparse, json, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _items(n):
    from trailnb.core import sample_data_dir
    try: from trailnb.predict import InferItem
    except ImportError: from trailnb.infer import InferItem  # an older trailnb (before trailnb.predict)
    cam = sample_data_dir("camtrap31")
    if cam is None: sys.exit("camtrap31 sample data not found (set TRAILNB_SAMPLE_DATA); nothing to benchmark")
    paths = sorted((cam / "images").glob("*"))
    return [InferItem(str(paths[i % len(paths)]), f"rep{i // len(paths)}/{paths[i % len(paths)].name}") for i in range(n)]


def _detector(max_dim, model=None, arch=ARCH):
    from trailnb.core import seed_everything
    from trailnb.models import build_detector, load_detector
    if model: return load_detector(model, device="cpu")
    seed_everything(0)
    return build_detector(arch, ["animal", "person", "vehicle"], weights=None, max_dim=max_dim, device="cpu")


def split_of(batch_size=None, workers=None, threads=None, det=None):
    "(batch_size, workers, threads) a run uses: the package's defaults for None, `det`'s own CPU batch where it has one (an old trailnb: its loop's 8, 2 and torch's)."
    import inspect, torch, trailnb.infer as ti
    if hasattr(ti, "compute_split"):
        own = {"cpu_batch": det.cpu_batch} if hasattr(det, "cpu_batch") and "cpu_batch" in inspect.signature(ti.compute_split).parameters else {}
        s = ti.compute_split("cpu", batch_size, workers, threads, **own)
        return s.batch_size, s.workers, s.threads
    return batch_size or 8, 2 if workers is None else workers, threads or torch.get_num_threads()


def _cpu_s() -> float:
    "CPU seconds of this process and its finished children (the decoding workers, once joined)."
    return sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for k in ("ru_utime", "ru_stime"))


CPU = {}  # name -> CPU seconds per image of the last measurement (steadier than wall time on a busy machine)


def pipeline(det, items, max_dim, batch_size=None, workers=None, precision="fp32", threads=None):
    "images/s of `iter_predictions` (trailnb's streaming pipeline) at a split, as `run_inference` sets it up, and its results."
    import torch
    try: from trailnb.predict import iter_predictions
    except ImportError: from trailnb.infer import iter_predictions  # an older trailnb (before trailnb.predict)
    bs, w, th = split_of(batch_size, workers, threads, det)
    torch.set_num_threads(th)
    c, t = _cpu_s(), time.perf_counter(); res = list(iter_predictions(det, items, max_dim, bs, w, precision=precision))
    CPU["pipeline"] = (_cpu_s() - c) / len(res)
    return len(res) / (time.perf_counter() - t), res


def naive(model, items):
    "images/s of what simple scripts do: PIL at full size, to tensor, one image per call of a plain model."
    import torch
    from PIL import Image
    from torchvision.transforms.functional import to_tensor
    model.eval(); t = time.perf_counter()
    with torch.inference_mode():
        for it in items: model([to_tensor(Image.open(it.path).convert("RGB"))])
    return len(items) / (time.perf_counter() - t)


def _model_batches(tens, batch_size):
    "The batches the pipeline forms: chunks of `batch_size` split by `shape_batches` where the package has it, else plain chunks."
    try: import trailnb.predict as ti
    except ImportError: import trailnb.infer as ti  # an older trailnb (before trailnb.predict)
    if not hasattr(ti, "shape_batches"): return [tens[i:i + batch_size] for i in range(0, len(tens), batch_size)]
    dec = [{"i": i, "img": x, "failure": None, "scale": s} for i, (x, s) in enumerate(tens)]
    return [[(d["img"], d["scale"]) for d in b] for i in range(0, len(dec), batch_size) for b in ti.shape_batches(dec[i:i + batch_size])]


def model_only(det, items, max_dim, batch_size=None, precision="fp32", threads=None):
    "images/s of the model alone on tensors decoded beforehand, in the pipeline's batches (the ceiling for any input pipeline)."
    import torch
    from trailnb.core import inference_autocast
    from trailnb.data import load_image
    from torchvision.transforms.v2.functional import pil_to_tensor
    bs, _, th = split_of(batch_size, None, threads, det)
    dec = [load_image(it.path, max_dim) for it in items]
    tens = [(pil_to_tensor(im).float() / 255, s) for im, s in dec]
    with inference_autocast("cpu", precision), torch.inference_mode():
        det.predict_tensors([tens[0][0]], [tens[0][1]])  # warm-up (and Ultralytics' set-up, which sets threads)
        torch.set_num_threads(th)
        c, t = _cpu_s(), time.perf_counter()
        for b in _model_batches(tens, bs): det.predict_tensors([x for x, _ in b], [s for _, s in b])
        CPU["model"] = (_cpu_s() - c) / len(tens)
    return len(tens) / (time.perf_counter() - t)


SPLITS = [(1, 0, 2), (1, 1, 2), (1, 2, 2), (8, 0, 2), (8, 2, 2), (1, 0, 1), (1, 1, 1), (8, 2, 1)]  # (batch, workers, threads)


def split_sweep(det, items, max_dim, rounds=2):
    "images/s of the pipeline at each (batch, workers, threads) of SPLITS, alternating over `rounds`; best of each."
    pipeline(det, items[:4], max_dim, 1, 0)  # warm-up
    got, cpu = {k: [] for k in SPLITS}, {k: [] for k in SPLITS}
    for _ in range(rounds):
        for k in SPLITS:
            got[k].append(pipeline(det, items, max_dim, *k[:2], threads=k[2])[0])
            cpu[k].append(CPU["pipeline"])
    print(f"split sweep, {len(items)} images, fp32, {rounds} alternating rounds (best, all; CPU s per image, least):")
    for (bs, w, th), v in got.items():
        print(f"  batch {bs}, {w} worker(s), {th} thread(s): {max(v):6.2f} images/s  ({', '.join(f'{x:.2f}' for x in v)})"
              f"  {min(cpu[(bs, w, th)]):.3f} CPU s/image")


def agreement(ref, other, thresh=0.2, sort_thresh=0.5):
    "How far `other` results (e.g. bf16) are from `ref` (fp32): matched boxes, score differences, sorting."
    import numpy as np, torch
    from torchvision.ops import box_iou
    matched = total = same_sort = 0; dscore = []
    for a, b in zip(ref, other):
        da, db = a.detections.above(thresh), b.detections.above(thresh)
        total += len(da)
        same_sort += (da.scores >= sort_thresh).any() == (db.scores >= sort_thresh).any()
        if len(da) and len(db):
            iou = box_iou(torch.as_tensor(da.boxes), torch.as_tensor(db.boxes)).numpy() * (da.labels[:, None] == db.labels[None, :])
            j = iou.argmax(1); ok = iou[np.arange(len(da)), j] >= 0.5
            matched += int(ok.sum()); dscore += list(np.abs(da.scores[ok] - db.scores[j[ok]]))
    return {"detections": total, "matched": matched, "mean_dscore": float(np.mean(dscore)) if dscore else 0.0,
            "max_dscore": float(np.max(dscore)) if dscore else 0.0, "same_sort": int(same_sort), "images": len(ref)}


def _agreement_line(g, what):
    return (f"bf16 vs fp32 on {what} (score >= 0.2): {g['matched']}/{g['detections']} boxes matched at IoU 0.5, score "
            f"difference mean {g['mean_dscore']:.4f} max {g['max_dscore']:.4f}; detected/empty decision at 0.5 the "
            f"same for {g['same_sort']}/{g['images']} images")


def precision_on_dataset(det, data):
    "COCO AP of fp32 and bf16 inference on a labelled dataset, and how far their detections are apart."
    from trailnb.data import load_coco
    from trailnb.evaluate import evaluate
    try: from trailnb.predict import dataset_items
    except ImportError: from trailnb.infer import dataset_items  # an older trailnb (before trailnb.predict)
    ds = load_coco(data)
    items = dataset_items(ds)
    res = {}
    for prec in ("fp32", "bf16"):
        res[prec] = pipeline(det, items, det.max_dim, precision=prec)[1]  # in item order: aligned with ds.images
        m = evaluate(ds, [r.detections for r in res[prec]], score_thresh=0.5).metrics
        print(f"{prec} on {data}: AP {m['AP']:.4f}  AP50 {m['AP50']:.4f}")
    print(_agreement_line(agreement(res["fp32"], res["bf16"]), f"{len(items)} images of {data}"))


def _status_kib(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"): return int(line.split()[1])
    return 0


def _rss_child(n, max_dim, workers):
    """Run the whole product path (`run_inference`: workers, results kept for the files, checkpoints every 500,
    MD/COCO/CSV written) over n images in this (child) process; print peak memory in MiB as JSON."""
    import os, threading, psutil
    from trailnb.infer import run_inference
    det = _detector(max_dim)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp); ckpt = tmp / "model.pt"; det.save(ckpt); del det
        src = tmp / "card"
        for it in _items(n):  # n distinct files: symlinks to the real photos, read in place
            (src / it.file).parent.mkdir(parents=True, exist_ok=True); (src / it.file).symlink_to(it.path)
        me, peak, stop, trace = psutil.Process(), {"pss": 0, "rss_sum": 0}, threading.Event(), []

        def sample():  # total memory of this process and its decoding workers, every 0.2 s
            while not stop.is_set():
                procs = [me, *me.children(recursive=True)]
                trace.append(me.memory_info().rss)
                try:
                    peak["pss"] = max(peak["pss"], sum(p.memory_full_info().pss for p in procs))
                    peak["rss_sum"] = max(peak["rss_sum"], sum(p.memory_info().rss for p in procs))
                except psutil.Error: pass  # a worker ended between listing and reading
                stop.wait(0.2)
        th = threading.Thread(target=sample, daemon=True); th.start()
        s = run_inference(model=str(ckpt), input=str(src), out=str(tmp / "out"), max_dim=max_dim, workers=workers,
                          device="cpu", checkpoint_every=500, sort="none")
        stop.set(); th.join()
    mib, q = 1 / 1024, max(1, len(trace) // 4)
    print(json.dumps({"n": n, "images": s.images, "ips": s.images_per_s,
                      "main_peak_mib": _status_kib(os.getpid(), "VmHWM") * mib,
                      "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * mib,
                      "total_pss_peak_mib": peak["pss"] / 2**20, "total_rss_sum_peak_mib": peak["rss_sum"] / 2**20,
                      "main_first_quarter_mib": statistics.median(trace[:q]) / 2**20,
                      "main_last_quarter_mib": statistics.median(trace[-q:]) / 2**20}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images for the pipeline (camtrap31 cycled)")
    ap.add_argument("--naive", type=int, default=40, help="images for the slow naive loop")
    ap.add_argument("--max-dim", type=int, default=320, help="decode / model input size (untrained model only)")
    ap.add_argument("--arch", default=ARCH, help="architecture of the untrained model (e.g. yolov9c with --max-dim 640)")
    ap.add_argument("--batch-size", type=int, help="pipeline batch size (default: the package's)")
    ap.add_argument("--workers", type=int, help="pipeline decoding workers (default: the package's)")
    ap.add_argument("--threads", type=int, help="torch threads (default: the package's)")
    ap.add_argument("--split", action="store_true", help="measure batch size x workers x threads (SPLITS), then stop")
    ap.add_argument("--model", help="a trained trailnb checkpoint to use instead of an untrained " + ARCH)
    ap.add_argument("--data", help="with --model: a COCO file to compare fp32 and bf16 AP on (e.g. demo_out/data/val.json)")
    ap.add_argument("--bf16", action="store_true", help="also time bf16 on a CPU without native bfloat16")
    ap.add_argument("--rss-n", type=int, default=300, help="images for the first memory run (the second runs 10x); 0 skips")
    ap.add_argument("--rss-max-dim", type=int, default=320, help="decode / model size for the memory runs")
    ap.add_argument("--only-rss", action="store_true", help="skip the speed comparison, run only the memory runs")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child: return _rss_child(a.rss_child, a.rss_max_dim, workers=2)  # 2 workers: their memory is measured too
    if a.split: return split_sweep(_detector(a.max_dim, a.model, a.arch).optimize_for_inference(), _items(a.n),
                                   a.max_dim if not a.model else None)
    if not a.only_rss: speed(a)
    if a.rss_n: memory(a)


def speed(a):
    import copy, torch
    from trailnb.core import cpu_has_bf16
    det = _detector(a.max_dim, a.model, a.arch); max_dim = a.max_dim if not a.model else det.max_dim
    split = split_of(a.batch_size, a.workers, a.threads, det)
    print(f"torch {torch.__version__}, device cpu, {det.arch} ({a.model or 'untrained'}), max_dim {max_dim}, CPU bf16 "
          f"native: {cpu_has_bf16()}; pipeline: batch {split[0]}, {split[1]} workers, {split[2]} threads")
    items = _items(a.n)
    r_naive = None
    if a.naive and hasattr(det, "model"):
        plain = copy.deepcopy(det.model)  # the naive loop gets the plain torchvision model
        naive(plain, items[:2])  # warm-up
        r_naive = naive(plain, items[:a.naive]); del plain
    det.optimize_for_inference()  # what run_inference does (channels-last weights on CPU)
    rows = [("naive loop (full-size PIL, 1 image/call)", r_naive, f"{a.naive} images")] if r_naive else []
    res, ratio, cpu = {}, {}, {}
    for prec in ("fp32", "bf16") if cpu_has_bf16() or a.bf16 else ("fp32",):
        model_only(det, items[:min(len(items), 62)], max_dim, a.batch_size, prec, a.threads)  # warm-up: every input shape once
        ips, res[prec] = pipeline(det, items, max_dim, a.batch_size, a.workers, prec, a.threads)
        alone = model_only(det, items[:min(len(items), 62)], max_dim, a.batch_size, prec, a.threads)
        cpu[prec] = (CPU["pipeline"], CPU["model"])
        rows.append((f"trailnb pipeline, {prec}{' (default)' if prec == 'fp32' else ' (opt-in)'}", ips, f"{a.n} images"))
        rows.append((f"model alone on pre-decoded tensors, {prec}", alone, "ceiling for any input pipeline"))
        ratio[prec] = ips / alone
    for name, ips, note in rows:
        print(f"{name:43s} {ips:7.2f} images/s  " + (f"{ips / r_naive:5.2f}x  " if r_naive else "") + f"({note})")
    print("pipeline / model alone: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items())
          + (f"; bf16 / fp32: pipeline {rows[-2][1] / rows[-4][1]:.2f}x, model {rows[-1][1] / rows[-3][1]:.2f}x" if "bf16" in ratio else ""))
    print("CPU s per image, pipeline / model alone: " + ", ".join(f"{k} {p:.3f} / {m:.3f} (model alone is {m / p:.2f} of the pipeline's CPU)"
                                                                 for k, (p, m) in cpu.items()))
    if "bf16" in res:
        print(_agreement_line(agreement(res["fp32"][:31], res["bf16"][:31]), "the 31 photos")
              + ("" if a.model else " (untrained model: see --model/--data for a real check)"))
    if a.data: precision_on_dataset(det, a.data)


def memory(a):
    "Peak memory of `run_inference` after N and 10*N images, each in a fresh subprocess, and their ratios."
    rss = []
    for n in (a.rss_n, 10 * a.rss_n):
        p = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--rss-max-dim", str(a.rss_max_dim)],
                           capture_output=True, text=True)
        if p.returncode: sys.exit(f"memory run over {n} images failed:\n{p.stderr[-3000:]}")
        rss.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"run_inference peak memory, max_dim {a.rss_max_dim}, 2 workers, MD+COCO+CSV written, checkpoint every 500:")
    print(f"{'':34s}{rss[0]['n']:>8d} img{rss[1]['n']:>8d} img   ratio")
    for k, name in [("main_peak_mib", "main process peak RSS (VmHWM)"), ("worker_peak_mib", "largest worker peak RSS"),
                    ("total_pss_peak_mib", "main+workers peak PSS (sampled)"),
                    ("total_rss_sum_peak_mib", "main+workers peak RSS sum (sampled)"),
                    ("main_first_quarter_mib", "main RSS, median of 1st quarter"),
                    ("main_last_quarter_mib", "main RSS, median of last quarter")]:
        print(f"{name:34s}{rss[0][k]:8.0f} MiB{rss[1][k]:8.0f} MiB  {rss[1][k] / rss[0][k]:5.2f}")
    print(f"speed: {rss[0]['ips']:.2f} and {rss[1]['ips']:.2f} images/s")


if __name__ == "__main__":
    main()
