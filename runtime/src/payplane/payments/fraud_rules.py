"""A FraudPolicy's rules, as the operator delivers them to the payment workers (``fraud-policy.json``:
``{"name", "version", "spec"}``), parsed and evaluated. Pure: no I/O; the clock is passed in.

Rules are evaluated in order; the first whose conditions all match decides (``Allow`` stops evaluating
and allows); otherwise ``defaultAction`` applies. Conditions:

- ``amountAbove``: the payment's amount exceeds the threshold for its currency (minor units); a currency
  without a threshold never matches.
- ``velocity``: the paying account made more than ``maxCount`` payments within the trailing ``window``,
  this one included. Counted by this worker in memory (``VelocityWindows``): with several workers each
  counts the payments it evaluated, so the rail-wide limit is up to ``workers * maxCount``.
- ``inList``: a field of the payment is in one of the policy's lists. ``AccountId`` is the paying
  account, ``ClientId`` the API client; payplane's payments carry no ``Country`` or ``CardBin`` yet, so
  those never match.

``Shadow`` mode evaluates and reports what it would have decided (``Evaluation.shadow_verdict``) but
allows the payment. ``CombinedPolicy`` adds the worker's default policy (its review threshold): the
stricter verdict acts. (The rail's amount limits are request validation, checked before any policy.)
"""

import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from payplane.payments.fraud import Evaluation, PaymentFacts, PolicyMode, ReviewThresholdPolicy, Verdict
from payplane_contracts.fraud_policy import FraudAction, ListField
from payplane_contracts.fraud_policy import parse_duration_s as contract_duration_s

RULES_MAX: Final = 100
LIST_VALUES_MAX: Final = 10_000
AMOUNT_THRESHOLD_MAX_MINOR: Final = 10**15
VELOCITY_WINDOW_S_MIN: Final = 1.0
VELOCITY_WINDOW_S_MAX: Final = 720 * 3600.0
VELOCITY_COUNT_MAX: Final = 1_000_000
VELOCITY_ACCOUNTS_MAX: Final = 100_000  # accounts whose recent payments are remembered (oldest forgotten)
_SEVERITY = {Verdict.ALLOW: 0, Verdict.REVIEW: 1, Verdict.DECLINE: 2}


class PolicyDocumentError(ValueError):
    """The delivered document cannot be evaluated; the message names the field."""


@dataclass(frozen=True)
class Velocity:
    window_s: float
    max_count: int


@dataclass(frozen=True)
class InList:
    field: ListField
    list_name: str
    values: frozenset[str]


@dataclass(frozen=True)
class Rule:
    name: str
    action: Verdict
    amount_above_minor: Mapping[str, int] | None = None
    velocity: Velocity | None = None
    in_list: InList | None = None


def parse_duration_s(text: Any, field: str) -> float:
    """``10m``, ``1h30m``, ``45s`` → seconds (the grammar the CRD accepts: ``payplane_contracts``)."""
    try:
        return float(contract_duration_s(text if isinstance(text, str) else ""))
    except ValueError:
        raise PolicyDocumentError(f"{field}: {text!r} is not a duration such as 10m or 1h30m") from None


class VelocityWindows:
    """Recent payment times per paying account (bounded: the least recently seen accounts are forgotten).
    Shared across policy reloads, so a new version keeps counting what the previous one saw."""

    def __init__(self, accounts_max: int = VELOCITY_ACCOUNTS_MAX) -> None:
        self._times: dict[str, deque[float]] = {}
        self._accounts_max = accounts_max

    def record(self, account_id: str, now_s: float, keep_s: float, keep_max: int) -> None:
        times = self._times.pop(account_id, None) or deque()
        self._times[account_id] = times  # re-inserted: most recently seen last
        times.append(now_s)
        while times and (times[0] <= now_s - keep_s or len(times) > keep_max):
            times.popleft()
        while len(self._times) > self._accounts_max:
            del self._times[next(iter(self._times))]

    def count(self, account_id: str, now_s: float, window_s: float) -> int:
        return sum(1 for t in self._times.get(account_id, ()) if t > now_s - window_s)


