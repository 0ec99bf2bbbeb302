"""Where a rail's payments are settled: in the payment worker (PAYPLANE_SETTLEMENT=in-process, the
default) or by ``payplane payment-settler`` beside it (``separate``); and the settler's own configuration."""

import pytest

from payplane.services import payment_settler, payment_worker
from payplane.services.entry import ConfigError

WORKER_ENV = {
    "PAYPLANE_PAYMENTS_DSN": "postgresql://p",
    "KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "PAYPLANE_RAIL": "card-eur",
    "PAYPLANE_ALLOWED_CALLERS": "spiffe://td/gw",
}


def test_a_worker_settles_in_process_unless_told_a_settler_runs_beside_it() -> None:
    assert payment_worker.config_from_env(WORKER_ENV).settle_in_process is True
    in_process = {**WORKER_ENV, "PAYPLANE_SETTLEMENT": "in-process"}
    assert payment_worker.config_from_env(in_process).settle_in_process is True
    separate = {**WORKER_ENV, "PAYPLANE_SETTLEMENT": "separate"}
    assert payment_worker.config_from_env(separate).settle_in_process is False


def test_an_unknown_settlement_mode_is_refused_with_the_variable_named() -> None:
    with pytest.raises(ConfigError, match="PAYPLANE_SETTLEMENT must be 'in-process' or 'separate'"):
        payment_worker.config_from_env({**WORKER_ENV, "PAYPLANE_SETTLEMENT": "elsewhere"})


def test_the_settler_reads_its_database_kafka_rail_and_metrics_port() -> None:
    config = payment_settler.config_from_env(
        {**WORKER_ENV, "PAYPLANE_LEDGER_PARTITION_COUNT": "8", "PAYPLANE_METRICS_PORT": "9091"}
    )
    assert (config.dsn, config.bootstrap, config.rail) == ("postgresql://p", "127.0.0.1:9092", "card-eur")
    assert (config.partition_count, config.metrics_port, config.bind_address) == (8, 9091, "127.0.0.1")


def test_the_settler_names_what_is_missing_or_malformed() -> None:
    with pytest.raises(ConfigError, match="PAYPLANE_PAYMENTS_DSN, KAFKA_BOOTSTRAP"):
        payment_settler.config_from_env({"PAYPLANE_RAIL": "card-eur"})
    with pytest.raises(ConfigError, match="invalid configuration"):
        payment_settler.config_from_env({**WORKER_ENV, "PAYPLANE_METRICS_PORT": "nine"})
