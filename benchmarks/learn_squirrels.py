"""Learning works: train a detector from scratch on the 14 real squirrel frames and report train-set AP50.

    .venv/bin/python benchmarks/learn_squirrels.py [--arch fasterrcnn_resnet18] [--max-dim 320] [--epochs 40]

Trains on all 14 frames (`squirrels/data.yaml`, both splits, split=none) and evaluates on the same frames:
the point is that the loop, the targets and the box conventions let a model fit real data (goal AP50 >= 0.9),
not generalisation. Prints the time taken; exits 1 if the goal is missed. Skips (exit 0) without the data.
"""
import argparse, sys, tempfile, time
from trailnb.core import sample_data_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="fasterrcnn_resnet18")
    p.add_argument("--max-dim", type=int, default=320)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--out", default=None, help="runs folder (default: a temp folder)")
    a = p.parse_args(argv)
    d = sample_data_dir("squirrels")
    if d is None:
        print("squirrels sample data not found (set TRAILNB_SAMPLE_DATA); skipped."); return 0
    from trailnb.data import load_dataset
    from trailnb.train import validate as evaluate, train
    out = a.out or tempfile.mkdtemp(prefix="learn-squirrels-")
    t0 = time.time()
    res = train(data=str(d / "data.yaml"), split="none", arch=a.arch, max_dim=a.max_dim, epochs=a.epochs, lr=a.lr,
                batch_size=a.batch_size, warmup_epochs=2, workers=0, hflip=0.5, scale_jitter=(0.8, 1.0),
                color_jitter=0.1, seed=0, out=out, name="squirrels")
    t_train = time.time() - t0
    m = evaluate(res.detector, load_dataset(d / "data.yaml"))
    print(f"{a.arch} @ {a.max_dim}px, {a.epochs} epochs, from scratch: train-set AP50 {m['AP50']:.3f}, AP {m['AP']:.3f}; "
          f"training took {t_train / 60:.1f} min on this machine ({res.run_dir})")
    print("loss by epoch:", " ".join(f"{h['loss']:.3f}" for h in res.history))
    return 0 if m["AP50"] >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
