"""Real PostgreSQL and Redis for the scale-out tests and benchmarks.

Debian's packages provide the binaries (`postgresql`, `redis-server`; `./dev test` installs
them when missing). Each server runs from a fresh temporary directory on a free 127.0.0.1
port and is stopped by pid. PostgreSQL refuses to run as root, so as root it runs as the
`postgres` user the Debian package creates (`subprocess.Popen(user=...)`, no wrapper process).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

START_TIMEOUT = 30.0


class ServiceUnavailable(Exception):
    """The server cannot be run here; the message says why (tests skip with it)."""


def free_port() -> int:
    """A port free for both TCP and UDP right now (an edge listens on both)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def _pg_binary(name: str) -> str | None:
    candidates = [shutil.which(name),
                  *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-2000:]
    return ""


class PostgresServer:
    """`initdb` + `postgres` in a temporary directory; `database()` makes a fresh database."""

    def __init__(self) -> None:
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None

    def start(self) -> None:
        initdb, postgres = _pg_binary("initdb"), _pg_binary("postgres")
        if initdb is None or postgres is None:
            raise ServiceUnavailable("PostgreSQL is not installed (Debian: apt-get install "
                                     "postgresql; `./dev test` installs it when it can)")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailable("running as root and there is no 'postgres' user to "
                                         "run PostgreSQL as") from None
            self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="nbtunnel-pg-"))
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        log = self.dir / "postgres.log"
        data = self.dir / "data"
        done = subprocess.run(
            [initdb, "-D", str(data), "-U", "nbtunnel", "-A", "trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            user=self.user, cwd=self.dir, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ServiceUnavailable(f"initdb failed: {done.stderr.decode(errors='replace')}")
        self.port = free_port()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [postgres, "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=300"],
                user=self.user, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self._wait_ready(log)

    def _wait_ready(self, log: Path) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServiceUnavailable(f"postgres exited ({self.proc.returncode}): "
                                         f"{_tail(log)}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServiceUnavailable(f"postgres did not start: {_tail(log)}") from None
                time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql://nbtunnel@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown (SIGTERM waits for clients)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class RedisServer:
    """`redis-server` without persistence in a temporary directory."""

    def __init__(self) -> None:
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
        if binary is None:
            raise ServiceUnavailable("Redis is not installed (Debian: apt-get install "
                                     "redis-server; `./dev test` installs it when it can)")
        self.dir = Path(tempfile.mkdtemp(prefix="nbtunnel-redis-"))
        self.port = free_port()
        log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(log),
             "--daemonize", "no"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise ServiceUnavailable(f"redis-server exited: {_tail(log)}")
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServiceUnavailable(f"redis did not start: {_tail(log)}") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
