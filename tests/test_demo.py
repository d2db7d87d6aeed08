"The demo (`make demo` / `trailnb demo`): every stage's products at a tiny size, and the full default run's numbers (slow)."
import json
from pathlib import Path

import pytest

from trailnb.data import load_coco
from trailnb.demo import run_demo


def test_tiny_demo_sorts_the_card_and_prints_the_review_command(tmp_path, capsys):
    res = run_demo(tmp_path, n=16, cameras=2, epochs=1, max_dim=64, batch_size=4, new_photos=8,
                   review_name="trailnb-demo-pytest")
    log = capsys.readouterr().out
    card = load_coco(tmp_path / "new_card" / "annotations.json")
    sorted_names = sorted(p.name for f in ("detected", "empty") for p in (tmp_path / "inference" / f).rglob("*.jpg"))
    assert len(card) == 8 and set(sorted_names) == {r.path.name for r in card}  # every photo sorted somewhere
    s = res["sort"]
    assert (s["animal_photos"], s["empty_photos"]) == (sum(len(r.boxes) > 0 for r in card), sum(len(r.boxes) == 0 for r in card))
    assert 0 < s["empty_photos"] < 8  # the card holds both kinds
    val = load_coco(res["val_json"])
    assert res["review"]["dataset"] == "trailnb-demo-pytest" and res["review"]["images"] == len(val)
    assert "trailnb review --open trailnb-demo-pytest --app" in log
    assert res["train_command"] in log and res["train_command"].startswith("trailnb train --data ")
    assert "of wall time" in log
    summary = res.summary()
    assert f"held-out AP50 {res['AP50']:.3f}" in summary and summary.endswith(f"demo wall time {res['wall_s']:.0f} s")
    assert summary.count("trailnb review --open trailnb-demo-pytest --app") == 1
    assert f"{s['animal_frac']:.0%} of {s['animal_photos']} photos with animals in detected/" in summary
    saved = json.loads((tmp_path / "demo_outputs.json").read_text())
    assert saved["sort"] == s and Path(saved["checkpoint"]).is_file()


@pytest.mark.slow
def test_default_demo_learns_and_sorts_the_card(tmp_path):
    "The full `make demo` run (several minutes on 2 CPU cores): the detector learned and the card is sorted right."
    res = run_demo(tmp_path, review_name="trailnb-demo-slowtest")
    print(res.summary())
    assert res["AP50"] >= 0.8, res["AP50_per_class"]
    assert min(load_coco(res["val_json"]).class_counts().values()) > 0
    assert res["sort"]["animal_frac"] >= 0.9 and res["sort"]["empty_frac"] >= 0.9, res["sort"]
