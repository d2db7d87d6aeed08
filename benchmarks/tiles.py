"""Small animals in big photos: recall and AP50 with and without tiles, with and without tile-scale training.

    .venv/bin/python benchmarks/tiles.py            # the default: ~25 min on 2 CPU cores
    .venv/bin/python benchmarks/tiles.py --train-photos 40 --test-photos 24 --epochs 40 --max-dim 640 --tiles auto \\
        --threads 16 --camtrap-photos 31            # bigger (a GPU box): full-resolution tiles, every camtrap31 photo
    .venv/bin/python benchmarks/tiles.py --arch fasterrcnn_mobilenet_v3_large_320_fpn --lr 0.02 --batch-size 2

A synthetic world of 4000x3000 photos with animals of 30-120 px (`trailnb.synthetic.make_large_synthetic_dataset`):
one detector trained from scratch on the whole photos (shrunk to `--max-dim`), one at tile scale (`train(tiles=...)`:
crops of the tile size that keep every animal whole), each predicted on held-out photos of the same world (other
scenes: another seed draws other backgrounds) with and without tiles (`iter_predictions(tiles=...)`). Both runs get
the same budget of training images: the tile run sees `ceil(W/tile) x ceil(H/tile)` crops per photo per epoch, so the
whole-photo run gets that many times the epochs (up to --max-whole-epochs). Prints a table: recall at score 0.5 and COCO AP50 (both at IoU 0.5)
and the time per photo, side by side. On camtrap31 (real photos up to 5152x3968, read in place) the tile-trained
detector's time per photo with tiles over without: the cost only (its ground truth is MegaDetector's, a different
class set). The machine is named in the output; timings are this process's, on whatever else the machine runs.

Measured 2026-12-07 at the defaults (2-core x86_64 CPU, 1 torch thread, no GPU, load average ~3 from other work),
seed 0 / seed 1; 12 test photos of unseen scenes with 47 / 44 animals:

| trained on | predicted on | recall @0.5 | AP50 | s / photo |
|---|---|---|---|---|
| whole photos (150 epochs) | whole photo | 0.000 / 0.000 | 0.000 / 0.000 | 0.07 |
| whole photos (150 epochs) | tiles 1280 | 0.000 / 0.000 | 0.000 / 0.000 | 0.54 |
| tiles 1280 (30 epochs x 12 crops) | whole photo | 0.085 / 0.000 | 0.144 / 0.047 | 0.07-0.08 |
| tiles 1280 (30 epochs x 12 crops) | tiles 1280 | **0.681 / 0.705** | **0.856 / 0.836** | 0.52-0.54 |

Tiles cost 7.4x per 4000x3000 photo here (12 tiles and the whole photo at 320 px), 4.2-4.9x on camtrap31's real
photos. The whole-photo run learns nothing: at 320 px its animals are 2-10 px, smaller than the detector's finest
stride (8 px), so Ultralytics' assigner gives them no anchor point and its box loss stays 0 for all 150 epochs.
"""
import argparse, math, os, platform, sys, tempfile, time
from pathlib import Path


def _machine() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} CPU, {len(os.sched_getaffinity(0))} cores usable, {torch.get_num_threads()} torch thread(s), "
            f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, {gpu}")


def _predict(det, items, tiles, overlap):
    "Detections per item (None where it failed) and seconds per photo."
    from trailnb.predict import iter_predictions
    t0 = time.perf_counter()
    out = [r.detections if r.ok else None for r in iter_predictions(det, items, workers=0, score_thresh=0.001, precision="fp32",
                                                                      tiles=tiles, tile_overlap=overlap)]
    return out, (time.perf_counter() - t0) / max(1, len(items))


def _scores(ds, preds) -> dict:
    from trailnb.evaluate import coco_metrics, match_dataset
    m = coco_metrics(ds, preds)
    return {"recall": match_dataset(ds, preds, iou=0.5).at(0.5).recall, "AP50": m["AP50"]}


