"""trailnb infer vs Ultralytics' own `predict(stream=True)`, with the same YOLO file, the same photos, in one process.

A user of an Ultralytics model could run it through Ultralytics directly. This script times, alternating, for
--rounds rounds, on camtrap31's photos (real full-size JPEGs, cycled to --n) at --size px:

  * Ultralytics: `YOLO(file).predict(source=FOLDER, stream=True, imgsz=SIZE, save=False)`, every result consumed;
  * trailnb:     `trailnb.infer.run_inference(model=file, input=FOLDER, max_dim=SIZE)` at its defaults (results
                 file written, nothing sorted), the run `trailnb infer FILE FOLDER` makes.

Both read and decode the same files and run the same torch build; each is given the same torch threads
(--threads, default the usable cores: Ultralytics' own run is kept at them by this script). It runs against an older
trailnb too (PYTHONPATH=a checkout of it), for before/after: that trailnb then runs as it did, threads included. It prints images/s (wall) and CPU seconds per image (user+system of this
process: less sensitive to other load on a shared machine) for each, and trailnb / Ultralytics. The model is a
randomly initialised YOLO11n written by Ultralytics' own `save` (weights do not change speed) — or --model FILE.

    .venv/bin/python benchmarks/vs_ultralytics.py                      # YOLO11n, 640 px, 62 photos, 3 rounds
    .venv/bin/python benchmarks/vs_ultralytics.py --arch yolov9c --n 31 --rounds 2
    PYTHONPATH=<checkout of 654e278> .venv/bin/python benchmarks/vs_ultralytics.py --model F.pt   # before issue 28

Measured 2026-12-07 on the 2-core x86_64 machine (otherwise idle), the same random YOLO11n .pt, 640 px, 62 photos,
3 rounds, twice each, alternating before/after: trailnb / Ultralytics in images/s (best wall) and CPU per image:
before issue 28 (654e278: batch 8, 2 decoding workers, torch lowered to 1 thread by Ultralytics) 1.07x / 1.01x and
1.11x / 1.04x; now (batch 1 on a CPU, no worker, 2 threads) 0.91x / 0.85x and 0.95x / 0.88x. For a model this small
batching pays on a CPU: in one process, 31 photos, batch 8 ran 15.5 img/s against 13.3 at batch 1 (1.17x; with a
decoding worker 11.2), YOLOv9-c 2.47 against 2.36 (1.05x), with results identical to the bit at both sizes.

Then (evening) a YOLO under 5 M weights got batch 8 as its CPU default (`YOLODetector.cpu_batch`). Same machine,
same file, alternating, twice each: now 1.61x / 1.42x and 1.54x / 1.38x; before issue 28 (654e278) 1.22x / 1.08x
and 1.20x / 1.09x; and, in a second pair of runs, the day's earlier batch-1 default (9a5d30c) 1.27x / 1.14x and
1.48x / 1.24x against now 1.60x / 1.41x and 1.84x / 1.58x. Ultralytics' own images/s swung 8-11 between rounds
and runs (it decodes the full-size photos), which is why the ratios differ from the morning's; the ordering held
in every pair.
"""
import argparse, os, resource, shutil, sys, tempfile, time
from pathlib import Path


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def card(src: Path, n: int, dst: Path) -> Path:
    "`n` photos of `src`, cycled, linked into one folder (both tools read the same files)."
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.symlink(files[i % len(files)], dst / f"{i:04d}_{files[i % len(files)].name}")
    return dst


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), cpu_s()
    fn()
    return time.perf_counter() - w, cpu_s() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="yolo11n", help="Ultralytics yaml of the random model (without .yaml)")
    ap.add_argument("--model", help="an Ultralytics .pt file to use instead")
    ap.add_argument("--size", type=int, default=640, help="input size for both")
    ap.add_argument("--n", type=int, default=62, help="photos per timed run (camtrap31 cycled)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--threads", type=int, help="torch threads for both (default: trailnb's default, the usable cores)")
    a = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from trailnb.core import sample_data_dir
    import dataclasses
    from trailnb.infer import InferConfig, run_inference
    try: from trailnb.predict import compute_split
    except ImportError: compute_split = None  # an older trailnb (PYTHONPATH=a copy of it): torch's own thread count
    from trailnb.yolo import import_ultralytics, ultralytics_output, write_ultralytics_checkpoint
    data = sample_data_dir("camtrap31")
    if data is None: sys.exit("camtrap31 not found: set TRAILNB_SAMPLE_DATA (see ../shared/data/README.md)")
    threads = a.threads or (compute_split("cpu").threads if compute_split else torch.get_num_threads())
    fields = {f.name for f in dataclasses.fields(InferConfig)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pt = Path(a.model) if a.model else write_ultralytics_checkpoint(f"{a.arch}.yaml", tmp / f"{a.arch}.pt",
                                                                       names=["animal", "person", "vehicle"], imgsz=a.size)
        folder = card(data, a.n, tmp / "card")
        import_ultralytics()
        from ultralytics import YOLO
        yolo = YOLO(str(pt))

        def ultralytics_run():
            import ultralytics.utils.torch_utils as tu
            torch.set_num_threads(threads)
            saved, tu.NUM_THREADS = tu.NUM_THREADS, threads  # what its select_device sets torch's threads to: kept here
            try:                                             # by the script itself, as an older trailnb does not
                with ultralytics_output():
                    for _ in yolo.predict(source=str(folder), stream=True, imgsz=a.size, save=False, verbose=False, device="cpu"): pass
            finally: tu.NUM_THREADS = saved

        def trailnb_run(k=[0]):
            k[0] += 1
            out = tmp / f"run{k[0]}"
            kw = dict(threads=threads, engine="torch")  # settings an older trailnb may not have
            run_inference(model=str(pt), input=str(folder), out=str(out), max_dim=a.size, device="cpu", formats=("md",),
                          **{k: v for k, v in kw.items() if k in fields})
            shutil.rmtree(out)

        print(f"{a.model or a.arch} at {a.size} px, {a.n} photos of camtrap31, {threads} torch thread(s), "
              f"{os.cpu_count()} cores; torch {torch.__version__}", flush=True)
        ultralytics_run(); trailnb_run()  # warm-up: first imports, kernel plans, file cache
        res = {"ultralytics": [], "trailnb": []}
        for r in range(a.rounds):
            for name, fn in (("ultralytics", ultralytics_run), ("trailnb", trailnb_run)):
                w, c = timed(fn)
                res[name].append((w, c))
                print(f"round {r + 1} {name:<12} {a.n / w:6.2f} img/s  {c / a.n:6.3f} CPU s/img", flush=True)
        best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in res.items()}
        print(f"trailnb / Ultralytics: {best['ultralytics'][0] / best['trailnb'][0]:.2f}x images/s (best wall of each), "
              f"{best['ultralytics'][1] / best['trailnb'][1]:.2f}x CPU per image")


if __name__ == "__main__":
    main()
