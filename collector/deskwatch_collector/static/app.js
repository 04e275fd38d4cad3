"use strict";
const LABELS = {away_from_desk: "Away from desk", phone_use: "Phone use", extra_person: "Extra person",
  unrecognized_person: "Unrecognised person", presentation_attack: "Photo held up as the worker", eating: "Eating", idle_input: "No keyboard/mouse input",
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
