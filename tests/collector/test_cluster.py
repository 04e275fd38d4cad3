"""The collector on a real 3-node RabbitMQ cluster, one node SIGKILLed mid-load.

Devices publish MQTT 3.1.1 (RabbitMQ 3.10 has no MQTT 5) spread over the three nodes and
move to the next node when theirs dies; two collectors consume the replicated quorum
queue over AMQP. The queue's leader is killed while the fleet publishes: every event the
devices published must be stored, with no gap in any device's seq, and every publish
must have been acknowledged to its device. The long fleet runs use the same code:
``make fleet-load`` (docs/central/collector.md).
"""

from __future__ import annotations

import pytest

from deskwatch_dev.loadtest import Profile, describe, run
from deskwatch_dev.rabbitcluster import RABBIT_BIN

pytestmark = [pytest.mark.slow, pytest.mark.broker]


@pytest.fixture
def rabbitmq_installed() -> None:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        pytest.fail("apt-get install rabbitmq-server (tools/bootstrap.sh installs it)")


def test_a_node_killed_mid_load_loses_nothing_and_leaves_no_gap(rabbitmq_installed: None) -> None:
    result = run(devices=60, multiplier=90, duration=16, collectors=2, db="sqlite", connections=6,
                 profile=Profile(violation_share=0.3), drain_timeout=60, cluster=True, kill_node_at=6)  # fmt: skip
    print(describe(result))
    pub, stored = result["published"], result["stored"]
    assert result["killed"]["role"] == "queue leader" and 5 <= result["killed"]["at_s"] < 16  # mid-load
    assert result["publisher_reconnects"] >= 1  # some devices were on the killed node
    assert pub["events"] >= 50 and pub["unacked"] == 0
    assert result["lost_events"] == 0 and result["seq_gaps"] == 0 and result["rejects"] == 0
    assert stored["events"] == pub["events"] and stored["scans"] == pub["scans"]
    assert stored["evidence_verified"] == pub["evidence"]
    assert all(c["events_stored"] > 0 for c in result["collector"])  # both collectors took a share
