#!/usr/bin/env bash
# Build Label Studio's own virtual environment for trailnb's real-server integration test.
# Label Studio 1.23.x pins Django 5.2 and label-studio-sdk (opencv-python-headless<4.13), which clash with
# trailnb's pinned stack, so it lives in its own venv; trailnb only talks to it over HTTP on 127.0.0.1.
# Usage: bash tools/labelstudio_env.sh [VENV_DIR]   (default .venv-labelstudio; idempotent, a stamp marks done)
set -euo pipefail
PY="${PY:-python3.11}"
VENV="${1:-${LABEL_STUDIO_VENV:-.venv-labelstudio}}"
VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
STAMP="$VENV/.label-studio-$VERSION"
if [ -f "$STAMP" ] && [ -x "$VENV/bin/label-studio" ]; then
  echo "label-studio $VERSION already installed in $VENV"; exit 0
fi
start=$(date +%s)
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip wheel
"$VENV/bin/pip" install -q "label-studio==$VERSION"
"$VENV/bin/pip" check
touch "$STAMP"
echo "label-studio $VERSION installed in $VENV in $(( $(date +%s) - start )) s"
