"""Alembic environment. ``persistence.migrate.migrate`` hands in an open connection through
``config.attributes["connection"]``; the ``alembic`` command line (with ``-x url=…``) works
too, for writing new revisions."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from persistence.database import engine_for
from persistence.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    # Batch mode lets later revisions alter tables on SQLite, which has almost no ALTER TABLE.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def url() -> str:
    given = context.get_x_argument(as_dictionary=True).get("url")
    return given or config.get_main_option("sqlalchemy.url") or "sqlite:///meterwerk.db"


connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(url=url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    run(connection)
else:
    engine = engine_for(url())
    try:
        with engine.connect() as opened:
            run(opened)
            opened.commit()
    finally:
        engine.dispose()
