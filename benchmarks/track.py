"""How well and how fast trailnb.track counts animals in clips, against plain ByteTrack and against no tracking.

Random synthetic clips with known truth (`trailnb.track.Walker`): 0-4 animals of 3 classes walking in random
directions at 0.1 to `--max-speed` times their own size per sampled frame, in view for 3 or more frames, some
hidden for a stretch of 1-3 frames, plus one-frame false positives (so some clips hold nothing else). Three
ways to decide and count, on the same clips, in this process:

- per frame (no tracking): a clip is detected when any frame has a detection at or above the threshold; the
  count is the most detections of a class in one frame;
- plain ByteTrack (Ultralytics' settings: boxes matched as they are, classes ignored);
- trailnb's `Tracker` defaults (boxes matched enlarged 2.5x, a track's own class breaking ties).

Printed: clips decided right, clips whose individuals per class are exact, the animals' detections that got a
track id, identity switches per animal (a new id after a lost track counts as one), and the tracker's time per
frame.

Then a detector whose class wavers (`trailnb.track.confuse_classes`: each detection takes its look-alike class,
0<->1 or 2<->3, with probability p, frame by frame) on 10 s video clips at 10 fps where two animals cross paths
(or one walks, or none), sampled once a second (the default), every 2nd frame and every frame. Printed for
p = 0, 0.1, 0.3, BEFORE (trailnb/track.py as it was at `--before`, loaded from git into a module of its own: a
class cost in the matching) and AFTER (this checkout: class-agnostic association, the class as a tie-breaker, a
track's class its score-weighted majority): clips decided right, counts per class exact, individuals exact
whatever their class, `max_at_once` exact, and identity switches (all clips together).

    .venv/bin/python benchmarks/track.py [--clips 200] [--frames 20] [--seed 0] [--max-speed 1.0]
                                         [--crossing-clips 100] [--before 63907c4]
"""
import argparse, os, time

import numpy as np

from trailnb.track import Walker, confuse_classes, synthetic_clip, track_clip


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


def _switches(walkers, n_frames, ids, at=None) -> tuple[int, int, int]:
    """Identity switches (changes of a walker's track id between its tracked detections), tracked detections, all.
    `at`: the walkers' frame number of each entry of `ids` (default: 0, 1, ...)."""
    per, n = {k: [] for k in range(len(walkers))}, 0
    for i, a in zip(range(n_frames) if at is None else at, ids):
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
    for name, kw in [("plain ByteTrack", dict(expand=1.0, class_weight=0.0)), ("trailnb Tracker", {})]:
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


BEFORE_REV = "63907c4"  # the last commit whose Tracker matched with a class cost (before class-agnostic association)


