"""What trailnb produces, as one hashable listing: run it before and after a restructuring and diff the two.

    python tools/behaviour_snapshot.py OUT_DIR > before.txt   # on the old code
    python tools/behaviour_snapshot.py OUT_DIR > after.txt    # on the new code, same machine
    diff before.txt after.txt                                 # no output: the same results, bit for bit

It drives the command line only (the surface a user sees, which a restructuring must not change): trains a
tiny torchvision and a tiny YOLO detector for one epoch (fixed seed, one thread, so the same machine gives the
same weights), then runs `infer` (results files, sort tree, tracks), `evaluate` (metrics) and `sort` (a
MegaDetector results file) on the synthetic card and on the real camtrap31 photos when the sample data is
there. Each results file is listed with the SHA-256 of its content; fields that say when or where a run
happened (times, durations, absolute paths) are dropped first.
"""
import hashlib, json, os, subprocess, sys
from pathlib import Path

OUT = Path(sys.argv[1]).resolve()
ENV = dict(os.environ, OMP_NUM_THREADS="1", YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", MPLBACKEND="Agg",
           TRAILNB_HOME=str(OUT / "home"), TRAILNB_PROGRESS="off")
TN = [sys.executable, "-m", "trailnb"]
VOLATILE = {"time", "date", "created", "duration_s", "elapsed_s", "seconds", "images_per_s", "wall_s", "started",
            "finished", "machine", "host", "python", "versions", "trailnb_version", "detection_completion_time",
            "timing", "speed", "total_s", "per_image_s", "checkpoint_path", "root", "out", "path_root"}


def run(*args):
    r = subprocess.run([*TN, *map(str, args)], env=ENV, capture_output=True, text=True)
    if r.returncode: sys.exit(f"failed: trailnb {' '.join(map(str, args))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def scrub(o):
    if isinstance(o, dict): return {k: scrub(v) for k, v in o.items() if k not in VOLATILE}
    if isinstance(o, list): return [scrub(v) for v in o]
    if isinstance(o, str) and str(OUT) in o: return o.replace(str(OUT), "<out>")
    return o


def digest(p: Path) -> str:
    if p.suffix == ".json":
        try: data = json.dumps(scrub(json.loads(p.read_text())), sort_keys=True).encode()
        except ValueError: data = p.read_bytes()
    elif p.suffix in (".csv", ".txt", ".yaml", ".md"): data = p.read_text().replace(str(OUT), "<out>").encode()
    else: data = b"file"  # images: their presence is the result (copies of the user's photos)
    return hashlib.sha256(data).hexdigest()[:16]


def listing(d: Path):
    for p in sorted(d.rglob("*")):
        if p.is_file() and "checkpoint" not in p.name and not p.name.endswith(".log"):
            print(f"{p.relative_to(OUT)}  {digest(p)}")


def main():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try: from trailnb.synthetic import make_synthetic_dataset
    except ImportError: from trailnb.data import make_synthetic_dataset
    OUT.mkdir(parents=True, exist_ok=True)
    train_set = make_synthetic_dataset(OUT / "syn", n=24, size=(160, 120), seed=0)
    card = make_synthetic_dataset(OUT / "card", n=16, size=(160, 120), seed=0, scenes_seed=1)
    models = {}
    for arch in ("fasterrcnn_mobilenet_v3_large_320_fpn", "yolov8n"):
        run("train", "--data", train_set, "--arch", arch, "--weights", "none", "--epochs", 1, "--batch-size", 4,
            "--max-dim", 160, "--seed", 0, "--out", OUT / "runs", "--name", arch, "--workers", 0, "--no-progress")
        models[arch] = OUT / "runs" / arch / "best.pt"
    sample = Path(os.environ.get("TRAILNB_SAMPLE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    cards = {"card": OUT / "card" / "images"}
    if (sample / "camtrap31").is_dir(): cards["camtrap31"] = sample / "camtrap31" / "images"
    for arch, ck in models.items():
        for name, src in cards.items():
            out = OUT / "infer" / f"{arch}-{name}"
            run("infer", ck, src, "--out", out, "--score-thresh", 0.001, "--sort-thresh", 0.001,
                "--sort", "hardlink", "--track", "--max-dim", 160)
            run("sort", out / "results_md.json", "--images", src, "--out", OUT / "sorted" / f"{arch}-{name}",
                "--sort-thresh", 0.002)
        run("evaluate", "--checkpoint", ck, "--data", card, "--out-dir", OUT / "eval" / arch, "--all-images",
            "--min-score", 0.001)
    for sub in ("infer", "sorted", "eval"): listing(OUT / sub)


if __name__ == "__main__":
    main()
