"""Tracking: synthetic clips with known paths (crossings, occlusions, one-frame false positives) are counted
exactly with at most one identity switch per crossing; bursts with a hidden-animal photo are decided as
detected; a real encoded video goes through decoding, tracking and an annotated copy."""
import numpy as np
import pytest
from PIL import Image

from trailnb.core import Detections, class_color
from trailnb.results import ImageResult, frame_file
from trailnb.track import (Walker, burst_groups, clips_table, confuse_classes, save_track_stills, sequence_labels,
                           synthetic_clip, track_clip, track_frames, track_results, write_synthetic_video,
                           write_track_video, write_track_videos)


def _truth(walkers, n_frames):
    "For each frame, the walker index of each detection (the order `synthetic_clip` writes them in)."
    return [[k for k, w in enumerate(walkers) if w.seen(i)] for i in range(n_frames)]


def _switches(walkers, n_frames, ids):
    "Identity switches per walker: how often the id of its (tracked) detections changes."
    per = {k: [] for k in range(len(walkers))}
    for truth, a in zip(_truth(walkers, n_frames), ids):
        for k, i in zip(truth, a.tolist()):
            if i > 0: per[k].append(i)
    return {k: sum(x != y for x, y in zip(v, v[1:])) for k, v in per.items()}, per


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("same_class", [False, True])
def test_crossing_occlusion_and_blip(seed, same_class):
    """Two animals crossing, one hidden for 3 frames before the crossing, a one-frame false positive: counts
    exact, at most one identity switch. A deer and a fox cross head-on on the same line (their boxes coincide);
    two deer cross 20 px apart (on one line, two animals of one class are a coin toss at the crossing frame)."""
    a = Walker(0, (40, 120), (22, 0), hidden=(5, 6, 7))
    b = Walker(0 if same_class else 1, (480, 140 if same_class else 120), (-22, 0), size=(50, 36))
    frames, times = synthetic_clip([a, b], 20, blips=[(14, [300, 10, 340, 40], 0, 0.8)], jitter=3, seed=seed)
    ids, s = track_clip(frames, times, "x.mp4")
    sw, per = _switches([a, b], 20, ids)
    assert sum(sw.values()) <= 1, (sw, per)  # one crossing
    assert all(len(v) == 20 - len(w.hidden) for v, w in zip(per.values(), [a, b]))  # every detection tracked
    assert s.detected and [blip.frames for blip in s.blips] == [[14]]
    want = {0: 2} if same_class else {0: 1, 1: 1}
    assert s.counts == want and s.max_at_once == ({0: 2} if same_class else {0: 1, 1: 1})
    assert (s.first_seen, s.last_seen) == (0.0, 19.0)



EVERY = {"1 s (default)": 10, "every 2nd frame": 2, "every frame": 1}  # sampling of a 10 fps video


def _wavering(walkers, p, seed, every):
    "10 s of a 10 fps video seen by a detector that calls an animal by its look-alike class with probability `p`."
    frames, times = synthetic_clip(walkers, 100, fps=10, jitter=2, seed=seed)
    return confuse_classes(frames, p, seed=seed)[::every], times[::every]


def test_wavering_class_single_animal_counts_once():
    """A fox that the detector calls "deer" in 3 frames of 10, trotting its own length per second: one individual,
    one track over every sampled frame, no blips, at every sampling rate, for several seeds. (Matching with a
    class cost split it into 2-3 tracks and blips at one frame a second.)"""
    fox = Walker(1, (40, 120), (6, 0))
    for seed in range(4):
        for rate, every in EVERY.items():
            frames, times = _wavering([fox], 0.3, seed, every)
            assert {int(l) for d in frames for l in d.labels} == {0, 1}  # it does waver
            ids, s = track_clip(frames, times, "fox.mp4")
            assert (s.counts, s.max_at_once, s.blips) == ({1: 1}, {1: 1}, []), (seed, rate, s)
            assert s.tracks[0].n_frames == len(frames) and (np.concatenate(ids) == 1).all(), (seed, rate)


