"""PostgreSQL access: connections and versioned schema migrations.

Migrations are the numbered `.sql` files in `lib/migrations/`, applied in order on first use
and recorded in `schema_migrations`. An advisory lock makes two processes that start at once
take turns, so each file runs exactly once. All queries elsewhere pass values as parameters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.extras

from lib.errors import NeedsAction

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every process of this project.
MIGRATION_LOCK_KEY = 7_319_001
_migrated: set[str] = set()


class DatabaseError(RuntimeError):
    """The database cannot be reached or a migration failed; the message says which."""


class DatabaseRefused(DatabaseError, NeedsAction):
    """The server answered and refused the login or the database: DATABASE_URL must change."""


# How PostgreSQL words a refusal that no retry changes (it sends no SQLSTATE before a session exists).
_REFUSALS = ("authentication failed", "no password supplied", "does not exist", "no pg_hba.conf entry")


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", url)


def connect(database_url: str, retries: int = 0, delay: float = 1.0):
    """Open a connection; retry `retries` times on connection failures, then fail clearly."""
    for attempt in range(retries + 1):
        try:
            return psycopg2.connect(database_url, connect_timeout=5)
        except psycopg2.OperationalError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if any(refusal in reason for refusal in _REFUSALS):
                raise DatabaseRefused(f"PostgreSQL at {_redact(database_url)} refused the connection: {reason}; "
                                      "check DATABASE_URL in .env") from error
            if attempt == retries:
                raise DatabaseError(f"cannot connect to PostgreSQL at {_redact(database_url)}: {reason}") from error
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", path.name)
        if not match:
            raise DatabaseError(f"migration file {path.name} must be named NNN_description.sql")
        found.append((int(match[1]), match[2], path.read_text()))
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migration files share a version number in {MIGRATIONS_DIR}")
    return found


def migrate(conn) -> list[int]:
    """Apply the migrations this database has not seen yet; return the versions applied."""
    applied_now = []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        for version, name, sql in migrations():
            if version in done:
                continue
            try:
                cur.execute(sql)
            except psycopg2.Error as error:
                raise DatabaseError(f"migration {version:03d}_{name}.sql failed: {error}".strip()) from error
            cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
    return applied_now


@contextmanager
def session(database_url: str, retries: int = 0) -> Iterator:
    """A migrated connection that commits on success and rolls back on error."""
    conn = connect(database_url, retries=retries)
    try:
        if database_url not in _migrated:
            migrate(conn)
            _migrated.add(database_url)
        with conn:
            yield conn
    finally:
        conn.close()


def fetch_dicts(conn, query: str, params: tuple | dict = ()) -> list[dict]:
    """Run a parameterised query and return its rows as dicts."""
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(query, params)
        return [dict(row) for row in cur.fetchall()]


def fetch_tuples(conn, query: str, params: tuple | dict = ()) -> list[tuple]:
    """Run a parameterised query and return its rows as tuples (thousands of rows: a dict per row is slow)."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()
