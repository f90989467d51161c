"""The fleet recipe's balancer (deploy/fleet/haproxy.cfg) run on 127.0.0.1 in front of relay
nodes that are bare processes: for tests/deploy/test_fleet_recipe.py and bench/fleet_scale.py.

    config.write_text(local_haproxy_config(port, [(node_id, node_port), ...]))
    async with haproxy_process(shutil.which("haproxy"), config, log) as process:
        ...  # http://127.0.0.1:{port}, /node/<node id>/… to that node
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tests.harness.servers import REPO_ROOT

HAPROXY_CFG = REPO_ROOT / "deploy" / "fleet" / "haproxy.cfg"
RECIPE_NODES = 3
"""The recipe's nodes are `relay-1` … `relay-3` on port 8780."""


def local_haproxy_config(port: int, nodes: Sequence[tuple[str, int]]) -> str:
    """haproxy.cfg as it is, but listening on 127.0.0.1:`port` in front of three nodes given
    as (node id, port on 127.0.0.1), in the recipe's order (relay-1 … relay-3)."""
    if len(nodes) != RECIPE_NODES:
        raise ValueError(f"the recipe has {RECIPE_NODES} nodes, not {len(nodes)}")
    text = HAPROXY_CFG.read_text().replace("bind :8780", f"bind 127.0.0.1:{port}")
    for index, (node_id, node_port) in enumerate(nodes):
        text = text.replace(f"relay-{index + 1}:8780", f"127.0.0.1:{node_port}")
        text = text.replace(f"relay-{index + 1}", node_id)
    if "relay-" in text:
        raise ValueError("haproxy.cfg names a node this helper does not know")
    return text


@contextlib.asynccontextmanager
async def haproxy_process(
    binary: str, config: Path, log: Path, *, stop_timeout_s: float = 10.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`haproxy -db -f config` (its log and errors into `log`), stopped with SIGTERM at the
    end (SIGKILL after `stop_timeout_s`)."""
    with open(log, "wb") as output:
        process = await asyncio.create_subprocess_exec(
            binary, "-db", "-f", str(config), stdout=output, stderr=output,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
