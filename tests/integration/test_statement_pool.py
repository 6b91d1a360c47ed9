"""The statement pool skips asyncpg's reset query but never hands out an open transaction."""

from __future__ import annotations

from tower.db.pool import create_statement_pool


async def test_a_transaction_left_open_is_rolled_back_on_release(database_url: str) -> None:
    pool = await create_statement_pool(database_url, size=1)
    try:
        async with pool.acquire() as connection:
            await connection.execute("CREATE TABLE IF NOT EXISTS left_open (n int)")
            await connection.execute("BEGIN")
            await connection.execute("INSERT INTO left_open VALUES (1)")
        async with pool.acquire() as connection:  # the same connection: the pool holds one
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT count(*) FROM left_open") == 0
    finally:
        await pool.close()


async def test_session_settings_outlive_a_release_so_the_pool_is_for_statements_only(
    database_url: str,
) -> None:
    # The documented trade: no RESET ALL on release. Whoever needs session state must
    # use the main pool, whose connections are fully reset.
    pool = await create_statement_pool(database_url, size=1)
    try:
        async with pool.acquire() as connection:
            await connection.execute("SET application_name = 'left-behind'")
        async with pool.acquire() as connection:
            assert await connection.fetchval("SHOW application_name") == "left-behind"
    finally:
        await pool.close()