@pytest.mark.parametrize("labels", [(0, 1), (1, 1)])
def test_two_crossing_animals_count_two_at_every_sampling_rate(labels):
    """A deer and a fox (or two foxes) crossing, the detector wavering between deer and fox at p = 0, 0.1, 0.3:
    two individuals at one frame a second, every 2nd frame and every frame, for several seeds."""
    pair = [Walker(labels[0], (40, 120), (6, 0)), Walker(labels[1], (640, 125), (-6, 0), size=(50, 36))]
    for p in (0.0, 0.1, 0.3):
        for rate, every in EVERY.items():
            for seed in range(3):
                s = track_clip(*_wavering(pair, p, seed, every), "pair.mp4")[1]
                assert sum(s.counts.values()) == 2 and not s.blips, (p, rate, seed, s)
                assert [t.n_frames for t in s.tracks] == [100 // every] * 2, (p, rate, seed, s.tracks)


def test_max_at_once_per_track_class():
    """A deer and a fox crossing, the detector wavering (p = 0.3) at one frame a second: one deer and one fox, at
    most one of each at once, for several seeds (a class cost in the matching reported 2 deer or 2 foxes at once)."""
    pair = [Walker(0, (40, 120), (6, 0)), Walker(1, (640, 125), (-6, 0), size=(50, 36))]
    for seed in range(5):
        s = track_clip(*_wavering(pair, 0.3, seed, 10), "pair.mp4")[1]
        assert (s.counts, s.max_at_once) == ({0: 1, 1: 1}, {0: 1, 1: 1}), (seed, s)
        assert "deer 1 (max 1 at once), fox 1 (max 1 at once)" in s.describe(["deer", "fox"])


def test_track_class_is_its_score_weighted_majority():
    """A track's class is the class with the highest summed score over its detections: 6 frames "fox" at 0.5
    (3.0) and 4 frames "deer" at 0.9 (3.6) are a deer, one track. And a wavering fox is one track of class fox."""
    frames, times = synthetic_clip([Walker(0, (40, 120), (10, 0))], 10)
    for i, d in enumerate(frames):
        d.labels[:], d.scores[:] = (1, 0.5) if i < 6 else (0, 0.9)
    s = track_clip(frames, times)[1]
    assert [(t.label, t.n_frames) for t in s.tracks] == [(0, 10)] and s.counts == {0: 1}
    frames, times = _wavering([Walker(1, (40, 120), (7, 0))], 0.3, 7, 10)
    assert sum(int(d.labels[0]) == 0 for d in frames) == 4  # "deer" in 4 frames of 10 (a class cost made a deer track)
    assert [(t.label, t.n_frames) for t in track_clip(frames, times)[1].tracks] == [(1, 10)]

def test_blips_alone_never_detect_a_clip():
    "One-frame false positives (even high-scoring, even in the first frame) do not make a clip detected."
    frames, times = synthetic_clip([], 12, blips=[(0, [5, 5, 40, 40], 0, 0.99), (6, [200, 50, 260, 90], 1, 0.95)])
    ids, s = track_clip(frames, times, "leaf.mp4")
    assert not s.detected and s.counts == {} and len(s.blips) == 2
    _, s1 = track_clip(frames, times, "leaf.mp4", min_frames=1)
    assert s1.detected  # min_frames=1 is the per-frame rule
    # an animal seen in exactly min_frames frames counts
    frames, times = synthetic_clip([Walker(0, (100, 100), (10, 0), frames=(4, 5))], 12)
    assert track_clip(frames, times, min_frames=2)[1].counts == {0: 1}
    assert not track_clip(frames, times, min_frames=3)[1].detected


def test_low_scores_extend_tracks_but_do_not_decide():
    "A track counts when its best score reaches the threshold; a steady 0.3 shadow never does."
    deer = Walker(0, (60, 100), (15, 0), score=0.35)
    frames, times = synthetic_clip([deer], 10, jitter=1)
    frames[4].scores[:] = 0.92  # one clear frame
    ids, s = track_clip(frames, times, thresh=0.5)
    assert s.counts == {0: 1} and s.tracks[0].frames[s.tracks[0].best] == 4
    shadow = synthetic_clip([Walker(1, (300, 100), (0, 0), score=0.3)], 10)[0]
    assert not track_clip(shadow, thresh=0.5)[1].detected
    assert not track_clip(shadow, thresh=[0.5, 0.5])[1].detected  # per-class thresholds
    assert track_clip(frames, times, thresh=[0.5, 0.5, 0.5])[1].counts == {0: 1}  # more classes than the clip has


def test_herd_counts_and_ids_cover_whole_tracks():
    herd = [Walker(0, (40, 60), (15, 0)), Walker(0, (40, 200), (15, 0)), Walker(0, (560, 130), (-15, 0), frames=(6, 19))]
    frames, times = synthetic_clip(herd, 20)
    ids, s = track_clip(frames, times)
    assert s.counts == {0: 3} and s.max_at_once == {0: 3}
    assert all((a > 0).all() for a in ids)  # the first frame of the late track got its id too
    assert [t.n_frames for t in s.tracks] == [20, 20, 14]


def test_tracker_edge_cases():
    assert track_frames([]) == []
    ids = track_frames([Detections.empty(), Detections([[0, 0, 0, 10]], [0.9], [0]), Detections.empty()])
    assert [a.tolist() for a in ids] == [[], [-1], []]  # a degenerate box is never tracked
    # a fresh tracker per clip: ids restart at 1
    f = synthetic_clip([Walker(0, (50, 50), (5, 0))], 4)[0]
    assert track_frames(f)[0].tolist() == track_frames(f)[0].tolist() == [1]


def _photo(path, t):
    path.parent.mkdir(parents=True, exist_ok=True)
    ex = Image.Exif()
    ex[0x0132] = t
    Image.new("RGB", (64, 48), (40, 60, 40)).save(path, exif=ex)


def test_bursts_hidden_frame_and_blip(tmp_path):
    "A burst whose animal is hidden in one photo is detected as a whole; an empty burst with a blip stays empty."
    deer = [Detections([[10, 10, 30, 30]], [0.9], [0]), Detections.empty(), Detections([[16, 10, 36, 30]], [0.85], [0])]
    blip = [Detections.empty(), Detections([[40, 5, 60, 20]], [0.95], [1]), Detections.empty()]
    res = []
    for cam, dets in [("cam1", deer), ("cam2", blip)]:
        for k, d in enumerate(dets):
            f = f"{cam}/IMG_{k:04d}.jpg"
            _photo(tmp_path / f, f"2024:05:01 06:00:0{2 * k}")
            res.append(ImageResult(f, 64, 48, d))
    _photo(tmp_path / "cam1/IMG_0009.jpg", "2024:05:01 07:00:00")  # an hour later: a photo of its own
    res.append(ImageResult("cam1/IMG_0009.jpg", 64, 48, Detections([[1, 1, 9, 9]], [0.9], [0])))
    assert [len(g) for g in burst_groups([r.file for r in res], tmp_path)] == [3, 1, 3]
    Image.new("RGB", (64, 48)).save(tmp_path / "cam1/copied_1.jpg")  # no EXIF time: never part of a burst,
    Image.new("RGB", (64, 48)).save(tmp_path / "cam1/copied_2.jpg")  # even with file times a moment apart
    assert [len(g) for g in burst_groups(["cam1/copied_1.jpg", "cam1/copied_2.jpg"], tmp_path)] == [1, 1]
    res, sums = track_results(res, tmp_path)
    ids = {r.file: r.track_ids for r in res}
    by = {s.name: s for s in sums}
    assert set(by) == {"cam1/IMG_0000.jpg", "cam2/IMG_0000.jpg"}  # the lone photo keeps its own decision
    assert by["cam1/IMG_0000.jpg"].detected and by["cam1/IMG_0000.jpg"].counts == {0: 1}
    assert not by["cam2/IMG_0000.jpg"].detected and len(by["cam2/IMG_0000.jpg"].blips) == 1
    lab = sequence_labels(sums)
    assert lab["cam1/IMG_0001.jpg"] == [0]  # the hidden-deer photo goes where its burst goes
    assert lab["cam2/IMG_0001.jpg"] == []  # the blip's photo goes to empty
    assert "cam1/IMG_0009.jpg" not in lab
    assert ids["cam1/IMG_0000.jpg"].tolist() == ids["cam1/IMG_0002.jpg"].tolist() == [1]
    assert "yes" in str(clips_table(sums, ["deer", "fox"]))
    # without a root there are no bursts
    assert track_results(res)[1] == []


def _blobs(bgr):
    "A stand-in detector for synthetic videos: bright blobs, class by colour."
    cv2 = pytest.importorskip("cv2")
    n, _, st, _ = cv2.connectedComponentsWithStats((bgr.max(2) > 80).astype(np.uint8))
    rows = [(st[i, 0], st[i, 1], st[i, 0] + st[i, 2], st[i, 1] + st[i, 3]) for i in range(1, n) if st[i, 4] > 50]
    cols = [bgr[(b[1] + b[3]) // 2, (b[0] + b[2]) // 2][::-1].astype(int) for b in rows]
    labs = [int(np.argmin([np.abs(c - class_color(k)).sum() for k in range(2)])) for c in cols]
    return Detections(rows, [0.9] * len(rows), labs)


def test_real_video_tracks_and_annotated_copy(tmp_path):
    "An encoded mp4 (two animals passing, one leaving the view and another entering): decoded, tracked, drawn."
    cv2 = pytest.importorskip("cv2")
    walkers = [Walker(0, (40, 70), (6, 0)), Walker(1, (600, 190), (-6, 0), size=(50, 36), frames=(0, 50)),
               Walker(0, (960, 190), (-6, 0), frames=(60, 99))]  # enters on the right at frame 60
    vid = write_synthetic_video(tmp_path / "in" / "clip.mp4", walkers, 100, fps=10)
    nums, frames, cap = list(range(0, 100, 5)), [], cv2.VideoCapture(str(vid))
    for n in range(100):
        ok, img = cap.read()
        assert ok
        if n in nums: frames.append(_blobs(img))
    cap.release()
    ids, s = track_clip(frames, [n / 10 for n in nums], "clip.mp4")
    assert s.counts == {0: 2, 1: 1} and s.max_at_once == {0: 2, 1: 1}
    out = write_track_video(vid, tmp_path / "out" / "clip_tracks.mp4", nums, frames, ids, ["deer", "fox"], max_dim=320)
    c = cv2.VideoCapture(str(out))
    assert int(c.get(cv2.CAP_PROP_FRAME_COUNT)) == 100 and int(c.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
    c.release()
    assert not list(out.parent.glob("*.part*"))
    # the same frames as a run's results: one still per counted track, an annotated copy per video
    res = [ImageResult(frame_file("clip.mp4", n), 640, 260, d, frame_time=n / 10, frame_rate=10.0) for n, d in zip(nums, frames)]
    res, sums = track_results(res, tmp_path / "in")
    assert [r.track_ids.tolist() for r in res] == [a.tolist() for a in ids]
    stills = save_track_stills(sums, tmp_path / "in", tmp_path / "stills", ["deer", "fox"])
    assert sorted(p.name for p in stills) == ["clip_track001_deer.jpg", "clip_track002_fox.jpg", "clip_track003_deer.jpg"]
    assert all(Image.open(p).size[0] >= 50 for p in stills)  # crops around the boxes
    vids = write_track_videos(res, tmp_path / "in", tmp_path / "tracks", ["deer", "fox"], max_dim=None)
    assert [p.relative_to(tmp_path / "tracks").as_posix() for p in vids] == ["clip.mp4"]
