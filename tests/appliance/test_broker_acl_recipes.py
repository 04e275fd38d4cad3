"""docs/central/clustered-brokers.md's ACL recipes for EMQX, VerneMQ and RabbitMQ grant exactly
``access.PERMISSIONS``: each recipe is read from the page, rendered for a small fleet the way
the page says (its device and companion parts once per desk, its central part once), and
evaluated with that broker's own matching rules for every identity x topic x publish/subscribe;
the RabbitMQ one also on a real RabbitMQ 3.10.

The brokers' rules, as their documentation states them:

- EMQX 5 (file authorizer): rules from the top, the first whose client, action and topic
  match decides, ``no_match = deny``; a topic matches a rule's filter by MQTT matching, a
  subscription filter likewise, its own ``+``/``#`` taken as plain levels.
- VerneMQ ``vmq_acl``: Mosquitto's ``acl_file`` syntax; a user may publish (``write``) or
  subscribe (``read``) where one of its ``topic`` lines' filters matches, as above.
- RabbitMQ: the topic is the routing key on ``amq.topic`` (``/`` -> ``.``, ``+`` -> ``*``);
  a publish needs the user's ``write`` regex, a subscription its ``read`` regex, each
  searched in the key (``re.search``: an unanchored regex matches anywhere).
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_contract import access, ca
from deskwatch_contract.access import Identity
from deskwatch_dev.rabbitcluster import RABBIT_BIN, RabbitCluster
from tests.support.common import REPO

PAGE = REPO / "docs" / "central" / "clustered-brokers.md"
DESKS = [("acme", "desk-a"), ("acme", "desk-b"), ("beta", "desk-a")]  # desk-a twice: ids are per site
CENTRAL = access.central("deskwatch-central")
IDENTITIES = [access.device(s, d) for s, d in DESKS] + [access.companion(s, d) for s, d in DESKS] + [CENTRAL]
EVIDENCE = str(uuid.UUID(int=7))


def recipes() -> dict[str, str]:
    found = re.findall(r"<!-- acl-recipe: (\w+) -->\n```[a-z]*\n(.*?)```", PAGE.read_text(), re.S)
    return dict(found)


def render(block: str, comment: str) -> str:
    """The recipe for the fleet: its sections, each headed by a comment naming the role."""
    sections: dict[str, list[str]] = {}
    role = ""
    for line in block.splitlines():
        if line.startswith(comment):
            head = line[len(comment) :].strip()
            role = next(r for r in ("companion", "central", "device", "once") if r in head)
            continue
        sections.setdefault(role, []).append(line)
    assert set(sections) <= {"device", "companion", "central", "once"} and "" not in sections, sections.keys()
    out: list[str] = []
    for role in ("device", "companion"):
        for site, device in DESKS:
            out += [ln.replace("SITE", site).replace("DEVICE", device) for ln in sections[role]]
    out += [ln.replace("NAME", CENTRAL.name) for ln in sections["central"]]
    out += sections.get("once", [])
    return "\n".join(out) + "\n"


def matches(name: str, topic_filter: str) -> bool:
    """MQTT matching, a subscription filter's own wildcards taken as plain levels."""
    n, f = name.split("/"), topic_filter.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(n) or (level != "+" and level != n[i]):
            return False
    return len(n) == len(f)


def expected(who: Identity, action: str, topic: str) -> bool:
    filters = who.publish_filters() if action == "publish" else who.read_filters()
    return any(matches(topic, f) for f in filters)


# -- the brokers' evaluators -------------------------------------------------------------------
Decide = Callable[[Identity, str, str], bool]


def emqx(text: str) -> Decide:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("%%"):
            continue
        m = re.fullmatch(
            r'\{(allow|deny), (all|\{username, "([^"]+)"\})(?:, (publish|subscribe|all), \[(.*)\])?\}\.', line
        )
        assert m, f"not an EMQX rule this test reads: {line}"
        topics = re.findall(r'"([^"]*)"', m[5]) if m[5] is not None else None
        rules.append((m[1], m[3], m[4] or "all", topics))

    def decide(who: Identity, action: str, topic: str) -> bool:
        for permission, user, act, topics in rules:
            if user is not None and user != who.cn:
                continue
            if act not in ("all", action):
                continue
            if topics is None or any(matches(topic, f) for f in topics):
                return permission == "allow"
        return False  # authorization.no_match = deny

    return decide


def vmq_acl(text: str) -> Decide:
    users: dict[str, list[tuple[str, str]]] = {}
    user = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "user":
            user = rest
            users.setdefault(user, [])
            continue
        m = re.fullmatch(r"topic (read|write) (\S+)", line)
        assert m and user is not None, f"not a vmq_acl line this test reads: {line!r}"
        users[user].append((m[1], m[2]))

    def decide(who: Identity, action: str, topic: str) -> bool:
        need = "write" if action == "publish" else "read"
        return any(kind == need and matches(topic, f) for kind, f in users.get(who.cn, []))

    return decide


def rabbit_commands(text: str) -> list[list[str]]:
    return [
        shlex.split(part) for line in text.splitlines() if line.startswith("rabbitmqctl") for part in line.split("&&")
    ]


def routing_key(topic: str) -> str:
    return topic.replace("/", ".").replace("+", "*")


def rabbitmq(text: str) -> Decide:
    perms: dict[str, tuple[str, str]] = {}
    for cmd in rabbit_commands(text):
        if cmd[1] == "set_topic_permissions":
            assert cmd[2:4] == ["-p", "/"] and cmd[5] == "amq.topic", cmd
            perms[cmd[4]] = (cmd[6], cmd[7])

    def decide(who: Identity, action: str, topic: str) -> bool:
        if who.cn not in perms:
            return False
        write, read = perms[who.cn]
        return re.search(write if action == "publish" else read, routing_key(topic)) is not None

    return decide


# -- the matrix -----------------------------------------------------------------------------
def topics() -> list[str]:
    out = {"#", "deskwatch/v1/#", "deskwatch/v1/+/+/event", "deskwatch/v1/+/+/cmd/pause", "deskwatch/v1/acme/event"}
    suffixes = {s for role in ("device", "companion") for a in [access.PERMISSIONS[role]] for s in a.publish + a.read}
    for site, device in DESKS:
        scope = f"deskwatch/v1/{site}/{device}/"
        out |= {scope + s.replace("+", EVIDENCE) for s in suffixes}
        out |= {
            scope + "evidence/+",
            scope + "#",
            scope + "cmd/+",
            scope + "companion/event",
            scope + "companion/cmd/pause",
        }
        out.add(f"deskwatch/v1/x/{site}/{device}/event")  # the hole a "+/<CN>/#" rule opens
    return sorted(out)


def cases() -> Iterator[tuple[Identity, str, str]]:
    for who in IDENTITIES:
        for topic in topics():
            yield who, "subscribe", topic
            if "+" not in topic and "#" not in topic:
                yield who, "publish", topic


def mismatches(decide: Decide) -> list[str]:
    out = []
    for who, action, topic in cases():
        got, want = decide(who, action, topic), expected(who, action, topic)
        if got != want:
            out.append(
                f"{who.cn} {action} {topic}: recipe {'allows' if got else 'denies'}, PERMISSIONS {'allows' if want else 'denies'}"
            )
    return out


def test_the_matrix_covers_every_role_both_ways() -> None:
    """The cases are not vacuous: each identity has topics it may and may not publish and read."""
    for who in IDENTITIES:
        for action in ("publish", "subscribe"):
            answers = {expected(w, a, t) for w, a, t in cases() if w == who and a == action}
            assert answers == {True, False}, (who.cn, action)


def test_the_page_has_a_recipe_for_each_broker() -> None:
    assert set(recipes()) == {"emqx", "vernemq", "rabbitmq"}