def _verdict(value: Any, field: str) -> Verdict:
    actions = {
        FraudAction.ALLOW: Verdict.ALLOW,
        FraudAction.REVIEW: Verdict.REVIEW,
        FraudAction.DECLINE: Verdict.DECLINE,
    }
    if value not in actions:
        raise PolicyDocumentError(f"{field}: must be Allow, Review or Decline, got {value!r}")
    return actions[value]


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PolicyDocumentError(f"{field}: must be an integer within {low}..{high}, got {value!r}")
    return value


def _amount_above(raw: Any, field: str) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        raise PolicyDocumentError(f"{field}: must map ISO 4217 codes to minor units")
    thresholds = {}
    for currency, threshold in raw.items():
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise PolicyDocumentError(f"{field}: {currency!r} is not an ISO 4217 code")
        thresholds[currency] = _int(threshold, f"{field}.{currency}", 0, AMOUNT_THRESHOLD_MAX_MINOR)
    return thresholds


def _velocity(raw: Any, field: str) -> Velocity:
    if not isinstance(raw, Mapping):
        raise PolicyDocumentError(f"{field}: must be an object with window and maxCount")
    window_s = parse_duration_s(raw.get("window"), f"{field}.window")
    if not VELOCITY_WINDOW_S_MIN <= window_s <= VELOCITY_WINDOW_S_MAX:
        raise PolicyDocumentError(f"{field}.window: must be between 1s and 720h")
    return Velocity(window_s, _int(raw.get("maxCount"), f"{field}.maxCount", 1, VELOCITY_COUNT_MAX))


def _in_list(raw: Any, field: str, lists: Mapping[str, frozenset[str]]) -> InList:
    if not isinstance(raw, Mapping):
        raise PolicyDocumentError(f"{field}: must be an object with field and list")
    try:
        list_field = ListField(str(raw.get("field")))
    except ValueError:
        raise PolicyDocumentError(f"{field}.field: must be one of {', '.join(ListField)}") from None
    name = raw.get("list")
    if name not in lists:
        raise PolicyDocumentError(f"{field}.list: {name!r} names no entry of spec.lists")
    return InList(list_field, str(name), lists[str(name)])


def _lists(raw: Any) -> dict[str, frozenset[str]]:
    if not isinstance(raw, list):
        raise PolicyDocumentError("spec.lists: must be a list")
    lists = {}
    for i, entry in enumerate(raw):
        field = f"spec.lists[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise PolicyDocumentError(f"{field}: must be an object with a name and values")
        values = entry.get("values", [])
        if not isinstance(values, list) or len(values) > LIST_VALUES_MAX or not all(isinstance(v, str) for v in values):
            raise PolicyDocumentError(f"{field}.values: must be at most {LIST_VALUES_MAX} strings")
        lists[entry["name"]] = frozenset(values)
    return lists


def _rule(raw: Any, index: int, lists: Mapping[str, frozenset[str]]) -> Rule:
    field = f"spec.rules[{index}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise PolicyDocumentError(f"{field}: must be an object with a name")
    when = raw.get("when")
    if not isinstance(when, Mapping):
        raise PolicyDocumentError(f"{field}.when: must be an object")
    rule = Rule(
        name=raw["name"],
        action=_verdict(raw.get("action"), f"{field}.action"),
        amount_above_minor=_amount_above(when["amountAbove"], f"{field}.when.amountAbove")
        if "amountAbove" in when
        else None,
        velocity=_velocity(when["velocity"], f"{field}.when.velocity") if "velocity" in when else None,
        in_list=_in_list(when["inList"], f"{field}.when.inList", lists) if "inList" in when else None,
    )
    if rule.amount_above_minor is None and rule.velocity is None and rule.in_list is None:
        raise PolicyDocumentError(f"{field}.when: needs at least one of amountAbove, velocity, inList")
    return rule


