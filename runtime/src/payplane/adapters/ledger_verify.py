"""Run the ledger's invariant checks against a live shard database, in one read-only snapshot."""

from typing import Final

import asyncpg

from payplane.ledger.legs import CREDIT_LEG_SUFFIX, REVERSAL_SUFFIX
from payplane.ledger.verify import CheckResult, VerifyReport

EXAMPLES_MAX: Final = 10

# name, description, SQL returning one readable line per violation
CHECKS: Final[list[tuple[str, str, str]]] = [
    (
        "double_entry",
        "per currency, posted debits equal posted credits and pending debits equal pending credits",
        """select currency || ': posted ' || sum(debits_posted_minor) || '/' || sum(credits_posted_minor)
                  || ', pending ' || sum(debits_pending_minor) || '/' || sum(credits_pending_minor)
           from accounts group by currency
           having sum(debits_posted_minor) <> sum(credits_posted_minor)
               or sum(debits_pending_minor) <> sum(credits_pending_minor)""",
    ),
    (
        "balances_match_entries",
        "every account's posted balances equal the sum of its entries",
        """with sums as (
             select account_id,
                    coalesce(sum(amount_minor) filter (where side = 'debit'), 0) as debits,
                    coalesce(sum(amount_minor) filter (where side = 'credit'), 0) as credits
             from entries group by account_id)
           select a.id || ': balances ' || a.debits_posted_minor || '/' || a.credits_posted_minor
                  || ' but entries ' || coalesce(s.debits, 0) || '/' || coalesce(s.credits, 0)
           from accounts a left join sums s on s.account_id = a.id
           where a.debits_posted_minor <> coalesce(s.debits, 0) or a.credits_posted_minor <> coalesce(s.credits, 0)""",
    ),
    (
        "entries_reference_known_rows",
        "every posted movement names existing accounts (no foreign keys on the hot path)",
        """select e.transfer_id || '/' || e.side || ' -> ' || e.account_id
           from entries e
           where not exists (select 1 from transfers t where t.id = e.transfer_id)
              or not exists (select 1 from accounts a where a.id = e.account_id)""",
    ),
    (
        "limits_respected",
        "no balance breaks its account's limits",
        """select id || ': debits ' || (debits_pending_minor + debits_posted_minor) || ' credits '
                  || (credits_pending_minor + credits_posted_minor) || ' overdraft ' || overdraft_limit_minor
           from accounts
           where (debits_must_not_exceed_credits
                  and debits_pending_minor + debits_posted_minor > credits_posted_minor + overdraft_limit_minor)
              or (credits_must_not_exceed_debits
                  and credits_pending_minor + credits_posted_minor > debits_posted_minor)""",
    ),
    (
        "pending_resolved_at_most_once",
        "each pending transfer is resolved by at most one post or void, matching its recorded state",
        """select p.id || ': state ' || p.pending_state || ', resolutions ' || count(r.id)
           from transfers p left join transfers r on r.pending_id = p.id
           where p.mode = 'pending'
           group by p.id, p.pending_state
           having count(r.id) > 1
               or (p.pending_state in ('posted', 'voided') and count(r.id) <> 1)
               or (p.pending_state in ('pending', 'expired') and count(r.id) <> 0)""",
    ),
    (
        "pending_balances_match_holds",
        "every account's pending balances equal the sum of its open holds",
        """with holds as (
             select account_id, sum(debit) as debits, sum(credit) as credits from (
               select debit_account_id as account_id, amount_minor as debit, 0 as credit
                 from transfers where pending_state = 'pending'
               union all
               select credit_account_id, 0, amount_minor from transfers where pending_state = 'pending') h
             group by account_id)
           select a.id || ': pending ' || a.debits_pending_minor || '/' || a.credits_pending_minor
                  || ' but open holds ' || coalesce(h.debits, 0) || '/' || coalesce(h.credits, 0)
           from accounts a left join holds h on h.account_id = a.id
           where a.debits_pending_minor <> coalesce(h.debits, 0)
              or a.credits_pending_minor <> coalesce(h.credits, 0)""",
    ),
]


async def verify(conn: asyncpg.Connection) -> VerifyReport:
    """All checks in one repeatable-read snapshot, so a busy writer cannot make them disagree."""
    results = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for name, description, sql in CHECKS:
            rows = await conn.fetch(sql)
            lines = [str(r[0]) for r in rows]
            results.append(CheckResult(name, description, lines[:EXAMPLES_MAX], len(lines)))
    return VerifyReport(results)


IN_FLIGHT_BOUND_S: Final = 60.0

FIRST_LEGS_SQL: Final = """
    select t.id, t.applied_at_us from transfers t
    where t.mode = 'posted' and t.request::jsonb->>'forward_to' <> ''
    union all
    select p.id, p.applied_at_us from transfers p join transfers h on h.id = p.pending_id
    where p.mode = 'post_pending' and h.request::jsonb->>'forward_to' <> ''"""
LEG_IDS_SQL: Final = "select id from transfers where kind in ('transit_credit', 'reversal')"


async def cross_partition_check(
    conns: list[asyncpg.Connection], now_us: int, in_flight_bound_s: float = IN_FLIGHT_BOUND_S
) -> CheckResult:
    """Every cross-partition transfer is complete, reversed, or in flight for less than the bound.

    The legs of one transfer may live in different shard databases, so this check reads all of them.
    """
    first_legs: dict[str, int] = {}
    settled: set[str] = set()
    for conn in conns:
        first_legs.update({r["id"]: r["applied_at_us"] for r in await conn.fetch(FIRST_LEGS_SQL)})
        settled.update(r["id"] for r in await conn.fetch(LEG_IDS_SQL))
    bound_us = int(in_flight_bound_s * 1_000_000)
    stuck = sorted(
        f"{transfer_id}: neither credited nor reversed after {(now_us - applied_us) / 1e6:.0f} s"
        for transfer_id, applied_us in first_legs.items()
        if f"{transfer_id}{CREDIT_LEG_SUFFIX}" not in settled
        and f"{transfer_id}{REVERSAL_SUFFIX}" not in settled
        and now_us - applied_us > bound_us
    )
    return CheckResult(
        "cross_partition_settled",
        f"every cross-partition transfer is credited, reversed, or in flight for under {in_flight_bound_s:.0f} s",
        stuck[:EXAMPLES_MAX],
        len(stuck),
    )


async def verify_shards(conns: list[asyncpg.Connection], now_us: int) -> VerifyReport:
    """The per-database checks on each shard, then the cross-partition check over all of them."""
    checks: list[CheckResult] = []
    for index, conn in enumerate(conns):
        report = await verify(conn)
        prefix = f"shard{index}:" if len(conns) > 1 else ""
        checks += [CheckResult(prefix + c.name, c.description, c.violations, c.violation_count) for c in report.checks]
    checks.append(await cross_partition_check(conns, now_us))
    return VerifyReport(checks)
