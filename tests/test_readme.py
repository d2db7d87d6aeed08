"""README.md tells the truth: it is what nbs/index.ipynb produces, every `trailnb` command it shows exists and
accepts the flags it is shown with, and its "Using it" sequence runs end to end, from a fresh shell, on a tiny
synthetic dataset."""
import importlib.util, json, os, re, shlex, shutil, subprocess, sys
from pathlib import Path

import pytest

from trailnb.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).with_name("trailnb")
_CALL = re.compile(r"(?<![\w./-])(?:\.venv/bin/)?trailnb(?![\w.])((?:[ \t]+[^\s#`]+)*)")


def _code() -> list[str]:
    "The text of README.md's fenced code blocks and inline code spans."
    return re.findall(r"```[a-z]*\n(.*?)```", README, re.S) + re.findall(r"`([^`\n]+)`", README)


def readme_calls() -> list[list[str]]:
    "Every `trailnb ...` call shown in README.md's code, as argument lists (without `trailnb`)."
    return [shlex.split(m.group(1)) for c in _code() for m in _CALL.finditer(c)]


def using_it() -> list[str]:
    "The command lines of the README's \"Using it\" block, in order."
    block = re.search(r"## Using it\n+```bash\n(.*?)```", README, re.S).group(1)
    return [l for l in block.splitlines() if l.strip()]


def test_readme_is_produced_from_index():
    "README.md (and each image it shows from a kept output) is what tools/make_readme.py makes of nbs/index.ipynb."
    spec = importlib.util.spec_from_file_location("make_readme", ROOT / "tools" / "make_readme.py")
    make_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_readme)
    text, images = make_readme.produce()
    assert README == text, "README.md differs from nbs/index.ipynb: edit the notebook, then `make export`"
    assert images and all((ROOT / k).read_bytes() == v for k, v in images.items())


def test_readme_shows_every_stage_of_the_loop():
    subs = {c[0] for c in readme_calls() if c}
    assert {"check-data", "train", "evaluate", "infer", "review", "review-export", "run"} <= subs
    assert len(using_it()) == 8


@pytest.mark.parametrize("args", [c for c in readme_calls() if c and not c[0].startswith("-")], ids=" ".join)
def test_readme_command_exists_and_takes_its_flags(args, capsys):
    "Each call's subcommand answers --help, and its flags parse with that subcommand's own parser."
    name = args[0]
    assert name in COMMANDS, f"README shows `trailnb {name}`, which is not a command"
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0 and f"trailnb {name}" in capsys.readouterr().out
    if len(args) > 1 and not COMMANDS[name].raw:   # `run` parses its own arguments: its line runs end to end below
        COMMANDS[name].parser(name).parse_args(args[1:])   # exits 2 on a flag that does not exist


def _fresh_env(home: Path) -> dict:
    "The environment of a new shell: the venv's trailnb on PATH, trailnb's state in `home`, nothing of pytest's."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIFTYONE_", "PYTEST", "TRAILNB_"))}
    env.update(TRAILNB_HOME=str(home), PATH=f"{BIN.parent}{os.pathsep}{env.get('PATH', '')}", YOLO_OFFLINE="1",
               YOLO_AUTOINSTALL="0", FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_DATABASE_VALIDATION="false",
               MPLBACKEND="Agg")
    return env


def _tiny_project(d: Path):
    "labels/result.json + images (a Label Studio-style export) and a 'memory card' folder of new photos."
    from trailnb.synthetic import make_synthetic_dataset
    make_synthetic_dataset(d / "labels", n=12, size=(128, 96), seed=0).rename(d / "labels" / "result.json")
    make_synthetic_dataset(d / "cardgen", n=6, size=(128, 96), seed=1)
    shutil.move(str(d / "cardgen" / "images"), str(d / "card")); shutil.rmtree(d / "cardgen")


SMALL = {"--epochs 30": "--epochs 1 --max-dim 96 --workers 0",           # a tiny run of the same command
         "-p epochs 20": "-p epochs 1 -p max_dim 96 -p workers 0",
         "/media/sdcard/DCIM": "card", " --app": ""}                   # no App in a test: it is checked in test_review


def test_readme_sequence_runs_end_to_end(tmp_path):
    "check-data -> train -> evaluate -> infer with sorting -> review -> review-export -> run train, as written."
    _tiny_project(tmp_path)
    env, outs = _fresh_env(tmp_path / "home"), []
    for line in using_it():
        for k, v in {**SMALL, ".venv/bin/trailnb": str(BIN)}.items(): line = line.replace(k, v)   # the venv's trailnb
        runs = sorted(p.name for p in (tmp_path / "runs").glob("*") if (p / "best.pt").is_file())
        if "<run>" in line: line = line.replace("<run>", runs[0])
        r = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        outs.append(r.stdout)
    help_, check, train, evaluate, infer, review, export, run = outs
    assert "review-export" in help_ and "12 images, " in check
    [model] = (tmp_path / "runs").glob("*/best.pt")                               # the `train` run (not `run train`'s)
    assert "AP" in evaluate
    md = json.loads((tmp_path / "sorted" / "results_md.json").read_text())
    card = sorted(p.relative_to(tmp_path / "card").as_posix() for p in (tmp_path / "card").rglob("*.jpg"))
    assert sorted(im["file"] for im in md["images"]) == card                     # every photo of the card, once
    out = tmp_path / "sorted"
    folders = [out / "empty", *(out / "detected").glob("*")]                      # empty/ and detected/<class>/
    placed = {p.relative_to(f).as_posix() for f in folders for p in f.rglob("*.jpg")}
    assert placed == set(card)                                                    # each photo sorted, paths kept
    assert "FiftyOne dataset 'trailnb-result': 12 images" in review and "false positives" in review
    assert "trailnb review-export trailnb-result corrected.json" in review        # the README's next line, printed
    from trailnb.data import load_coco
    labels, corrected = load_coco(tmp_path / "labels" / "result.json"), load_coco(tmp_path / "corrected.json")
    assert corrected.classes == labels.classes and "12 images" in export      # no tags: the same labels come back
    assert sorted(Path(r.path).resolve() for r in corrected.images) == sorted(Path(r.path).resolve() for r in labels.images)
    assert corrected.num_boxes == labels.num_boxes
    [wf] = (tmp_path / "runs").glob("train-*")
    assert (wf / "train.ipynb").is_file() and json.loads((wf / "metrics.json").read_text())["checkpoint"].endswith("best.pt")
    assert (tmp_path / "home" / "fiftyone").is_dir() and model.is_file()     # state in TRAILNB_HOME, as documented
