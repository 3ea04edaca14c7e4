"""The event store's schema: numbered migrations and the SQL dialect they are written in.

This module is the only place that knows the tables. Each migration is applied once, in
order, inside one transaction, and recorded in ``schema_version``; a database written by
a newer soundwatch (a higher version than :data:`MIGRATIONS` knows) is refused.

The SQL is portable between SQLite and PostgreSQL except for what :class:`Dialect` holds
(the placeholder and the auto-increment key), so adding a PostgreSQL backend means a
second :class:`Dialect` and a connection factory, not a second schema.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL engines the schema is written for."""

    name: str
    placeholder: str
    serial_key: str

    def sql(self, statement: str) -> str:
        """``statement`` (written with ``?`` placeholders and ``{serial_key}``) in this
        dialect."""
        return statement.replace("{serial_key}", self.serial_key).replace("?", self.placeholder)


SQLITE = Dialect("sqlite", "?", "INTEGER PRIMARY KEY AUTOINCREMENT")
# Not wired yet: kept to show that PostgreSQL needs only this and a connection.
POSTGRESQL = Dialect("postgresql", "%s", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


# Times are seconds since the epoch (UTC), as floating point.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "machines, clips, scores, alerts",
        (
            """CREATE TABLE machines (
                name TEXT PRIMARY KEY,
                machine_type TEXT,
                machine_id TEXT,
                model_path TEXT,
                model_digest TEXT,
                registered_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            # key: 'sha256:<hex>' for a file, 'stream:<source>@<offset>' for a window.
            """CREATE TABLE clips (
                key TEXT PRIMARY KEY,
                path TEXT,
                source TEXT,
                stream_offset BIGINT,
                duration DOUBLE PRECISION,
                sample_rate INTEGER,
                recorded_at DOUBLE PRECISION,
                ingested_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE scores (
                clip_key TEXT NOT NULL,
                machine TEXT NOT NULL,
                machine_id TEXT,
                score DOUBLE PRECISION,
                threshold DOUBLE PRECISION,
                threshold_source TEXT,
                decision INTEGER,
                model_digest TEXT,
                warnings TEXT,
                error TEXT,
                scored_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (clip_key, machine)
            )""",
            "CREATE INDEX scores_machine_time ON scores (machine, scored_at)",
            "CREATE INDEX scores_time ON scores (scored_at)",
            """CREATE TABLE alerts (
                id {serial_key},
                machine TEXT NOT NULL,
                rule TEXT NOT NULL,
                reason TEXT NOT NULL,
                opened_at DOUBLE PRECISION NOT NULL,
                closed_at DOUBLE PRECISION,
                close_reason TEXT
            )""",
            "CREATE INDEX alerts_machine ON alerts (machine, opened_at)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

SCHEMA_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""
