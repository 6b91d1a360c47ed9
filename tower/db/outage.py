"""What a database outage looks like from asyncpg: one definition for every layer.

Loops that must outlive a PostgreSQL restart (housekeeping rounds, the LISTEN
connection, health checks, the gateway's token checks) catch DATABASE_ERRORS; writes
that are retried (an owner's fenced writes, log chunks) retry only CONNECTION_ERRORS,
since a statement the database refuses will be refused again.
"""

from __future__ import annotations

import asyncpg

# Anything a round trip to the database can raise when it is down, restarting or slow.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

# The connection, not the statement, failed, or the transaction lost a conflict
# (deadlock, serialization): the same write may succeed on retry.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.TransactionRollbackError,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
