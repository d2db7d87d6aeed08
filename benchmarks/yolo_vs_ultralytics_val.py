"""YOLO on the squirrel frames: trailnb's COCO metrics (pycocotools) next to Ultralytics' own `val`.

Trains yolo11n from its yaml (from scratch; no weights can be downloaded here) on the 10 training frames of
`../shared/data/squirrels` with the file's own train/val split, through the same `trailnb.train.train` call
as any architecture, then evaluates the best checkpoint on the 4 validation frames (and on the training
frames) both ways and prints them side by side, with the ratio trailnb / Ultralytics.

    .venv/bin/python benchmarks/yolo_vs_ultralytics_val.py                  # 300 epochs at 320 px
    .venv/bin/python benchmarks/yolo_vs_ultralytics_val.py --epochs 3 --imgsz 160   # a quick look

Why the numbers differ (nbs/07_yolo.ipynb explains and measures it): pycocotools averages the precision
envelope at 101 recall points stepwise and keeps 100 detections per image; Ultralytics integrates a linearly
interpolated envelope with the trapezoid rule and keeps 300; and its validator (rect=True) pads each batch
to a multiple of 32 plus half a stride, so the model sees other pixels than `predict` gives it. The third
column (Ultralytics val with rect=False) removes that last difference, and pycocotools with 300 boxes per image
(Ultralytics' max_det) removes the next; what remains is the integration rule, which `integration_bound`
bounds (1/(2n) + 1/101 for a class of n boxes, averaged over classes). The script exits 1 if any gap exceeds its bound.
"""
import argparse, os, sys, tempfile, time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=300, help="training epochs (default 300)")
    ap.add_argument("--imgsz", type=int, default=320, help="max_dim / imgsz (default 320: the 640-px frames halved)")
    ap.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    ap.add_argument("--arch", default="yolo11n", help="YOLO architecture (default yolo11n)")
    ap.add_argument("--out", default=None, help="runs folder (default: a temporary folder)")
    args = ap.parse_args(argv)

    from trailnb.core import sample_data_dir
    sq = sample_data_dir("squirrels")
    if sq is None:
        print("squirrels sample data not found (set TRAILNB_SAMPLE_DATA); nothing to measure.")
        return 0
    import trailnb.yolo_train as ty  # sets Ultralytics up offline before it is imported (through trailnb.yolo)
    from trailnb.data import load_yolo
    from trailnb.train import train

    out = Path(args.out or tempfile.mkdtemp(prefix="yolo-bench-"))
    t0 = time.perf_counter()
    res = train(data=str(sq / "data.yaml"), split="given", arch=args.arch, epochs=args.epochs, max_dim=args.imgsz,
                batch_size=args.batch, device="auto", workers=0, out=str(out), name="squirrels", progress=False)
    train_s = time.perf_counter() - t0

    ds = load_yolo(sq / "data.yaml")
    splits = {s: ds.subset([i for i, r in enumerate(ds) if r.meta["split"] == s]) for s in ("val", "train")}
    dev = f"{os.cpu_count()} CPU cores" if res.detector.device.type == "cpu" else str(res.detector.device)
    print(f"\n{args.arch} from scratch, {args.epochs} epochs at {args.imgsz} px on {len(splits['train'])} frames: "
          f"{train_s:.0f} s training ({train_s / args.epochs:.2f} s/epoch) on {dev}")
    bad = 0
    for name, sds in splits.items():
        t0 = time.perf_counter()
        rows = ty.compare_with_ultralytics(res.detector, sds, batch=args.batch)
        print(f"\n{name} split ({len(sds)} frames, {sds.num_boxes} boxes; both evaluations {time.perf_counter() - t0:.1f} s):")
        print(ty.format_comparison(rows))
        for r in rows:
            ratios = [f"{r['trailnb'] / r[k]:.3f}" if r[k] > 0 else "n/a" for k in ("ultralytics", "ultralytics_square")]
            gap = abs(r["trailnb_300"] - r["ultralytics_square"])
            print(f"  {r['metric']}: trailnb / Ultralytics val = {ratios[0]}; trailnb / Ultralytics val rect=False = {ratios[1]}; "
                  f"|300-box - rect=False| = {gap:.4f} {'<=' if gap <= r['bound'] else '>'} bound {r['bound']:.4f}")
            bad += gap > r["bound"]
    print(f"\nrun folder: {res.run_dir}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
