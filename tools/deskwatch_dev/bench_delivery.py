"""How fast the outbox drains to a broker after an outage (a development benchmark).

    PYTHONPATH=tools .venv/bin/python -m deskwatch_dev.bench_delivery [--json]


Queues N events while no broker is reachable (the outage), then starts a throwaway
Mosquitto on a loopback port (or uses ``--port`` of a broker already running on
127.0.0.1), lets ``Delivery`` connect and measures until the broker has acknowledged
every message (QoS 1). Reports events/s, MB/s, and this process's CPU while draining
(all of delivery's threads). Runs twice: without evidence and with ``--evidence-bytes``
JPEG-sized evidence per event. The device's config file is not used.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deskwatch_dev.devservers import MOSQUITTO, TempMosquitto

HELP = "measure the outbox drain rate (events/s, CPU) to a local broker after an outage"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=2000, help="events queued during the outage (default 2000)")
    parser.add_argument(
        "--evidence-bytes", type=int, default=20_000, help="evidence size for the second run (default 20000)"
    )
    parser.add_argument("--inflight", type=int, default=32, help="mqtt.max_inflight (default 32)")
    parser.add_argument("--port", type=int, default=None, help="use a broker already listening on 127.0.0.1:PORT")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _one_run(workdir: Path, port: int, events: int, evidence_bytes: int, inflight: int) -> dict[str, Any]:
    from deskwatch.app import build_delivery
    from deskwatch.config import load_config_text

    state = workdir / f"state-{evidence_bytes}"
    cfg = load_config_text(
        f"device: {{id: bench, site: bench, worker_id: w}}\nstate_dir: {state}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, tls: {{enabled: false}}, max_inflight: {inflight}}}\n"
        f"outbox: {{max_bytes: {4 * 1024**3}, max_messages: 10000000}}\n"
    )
    delivery = build_delivery(cfg, version="bench", models={})
    jpeg = (b"\xff\xd8" + os.urandom(max(0, evidence_bytes - 2))) if evidence_bytes else None
    t0 = time.perf_counter()
    for n in range(events):  # the outage: queued durably, nothing connected yet
        delivery.send_event({"schema": "deskwatch.event/1", "type": "phone_use", "scan_id": f"s{n}"}, jpeg)
    enqueue_s = time.perf_counter() - t0
    queued = delivery.outbox.stats()
    cpu0, t1 = _cpu_seconds(), time.perf_counter()
    delivery.start()
    while delivery.outbox.stats()["depth"] > 0:
        if time.perf_counter() - t1 > 600:
            raise TimeoutError("outbox did not drain within 10 minutes")
        time.sleep(0.01)
    drain_s = time.perf_counter() - t1
    cpu = _cpu_seconds() - cpu0
    delivery.stop(2)
    return {
        "events": events,
        "evidence_bytes": evidence_bytes,
        "messages": queued["depth"],
        "queued_bytes": queued["bytes"],
        "enqueue_events_per_s": round(events / enqueue_s, 1),
        "drain_seconds": round(drain_s, 3),
        "drain_events_per_s": round(events / drain_s, 1),
        "drain_mb_per_s": round(queued["bytes"] / drain_s / 1e6, 2),
        "cpu_percent_while_draining": round(100 * cpu / drain_s, 1),
    }


def run(args: argparse.Namespace) -> int:
    if args.events < 1 or args.inflight < 1 or args.evidence_bytes < 0:
        print("bench-delivery: --events and --inflight must be >= 1, --evidence-bytes >= 0", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="deskwatch-bench-"))
    broker = None
    try:
        if args.port is None:
            if not os.path.exists(MOSQUITTO):
                print("bench-delivery: mosquitto is not installed (Debian package mosquitto)", file=sys.stderr)
                return 69
            try:
                # max_inflight_messages as in broker/mosquitto-fleet.conf (announced as Receive Maximum)
                broker = TempMosquitto(max_inflight=64).start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                print(f"bench-delivery: cannot start mosquitto: {exc}", file=sys.stderr)
                return 69
            port = broker.port
        else:
            port = args.port
        results = [_one_run(workdir, port, args.events, size, args.inflight) for size in (0, args.evidence_bytes)]
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"inflight": args.inflight, "runs": results}))
        return 0
    print(f"outbox drain after an outage, QoS 1 to Mosquitto on loopback, max_inflight {args.inflight}:")
    for r in results:
        ev = f"{r['evidence_bytes'] // 1000} KB evidence" if r["evidence_bytes"] else "no evidence"
        print(
            f"  {r['events']} events, {ev}: drained in {r['drain_seconds']} s = {r['drain_events_per_s']} events/s "
            f"({r['drain_mb_per_s']} MB/s), CPU {r['cpu_percent_while_draining']}% of one core; "
            f"enqueue {r['enqueue_events_per_s']} events/s (fsync per event)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.bench_delivery", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
