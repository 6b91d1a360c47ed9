"""Database access: the asyncpg pool, the schema, migrations and the embedded server."""
