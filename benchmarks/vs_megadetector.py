"""trailnb infer vs MegaDetector's own batch tool, on a CPU, with the same MegaDetector-v6-form model file.

Most people sort their cards on a laptop. The tool they would otherwise run is MegaDetector's
`run_detector_batch`. This script builds one MegaDetector-v6-form file (an Ultralytics YOLOv9-c `.pt` with the
classes animal / person / vehicle, MegaDetector's metadata added by MegaDetector's own
`add_metadata_to_megadetector_model_file`), then runs, alternating, for --rounds rounds on the same photos:

  * MegaDetector: `python -m megadetector.detection.run_detector_batch MODEL IMAGES OUT.json` at its defaults
    (its classic compatibility mode: NMS IoU 0.45, confidence 0.005, batch 1 on a CPU) and --image-size;
  * trailnb:      `trailnb infer MODEL IMAGES --out DIR` at its defaults and --max-dim = the same size.

Each is a fresh process, timed from start to finish (what a user waits for: start-up and model load included,
reported apart as the time to the first image where the tool says it). It prints images/s, trailnb ÷
MegaDetector, and the detections' agreement: a box of one tool (score >= --min-score) agrees when the other has
one of the same class with IoU >= 0.9 (or every corner within a pixel: MegaDetector writes whole pixels, and a
box it rounds to zero width has no IoU) and a score within 0.01 (that partner may score just under the cut).
Agreement is measured twice: on the photos as they are (each tool decodes and resizes its own way; a random
network is very sensitive to pixels) and on copies resized beforehand to the model size (both tools then see
identical decoded inputs: goal >= 99%). `--rounds 0` measures only the latter; `--explain` lists the boxes
without a partner there; `--seed` rebuilds a given random model.

A randomly initialised YOLO scores every box the same, so nothing would be detected or everything would: the
script recalibrates the network's BatchNorm statistics on the photos themselves, then maps the class logits (the
class head's last weights and biases, `calibrate`) so that about 3 boxes per photo score 0.3 or more and the best
one 0.95, as a trained detector's do. Before 2026-12-07 evening only the bias moved, and a random head's logits
spread so far that many boxes scored exactly 1.0 in float32 for two or three classes at once: ties that any other
arithmetic (channels-last convolutions, ONNX Runtime) broke the other way, flipping classes and NMS decisions,
which no trained model shows. The weights are still random: this measures speed and decision rules, not detection
quality.

MegaDetector runs from the `megadetector-utils` package installed in trailnb's own environment by `make install`
(`--no-deps`, with the few packages it imports; it uses the Ultralytics trailnb pins for YOLOv9 files). Its
PyPI package `megadetector` would also want `ultralytics-yolov5`, which cannot be built offline and which a
YOLOv9 file does not use. Both tools run on the same torch build and the same threads, in the environment the
script started with (`CLEAN_ENV`: before 2026-12-07 evening, the OMP_NUM_THREADS=1 that importing Ultralytics puts in
os.environ reached MegaDetector's process, which then ran on one core: the speed ratios measured then flatter
trailnb and must be measured again).

    .venv/bin/python benchmarks/vs_megadetector.py                       # camtrap31 x3 (93 photos), 640 px
    .venv/bin/python benchmarks/vs_megadetector.py --copies 1 --rounds 1 # a quick look

Measured 2026-12-07 (evening) on the 2-core x86_64 Xeon, otherwise idle, with the calibration above.

Agreement on identical decoded inputs, four random builds (31 photos: --copies only repeats them), boxes >= 0.1
(and >= 0.02, a larger sample):

| build | trailnb default engine, torch (Ultralytics' channels-last) | trailnb --engine onnx (ONNX Runtime) |
|---|---|---|
| --seed 0 | 600/603 = 99.5% (1614/1620) | 600/602 = 99.7% (1614/1618) |
| --seed 1 | 342/342 = 100% (1229/1229) | 340/342 = 99.4% (1227/1230) |
| --seed 2 | 180/180 = 100% (466/466) | 180/180 = 100% (466/466) |
| --seed 3 | 456/456 = 100% (8662/8666) | 456/456 = 100% (8660/8666) |

Both engines clear 99% on every build, so `--engine auto` (the default) treats a MegaDetector file like any
other: on a CPU it measures ONNX Runtime against torch once (export included) and takes the faster. Speed at the
defaults, camtrap31 x3 (93 photos), 640 px, 3 rounds, alternating, the trailnb home kept across the rounds of one
invocation (the first trailnb run exports the model and measures; later runs read that record and start on the
export, `known_onnx`). Each round prints how trailnb ran (engine, batch, workers, threads).

Measured 2026-12-07 (night), after ONNX Runtime began running two photos side by side on a thread each (the run
measured ONNX Runtime at 1.25-1.30x torch's channels-last layout, where one photo on two threads measured 1.10-1.16x)
and an ONNX run stopped importing torchvision; the code before it (83e29d3) in the same hour, for comparison:

| code, build | round 1 (export + measurement) | round 2 | round 3 | trailnb CPU s/img, rounds 2-3 |
|---|---|---|---|---|
| now, --seed 2 | 1.16 | **1.62** | **1.57** | 0.558, 0.542 |
| now, --seed 0 | 1.09 | **1.61** | 1.22 (the machine slowed: MegaDetector 1.87 img/s, was 2.16) | 0.516, 0.695 |
| now, --seed 0 again | 1.18 | **1.59** | **1.54** | 0.636, 0.641 |
| 83e29d3, --seed 2 | 1.15 | 1.49 | 1.39 | 0.592, 0.602 |
| 83e29d3, --seed 0 | 1.20 | 1.44 | **1.51** | 0.690, 0.691 |

(trailnb / MegaDetector, images/s; MegaDetector ran at 1.67-2.23 img/s as the machine's speed drifted through the
hour, which is why each row is compared with its own alternating MegaDetector runs.) From the second run on, 5 rounds
of 6 clear the 1.5x goal (1.54-1.62); the code before cleared it in 1 of 4. The first run does not: exporting
YOLOv9-c through Ultralytics takes about 6 s and timing both engines about 4 s, a third of a 93-photo run, once per
model file and machine. What is left is the network's arithmetic: in a steady run ONNX Runtime computes 0.25-0.27 s of
the ~0.29 s per photo; OpenVINO's fp32 (tried, not kept) took the same 0.24-0.26 s for a 480x640 photo, two streams or
one. bf16 (AMX) ran 4x faster in OpenVINO but moves scores far beyond MegaDetector's third decimal.

Start-up, 2 photos, a record saying ONNX Runtime, 3 runs alternating: 4.3-4.5 s before, 3.1-3.2 s now (torchvision
no longer imported: its import pulls in torch._dynamo).

Earlier the same evening (known_onnx, one photo on two threads): --seed 2 rounds 1.14 / 1.60 / 1.54, --seed 0
1.07 / 1.45 / 1.51, with MegaDetector at 1.79-1.89 img/s. In one process ONNX Runtime ran this network 1.57x torch's
contiguous layout (MegaDetector's) and 1.22x torch's channels-last; its settings (threads 1/2/default, spinning,
memory patterns, denormals as zero) all gave 307-325 ms for one 480x640 photo on two threads; torch.jit.freeze and
optimize_for_inference gave nothing over contiguous torch; a decoding worker nothing (2.97 vs 2.96-3.02 img/s).
Start-up with `--engine onnx` was 6.1-6.8 s before `known_onnx`, 5.1-5.4 s after.
On the photos as they are the tools agree for 0/525 boxes: each decodes and resizes its own way (trailnb: JPEG
draft mode), a random network amplifies a pixel's difference, and with the new calibration no saturated
full-image boxes agree by accident (2.5-5% before). ONNX Runtime and torch inside trailnb agree there for 186/186.

Before the evening (bias-only calibration, saturated scores), --seed 2: contiguous torch 1.02x and 100% agreement,
channels-last 1.24x (rounds 1.48, 1.11) and 99.6%, ONNX Runtime 1.41x (first run) and 98.5%. Before that, the same
day, MegaDetector ran on one thread (see above): the ratios 1.35-1.45 measured then flatter trailnb.
"""
import argparse, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