def _train(data, val, out, name, a, tiles, epochs):
    from trailnb.train import train
    t0 = time.perf_counter()
    res = train(data=str(data), val_data=str(val), arch=a.arch, max_dim=a.max_dim, epochs=epochs, batch_size=a.batch_size,
                lr=a.lr, warmup_epochs=1, workers=0, hflip=0.5, scale_jitter=(0.8, 1.0), color_jitter=0.1, seed=a.seed,
                out=str(out), name=name, tiles=tiles, progress=False)
    return res.detector, time.perf_counter() - t0


class ResolutionLimited:
    """A stand-in detector with a known resolution limit: it boxes the connected blobs of the world's animal colour
    that are at least `min_px` pixels long in what it is shown (a CNN misses what is a few pixels wide too). It
    isolates what tiling does (slicing, batching, mapping back, merging) from how well a detector was trained."""
    device, classes = "cpu", ["animal"]

    def __init__(self, max_dim, min_px=8, color=(139, 90, 43)): self.max_dim, self.min_px, self.color = max_dim, min_px, color

    def predict_tensors(self, batch, scales, score_thresh=0.05):
        import numpy as np
        from scipy import ndimage
        from trailnb.core import Detections
        out = []
        for t, s in zip(batch, scales):
            a = t.permute(1, 2, 0).numpy() * 255
            lab, _ = ndimage.label((np.abs(a - np.array(self.color)) < 45).all(-1))
            b = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop) for sl in ndimage.find_objects(lab)]
            b = np.array([x for x in b if max(x[2] - x[0], x[3] - x[1]) >= self.min_px], np.float32).reshape(-1, 4)
            out.append(Detections(b / s, np.full(len(b), 0.9, np.float32), np.zeros(len(b), np.int64)))
        return out


