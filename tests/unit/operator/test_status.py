"""Condition logic: transition times, the Ready summary, the phase, and which changes become events."""

from payplane_operator.api.conditions import Condition, ConditionType, Phase, Reason, not_ok, ok
from payplane_operator.reconcile.outcome import EventType
from payplane_operator.reconcile.status import merge_conditions, phase_of, summarize_ready, transition_notes

TOPICS_OK = ok(ConditionType.TOPICS_READY, Reason.TOPICS_IN_SYNC, "5 topics in sync")
TOPICS_DOWN = not_ok(ConditionType.TOPICS_READY, Reason.KAFKA_ERROR, "Kafka unreachable")
WORKLOADS_WAIT = not_ok(ConditionType.WORKLOADS_READY, Reason.PROGRESSING, "gw: not observed yet")
WORKLOADS_OK = ok(ConditionType.WORKLOADS_READY, Reason.APPLIED, "applied")


def test_last_transition_time_moves_only_when_status_changes() -> None:
    first = merge_conditions([], [TOPICS_OK], 1, "T1")
    assert first[0]["lastTransitionTime"] == "T1"
    same = merge_conditions(first, [ok(ConditionType.TOPICS_READY, Reason.TOPICS_IN_SYNC, "new words")], 2, "T2")
    assert same[0]["lastTransitionTime"] == "T1"
    assert same[0]["observedGeneration"] == 2
    changed = merge_conditions(same, [TOPICS_DOWN], 2, "T3")
    assert changed[0]["lastTransitionTime"] == "T3"
    assert changed[0]["status"] == "False"


def test_ready_names_failures_before_waits() -> None:
    ready = summarize_ready([WORKLOADS_WAIT, TOPICS_DOWN], "fine")
    assert ready.status is False
    assert ready.reason is Reason.KAFKA_ERROR
    assert "TopicsReady: Kafka unreachable" in ready.message
    assert "WorkloadsReady: gw: not observed yet" in ready.message
    waiting = summarize_ready([WORKLOADS_WAIT, TOPICS_OK], "fine")
    assert waiting.reason is Reason.NOT_READY
    assert summarize_ready([WORKLOADS_OK, TOPICS_OK], "fine") == ok(ConditionType.READY, Reason.READY, "fine")


def test_phase() -> None:
    assert phase_of([WORKLOADS_OK, TOPICS_OK]) is Phase.READY
    assert phase_of([WORKLOADS_WAIT, TOPICS_OK]) is Phase.PROVISIONING
    assert phase_of([WORKLOADS_WAIT, TOPICS_DOWN]) is Phase.DEGRADED
    assert phase_of([not_ok(ConditionType.READY, Reason.INVALID_SPEC, "spec.x: bad")]) is Phase.INVALID


def _as_old(conditions: list[Condition]) -> list[dict[str, object]]:
    return merge_conditions([], conditions, 1, "T0")


def test_events_only_for_changes_warnings_for_failures_and_no_news_for_first_waits() -> None:
    assert transition_notes([], [WORKLOADS_WAIT]) == []
    (failed,) = transition_notes([], [TOPICS_DOWN])
    assert failed.type is EventType.WARNING
    assert failed.reason == "KafkaError"
    (recovered,) = transition_notes(_as_old([TOPICS_DOWN]), [TOPICS_OK])
    assert recovered.type is EventType.NORMAL
    assert "TopicsReady is True" in recovered.message
    assert transition_notes(_as_old([TOPICS_OK, WORKLOADS_OK]), [TOPICS_OK, WORKLOADS_OK]) == []
