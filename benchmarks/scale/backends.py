"""The real external backends of the scale-out store, started on this machine by the tests
(tests/server/test_scaleout_*.py, test_storage_contract.py) and by benchmarks/scale.

PostgreSQL: a throwaway cluster of Debian's `postgresql` (make setup installs it) made with
initdb and run with pg_ctl, listening only on a Unix socket in a temporary directory; as root the
commands run as the `postgres` user (PostgreSQL refuses to run as root).

Milvus Lite: the `milvus-lite` package's gRPC server (`python -m milvus_lite server`), its own
process on a loopback port, so that several frameseek servers share it and a test can kill -9 it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} not found: `make setup` installs Debian's postgresql")
    return found[-1]


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A PostgreSQL cluster on a Unix socket; `database()` makes a fresh database per test."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="frameseek-pg-")  # /tmp: reachable by the postgres user
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_owner([_pg_bin("initdb"), "-D", self.data, "-U", "frameseek", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://frameseek@/{database}?host={self.dir}"

    def start(self) -> PostgresCluster:
        subprocess.run(
            _as_owner(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    self.data,
                    "-l",
                    self.log,
                    "-w",
                    "-o",
                    f"-c listen_addresses='' -k {self.dir} -c max_connections=200",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        return self

    def database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def pids(self) -> list[int]:
        """The postmaster and its children."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            main = int(f.readline())
        kids = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True).stdout.split()
        return [main, *map(int, kids)]

    def kill9(self) -> None:
        """A crash of the whole server (postmaster and backends), as a power cut would leave it."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids()[:1]:
            while _alive(pid):
                time.sleep(0.05)

    def stop(self) -> None:
        subprocess.run(_as_owner([_pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop"]), capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


class MilvusLite:
    """Milvus Lite's gRPC server as its own process (data kept across restarts)."""

    def __init__(self, data_dir: str, log_path: str):
        self.data_dir, self.log_path = data_dir, log_path
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusLite:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", self.data_dir]
            + ["--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        while True:  # until it accepts connections (or dies)
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-lite exited with {self.proc.returncode}: {open(self.log_path).read()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
