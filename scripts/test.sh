#!/usr/bin/env bash
# Install everything the test suite needs, then run lint, type checks and the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k differential).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CODEX_VERSION=0.169.0
# Outside the checkout (see tests/harness/servers.py for why).
CODEX_DIR=${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/execserver/codex-$CODEX_VERSION
CODEX_BIN=$CODEX_DIR/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex

# 1. Python environment with the package and its test dependencies.
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# 2. System packages: bubblewrap enforces sandbox intent (tests must run, not skip, in CI).
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }
  else
    echo "warning: bubblewrap (bwrap) is not installed; sandbox tests will skip" >&2
  fi
fi

# 3. The pinned reference binary for the differential tests.
if [ ! -x "$CODEX_BIN" ] || ! "$CODEX_BIN" --version 2>/dev/null | grep -q "$CODEX_VERSION"; then
  mkdir -p "$CODEX_DIR"
  npm install --silent --no-audit --no-fund --prefix "$CODEX_DIR" "@openai/codex@$CODEX_VERSION"
fi
export CODEX_BIN

# 4. Static checks.
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy

# 5. The suite.
exec .venv/bin/python -m pytest "$@"
