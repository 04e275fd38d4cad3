"""The console's routes, for :func:`deskwatch_collector.web.build_app`'s ``extra_routes``:
every route that shows stored data (the web package itself adds only sign-in, sign-out,
``/healthz`` and ``/static``). Each is scoped to the signed-in account's sites, and a
worker's to their own findings (``tests/collector/test_web_scoping.py`` walks them all).

Pages (HTML, usable without script) and their JSON twins:

| page | JSON | what |
|---|---|---|
| ``/queue`` | ``/api/queue`` | filtered events, keyset pages, counts per filter |
| ``/queue.csv`` | | the filtered events as CSV (no images) |
| | ``/api/queue/latest`` | new open events since an id (the page's alerts) |
| ``/events/{id}`` | ``/api/events/{id}`` | one event; ``POST .../review`` and ``.../contest`` |
| ``/evidence/{id}`` | | the event's picture (JPEG) |
| ``/accuracy`` | ``/api/accuracy`` | per rule, site and device; noisy rules |
| ``/fleet`` | ``/api/devices`` | device states with reasons |
| ``/devices/{site}/{id}`` | ``/api/devices/{site}/{id}`` | one device |
| ``/me`` | ``/api/me/findings`` | the worker's own findings |
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from deskwatch_collector.console import queue_pages as q
from deskwatch_collector.console import report_pages as r
from deskwatch_collector.console.view import ConsoleSettings, View


def console_routes(settings: ConsoleSettings | None = None) -> list[BaseRoute]:
    view = View(settings)
    route = view.route
    return [
        route("/", r.home),
        route("/queue", q.queue_page),
        route("/queue.csv", q.queue_csv),
        route("/api/queue", q.queue_api),
        route("/api/queue/latest", q.latest_api, background=True),  # the alert poll: not the person's doing
        route("/api/session", r.session_api, background=True),  # a page without the poll checks its session
        route("/events/{event_id}", q.event_page),
        route("/api/events/{event_id}", q.event_api),
        route("/api/events/{event_id}/review", q.review_api, ("POST",)),
        route("/api/events/{event_id}/contest", q.contest_api, ("POST",)),
        route("/evidence/{event_id}", q.picture),
        route("/accuracy", r.accuracy_page),
        route("/api/accuracy", r.accuracy_api),
        route("/fleet", r.fleet_page),
        route("/api/devices", r.devices_api),
        route("/devices/{site}/{device_id}", r.device_page),
        route("/api/devices/{site}/{device_id}", r.device_api),
        route("/me", r.worker_page),
        route("/api/me/findings", r.worker_api),
    ]


__all__ = ["ConsoleSettings", "console_routes"]
