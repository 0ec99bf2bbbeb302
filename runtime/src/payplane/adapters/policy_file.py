"""The FraudPolicy file the operator delivers (``fraud-policy.json`` in the rail's ConfigMap, mounted into
the payment worker), watched and reloaded while the worker serves.

The file is checked every ``interval_s``; a change of its identity (inode, size, modification time; a
kubelet replaces mounted files atomically) re-reads it. A valid document replaces the policy in one
reference assignment, so requests in flight finish with the version they started with and none waits.
An unreadable or invalid file keeps the last valid policy; the failure is logged and counted. A file
that does not exist means no FraudPolicy is delivered (the rail references none): the worker's default
policy alone decides.
"""

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from payplane.payments.fraud import Evaluation, PaymentFacts, ReviewThresholdPolicy
from payplane.payments.fraud_rules import (
    CombinedPolicy,
    PolicyDocumentError,
    RulesPolicy,
    VelocityWindows,
    parse_document,
)

log = logging.getLogger("payplane.fraud_policy")
CHECK_INTERVAL_S: Final = 1.0
FILE_BYTES_MAX: Final = 4 * 1024 * 1024


class PolicyObserver(Protocol):
    def policy_loaded(self, name: str, version: str, mode: str) -> None: ...
    def policy_removed(self) -> None: ...
    def policy_load_failed(self) -> None: ...
    def evaluated(self, evaluation: Evaluation, mode: str) -> None: ...


class _IgnoreObserver:
    def policy_loaded(self, name: str, version: str, mode: str) -> None:
        pass

    def policy_removed(self) -> None:
        pass

    def policy_load_failed(self) -> None:
        pass

    def evaluated(self, evaluation: Evaluation, mode: str) -> None:
        pass


@dataclass(frozen=True)
class PolicyState:
    """What the worker reports in ``/status`` (an immutable snapshot: read from the metrics thread)."""

    name: str | None = None
    version: str | None = None
    mode: str | None = None
    loaded_at_s: float | None = None
    load_failures: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraudPolicy": self.name,
            "fraudPolicyVersion": self.version,
            "fraudPolicyMode": self.mode,
            "fraudPolicyLoadedAt": self.loaded_at_s,
            "fraudPolicyLoadFailures": self.load_failures,
            "fraudPolicyLastError": self.last_error,
        }


class PolicyFile:
    """The worker's fraud policy: its default (review threshold) plus the delivered FraudPolicy, kept
    current."""

    def __init__(self, path: Path | None, base: ReviewThresholdPolicy, observer: PolicyObserver | None = None) -> None:
        self.path = path
        self.base = base
        self.observer: PolicyObserver = observer or _IgnoreObserver()
        self.windows = VelocityWindows()
        self.current = CombinedPolicy(base)
        self.state = PolicyState()
        self._identity: tuple[int, int, int] | None = None

    def evaluate(self, facts: PaymentFacts) -> Evaluation:
        policy = self.current  # one read: a reload meanwhile does not mix two versions
        evaluation = policy.evaluate(facts)
        self.observer.evaluated(evaluation, policy.rules.mode.value if policy.rules is not None else "default")
        return evaluation

    def check(self) -> bool:
        """Reload if the file changed; True when the policy in effect changed."""
        if self.path is None:
            return False
        identity: tuple[int, int, int] | None = None
        try:
            stat = self.path.stat()
            identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if identity == self._identity:
                return False
            rules = self._read(stat.st_size)
        except FileNotFoundError:
            return self._absent()
        except (OSError, ValueError) as exc:  # PolicyDocumentError and JSONDecodeError are ValueErrors
            return self._failed(f"{self.path}: {exc}", identity)
        self._identity = identity
        return self._install(rules)

    def _read(self, size: int) -> RulesPolicy:
        assert self.path is not None
        if size > FILE_BYTES_MAX:
            raise PolicyDocumentError(f"the file is larger than {FILE_BYTES_MAX} bytes")
        return parse_document(json.loads(self.path.read_bytes()), self.windows, time.monotonic)

    def _install(self, rules: RulesPolicy) -> bool:
        if self.current.rules is not None and self.current.rules.version == rules.version:
            return False
        self.current = CombinedPolicy(self.base, rules)
        self.state = PolicyState(rules.name, rules.version, rules.mode.value, time.time(), self.state.load_failures)
        self.observer.policy_loaded(rules.name, rules.version, rules.mode.value)
        log.info(
            "fraud policy %s version %s (%s, %d rules) in effect",
            rules.name, rules.version, rules.mode.value, len(rules.rules),
        )  # fmt: skip
        return True

    def _absent(self) -> bool:
        self._identity = None
        if self.current.rules is None:
            return False
        log.warning("%s no longer exists: no FraudPolicy is delivered; the default policy alone decides", self.path)
        self.current = CombinedPolicy(self.base)
        self.state = PolicyState(load_failures=self.state.load_failures)
        self.observer.policy_removed()
        return True

    def _failed(self, error: str, identity: tuple[int, int, int] | None) -> bool:
        self._identity = identity  # the same broken content is reported once, not every interval
        kept = self.current.rules.version if self.current.rules is not None else "none"
        log.error("fraud policy not loaded (keeping version %s): %s", kept, error)
        self.state = PolicyState(
            self.state.name, self.state.version, self.state.mode, self.state.loaded_at_s,
            self.state.load_failures + 1, error,
        )  # fmt: skip
        self.observer.policy_load_failed()
        return False

    async def watch(self, stopping: asyncio.Event, interval_s: float = CHECK_INTERVAL_S) -> None:
        while not stopping.is_set():
            self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
