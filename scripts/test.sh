#!/usr/bin/env bash
# Install everything the test suite needs, then run lint, type checks and the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k differential).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# The Codex releases to test against, newest first (one per line in scripts/codex-versions).
CODEX_VERSIONS=$(grep -v '^#' scripts/codex-versions | grep .)
# Outside the checkout (see tests/harness/servers.py for why).
CACHE=${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/execserver
codex_bin() {
  echo "$CACHE/codex-$1/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
}

# 1. Python environment with the package and its test dependencies.
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
# Byte-compile the package (and the test harness, which subprocesses import) once: the suite
# starts many Python processes from src/ (servers, CLI calls, the fs sandbox helper,
# which sees src/ read-only), and where PYTHONDONTWRITEBYTECODE is set or __pycache__ cannot be
# written, each of them compiled every module it imports again (~0.15-0.4 s of CPU per start).
.venv/bin/python -m compileall -q src tests >/dev/null

# 2. System packages: bubblewrap enforces sandbox intent (its tests must run, not skip, in CI);
#    haproxy checks and runs deploy/fleet/haproxy.cfg (tests/deploy).
#    nats-server comes with the test dependencies (a wheel in .venv/bin: Debian's is too old).
missing=""
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }
  else
    echo "warning:$missing not installed; their tests will skip" >&2
  fi
fi

# 3. The pinned reference binaries for the differential, relay and end-to-end tests.
for version in $CODEX_VERSIONS; do
  bin=$(codex_bin "$version")
  if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$version"; then
    mkdir -p "$CACHE/codex-$version"
    npm install --silent --no-audit --no-fund --prefix "$CACHE/codex-$version" "@openai/codex@$version"
  fi
done

# 4. Static checks.
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy

# 5. The suite.
exec .venv/bin/python -m pytest "$@"
