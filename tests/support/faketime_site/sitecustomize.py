"""Put on PYTHONPATH only for a process run under libfaketime with its monotonic clock real
(``FAKETIME_DONT_FAKE_MONOTONIC=1``), as tests/desk/test_e2e.py runs the daemon.

libfaketime 0.9.10 then fails every ``time.sleep`` with EINVAL (Python sleeps with
``clock_nanosleep`` on CLOCK_MONOTONIC to an absolute deadline, which the library shifts by
the fake offset), and with the monotonic clock faked too, ``threading.Event.wait`` hangs.
A daemon that slept would fail in the test only, for the library's sake: here ``time.sleep``
waits in ``select()`` on the real monotonic clock, as a sleep does on the appliance."""

import os
import select
import time

if "faketime" in os.environ.get("LD_PRELOAD", ""):

    def _sleep(seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while (left := end - time.monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep
