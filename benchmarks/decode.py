"""Decoding speed of `trailnb.data.load_image` (reduced-size JPEG decode) vs PIL full decode + resize.

    .venv/bin/python benchmarks/decode.py [--max-dim 1024] [--repeats 3]

On the camtrap31 sample photos (1280x1024 up to 5152x3968) both paths produce the same output size; the
script prints the time per image of each, their ratio (goal >= 2x), the largest disagreement between the
boxes mapped into each path's resized image (px), and the mean absolute pixel difference of the outputs.
"""
import argparse, sys, time

import numpy as np
from PIL import Image, ImageOps

from trailnb.core import sample_data_dir
from trailnb.data import load_coco, load_image


def baseline(path, max_dim):
    "PIL full-resolution decode, EXIF orientation, RGB, then one resize to the longer side `max_dim`."
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = im.size
    s = min(1.0, max_dim / max(w, h))
    out = (max(1, round(w * s)), max(1, round(h * s)))
    return (im.resize(out, Image.BILINEAR, reducing_gap=None) if out != im.size else im), (out[0] / w, out[1] / h)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-dim", type=int, default=1024, help="longer side of the decoded images")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the images (the best is kept)")
    a = ap.parse_args(argv)
    root = sample_data_dir("camtrap31")
    if root is None:
        print("camtrap31 sample data not found (set TRAILNB_SAMPLE_DATA); nothing to measure."); return 0
    ds = load_coco(root / "coco_md_pseudo_gt.json", images=root / "images")
    paths = [r.path for r in ds]
    for p in paths: p.read_bytes()  # warm the OS file cache so both paths read from memory

    def best_time(fn):
        best = float("inf")
        for _ in range(a.repeats):
            t = time.perf_counter()
            for p in paths: fn(p, a.max_dim)
            best = min(best, time.perf_counter() - t)
        return best

    t_base, t_ours = best_time(baseline), best_time(load_image)
    box_err, pix_err = 0.0, []
    for r in ds:
        ours, s = load_image(r.path, a.max_dim)
        ref, (sx, sy) = baseline(r.path, a.max_dim)
        assert ours.size == ref.size, (r.file_name, ours.size, ref.size)
        if len(r.boxes):
            exact = r.boxes * np.array([sx, sy, sx, sy], np.float32)
            box_err = max(box_err, float(np.abs(r.boxes * s - exact).max()))
        pix_err.append(np.abs(np.asarray(ours, np.float32) - np.asarray(ref, np.float32)).mean())
    mp = sum(r.width * r.height for r in ds) / len(ds) / 1e6
    n = len(paths)
    print(f"camtrap31: {n} JPEGs, mean {mp:.1f} MP, decoded to max_dim={a.max_dim} (best of {a.repeats})")
    print(f"  PIL full decode + resize : {1000 * t_base / n:7.1f} ms/image")
    print(f"  trailnb load_image       : {1000 * t_ours / n:7.1f} ms/image")
    print(f"  speed-up                 : {t_base / t_ours:7.2f}x  (goal >= 2x)")
    print(f"  largest box disagreement : {box_err:7.3f} px  (boxes mapped into the resized image by each path)")
    print(f"  mean |pixel difference|  : {np.mean(pix_err):7.2f} / 255  (max over images {np.max(pix_err):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
