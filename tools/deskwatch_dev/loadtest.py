"""Fleet load test: many simulated appliances against a broker on loopback and real collectors.

    python -m deskwatch_dev.loadtest --devices 1000 --multiplier 1 --duration 60
    python -m deskwatch_dev.loadtest --devices 1000 --multiplier 10 --collectors 2 --db postgresql

Each simulated device publishes the real payloads (``deskwatch_dev.fleet``, built by
``deskwatch.delivery.payloads``): a retained ``status`` at start, a ``scan`` every
``scan_interval / multiplier`` seconds on average (exponential gaps, like random scans), a
violation in ``violation_share`` of them (``event`` + a ~20 KB JPEG on ``evidence/{id}``
in ``evidence_share`` of those) and ``health`` every 60 s. Devices are multiplexed over a
few MQTT connections (one per thread) so one process can stand in for a thousand
appliances; the collector cannot tell the difference (it reads topics, not client ids).

The collectors run as separate processes (``deskwatch-collector run``) so their CPU time
and memory are their own. Measured: stored events per second, publish-to-row latency
(``events.stored_at`` - publish time; ``stored_at`` is taken when the writer starts the
transaction, the batch commit time is reported beside it), collector CPU and peak RSS,
and loss (every published event, evidence and scan must be in the database, no seq gap).

Brokers (``--broker`` for an existing one, else one is started):

- default: a Mosquitto on loopback (MQTT 5, shared subscriptions); ``--tls`` puts TLS on
  its listener (a throwaway CA, made with the openssl CLI) for devices and collectors;
- ``--cluster``: a 3-node RabbitMQ cluster (:mod:`deskwatch_dev.rabbitcluster`); devices
  publish MQTT 3.1.1 spread over the nodes and move to the next node when theirs fails
  (what a load balancer in front of the cluster does); collectors consume the quorum
  queue over AMQP (``deskwatch-collector run --amqp``). ``--kill-node-at SECONDS``
  SIGKILLs the queue's leader node that far into the publishing phase.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_collector.ingest import missing_seqs
from deskwatch_collector.store import open_store
from deskwatch_dev.devservers import TempMosquitto, TempPostgres
from deskwatch_dev.fleet import Outgoing, SimDevice, evidence_jpegs
from deskwatch_dev.rabbitcluster import RabbitCluster

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Profile:
    """Per-device behaviour at multiplier 1 (a plausible busy day)."""

    scan_interval: float = 120.0  # a random scan every 2 minutes on average
    violation_share: float = 0.25
    evidence_share: float = 0.8
    health_interval: float = 60.0


@dataclass
class Published:
    events: dict[str, float] = field(default_factory=dict)  # event_id -> publish time (wall)
    evidence: int = 0
    scans: int = 0
    health: int = 0
    messages: int = 0
    bytes: int = 0


@dataclass
class Target:
    """Where the simulated devices publish and how the collectors are started."""

    addresses: list[tuple[str, int]]  # MQTT listeners; a device moves to the next one when its node fails
    mqtt5: bool = True
    ca_file: str | None = None
    collector_args: list[str] = field(default_factory=list)  # per collector: how it reaches the messages
    amqp_urls: list[str] = field(default_factory=list)


class Connection(threading.Thread):
    """One MQTT connection publishing for a slice of the fleet on its own schedule.

    PUBACKs are counted by packet id (``on_publish``): a message published while the
    connection is down is queued by paho and sent after the reconnect, so it is
    acknowledged later, not lost.
    """

    def __init__(
        self,
        index: int,
        target: Target,
        devices: list[SimDevice],
        profile: Profile,
        multiplier: float,
        until: float,
        rng: random.Random,
    ) -> None:
        super().__init__(name=f"loadtest-pub-{index}", daemon=True)
        self.devices = devices
        self.profile = profile
        self.multiplier = multiplier
        self.until = until
        self.rng = rng
        self.target = target
        self.node = index % len(target.addresses)
        self.published = Published()
        self.reconnects = 0
        self._lock = threading.Lock()
        self._unacked: set[int] = set()
        self._acked_early: set[int] = set()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"loadtest-{index}",
            protocol=mqtt.MQTTv5 if target.mqtt5 else mqtt.MQTTv311,
            clean_session=None if target.mqtt5 else False,
        )
        if target.ca_file:
            self.client.tls_set(ca_certs=target.ca_file)
        self.client.max_inflight_messages_set(0)  # unlimited: the devices do not share a window
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        host, port = target.addresses[self.node]
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:
                self._acked_early.add(mid)  # the PUBACK beat publish() returning

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.reconnects += 1
        self._next_node(client)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._next_node(client)

    def _next_node(self, client: Any) -> None:
        """Try the next node, as a load balancer in front of the cluster would."""
        if len(self.target.addresses) > 1:
            self.node = (self.node + 1) % len(self.target.addresses)
            # paho refuses its host/port setters until the socket is fully closed; its own
            # reconnect reads these two attributes
            client._host, client._port = self.target.addresses[self.node]

    def _send(self, m: Outgoing) -> None:
        if m.event_id is not None:
            self.published.events[m.event_id] = time.time()
        props = m.properties if self.target.mqtt5 else None  # MQTT 3.1.1 carries no properties
        info = self.client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, properties=props)
        if m.qos:
            with self._lock:
                if info.mid in self._acked_early:
                    self._acked_early.discard(info.mid)
                else:
                    self._unacked.add(info.mid)
        self.published.messages += 1
        self.published.bytes += len(m.payload)

    def run(self) -> None:
        p, mult = self.profile, self.multiplier
        now = time.time()
        queue: list[tuple[float, int, str]] = []
        for i, _dev in enumerate(self.devices):
            heapq.heappush(queue, (now + self.rng.expovariate(mult / p.scan_interval), i, "scan"))
            heapq.heappush(queue, (now + self.rng.uniform(0, p.health_interval), i, "health"))
        while queue:
            due, i, what = heapq.heappop(queue)
            if due >= self.until:
                continue
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            dev = self.devices[i]
            if what == "health":
                self._send(dev.health())
                self.published.health += 1
                heapq.heappush(queue, (due + p.health_interval, i, "health"))
                continue
            if self.rng.random() < p.violation_share:
                for m in dev.violation(with_evidence=self.rng.random() < p.evidence_share):
                    self._send(m)
                    if "/evidence/" in m.topic:
                        self.published.evidence += 1
            else:
                self._send(dev.scan()[1])
            self.published.scans += 1
            heapq.heappush(queue, (due + self.rng.expovariate(mult / p.scan_interval), i, "scan"))

    def announce(self) -> None:
        """Every device's retained ``status`` (the fleet comes online before the measured phase)."""
        for dev in self.devices:
            self._send(dev.status())
        self.published.messages = self.published.bytes = 0  # not part of the measured phase

    def finish(self, timeout: float) -> int:
        """Wait for every PUBACK; returns how many are still missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._unacked:
                    break
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            return len(self._unacked)


class CollectorProcess:
    def __init__(self, index: int, db: str, source: list[str], workdir: Path) -> None:
        self.index = index
        self.log_path = workdir / f"collector-{index}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "deskwatch_collector.cli", "--log-level", "WARNING", "run", "--db", db,
               *source, "--http", "off", "--client-id", f"loadtest-collector-{index}",
               "--stats-every", "0"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY"):
            raise RuntimeError(f"collector {index} did not start: {self.log_path.read_text()[-2000:]}")
        self.cpu0 = self.cpu_seconds()
        self.counters: dict[str, Any] = {}

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory_kib(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        for line in out.decode().splitlines():
            if line.startswith("COUNTERS "):
                self.counters = json.loads(line[len("COUNTERS ") :])
        self._log.close()


def _collector_source(target: Target, index: int) -> list[str]:
    """The ``run`` arguments that point collector ``index`` at the messages."""
    if not target.amqp_urls:
        return target.collector_args
    urls = target.amqp_urls[index % len(target.amqp_urls) :] + target.amqp_urls[: index % len(target.amqp_urls)]
    return [arg for url in urls for arg in ("--amqp", url)]  # each starts on another node


def make_tls_files(root: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI): (ca, cert, key)."""
    root.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=root)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=deskwatch load-test CA", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    return root / "ca.crt", root / "server.crt", root / "server.key"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    devices: int,
    multiplier: float,
    duration: float,
    collectors: int = 1,
    db: str = "sqlite",
    connections: int = 8,
    broker: tuple[str, int] | None = None,
    profile: Profile | None = None,
    drain_timeout: float = 60.0,
    seed: int = 1,
    keep_workdir: bool = False,
    tls: bool = False,
    cluster: bool = False,
    kill_node_at: float | None = None,
) -> dict[str, Any]:
    """One load phase; returns the measurements (see the module doc)."""
    profile = profile or Profile()
    evidence_jpegs()  # build the JPEGs before the clock starts
    workdir = Path(tempfile.mkdtemp(prefix="deskwatch-loadtest-"))
    mosq = pg = rabbit = None
    procs: list[CollectorProcess] = []
    killed: dict[str, Any] = {}
    try:
        if cluster:
            rabbit = RabbitCluster().start()
            target = Target(
                [("127.0.0.1", n.mqtt_port) for n in rabbit.nodes],
                mqtt5=False,
                amqp_urls=[n.amqp_url for n in rabbit.nodes],
            )
        elif broker is not None:
            target = Target([broker], collector_args=["--broker", f"{broker[0]}:{broker[1]}"])
        else:
            files = make_tls_files(workdir / "pki") if tls else None
            mosq = TempMosquitto(tls=files).start()
            target = Target(
                [("127.0.0.1", mosq.port)],
                ca_file=str(files[0]) if files else None,
                collector_args=["--broker", f"127.0.0.1:{mosq.port}"] + (["--ca-file", str(files[0])] if files else []),
            )
        if db == "postgresql":
            pg = TempPostgres().start()
            dsn = pg.create_database("loadtest")
        elif db == "sqlite":
            dsn = str(workdir / "collector.db")
        else:
            dsn = db
        open_store(dsn).close()  # create the schema once, before the collectors race to
        procs = [CollectorProcess(i, dsn, _collector_source(target, i), workdir) for i in range(collectors)]
        fleet = [SimDevice(f"site-{i % 20:02d}", f"lt-{i:05d}", f"w-{i:05d}", random.Random(seed * 100003 + i))
                 for i in range(devices)]  # fmt: skip
        conns = [
            Connection(c, target, fleet[c::connections], profile, multiplier, 0.0, random.Random(seed + c))
            for c in range(connections)
        ]
        for c in conns:
            c.announce()
        store = open_store(dsn)
        warm_deadline = time.time() + 60
        while time.time() < warm_deadline:
            with store.transaction(write=False) as tx:
                if int((tx.one("SELECT COUNT(*) FROM devices WHERE state = 'online'") or (0,))[0]) >= devices:
                    break
            time.sleep(0.1)
        start = time.time()
        until = start + duration
        for c in conns:
            c.until = until
            c.start()
        if rabbit is not None and kill_node_at is not None:
            time.sleep(max(0.0, start + kill_node_at - time.time()))
            victim = rabbit.queue_leader("deskwatch-collectors") or rabbit.nodes[0]
            rabbit.kill(victim)
            killed = {"node": victim.name, "at_s": round(time.time() - start, 1), "role": "queue leader"}
        for c in conns:
            c.join()
        unacked = sum(c.finish(60 if killed else 30) for c in conns)
        published = Published()
        for c in conns:
            published.events.update(c.published.events)
            published.evidence += c.published.evidence
            published.scans += c.published.scans
            published.health += c.published.health
            published.messages += c.published.messages
            published.bytes += c.published.bytes
        deadline = time.time() + drain_timeout
        while True:
            with store.transaction(write=False) as tx:
                n = int((tx.one("SELECT COUNT(*) FROM events") or (0,))[0])
                s = int((tx.one("SELECT COUNT(*) FROM scans") or (0,))[0])
                v = int((tx.one("SELECT COUNT(*) FROM evidence WHERE state = 'verified'") or (0,))[0])
            done = n >= len(published.events) and s >= published.scans and v >= published.evidence
            if done or time.time() > deadline:
                break
            time.sleep(0.2)
        drained = time.time()
        cpu = [p.cpu_seconds() - p.cpu0 for p in procs]
        mem = [p.memory_kib() for p in procs]
        with store.transaction(write=False) as tx:
            rows = tx.rows("SELECT event_id, stored_at FROM events")
            gaps = missing_seqs(tx)
            rejects = int((tx.one("SELECT COUNT(*) FROM rejects") or (0,))[0])
        store.close()
        for p in procs:
            p.stop()
        latencies = [(stored - published.events[eid]) * 1000 for eid, stored in rows if eid in published.events]
        windows: dict[int, list[float]] = {}
        for eid, stored in rows:
            if eid in published.events:
                sent = published.events[eid]
                windows.setdefault(int((sent - start) // 10), []).append((stored - sent) * 1000)
        stored_ids = {eid for eid, _ in rows}
        lost = [eid for eid in published.events if eid not in stored_ids]
        elapsed = drained - start
        return {
            "workdir": str(workdir),
            "devices": devices,
            "multiplier": multiplier,
            "collectors": collectors,
            "db": "postgresql" if db == "postgresql" or db.startswith("postgres") else "sqlite",
            "broker": "rabbitmq-cluster-3" if cluster else ("mosquitto-tls" if tls else "mosquitto"),
            "killed": killed,
            "publisher_reconnects": sum(c.reconnects for c in conns),
            "duration_s": round(duration, 1),
            "published": {
                "events": len(published.events),
                "evidence": published.evidence,
                "scans": published.scans,
                "health": published.health,
                "messages": published.messages,
                "mbytes": round(published.bytes / 1e6, 2),
                "unacked": unacked,
            },
            "stored": {"events": n, "evidence_verified": v, "scans": s},
            "lost_events": len(lost),
            "seq_gaps": sum(len(r) for r in gaps.values()),
            "rejects": rejects,
            "events_per_s": round(n / elapsed, 2),
            "messages_per_s": round(published.messages / elapsed, 1),
            "latency_ms": {
                "p50": round(percentile(latencies, 0.5), 1),
                "p95": round(percentile(latencies, 0.95), 1),
                "max": round(max(latencies), 1) if latencies else None,
                "p95_by_10s": [round(percentile(windows[w], 0.95)) for w in sorted(windows)],
            },
            "collector": [
                {
                    "cpu_percent": round(100 * cpu[i] / elapsed, 1),
                    "cpu_s": round(cpu[i], 2),
                    "rss_mib": round(mem[i].get("VmRSS", 0) / 1024, 1),
                    "peak_rss_mib": round(mem[i].get("VmHWM", 0) / 1024, 1),
                    "events_stored": p.counters.get("event.stored", 0),
                    "batches": p.counters.get("batches", 0),
                    "batch_ms_p50": p.counters.get("batch_ms_p50"),
                    "batch_ms_p95": p.counters.get("batch_ms_p95"),
                }
                for i, p in enumerate(procs)
            ],
        }
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
        if mosq is not None:
            mosq.stop()
        if rabbit is not None:
            rabbit.stop()
        if pg is not None:
            pg.stop()
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def describe(r: dict[str, Any]) -> str:
    pub, lat = r["published"], r["latency_ms"]
    lines = [
        f"{r['devices']} devices x{r['multiplier']:g} for {r['duration_s']:g} s on {r['broker']}, "
        f"{r['collectors']} collector(s) on {r['db']}:",
        f"  published {pub['events']} events ({pub['evidence']} with ~20 KB evidence), {pub['scans']} scans, "
        f"{pub['health']} health; {pub['messages']} messages, {pub['mbytes']} MB; unacked {pub['unacked']}",
        f"  stored {r['stored']['events']} events, {r['stored']['evidence_verified']} verified evidence, "
        f"{r['stored']['scans']} scans; lost {r['lost_events']}; seq gaps {r['seq_gaps']}; rejects {r['rejects']}",
        f"  {r['events_per_s']} events/s stored, {r['messages_per_s']} messages/s; "
        f"latency publish->row p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms",
        f"  p95 latency by 10 s of publishing (ms): {lat['p95_by_10s']}",
    ]
    if r.get("killed"):
        k = r["killed"]
        lines.append(
            f"  killed {k['node']} ({k['role']}) at {k['at_s']} s; publisher reconnects {r['publisher_reconnects']}"
        )
    for i, c in enumerate(r["collector"]):
        lines.append(
            f"  collector {i}: CPU {c['cpu_percent']}% ({c['cpu_s']} s), RSS {c['rss_mib']} MiB "
            f"(peak {c['peak_rss_mib']} MiB), {c['events_stored']} events, {c['batches']} batches "
            f"(commit p50 {c['batch_ms_p50']} ms, p95 {c['batch_ms_p95']} ms)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deskwatch_dev.loadtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument(
        "--multiplier", type=float, action="append", help="rate multiplier (repeat for phases; default 1 and 10)"
    )
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of publishing per phase")
    ap.add_argument("--collectors", type=int, action="append", help="collectors per phase (repeat; default 1)")
    ap.add_argument("--db", default="sqlite", help="sqlite (temp file), postgresql (temp server) or a DSN")
    ap.add_argument("--connections", type=int, default=8, help="MQTT connections the devices are multiplexed over")
    ap.add_argument("--broker", help="HOST:PORT of an existing broker (default: start a Mosquitto)")
    ap.add_argument("--tls", action="store_true", help="TLS between devices, broker and collectors (own Mosquitto)")
    ap.add_argument("--cluster", action="store_true", help="a 3-node RabbitMQ cluster; collectors use its queue")
    ap.add_argument("--kill-node-at", type=float, help="with --cluster: SIGKILL the queue leader this many s in")
    ap.add_argument("--json", action="store_true", help="print the measurements as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (collector logs, SQLite file)")
    args = ap.parse_args(argv)
    broker = None
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        broker = (host or "127.0.0.1", int(port))
    results = []
    for collectors in args.collectors or [1]:
        for mult in args.multiplier or [1.0, 10.0]:
            r = run(
                args.devices, mult, args.duration, collectors, args.db, args.connections, broker,
                keep_workdir=args.keep, tls=args.tls, cluster=args.cluster, kill_node_at=args.kill_node_at,
            )  # fmt: skip
            if args.keep:
                print(f"work directory kept: {r['workdir']}", flush=True)
            results.append(r)
            print(json.dumps(r) if args.json else describe(r), flush=True)
    return (
        0
        if all(r["lost_events"] == 0 and r["seq_gaps"] == 0 and r["published"]["unacked"] == 0 for r in results)
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
