"""Logging for the appliance: structured journald fields, or a readable stderr line.

Every stage logs with ``logging.getLogger(__name__)`` and puts its structured fields
in ``extra={"journal": {"EVENT_ID": ..., "SCAN_ID": ...}}`` (upper-case keys).
:func:`setup_logging` then sends each record

* to journald through systemd-python's :class:`~systemd.journal.JournalHandler`
  (native protocol: every field filterable with ``journalctl EVENT_TYPE=phone_use``)
  when the journal socket exists and the handler could send a probe, or
* to stderr as one line per record with the same fields appended as ``KEY=value``.

The fallback matters: without journald, systemd-python drops messages silently
(``sd_journal_send`` ignores ENOENT), so a daemon started outside systemd, in a
container or in a test would otherwise log nothing at all.

When stderr is itself connected to journald (``JOURNAL_STREAM``), the fallback
line starts with the syslog ``<N>`` prefix so the priority survives.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "deskwatch"

# Fields the project uses; any other upper-case key in extra["journal"] is passed on too.
KNOWN_FIELDS = ("DESKWATCH_EVENT", "EVENT_ID", "EVENT_TYPE", "SCAN_ID", "DEVICE_ID")

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# journald reserves fields starting with "_"; PRIORITY is derived from the level.
_RESERVED = {
    "MESSAGE",
    "PRIORITY",
    "CODE_FILE",
    "CODE_LINE",
    "CODE_FUNC",
    "LOGGER",
    "THREAD_NAME",
    "SYSLOG_IDENTIFIER",
}

# journald's NOTICE (5): normal but significant. A finding is what the device is for, not a
# fault: `journalctl -p warning` must show faults only, `-p notice` adds the findings.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def syslog_priority(levelno: int) -> int:
    """journald/syslog PRIORITY for a logging level (7 debug ... 2 critical)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= NOTICE:
        return 5
    if levelno >= logging.INFO:
        return 6
    return 7


class ContextFilter(logging.Filter):
    """Adds fields that hold for every record (DEVICE_ID) unless the record sets them."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.fields:
            own = getattr(record, "journal", None)
            merged = dict(self.fields)
            if isinstance(own, Mapping):
                merged.update(own)
            record.journal = merged
        return True


_context = ContextFilter()


def set_log_context(**fields: Any) -> None:
    """Fields added to every following record, e.g. ``set_log_context(DEVICE_ID="desk-0042")``.

    A value of None removes the field.
    """
    for key, value in fields.items():
        if value is None:
            _context.fields.pop(key, None)
        else:
            _context.fields[key] = str(value)


def record_fields(record: logging.LogRecord) -> dict[str, str]:
    """The structured fields of a record, validated and stringified (order kept)."""
    raw = getattr(record, "journal", None)
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = str(key).upper()
        if value is None or name in _RESERVED or not _FIELD_NAME.fullmatch(name):
            continue
        out[name] = str(value)
    return out


def _quote(value: str) -> str:
    if value and not re.search(r'[\s"=\\]', value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class StderrFormatter(logging.Formatter):
    """``LEVEL logger: message KEY=value ...``, one line; a traceback follows indented."""

    def __init__(self, *, syslog_prefix: bool = False, timestamps: bool = True) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "").replace("\n", " | ")
        parts = []
        if self.syslog_prefix:
            parts.append(f"<{syslog_priority(record.levelno)}>")
        if self.timestamps:
            parts.append(self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}")
        parts.append(f"{record.levelname:<7} {record.name}: {message}")
        fields = record_fields(record)
        if fields:
            parts.append(" ".join(f"{k}={_quote(v)}" for k, v in fields.items()))
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + "\n".join("    " + ln for ln in record.exc_text.splitlines())
        return line


Sender = Callable[..., Any]


def _journal_handler_class() -> Any:
    try:
        JournalHandler: Any = importlib.import_module("systemd.journal").JournalHandler
    except ImportError:
        return None

    class StructuredJournalHandler(JournalHandler):  # type: ignore[misc,valid-type,unused-ignore]
        """systemd-python's handler, sending our ``extra["journal"]`` fields as journal fields
        (the stock one would send every LogRecord attribute, the dict as one string)."""

        def emit(self, record: logging.LogRecord) -> None:
            try:
                fields: dict[str, Any] = dict(self._extra)
                fields.update(record_fields(record))
                if record.exc_info and not record.exc_text:
                    record.exc_text = logging.Formatter().formatException(record.exc_info)
                if record.exc_text:
                    fields["EXCEPTION_TEXT"] = record.exc_text
                self.send(
                    record.getMessage(),
                    PRIORITY=str(syslog_priority(record.levelno)),
                    LOGGER=record.name,
                    THREAD_NAME=record.threadName,
                    CODE_FILE=record.pathname,
                    CODE_LINE=record.lineno,
                    CODE_FUNC=record.funcName,
                    **fields,
                )
            except Exception:
                self.handleError(record)

    return StructuredJournalHandler


def journal_handler(sender: Sender | None = None, socket_path: str = JOURNAL_SOCKET) -> logging.Handler | None:
    """A journald handler if journald is reachable and systemd-python works, else None.

    ``sender`` replaces ``systemd.journal.send`` (tests); with it the socket is not checked.
    """
    cls = _journal_handler_class()
    if cls is None:
        return None
    if sender is None:
        if not os.path.exists(socket_path):
            return None
        journal: Any = importlib.import_module("systemd.journal")

        sender = journal.send
    assert sender is not None
    handler: logging.Handler = cls(sender_function=sender, SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    try:  # the probe: a debug line that also proves the native protocol works
        sender(
            "deskwatch logging to journald",
            PRIORITY="7",
            SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER,
        )
    except Exception:
        return None
    return handler


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    stream = stream or sys.stderr
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def print_error(text: str, stream: TextIO | None = None) -> None:
    """An error for a person on stderr (a config's problems, before logging is set up): when
    stderr is journald's stream (the daemon under systemd), each line gets the syslog prefix of
    an error, as a logged error would; journald files a plain line at the unit's default, info."""
    out = stream or sys.stderr
    if stderr_is_journal(out):
        text = "\n".join(f"<{syslog_priority(logging.ERROR)}>{line}" for line in text.splitlines())
    print(text, file=out)


def setup_logging(
    level: str = "info",
    *,
    target: str | None = None,
    stream: TextIO | None = None,
    sender: Sender | None = None,
    device_id: str | None = None,
) -> logging.Handler:
    """Configure the root logger once for the daemon and the commands; returns the handler.

    ``target`` is "journal", "stderr" or "auto" (default, also from the environment
    variable ``DESKWATCH_LOG_TARGET``). Calling it again replaces the earlier handler.
    """
    levelno = _LEVELS.get(level.lower()) if isinstance(level, str) else None
    if levelno is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    target = target or os.environ.get("DESKWATCH_LOG_TARGET", "auto")
    handler: logging.Handler | None = None
    if target in ("auto", "journal"):
        handler = journal_handler(sender)
    if handler is None:
        out = stream or sys.stderr
        via_journal = stderr_is_journal(out)
        handler = logging.StreamHandler(out)
        handler.setFormatter(StderrFormatter(syslog_prefix=via_journal, timestamps=not via_journal))
    handler.set_name("deskwatch")
    handler.addFilter(_context)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "deskwatch":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    if device_id is not None:
        set_log_context(DEVICE_ID=device_id)
    return handler


def describe_handler(handler: logging.Handler) -> str:
    """'journald' or 'stderr', for the startup log line."""
    return "stderr" if isinstance(handler, logging.StreamHandler) else "journald"
