"""Keep the SPIRE registration entries of an owner's workloads equal to the desired ones (by entry ID)."""

import asyncio
from collections.abc import Sequence

from payplane_operator.api.conditions import ConditionType, Reason, ok
from payplane_operator.clients.errors import ClientError
from payplane_operator.reconcile.outcome import Note, StepResult, failed_step
from payplane_operator.reconcile.ports import Spire
from payplane_operator.resources import EntrySpec


def _comparable(entry: EntrySpec) -> EntrySpec:
    return EntrySpec(
        entry.entry_id,
        entry.spiffe_id,
        entry.parent_id,
        tuple(sorted(entry.selectors)),
        tuple(sorted(entry.dns_names)),
        entry.x509_svid_ttl_s,
        entry.hint,
    )


async def ensure_entries(spire: Spire, desired: Sequence[EntrySpec]) -> StepResult:
    notes: list[Note] = []
    try:
        actual = await asyncio.gather(*(spire.get(e.entry_id) for e in desired))
        missing = [e for e, a in zip(desired, actual, strict=True) if a is None]
        stale = [e for e, a in zip(desired, actual, strict=True) if a is not None and _comparable(a) != _comparable(e)]
        for entry_id in await spire.create(missing):
            entry = next(e for e in missing if e.entry_id == entry_id)
            notes.append(Note.normal("IdentityRegistered", f"registered {entry.spiffe_id} (SPIRE entry {entry_id})"))
        await spire.update(stale)
        notes.extend(
            Note.normal("IdentityUpdated", f"updated SPIRE entry {e.entry_id} for {e.spiffe_id}") for e in stale
        )
    except ClientError as error:
        return failed_step(ConditionType.IDENTITIES_READY, Reason.SPIRE_ERROR, error, "registering identities")
    condition = ok(
        ConditionType.IDENTITIES_READY,
        Reason.ENTRIES_IN_SYNC,
        f"{len(desired)} SPIRE entries in sync: {', '.join(e.spiffe_id for e in desired)}",
    )
    return StepResult(condition, notes, details={"identities": [e.spiffe_id for e in desired]})


async def remove_entries(spire: Spire, entries: Sequence[EntrySpec]) -> list[Note]:
    deleted = await spire.delete([e.entry_id for e in entries])
    return [Note.normal("IdentityRemoved", f"deleted SPIRE entry {entry_id}") for entry_id in deleted]
