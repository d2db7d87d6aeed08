"""How closely a MegaDetector you supply agrees with the published MegaDetector v5 results on camtrap31.

Runs `trailnb infer` with the given model (any file `load_detector` takes: MDv5a/b with trailnb[megadetector],
MDv6 / MDv1000 Ultralytics files, or a trailnb checkpoint) on `../shared/data/camtrap31/images` with
MegaDetector's defaults, then compares its results file with `megadetector_v5_results.json` (MegaDetector
v5a's own output on the same photos):

- image level: animal / no animal at the threshold (default MegaDetector's usual 0.2), as a 2x2 table;
- boxes: detections at the threshold matched one-to-one to the published ones of the same class at IoU >= 0.5
  (greedy by score, as COCO matches), so "matched / published" is the recall of the published boxes and
  "matched / ours" the precision against them;
- per image: every photo where the two disagree at image level, with each side's top animal score.

    .venv/bin/python benchmarks/agree_megadetector.py --model md_v5a.0.0.pt
    .venv/bin/python benchmarks/agree_megadetector.py --model MDV6-yolov9-c.pt --max-dim 1280
    .venv/bin/python benchmarks/agree_megadetector.py --results run/results_md.json   # compare an existing run

No MegaDetector weights can be downloaded on these machines: tests run this with a random-init model, which
checks the plumbing only (its agreement numbers mean nothing).
"""
import argparse, json, sys, tempfile
from pathlib import Path
import numpy as np


def match_boxes(a, b, iou: float = 0.5) -> int:
    "Number of one-to-one matches between Detections `a` (greedy by score) and `b` of the same class at IoU >= `iou`."
    import torch
    from torchvision.ops import box_iou
    n = 0
    for c in set(a.labels.tolist()) & set(b.labels.tolist()):
        da, db = a[a.labels == c], b[b.labels == c]
        ious = box_iou(torch.as_tensor(da.boxes[np.argsort(-da.scores)], dtype=torch.float64),
                       torch.as_tensor(db.boxes, dtype=torch.float64)).numpy()
        free = np.ones(len(db), bool)
        for row in ious:
            j = np.argmax(np.where(free, row, -1)) if free.any() else -1
            if j >= 0 and free[j] and row[j] >= iou: free[j] = False; n += 1
    return n


def compare(ours_file, reference_file, images, thresh: float = 0.2, iou: float = 0.5) -> dict:
    "Image-level animal/empty agreement, box matches and per-image differences of two MegaDetector results files."
    from trailnb.results import read_results
    c1, ours, _ = read_results(ours_file, image_root=images)
    c2, ref, _ = read_results(reference_file, image_root=images)
    if "animal" not in c1 or "animal" not in c2:
        raise SystemExit(f"both files need an 'animal' class; got {c1} and {c2}")
    a1, a2 = c1.index("animal"), c2.index("animal")
    remap = np.array([c2.index(c) if c in c2 else -1 for c in c1])  # our class index -> the reference's
    table = {"both": 0, "only_ours": 0, "only_reference": 0, "neither": 0}
    n_ours = n_ref = n_matched = 0
    diffs = []
    for f in sorted(set(ours) & set(ref)):
        o, r = ours[f].above(thresh), ref[f].above(thresh)
        o = type(o)(o.boxes, o.scores, remap[o.labels]) if len(o) else o
        has_o, has_r = bool((o.labels == a2).any()), bool((r.labels == a2).any())
        table["both" if has_o and has_r else "only_ours" if has_o else "only_reference" if has_r else "neither"] += 1
        n_ours, n_ref, n_matched = n_ours + len(o), n_ref + len(r), n_matched + match_boxes(o, r, iou)
        if has_o != has_r:
            top = lambda d, a: float(d.scores[d.labels == a].max()) if (d.labels == a).any() else 0.0
            diffs.append({"file": f, "ours": round(top(ours[f], a1), 4), "reference": round(top(ref[f], a2), 4)})
    n = sum(table.values())
    return {"images": n, "missing_in_ours": sorted(set(ref) - set(ours)), "threshold": thresh, "iou": iou,
            "image_level": table, "image_agreement": (table["both"] + table["neither"]) / n if n else float("nan"),
            "boxes": {"ours": n_ours, "reference": n_ref, "matched": n_matched,
                      "recall_of_reference": n_matched / n_ref if n_ref else float("nan"),
                      "precision_vs_reference": n_matched / n_ours if n_ours else float("nan")},
            "differences": diffs}


def format_report(rep: dict) -> str:
    t, b = rep["image_level"], rep["boxes"]
    lines = [f"{rep['images']} images, threshold {rep['threshold']}, box IoU >= {rep['iou']}",
             "image level (animal present):   reference yes   reference no",
             f"  ours yes                       {t['both']:>13}   {t['only_ours']:>12}",
             f"  ours no                        {t['only_reference']:>13}   {t['neither']:>12}",
             f"  agreement {rep['image_agreement']:.3f}",
             f"boxes: ours {b['ours']}, published {b['reference']}, matched {b['matched']} "
             f"(recall of published {b['recall_of_reference']:.3f}, precision vs published {b['precision_vs_reference']:.3f})"]
    lines += [f"  differs: {d['file']}: ours {d['ours']:.3f}, published {d['reference']:.3f}" for d in rep["differences"]]
    if rep["missing_in_ours"]: lines.append(f"  not in our results: {rep['missing_in_ours']}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a MegaDetector file (or any model file trailnb loads)")
    ap.add_argument("--results", help="compare this existing MegaDetector-format results file instead of running a model")
    ap.add_argument("--max-dim", type=int, default=None, help="inference size (default: the model's own, MDv5 1280)")
    ap.add_argument("--thresh", type=float, default=0.2, help="detection threshold for both sides (default 0.2)")
    ap.add_argument("--out", default=None, help="inference output folder (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the report as JSON here")
    args = ap.parse_args(argv)
    from trailnb.core import sample_data_dir
    cam = sample_data_dir("camtrap31")
    if cam is None:
        print("camtrap31 sample data not found (set TRAILNB_SAMPLE_DATA); nothing to compare."); return 0
    if not args.results and not args.model: ap.error("give --model MD.pt or --results FILE")
    ours = args.results
    if not ours:
        from trailnb.infer import run_inference
        out = args.out or tempfile.mkdtemp(prefix="agree-md-")
        s = run_inference(model=args.model, input=str(cam / "images"), out=out, max_dim=args.max_dim, formats=("md",))
        print(s); ours = s.outputs["md"]
    rep = compare(ours, cam / "megadetector_v5_results.json", cam / "images", args.thresh)
    print(format_report(rep))
    if args.json: Path(args.json).write_text(json.dumps(rep, indent=1))
    return rep


if __name__ == "__main__":
    r = main()
    sys.exit(0 if isinstance(r, (dict, int)) else 1)
