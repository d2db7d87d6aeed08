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
one of the same class with IoU >= 0.9 and a score within 0.01. Agreement is measured twice: on the photos as they
are (each tool decodes and resizes its own way; a random network is very sensitive to pixels) and on copies
resized beforehand to the model size (both tools then see identical decoded inputs: goal >= 99%).

A randomly initialised YOLO scores every box the same, so nothing would be detected or everything would: the
script recalibrates the network's BatchNorm statistics on the photos themselves and sets the class-score bias
so that a few boxes per photo clear MegaDetector's 0.005 and their scores vary (`calibrate`). The weights are
still random: this measures speed and decision rules, not detection quality.

MegaDetector runs from the `megadetector-utils` package installed in trailnb's own environment by `make install`
(`--no-deps`, with the few packages it imports; it uses the Ultralytics trailnb pins for YOLOv9 files). Its
PyPI package `megadetector` would also want `ultralytics-yolov5`, which cannot be built offline and which a
YOLOv9 file does not use. Both tools run on the same torch build and the same threads.

    .venv/bin/python benchmarks/vs_megadetector.py                       # camtrap31 x3 (93 photos), 640 px
    .venv/bin/python benchmarks/vs_megadetector.py --copies 1 --rounds 1 # a quick look

Measured 2026-12-07 on the 2-core machine (otherwise idle), camtrap31 x3, 640 px, both at their defaults:
MegaDetector 2.31 / 2.21 img/s, trailnb 3.11 / 3.20 img/s: trailnb / MegaDetector 1.35, 1.45 (goal 1.5). Agreement
on identical decoded inputs 4140/4140 boxes (100%) once trailnb decides with MegaDetector's NMS IoU 0.45 for a
MegaDetector file (before, with Ultralytics' 0.7: 1361/2497, 54.5%); on the photos as they are 3.4% (a random network
amplifies the two tools' different JPEG decoding and resizing). `trailnb infer --engine onnx` on the same file: 29.8 s
vs 31.6 s for torch (1.06x; the one-time export took 3.5 s more): ONNX Runtime pays little for a model this large.
"""
import argparse, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

CLASSES = ["animal", "person", "vehicle"]


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


def calibrate(model, images: list, size: int, keep: float = 3.0):
    """BatchNorm statistics from the photos, and class-score biases so ~`keep` boxes per photo clear 0.005."""
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
    with torch.no_grad():
        raw = torch.cat([model(x[None])[0][:, 4:].amax(1).flatten() for x in xs])  # best class score per anchor
    logits = torch.logit(raw.clamp(1e-6, 1 - 1e-6))
    k = int(keep * len(xs))
    shift = float(torch.logit(torch.tensor(0.3)) - logits.sort(descending=True).values[k])  # the k-th best -> 0.3
    with torch.no_grad():
        for seq in head.cv3: seq[-1].bias += shift
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
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: sys.exit(f"MegaDetector failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, children_cpu() - c0


def children_cpu() -> float:
    "CPU seconds (user + system) of the finished child processes: less sensitive than wall time to other work on the machine."
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_trailnb(model: Path, images: Path, out: Path, size: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "trailnb", "infer", str(model), str(images), "--out", str(out), "--max-dim", str(size),
           "--formats", "md"]
    t0, c0 = time.perf_counter(), children_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TRAILNB_PROGRESS="off"))
    if r.returncode: sys.exit(f"trailnb failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, children_cpu() - c0


def agreement(a_file: Path, b_file: Path, images: Path, min_score: float, iou: float = 0.9, dscore: float = 0.01) -> dict:
    """Boxes of each tool with a partner in the other (same class, IoU >= iou, score within dscore), over all boxes.
    Both files are read through trailnb's results edge (`read_results`: pixel xyxy, class names from each file)."""
    import torch
    from torchvision.ops import box_iou
    from trailnb.results import read_results
    (ca, a, _), (cb, b, _) = (read_results(f, image_root=images) for f in (a_file, b_file))
    files = sorted(set(a) | set(b))
    n = agree = 0
    for f in files:
        da, db = (d.above(min_score) if d is not None else None for d in (a.get(f), b.get(f)))
        for (x, cx), (y, cy) in (((da, ca), (db, cb)), ((db, cb), (da, ca))):
            if x is None or not len(x): continue
            n += len(x)
            if y is None or not len(y): continue
            ious = box_iou(torch.as_tensor(x.boxes, dtype=torch.float64), torch.as_tensor(y.boxes, dtype=torch.float64)).numpy()
            same = np.array([[cx[k] == cy[m] for m in y.labels] for k in x.labels])
            close = np.abs(x.scores[:, None] - y.scores[None]) <= dscore
            agree += int((same & close & (ious >= iou)).any(1).sum())
    return {"boxes": n, "agree": agree, "frac": agree / n if n else float("nan"), "images": len(files),
            "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=3, help="copies of camtrap31's 31 photos (nested folders)")
    ap.add_argument("--size", type=int, default=640, help="model input size for both tools")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (MegaDetector, trailnb) to time")
    ap.add_argument("--min-score", type=float, default=0.1, help="boxes compared for agreement score at least this")
    ap.add_argument("--keep", help="folder to keep the model and results in (default: a temporary one)")
    a = ap.parse_args(argv)
    work = Path(a.keep or tempfile.mkdtemp(prefix="trailnb-vs-md-"))
    work.mkdir(parents=True, exist_ok=True)
    imgs = photos(a.copies, work / "card")
    n = sum(1 for _ in imgs.rglob("*.[jJ][pP]*[gG]"))
    model = work / "MDV6-yolov9-c-random.pt"
    if not model.exists(): build_model(model, sorted(imgs.rglob("*.[jJ][pP]*[gG]")), a.size)
    print(f"{n} photos, {a.size} px, model {model.name}; torch threads {os.cpu_count()} cores, "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} usable")
    times, cpu = {"megadetector": [], "trailnb": []}, {"megadetector": [], "trailnb": []}
    for r in range(a.rounds):
        for k, fn, out in (("megadetector", run_md, work / "md.json"), ("trailnb", run_trailnb, work / "tn")):
            w, c = fn(model, imgs, out, a.size)
            times[k].append(w)
            cpu[k].append(c)
        ips = {k: n / v[-1] for k, v in times.items()}
        print(f"round {r + 1}: MegaDetector {ips['megadetector']:.2f} img/s ({cpu['megadetector'][-1] / n:.3f} CPU s/img), "
              f"trailnb {ips['trailnb']:.2f} img/s ({cpu['trailnb'][-1] / n:.3f} CPU s/img), "
              f"trailnb / MegaDetector {ips['trailnb'] / ips['megadetector']:.2f}", flush=True)
    best = {k: n / min(v) for k, v in times.items()}
    least = {k: min(v) / n for k, v in cpu.items()}
    print(f"best of {a.rounds}: MegaDetector {best['megadetector']:.2f} img/s, trailnb {best['trailnb']:.2f} img/s, "
          f"ratio {best['trailnb'] / best['megadetector']:.2f} (goal >= 1.5 on 2 CPU cores); CPU per image "
          f"MegaDetector {least['megadetector']:.3f} s, trailnb {least['trailnb']:.3f} s, "
          f"ratio {least['megadetector'] / least['trailnb']:.2f}", flush=True)
    ag = agreement(work / "tn" / "results_md.json", work / "md.json", imgs, a.min_score)
    print(f"agreement on the photos as they are (each tool decodes and resizes its own way): {ag['agree']}/{ag['boxes']} "
          f"boxes = {ag['frac']:.1%}")
    small = resized_copies(imgs, work / "card_resized", a.size)
    run_md(model, small, work / "md_resized.json", a.size)  # (times not used)
    run_trailnb(model, small, work / "tn_resized", a.size)
    ag = agreement(work / "tn_resized" / "results_md.json", work / "md_resized.json", small, a.min_score)
    print(f"agreement on identical decoded inputs (photos resized to {a.size} beforehand): {ag['agree']}/{ag['boxes']} "
          f"boxes = {ag['frac']:.1%} (goal >= 99%)")


if __name__ == "__main__":
    main()