CLASSES = ["animal", "person", "vehicle"]
# The environment both tools run in, as it was before this script imported anything: importing Ultralytics (to
# build the model) sets OMP_NUM_THREADS=1 in os.environ "for training", which a child process would inherit, and
# MegaDetector's batch tool (torch's default threads) would then run on one core while trailnb sets its own.
CLEAN_ENV = dict(os.environ)


def photos(copies: int, dest: Path) -> Path:
    "camtrap31's photos in `copies` nested folders (hard links), as a card's DCIM would hold them."
    from trailnb.core import sample_data_dir
    cam = sample_data_dir("camtrap31")
    if cam is None: sys.exit("camtrap31 sample data not found (set TRAILNB_SAMPLE_DATA); nothing to benchmark")
    for k in range(copies):
        d = dest / f"DCIM/{100 + k}CAMRA"
        d.mkdir(parents=True, exist_ok=True)
        for p in sorted((cam / "images").iterdir()):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not (d / p.name).exists():
                try: os.link(p, d / p.name)
                except OSError: shutil.copy2(p, d / p.name)
    return dest / "DCIM"


def resized_copies(src: Path, dest: Path, size: int) -> Path:
    "The photos resized (long side = `size`, JPEG quality 95) so both tools decode identical pixels without resizing."
    from PIL import Image, ImageOps
    for p in sorted(src.rglob("*.[jJ][pP]*[gG]")):
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        s = size / max(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)
        q = dest / p.relative_to(src)
        q.parent.mkdir(parents=True, exist_ok=True)
        im.save(q, quality=95)
    return dest


