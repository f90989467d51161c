"""Start-up cost of a fresh Python running our code: the CLI's commands and the fs sandbox
helper's imports (a fresh interpreter under bubblewrap per sandboxed fs request).

CPU time (user + system) of each child, median of `--runs`, rounds interleaved between this
checkout's `src/` and `--before-src` (if given) so load drifts hit both. Byte-code is whatever
the `src/` directories hold: run `python -m compileall -q SRC` first to time compiled code,
or remove their `__pycache__` (with PYTHONDONTWRITEBYTECODE=1) to time compiling as well.

    python bench/startup.py [--runs 8] [--before-src /path/to/old/src]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What runs: argv after `python`; SRC is replaced by the src/ directory under test.
PROBES: dict[str, list[str]] = {
    "--version": ["-m", "execserver", "--version"],
    "token new": ["-m", "execserver", "token", "new"],
    "run (refused)": ["-m", "execserver", "run", "ws://127.0.0.1:1", "--", "true"],
    "serve --help": ["-m", "execserver", "serve", "--help"],
    "fs helper imports": [
        "-I",
        "-c",
        "import sys; sys.path[:0] = sys.argv[1:]; import execserver.local.sandbox.fs_helper",
        "SRC",
        *(p for p in sys.path if p and os.path.isdir(p)),
    ],
}


def cpu_of(src: Path, argv: list[str]) -> float:
    """CPU seconds of one child running `argv` against `src`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, *(str(src) if arg == "SRC" else arg for arg in argv)],
        env={**os.environ, "PYTHONPATH": str(src)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--before-src", type=Path, help="src/ of the build to compare with")
    args = parser.parse_args()
    variants = {"this": ROOT / "src"}
    if args.before_src is not None:
        variants = {"before": args.before_src, **variants}
    samples: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.runs):
        order = list(variants.items())
        if round_ % 2:
            order.reverse()
        for probe, argv in PROBES.items():
            for name, src in order:
                samples.setdefault((probe, name), []).append(cpu_of(src, argv))
    print(f"| probe (CPU s, median of {args.runs}) | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for probe in PROBES:
        cells = [f"{statistics.median(samples[probe, name]):.3f}" for name in variants]
        print(f"| {probe} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
