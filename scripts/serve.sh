#!/usr/bin/env bash
# Install execserver into .venv (first run only) and start the server.
# Arguments go to `execserver serve`, e.g. scripts/serve.sh --listen ws://127.0.0.1:8765
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/execserver ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[otel]"
fi
exec .venv/bin/execserver serve "$@"
