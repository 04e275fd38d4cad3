"""The supervisor page's HTML shells (no external resources; strict CSP, no inline script).
The CSS and JavaScript are package data in ``static/``, served at ``/static/``."""

from __future__ import annotations

from html import escape


def page(title: str, body: str, body_attrs: str = "", script: bool = False) -> bytes:
    js = '<script src="/static/app.js"></script>' if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel=stylesheet href="/static/style.css"></head>'
        f"<body {body_attrs}>{body}{js}</body></html>"
    ).encode()


def login_page(error: str = "") -> bytes:
    err = f"<p class=error role=alert>{escape(error)}</p>" if error else ""
    return page(
        "deskwatch - sign in",
        '<form class=login method=post action="/login"><h1>deskwatch supervisor</h1>'
        f"{err}<label for=username>User</label><input id=username name=username autocomplete=username required>"
        "<label for=password>Password</label>"
        "<input id=password name=password type=password autocomplete=current-password required>"
        "<button type=submit>Sign in</button></form>",
    )


def app_page(user_json: str, username: str, supervisor: bool) -> bytes:
    fleet = (
        "<section><h2>Fleet</h2><table><thead><tr><th>Device</th><th>Site</th><th>State</th><th>Version</th>"
        "<th>Last health</th><th>Event gaps</th></tr></thead><tbody id=fleet></tbody></table></section>"
        if supervisor
        else ""
    )
    heading = "Live violations" if supervisor else "Findings at your desk"
    body = (
        f"<header><h1>deskwatch</h1><span>{escape(username)}</span><button id=logout>Sign out</button></header>"
        f'<main class="{"supervisor" if supervisor else "worker"}"><section><h2>{heading} '
        "<span id=count>0</span><span id=live class=live>connecting</span></h2>"
        f"<div id=events></div></section>{fleet}</main>"
    )
    return page("deskwatch", body, f"data-user='{escape(user_json, quote=True)}'", script=True)