@dataclass(frozen=True)
class RulesPolicy:
    """One version of a FraudPolicy, ready to evaluate."""

    name: str
    version: str
    mode: PolicyMode
    default_action: Verdict
    rules: tuple[Rule, ...]
    windows: VelocityWindows
    clock_s: Callable[[], float]

    def evaluate(self, facts: PaymentFacts) -> Evaluation:
        verdict, rule = self._judge(facts)
        if self.mode is PolicyMode.SHADOW:
            return Evaluation(Verdict.ALLOW, self.version, "", shadow_verdict=verdict)
        return Evaluation(verdict, self.version, rule)

    def _judge(self, facts: PaymentFacts) -> tuple[Verdict, str]:
        velocities = [r.velocity for r in self.rules if r.velocity is not None]
        now_s = self.clock_s()
        if velocities:
            keep_s = max(v.window_s for v in velocities)
            keep_max = max(v.max_count for v in velocities) + 1
            self.windows.record(facts.payer_account_id, now_s, keep_s, keep_max)
        for rule in self.rules:
            if self._matches(rule, facts, now_s):
                return rule.action, rule.name
        return self.default_action, ""

    def _matches(self, rule: Rule, facts: PaymentFacts, now_s: float) -> bool:
        if rule.amount_above_minor is not None:
            threshold = rule.amount_above_minor.get(facts.currency)
            if threshold is None or facts.amount_minor <= threshold:
                return False
        if rule.velocity is not None:
            count = self.windows.count(facts.payer_account_id, now_s, rule.velocity.window_s)
            if count <= rule.velocity.max_count:
                return False
        if rule.in_list is not None:
            value = _field_value(facts, rule.in_list.field)
            if not value or value not in rule.in_list.values:
                return False
        return True


def _field_value(facts: PaymentFacts, field: ListField) -> str:
    return {
        ListField.ACCOUNT_ID: facts.payer_account_id,
        ListField.CLIENT_ID: facts.client_id,
        ListField.COUNTRY: facts.country,
        ListField.CARD_BIN: facts.card_bin,
    }[field]


def parse_document(raw: Any, windows: VelocityWindows, clock_s: Callable[[], float]) -> RulesPolicy:
    """The delivered document → a policy, or ``PolicyDocumentError`` naming the first bad field."""
    if not isinstance(raw, Mapping):
        raise PolicyDocumentError("the document must be a JSON object with name, version and spec")
    name, version, spec = raw.get("name"), raw.get("version"), raw.get("spec")
    if not isinstance(name, str) or not name:
        raise PolicyDocumentError("name: must be a non-empty string")
    if not isinstance(version, str) or not version:
        raise PolicyDocumentError("version: must be a non-empty string")
    if not isinstance(spec, Mapping):
        raise PolicyDocumentError("spec: must be an object")
    modes = {"Enforce": PolicyMode.ENFORCE, "Shadow": PolicyMode.SHADOW}
    mode = spec.get("mode", "Enforce")
    if mode not in modes:
        raise PolicyDocumentError(f"spec.mode: must be Enforce or Shadow, got {mode!r}")
    lists = _lists(spec.get("lists", []))
    raw_rules = spec.get("rules", [])
    if not isinstance(raw_rules, list) or len(raw_rules) > RULES_MAX:
        raise PolicyDocumentError(f"spec.rules: must be a list of at most {RULES_MAX} rules")
    rules = tuple(_rule(r, i, lists) for i, r in enumerate(raw_rules))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise PolicyDocumentError("spec.rules: rule names must be unique")
    return RulesPolicy(
        name=name,
        version=version,
        mode=modes[mode],
        default_action=_verdict(spec.get("defaultAction", "Allow"), "spec.defaultAction"),
        rules=rules,
        windows=windows,
        clock_s=clock_s,
    )


@dataclass(frozen=True)
class CombinedPolicy:
    """The worker's default policy (a review threshold), then the FraudPolicy's rules (if one is
    delivered); the stricter verdict acts. The version is the FraudPolicy's (or the default's when there
    is none)."""

    base: ReviewThresholdPolicy
    rules: RulesPolicy | None = None

    @property
    def version(self) -> str:
        return self.rules.version if self.rules is not None else self.base.version

    def evaluate(self, facts: PaymentFacts) -> Evaluation:
        based = self.base.evaluate(facts)
        if self.rules is None:
            return based
        judged = self.rules.evaluate(facts)
        if _SEVERITY[based.verdict] > _SEVERITY[judged.verdict]:
            return Evaluation(based.verdict, judged.policy_version, based.rule, judged.shadow_verdict)
        return judged
