"""Which PostgreSQL errors the payment worker answers as 503 (retry) rather than as a bug."""

import asyncpg

from payplane.adapters.payments_store import is_transient


def test_outages_restarts_and_rollbacks_are_transient_bugs_are_not() -> None:
    transient = [
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    ]
    bugs = [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedColumnError("column does not exist"),
        asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range"),
    ]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in bugs] == [False] * len(bugs)
