"""A PostgreSQL host that dies silently under a commit in flight: how long the commit is held.
``python -m deskwatch_dev.pgdeadhost`` (root: a network namespace and a veth pair).

A host that loses power or its network closes nothing: no RST, no FIN, no ARP reply. A
``kill -9`` on the same machine is the opposite case (the kernel resets every connection at
once), so this runs the server in its own network namespace, reached over a veth pair,
opens a transaction from here, removes the server's address (nothing answers from then on)
and commits. Without keepalives or ``tcp_user_timeout`` the commit waits for TCP's
retransmissions to give up (about 15 minutes with ``tcp_retries2 = 15``); the collector
then holds its batch that long, while the promoted standby waits. With the collector's
:data:`~deskwatch_collector.store.CONNECTION_DEFAULTS` it fails in ``tcp_user_timeout``
and the batch goes to the next host.

Prints one line per case. The namespace, the veth pair and the server are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import threading
import time
from typing import Any

import psycopg

from deskwatch_collector.store import writer_dsn
from deskwatch_dev.devservers import PG_BIN, PG_SETTINGS, TempPostgres, stop_process

NS, HOST_END, NS_END = "dwpgdead", "dwpgdead0", "dwpgdead1"
HOST_IP, SERVER_IP, NET = "10.213.77.1/30", "10.213.77.2", "10.213.77.0/30"


def _ip(*args: str, ns: bool = False, check: bool = True) -> None:
    prefix = ["ip", "netns", "exec", NS] if ns else []
    subprocess.run([*prefix, "ip", *args], check=check, capture_output=True)


def _network_up() -> None:
    _ip("netns", "add", NS)
    _ip("link", "add", HOST_END, "type", "veth", "peer", "name", NS_END)
    _ip("link", "set", NS_END, "netns", NS)
    _ip("addr", "add", HOST_IP, "dev", HOST_END)
    _ip("link", "set", HOST_END, "up")
    _ip("addr", "add", f"{SERVER_IP}/30", "dev", NS_END, ns=True)
    _ip("link", "set", NS_END, "up", ns=True)
    _ip("link", "set", "lo", "up", ns=True)


def _network_down() -> None:
    _ip("link", "del", HOST_END, check=False)
    _ip("netns", "del", NS, check=False)


def _vanish(gone: bool) -> None:
    """The server's address goes (or comes back): packets to it are dropped, nothing answers."""
    _ip("addr", "del" if gone else "add", f"{SERVER_IP}/30", "dev", NS_END, ns=True, check=gone)


def _commit_after_vanishing(dsn: str, cap: float, **connect: Any) -> str:
    conn = psycopg.connect(dsn, **connect)
    conn.execute("INSERT INTO t VALUES (1)")
    _vanish(True)
    began, outcome = time.monotonic(), []

    def commit() -> None:
        try:
            conn.commit()
            outcome.append("committed")
        except psycopg.Error as exc:
            outcome.append(f"{type(exc).__name__} ({' '.join(str(exc).split())[:80]})")

    thread = threading.Thread(target=commit, daemon=True)
    thread.start()
    thread.join(cap)
    said = f"{outcome[0]} after {time.monotonic() - began:.1f} s" if outcome else f"still waiting after {cap:.0f} s"
    _vanish(False)
    thread.join(10)
    with contextlib.suppress(Exception):
        conn.close()
    return said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.pgdeadhost", description=__doc__.split("\n")[0])
    parser.add_argument("--cap", type=float, default=90.0, help="seconds to wait for a commit before saying so")
    args = parser.parse_args(argv)
    pg = TempPostgres().start()  # initdb here, then run it again inside the namespace
    server: subprocess.Popen[bytes] | None = None
    _network_up()
    try:
        pg.create_database("db")
        pg.halt()
        data = pg.root / "data"
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {NET} trust\n")
        with open(pg.root / "postgres.log", "ab") as log:
            server = subprocess.Popen(
                ["ip", "netns", "exec", NS, "setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"]
                + [str(PG_BIN / "postgres"), "-D", str(data), "-p", "5432", "-h", SERVER_IP, "-k", str(data)]
                + [arg for opt in PG_SETTINGS for arg in ("-c", opt)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        dsn = f"postgresql://postgres@{SERVER_IP}:5432/db"
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        before = _commit_after_vanishing(dsn, args.cap, connect_timeout=10)
        print(f"before (connect_timeout=10 as a keyword, no keepalive settings): {before}", flush=True)
        after = _commit_after_vanishing(writer_dsn(dsn)[0], args.cap)
        print(f"after (the collector's CONNECTION_DEFAULTS): {after}", flush=True)
    finally:
        stop_process(server, 2, 15)
        pg.proc = None
        pg.stop()
        _network_down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
