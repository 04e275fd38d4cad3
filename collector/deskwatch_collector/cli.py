"""``deskwatch-collector``: the reference central-side consumer.

    deskwatch-collector run --broker 127.0.0.1:1883 --db /var/lib/deskwatch-collector/collector.db --http 127.0.0.1:8080
    deskwatch-collector users add alice --site acme           # password read from stdin
    deskwatch-collector users add w-1 --role worker --worker-id w-1 --site acme
    deskwatch-collector users add bob --role worker --worker-id w-1 --site acme --new-holder   # w-1 is bob's now
    deskwatch-collector users list | reset NAME | disable NAME | enable NAME | remove NAME
    deskwatch-collector purge --db ... --retention-days 20
    deskwatch-collector report --db ...                       # counts, seq gaps, deletions

Exit codes follow the daemon's: 0 ok, 2 usage, 69 broker/database unavailable, 78 bad settings.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from deskwatch_collector import MAX_RETENTION_DAYS
from deskwatch_collector.amqp import QueueConsumer, QueueSettings
from deskwatch_collector.auth import IDLE_SECONDS
from deskwatch_collector.console import schema as console_schema
from deskwatch_collector.ingest import IngestStats, missing_seqs
from deskwatch_collector.retention import RetentionThread, check_retention_days, purge_evidence
from deskwatch_collector.store import SchemaTooNew, Store, StoreUnavailable, open_store, redact_dsn
from deskwatch_collector.subscriber import Subscriber, SubscriberSettings
from deskwatch_collector.validate import Validator, load_evidence_keys
from deskwatch_contract import exitcodes
from deskwatch_contract.cliargs import seconds, seconds_at_least

logger = logging.getLogger("deskwatch_collector")

DEFAULT_DB = "/var/lib/deskwatch-collector/collector.db"


def _hostport(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None


def _instant(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-12-07T08:00+01:00, got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone: add one (Z, +01:00) so the time is not guessed")
    return when.timestamp()


def _retention(text: str) -> float:
    try:
        return check_retention_days(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deskwatch-collector", description="Reference consumer of deskwatch topics.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=os.environ.get("DESKWATCH_COLLECTOR_DB", DEFAULT_DB),
            help="SQLite file (default %(default)s) or postgresql://user@host:port/dbname",
        )

    run = sub.add_parser("run", help="subscribe, store, purge and serve the supervisor page")
    db_arg(run)
    run.add_argument("--broker", default="127.0.0.1:1883", type=lambda t: _hostport(t, 1883), help="HOST:PORT")
    run.add_argument(
        "--amqp",
        action="append",
        default=[],
        metavar="URL",
        help="consume the RabbitMQ quorum queue instead of MQTT (amqp://user:pass@host:port/vhost; repeat one per"
        " node: the next is tried when one fails); see docs/central/clustered-brokers.md",
    )
    run.add_argument("--amqp-queue", default="deskwatch-collectors", help="the quorum queue (declared if missing)")
    run.add_argument(
        "--group", default="deskwatch-collectors", help="shared-subscription group (same on every collector)"
    )
    run.add_argument("--client-id", default=None, help="MQTT client id; stable per collector (persistent session)")
    run.add_argument("--username")
    run.add_argument("--password-file", type=Path, help="file holding the broker password")
    run.add_argument("--ca-file", help="CA bundle: enables TLS")
    run.add_argument("--cert-file", help="client certificate (mutual TLS)")
    run.add_argument("--key-file", help="client key (mutual TLS)")
    run.add_argument(
        "--evidence-key",
        action="append",
        default=[],
        metavar="FILE",
        help="private key that opens sealed evidence (deskwatch-ca evidence-key); repeat during a key rotation",
    )
    run.add_argument("--http", default="127.0.0.1:8080", help="HOST:PORT of the supervisor page, or 'off'")
    run.add_argument("--cookie-secure", action="store_true", help="mark the session cookie Secure (behind HTTPS)")
    run.add_argument(
        "--idle-timeout",
        type=seconds_at_least(60.0),
        default=float(IDLE_SECONDS),
        metavar="SECONDS",
        help="sign a console session out after this long without the person's requests; the pages' background"
        " poll does not count (default %(default)g: 30 minutes; a session ends after 12 hours regardless)",
    )
    run.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS[/BITS]",
        help="a reverse proxy whose X-Forwarded-For is believed (repeat); without it the header is ignored",
    )
    run.add_argument(
        "--retention-days",
        type=_retention,
        default=float(MAX_RETENTION_DAYS),
        help=f"evidence is deleted after this many days (at most {MAX_RETENTION_DAYS})",
    )
    run.add_argument("--purge-every", type=seconds_at_least(1.0), default=600.0, help="seconds between evidence purges")
    run.add_argument("--batch-max", type=int, default=200, help="messages per database transaction")
    run.add_argument("--stats-every", type=seconds, default=60.0, help="seconds between counter log lines (0: never)")

    def account_args(p: argparse.ArgumentParser) -> None:
        db_arg(p)
        p.add_argument("username")
        p.add_argument("--site", action="append", required=True, help="site the account may see (repeat)")
        p.add_argument("--role", default="supervisor", choices=["supervisor", "worker"])
        p.add_argument("--worker-id", help="for worker accounts: the worker_id in the events")

    def holder_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--new-holder",
            action="store_true",
            help="the worker id passes to a new person: this account sees its findings from --holder-since on, and"
            " no account of an earlier holder sees those",
        )
        p.add_argument(
            "--holder-since",
            type=_instant,
            metavar="TIME",
            help="with --new-holder: when the worker id passed, ISO 8601 with its zone (2026-12-07T08:00+01:00);"
            " default now",
        )

    add_user_parser = sub.add_parser("add-user", help="create or update an account (the same as 'users add --replace')")
    account_args(add_user_parser)
    holder_args(add_user_parser)
    users = sub.add_parser("users", help="list, add, reset, disable, enable or remove accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    db_arg(users_sub.add_parser("list", help="accounts, their role, sites and open sessions"))
    add = users_sub.add_parser("add", help="create an account (password from stdin)")
    account_args(add)
    holder_args(add)
    add.add_argument("--replace", action="store_true", help="overwrite an existing account (its sessions end)")
    for name, text in (
        ("reset", "set a new password (from stdin); every session of the account ends"),
        ("disable", "refuse sign-in and end every session; the account stays"),
        ("enable", "allow sign-in again"),
        ("remove", "delete the account and its sessions"),
    ):
        p = users_sub.add_parser(name, help=text)
        db_arg(p)
        p.add_argument("username")

    purge = sub.add_parser("purge", help="delete evidence past the retention now")
    db_arg(purge)
    purge.add_argument("--retention-days", type=_retention, default=float(MAX_RETENTION_DAYS))

    report = sub.add_parser("report", help="counts, per-device seq gaps and evidence deletions as JSON")
    db_arg(report)
    from deskwatch_collector import jobs

    jobs.add_parser(sub)  # remote jobs (issue 17): no database needed
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The database holds photos and password hashes: whatever this process creates is private.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "jobs":
        from deskwatch_collector import jobs

        return jobs.run_command(args)
    try:
        store = open_store(args.db)
        console_schema.migrate(store)  # the console's review trail, reasons and indexes
    except StoreUnavailable as exc:
        print(f"deskwatch-collector: database unavailable: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except SchemaTooNew as exc:  # a newer release's database: rolled back, or a rolling upgrade
        print(f"deskwatch-collector: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except Exception as exc:
        # the DSN's password stays out of the message (stderr goes to the journal)
        print(f"deskwatch-collector: cannot open the database {redact_dsn(args.db)!r}: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    try:
        if args.command == "run":
            return _run(args, store)
        if args.command == "add-user":
            return _add_user(args, store, replace=True)
        if args.command == "users":
            return _users(args, store)
        if args.command == "purge":
            result = purge_evidence(store, args.retention_days, time.time())
            print(f"deleted {result.expired} expired and {result.orphaned} orphaned evidence files")
            return 0
        if args.command == "report":
            print(json.dumps(report(store), indent=2))
            return 0
    finally:
        store.close()
    return exitcodes.USAGE


def _read_password(username: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {username}: ")
    return sys.stdin.readline().rstrip("\r\n")  # a file written on Windows ends its lines with CR LF


def _add_user(args: argparse.Namespace, store: Store, *, replace: bool) -> int:
    from deskwatch_collector.auth import add_user

    if args.holder_since is not None and not args.new_holder:
        print("deskwatch-collector: --holder-since goes with --new-holder", file=sys.stderr)
        return exitcodes.USAGE
    since = (time.time() if args.holder_since is None else args.holder_since) if args.new_holder else None
    password = _read_password(args.username)
    try:
        add_user(
            store, args.username, password, args.role, args.site, args.worker_id, replace=replace,
            new_holder_since=since,
        )  # fmt: skip
    except ValueError as exc:
        print(f"deskwatch-collector: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    print(f"{args.role} {args.username} can see {', '.join(sorted(set(args.site)))}")
    if since is not None:
        print(
            f"worker id {args.worker_id} is {args.username}'s from {_utc(since)}: earlier findings are not shown to"
            f" {args.username}, later ones to no earlier holder"
        )
    return 0


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _users(args: argparse.Namespace, store: Store) -> int:
    from deskwatch_collector import auth

    command = args.users_command
    if command == "list":
        print(f"{'user':<20} {'role':<10} {'state':<9} {'sessions':>8}  sites / worker")
        for a in auth.list_users(store, time.time()):
            who = ",".join(a.sites) + (f" / {a.worker_id}" if a.worker_id else "")
            who += f" (holder since {_utc(a.holder_since)})" if a.holder_since is not None else ""
            state = "disabled" if a.disabled else "active"
            print(f"{a.username:<20} {a.role:<10} {state:<9} {a.sessions:>8}  {who}")
        return 0
    if command == "add":
        return _add_user(args, store, replace=args.replace)
    try:
        if command == "reset":
            ended = auth.reset_password(store, args.username, _read_password(args.username))
            print(f"new password for {args.username}; {ended} session(s) ended")
        elif command in ("disable", "enable"):
            ended = auth.set_disabled(store, args.username, command == "disable")
            print(f"{args.username} {command}d" + (f"; {ended} session(s) ended" if command == "disable" else ""))
        elif command == "remove":
            auth.remove_user(store, args.username)
            print(f"{args.username} removed; their sessions ended")
    except LookupError as exc:
        print(f"deskwatch-collector: {exc.args[0]}", file=sys.stderr)
        return exitcodes.FAIL
    except ValueError as exc:
        print(f"deskwatch-collector: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    return 0


def report(store: Store) -> dict[str, object]:
    with store.transaction(write=False) as tx:
        counts = {
            table: int((tx.one(f"SELECT COUNT(*) FROM {table}") or (0,))[0])
            for table in ("events", "evidence", "scans", "devices", "rejects", "evidence_deletions")
        }
        gaps = missing_seqs(tx)
        rejects = tx.rows("SELECT reason, COUNT(*) FROM rejects GROUP BY reason ORDER BY reason")
    return {
        "counts": counts,
        "seq_gaps": {f"{s}/{d}": [list(r) for r in ranges] for (s, d), ranges in gaps.items()},
        "rejects": {str(r): int(n) for r, n in rejects},
    }


def _run(args: argparse.Namespace, store: Store) -> int:
    from deskwatch_collector.console.reviewfeed import ReviewFeed
    from deskwatch_collector.console.routes import ConsoleSettings, console_routes
    from deskwatch_collector.web import GuardLimits, SupervisorServer
    from deskwatch_collector.web.context import WebSettings
    from deskwatch_collector.web.guard import parse_networks

    password = None
    if args.password_file:
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            print(f"deskwatch-collector: cannot read --password-file: {exc}", file=sys.stderr)
            return exitcodes.CONFIG
    settings = SubscriberSettings(
        host=args.broker[0],
        port=args.broker[1],
        group=args.group,
        username=args.username,
        password=password,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        tls=bool(args.ca_file),
        batch_max=max(1, args.batch_max),
    )
    if args.client_id:
        settings.client_id = args.client_id
    stats = IngestStats()
    # The page gets its own connections: many browsers polling must never make the writer wait.
    web_store = open_store(args.db, pool_size=8) if args.http != "off" else store
    try:
        validator = Validator(load_evidence_keys(args.evidence_key))
    except ValueError as exc:
        print(f"deskwatch-collector: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    intake: Subscriber | QueueConsumer
    if args.amqp:
        queue = QueueSettings(
            urls=args.amqp, queue=args.amqp_queue, client_name=settings.client_id, batch_max=settings.batch_max
        )
        intake = QueueConsumer(queue, store, stats=stats, validator=validator, retention_days=args.retention_days)
        source = f"queue {args.amqp_queue}"
    else:
        intake = Subscriber(settings, store, stats=stats, validator=validator, retention_days=args.retention_days)
        source = f"{settings.host}:{settings.port}"
    web = None
    if args.http != "off":
        try:
            limits = GuardLimits(trusted_proxies=parse_networks(args.trusted_proxy))
            console = console_routes(ConsoleSettings(retention_days=args.retention_days))
            web = SupervisorServer(
                _hostport(args.http, 8080),
                web_store,
                cookie_secure=args.cookie_secure,
                settings=WebSettings(idle_seconds=args.idle_timeout),
                limits=limits,
                health=intake.health.snapshot,
                extra_routes=console,
            )
        except (OSError, ValueError, argparse.ArgumentTypeError) as exc:
            print(f"deskwatch-collector: cannot serve the supervisor page on {args.http}: {exc}", file=sys.stderr)
            return exitcodes.UNAVAILABLE
    retention = RetentionThread(store, args.retention_days, args.purge_every)
    reviews = ReviewFeed(store, settings, args.retention_days)  # each device's retained word on its findings
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    intake.start()
    retention.start()
    reviews.start()
    if web is not None:
        web.start()
        logger.info("supervisor page on %s", web.url)
    logger.info(
        "collector %s in group %s; evidence kept %.4g days", settings.client_id, settings.group, args.retention_days
    )
    if not intake.subscribed.wait(15):
        logger.warning("not subscribed to %s yet; still trying", source)
    print(f"READY {json.dumps({'http': web.url if web else None, 'client_id': settings.client_id})}", flush=True)
    last = time.monotonic()
    while not stop.wait(0.5):
        if intake.schema_closed is not None:  # a newer collector closed the schema to this release
            break
        if args.stats_every and time.monotonic() - last >= args.stats_every:
            last = time.monotonic()
            logger.info("collector counters: %s", json.dumps(stats.snapshot(), sort_keys=True))
    logger.info("stopping collector")
    retention.stop_event.set()
    reviews.stop()
    if web is not None:
        web.stop()
    intake.stop()
    if web_store is not store:
        web_store.close()
    logger.info("collector counters at exit: %s", json.dumps(stats.snapshot(), sort_keys=True))
    print(f"COUNTERS {json.dumps(stats.snapshot(), sort_keys=True)}", flush=True)
    if intake.schema_closed is not None:
        print(f"deskwatch-collector: {intake.schema_closed}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
