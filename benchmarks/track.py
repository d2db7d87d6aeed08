"""How well and how fast trailnb.track counts animals in clips, against plain ByteTrack and against no tracking.

Random synthetic clips with known truth (`trailnb.track.Walker`): 0-4 animals of 3 classes walking in random
directions at 0.1 to `--max-speed` times their own size per sampled frame, in view for 3 or more frames, some
hidden for a stretch of 1-3 frames, plus one-frame false positives (so some clips hold nothing else). Three
ways to decide and count, on the same clips, in this process:

- per frame (no tracking): a clip is detected when any frame has a detection at or above the threshold; the
  count is the most detections of a class in one frame;
- plain ByteTrack (Ultralytics' settings: boxes matched as they are, classes ignored);
- trailnb's `Tracker` defaults (boxes matched enlarged 1.5x, a cost for a class mismatch).

Printed: clips decided right, clips whose individuals per class are exact, the animals' detections that got a
track id, identity switches per animal (a new id after a lost track counts as one), and the tracker's time per
frame.

    .venv/bin/python benchmarks/track.py [--clips 200] [--frames 20] [--seed 0] [--max-speed 1.0]
"""
import argparse, os, time

import numpy as np

from trailnb.track import Walker, synthetic_clip, track_clip


def _scenario(rng, n_frames: int, max_speed: float = 1.0, max_animals: int = 4):
    """Random walkers and blips; the truth: individuals per class. A walker moves `speed` times its own size per
    sampled frame (along its direction), is in view for 3+ frames and may be hidden for one stretch of 1-3."""
    walkers = []
    for _ in range(rng.integers(0, max_animals + 1)):
        w, h = rng.uniform(40, 90), rng.uniform(30, 60)
        speed, angle = rng.uniform(0.1, max_speed), rng.uniform(0, 2 * np.pi)
        step = speed * np.array([w * np.cos(angle), h * np.sin(angle)])
        first = int(rng.integers(0, n_frames - 3))
        last = int(rng.integers(first + 2, n_frames))
        n_hid = int(min(rng.integers(0, 4), max(0, last - first - 3)))
        h0 = int(rng.integers(first + 2, last - n_hid + 1)) if n_hid else 0
        start = rng.uniform([100, 80], [860, 460]) - step * (first + last) / 2
        walkers.append(Walker(int(rng.integers(0, 3)), tuple(start), tuple(step), (w, h), (first, last),
                              tuple(range(h0, h0 + n_hid)), float(rng.uniform(0.6, 0.95))))
    blips = []
    for _ in range(rng.integers(0, 3)):
        x, y = rng.uniform(0, 900, 2)
        blips.append((int(rng.integers(0, n_frames)), [x, y, x + 40, y + 30], int(rng.integers(0, 3)), 0.9))
    truth = {}
    for w in walkers: truth[w.label] = truth.get(w.label, 0) + 1
    return walkers, blips, truth


def _switches(walkers, n_frames, ids) -> tuple[int, int, int]:
    "Identity switches (changes of a walker's track id between its tracked detections), tracked detections, all."
    per, n = {k: [] for k in range(len(walkers))}, 0
    for i, a in enumerate(ids):
        for k, t in zip([k for k, w in enumerate(walkers) if w.seen(i)], a.tolist()):
            n += 1
            if t > 0: per[k].append(t)
    return sum(sum(x != y for x, y in zip(v, v[1:])) for v in per.values()), sum(map(len, per.values())), n


def _per_frame(frames, thresh=0.5):
    "No tracking: detected if any detection reaches the threshold; count = most of a class in one frame."
    counts = {}
    for d in frames:
        labs = d.labels[d.scores >= thresh].tolist()
        for l in set(labs): counts[l] = max(counts.get(l, 0), labs.count(l))
    return counts


def main(clips: int = 200, n_frames: int = 20, seed: int = 0, max_speed: float = 1.0):
    rng = np.random.default_rng(seed)
    data = []
    for c in range(clips):
        walkers, blips, truth = _scenario(rng, n_frames, max_speed)
        frames, times = synthetic_clip(walkers, n_frames, blips, jitter=3, seed=c)
        data.append((walkers, frames, times, truth))
    print(f"{clips} random clips of {n_frames} sampled frames, {sum(len(d[0]) for d in data)} animals, "
          f"{sum(not d[3] for d in data)} clips with no animal; machine: {os.cpu_count()} CPUs")
    rows = {}
    c = [_per_frame(f) for _, f, _, _ in data]
    rows["per frame (no tracking)"] = (sum(bool(x) == bool(t) for x, (_, _, _, t) in zip(c, data)),
                                       sum(x == t for x, (_, _, _, t) in zip(c, data)), None, None, None)
    for name, kw in [("plain ByteTrack", dict(expand=1.0, class_cost=0.0)), ("trailnb Tracker", {})]:
        ok_dec = ok_cnt = sw = tracked = n = 0
        t0 = time.perf_counter()
        for walkers, frames, times, truth in data:
            ids, s = track_clip(frames, times, **kw)
            ok_dec += s.detected == bool(truth)
            ok_cnt += s.counts == truth
            a, b, c = _switches(walkers, n_frames, ids)
            sw, tracked, n = sw + a, tracked + b, n + c
        dt = (time.perf_counter() - t0) / (clips * n_frames)
        rows[name] = (ok_dec, ok_cnt, tracked / max(n, 1), sw / sum(len(d[0]) for d in data), dt)
    print(f"{'':26s} {'decided right':>14s} {'counts exact':>13s} {'dets tracked':>13s} {'switches/animal':>16s} "
          f"{'ms/frame':>9s}")
    for name, (dec, cnt, tr, sw, dt) in rows.items():
        print(f"{name:26s} {dec / clips:14.1%} {cnt / clips:13.1%} {'-' if tr is None else f'{tr:.1%}':>13s} "
              f"{'-' if sw is None else f'{sw:.3f}':>16s} {'-' if dt is None else f'{dt * 1e3:.2f}':>9s}")
    base, ours = rows["plain ByteTrack"], rows["trailnb Tracker"]
    print(f"ratios trailnb/plain ByteTrack: counts exact {ours[1] / max(base[1], 1):.2f}x, "
          f"detections tracked {ours[2] / max(base[2], 1e-9):.2f}x, switches {ours[3] / max(base[3], 1e-9):.2f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--frames", dest="n_frames", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-speed", type=float, default=1.0, help="fastest animal, in its own sizes per sampled frame")
    main(**vars(p.parse_args()))
