"""Fixtures of the relay tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.servers import CACHE_DIR


@pytest.fixture
def codex_home() -> Iterator[Path]:
    """A fresh directory for CODEX_HOMEs, outside /tmp (codex refuses its helper aliases
    under a temp dir)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="relay-", dir=CACHE_DIR))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)
