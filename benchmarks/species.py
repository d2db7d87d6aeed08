"""Species from few labels: (a) one multi-class detector vs (b) a one-class "animal" detector + a crop classifier.

The synthetic world (trailnb.synthetic: classes are shapes and colours, cameras are scenes). Labelled photos come
from some cameras; every score is on photos of cameras never seen. For each number of labelled photos (20, 50,
150 by default) both approaches train on the same photos with the same detector recipe, and both are scored by
`trailnb evaluate` with the same image-level table: the species of each animal photo is the class of its
highest-scoring detection at the threshold, right when the photo holds that species. Training time is wall time
on this machine, side by side. Also: per-crop species vs trailnb's burst vote (`classify --vote burst`) vs
MegaDetector's `smooth_classification_results_sequence_level` on the same classified file.

    .venv/bin/python benchmarks/species.py                       # ~15-30 min on 2 quiet CPU cores (yolov8n at 192 px, 128x96 photos; slower when the cores are shared)
    .venv/bin/python benchmarks/species.py --sizes 20 50 150 --epochs 30 --max-dim 192 --test 200 --device cuda

Measured 2026-12-07 on the 2-core machine at these defaults (seed 0; 60 test
photos of 2 unseen cameras, 50 of them with animals), species accuracy per animal photo:
  20 photos:  (a) multi-class 0.84   (b) animal detector + classifier 0.86   (classifier alone on true boxes 0.98)
  50 photos:  (a) 0.84               (b) 0.74 (its detector's recall 0.74)   (1.00)
  150 photos: (a) 0.90               (b) 0.94                                (0.98)
One photo is 0.02: at this size the two are within a few photos of each other, and (b) loses only where its detector
misses animals. Training time on the quiet machine (50 and 150): (a) 48-52 s, (b) 104-168 s (detector + classifier);
the 20-photo row ran beside a CI run. With the earlier 500-photo-pass budget at 128 px no detector learned (0.00).
"""
import argparse, dataclasses, json, os, tempfile, time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TRAILNB_PROGRESS", "off")


def _subsets(pool, sizes, n_val, seed):
    "Nested subsets of the pool's photos (the first N of one random order: more labels only ever add photos), and `n_val` others."
    import numpy as np
    order = np.random.default_rng(seed).permutation(len(pool.images))
    return {n: sorted(order[:n].tolist()) for n in sizes}, sorted(order[len(order) - n_val:].tolist())