def calibrate(model, images: list, size: int, keep: float = 3.0, top: float = 0.95):
    """BatchNorm statistics from the photos, then an affine map of the class logits (the class head's last weights
    and biases) so the ~`keep` x photos-th best box over the photos scores 0.3 and the best one `top`.
    Without the scale a random head's logits spread so far that many boxes score exactly 1.0 in float32 for two or
    three classes at once: a tie that any change in the last bit of arithmetic (another convolution algorithm, another
    runtime) breaks the other way, flipping the class and, through NMS, the boxes around it. A trained detector's
    scores do not saturate like that."""
    import numpy as np, torch
    from PIL import Image, ImageOps
    xs = []
    for p in images:
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        s = size / max(im.size)
        im = im.resize((round(im.width * s) // 32 * 32, round(im.height * s) // 32 * 32))
        xs.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d): m.reset_running_stats(), setattr(m, "momentum", None)
    model.train()
    with torch.no_grad():
        for x in xs: model(x[None])
    model.eval()
    head = model.model[-1]
    feats = []  # the feature maps the head reads, caught on their way in (Ultralytics' own forward runs)
    hook = head.register_forward_pre_hook(lambda m, args: feats.append(list(args[0])))  # a copy: Detect replaces its list items
    with torch.no_grad():  # the class logits themselves (the head's output is their sigmoid, saturated in float32)
        for x in xs: model(x[None])
    hook.remove()
    with torch.no_grad():  # best class logit per anchor, per photo
        logits = [torch.cat([seq(f).flatten(2) for seq, f in zip(head.cv3, fs)], 2)[0].amax(0) for fs in feats]
    ranked = torch.cat(logits).sort(descending=True).values
    best, kth = ranked[0], ranked[int(keep * len(xs))]
    a = float((torch.logit(torch.tensor(top)) - torch.logit(torch.tensor(0.3))) / (best - kth))
    b = float(torch.logit(torch.tensor(0.3)) - a * kth)
    with torch.no_grad():
        for seq in head.cv3: seq[-1].weight *= a; seq[-1].bias.mul_(a).add_(b)
    return model


def build_model(path: Path, images: list, size: int) -> Path:
    "An MDv6-form file: Ultralytics YOLOv9-c, classes animal/person/vehicle, calibrated, MegaDetector metadata added."
    from trailnb.yolo import import_ultralytics, write_ultralytics_checkpoint
    import_ultralytics()
    from ultralytics import YOLO
    from megadetector.detection.pytorch_detector import add_metadata_to_megadetector_model_file
    raw = write_ultralytics_checkpoint("yolov9c.yaml", path.with_suffix(".raw.pt"), names=CLASSES, imgsz=size)
    y = YOLO(str(raw))
    calibrate(y.model, images[:24], size)
    y.save(str(raw))
    # model_type: the file is written by Ultralytics, which MegaDetector loads as its "ultralytics" type
    add_metadata_to_megadetector_model_file(str(raw), str(path), {
        "model_name": "MDV6-yolov9-c (random weights, trailnb benchmark)", "model_type": "ultralytics",
        "image_size": size, "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}})
    raw.unlink()
    return path


def run_md(model: Path, images: Path, out: Path, size: int) -> float:
    cmd = [sys.executable, "-m", "megadetector.detection.run_detector_batch", str(model), str(images), str(out),
           "--recursive", "--output_relative_filenames", "--image_size", str(size), "--quiet"]
    t0, c0 = time.perf_counter(), children_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, env=CLEAN_ENV)
    if r.returncode: sys.exit(f"MegaDetector failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, children_cpu() - c0


def children_cpu() -> float:
    "CPU seconds (user + system) of the finished child processes: less sensitive than wall time to other work on the machine."
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


TRAILNB_ARGS: list = []  # more `trailnb infer` arguments (--trailnb-args), for both the timed and the agreement runs


def run_trailnb(model: Path, images: Path, out: Path, size: int) -> tuple:
    "`(wall s, CPU s, how it ran)`: the last from trailnb's summary (engine, batch, workers, threads)."
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "trailnb", "infer", str(model), str(images), "--out", str(out), "--max-dim", str(size),
           "--formats", "md", *TRAILNB_ARGS]
    t0, c0 = time.perf_counter(), children_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(CLEAN_ENV, TRAILNB_PROGRESS="off"))
    if r.returncode: sys.exit(f"trailnb failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    how = next((l.split("images/s (", 1)[1].rsplit(");", 1)[0] for l in r.stdout.splitlines() if "images/s (" in l), "")
    return time.perf_counter() - t0, children_cpu() - c0, how


def agreement(a_file: Path, b_file: Path, images: Path, min_score: float, iou: float = 0.9, dscore: float = 0.01) -> dict:
    """Boxes of each tool (score >= min_score) with a partner in the other (same class, IoU >= iou or every corner within
    a pixel, score within dscore), over all such boxes. A partner may score down to min_score - dscore: a box at the cut
    is not held against a tool for the other's last digit (MegaDetector truncates scores to 3 decimals, trailnb rounds
    to 4). The corners: IoU says little about a box a few pixels thin and nothing about one MegaDetector rounded (it
    writes whole pixels) to zero width. `a_file` is trailnb's, `b_file` MegaDetector's, both read through trailnb's
    results edge (`read_results`: pixel xyxy, class names from each file). `misses` lists each box without a partner
    and the other tool's box nearest to it."""
    import torch
    from torchvision.ops import box_iou
    from trailnb.results import read_results
    (ca, a, _), (cb, b, _) = (read_results(f, image_root=images) for f in (a_file, b_file))
    files = sorted(set(a) | set(b))
    n, agree, misses = 0, 0, []
    for f in files:
        for (x, cx, tool), (y, cy) in (((a.get(f), ca, "trailnb"), (b.get(f), cb)), ((b.get(f), cb, "megadetector"), (a.get(f), ca))):
            x = x.above(min_score) if x is not None else None
            if x is None or not len(x): continue
            n += len(x)
            y = y.above(min_score - dscore) if y is not None else None
            if y is None or not len(y):
                misses += [(f, tool, cx[l], float(s), None, None) for l, s in zip(x.labels, x.scores)]
                continue
            ious = np.nan_to_num(box_iou(torch.as_tensor(x.boxes, dtype=torch.float64), torch.as_tensor(y.boxes, dtype=torch.float64)).numpy())
            corners = np.abs(x.boxes[:, None] - y.boxes[None]).max(-1) <= 1.0
            same = np.array([[cx[k] == cy[m] for m in y.labels] for k in x.labels])
            close = np.abs(x.scores[:, None] - y.scores[None]) <= dscore
            ok = (same & close & ((ious >= iou) | corners)).any(1)
            agree += int(ok.sum())
            near = ious.argmax(1)
            misses += [(f, tool, cx[x.labels[k]], float(x.scores[k]), float(ious[k, near[k]]), float(y.scores[near[k]]))
                       for k in np.flatnonzero(~ok)]
    return {"boxes": n, "agree": agree, "frac": agree / n if n else float("nan"), "images": len(files),
            "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a)), "misses": misses}


def show_misses(misses: list, most: int = 20):
    "The boxes without a partner: which tool, photo, class and score, and the other tool's nearest box."
    for f, tool, cls, s, iou, s2 in misses[:most]:
        other = "the other tool has no box there" if iou is None else f"nearest other box IoU {iou:.3f}, score {s2:.4f}"
        print(f"  only {tool}: {f} {cls} {s:.4f} ({other})")
    if len(misses) > most: print(f"  ... and {len(misses) - most} more")


def time_both(a, model: Path, imgs: Path, work: Path, n: int):
    "The timed rounds on the photos as they are, then the agreement there."
    times, cpu = {"megadetector": [], "trailnb": []}, {"megadetector": [], "trailnb": []}
    for r in range(a.rounds):
        for k, fn, out in (("megadetector", run_md, work / "md.json"), ("trailnb", run_trailnb, work / "tn")):
            w, c, *how = fn(model, imgs, out, a.size)
            times[k].append(w)
            cpu[k].append(c)
        ips = {k: n / v[-1] for k, v in times.items()}
        print(f"round {r + 1}: MegaDetector {ips['megadetector']:.2f} img/s ({cpu['megadetector'][-1] / n:.3f} CPU s/img), "
              f"trailnb {ips['trailnb']:.2f} img/s ({cpu['trailnb'][-1] / n:.3f} CPU s/img), "
              f"trailnb / MegaDetector {ips['trailnb'] / ips['megadetector']:.2f}\n  trailnb ran {how[0]}", flush=True)
    best = {k: n / min(v) for k, v in times.items()}
    least = {k: min(v) / n for k, v in cpu.items()}
    print(f"best of {a.rounds}: MegaDetector {best['megadetector']:.2f} img/s, trailnb {best['trailnb']:.2f} img/s, "
          f"ratio {best['trailnb'] / best['megadetector']:.2f} (goal >= 1.5 on 2 CPU cores); CPU per image "
          f"MegaDetector {least['megadetector']:.3f} s, trailnb {least['trailnb']:.3f} s, "
          f"ratio {least['megadetector'] / least['trailnb']:.2f}", flush=True)
    ag = agreement(work / "tn" / "results_md.json", work / "md.json", imgs, a.min_score)
    print(f"agreement on the photos as they are (each tool decodes and resizes its own way): {ag['agree']}/{ag['boxes']} "
          f"boxes = {ag['frac']:.1%}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=3, help="copies of camtrap31's 31 photos (nested folders)")
    ap.add_argument("--size", type=int, default=640, help="model input size for both tools")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (MegaDetector, trailnb) to time")
    ap.add_argument("--min-score", type=float, default=0.1, help="boxes compared for agreement score at least this")
    ap.add_argument("--keep", help="folder to keep the model and results in (default: a temporary one)")
    ap.add_argument("--seed", type=int, help="seed of the random model (default: a new one each build, printed)")
    ap.add_argument("--explain", action="store_true", help="list the boxes without a partner on identical inputs")
    ap.add_argument("--trailnb-args", default="", help="more arguments for trailnb infer, e.g. '--engine onnx' or '--engine torch'")
    ap.add_argument("--home", help="trailnb's home for its runs (its ONNX cache and engine speed records); default a new "
                    "folder in the work folder, so the first trailnb run pays what a first run on a new machine pays")
    a = ap.parse_args(argv)
    work = Path(a.keep or tempfile.mkdtemp(prefix="trailnb-vs-md-"))
    work.mkdir(parents=True, exist_ok=True)
    TRAILNB_ARGS[:] = a.trailnb_args.split()
    CLEAN_ENV["TRAILNB_HOME"] = str(Path(a.home) if a.home else work / "trailnb-home")
    imgs = photos(a.copies, work / "card")
    n = sum(1 for _ in imgs.rglob("*.[jJ][pP]*[gG]"))
    model = work / "MDV6-yolov9-c-random.pt"
    if not model.exists():
        import torch
        seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(2), "little")
        torch.manual_seed(seed)
        print(f"building the random model with --seed {seed}", flush=True)
        build_model(model, sorted(imgs.rglob("*.[jJ][pP]*[gG]")), a.size)
    print(f"{n} photos, {a.size} px, model {model.name}; torch threads {os.cpu_count()} cores, "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} usable")
    if a.rounds > 0: time_both(a, model, imgs, work, n)  # --rounds 0: only the agreement on identical inputs
    small = resized_copies(imgs, work / "card_resized", a.size)
    run_md(model, small, work / "md_resized.json", a.size)  # (times not used)
    run_trailnb(model, small, work / "tn_resized", a.size)
    ag = agreement(work / "tn_resized" / "results_md.json", work / "md_resized.json", small, a.min_score)
    print(f"agreement on identical decoded inputs (photos resized to {a.size} beforehand): {ag['agree']}/{ag['boxes']} "
          f"boxes = {ag['frac']:.1%} (goal >= 99%)")
    if a.explain: show_misses(ag["misses"])


if __name__ == "__main__":
    main()
