"""The `trailnb` console command as a user runs it."""
import subprocess, sys
from pathlib import Path

BIN = Path(sys.executable).with_name("trailnb")


def run(*args, check=True):
    r = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_help_lists_commands():
    out = run("--help").stdout
    for c in ("check-data", "demo", "train", "evaluate", "infer", "review", "review-export", "run"):
        assert c in out


def test_unknown_command_fails_with_suggestion():
    r = run("inferr", check=False)
    assert r.returncode == 2 and "did you mean 'infer'" in r.stderr


def test_version():
    from trailnb import __version__
    assert run("--version").stdout.strip() == f"trailnb {__version__}"


def test_python_m_trailnb_and_nproc_flags():
    "`python -m trailnb` is the command (what torchrun runs); train and infer take --nproc (torchrun in several processes)."
    r = subprocess.run([sys.executable, "-m", "trailnb", "--version"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith("trailnb ")
    assert "--nproc N" in run("--help").stdout
    for cmd in ("train", "infer"):
        assert "--nproc INT" in run(cmd, "--help").stdout


def test_a_mistyped_or_abbreviated_flag_is_refused_with_the_flag_meant(capsys):
    "argparse's allow_abbrev is off everywhere (`--epoch` is not `--epochs`), and the nearest flag is suggested."
    import pytest
    from trailnb.cli import main
    r = run("infer", "m.pt", "in/", "--sortt", "copy", check=False)
    assert r.returncode == 2 and "--sortt: did you mean --sort?" in r.stderr
    for cmd in ("train", "evaluate", "sort", "check-data", "demo", "run"):
        args = {"sort": ["r.json"], "check-data": ["d.json"], "run": ["train"]}.get(cmd, [])
        flag = {"train": "--epoch", "evaluate": "--score-thres", "sort": "--sort-thres", "check-data": "--imag",
                "demo": "--epoch", "run": "--nam"}[cmd]
        with pytest.raises(SystemExit) as e: main([cmd, *args, flag, "1"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"unrecognized arguments: {flag}" in err and "did you mean --" in err, (cmd, err)


def test_errors_name_the_flag_not_the_python_keyword(tmp_path):
    "A TrailnbError printed by `trailnb` names its flags: --no-strict, --predictions, not strict=False, EvalConfig.predictions."
    import json
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    (tmp_path / "d.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32},
                                                            {"id": 2, "file_name": "gone.jpg", "width": 32, "height": 32}],
                                                 "annotations": [], "categories": [{"id": 1, "name": "deer"}]}))
    r = run("check-data", str(tmp_path / "d.json"), "--strict", check=False)
    assert r.returncode == 2 and "--no-strict" in r.stderr and "strict=False" not in r.stderr, r.stderr
    r = run("evaluate", "--data", str(tmp_path / "d.json"), check=False)
    assert r.returncode == 2 and "exactly one of --predictions" in r.stderr and "EvalConfig" not in r.stderr, r.stderr


def test_cli_words_for_each_kind_of_setting():
    "The rewrite of Python mentions into a command's flags: a bool, None, a value, a positional, the YAML words of `run`."
    from trailnb.cli import COMMANDS, cli_words
    words = lambda cmd, text: cli_words(text, COMMANDS[cmd].parser(cmd))
    assert words("review-export", "choose a new path or pass overwrite=True.") == "choose a new path or pass --overwrite."
    assert words("train", "or weights=None to train from scratch; use split=sequence.") == \
        "or --weights none to train from scratch; use --split sequence."
    assert words("infer", "No model given: pass the checkpoint file (model=... / trailnb infer MODEL INPUT).") == \
        "No model given: pass the checkpoint file (MODEL / trailnb infer MODEL INPUT)."
    assert words("train", "give a separate validation set (val_data=FILE)") == "give a separate validation set (--val-data FILE)"
    assert words("train", "unknown=3 stays") == "unknown=3 stays"
    assert COMMANDS["run"].cli_words("run", ["train"])("or split='none'") == "or -p split none"


def test_help_says_each_default_once_and_in_command_line_words():
    "No '(default: None; none for None)', no doubled '(default: ...)', and no Python None in any command's --help."
    from trailnb.cli import COMMANDS
    for name, cmd in COMMANDS.items():
        if cmd.raw: continue
        for a in cmd.parser(name)._actions:
            h = a.help or ""
            assert "none for None" not in h and "None" not in h, (name, a.dest, h)
            assert h.lower().count("default") <= 1, (name, a.dest, h)
            assert "(default: )" not in h and "(default: ())" not in h, (name, a.dest, h)


def test_a_command_calls_its_function_with_the_flags_given(monkeypatch, tmp_path):
    "`trailnb train --config F --resume R --epochs 30` is `train(F, resume=R, epochs='30')`: the flags given are the keywords given."
    import trailnb.train as T
    from trailnb.cli import main
    from trailnb.core import load_settings
    seen = []
    monkeypatch.setattr(T, "train", lambda cfg=None, **kw: seen.append(load_settings(T.TrainConfig, cfg, **kw)))
    (tmp_path / "c.yaml").write_text("lr: null\nbatch_size: 4\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--resume", "run1", "--epochs", "30"]) == 0
    assert main(["train", "--resume", "run1"]) == 0
    (cfg, given), (cfg2, given2) = seen
    assert (cfg.resume, cfg.epochs, cfg.lr, cfg.batch_size) == ("run1", 30, None, 4)
    assert given == {"lr", "batch_size", "resume", "epochs"} and given2 == {"resume"}  # a default given counts; none other
