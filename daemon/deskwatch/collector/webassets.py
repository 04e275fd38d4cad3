"""Static assets of the supervisor page (no external resources; strict CSP, no inline script)."""

from __future__ import annotations

from html import escape

CSS = """
:root { font-family: system-ui, sans-serif; color: #1d2430; background: #f3f5f8; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 1rem; padding: .6rem 1.2rem; background: #1d2a3a; color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; flex: 1; }
header button { background: transparent; color: #fff; border: 1px solid #fff6; border-radius: 4px; padding: .2rem .6rem; }
main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1.2rem; padding: 1.2rem; }
main.worker { grid-template-columns: minmax(0, 1fr); }
section h2 { font-size: 1rem; margin: 0 0 .6rem; display: flex; gap: .6rem; align-items: center; }
.live { font-size: .75rem; padding: .1rem .4rem; border-radius: 3px; background: #bbb; color: #fff; }
.live.on { background: #2e8b57; }
.event { display: grid; grid-template-columns: 160px 1fr 1fr; gap: .8rem; background: #fff; border-radius: 6px;
  padding: .7rem; margin-bottom: .7rem; box-shadow: 0 1px 2px #0002; border-left: 4px solid #d9534f; }
.event.acknowledged { border-left-color: #2e8b57; } .event.dismissed { border-left-color: #888; }
.event img, .event .noimg { width: 160px; height: 120px; object-fit: cover; border-radius: 4px; background: #dde2e8; }
.event .noimg { display: flex; align-items: center; justify-content: center; font-size: .75rem; color: #555;
  text-align: center; }
.event h3 { margin: 0 0 .3rem; font-size: 1rem; }
.meta { font-size: .8rem; color: #445; line-height: 1.45; }
.badge { display: inline-block; font-size: .7rem; padding: .05rem .35rem; border-radius: 3px; background: #eee; }
.badge.open { background: #fde2e1; } .badge.acknowledged { background: #d8f0e0; } .badge.dismissed { background: #e6e6e6; }
.review textarea, .contest textarea { width: 100%; box-sizing: border-box; min-height: 2.6rem; font: inherit; font-size: .8rem; }
.review button, .contest button { margin: .3rem .3rem 0 0; }
.contest-box { background: #fff8e1; border: 1px solid #f0d98c; border-radius: 4px; padding: .35rem; font-size: .8rem;
  margin-bottom: .4rem; }
.contest-box.none { background: #f5f6f8; border-color: #e1e4e8; color: #778; }
table { width: 100%; border-collapse: collapse; background: #fff; border-radius: 6px; font-size: .8rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #eef0f3; }
.state { font-weight: 600; } .state.online { color: #2e8b57; } .state.degraded { color: #c77c00; }
.state.offline, .state.unknown { color: #b52b27; }
.login { max-width: 22rem; margin: 12vh auto; background: #fff; padding: 1.5rem; border-radius: 8px; box-shadow: 0 1px 4px #0003; }
.login label { display: block; margin: .6rem 0 .2rem; font-size: .9rem; }
.login input { width: 100%; box-sizing: border-box; padding: .4rem; font: inherit; }
.login button { margin-top: 1rem; width: 100%; padding: .5rem; font: inherit; }
.error { color: #b52b27; font-size: .85rem; }
"""