def _before_module(rev: str):
    "trailnb/track.py as it was at git revision `rev`, loaded as a module of its own (None when git cannot show it)."
    import importlib.util, subprocess, sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        src = subprocess.run(["git", "show", f"{rev}:trailnb/track.py"], cwd=root, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"(no BEFORE: git cannot show {rev}:trailnb/track.py: {getattr(e, 'stderr', e)!s:.200})")
        return None
    spec = importlib.util.spec_from_loader("trailnb._track_before", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "trailnb"
    sys.modules[spec.name] = mod
    exec(compile(src, f"{rev}:trailnb/track.py", "exec"), mod.__dict__)
    return mod


def _crossing(rng, n_video: int):
    """A clip of `n_video` video frames with 0, 1 or 2 animals of 4 classes (two cross paths near the middle of
    the clip, 0-20 px apart, at 30-180 degrees), each moving 0.02-0.08 of its own size per video frame (0.2-0.8
    at one frame a second), in view from at least 2.5 s before the crossing to 2.5 s after; plus 0-2 blips."""
    n = int(rng.choice(3, p=[0.2, 0.3, 0.5]))
    tc, centre = rng.uniform(0.35, 0.65) * n_video, rng.uniform([300, 200], [660, 340])
    a0, walkers = rng.uniform(0, 2 * np.pi), []
    for k in range(n):
        w, h = rng.uniform(40, 90), rng.uniform(30, 60)
        angle = a0 + (rng.uniform(np.pi / 6, np.pi) if k else 0)
        step = rng.uniform(0.02, 0.08) * np.array([w * np.cos(angle), h * np.sin(angle)])
        at = centre + (rng.uniform(-20, 20, 2) if k else 0)
        first, last = int(rng.integers(0, tc - 25)), int(rng.integers(tc + 25, n_video))
        walkers.append(Walker(int(rng.integers(0, 4)), tuple(at - step * tc), tuple(step), (w, h), (first, last),
                              score=float(rng.uniform(0.6, 0.95))))
    blips = [(int(rng.integers(0, n_video)), [x, y, x + 40, y + 30], int(rng.integers(0, 4)), 0.9)
             for x, y in rng.uniform(0, 900, (int(rng.integers(0, 3)), 2))]
    truth = {}
    for w in walkers: truth[w.label] = truth.get(w.label, 0) + 1
    return walkers, blips, truth


def _most_at_once(walkers, frames_used) -> dict:
    "The truth of `max_at_once`: most animals of each class in view in one of the sampled video frames."
    out = {}
    for lab in {w.label for w in walkers}:
        out[lab] = max(sum(w.label == lab and w.seen(i) for w in walkers) for i in frames_used)
    return out


def crossing(clips: int = 100, n_video: int = 100, fps: float = 10.0, seed: int = 0, before: str = BEFORE_REV):
    """Clips decided right and counts exact with a detector that confuses look-alike classes (0<->1, 2<->3) with
    probability 0, 0.1, 0.3 in every video frame, at one sampled frame a second (the default), every 2nd frame and
    every frame,
    BEFORE (trailnb/track.py at `before`) and AFTER (this checkout)."""
    from trailnb import track as after
    versions = [(f"before ({before})", _before_module(before)), ("after", after)]
    rng = np.random.default_rng(seed)
    data = []
    for c in range(clips):
        walkers, blips, truth = _crossing(rng, n_video)
        data.append((walkers, synthetic_clip(walkers, n_video, blips, fps=fps, jitter=3, seed=c), truth))
    print(f"\n{clips} clips of {n_video / fps:g} s at {fps:g} fps, {sum(len(w) == 2 for w, _, _ in data)} with two "
          f"animals crossing, {sum(len(w) == 1 for w, _, _ in data)} with one, {sum(not w for w, _, _ in data)} "
          f"with none (0-2 blips each); a detector that calls an animal by its look-alike class with probability p")
    print(f"{'p':>4s} {'sampled':>14s} {'version':>18s} {'decided right':>14s} {'counts exact':>13s} "
          f"{'individuals exact':>18s} {'max at once exact':>18s} {'id switches':>12s}")
    for p in (0.0, 0.1, 0.3):
        for every in (int(fps), 2, 1):
            for name, mod in versions:
                if mod is None: continue
                dec = cnt = tot = most = sw = 0
                for c, (walkers, (frames, times), truth) in enumerate(data):
                    seen = confuse_classes(frames, p, seed=c)[::every]
                    ids, s = mod.track_clip(seen, times[::every])
                    sw += _switches(walkers, n_video, ids, range(0, n_video, every))[0]
                    dec += s.detected == bool(truth)
                    cnt += s.counts == truth
                    tot += sum(s.counts.values()) == sum(truth.values())
                    most += s.max_at_once == _most_at_once(walkers, range(0, n_video, every))
                when = {int(fps): "1 s (default)", 2: "every 2nd", 1: "every frame"}[every]
                print(f"{p:4.1f} {when:>14s} {name:>18s} {dec / clips:14.1%} {cnt / clips:13.1%} {tot / clips:18.1%} "
                      f"{most / clips:18.1%} {sw:12d}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--frames", dest="n_frames", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-speed", type=float, default=1.0, help="fastest animal, in its own sizes per sampled frame")
    p.add_argument("--crossing-clips", type=int, default=100,
                   help="clips of the class-confusion benchmark (0: skip it)")
    p.add_argument("--before", default=BEFORE_REV, help="git revision whose trailnb/track.py is the BEFORE")
    a = vars(p.parse_args())
    n_cross, before = a.pop("crossing_clips"), a.pop("before")
    main(**a)
    if n_cross: crossing(n_cross, seed=a["seed"], before=before)
