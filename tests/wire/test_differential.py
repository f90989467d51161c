"""Differential wire tests: every case runs against our server and the pinned reference, and the
whole observations must match after masking (see tests/harness/differential.py).

Cases where we differ on purpose are not here: they are listed, with the reason, in
`tests/wire/deliberate.py`, whose tests pin our behaviour and the reference's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.harness.differential import observe
from tests.harness.servers import PREVIOUS_VERSIONS
from tests.wire import (
    cases_core,
    cases_discovery,
    cases_fs,
    cases_http,
    cases_network,
    cases_sandbox,
    cases_shell_snapshot,
)
from tests.wire.cases_core import dumps

ALL_CASES = {
    **cases_core.CASES,
    **cases_fs.CASES,
    **cases_http.CASES,
    **cases_network.CASES,
    **cases_sandbox.CASES,
    **cases_discovery.CASES,
    **cases_shell_snapshot.CASES,
}
# Cases whose outcome differs on purpose run in test_deliberate.py instead.
_DELIBERATE = {
    "http_requests_wait_in_line",
    "http_request_header_values_kept_verbatim",
    "http_malformed_responses",
    "sandbox_enforce_managed_network",
    "sandbox_legacy_landlock",
    "sandbox_path_entry_naming_a_file",
    "sandbox_fs_path_entry_naming_a_file",
    "sandbox_glob_deny_entries",
    "sandbox_protected_git_symlink_refuses_to_run",
    "sandbox_profile_empty_entries_and_root_deny",
    "sandbox_read_only_path_crossing_writable_symlink",
    "sandbox_spawn_failures_reported_up_front",
}
CASES = {name: case for name, case in ALL_CASES.items() if name not in _DELIBERATE}


# The core, filesystem and shell snapshot suites also run against the previous release, so
# that Codex clients of that release keep working with us. Where the newest release changed the
# wire on purpose, the comparison leaves the change out (`as_previous`), or the case is newer
# than the previous release.
_NEWER_CASES = {
    "process_pty_arg0_rules",  # PTY + arg0 changed in 0.171
    # 0.171 added the transparentTcp checks and checks argv before the snapshot scope.
    "process_start_check_order",
    "process_start_network_params",
    "process_start_shell_snapshot_params",
}
PREVIOUS_CASES = {
    name: case
    for name, case in {**cases_core.CASES, **cases_fs.CASES, **cases_shell_snapshot.CASES}.items()
    if name in CASES and name not in _NEWER_CASES
}


def as_previous(value: Any) -> Any:
    """An observation without what the newest release added: `data` on errors (the typed
    `process/start` failures) and the `networkProxyTransparentTcp` capability."""
    if isinstance(value, dict):
        return {
            key: as_previous(item)
            for key, item in value.items()
            if not (key == "data" and "code" in value and "message" in value)
            and key != "networkProxyTransparentTcp"
        }
    if isinstance(value, list):
        return [as_previous(item) for item in value if item != "networkProxyTransparentTcp"]
    return value


async def _differential(name: str, case: Any, ours: str, theirs: str, tmp_path: Path) -> None:
    # Same directory for both runs, so paths in messages agree; emptied in between.
    workdir = tmp_path / "case"
    reference = await observe(case, theirs, workdir, "reference")
    shutil.rmtree(workdir)
    mine = await observe(case, ours, workdir, "ours")
    assert dumps(mine) == dumps(reference), name


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(CASES))
async def test_matches_reference(
    name: str, ours: ServerProcess, reference: ServerProcess, tmp_path: Path
) -> None:
    """Our server answers this conversation exactly like the newest codex exec-server."""
    await _differential(name, CASES[name], ours.url, reference.url, tmp_path)


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(PREVIOUS_CASES))
async def test_matches_previous_reference(
    name: str, ours: ServerProcess, reference_previous: ServerProcess, tmp_path: Path
) -> None:
    """Our server answers this core or filesystem conversation like the previous codex
    release, apart from what the newest one added."""
    case = PREVIOUS_CASES[name]
    workdir = tmp_path / "case"
    theirs = as_previous(await observe(case, reference_previous.url, workdir, "reference"))
    shutil.rmtree(workdir)
    mine = as_previous(await observe(case, ours.url, workdir, "ours"))
    assert dumps(mine) == dumps(theirs), PREVIOUS_VERSIONS[0]
