"""Differential wire tests: every case runs against our server and the pinned reference, and the
whole observations must match after masking (see tests/harness/differential.py).

Cases where we differ on purpose are not here: they are listed, with the reason, in
`tests/wire/deliberate.py`, whose tests pin our behaviour and the reference's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.harness.differential import observe
from tests.wire import cases_core, cases_fs, cases_http, cases_sandbox
from tests.wire.cases_core import dumps

ALL_CASES = {**cases_core.CASES, **cases_fs.CASES, **cases_http.CASES, **cases_sandbox.CASES}
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
}
CASES = {name: case for name, case in ALL_CASES.items() if name not in _DELIBERATE}


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(CASES))
async def test_matches_reference(
    name: str, ours: ServerProcess, reference: ServerProcess, tmp_path: Path
) -> None:
    """Our server answers this conversation exactly like codex exec-server 0.169.0."""
    case = CASES[name]
    # Same directory for both runs, so paths in messages agree; emptied in between.
    workdir = tmp_path / "case"
    theirs = await observe(case, reference.url, workdir, "reference")
    shutil.rmtree(workdir)
    mine = await observe(case, ours.url, workdir, "ours")
    assert dumps(mine) == dumps(theirs)
