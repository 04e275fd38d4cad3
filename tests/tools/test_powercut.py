"""Power cuts under a device queueing and delivering scans (tools/deskwatch_dev/powercut.py).

A User-Mode Linux guest runs the real outbox and delivery code on ext4 over a disk with a
volatile write cache; the power is cut (SIGKILL to the guest, the disk's cache dropped
block by block at random) at random moments, many times. Every scan the guest saw
acknowledged must arrive whole, every event with its own seq, and every boot must find
a sound database. CI runs DESKWATCH_POWERCUT_CUTS cuts (default 10, ~5 s each);
``make powercut CUTS=200`` runs many more. The second test is the harness's own check:
with ``synchronous=OFF`` it must see acknowledged events lost.
"""

from __future__ import annotations

import os

import pytest

from deskwatch_dev import powercut

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(powercut.missing_requirements() is not None, reason=str(powercut.missing_requirements())),
]
CUTS = int(os.environ.get("DESKWATCH_POWERCUT_CUTS", "10"))


def test_power_cuts_lose_no_acknowledged_event() -> None:
    result = powercut.run(CUTS, seed=CUTS)
    print(result.summary())
    assert result.integrity_failures == 0, [b.lines for b in result.boots]
    assert result.scans_acked >= 5 * CUTS and result.events_acked > 0
    assert result.events_lost == 0 and result.scans_lost == 0
    assert result.events_delivered == result.events_acked
    assert result.seq_reused == 0


def test_the_harness_catches_an_outbox_without_fsync() -> None:
    result = powercut.run(3, sync="OFF", seed=7)
    print(result.summary())
    assert result.events_lost > 0 or result.scans_lost > 0
