"""PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8, in one process: images/s and AP50/AP.

For a trained model (--model CKPT with its labelled held-out set --data COCO; default: a model trained here on
a synthetic set, as the demo does, with its held-out split) it exports fp32 and int8 (static, calibrated on the
training photos), then measures on pre-decoded tensors (the model alone; decoding is the same for all three)
images/s on the held-out set and on the real camtrap31 photos, and AP50/AP on the held-out set (pycocotools).
Goals on a 2-core CPU: ORT fp32 >= 1.2x torch fp32; int8 >= 1.8x ORT fp32 with AP50 within 0.01 of fp32.
Usage: python benchmarks/export.py [--model best.pt --data val.json [--calib DIR]] [--epochs 6] [--repeat 2]
"""
import argparse, os, sys, tempfile, time
from pathlib import Path


def default_model(work: Path, arch: str, max_dim: int, epochs: int, n: int):
    "Train `arch` briefly on a synthetic set (the demo's recipe, shorter); returns (best.pt, held-out COCO, calibration)."
    from trailnb.data import save_coco, split_by_sequence, load_dataset
    from trailnb.synthetic import make_synthetic_dataset
    from trailnb.train import train
    ann = make_synthetic_dataset(work / "data", n=n, seed=0)
    tr, va = split_by_sequence(load_dataset(ann), val_frac=0.25, seed=0)
    trj, vaj = save_coco(tr, work / "data" / "train.json"), save_coco(va, work / "data" / "val.json")
    t = time.perf_counter()
    res = train(data=str(trj), val_data=str(vaj), arch=arch, epochs=epochs, max_dim=max_dim, device="cpu", workers=0,
                out=str(work), name="run", progress=False)
    print(f"trained {arch} for {epochs} epochs on {len(tr)} synthetic images in {time.perf_counter() - t:.0f} s")
    return res.run_dir / "best.pt", vaj, trj


def decoded(paths, max_dim):
    "Images decoded and resized once, as trailnb's inference hands them to a detector: (float tensor, scale)."
    from torchvision.transforms.v2.functional import pil_to_tensor
    from trailnb.data import load_image
    out = []
    for p in paths:
        im, s = load_image(p, max_dim)
        out.append((pil_to_tensor(im).float() / 255, s))
    return out


def run(det, tens, batch_size=8, thresh=0.001):
    "images/s of `predict_tensors` over pre-decoded tensors, and the detections."
    import torch
    res, t = [], time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tens), batch_size):
            chunk = tens[i:i + batch_size]
            res += det.predict_tensors([x for x, _ in chunk], [s for _, s in chunk], score_thresh=thresh)
    return len(tens) / (time.perf_counter() - t), res


def best_of(det, tens, repeat):
    "The fastest of `repeat` timed passes (after one warm-up call), and the detections of the last one."
    run(det, tens[:2])
    speeds, res = [], None
    for _ in range(repeat):
        s, res = run(det, tens)
        speeds.append(s)
    return max(speeds), res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="trailnb checkpoint (default: train one here on a synthetic set)")
    ap.add_argument("--data", help="labelled held-out set (COCO JSON) for AP; needed with --model")
    ap.add_argument("--calib", help="int8 calibration images (default: the synthetic training images, or --data's)")
    ap.add_argument("--arch", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    ap.add_argument("--max-dim", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n", type=int, default=48, help="synthetic images (default model only)")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes per engine (the best counts)")
    ap.add_argument("--out", help="folder for the model and exports (default: a temporary folder)")
    a = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    import torch
    from trailnb.core import IMAGE_EXTS, sample_data_dir
    from trailnb.data import load_dataset
    from trailnb.evaluate import coco_metrics
    from trailnb.export import export_onnx
    from trailnb.models import load_detector
    work = Path(a.out or tempfile.mkdtemp(prefix="trailnb-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.model:
        if not a.data: sys.exit("--model needs --data (its labelled held-out set, COCO JSON)")
        pt, val, calib = Path(a.model), Path(a.data), Path(a.calib or a.data)
    else:
        pt, val, calib = default_model(work, a.arch, a.max_dim, a.epochs, a.n)
        calib = Path(a.calib) if a.calib else calib
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on the machine slows every engine alike)")
    t = time.perf_counter()
    f32 = export_onnx(pt, work / "model.onnx").path
    print(f"export fp32: {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    i8 = export_onnx(pt, work / "model.int8.onnx", int8=True, calib=calib).path
    print(f"export int8: {time.perf_counter() - t:.0f} s")
    dets = {"torch fp32": load_detector(pt, device="cpu").optimize_for_inference(),
            "ORT fp32": load_detector(f32, device="cpu"), "ORT int8": load_detector(i8, device="cpu")}
    ds = load_dataset(val)
    md = dets["torch fp32"].max_dim
    sets = {"held-out": decoded([r.path for r in ds.images], md)}
    cam = sample_data_dir("camtrap31")
    if cam is not None: sets["camtrap31"] = decoded(sorted(p for p in (cam / "images").iterdir() if p.suffix.lower() in IMAGE_EXTS), md)
    rows = {}
    for name, det in dets.items():
        r = rows[name] = {}
        for sname, tens in sets.items():
            r[sname], res = best_of(det, tens, a.repeat)
            if sname == "held-out": r.update({k: coco_metrics(ds, res)[k] for k in ("AP50", "AP")})
    print(f"\n{dets['torch fp32'].arch} at {md} px, {len(ds)} held-out images"
          + (f", {len(sets['camtrap31'])} camtrap31 photos" if "camtrap31" in sets else "") + " (images/s, model alone)")
    cols = list(sets)
    print(f"| engine | {' | '.join(c + ' img/s' for c in cols)} | AP50 | AP |")
    print("|---" * (len(cols) + 3) + "|")
    for name, r in rows.items():
        print(f"| {name} | {' | '.join(f'{r[c]:.2f}' for c in cols)} | {r['AP50']:.4f} | {r['AP']:.4f} |")
    for c in cols:
        g1 = rows["ORT fp32"][c] / rows["torch fp32"][c]
        g2 = rows["ORT int8"][c] / rows["ORT fp32"][c]
        print(f"{c}: ORT fp32 / torch fp32 = {g1:.2f}x (goal 1.2x: {'met' if g1 >= 1.2 else 'missed'}); "
              f"int8 / ORT fp32 = {g2:.2f}x (goal 1.8x: {'met' if g2 >= 1.8 else 'missed'})")
    d = abs(rows["ORT int8"]["AP50"] - rows["ORT fp32"]["AP50"])
    print(f"AP50 int8 - fp32 = {rows['ORT int8']['AP50'] - rows['ORT fp32']['AP50']:+.4f} (goal within 0.01: "
          f"{'met' if d <= 0.01 else 'missed'}); ORT fp32 - torch fp32 = {rows['ORT fp32']['AP50'] - rows['torch fp32']['AP50']:+.4f}")
    print(f"files in {work}")


if __name__ == "__main__":
    main()
