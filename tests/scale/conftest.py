"""Real services for the scale tests: a throwaway PostgreSQL server and a local Ray cluster.

PostgreSQL: Debian's ``postgresql`` package (``apt-get install -y postgresql``). The
server is initialised in a temporary folder, listens on 127.0.0.1 on a free port and a
socket in that folder, runs as the ``postgres`` user when the tests run as root
(initdb refuses root), and is stopped and removed at teardown. Without the binaries the
tests are skipped, except under CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_ROOTS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)


def _pg_bindir() -> Path | None:
    for candidate in PG_ROOTS:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server: ``uri(database)`` creates the database and returns its SQLAlchemy URI."""

    port: int
    user: str

    def uri(self, database: str) -> str:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = _pg_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (apt-get install -y postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="govml-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log, port = root / "data", root / "server.log", _free_port()
    run: dict[str, Any] = {"check": True, "capture_output": True, "text": True, "timeout": 180}
    try:
        subprocess.run(
            _as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "govml", "--auth=trust", "-E", "UTF8"]),
            **run,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]),
            **run,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"cannot start PostgreSQL: {exc.stderr or exc.stdout}")
    try:
        yield PostgresServer(port=port, user="govml")
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_server_user(stop), **{**run, "check": False})
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray (2 CPUs, no dashboard) for every scale test that needs it."""
    if os.environ.get("CI") == "true":
        import ray  # CI installs the scale extra: a missing Ray is a failure there, not a skip
    else:
        ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()
