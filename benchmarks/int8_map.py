"""Where int8 pays on this CPU: ONNX Runtime int8 vs ONNX Runtime fp32, over model size x input size.

int8 measured 0.95-1.06x ORT fp32 for a YOLOv8n at 192 px, and 2.01x for a YOLO11n at 640 earlier: whether it pays
depends on how much of the time is convolution arithmetic (large models, large inputs) rather than the
quantize/dequantize steps, the detection head and NMS that stay float. This script maps it on the machine it runs on.

For each architecture (randomly initialised Ultralytics models, written by Ultralytics' own `save` as a downloaded
file is, with MegaDetector's three classes) and each input size, it exports fp32 and int8 (static quantization,
calibrated on --calib photos, default camtrap31's) with `trailnb.export.export_onnx` — the code `trailnb export
--int8` runs — and times both with `trailnb.export.int8_speed`, the measurement `export --int8` prints in its report
(median seconds per photo over real photos, after a warm-up). Random weights change nothing about speed.

    .venv/bin/python benchmarks/int8_map.py                                   # yolov8n, yolo11s, yolov9c x 320, 640, 960
    .venv/bin/python benchmarks/int8_map.py --archs yolov8n --sizes 320 640   # a quick look
"""
import argparse, os, sys, tempfile, time
from pathlib import Path


def photos(folder: Path, n: int) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]


def one(arch: str, size: int, work: Path, calib: Path, timing: list) -> dict:
    "Export `arch` at `size` to fp32 and int8 and time both; the row of the table."
    from trailnb.export import export_onnx, int8_speed
    from trailnb.yolo import write_ultralytics_checkpoint
    pt = write_ultralytics_checkpoint(f"{arch}.yaml", work / f"{arch}-{size}.pt", names=["animal", "person", "vehicle"],
                                      imgsz=size)
    t = time.perf_counter()
    fp32 = export_onnx(pt, work / f"{arch}-{size}.onnx")
    int8 = export_onnx(pt, work / f"{arch}-{size}-int8.onnx", int8=True, calib=str(calib), calib_images=8)
    export_s = time.perf_counter() - t
    sp = int8_speed(fp32.path, int8.path, images=timing)
    for f in (pt, fp32.path, int8.path): Path(f).unlink()
    return dict(arch=arch, size=size, mb=fp32.size_mb, int8_mb=int8.size_mb, export_s=export_s, **sp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["yolov8n", "yolo11s", "yolov9c"], help="Ultralytics model yamls (without .yaml)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640, 960], help="input sizes (longer side, px)")
    ap.add_argument("--calib", help="calibration and timing photos (default: $TRAILNB_SAMPLE_DATA/camtrap31)")
    ap.add_argument("--n", type=int, default=4, help="photos timed (each 3 times, after a warm-up)")
    a = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from trailnb.core import sample_data_dir
    calib = Path(a.calib) if a.calib else sample_data_dir("camtrap31")
    if calib is None or not calib.is_dir():
        sys.exit("no calibration photos: pass --calib FOLDER or set TRAILNB_SAMPLE_DATA (see ../shared/data/README.md)")
    timing = photos(calib, a.n)
    import torch
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"photos from {calib.name} ({len(timing)} timed)", flush=True)
    print(f"{'model':<9} {'size':>5} {'fp32 MB':>8} {'int8 MB':>8} {'fp32 s/img':>11} {'int8 s/img':>11} {'int8 / fp32 speed':>18}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs:
            for size in a.sizes:
                r = one(arch, size, Path(tmp), calib, timing)
                rows.append(r)
                print(f"{arch:<9} {size:>5} {r['mb']:>8.1f} {r['int8_mb']:>8.1f} {r['fp32_s']:>11.3f} {r['int8_s']:>11.3f} "
                      f"{r['speedup']:>17.2f}x", flush=True)
    pays = [f"{r['arch']}@{r['size']}" for r in rows if r["speedup"] >= 1.2]
    print(f"int8 pays (>= 1.2x ORT fp32) here for: {', '.join(pays) or 'none of these'}")


if __name__ == "__main__":
    main()