@pytest.mark.parametrize(
    ("broker", "comment", "evaluate"),
    [("emqx", "%%", emqx), ("vernemq", "#", vmq_acl), ("rabbitmq", "#", rabbitmq)],
)
def test_each_recipe_grants_exactly_the_permissions(broker: str, comment: str, evaluate: Any) -> None:
    block = recipes()[broker]
    bad = mismatches(evaluate(render(block, comment)))
    assert not bad, f"{len(bad)} differences, e.g.:\n" + "\n".join(bad[:15])


def test_the_acl_deskwatch_ca_generates_is_the_vernemq_recipe() -> None:
    """The page tells VerneMQ users to use 'deskwatch-ca acl --engine mosquitto': it decides the same."""
    generated = ca.mosquitto_acl(IDENTITIES)
    assert mismatches(vmq_acl(generated)) == []


# -- the RabbitMQ recipe on a real RabbitMQ ------------------------------------------------------
class RabbitClient:
    """One MQTT 3.1.1 connection as ``who``, its network loop run here (no thread): RabbitMQ
    closes the connection on a refused publish or subscription."""

    def __init__(self, port: int, who: Identity) -> None:
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:12]}", protocol=mqtt.MQTTv311
        )
        self.c.username_pw_set(who.cn, "unused")
        self.gone = False
        self.connected = False
        self.answers: dict[int, bool] = {}
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_publish = lambda c, u, mid, *a: self.answers.__setitem__(mid, True)
        self.c.on_subscribe = lambda c, u, mid, codes, *a: self.answers.__setitem__(
            mid, not any(getattr(rc, "is_failure", rc == 128) for rc in codes)
        )
        self.c.connect("127.0.0.1", port)
        self._run(lambda: self.connected)
        assert self.connected, f"{who.cn} could not connect"

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, *a: Any) -> None:
        self.connected = not rc.is_failure
        self.gone = rc.is_failure

    def _on_disconnect(self, *a: Any) -> None:
        self.gone = True

    def _run(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not done() and not self.gone and time.monotonic() < deadline:
            self.c.loop(0.05)

    def ask(self, action: str, topic: str) -> bool:
        if action == "publish":
            mid = self.c.publish(topic, b"x", qos=1).mid
        else:
            mid = self.c.subscribe(topic, qos=1)[1]
        self._run(lambda: mid in self.answers)
        assert mid in self.answers or self.gone, f"no answer to {action} {topic}"
        return self.answers.get(mid, False)

    def close(self) -> None:
        self.c.disconnect()


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitCluster]:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        pytest.fail("apt-get install rabbitmq-server (tools/bootstrap.sh installs it)")
    cluster = RabbitCluster(size=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.broker
def test_the_rabbitmq_recipe_on_a_real_rabbitmq(rabbit: RabbitCluster) -> None:
    """The recipe's commands as the page gives them (only clear_password left out: this test
    logs in with the password add_user set, on a plain listener), then every case asked of
    the broker: a publish is allowed when PUBACKed, a subscription when its SUBACK grants it."""
    whos = [access.device("acme", "desk-a"), access.companion("acme", "desk-a"), CENTRAL]
    for cmd in rabbit_commands(render(recipes()["rabbitmq"], "#")):
        assert cmd[0] == "rabbitmqctl"
        # the other desks' users matter only as users these three are not
        if cmd[1] != "clear_password" and any(who.cn in cmd for who in whos):
            rabbit.ctl(*cmd[1:])
    port = rabbit.nodes[0].mqtt_port
    bad = []
    for who in whos:
        client = RabbitClient(port, who)
        try:
            for w, action, topic in cases():
                if w != who:
                    continue
                if client.gone:
                    client.close()
                    client = RabbitClient(port, who)
                got = client.ask(action, topic)
                if got != expected(who, action, topic):
                    bad.append(f"{who.cn} {action} {topic}: RabbitMQ {'allows' if got else 'denies'}")
        finally:
            client.close()
    assert not bad, f"{len(bad)} differences, e.g.:\n" + "\n".join(bad[:15])
