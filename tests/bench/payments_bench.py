"""End-to-end payment benchmark (``make bench-payments``): REST gateway → SPIFFE-mTLS gRPC → payment worker →
outbox → Kafka → ledger writer(s) → outcomes, relayed and applied by a ``payplane payment-settler`` beside
each worker as in the operator's pods (with ``--in-process-settlement``, by the worker), all real processes on the
shared local infrastructure, started by the integration tests' ``rail_stack`` (each workload with its SPIFFE identity).

1. Opens ``--accounts`` external funding sources and as many wallets per client through the API, and
   waits until the ledger has opened them. With ``--history N`` it then creates N payments (closed loop,
   not measured), waits until they settled and runs ``VACUUM ANALYZE`` on both databases: the measured
   runs start on a rail in its steady state. A fresh rail's tables are vacuumed and analysed by
   PostgreSQL's autovacuum every few thousand rows (its thresholds grow with the table: 20 % of the rows
   for a vacuum, 10 % for an analyse), and each such pass is a burst of CPU that lengthens the latency
   tail of the runs it lands in; a rail with 200,000 payments behind it sees none in a 20-s run.
2. **Max rate**: a closed loop of ``--concurrency`` in-flight POST /v1/payments (``http_load``, keep-alive, a fresh
   Idempotency-Key on every POST) for ``--duration-s`` or ``--payments-max`` payments, whichever ends
   first; then waits (bounded) until every accepted payment is settled.
3. **Half rate**: an open loop at half the settled rate of step 2, latency measured from each
   request's scheduled start (no coordinated omission).
   After each run, requests whose first answer was a timeout, 409, 429 or 5xx are retried with the same
   key and body, as clients are told to: a request the gateway gave up on may still have created its
   payment, and the retry must get exactly that one. Latency figures count first answers only.
4. Replays a sample of keys (every answer must be the original payment), runs ``ledger verify`` and
   checks counts: every accepted payment succeeded exactly once in the payments database and has
   exactly one posted transfer in the ledger; nothing else was created.

"Settled" means the payment's status is ``succeeded`` and the ledger holds its transfer;
accept-to-settled is the payment's ``updated_at_us - created_at_us`` (the worker stamps the acceptance,
and the settler, or with ``--in-process-settlement`` the worker, the moment it applied the ledger's
answer). Settled/s is the number settled divided by the time from the first acceptance to the last
settlement, so a ledger that lags the gateway shows up as a lower figure. CPU seconds of every payplane
process (from /proc) are reported per
payment, to show where the time goes. A machine check comes first (``machine_check``): this machine's
speed at round trips and wake-ups moves from hour to hour, and the figures only compare between runs
whose checks agree.
"""

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import uvloop

from payplane.adapters.ledger_verify import verify
from payplane.devinfra.endpoints import read_endpoints
from payplane.devinfra.kubelet.podspec import cpu_request_milli, niceness_for_cpu_request
from payplane.devinfra.settings import load_settings
from payplane.devinfra.spire_cli import SpireServerCli
from payplane.services.entry import GC_GENERATION0_OBJECTS
from payplane_operator.desired.workloads import ACCEPT_PATH_RESOURCES, SETTLE_PATH_RESOURCES
from tests.bench.http_load import HttpLoadClient, HttpProtocolError
from tests.bench.machine_check import check_machine
from tests.integration.payments.rail_stack import PARTITIONS, Client, Procs, rail_stack
from tests.integration.test_spire import Spire

SETTLE_TIMEOUT_S: Final = 120.0
HISTORY_TIMEOUT_S: Final = 600.0  # the history's closed loop stops after this long, however many it made
LEDGER_OPEN_TIMEOUT_S: Final = 60.0
REPLAY_SAMPLE: Final = 200
RETRIES_MAX: Final = 10
RETRY_PAUSE_S: Final = 0.5
AMOUNT_MINOR: Final = 1250
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Layout:
    ledger_writers: int
    payment_workers: int
    gateways: int
    settlers: bool = True  # a payment-settler beside each worker (PAYPLANE_SETTLEMENT=separate), as in the pods
    cpu_weights: bool = True  # each process niced by its container's CPU request, as the process kubelet does


