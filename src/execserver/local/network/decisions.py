"""One proxy's decisions: the policy, the client's decider (`network/policyRequest`) and the audit
trail (`network/policyDecision`), as codex 0.171 combines them.

A connection attempt is checked for its destination first: a deny entry or a local/private
address is refused by the baseline policy; a host the allowlist misses (or any host matching a
review pattern) is put to the client when the launch set `policyDecisionTimeoutMs`, which
waits that long plus `DECIDER_GRACE_S` and treats anything but `{"decision": {"type":
"allow"}}` as a deny; an allowed name is then resolved (local/private: refused). Every outcome
is one notification; a refusal of the mode guard (limited mode) is a second one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from execserver.environment.process import NetworkPolicyPeer
from execserver.local.network.policy import NOT_ALLOWED, NetworkPolicy
from execserver.protocol.network import (
    NetworkPolicyDecisionNotification,
    NetworkPolicyRequestParams,
    NetworkPolicyRequestTarget,
)

log = logging.getLogger(__name__)

DECIDER_GRACE_S = 5.0
"""Added to `policyDecisionTimeoutMs` (observed: the reference gives up after the timeout plus
five seconds, then denies)."""

BASELINE = "baseline_policy"
DECIDER = "decider"
MODE_GUARD = "mode_guard"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One connection a proxied program asked for."""

    protocol: str
    """`http`, `https_connect` or `socks5_tcp`."""
    host: str
    """Normalised."""
    port: int
    method: str | None
    """The HTTP method (None for SOCKS)."""
    client: str
    """The program's address, `IP:PORT`."""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str
    source: str


class Gatekeeper:
    """Decides, asks and audits for the proxy of one process."""

    def __init__(
        self,
        process_id: str,
        policy: NetworkPolicy,
        peer: Callable[[], NetworkPolicyPeer | None],
        decision_timeout_ms: int | None,
    ) -> None:
        self.process_id = process_id
        self.policy = policy
        self._peer = peer
        self._timeout_s = (
            None if decision_timeout_ms is None else decision_timeout_ms / 1000 + DECIDER_GRACE_S
        )

    async def check_destination(self, attempt: Attempt) -> Verdict:
        policy = self.policy
        reason = policy.baseline(attempt.host)
        asked = False
        if reason is None or reason == NOT_ALLOWED:
            if self._timeout_s is not None and (
                reason == NOT_ALLOWED or policy.needs_review(attempt.host)
            ):
                allowed, denial = await self._ask(attempt, self._timeout_s)
                if not allowed:
                    return self._record(attempt, Verdict(False, denial, DECIDER))
                asked = True
            elif reason == NOT_ALLOWED:
                return self._record(attempt, Verdict(False, reason, BASELINE))
            if await policy.resolves_locally(attempt.host, attempt.port):
                return self._record(attempt, Verdict(False, "not_allowed_local", BASELINE))
            if asked:
                return self._record(attempt, Verdict(True, NOT_ALLOWED, DECIDER), override=True)
            return self._record(attempt, Verdict(True, "allow", BASELINE))
        return self._record(attempt, Verdict(False, reason, BASELINE))

    def refuse_by_mode(self, attempt: Attempt, reason: str) -> Verdict:
        """The limited mode's refusal (after the destination was allowed, or for SOCKS)."""
        return self._record(attempt, Verdict(False, reason, MODE_GUARD), scope="non_domain")

    async def _ask(self, attempt: Attempt, timeout_s: float) -> tuple[bool, str]:
        """(allowed, the reason of a denial). No client, no answer, an error or any other
        answer: denied for `not_allowed`."""
        peer = self._peer()
        if peer is None:
            return False, NOT_ALLOWED
        request = NetworkPolicyRequestParams(
            process_id=self.process_id,
            request=NetworkPolicyRequestTarget(
                protocol=attempt.protocol, host=attempt.host, port=attempt.port
            ),
        )
        try:
            answer = await peer.ask_policy(request, timeout_s)
        except Exception as exc:  # no answer in time, an error answer, the client went away
            log.info("network policy request not answered: %s", type(exc).__name__)
            return False, NOT_ALLOWED
        return _read_decision(answer)

    def _record(
        self, attempt: Attempt, verdict: Verdict, *, scope: str = "domain", override: bool = False
    ) -> Verdict:
        peer = self._peer()
        if peer is not None:
            peer.policy_decision(
                NetworkPolicyDecisionNotification(
                    process_id=self.process_id,
                    timestamp=_timestamp(),
                    scope=scope,
                    decision="allow" if verdict.allowed else "deny",
                    source=verdict.source,
                    reason=verdict.reason,
                    protocol=attempt.protocol,
                    host=attempt.host,
                    port=attempt.port,
                    method=attempt.method,
                    client=attempt.client,
                    policy_override=override,
                )
            )
        return verdict


def _read_decision(answer: Any) -> tuple[bool, str]:
    decision = answer.get("decision") if isinstance(answer, dict) else None
    if isinstance(decision, dict):
        kind = decision.get("type")
        if kind == "allow":
            return True, NOT_ALLOWED
        reason = decision.get("reason")
        if kind == "deny" and isinstance(reason, str):
            return False, reason
    return False, NOT_ALLOWED


def _timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
