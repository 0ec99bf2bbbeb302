"""One batch of ledger commands, decided in memory: pure, so it is tested without PostgreSQL or Kafka.

The writer decodes a batch's records into commands, asks ``ids_to_load`` what to fetch, loads a
``Ledger`` with exactly those rows, and calls ``apply_batch``. The ``AppliedBatch`` holds everything the
store persists in one transaction: new accounts, balance changes, refusals and the outcome messages for
the payment worker (written to the outbox in the same transaction).
"""

from dataclasses import dataclass, field

from payplane.ledger.codec import RequestDecodeError, account_spec_from_dict, request_from_dict
from payplane.ledger.engine import Ledger
from payplane.ledger.model import Account, AccountSpec, BalanceChange, TransferRequest
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, TransferOutcome

Command = AccountSpec | TransferRequest


def command_from_message(message: LedgerCommand) -> Command:
    """The typed command inside an envelope; raises RequestDecodeError naming the bad field."""
    if message.type is CommandType.CREATE_ACCOUNT:
        return account_spec_from_dict(message.body)
    return request_from_dict(message.body)


def ids_to_load(commands: list[Command]) -> tuple[set[str], set[str]]:
    """(account ids, transfer ids) a batch may consult; pending transfers' accounts load in a second step."""
    account_ids: set[str] = set()
    transfer_ids: set[str] = set()
    for command in commands:
        if isinstance(command, AccountSpec):
            account_ids.add(command.id)
            continue
        transfer_ids.add(command.id)
        if command.pending_id:
            transfer_ids.add(command.pending_id)
        account_ids.update(a for a in (command.debit_account_id, command.credit_account_id) if a)
    return account_ids, transfer_ids


@dataclass
class AppliedBatch:
    new_accounts: list[Account] = field(default_factory=list)
    changes: list[BalanceChange] = field(default_factory=list)
    outcomes: list[TransferOutcome] = field(default_factory=list)


def apply_batch(ledger: Ledger, commands: list[Command], *, partition: int, now_us: int) -> AppliedBatch:
    """Apply commands in order (the order Kafka delivered them for this partition)."""
    applied = AppliedBatch()
    for command in commands:
        if isinstance(command, AccountSpec):
            if ledger.create_account(command, now_us).value == "ok":
                applied.new_accounts.append(ledger.accounts[command.id])
            continue
        result, change = ledger.apply(command, now_us)
        applied.changes.append(change)
        applied.outcomes.append(
            TransferOutcome(
                transfer_id=command.id,
                result=result.value,
                partition=partition,
                applied_at_us=now_us,
                payment_ref=command.payment_ref,
            )
        )
    return applied


__all__ = ["AppliedBatch", "Command", "RequestDecodeError", "apply_batch", "command_from_message", "ids_to_load"]