@dataclass
class Rail:
    """The running path: its databases, clients, gateway URLs and the pid of every process by role."""

    payments_dsn: str
    ledger_dsn: str
    clients: list[Client]
    base_urls: list[str]
    pids: dict[str, int]
    log_dir: Path
    infra_state_dir: Path  # the shared infrastructure's (to find its Kafka broker)
    redis_address: str  # host:port of the shared Redis

    @property
    def base_url(self) -> str:
        return self.base_urls[0]


def _spire(endpoints: Mapping[str, str]) -> Spire:
    return Spire(
        cli=SpireServerCli(
            Path(endpoints["PAYPLANE_SPIRE_SERVER_BIN"]), Path(endpoints["PAYPLANE_SPIRE_SERVER_SOCKET"])
        ),
        trust_domain=endpoints["PAYPLANE_SPIRE_TRUST_DOMAIN"],
        node_id=endpoints["PAYPLANE_SPIRE_NODE_ID"],
        endpoint_socket=endpoints["SPIFFE_ENDPOINT_SOCKET"],
    )


def _weigh_cpu_as_the_operators_pods(pids: dict[str, int]) -> None:
    """Each process at the nice value the process kubelet gives its container's CPU request in the
    operator's pods (settlement's below acceptance's), every thread of it."""
    settle = niceness_for_cpu_request(cpu_request_milli({"resources": SETTLE_PATH_RESOURCES}))
    accept = niceness_for_cpu_request(cpu_request_milli({"resources": ACCEPT_PATH_RESOURCES}))
    for name, pid in pids.items():
        niceness = settle if name.startswith(("ledger-writer", "payment-settler")) else accept
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


@asynccontextmanager
async def started_path(endpoints: Mapping[str, str], layout: Layout) -> AsyncIterator[Rail]:
    """A fresh rail: ``layout.ledger_writers`` writers splitting the partitions, payment workers (with
    ``layout.settlers``, each with a settler beside it), and gateways that each balance over every worker;
    no per-client rate limit in the way."""
    procs = Procs()
    async with rail_stack(
        spire=_spire(endpoints),
        procs=procs,
        postgres_dsn=endpoints["PAYPLANE_POSTGRES_DSN"],
        bootstrap=endpoints["KAFKA_BOOTSTRAP"],
        redis_url=endpoints["PAYPLANE_REDIS_URL"],
        prefix="bench",
    ) as stack:
        stack.gateway_env.update({"PAYPLANE_RATE_PER_S": "1000000", "PAYPLANE_RATE_BURST": "1000000"})
        pids: dict[str, int] = {}
        for n in range(layout.ledger_writers):
            owned = ",".join(str(p) for p in range(n, PARTITIONS, layout.ledger_writers))
            pids[f"ledger-writer-{n}"] = stack.spawn_writer(PAYPLANE_LEDGER_PARTITIONS=owned).pid
        worker_ports = []
        for n in range(layout.payment_workers):
            settlement = "separate" if layout.settlers else "in-process"
            proc, port = await asyncio.to_thread(stack.spawn_worker, PAYPLANE_SETTLEMENT=settlement)
            pids[f"payment-worker-{n}"] = proc.pid
            if layout.settlers:  # the worker answers calls, a settler beside it settles
                pids[f"payment-settler-{n}"] = stack.spawn_settler().pid
            worker_ports.append(port)
        targets = ",".join(f"localhost:{port}" for port in worker_ports)
        base_urls = []
        for n in range(layout.gateways):
            proc, port = await asyncio.to_thread(stack.spawn_gateway, worker_ports[0], PAYPLANE_WORKER_TARGETS=targets)
            pids[f"gateway-{n}"] = proc.pid
            base_urls.append(f"http://127.0.0.1:{port}")
        if layout.cpu_weights:
            _weigh_cpu_as_the_operators_pods(pids)
        yield Rail(
            stack.payments_dsn,
            stack.ledger_dsn,
            stack.clients,
            base_urls,
            pids,
            procs.log_dir,
            load_settings().state_dir,
            urlsplit(endpoints["PAYPLANE_REDIS_URL"]).netloc.rsplit("@", 1)[-1],
        )


