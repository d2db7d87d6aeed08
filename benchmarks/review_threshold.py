"""How fast the threshold explorer can update precision/recall when the slider moves.

Baseline: `trailnb.evaluate.precision_recall_f1`, which filters the predictions and matches them again at each
threshold. trailnb.review matches once (`match_dataset`) and then only counts (`Matches.at`), which is exact
because COCO's greedy matching goes in descending score order. Both are measured here, in this process, on
the same data: camtrap31 (real MegaDetector output, tiled to more images) when present, else random boxes.

    .venv/bin/python benchmarks/review_threshold.py [--copies 40] [--steps 19]
"""
import argparse, os, time

import numpy as np

from trailnb.core import Detections, sample_data_dir
from trailnb.data import DetectionDataset, ImageRecord, load_coco
from trailnb.evaluate import precision_recall_f1
from trailnb.results import read_results
from trailnb.evaluate import align, match_dataset


def _data(copies: int, seed: int = 0):
    d = sample_data_dir("camtrap31")
    if d is not None:
        gt = load_coco(d / "coco_md_pseudo_gt.json", images=d / "images")
        _, by_file, _ = read_results(d / "megadetector_v5_results.json", image_root=d / "images")
        preds = align(gt, by_file)
        src = "camtrap31 (MegaDetector v5 results vs its conf>=0.2 pseudo ground truth)"
    else:  # random boxes, jittered copies of the ground truth plus clutter
        rng = np.random.default_rng(seed); recs, preds = [], []
        for i in range(31):
            xy = rng.uniform(0, 800, (3, 2)); b = np.concatenate([xy, xy + rng.uniform(30, 200, (3, 2))], 1)
            recs.append(ImageRecord(f"/nonexistent/{i}.jpg", 1024, 1024, b, [0, 0, 0], i + 1, f"{i}.jpg"))
            noise = np.concatenate([b + rng.normal(0, 8, b.shape), rng.uniform(0, 900, (6, 4)).cumsum(1) / 3])
            preds.append(Detections(noise, rng.uniform(0, 1, len(noise)), np.zeros(len(noise))))
        gt = DetectionDataset(["animal"], recs, "/nonexistent", "random")
        src = "random boxes (camtrap31 not found)"
    big = DetectionDataset(gt.classes, gt.images * copies, gt.root, gt.name)
    return big, preds * copies, src


def main(copies: int = 40, steps: int = 19):
    ds, preds, src = _data(copies)
    thresholds = np.linspace(0.05, 0.95, steps)
    print(f"data: {src}; {len(ds)} images, {ds.num_boxes} GT boxes, {sum(len(p) for p in preds)} predictions; "
          f"{steps} slider positions; machine: {os.cpu_count()} CPUs")
    t = time.perf_counter()
    base = [precision_recall_f1(ds, preds, score_thresh=x)["all"] for x in thresholds]
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    M = match_dataset(ds, preds)
    t_match = time.perf_counter() - t
    t = time.perf_counter()
    ours = [M.at(x) for x in thresholds]
    t_count = time.perf_counter() - t
    assert [(b["tp"], b["fp"], b["fn"]) for b in base] == [(o.tp, o.fp, o.fn) for o in ours], "counts differ"
    per_base, per_ours = t_base / steps, t_count / steps
    print(f"baseline precision_recall_f1 per slider move: {per_base * 1e3:9.2f} ms")
    print(f"review Matches.at per slider move:            {per_ours * 1e3:9.3f} ms  "
          f"(one-off match_dataset {t_match * 1e3:.1f} ms)")
    print(f"speed-up per slider move: {per_base / per_ours:,.0f}x; "
          f"including the one-off match over all {steps} moves: {t_base / (t_match + t_count):.1f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=40, help="tile the 31 images this many times")
    ap.add_argument("--steps", type=int, default=19, help="slider positions to evaluate")
    a = ap.parse_args()
    main(a.copies, a.steps)
