"""Run the ledger's invariant checks against a live shard database, in one read-only snapshot."""

from typing import Final

import asyncpg

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
        "every entry belongs to an applied transfer and an existing account (no foreign keys on the hot path)",
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
