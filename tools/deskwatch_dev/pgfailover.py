"""PostgreSQL failovers under a loaded collector, without any induced lag: how many acknowledged
events are lost, per replication mode. ``python -m deskwatch_dev.pgfailover --trials 10``.

Each trial: a primary and a streaming standby (``pg_basebackup``), a Mosquitto, one
collector (its DSN names both hosts), devices publishing events with ~20 KB photos and
scans at ``--rate`` events/s. At a random moment in ``--kill-window`` every process of the
primary is SIGKILLed at once, the standby is promoted, the publishing goes on for a second
and stops; then every event the collector acknowledged (its ack is called only after the
commit) is looked up on the new primary. Lost = acknowledged and not there.

``--partition S`` cuts the standby off for S seconds before the crash (the primary's
walsender is frozen): the usual way a failover happens, since the primary is declared dead
*because* it is unreachable, while it may still take commits. Asynchronous replication then
loses what was acknowledged during the cut; synchronous replication acknowledges nothing
(the commits wait) and loses nothing.

``tests/collector/test_failover.py`` shows the mechanism deterministically (the standby is
held behind before the crash); this shows how often a plain crash hits the window, which
depends on the load and the machine: the figures are for this machine, loopback, no disk
flushes (``fsync=off`` on the throwaway servers).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_collector.intake import Inbound
from deskwatch_collector.store import open_store
from deskwatch_collector.subscriber import Subscriber, SubscriberSettings
from deskwatch_dev.devservers import TempMosquitto, TempPostgres
from deskwatch_dev.fleet import SimDevice


class AckedInbox(queue.Queue[Inbound]):
    """The writer's inbox, noting which events the collector acknowledged."""

    def __init__(self) -> None:
        super().__init__()
        self.acked: set[str] = set()
        self.lock = threading.Lock()

    def put(self, item: Inbound, block: bool = True, timeout: float | None = None) -> None:
        if item.topic.endswith("/event"):
            event_id, ack = str(json.loads(item.payload)["event_id"]), item.ack

            def noted() -> None:
                ack()
                with self.lock:
                    self.acked.add(event_id)

            item.ack = noted
        super().put(item, block, timeout)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def snapshot(self) -> set[str]:
        """The event ids acknowledged so far (a copy)."""
        with self.lock:
            return set(self.acked)


@dataclass
class Trial:
    mode: str
    published: int
    acked: int
    stored: int
    lost: int
    resumed_s: float  # from the promotion to the collector storing again


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def trial(
    synchronous: bool, rate: float, kill_window: tuple[float, float], partition: float, rng: random.Random
) -> Trial:
    primary = TempPostgres().start()
    standby: TempPostgres | None = None
    broker = TempMosquitto().start()
    collector: Subscriber | None = None
    stop = threading.Event()
    published: list[str] = []
    try:
        primary.create_database("failover")
        standby = primary.replicated(synchronous=synchronous)
        dsn = f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/failover"
        store = open_store(dsn)
        collector = Subscriber(SubscriberSettings(port=broker.port, client_id="failover"), store)
        inbox = AckedInbox()
        collector.writer.inbox = inbox
        collector.start()
        collector.subscribed.wait(10)

        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        devices = [SimDevice("acme", f"desk-{i}", f"w-{i}", rng) for i in range(8)]

        def publish() -> None:
            while not stop.is_set():
                began = time.monotonic()
                messages = [m for d in devices for m in d.violation()]
                infos = [client.publish(m.topic, m.payload, qos=1, properties=m.properties) for m in messages]
                for info in infos:
                    info.wait_for_publish(10)
                published.extend(m.event_id for m in messages if m.event_id)
                time.sleep(max(0.0, len(devices) / rate - (time.monotonic() - began)))

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        time.sleep(rng.uniform(*kill_window))
        if partition:
            walsender = primary.walsender()
            if walsender is None:
                raise RuntimeError("no standby streaming to cut off")
            os.kill(walsender[0], signal.SIGSTOP)  # crash() kills it all the same
            time.sleep(partition)
        primary.crash()
        time.sleep(0.3)
        standby.promote()
        promoted = time.monotonic()
        before = inbox.count()
        _wait(lambda: inbox.count() > before, 60)
        resumed = time.monotonic() - promoted
        time.sleep(1.0)
        stop.set()
        thread.join(15)
        _wait(lambda: inbox.snapshot() >= set(published), 60)
        collector.stop(timeout=2)
        client.disconnect()
        client.loop_stop()
        store.close()
        with psycopg.connect(standby.dsn("failover")) as conn:
            ids = {str(r[0]) for r in conn.execute("SELECT event_id FROM events").fetchall()}
        acked = inbox.snapshot()
        return Trial(
            "synchronous" if synchronous else "asynchronous",
            len(published),
            len(acked),
            len(ids),
            len(acked - ids),
            resumed,
        )
    finally:
        stop.set()
        if collector is not None:
            collector.abort()
        broker.stop()
        if standby is not None:
            standby.stop()
        primary.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.pgfailover", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="failovers per replication mode")
    parser.add_argument("--rate", type=float, default=100.0, help="events/s (each with a photo and a scan)")
    parser.add_argument("--kill-window", type=float, nargs=2, default=(2.0, 4.0), metavar=("FROM", "TO"))
    parser.add_argument("--partition", type=float, default=0.0, help="seconds the standby is cut off before the crash")
    parser.add_argument("--mode", choices=["both", "synchronous", "asynchronous"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rng = random.Random(args.seed)
    modes = [True, False] if args.mode == "both" else [args.mode == "synchronous"]
    results: list[Trial] = []
    for n in range(args.trials):
        for synchronous in modes:  # interleaved: both modes meet the same machine load
            window = (args.kill_window[0], args.kill_window[1])
            t = trial(synchronous, args.rate, window, args.partition, rng)
            results.append(t)
            print(
                f"trial {n + 1} {t.mode:12} published {t.published:5} acked {t.acked:5} stored {t.stored:5}"
                f" lost {t.lost:3}  storing again {t.resumed_s:.2f} s after the promotion",
                flush=True,
            )
    for mode in ("synchronous", "asynchronous"):
        mine = [t for t in results if t.mode == mode]
        if mine:
            print(
                f"{mode}: {len(mine)} failovers, {sum(t.acked for t in mine)} events acknowledged,"
                f" {sum(t.lost for t in mine)} of them lost ({sum(1 for t in mine if t.lost)} failovers lost any);"
                f" storing again {statistics.median(t.resumed_s for t in mine):.2f} s (median)"
                f" / {max(t.resumed_s for t in mine):.2f} s (max) after the promotion"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
