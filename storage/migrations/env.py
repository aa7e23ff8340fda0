"""Alembic environment for charbot's schema.

The bot runs migrations itself (`storage.open_database`), handing us a connection
that is already inside a transaction; everything then commits or rolls back as one.
For writing a new migration from the repository root:

    alembic -c storage/migrations/alembic.ini -x url=sqlite:///data/charbot.sqlite3 \\
        revision --autogenerate --rev-id 0002 -m "add training runs"
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from storage.database import Database
from storage.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write our UTC timestamp type as the plain column type it stores as."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can alter little in place; batch mode rebuilds tables
        render_item=render_item,
        compare_type=True,
        **kwargs,
    )


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database with -x url=... (any SQLAlchemy URL)")
    return url


def run_on(connection: Connection) -> None:
    # SQLite DDL is transactional once BEGIN is ours (see storage.database).
    transactional_ddl = True if connection.dialect.name == "sqlite" else None
    configure(connection=connection, transactional_ddl=transactional_ddl)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    db = Database(database_url())
    try:
        with db.migration_connection() as connection:
            run_on(connection)
    finally:
        db.dispose()


def run_migrations_offline() -> None:
    configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
