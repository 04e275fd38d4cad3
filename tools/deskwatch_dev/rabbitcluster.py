"""A throwaway 3-node RabbitMQ cluster on loopback (Debian's rabbitmq-server 3.10, MQTT plugin).

Each node runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly (the ``/usr/sbin``
wrapper switches user) with every path and port in a fresh directory; the nodes find
the first one through ``classic_config`` peer discovery and share one Erlang cookie and one
private ``epmd``. The first node starts alone and the others join it once it listens:
started all at once, every node can find only peers whose tables do not exist yet
(``{error,tables_not_present}``), and the nodes waited on each other past a 90 s timeout
in CI (RabbitMQ's cluster-formation guide names this race). The cluster is ready in
about 25 s on two cores (about 50 s with both busy). :meth:`kill` SIGKILLs one node (a crash, not a shutdown) mid-load.

What the cluster gives the contract, and what it lacks, is in
``docs/central/clustered-brokers.md``: MQTT 3.1.1 only (devices fall back), QoS 1 with the
PUBACK after the quorum queue's commit, Last Will; retained messages are per node; no
``$share``, so collectors consume one durable quorum queue over AMQP instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deskwatch_dev.devservers import free_port, stop_process, wait_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


@dataclass
class RabbitNode:
    name: str  # rabbit1@localhost
    amqp_port: int
    mqtt_port: int
    dist_port: int
    base: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def beam_pid(self) -> int | None:
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None


@dataclass
class RabbitCluster:
    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="deskwatch-rabbit-")))
    nodes: list[RabbitNode] = field(default_factory=list)
    epmd_port: int = field(default_factory=free_port)

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "HOME": str(self.root / "home"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        if node is not None:
            env.update(
                RABBITMQ_NODENAME=node.name,
                RABBITMQ_NODE_PORT=str(node.amqp_port),
                RABBITMQ_DIST_PORT=str(node.dist_port),
                RABBITMQ_BASE=str(node.base),
                RABBITMQ_MNESIA_BASE=str(node.base / "mnesia"),
                RABBITMQ_LOG_BASE=str(node.base / "log"),
                RABBITMQ_CONFIG_FILE=str(node.base / "rabbitmq.conf"),
                RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
                RABBITMQ_PID_FILE=str(node.base / "pid"),
            )
        return env

    def start(self, timeout: float = 90.0) -> RabbitCluster:
        if not (RABBIT_BIN / "rabbitmq-server").exists():
            raise FileNotFoundError(f"RabbitMQ not found in {RABBIT_BIN} (apt-get install rabbitmq-server)")
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(f"DESKWATCH{os.urandom(12).hex().upper()}")
        cookie.chmod(0o400)
        (self.root / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.nodes = [
            RabbitNode(f"rabbit{i}@localhost", free_port(), free_port(), free_port(), self.root / f"n{i}")
            for i in range(1, self.size + 1)
        ]
        seed, *joiners = self.nodes
        for node in self.nodes:
            # The seed discovers nobody and so never waits for a peer; the others list only it.
            peers = "" if node is seed else f"cluster_formation.classic_config.nodes.1 = {seed.name}\n"
            node.base.mkdir()
            (node.base / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n"
                f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}\n"
                "mqtt.allow_anonymous = true\nloopback_users = none\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                f"{peers}log.console = false\nlog.file.level = warning\n"
            )
        deadline = time.monotonic() + timeout
        try:
            self._launch(seed)
            wait_port(seed.mqtt_port, max(1.0, deadline - time.monotonic()), seed.proc)
            for node in joiners:
                self._launch(node)
            for node in joiners:
                wait_port(node.mqtt_port, max(1.0, deadline - time.monotonic()), node.proc)
            self._wait_clustered(deadline)
        except Exception as e:
            logs = self._log_tails()  # stop() removes the directory they are in
            self.stop()
            raise RuntimeError(f"RabbitMQ cluster did not start within {timeout:.0f} s: {e}\n{logs}") from e
        return self

    def _log_tails(self, lines: int = 15) -> str:
        out = []
        for node in self.nodes:
            for log in [node.base / "server.out", *sorted((node.base / "log").glob("*.log"))]:
                if log.is_file():
                    tail = log.read_text(errors="replace").splitlines()[-lines:]
                    out.append(
                        f"--- {node.name} {log.name} (exit {node.proc and node.proc.poll()}):\n" + "\n".join(tail)
                    )
        return "\n".join(out)

    def _launch(self, node: RabbitNode) -> None:
        log = open(node.base / "server.out", "ab")  # noqa: SIM115 - the child keeps it
        node.proc = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")], env=self._env(node), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def ctl(self, *args: str, node: RabbitNode | None = None, timeout: float = 30.0) -> str:
        target = node or next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        done = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", target.name, "-q", *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def _wait_clustered(self, deadline: float) -> None:
        while True:
            try:
                status = self.ctl("cluster_status", "--formatter", "json")
                if all(n.name in status.split("running_nodes", 1)[-1] for n in self.nodes):
                    return
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the RabbitMQ nodes did not form a cluster")
            time.sleep(0.5)

    def queue_leader(self, queue: str) -> RabbitNode | None:
        for line in self.ctl("list_queues", "name", "leader").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return next((n for n in self.nodes if n.name == parts[1]), None)
        return None

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL the node's Erlang VM (a crash: no clean hand-over)."""
        pid = node.beam_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if node.proc is not None:
            try:
                node.proc.wait(15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            pid = node.beam_pid()
            if node.proc is not None and node.proc.poll() is None and pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            stop_process(node.proc, signal.SIGTERM, 20)
            node.proc = None
        subprocess.run(
            ["epmd", "-port", str(self.epmd_port), "-kill"], env=self._env(), capture_output=True, check=False
        )
        shutil.rmtree(self.root, ignore_errors=True)
