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
