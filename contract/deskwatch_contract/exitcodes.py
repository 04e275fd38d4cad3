"""Exit codes of every deskwatch command (appliance, companion, collector).

They follow ``sysexits.h`` where it has a word for the case, so that systemd's
``RestartPreventExitStatus=`` and scripts can tell a bad config from a broker outage.
"""

from __future__ import annotations

OK = 0
FAIL = 1  # a check failed (selftest FAIL, a scan found a problem, a job failed)
USAGE = 2  # bad arguments
UNAVAILABLE = 69  # a service is unavailable: broker, camera, daemon socket, database
SOFTWARE = 70  # internal error (a bug: the traceback is logged)
CONFIG = 78  # configuration error (every problem listed with its line)

SUMMARY = "Exit codes: 0 ok, 1 check failed, 2 usage, 69 unavailable, 70 internal error, 78 config error."
