"""A bounded run of the fleet load tool: 50 simulated devices over TLS, two collectors, zero loss."""

from __future__ import annotations

import pytest

from deskwatch_dev.loadtest import Profile, describe, run

pytestmark = [pytest.mark.slow, pytest.mark.broker]


def test_fleet_smoke_two_collectors_share_the_load_without_loss() -> None:
    # 50 devices scanning every ~2 s for 4 s: ~100 scans, ~25 events with ~20 KB evidence each.
    result = run(devices=50, multiplier=60, duration=4, collectors=2, db="sqlite", connections=4,
                 profile=Profile(violation_share=0.3), drain_timeout=20, tls=True)  # fmt: skip
    assert result["broker"] == "mosquitto-tls"
    print(describe(result))
    pub, stored = result["published"], result["stored"]
    assert pub["events"] >= 10 and pub["evidence"] >= 5 and pub["unacked"] == 0
    assert result["lost_events"] == 0 and result["seq_gaps"] == 0 and result["rejects"] == 0
    assert stored["events"] == pub["events"]
    assert stored["evidence_verified"] == pub["evidence"] and stored["scans"] == pub["scans"]
    shares = [c["events_stored"] for c in result["collector"]]
    assert sum(shares) == pub["events"] and min(shares) > 0, shares
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] < 5000
    assert all(c["peak_rss_mib"] > 0 for c in result["collector"])
