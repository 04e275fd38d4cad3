"""Shared fixtures: each area keeps its own in tests/support/ and is listed here."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.common",
    "tests.support.mosquitto",
    "tests.support.policy",
    "tests.support.service",
    "tests.support.vision",
    "tests.support.desk",
    "tests.support.brokers_other",
    "tests.support.collector",
    "tests.support.postgres",
]
