"""Batch inference speed and memory on the real camtrap31 photos (1.3-20 MP), cycled to N images.

Prints images/s for (1) trailnb's streaming pipeline (`iter_predictions`: DataLoader workers, JPEG draft
decoding at max_dim, batches), (2) the naive loop simple scripts use (PIL at full size, to tensor, one image
at a time, the model's own resize) and (3) the model alone on pre-decoded tensors, with ratios against the
naive loop measured in this process; then peak RSS of the pipeline after N and 10*N images, each in its own
subprocess. Usage: python benchmarks/infer.py [--n 300] [--naive 40] [--max-dim 320]
"""
import argparse, json, resource, subprocess, sys, tempfile, time
from pathlib import Path

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _items(n):
    from trailnb.core import sample_data_dir
    from trailnb.infer import InferItem
    cam = sample_data_dir("camtrap31")
    if cam is None: sys.exit("camtrap31 sample data not found (set TRAILNB_SAMPLE_DATA); nothing to benchmark")
    paths = sorted((cam / "images").glob("*"))
    return [InferItem(str(paths[i % len(paths)]), f"rep{i // len(paths)}/{paths[i % len(paths)].name}") for i in range(n)]


def _detector(max_dim):
    from trailnb.core import seed_everything
    from trailnb.models import build_detector
    seed_everything(0)
    return build_detector(ARCH, ["animal", "person", "vehicle"], weights=None, max_dim=max_dim, device="cpu")


def pipeline(det, items, max_dim, batch_size=8, workers=2):
    from trailnb.infer import iter_predictions
    t = time.perf_counter(); n = sum(1 for _ in iter_predictions(det, items, max_dim, batch_size, workers))
    return n / (time.perf_counter() - t)


def naive(det, items):
    import torch
    from PIL import Image
    from torchvision.transforms.functional import to_tensor
    det.model.eval(); t = time.perf_counter()
    with torch.inference_mode():
        for it in items: det.model([to_tensor(Image.open(it.path).convert("RGB"))])
    return len(items) / (time.perf_counter() - t)


def model_only(det, items, max_dim, batch_size=8):
    from trailnb.data import load_image
    from torchvision.transforms.v2.functional import pil_to_tensor
    dec = [load_image(it.path, max_dim) for it in items]
    tens = [(pil_to_tensor(im).float() / 255, s) for im, s in dec]
    t = time.perf_counter()
    for i in range(0, len(tens), batch_size):
        b = tens[i:i + batch_size]; det.predict_tensors([x for x, _ in b], [s for _, s in b])
    return len(tens) / (time.perf_counter() - t)


def _rss_child(n, max_dim):
    "Run the pipeline over n images in this (child) process and print its peak RSS in MiB."
    det = _detector(max_dim); ips = pipeline(det, _items(n), max_dim)
    print(json.dumps({"n": n, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ips": ips}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images for the pipeline (camtrap31 cycled)")
    ap.add_argument("--naive", type=int, default=40, help="images for the slow naive loop")
    ap.add_argument("--max-dim", type=int, default=320, help="decode / model input size")
    ap.add_argument("--rss-n", type=int, default=100, help="images for the first memory run (the second runs 10x)")
    ap.add_argument("--rss-max-dim", type=int, default=96, help="smaller size for the N vs 10N memory runs")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child: return _rss_child(a.rss_child, a.rss_max_dim)
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, {ARCH} (untrained), max_dim {a.max_dim}")
    det = _detector(a.max_dim); items = _items(a.n)
    naive(det, items[:2])  # warm-up
    r_naive = naive(det, items[:a.naive])
    r_model = model_only(det, items[:31], a.max_dim)
    r_pipe = pipeline(det, items, a.max_dim)
    print(f"naive loop (full-size PIL, 1 image/call) {r_naive:7.2f} images/s   1.00x  ({a.naive} images)")
    print(f"trailnb pipeline (2 workers, batch 8)    {r_pipe:7.2f} images/s  {r_pipe / r_naive:5.2f}x  ({a.n} images)")
    print(f"model alone on pre-decoded tensors        {r_model:7.2f} images/s  {r_model / r_naive:5.2f}x  (ceiling)")
    rss = []
    for n in (a.rss_n, 10 * a.rss_n):
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--rss-max-dim", str(a.rss_max_dim)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rss.append(json.loads(out))
    print(f"peak RSS (max_dim {a.rss_max_dim}): {rss[0]['n']} images {rss[0]['peak_rss_mib']:.0f} MiB, "
          f"{rss[1]['n']} images {rss[1]['peak_rss_mib']:.0f} MiB  ratio {rss[1]['peak_rss_mib'] / rss[0]['peak_rss_mib']:.2f}")


if __name__ == "__main__":
    main()