def _camtrap_cost(det, a) -> str:
    from trailnb.core import sample_data_dir
    from trailnb.predict import expand_items, find_inputs
    d = sample_data_dir("camtrap31")
    if d is None: return "camtrap31 not found (TRAILNB_SAMPLE_DATA): cost ratio skipped"
    root, files = find_inputs(d / "images")
    items = expand_items(root, files[:a.camtrap_photos])[0]
    _, t_whole = _predict(det, items, "none", a.overlap)
    _, t_tiled = _predict(det, items, a.tiles, a.overlap)
    return (f"camtrap31 ({len(items)} of {len(files)} photos, real sizes up to 5152x3968), tile-trained detector: "
            f"{t_whole:.2f} s/photo whole, {t_tiled:.2f} s/photo tiled (--tiles {a.tiles}): tiles cost {t_tiled / t_whole:.1f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-photos", type=int, default=8)
    p.add_argument("--test-photos", type=int, default=12)
    p.add_argument("--size", type=int, nargs=2, default=(4000, 3000), metavar=("W", "H"))
    p.add_argument("--animal-px", type=int, nargs=2, default=(30, 120), metavar=("MIN", "MAX"))
    p.add_argument("--classes", nargs="+", default=["animal"], help="class names of the world (1 to 8; each its own shape)")
    p.add_argument("--val-photos", type=int, default=2, help="photos of the world's own scenes that pick each run's best.pt")
    p.add_argument("--cameras", type=int, default=4, help="scenes (backgrounds) of the training world")
    p.add_argument("--arch", default="yolov8n", help="yolov8n learns this world from scratch on a CPU; the torchvision "
                   "Faster R-CNN (from scratch, 8 photos) found nothing with or without tiles")
    p.add_argument("--max-dim", type=int, default=320, help="the model's input size")
    p.add_argument("--tiles", default="1280", help="tile size (original pixels) or auto; 1280 on a 320 input: a quarter of full "
                   "resolution (animals 7-30 px to the model, 2-10 px in the whole photo)")
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=30, help="epochs of the tile-scale run")
    p.add_argument("--max-whole-epochs", type=int, default=150, help="cap on the whole-photo run's epochs (same image budget)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: on a CPU shared with other work, 2 OpenMP threads "
                   "on 2 busy cores were slower than 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-px", type=int, default=8, help="the stand-in detector's resolution limit, in model pixels")
    p.add_argument("--stand-in-only", action="store_true", help="skip training: only the stand-in detector's rows")
    p.add_argument("--camtrap-photos", type=int, default=2, help="camtrap31 photos timed for the cost ratio (31: all)")
    a = p.parse_args(argv)
    from trailnb.core import seed_everything
    from trailnb.data import load_coco
    from trailnb.predict import dataset_items
    from trailnb.synthetic import make_large_synthetic_dataset
    from trailnb.tiles import tile_size
    import torch
    torch.set_num_threads(a.threads)
    seed_everything(a.seed)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as tmp:
        tmp = Path(tmp)
        os.environ["TRAILNB_HOME"] = str(tmp / "home")  # YOLO layouts and tile crops go with the temporary folder
        kw = dict(size=tuple(a.size), animal_px=tuple(a.animal_px), classes=a.classes)
        train_json = make_large_synthetic_dataset(tmp / "train", n=a.train_photos, seed=a.seed, cameras=a.cameras, **kw)
        val_json = make_large_synthetic_dataset(tmp / "val", n=a.val_photos, seed=a.seed + 500, cameras=a.cameras, **kw)
        test = load_coco(make_large_synthetic_dataset(tmp / "test", n=a.test_photos, seed=a.seed + 1000, **kw))
        t = tile_size(*a.size, a.max_dim, a.tiles) or max(a.size)
        per_photo = math.ceil(a.size[0] / t) * math.ceil(a.size[1] / t)
        whole_epochs = min(a.max_whole_epochs, a.epochs * per_photo)
        print(f"world: {a.train_photos} training, {a.val_photos} validation and {a.test_photos} test photos of "
              f"{a.size[0]}x{a.size[1]}, animals {a.animal_px[0]}-{a.animal_px[1]} px ({test.num_boxes} in the test photos, "
              f"other scenes); {a.arch} from scratch at {a.max_dim} px, batch {a.batch_size}, lr {a.lr}; tiles {a.tiles} "
              f"({per_photo} crops per photo per epoch, {a.epochs} epochs), overlap {a.overlap}; whole photos {whole_epochs} "
              f"epochs", flush=True)
        items, rows, dets = dataset_items(test), [], {}
        runs = (("whole photos", "none", whole_epochs), (f"tiles {a.tiles}", a.tiles, a.epochs))
        for train_name, train_tiles, epochs in runs if not a.stand_in_only else ():
            det, t_train = _train(train_json, val_json, tmp / "runs", train_name.replace(" ", "_"), a, train_tiles, epochs)
            det.optimize_for_inference()
            _predict(det, items[:1], a.tiles, a.overlap)  # warm-up: first calls plan kernels; not timed
            dets[train_tiles] = det
            print(f"trained on {train_name} ({epochs} epochs) in {t_train / 60:.1f} min", flush=True)
            for pred_tiles in ("none", a.tiles):
                preds, s_per = _predict(det, items, pred_tiles, a.overlap)
                rows.append((train_name, "whole photo" if pred_tiles == "none" else f"tiles {pred_tiles}", _scores(test, preds), s_per))
                print(f"  predicted {rows[-1][1]}: {s_per:.2f} s/photo", flush=True)
        stand_in = ResolutionLimited(a.max_dim, a.min_px)
        _predict(stand_in, items[:1], "none", a.overlap)  # warm-up: its first call imports scipy
        for pred_tiles in ("none", a.tiles) if len(a.classes) == 1 else ():
            preds, s_per = _predict(stand_in, items, pred_tiles, a.overlap)
            rows.append((f"stand-in (blobs >= {a.min_px} px)", "whole photo" if pred_tiles == "none" else f"tiles {pred_tiles}",
                         _scores(test, preds), s_per))
        cost = _camtrap_cost(dets[a.tiles], a) if dets else ""
    print(f"\nmachine: {_machine()}; total {(time.perf_counter() - t_start) / 60:.1f} min\n")
    base = rows[0][3]
    print("| trained on | predicted on | recall @0.5 | AP50 | s / photo | photos / s | time vs whole |")
    print("|---|---|---|---|---|---|---|")
    for tr, pr, m, s in rows:
        print(f"| {tr} | {pr} | {m['recall']:.3f} | {m['AP50']:.3f} | {s:.2f} | {1 / s:.2f} | {s / base:.1f}x |")
    if cost: print("\n" + cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
