"""The writer across a network partition from its database: the connection is cut mid-stream and
new connections are refused for a while; the writer retries with backoff, skips nothing, applies
nothing twice, and ends exactly where a pure reference run of the same commands ends."""

import asyncio
import random
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from payplane.adapters.ledger_verify import verify
from payplane.adapters.ledger_writer_io import KafkaCommandLog, PostgresLedgerStore, partition_lookup
from payplane.ledger.codec import account_spec_to_dict, request_to_dict
from payplane.ledger.engine import Ledger
from payplane.ledger.model import AccountFlags, AccountSpec, TransferMode, TransferRequest
from payplane.ledger.writer import LedgerWriter
from payplane_contracts.ledger_messages import CommandType, LedgerCommand, encode_command
from payplane_contracts.topics import RailTopics
from tests.integration.conftest import Infra
from tests.integration.ledger.conftest import outcomes_in_outbox, produce_commands
from tests.tcp_proxy import PartitionableProxy

ACCOUNTS = [AccountSpec("world", "EUR", "rail", AccountFlags(internal=True))] + [
    AccountSpec(f"a{i}", "EUR", f"o{i}", AccountFlags(debits_must_not_exceed_credits=True)) for i in range(20)
]
TRANSFERS = 2000


def _requests() -> list[TransferRequest]:
    rng = random.Random(3)
    names = [a.id for a in ACCOUNTS[1:]]
    requests = [TransferRequest(f"fund-{n}", TransferMode.POSTED, "world", n, 3000, "EUR") for n in names]
    for i in range(TRANSFERS):
        debit, credit = rng.sample(names, 2)
        requests.append(TransferRequest(f"t{i}", TransferMode.POSTED, debit, credit, rng.randint(1, 500), "EUR"))
    return requests


async def test_writer_rides_out_a_database_partition(
    infra: Infra, rail: RailTopics, shard: asyncpg.Connection, shard_dsn: str
) -> None:
    requests = _requests()
    values = [encode_command(LedgerCommand(CommandType.CREATE_ACCOUNT, account_spec_to_dict(a))) for a in ACCOUNTS]
    values += [encode_command(LedgerCommand(CommandType.TRANSFER, request_to_dict(r))) for r in requests]
    await produce_commands(infra["KAFKA_BOOTSTRAP"], rail.ledger_commands, values)

    parts = urlsplit(shard_dsn)
    proxy = PartitionableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied_dsn = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    log = KafkaCommandLog(infra["KAFKA_BOOTSTRAP"], rail, "ledger-writer", [0])
    await log.start()
    writer = LedgerWriter(
        topic=rail.ledger_commands,
        partitions=[0],
        writer_id="w",
        log_=log,
        store=PostgresLedgerStore(proxied_dsn, rail),
        partition_of=partition_lookup(1),
        batch_records_max=50,
    )
    try:
        await writer.start()
        cuts = 0
        for round_ in range(400):
            if writer.applied_records >= len(values):
                break
            if round_ % 6 == 3 and cuts < 4:
                proxy.cut()  # mid-stream: the next persist finds its connection gone
                cuts += 1
                asyncio.get_running_loop().call_later(0.4, proxy.heal)  # refused for a while, then back
            await asyncio.wait_for(writer.run_once(), timeout=30)
        assert cuts == 4
        assert writer.applied_records == len(values)
    finally:
        await log.stop()
        await proxy.stop()

    reference = Ledger()
    for spec in ACCOUNTS:
        reference.create_account(spec, 0)
    expected = {r.id: reference.apply(r, 1)[0].value for r in requests}
    outcomes = await outcomes_in_outbox(shard)
    assert len(outcomes) == len(requests), "a command was skipped or applied twice"
    assert {o.transfer_id: o.result for o in outcomes} == expected
    balances = {
        r["id"]: (r["d"], r["c"])
        for r in await shard.fetch("select id, debits_posted_minor d, credits_posted_minor c from accounts")
    }
    assert balances == {a.id: (a.debits_posted_minor, a.credits_posted_minor) for a in reference.accounts.values()}
    report = await verify(shard)
    assert report.passed, report.render()