@dataclass
class Sample:
    key: str
    scheduled_s: float
    done_s: float = 0.0
    status: int = 0
    payment_id: str = ""
    body: bytes = b""
    url: str = ""  # the gateway's base URL
    client: Client | None = None
    recovered: bool = False  # first answer was not 200; a retry with the same key got the payment

    @property
    def accepted(self) -> bool:
        """The client holds a payment for this key (at once, or after retrying as a client should)."""
        return self.status == 200 or self.recovered

    @property
    def latency_s(self) -> float:
        return self.done_s - self.scheduled_s


@dataclass
class RunFigures:
    name: str
    sent: int
    accepted: int
    refused: dict[int, int]  # first answers other than 200, by status (-1: no answer)
    accepted_per_s: float
    accept_p50_ms: float
    accept_p99_ms: float
    recovered_by_retry: int = 0
    settled: int = 0
    settled_per_s: float = 0.0
    settle_p50_ms: float = 0.0
    settle_p99_ms: float = 0.0
    to_ledger_p50_p99_ms: tuple[float, float] = (0.0, 0.0)
    ledger_to_settled_p50_p99_ms: tuple[float, float] = (0.0, 0.0)
    cpu_ms_per_payment: dict[str, float] = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- CPU accounting -----------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (and its reaped children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def _processes() -> dict[int, str]:
    """Every process's command line (arguments joined by spaces), by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return found


def _machine_busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


CpuSnapshot = dict[str, dict[int, float]]  # what -> pid -> CPU seconds so far


def cpu_snapshot(rail: Rail) -> CpuSnapshot:
    """CPU seconds so far of the rail's processes by role, of the PostgreSQL backends serving the rail's
    databases (the server is shared: its background writers, which flush everyone's WAL, are not counted),
    of the shared Kafka broker and Redis (other users' work included), and of the whole machine."""
    snapshot: CpuSnapshot = {}
    for name, pid in rail.pids.items():
        snapshot.setdefault(name.rsplit("-", 1)[0], {})[pid] = _cpu_s(pid)
    own = resource.getrusage(resource.RUSAGE_SELF)
    snapshot["load-generator"] = {os.getpid(): own.ru_utime + own.ru_stime}
    databases = {
        rail.payments_dsn.rsplit("/", 1)[1]: "postgres (payments database)",
        rail.ledger_dsn.rsplit("/", 1)[1]: "postgres (ledger database)",
    }
    shared: CpuSnapshot = {what: {} for what in databases.values()}
    shared |= {"kafka (shared broker)": {}, "redis (shared)": {}}
    for pid, cmdline in _processes().items():
        words = cmdline.split()
        if len(words) > 2 and words[0] == "postgres:" and words[2] in databases:
            shared[databases[words[2]]][pid] = _cpu_s(pid)
        elif "java" in cmdline and f"{rail.infra_state_dir}/kafka/" in cmdline:
            shared["kafka (shared broker)"][pid] = _cpu_s(pid)
        elif words and words[0].endswith("redis-server") and rail.redis_address in cmdline:
            shared["redis (shared)"][pid] = _cpu_s(pid)
    snapshot |= shared
    snapshot["machine (2 cores, everyone's work)"] = {-1: _machine_busy_s()}
    return snapshot


def cpu_per_payment(before: CpuSnapshot, after: CpuSnapshot, payments: int) -> dict[str, float]:
    """Milliseconds of CPU per payment, over the processes alive at both snapshots (a restarted shared
    server's new process is left out rather than counted from zero)."""
    per_payment = {}
    for what, pids in after.items():
        earlier = before.get(what, {})
        used_s = sum(cpu_s - earlier[pid] for pid, cpu_s in pids.items() if pid in earlier)
        per_payment[what] = round(used_s / max(payments, 1) * 1000, 3)
    return per_payment


# --- set-up -------------------------------------------------------------------------------------------


async def _post(
    http: aiohttp.ClientSession, url: str, client: Client, body: dict[str, Any], key: str
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {client.key}", "Idempotency-Key": key}
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def open_accounts(
    http: aiohttp.ClientSession, rail: Rail, per_client: int
) -> list[tuple[Client, list[tuple[str, str]]]]:
    """Per client: ``per_client`` (external source, wallet) pairs, opened in the ledger."""
    pairs: list[tuple[Client, list[tuple[str, str]]]] = []
    every_id: list[str] = []
    for client in rail.clients:
        ids: dict[str, list[str]] = {"external": [], "wallet": []}
        for account_type, n in itertools.product(ids, range(per_client)):
            status, answer = await _post(
                http,
                rail.base_url + "/v1/accounts",
                client,
                {"currency": "EUR", "type": account_type},
                f"bench-acct-{account_type}-{n}-{uuid.uuid4().hex}",
            )
            if status != 200:
                raise RuntimeError(f"account creation answered {status}: {answer}")
            ids[account_type].append(answer["id"])
        pairs.append((client, list(zip(ids["external"], ids["wallet"], strict=True))))
        every_id += ids["external"] + ids["wallet"]
    conn = await asyncpg.connect(rail.ledger_dsn)
    try:
        deadline = time.monotonic() + LEDGER_OPEN_TIMEOUT_S
        while await conn.fetchval("select count(*) from accounts where id = any($1::text[])", every_id) < len(every_id):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ledger did not open {len(every_id)} accounts within {LEDGER_OPEN_TIMEOUT_S} s")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return pairs


class Requests:
    """Payment requests spread over clients, account pairs and gateway replicas."""

    def __init__(self, rail: Rail, pairs: list[tuple[Client, list[tuple[str, str]]]], run: str) -> None:
        self.rail = rail
        self.choices = [(client, pair) for client, client_pairs in pairs for pair in client_pairs]
        self.urls = itertools.cycle(rail.base_urls)
        self.run = run
        self.rng = random.Random(7)
        self.count = 0

    def next(self, scheduled_s: float) -> Sample:
        client, (source, wallet) = self.rng.choice(self.choices)
        self.count += 1
        body = {"amount": AMOUNT_MINOR, "currency": "EUR", "source": source, "destination": wallet}
        return Sample(
            key=f"bench-{self.run}-{self.count}",
            scheduled_s=scheduled_s,
            body=json.dumps(body).encode(),
            url=next(self.urls),
            client=client,
        )


class LoadClients:
    """One lean keep-alive HTTP client per gateway (``http_load``: the load generator's own CPU per request
    counts against the machine the benchmark measures)."""

    def __init__(self, base_urls: Sequence[str]) -> None:
        self.by_url: dict[str, HttpLoadClient] = {}
        for url in base_urls:
            parts = urlsplit(url)
            assert parts.hostname is not None
            assert parts.port is not None
            self.by_url[url] = HttpLoadClient(parts.hostname, parts.port)

    def close(self) -> None:
        for client in self.by_url.values():
            client.close()


async def send(http: LoadClients, sample: Sample) -> None:
    assert sample.client is not None
    headers = {
        "Authorization": f"Bearer {sample.client.key}",
        "Idempotency-Key": sample.key,
        "Content-Type": "application/json",
    }
    try:
        sample.status, raw = await http.by_url[sample.url].post("/v1/payments", headers, sample.body)
    except (OSError, HttpProtocolError, TimeoutError):
        sample.status = -1
        raw = b""
    sample.done_s = time.perf_counter()
    if sample.status == 200:
        sample.payment_id = json.loads(raw)["id"]


# --- the two load shapes ------------------------------------------------------------------------------


async def closed_loop(
    http: LoadClients, requests: Requests, concurrency: int, duration_s: float, count_max: int
) -> list[Sample]:
    samples: list[Sample] = []
    stop_at = time.perf_counter() + duration_s

    async def lane() -> None:
        while time.perf_counter() < stop_at and len(samples) < count_max:
            sample = requests.next(time.perf_counter())
            samples.append(sample)
            await send(http, sample)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return samples


async def open_loop(http: LoadClients, requests: Requests, rate_per_s: float, duration_s: float) -> list[Sample]:
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    total = int(rate_per_s * duration_s)
    for n in range(total):
        scheduled = start + n / rate_per_s
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sample = requests.next(scheduled)
        samples.append(sample)
        task = asyncio.create_task(send(http, sample))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return samples


def write_samples(path: Path, samples: Sequence[Sample]) -> None:
    """One line per request of the open loop: seconds since its start, latency in ms, status (to see when
    the slow ones happened), after a first line ``# <Unix time of the first request>`` (to line them up
    with the processes' logs)."""
    start_s = samples[0].scheduled_s if samples else 0.0
    lines = (f"{s.scheduled_s - start_s:.4f} {s.latency_s * 1000:.2f} {s.status}" for s in samples)
    path.write_text(f"# {time.time() - time.perf_counter() + start_s:.3f}\n" + "\n".join(lines) + "\n")


def quiet_collector() -> None:
    """Keep the load generator's own garbage collections out of the latencies it measures: what exists
    before a run is frozen, and the youngest generation is collected rarely, as in the workloads (a
    full collection over the samples took 47 ms, and every request in flight would have waited)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GENERATION0_OBJECTS, *gc.get_threshold()[1:])


# --- read-back ----------------------------------------------------------------------------------------


async def make_history(
    http: LoadClients, rail: Rail, requests: Requests, payments: int, concurrency: int
) -> list[Sample]:
    """``payments`` payments before the measured runs (see the module's docstring), settled, then both
    databases vacuumed and analysed."""
    started_s = time.monotonic()
    samples = await closed_loop(http, requests, concurrency, HISTORY_TIMEOUT_S, payments)
    quiet_collector()
    await retry_unanswered(http, samples)
    await settle(rail, [s.payment_id for s in samples if s.accepted])
    for dsn in (rail.payments_dsn, rail.ledger_dsn):
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("vacuum analyze")
        finally:
            await conn.close()
    print(
        f"history: {len(samples):,} payments, settled and vacuumed in {time.monotonic() - started_s:.0f} s", flush=True
    )
    return samples


async def settle(rail: Rail, payment_ids: list[str]) -> list[asyncpg.Record]:
    """Wait (bounded) until every payment has left ``processing``; returns their rows."""
    conn = await asyncpg.connect(rail.payments_dsn)
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            rows = await conn.fetch(
                "select id, status, created_at_us, updated_at_us from payments where id = any($1::text[])", payment_ids
            )
            pending = sum(1 for r in rows if r["status"] == "processing")
            if (pending == 0 and len(rows) == len(payment_ids)) or time.monotonic() > deadline:
                return list(rows)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def ledger_applied_at_us(rail: Rail, payment_ids: list[str]) -> dict[str, int]:
    """When the ledger applied each payment's posted transfer (the first leg when it crosses partitions)."""
    conn = await asyncpg.connect(rail.ledger_dsn)
    try:
        rows = await conn.fetch(
            "select id, applied_at_us from transfers where id = any($1::text[]) and mode = 'posted'", payment_ids
        )
    finally:
        await conn.close()
    return {r["id"]: r["applied_at_us"] for r in rows}


async def retry_unanswered(http: LoadClients, samples: list[Sample]) -> int:
    """Retry, with the same key and body, every request whose first answer was a timeout, 409, 429 or 5xx
    (what a client is told to do); returns how many got their payment that way."""
    recovered = 0
    for sample in samples:
        if sample.status == 200 or (400 <= sample.status < 500 and sample.status not in (409, 429)):
            continue
        for _ in range(RETRIES_MAX):
            again = Sample(sample.key, 0.0, body=sample.body, url=sample.url, client=sample.client)
            await send(http, again)
            if again.status == 200:
                sample.payment_id, sample.recovered = again.payment_id, True
                recovered += 1
                break
            await asyncio.sleep(RETRY_PAUSE_S)
    return recovered


async def figures(
    name: str, rail: Rail, http: LoadClients, samples: list[Sample], cpu_before: CpuSnapshot
) -> RunFigures:
    accepted = [s for s in samples if s.status == 200]
    refused: dict[int, int] = {}
    for s in samples:
        if s.status != 200:
            refused[s.status] = refused.get(s.status, 0) + 1
    first = min(s.scheduled_s for s in samples)
    last = max(s.done_s for s in samples)
    latencies = [s.latency_s * 1000 for s in accepted]
    result = RunFigures(
        name=name,
        sent=len(samples),
        accepted=len(accepted),
        refused=refused,
        accepted_per_s=len(accepted) / (last - first),
        accept_p50_ms=percentile(latencies, 0.50),
        accept_p99_ms=percentile(latencies, 0.99),
    )
    result.cpu_ms_per_payment = cpu_per_payment(cpu_before, cpu_snapshot(rail), len(accepted))
    result.recovered_by_retry = await retry_unanswered(http, samples)
    ids = [s.payment_id for s in samples if s.accepted]
    rows = await settle(rail, ids)
    result.load_average = os.getloadavg()
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    in_ledger = await ledger_applied_at_us(rail, ids)
    result.settled = sum(1 for r in succeeded if r["id"] in in_ledger)
    if succeeded:
        span_us = max(r["updated_at_us"] for r in succeeded) - min(r["created_at_us"] for r in succeeded)
        result.settled_per_s = result.settled / (span_us / 1e6)
        settle_ms = [(r["updated_at_us"] - r["created_at_us"]) / 1000 for r in succeeded]
        result.settle_p50_ms = percentile(settle_ms, 0.50)
        result.settle_p99_ms = percentile(settle_ms, 0.99)
        # the two halves: acceptance → the ledger's decision, and the decision → the payment settled
        to_ledger_ms = [(in_ledger[r["id"]] - r["created_at_us"]) / 1000 for r in succeeded if r["id"] in in_ledger]
        back_ms = [(r["updated_at_us"] - in_ledger[r["id"]]) / 1000 for r in succeeded if r["id"] in in_ledger]
        result.to_ledger_p50_p99_ms = (percentile(to_ledger_ms, 0.50), percentile(to_ledger_ms, 0.99))
        result.ledger_to_settled_p50_p99_ms = (percentile(back_ms, 0.50), percentile(back_ms, 0.99))
    return result


async def replays_match(http: LoadClients, samples: list[Sample]) -> bool:
    """The same key and body again must answer the very same payment, marked as a replay."""
    accepted = [s for s in samples if s.accepted]
    for original in random.Random(3).sample(accepted, min(REPLAY_SAMPLE, len(accepted))):
        again = Sample(original.key, 0.0, body=original.body, url=original.url, client=original.client)
        await send(http, again)
        if again.status != 200 or again.payment_id != original.payment_id:
            print(f"replay of {original.key} answered {again.status} {again.payment_id!r}", file=sys.stderr)
            return False
    return True


async def books_balance(rail: Rail, accepted_ids: list[str]) -> tuple[bool, str]:
    """``ledger verify`` passes, and payments ↔ ledger transfers are one to one, nothing extra."""
    ledger = await asyncpg.connect(rail.ledger_dsn)
    payments = await asyncpg.connect(rail.payments_dsn)
    try:
        report = await verify(ledger)
        ledger_payments = await ledger.fetchval(
            "select count(*) from transfers where kind = 'payment' and id not like '%~%'"
        )
        payment_rows = await payments.fetchval("select count(*) from payments")
        succeeded = await payments.fetchval("select count(*) from payments where status = 'succeeded'")
    finally:
        await ledger.close()
        await payments.close()
    unique = len(set(accepted_ids))
    counts = (
        f"accepted={unique} payments={payment_rows} succeeded={succeeded} ledger_payment_transfers={ledger_payments}"
    )
    ok = report.passed and unique == len(accepted_ids) == payment_rows == succeeded == ledger_payments
    return ok, ("ledger verify: ok" if report.passed else report.render()) + "; " + counts


# --- main ---------------------------------------------------------------------------------------------


def print_figures(f: RunFigures) -> None:
    print(
        f"{f.name}: sent={f.sent} accepted={f.accepted} refused={f.refused} (recovered by retry: "
        f"{f.recovered_by_retry}) accepted/s={f.accepted_per_s:,.0f}"
        f" accept p50={f.accept_p50_ms:.1f} ms p99={f.accept_p99_ms:.1f} ms | settled={f.settled}"
        f" settled/s={f.settled_per_s:,.0f} accept→settled p50={f.settle_p50_ms:.0f} ms p99={f.settle_p99_ms:.0f} ms"
        f" (accept→ledger p50/p99 {f.to_ledger_p50_p99_ms[0]:.0f}/{f.to_ledger_p50_p99_ms[1]:.0f} ms,"
        f" ledger→settled {f.ledger_to_settled_p50_p99_ms[0]:.0f}/{f.ledger_to_settled_p50_p99_ms[1]:.0f} ms)"
        f" | load average {f.load_average[0]:.2f}",
        flush=True,
    )
    print(f"  CPU ms per payment: {json.dumps(f.cpu_ms_per_payment)}", flush=True)


async def main(args: argparse.Namespace) -> int:
    endpoints = read_endpoints(load_settings().endpoints_file)
    layout = Layout(
        ledger_writers=args.writers,
        payment_workers=args.workers,
        gateways=args.gateways,
        settlers=not args.in_process_settlement,
        cpu_weights=not args.equal_cpu_weights,
    )
    print(check_machine().render(), flush=True)  # to read the figures against another day's
    print(
        f"layout: {args.writers} ledger writer(s) over {PARTITIONS} partitions, {args.workers} payment worker(s)"
        f"{' (each with a settler)' if layout.settlers else ' (settling in-process)'},"
        f"{' CPU weighed by request,' if layout.cpu_weights else ' equal CPU weights,'}"
        f" {args.gateways} gateway(s); 2 clients x {args.accounts} account pairs;"
        f" load average before {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        started_path(endpoints, layout) as rail,
        aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as setup_http,
    ):
        pairs = await open_accounts(setup_http, rail, args.accounts)
        http = LoadClients(rail.base_urls)
        warm = await closed_loop(http, Requests(rail, pairs, "warm"), 8, 5.0, args.warmup)
        quiet_collector()
        await retry_unanswered(http, warm)
        await settle(rail, [s.payment_id for s in warm if s.accepted])
        if args.history:
            warm += await make_history(http, rail, Requests(rail, pairs, "history"), args.history, args.concurrency)
        runs: list[RunFigures] = []
        peak_samples: list[Sample] = []
        if args.open_rate_per_s:
            half_rate = args.open_rate_per_s
        else:
            cpu_before = cpu_snapshot(rail)
            peak_samples = await closed_loop(
                http, Requests(rail, pairs, "max"), args.concurrency, args.duration_s, args.payments_max
            )
            peak = await figures("max rate (closed loop)", rail, http, peak_samples, cpu_before)
            quiet_collector()
            print_figures(peak)
            runs.append(peak)
            half_rate = max(1.0, (peak.settled_per_s or peak.accepted_per_s) / 2)
        cpu_before = cpu_snapshot(rail)
        half_samples = await open_loop(http, Requests(rail, pairs, "half"), half_rate, args.duration_s)
        name = "open loop (" if args.open_rate_per_s else "half rate (open loop"
        half = await figures(f"{name}, {half_rate:,.0f}/s)", rail, http, half_samples, cpu_before)
        print_figures(half)
        runs.append(half)
        if args.samples_out:
            write_samples(Path(args.samples_out), half_samples)
        every = warm + peak_samples + half_samples
        replays_ok = await replays_match(http, every)
        books_ok, books = await books_balance(rail, [s.payment_id for s in every if s.accepted])
        print(f"idempotent replays: {'ok' if replays_ok else 'FAILED'}; {books}", flush=True)
        print(f"process logs: {rail.log_dir}", flush=True)
        http.close()
    if args.json:
        print(json.dumps([run.__dict__ for run in runs]))
    return 0 if replays_ok and books_ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=20.0, help="length of each measured run")
    parser.add_argument("--payments-max", type=int, default=100_000, help="cap on the max-rate run's payments")
    parser.add_argument("--concurrency", type=int, default=128, help="in-flight requests in the max-rate run")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--history", type=int, default=0, help="payments made (and the databases vacuumed) before measuring"
    )
    parser.add_argument("--writers", type=int, choices=range(1, PARTITIONS + 1), default=1, help="ledger writers")
    parser.add_argument("--workers", type=int, default=1, help="payment worker processes")
    parser.add_argument("--gateways", type=int, default=1, help="gateway processes")
    parser.add_argument(
        "--in-process-settlement",
        action="store_true",
        help="each worker settles its payments itself (PAYPLANE_SETTLEMENT=in-process) instead of a"
        " payplane payment-settler beside it, as the operator's pods run them",
    )
    parser.add_argument(
        "--equal-cpu-weights",
        action="store_true",
        help="every process at nice 0 instead of the nice values the process kubelet gives the operator's"
        " containers by their CPU requests (settlement's lower than acceptance's)",
    )
    parser.add_argument("--accounts", type=int, default=16, help="account pairs per client")
    parser.add_argument(
        "--open-rate-per-s", type=float, default=0.0, help="skip the max-rate run; run the open loop at this rate"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--samples-out", default="", help="write the open loop's requests (start, latency) here")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main(parser.parse_args())))
