"""Alembic environment: uses the engine handed over by opencbr.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine, create_engine

from opencbr.db.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        return engine
    return create_engine(config.get_main_option("sqlalchemy.url") or "")


def run_migrations() -> None:
    engine = _engine()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # Batch mode rebuilds a SQLite table to alter it (copy, drop, rename); with
            # foreign keys enforced, dropping `vaults` would cascade into every child row
            # (backups, tags, ...). The pragma only takes effect outside a transaction, so
            # it goes to the driver's connection (autocommit) before SQLAlchemy begins one.
            _driver_pragma(connection, "PRAGMA foreign_keys=OFF")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if dangling:
                    raise RuntimeError(f"migration left rows without their parent: {dangling}")
        connection.commit()
        if sqlite:
            _driver_pragma(connection, "PRAGMA foreign_keys=ON")  # back to the pool as it was


def _driver_pragma(connection: Connection, pragma: str) -> None:
    driver = connection.connection.dbapi_connection
    assert driver is not None
    driver.execute(pragma)


run_migrations()