def epochs_for(n, a) -> int:
    "Detector epochs for `n` labelled photos: `--epochs`, else about `--epoch-budget` photo-passes (at least 4, at most 100)."
    return a.epochs or max(4, min(100, -(-a.epoch_budget // n)))


def _write(ds, path, one_class=False):
    from trailnb.data import DetectionDataset, save_coco
    if one_class:
        import numpy as np
        ds = DetectionDataset(["animal"], [dataclasses.replace(r, labels=np.zeros(len(r.labels), np.int64)) for r in ds.images], ds.root, ds.name)
    return save_coco(ds, path)


def _train_detector(data, val, n, name, a):
    from trailnb.train import train
    t = time.perf_counter()
    r = train(data=str(data), val_data=str(val), arch=a.arch, max_dim=a.max_dim, epochs=epochs_for(n, a), batch_size=a.batch_size,
              out=str(a.work / "runs"), name=name, progress=False, workers=0, seed=a.seed, device=a.device, lr=a.lr)
    return r.run_dir / "best.pt", time.perf_counter() - t


def _train_classifier(data, name, a):
    from trailnb.train_classifier import train_classifier
    t = time.perf_counter()
    r = train_classifier(data=str(data), split="none", arch=a.cls_arch, input_size=a.input_size, epochs=a.cls_epochs, batch_size=a.cls_batch_size,
                         out=str(a.work / "runs"), name=name, progress=False, workers=0, seed=a.seed, device=a.device)
    return r.run_dir / "best.pt", time.perf_counter() - t


def _species(rep) -> dict:
    il = rep.image_level
    return {k: il[k] for k in ("species_photos", "species_right", "species_missed", "species_accuracy", "recall", "precision")}


def _sequence_info(test_json):
    "COCO Camera Traps image records with the burst (`seq_id`) of each photo, for MegaDetector's smoothing."
    from trailnb.data import load_coco, sequence_ids
    ds = load_coco(test_json)
    return [{"file_name": r.file_name, "seq_id": f"seq{s}"} for r, s in zip(ds.images, sequence_ids(ds, 60))]


def _md_smoothed(classified, test_json, out):
    from megadetector.postprocessing.classification_postprocessing import smooth_classification_results_sequence_level
    smooth_classification_results_sequence_level(str(classified), _sequence_info(test_json), str(out))  # MegaDetector's defaults
    return out


def _gt_as_detections(test_json, out):
    "The test photos' true boxes as a one-class MegaDetector file (a perfect animal detector, conf 0.9): species without detector errors."
    import numpy as np
    from trailnb.core import Detections
    from trailnb.data import load_coco
    from trailnb.results import ImageResult, write_results
    ds = load_coco(test_json)
    recs = [ImageResult(r.file_name, r.width, r.height, Detections(r.boxes, np.full(len(r.boxes), 0.9), np.zeros(len(r.boxes), int)))
            for r in ds.images]
    return write_results(recs, ["animal"], out, ["md"], typical_thresh=0.2)["md"]


def oracle_votes(n, cls, test_json, test_root, a) -> dict:
    "Species per animal photo on the true boxes: per crop, trailnb's burst vote, MegaDetector's sequence smoothing."
    from trailnb.classify import classify_results
    from trailnb.evaluate import run_evaluation
    gt = _gt_as_detections(test_json, a.work / f"oracle{n}")
    row = {}
    for k, vote in (("crop", "none"), ("vote", "burst")):
        out = a.work / f"oracle{n}" / f"{k}.json"
        classify_results(results=gt, images=test_root, classifier=cls, out=out, vote=vote, overwrite=True, device=a.device)
        row[k] = _species(run_evaluation(data=str(test_json), predictions=str(out), score_thresh=a.thresh))
    try:
        md = _md_smoothed(a.work / f"oracle{n}" / "crop.json", test_json, a.work / f"oracle{n}" / "md.json")
        row["md"] = _species(run_evaluation(data=str(test_json), predictions=str(md), score_thresh=a.thresh))
    except ImportError as e: row["md"] = {"species_accuracy": None, "why": str(e)}
    return row


def run_size(n, train_json, animal_json, val_json, val_animal_json, test_json, test_root, a) -> dict:
    from trailnb.classify import classify_results
    from trailnb.evaluate import run_evaluation
    from trailnb.infer import run_inference
    multi, t_multi = _train_detector(train_json, val_json, n, f"multi{n}", a)
    one, t_one = _train_detector(animal_json, val_animal_json, n, f"animal{n}", a)
    cls, t_cls = _train_classifier(train_json, f"cls{n}", a)
    row = {"n": n, "epochs": epochs_for(n, a), "t_multi": t_multi, "t_one": t_one, "t_cls": t_cls}
    row["a"] = _species(run_evaluation(data=str(test_json), checkpoint=str(multi), all_images=True, score_thresh=a.thresh,
                                       device=a.device))
    out = a.work / f"infer{n}"
    s = run_inference(model=str(one), input=str(test_root), out=str(out), classifier=str(cls), sort_thresh=a.thresh,
                      formats=("md",), workers=0, device=a.device, engine="torch", overwrite=True)
    row["b"] = _species(run_evaluation(data=str(test_json), predictions=str(s.outputs["md"]), score_thresh=a.thresh))
    voted = a.work / f"voted{n}.json"
    classify_results(results=s.outputs["md"], images=test_root, classifier=cls, out=voted, vote="burst", overwrite=True,
                     device=a.device, sort_thresh=a.thresh)
    row["vote"] = _species(run_evaluation(data=str(test_json), predictions=str(voted), score_thresh=a.thresh))
    try:
        md = _md_smoothed(s.outputs["md"], test_json, a.work / f"md_smoothed{n}.json")
        row["md"] = _species(run_evaluation(data=str(test_json), predictions=str(md), score_thresh=a.thresh))
    except ImportError as e: row["md"] = {"species_accuracy": None, "why": str(e)}
    row["oracle"] = oracle_votes(n, cls, test_json, test_root, a)
    print(json.dumps(row, default=float), flush=True)
    return row


def _f(v): return "–" if v is None or v < 0 else f"{v:.3f}"


def report(rows, a) -> str:
    L = [f"Species accuracy per animal photo on {a.test} photos of {a.test_cameras} cameras never seen (score ≥ {a.thresh:g}); "
         f"detector {a.arch} at {a.max_dim} px from scratch, the same recipe for (a) and (b) ({'%d epochs' % a.epochs if a.epochs else 'about %d photo-passes: epochs per row below' % a.epoch_budget}), "
         f"validated on {a.val} other photos of the labelled cameras; classifier {a.cls_arch} at {a.input_size} px from scratch, {a.cls_epochs} epochs.", "",
         "| labelled photos | (a) multi-class detector | train s | (b) animal detector + classifier | train s (detector + classifier) | animal-photo recall (a / b) |",
         "|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['n']} ({r['epochs']} ep.) | {_f(r['a']['species_accuracy'])} ({r['a']['species_right']}/{r['a']['species_photos']}) | {r['t_multi']:.0f} | "
                 f"{_f(r['b']['species_accuracy'])} ({r['b']['species_right']}/{r['b']['species_photos']}) | "
                 f"{r['t_one'] + r['t_cls']:.0f} ({r['t_one']:.0f} + {r['t_cls']:.0f}) | {_f(r['a']['recall'])} / {_f(r['b']['recall'])} |")
    L += ["", "Which wins where:"]
    for r in rows:
        sa, sb = r["a"]["species_accuracy"], r["b"]["species_accuracy"]
        who = "neither wins (a tie)" if abs(sa - sb) < 1e-9 else ("(a) the multi-class detector wins" if sa > sb else "(b) detector + classifier wins")
        fast = "(a)" if r["t_multi"] < r["t_one"] + r["t_cls"] else "(b)"
        L.append(f"- {r['n']} labelled photos: species accuracy {_f(sa)} (a) vs {_f(sb)} (b): {who}; {fast} took less wall time to train "
                 f"({r['t_multi']:.0f} s vs {r['t_one'] + r['t_cls']:.0f} s).")
    L += ["", "Bursts: species per animal photo from (b)'s classified file, per crop vs voted per burst (same file, same photos):", "",
          "| labelled photos | per crop | trailnb burst vote | MegaDetector sequence smoothing (its defaults) |", "|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['n']} | {_f(r['b']['species_accuracy'])} | {_f(r['vote']['species_accuracy'])} | {_f(r['md'].get('species_accuracy'))} |")
    L += ["", "The same on the test photos' true boxes (a perfect animal detector: the classifier's half alone):", "",
          "| labelled photos | per crop | trailnb burst vote | MegaDetector sequence smoothing (its defaults) |", "|---|---|---|---|"]
    for r in rows:
        o = r["oracle"]
        L.append(f"| {r['n']} | {_f(o['crop']['species_accuracy'])} | {_f(o['vote']['species_accuracy'])} | {_f(o['md'].get('species_accuracy'))} |")
    return "\n".join(L)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 50, 150], help="labelled photos per comparison")
    p.add_argument("--test", type=int, default=60, help="photos of unseen cameras to score on")
    p.add_argument("--test-cameras", type=int, default=2, help="unseen cameras")
    p.add_argument("--cameras", type=int, default=3, help="cameras the labelled photos come from")
    p.add_argument("--size", type=int, nargs=2, default=[128, 96], help="photo width height")
    p.add_argument("--classes", nargs="+", default=["deer", "fox", "bird"])
    p.add_argument("--arch", default="yolov8n", help="detector architecture, the same for (a) and (b)")
    p.add_argument("--max-dim", type=int, default=192)
    p.add_argument("--epochs", type=int, default=None, help="detector epochs for every size (default: from --epoch-budget)")
    p.add_argument("--epoch-budget", type=int, default=1500, help="photo-passes per detector run: epochs = budget / labelled photos, 4 to 100")
    p.add_argument("--val", type=int, default=6, help="other photos of the labelled cameras, for the detectors' best.pt")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01, help="detector peak learning rate (the demo's: Ultralytics' own lr0)")
    p.add_argument("--cls-arch", default="resnet18", help="classifier architecture (resnet18 learns from scratch; mobilenet_v3_* need pretrained weights)")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--cls-epochs", type=int, default=30)
    p.add_argument("--cls-batch-size", type=int, default=8, help="crops per classifier step (few photos give few crops: 32 on ~30 crops is one step an epoch)")
    p.add_argument("--thresh", type=float, default=0.2, help="score a detection needs (species, sorting, classification); MegaDetector's typical 0.2")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder, removed)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    from trailnb.core import seed_everything
    from trailnb.data import load_coco
    from trailnb.synthetic import make_synthetic_dataset
    import torch
    tmp = tempfile.TemporaryDirectory(prefix="bench-species-")
    a.work = Path(a.keep or tmp.name)
    seed_everything(a.seed)
    pool = load_coco(make_synthetic_dataset(a.work / "seen", n=max(a.sizes) + a.val, classes=a.classes, seed=a.seed, size=tuple(a.size),
                                            cameras=a.cameras))
    test_json = make_synthetic_dataset(a.work / "unseen", n=a.test, classes=a.classes, seed=a.seed + 1000, size=tuple(a.size),
                                       cameras=a.test_cameras, scenes_seed=a.seed + 1000)  # other scenes: cameras never seen
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; {len(pool.images)} labelled photos from {a.cameras} cameras, "
          f"{a.test} test photos from {a.test_cameras} others", flush=True)
    rows, t0 = [], time.perf_counter()
    subsets, val_idx = _subsets(pool, a.sizes, a.val, a.seed)
    val = pool.subset(val_idx, "val")
    val_json, val_animal = _write(val, a.work / "seen" / "val.json"), _write(val, a.work / "seen" / "val_animal.json", True)
    for n, idx in subsets.items():
        sub = pool.subset(idx, f"seen{n}")
        rows.append(run_size(n, _write(sub, a.work / "seen" / f"train{n}.json"), _write(sub, a.work / "seen" / f"animal{n}.json", True),
                             val_json, val_animal, test_json, a.work / "unseen", a))
    print("\n" + report(rows, a) + f"\n\n(total {time.perf_counter() - t0:.0f} s)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
