"""Bring a database to the newest schema: ``migrate(url)`` runs Alembic's ``upgrade head``.

No ``alembic.ini`` is needed: the configuration is built here, pointing at the migrations
inside the package. Every host calls this when it starts, so concurrent calls are serialised:
by an advisory lock on Postgres, by a lock file beside the database on SQLite. A database
already at the newest revision is left as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from persistence.database import engine_for, is_file_sqlite

SCRIPT_LOCATION: Final = Path(__file__).parent / "migrations"
ADVISORY_LOCK_KEY: Final = 0x6D65746572  # "meter": one number every meterwerk process agrees on


def alembic_config() -> Config:
    config = Config()
    # Config values go through ConfigParser interpolation, where '%' is special.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None, "no migrations found"
    return revision


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def migrate(url: str) -> None:
    engine = engine_for(url)
    try:
        with _sqlite_file_lock(engine), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    url = make_url(engine.url)
    if not is_file_sqlite(url):
        yield
        return
    lock_path = Path(f"{url.database}.migrate.lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
