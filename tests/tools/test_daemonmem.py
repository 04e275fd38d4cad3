"""The daemon memory watcher (issue 13) reads /proc/PID/status and the daemon's log lines;
only that parsing is tested here (a real run takes ~6 s a scan: run the tool by hand)."""

from __future__ import annotations

from deskwatch_dev.daemonmem import log_event, parse_status, summary

STATUS = """\
Name:\tpython
VmPeak:\t 1405068 kB
VmHWM:\t  208896 kB
VmRSS:\t  197632 kB
RssAnon:\t  136192 kB
RssFile:\t   61440 kB
RssShmem:\t       0 kB
Threads:\t9
VmSwap:\tnot a number kB
"""


def test_status_memory_lines_in_mb_others_ignored() -> None:
    assert parse_status(STATUS) == {"VmHWM": 204.0, "VmRSS": 193.0, "RssAnon": 133.0, "RssFile": 60.0, "RssShmem": 0.0}
    assert parse_status("VmHWM:\t12 MB\nRssAnon: x kB\n") == {}  # another unit or no number: left out


def test_log_lines_give_their_deskwatch_event() -> None:
    started = (
        "2025-01-01T10:00:00.000 INFO    deskwatch.app: deskwatch 1.0 started: ... DESKWATCH_EVENT=started DEVICE_ID=d"
    )
    scan = (
        "2025-01-01T10:00:05.000 INFO    deskwatch.scanner: scan 0193 (schedule) done in 812 ms: 5 frames, "
        "1 persons, 0 bystanders: clear DESKWATCH_EVENT=scan SCAN_ID=0193 SCAN_OUTCOME=clear"
    )
    assert log_event(started) == "started" and log_event(scan) == "scan"
    assert log_event("INFO    deskwatch.vision: identity check on: 1 templates") is None
    assert log_event("a message quoting XDESKWATCH_EVENT=scan") is None  # a whole word only


def test_summary_names_the_highest_scan() -> None:
    def status(hwm: float, anon: float) -> dict[str, float]:
        return {"VmHWM": hwm, "VmRSS": hwm - 5, "RssAnon": anon, "RssFile": 60.0}

    raw = {
        "ready": status(170.0, 120.0),
        "per_scan": [status(195.0, 130.0), status(201.5, 133.0), status(197.0, 131.0)],
        "idle": status(192.0, 131.0),
        "findings": 2,
    }
    s = summary(raw)
    assert (s["scans"], s["scans_peak_rss_mb"], s["peak_scan"], s["load_peak_rss_mb"]) == (3, 201.5, 2, 170.0)
    assert s["at_peak_scan_end"]["RssAnon"] == 133.0 and s["scan_peaks_mb"] == [195.0, 201.5, 197.0]
