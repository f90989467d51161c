"""CPU of the executor's per-request Python for one echo round trip's `process/write`: the
envelope decode with its serde-limit check (`jsonrpc.decode_message`) and the params decode
(`decode_params`, base64 included), in µs per call, best of N repeats (no I/O, so the load of a
shared machine shows less than in end-to-end figures; compare builds by alternating them).

    PYTHONPATH=src .venv/bin/python bench/request_decode.py [--repeat N]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import msgspec

from execserver.protocol import jsonrpc
from execserver.protocol.params import decode_params
from execserver.protocol.process import ProcessWriteParams

ECHO_WRITE = (
    b'{"id":17,"method":"process/write","params":{"processId":"cat-1234-1",'
    b'"chunk":"MDAwMDAwMDEK","writeId":"w17"}}'
)
NUMBER = 5000


def best_us(run: Callable[[], object], repeat: int) -> float:
    return min(timeit.repeat(run, number=NUMBER, repeat=repeat)) / NUMBER * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    params = msgspec.json.decode(ECHO_WRITE)["params"]
    cases: dict[str, Callable[[], object]] = {
        "decode_message": lambda: jsonrpc.decode_message(ECHO_WRITE),
        "decode_params": lambda: decode_params(params, ProcessWriteParams),
    }
    for name, run in cases.items():
        print(f"{name:16s} {best_us(run, args.repeat):6.2f} µs")


if __name__ == "__main__":
    main()
