"""Throwaway Mosquitto and PostgreSQL servers on loopback: for the demo, the tests and the load tool.

PostgreSQL runs Debian's ``initdb`` and ``postgres`` as the ``postgres`` user (they refuse
to run as root) in a fresh directory whose parents that user can traverse; ``stop()``
sends SIGINT (fast shutdown) and waits, so no process outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Throwaway servers: durability of the host does not matter, commit semantics still do.
PG_SETTINGS = ("fsync=off", "full_page_writes=off", "max_connections=60", "shared_buffers=64MB")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before accepting connections")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing accepted on 127.0.0.1:{port} within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Ask a child server to stop, wait, and kill it if it does not; no zombie is left."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class TempPostgres:
    """``initdb`` + ``postgres -D`` on a free loopback port, trust auth, torn down by :meth:`stop`."""

    def __init__(self, user: str = "postgres", settings: tuple[str, ...] = ()) -> None:
        self.user = user
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="deskwatch-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings = settings  # more ``-c name=value`` settings, after PG_SETTINGS

    def _ids(self) -> tuple[int | None, int | None]:
        """(uid, gid) to run the server as: the ``postgres`` user when we are root."""
        if os.geteuid() != 0:
            return None, None
        pw = pwd.getpwnam(self.user)
        return pw.pw_uid, pw.pw_gid

    def start(self, timeout: float = 20.0) -> TempPostgres:
        if not (PG_BIN / "postgres").exists():
            raise FileNotFoundError(f"PostgreSQL 15 server not found in {PG_BIN} (apt-get install postgresql-15)")
        data = self.root / "data"
        self.root.chmod(0o755)
        data.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            os.chown(data, pw.pw_uid, pw.pw_gid)
        self._as_server_user(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]
        )
        return self._first_launch(timeout)

    def _as_server_user(self, argv: list[str]) -> None:
        uid, gid = self._ids()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        subprocess.run(
            argv,
            check=True,
            capture_output=True,
            env=env,
            cwd=self.root,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
        )

    def _first_launch(self, timeout: float) -> TempPostgres:
        self._log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._launch(timeout)
        except Exception as exc:
            log = (self.root / "postgres.log").read_text(errors="replace")[-1500:]
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {exc}\n{log}") from exc
        return self

    def _launch(self, timeout: float) -> None:
        data = self.root / "data"
        uid, gid = self._ids()
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(data)]
            + [arg for opt in (*PG_SETTINGS, *self.settings) for arg in ("-c", opt)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
            cwd=self.root,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
        )
        wait_port(self.port, timeout, self.proc)
        self._wait_ready(timeout)

    def halt(self) -> None:
        """Stop the server but keep its data (an outage); :meth:`resume` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(15)

    def resume(self, timeout: float = 20.0) -> None:
        self._launch(timeout)

    def standby(self, settings: tuple[str, ...] = (), timeout: float = 20.0) -> TempPostgres:
        """A streaming standby of this (running) server: ``pg_basebackup -R`` into a new
        directory, started hot; ``promote()`` makes it a primary. Its own process group."""
        replica = TempPostgres(self.user, ("wal_receiver_timeout=0", *settings))
        data = replica.root / "data"
        replica.root.chmod(0o755)
        data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            os.chown(data, pw.pw_uid, pw.pw_gid)
        base = [str(PG_BIN / "pg_basebackup"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port)]
        replica._as_server_user([*base, "-U", "postgres", "-R", "--checkpoint=fast", "--no-sync"])
        return replica._first_launch(timeout)

    def replicated(self, *, synchronous: bool, timeout: float = 15.0) -> TempPostgres:
        """A standby (:meth:`standby`) once it streams from this server, synchronously
        (``synchronous_standby_names = '*'`` set here: a commit waits for it) or not."""
        import psycopg

        replica = self.standby()
        if synchronous:
            with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                conn.execute("SELECT pg_reload_conf()")
        want = "sync" if synchronous else "async"
        deadline = time.monotonic() + timeout
        while (self.walsender() or (0, ""))[1] != want:
            if time.monotonic() > deadline:
                replica.stop()
                raise RuntimeError(f"the standby did not start streaming ({want}) within {timeout:.0f} s")
            time.sleep(0.02)
        return replica

    def walsender(self) -> tuple[int, str] | None:
        """(pid, sync_state) of the process streaming this server's WAL to a standby, or None."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pid, sync_state FROM pg_stat_replication WHERE state = 'streaming'").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def promote(self, timeout: int = 20) -> None:
        """End recovery on a standby: it takes writes from now on (``pg_promote()``)."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_promote(true, %s)", (timeout,)).fetchone()
        if not row or row[0] is not True:
            raise RuntimeError("the standby did not leave recovery")

    def crash(self) -> None:
        """SIGKILL every process of the server at once, as a power cut would.

        PostgreSQL's children each call ``setsid()``, so the postmaster's process group is not
        enough: everything is frozen first (SIGSTOP: no fork, no write, no packet after this
        instant), then killed. Children of the postmaster only, so no other server is touched."""
        assert self.proc is not None, "crash() needs a running server"
        pids = [self.proc.pid]
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGSTOP)
            pids += _children(self.proc.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.02)  # reparented to init, which reaps them

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, 15)  # SIGINT: PostgreSQL's fast shutdown
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(child) for child in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class TempMosquitto:
    """A plain Mosquitto 2 on a free loopback port (anonymous, no persistence)."""

    def __init__(self, *, max_inflight: int = 0, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.port = free_port()
        self.max_inflight = max_inflight  # 0: unlimited (load tests); the fleet config uses 64
        self.tls = tls  # (ca, server certificate, server key): the listener then speaks TLS only
        self.root = Path(tempfile.mkdtemp(prefix="deskwatch-mosq-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TempMosquitto:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            f"max_inflight_messages {self.max_inflight}",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if self.tls is not None:
            ca, cert, key = self.tls
            lines[1:1] = [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        conf = self.root / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._log = open(self.root / "mosquitto.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT)
        wait_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)
