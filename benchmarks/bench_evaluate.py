"""How long trailnb.evaluate takes, as ratios against plain pycocotools measured in the same process.

    .venv/bin/python benchmarks/bench_evaluate.py [--images 200 1000] [--repeat 3]

Baseline: pycocotools COCO() + loadRes + COCOeval on ready-made COCO dicts (what a script would do).
Measured: `coco_metrics` with each backend (includes converting our xyxy Detections to COCO in memory), and the
full `evaluate` report (COCO + per-class + P/R/F1 + confusion + image level). Synthetic data: 3 classes,
0-6 boxes per image, ~75% found with jitter, 3 false positives per image, plus 20% empty images.
"""
import argparse, contextlib, io, time
from pathlib import Path

import numpy as np

from trailnb.core import Detections
from trailnb.data import DetectionDataset, ImageRecord
from trailnb.evaluate import coco_gt_dict, coco_metrics, coco_results, evaluate


def make_set(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    recs, preds = [], []
    for i in range(n):
        k = 0 if rng.random() < 0.2 else int(rng.integers(1, 7))
        xy = rng.uniform(0, 1500, (k, 2)); boxes = np.c_[xy, xy + rng.uniform(10, 400, (k, 2))]
        labels = rng.integers(0, 3, k)
        recs.append(ImageRecord(Path(f"/b/{i}.jpg"), 1920, 1080, boxes, labels, image_id=i, file_name=f"{i}.jpg"))
        keep = rng.random(k) < 0.75
        fp = rng.uniform(0, 1500, (3, 2))
        preds.append(Detections(np.r_[boxes[keep] + rng.normal(0, 8, (int(keep.sum()), 4)), np.c_[fp, fp + 80]],
                                np.r_[rng.uniform(0.3, 1, int(keep.sum())), rng.uniform(0, 0.7, 3)],
                                np.r_[labels[keep], rng.integers(0, 3, 3)]))
    return DetectionDataset(["deer", "fox", "bird"], recs, name=f"bench{n}"), preds


def plain_pycocotools(gt: dict, res: list) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(); g.dataset = gt; g.createIndex()
        E = COCOeval(g, g.loadRes(res), "bbox"); E.evaluate(); E.accumulate(); E.summarize()
    return E.stats


def best_of(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts)


def main(sizes=(200, 1000), repeat: int = 3):
    print(f"{'images':>7} {'dets':>7} {'baseline s':>11}  ratio vs baseline (lower is faster)")
    for n in sizes:
        ds, preds = make_set(n)
        gt, res = coco_gt_dict(ds), coco_results(preds)  # the baseline gets its COCO dicts for free
        base = best_of(lambda: plain_pycocotools(gt, res), repeat)
        rows = {"coco_metrics pycocotools": best_of(lambda: coco_metrics(ds, preds, backend="pycocotools"), repeat),
                "coco_metrics faster-coco-eval": best_of(lambda: coco_metrics(ds, preds, backend="faster-coco-eval"), repeat),
                "evaluate() full report (auto)": best_of(lambda: evaluate(ds, preds), repeat)}
        print(f"{n:>7} {len(res):>7} {base:>11.3f}  " + "  ".join(f"{k}: {v / base:.2f}x" for k, v in rows.items()))
        m_a, m_b = coco_metrics(ds, preds, backend="pycocotools"), coco_metrics(ds, preds, backend="faster-coco-eval")
        print(f"{'':>27}AP pycocotools {m_a['AP']:.6f} | faster-coco-eval {m_b['AP']:.6f} | "
              f"max |diff| over 12 numbers {max(abs(m_a[k] - m_b[k]) for k in m_a):.1e}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[200, 1000], help="dataset sizes to time")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (the best is kept)")
    a = p.parse_args()
    main(a.images, a.repeat)
