"""A writer's lag per partition (log end minus committed offset) and the ``/status`` it serves."""

import asyncio
from typing import Any

from payplane.ledger.writer import LedgerWriter
from payplane.platform.metrics import LedgerWriterMetrics
from payplane.services.ledger_writer import WriterConfig, writer_status


class _Store:
    async def claim(self, partitions: list[int], writer_id: str) -> dict[int, int]:
        return dict.fromkeys(partitions, 1)

    async def positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return {0: 10, 1: 0, 2: 7}


class _Log:
    def __init__(self) -> None:
        self.ends: dict[int, int | None] = {0: 25, 1: 0, 2: None}

    async def seek(self, positions: dict[int, int]) -> None:
        pass

    def end_offset(self, partition: int) -> int | None:
        return self.ends[partition]


def _writer(log: _Log) -> LedgerWriter:
    store: Any = _Store()
    return LedgerWriter(topic="t", partitions=[0, 1, 2], writer_id="w", store=store, log_=log, partition_of=lambda _: 0)  # type: ignore[arg-type]


def test_lag_is_the_log_end_minus_the_committed_offset() -> None:
    log = _Log()
    writer = _writer(log)
    asyncio.run(writer.start())
    assert writer.lag() == {0: 15, 1: 0}  # partition 2's end is not known yet: left out
    log.ends[2] = 7
    writer.committed_offsets[0] = 25
    assert writer.lag() == {0: 0, 1: 0, 2: 0}


def test_the_status_reports_the_lag_of_the_partitions_this_writer_owns() -> None:
    metrics = LedgerWriterMetrics()
    metrics.consumer_lag(3, 40)
    metrics.consumer_lag(2, 0)
    metrics.consumer_lag(5, 9)
    writer = _writer(_Log())
    writer.partitions = [2, 3]  # the writer's share of the shard's partitions 2-5
    config = WriterConfig("dsn", "kafka", "card-eur", [2, 3, 4, 5], 8, "writer-a", 2000, 9090)
    status = writer_status(config, writer, metrics)
    assert status == {
        "role": "ledger-writer",
        "rail": "card-eur",
        "writerId": "writer-a",
        "partitions": [2, 3, 4, 5],
        "owned": [2, 3],
        "lagRecords": {"2": 0, "3": 40},
    }
    assert metrics.registry.get_sample_value("payplane_ledger_consumer_lag_records", {"partition": "3"}) == 40
    metrics.owned([2, 3])  # partition 5 went to another writer: no longer reported here
    assert metrics.lag_by_partition == {3: 40, 2: 0}
    assert metrics.registry.get_sample_value("payplane_ledger_consumer_lag_records", {"partition": "5"}) is None
