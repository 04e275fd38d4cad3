"""service/logs.py: journald fields through systemd-python, readable stderr fallback."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from deskwatch.system import logs
from deskwatch.system.logs import StderrFormatter, setup_logging, syslog_priority
from tests.support.common import REPO


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    logs.set_log_context(DEVICE_ID=None)


def test_stderr_fallback_one_line_with_fields() -> None:
    buf = io.StringIO()
    handler = setup_logging("info", target="stderr", stream=buf, device_id="desk-0042")
    assert logs.describe_handler(handler) == "stderr"
    log = logging.getLogger("deskwatch.scanner")
    log.debug("not shown at info")
    log.log(
        logs.NOTICE,
        "finding %s in scan",
        "phone_use",
        extra={
            "journal": {
                "DESKWATCH_EVENT": "finding",
                "EVENT_ID": "0193-a",
                "EVENT_TYPE": "phone_use",
                "SCAN_ID": "s 1",
            }
        },
    )
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert "NOTICE  deskwatch.scanner: finding phone_use in scan" in line
    assert line.endswith(
        'DEVICE_ID=desk-0042 DESKWATCH_EVENT=finding EVENT_ID=0193-a EVENT_TYPE=phone_use SCAN_ID="s 1"'
    )


def test_stderr_multiline_message_stays_one_line_and_traceback_follows() -> None:
    buf = io.StringIO()
    setup_logging("debug", target="stderr", stream=buf)
    log = logging.getLogger("deskwatch.x")
    log.info("first\nsecond")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", extra={"journal": {"SCAN_ID": "abc"}})
    out = buf.getvalue().splitlines()
    assert out[0].endswith("INFO    deskwatch.x: first | second")
    assert out[1].endswith("ERROR   deskwatch.x: failed SCAN_ID=abc")
    assert out[-1].strip() == "RuntimeError: boom"
    assert all(x.startswith("    ") for x in out[2:])


def test_syslog_prefix_when_stderr_is_journal_stream() -> None:
    rec = logging.LogRecord("deskwatch", logging.ERROR, __file__, 1, "no camera", (), None)
    rec.journal = {"PRIORITY": "0", "lower": "x", "EVENT_ID": None, "SCAN_ID": 7}
    line = StderrFormatter(syslog_prefix=True, timestamps=False).format(rec)
    # PRIORITY comes from the level, never from the caller; invalid and empty fields are dropped
    assert line == "<3> ERROR   deskwatch: no camera LOWER=x SCAN_ID=7"


def test_priority_mapping() -> None:
    assert [syslog_priority(x) for x in (10, 20, logs.NOTICE, 30, 40, 50)] == [7, 6, 5, 4, 3, 2]


def test_findings_are_notices_and_faults_warnings() -> None:
    """`journalctl -p warning` shows faults only: a phone call is a finding (NOTICE), not a fault."""
    sent: list[tuple[str, dict[str, Any]]] = []
    setup_logging("info", target="journal", sender=lambda m, **f: sent.append((m, f)), device_id="desk-7")
    source = (REPO / "daemon/deskwatch/scanner.py").read_text()
    assert 'log.log(\n                NOTICE,\n                "finding %s in scan %s' in source
    logging.getLogger("deskwatch.scanner").log(
        logs.NOTICE, "finding phone_use", extra={"journal": {"EVENT_TYPE": "phone_use"}}
    )
    logging.getLogger("deskwatch.camera").warning("camera unplugged")
    assert [(m, f["PRIORITY"]) for m, f in sent][-2:] == [("finding phone_use", "5"), ("camera unplugged", "4")]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("verbose", target="stderr")


def test_journal_handler_sends_structured_fields() -> None:
    pytest.importorskip("systemd.journal")
    sent: list[tuple[str, dict[str, Any]]] = []

    def sender(message: str, **fields: Any) -> None:
        sent.append((message, fields))

    handler = setup_logging("info", target="journal", sender=sender, device_id="desk-7")
    assert logs.describe_handler(handler) == "journald"
    logging.getLogger("deskwatch.mqtt").info(
        "event %s delivered",
        "e1",
        extra={"journal": {"EVENT_ID": "e1", "DESKWATCH_EVENT": "delivered"}},
    )
    message, fields = sent[-1]
    assert message == "event e1 delivered"
    assert fields["PRIORITY"] == "6"
    assert fields["EVENT_ID"] == "e1" and fields["DESKWATCH_EVENT"] == "delivered"
    assert fields["DEVICE_ID"] == "desk-7"
    assert fields["SYSLOG_IDENTIFIER"] == "deskwatch"
    assert fields["LOGGER"] == "deskwatch.mqtt"
    assert "JOURNAL" not in fields and "MSG" not in fields


def test_falls_back_to_stderr_without_journal_socket(tmp_path: Any) -> None:
    assert logs.journal_handler(socket_path=str(tmp_path / "no-socket")) is None
    buf = io.StringIO()
    if not os.path.exists(logs.JOURNAL_SOCKET):
        handler = setup_logging("info", stream=buf)
        assert logs.describe_handler(handler) == "stderr"
        logging.getLogger("deskwatch").info("visible")
        assert "visible" in buf.getvalue()


# A child in its own mount namespace gets a private /run/systemd with a datagram socket
# where journald's would be, so systemd-python's real sd_journal_sendv is exercised.
_CHILD = textwrap.dedent(
    """
    import json, logging, os, socket, struct, sys
    os.makedirs("/run/systemd/journal", exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("/run/systemd/journal/socket")
    s.settimeout(5)
    from deskwatch.system.logs import setup_logging, describe_handler
    h = setup_logging("info", device_id="desk-9")
    logging.getLogger("deskwatch.scanner").warning(
        "scan %s done", "s1", extra={"journal": {"SCAN_ID": "s1", "DESKWATCH_EVENT": "scan", "EVENT_TYPE": "low_light"}})
    def parse(data):
        fields, i = {}, 0
        while i < len(data):
            nl = data.index(b"\\n", i)
            line = data[i:nl]
            if b"=" in line:
                k, v = line.split(b"=", 1); fields[k.decode()] = v.decode(); i = nl + 1
            else:
                n = struct.unpack("<Q", data[nl + 1:nl + 9])[0]
                fields[line.decode()] = data[nl + 9:nl + 9 + n].decode(); i = nl + 9 + n + 1
        return fields
    msgs = [parse(s.recv(65536)), parse(s.recv(65536))]
    print(json.dumps({"handler": describe_handler(h), "messages": msgs}))
    """
)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private /run/systemd",
)
def test_real_journald_protocol_in_private_namespace() -> None:
    pytest.importorskip("systemd.journal")
    if not os.path.isdir("/run/systemd"):
        pytest.skip("/run/systemd missing on this host")
    script = 'mount -t tmpfs none /run/systemd && exec "$0" -c "$1"'
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, sys.executable, _CHILD],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DESKWATCH_LOG_TARGET": "auto"},
    )
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("mount namespaces not permitted here")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["handler"] == "journald"
    probe, record = result["messages"]
    assert probe["PRIORITY"] == "7"
    assert record["MESSAGE"] == "scan s1 done"
    assert record["PRIORITY"] == "4"
    assert record["SCAN_ID"] == "s1" and record["EVENT_TYPE"] == "low_light" and record["DESKWATCH_EVENT"] == "scan"
    assert record["DEVICE_ID"] == "desk-9"
    assert record["SYSLOG_IDENTIFIER"] == "deskwatch"


def test_stderr_connected_to_journald_gets_syslog_prefix(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd sets JOURNAL_STREAM=dev:inode of the stream it connected stderr to
    with open(tmp_path / "stream", "w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.stderr_is_journal(stream)
        setup_logging("info", target="stderr", stream=stream)
        logging.getLogger("deskwatch").error("camera gone", extra={"journal": {"DESKWATCH_EVENT": "camera"}})
        stream.flush()
        stream.seek(0)
        assert stream.read() == "<3> ERROR   deskwatch: camera gone DESKWATCH_EVENT=camera\n"
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not logs.stderr_is_journal(io.StringIO())
