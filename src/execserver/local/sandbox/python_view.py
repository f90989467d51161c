"""What a Python helper started inside a sandbox needs to see: the interpreter, its standard
library and packages, and our source (added read-only to the sandbox's view)."""

from __future__ import annotations

import os
import sys

# The directory holding the `execserver` package (this file is execserver/local/sandbox/...),
# found without importing the package's top level, which sits above this layer.
PACKAGE_PARENT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)


def python_paths() -> list[bytes]:
    """The host paths to mount read-only for a helper run by `sys.executable`."""
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    paths.add(PACKAGE_PARENT)
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return [os.fsencode(os.path.realpath(p)) for p in sorted(paths)]
