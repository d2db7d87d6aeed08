"""Shared pytest setup: offline-safe library settings, a `--runslow` switch, and the real sample data."""
import os, shutil, tempfile
from pathlib import Path
import pytest

# Before any test imports ultralytics/fiftyone: no network, nothing written to the home folder.
_state = Path(tempfile.mkdtemp(prefix="trailnb-tests-"))
os.environ["TRAILNB_HOME"] = str(_state / "home")  # never a developer's own state
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ["FIFTYONE_DATABASE_DIR"] = str(_state / "fiftyone-db")  # a fresh database, never a real one
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_unconfigure(config):
    "The suite's own home and FiftyOne database go with it (hundreds of MB: a model cache, a database journal)."
    shutil.rmtree(_state, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes on 2 CPU cores; runs with --runslow")
    config.addinivalue_line("markers", "labelstudio: needs Label Studio's own venv (make labelstudio-env); "
                                       "skipped locally without it, fails in CI")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_data():
    "The real camera-trap sample data folder; skips the test when it is absent."
    from trailnb.core import sample_data_dir
    d = sample_data_dir()
    if d is None or not (d / "camtrap31").is_dir():
        pytest.skip("real sample data not found: set TRAILNB_SAMPLE_DATA (default ../shared/data)")
    return d