APP_JS = r"""
"use strict";
const LABELS = {away_from_desk: "Away from desk", phone_use: "Phone use", extra_person: "Extra person",
  unrecognized_person: "Unrecognised person", eating: "Eating", idle_input: "No keyboard/mouse input",
  low_light: "Too dark to check", camera_obstructed: "Camera obstructed", pause_overrun: "Pause overran"};
const ME = JSON.parse(document.body.dataset.user);
const list = document.getElementById("events");
const cards = new Map();

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function when(iso) { return new Date(iso).toLocaleString(); }

async function post(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body), credentials: "same-origin"});
  if (!r.ok) throw new Error((await r.json()).error || r.statusText);
  return r.json();
}

function render(ev) {
  const card = el("article", {class: "event " + ev.review_state, "data-event-id": ev.event_id});
  const img = ev.evidence_url
    ? el("img", {src: ev.evidence_url, alt: "evidence for " + ev.type})
    : el("div", {class: "noimg", text: "no photo (" + (ev.evidence_reason || "pending") + ")"});
  const info = el("div", {},
    el("h3", {text: LABELS[ev.type] || ev.type}),
    el("div", {class: "meta"},
      el("div", {text: "Device " + ev.device_id + " \u00b7 site " + ev.site}),
      el("div", {text: "Worker " + ev.worker_id}),
      el("div", {text: when(ev.detected_at) + " \u00b7 confidence " + Math.round(ev.confidence * 100) + "%"
        + (ev.replayed ? " \u00b7 delivered late" : "")}),
      el("div", {}, el("span", {class: "badge " + ev.review_state, text: ev.review_state}),
        ev.reviewed_by ? document.createTextNode(" by " + ev.reviewed_by + (ev.review_note ? ": " + ev.review_note : ""))
          : null)));
  const side = el("div", {});
  side.append(ev.contest_note
    ? el("div", {class: "contest-box", text: "Worker contests: " + ev.contest_note})
    : el("div", {class: "contest-box none", text: "Not contested by the worker"}));
  if (ME.role === "supervisor") {
    const note = el("textarea", {placeholder: "note (optional)", "aria-label": "review note"});
    note.value = ev.review_note || "";
    const act = (action) => async () => {
      try { replace(await post("/api/events/" + ev.event_id + "/review", {action, note: note.value})); }
      catch (e) { alert(e.message); }
    };
    const ack = el("button", {class: "ack", text: "Acknowledge"}); ack.onclick = act("acknowledge");
    const dis = el("button", {class: "dismiss", text: "Dismiss"}); dis.onclick = act("dismiss");
    side.append(el("div", {class: "review"}, note, ack, dis));
  } else {
    const note = el("textarea", {placeholder: "why this is wrong", "aria-label": "contest note"});
    const btn = el("button", {class: "contest-btn", text: ev.contest_note ? "Update contest" : "Contest"});
    btn.onclick = async () => {
      try { replace(await post("/api/events/" + ev.event_id + "/contest", {note: note.value})); }
      catch (e) { alert(e.message); }
    };
    side.append(el("div", {class: "contest"}, note, btn));
  }
  card.append(img, info, side);
  return card;
}

const shown = new Map();
function replace(ev) {
  const json = JSON.stringify(ev);
  if (shown.get(ev.event_id) === json) return;  // unchanged: keep the card (and what is being typed)
  shown.set(ev.event_id, json);
  const old = cards.get(ev.event_id);
  const card = render(ev);
  cards.set(ev.event_id, card);
  if (old) {
    const before = old.querySelector("textarea"), after = card.querySelector("textarea");
    const typing = before && document.activeElement === before;
    if (typing && after) after.value = before.value;
    old.replaceWith(card);
    if (typing && after) after.focus();
  } else list.prepend(card);
  document.getElementById("count").textContent = String(cards.size);
}

function connect() {
  const badge = document.getElementById("live");
  const source = new EventSource("/api/stream");
  source.addEventListener("violation", (m) => replace(JSON.parse(m.data)));
  source.onopen = () => { badge.textContent = "live"; badge.className = "live on"; };
  source.onerror = () => { badge.textContent = "reconnecting"; badge.className = "live"; };
}

async function refreshEvents() {
  const r = await fetch("/api/events?limit=100", {credentials: "same-origin"});
  if (r.ok) for (const ev of (await r.json()).events.reverse()) if (cards.has(ev.event_id)) replace(ev);
}

async function refreshFleet() {
  const body = document.getElementById("fleet");
  if (!body) return;
  const r = await fetch("/api/fleet", {credentials: "same-origin"});
  if (!r.ok) return;
  body.replaceChildren();
  for (const d of (await r.json()).devices) {
    const h = d.health || {};
    const health = d.health_at ? Math.round(d.health_age_s) + " s ago" + (h.outbox ? " \u00b7 outbox " + h.outbox.depth : "")
      + (h.camera ? " \u00b7 camera " + h.camera : "") + (h.cpu_temp_c != null ? " \u00b7 " + h.cpu_temp_c + " \u00b0C" : "")
      : "none yet";
    body.append(el("tr", {"data-device": d.device_id},
      el("td", {text: d.device_id}), el("td", {text: d.site}),
      el("td", {class: "state " + (d.state || "unknown"), text: (d.state || "unknown")
        + (d.reasons && d.reasons.length ? " (" + d.reasons.join(", ") + ")" : "")}),
      el("td", {text: d.version || ""}), el("td", {text: health}),
      el("td", {text: d.missing_events ? d.missing_events + " missing" : "none"})));
  }
}

document.getElementById("logout").onclick = async () => { await post("/logout", {}); location.href = "/login"; };
connect();
refreshFleet();
setInterval(refreshFleet, 10000);
setInterval(refreshEvents, 10000);
"""


def page(title: str, body: str, body_attrs: str = "", script: bool = False) -> bytes:
    js = '<script src="/static/app.js"></script>' if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel=stylesheet href="/static/app.css"></head>'
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
