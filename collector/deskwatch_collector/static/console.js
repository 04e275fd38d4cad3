// deskwatch console: progressive enhancement of server-rendered pages. No framework, no build.
// Strict CSP: no inline script or style; everything the script needs is in data-* attributes.
"use strict";

const body = document.body;
const page = body.dataset.page;

// -- the viewer's time zone: the server prints times in it (cookie), once known -----------------
(function syncZone() {
  let zone = "UTC";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { /* keep UTC */ }
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("dw_tz="));
  if (!cookie || decodeURIComponent(cookie.slice(6)) !== zone) {
    document.cookie = "dw_tz=" + encodeURIComponent(zone) + "; Path=/; Max-Age=31536000; SameSite=Strict";
  }
  // Printed in another zone: show the page again in ours, once per browser session (a
  // browser that refuses the cookie, or a zone the server does not know, must not loop).
  if (body.dataset.tz !== zone && sessionStorage.getItem("dw_tz_reload") !== zone) {
    sessionStorage.setItem("dw_tz_reload", zone);
    location.reload();
  }
})();

function toast(text) {
  const t = document.getElementById("toast");
  if (!t) return;
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 3500);
}

async function postJSON(url, data) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)});
  let answer = {};
  try { answer = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error(answer.error || r.statusText || "request failed");
  return answer;
}

const logout = document.getElementById("logout");
if (logout) logout.addEventListener("click", async (e) => {
  e.preventDefault();  // without script the button posts its form instead
  try { await postJSON("/logout", {}); } finally { location.href = "/login"; }
});

const help = document.getElementById("help");
const helpButton = document.getElementById("keys-help");
if (helpButton && help) helpButton.addEventListener("click", () => help.showModal());

function typing(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
}

// -- alerts: desktop notification and a sound for new open events -------------------------------
const alertsButton = document.getElementById("alerts");
const soundButton = document.getElementById("sound");
const alertsState = () => localStorage.getItem("dw_alerts") === "on";
const soundState = () => localStorage.getItem("dw_sound") === "on";

function renderAlerts() {
  if (!alertsButton) return;
  const on = alertsState();
  alertsButton.hidden = false;
  alertsButton.setAttribute("aria-pressed", String(on));
  alertsButton.textContent = on ? "Alerts on" : "Alerts off";
  soundButton.hidden = !on;  // the tone goes with an alert: optional, off until chosen
  soundButton.setAttribute("aria-pressed", String(soundState()));
  soundButton.textContent = soundState() ? "Sound on" : "Sound off";
}

let audio = null;
function beep() {
  try {
    audio = audio || new AudioContext();
    const osc = audio.createOscillator(), gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.2, audio.currentTime + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.35);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.4);
  } catch (e) { /* no sound available */ }
}

if (alertsButton) {
  alertsButton.addEventListener("click", async () => {
    if (alertsState()) {
      localStorage.setItem("dw_alerts", "off");
    } else {
      if ("Notification" in window && Notification.permission === "default") {
        try { await Notification.requestPermission(); } catch (e) { /* old API */ }
      }
      localStorage.setItem("dw_alerts", "on");
      if ("Notification" in window && Notification.permission === "denied") {
        toast("The browser blocks notifications for this site: turn them on in its site settings, or use the sound.");
      }
    }
    renderAlerts();
  });
  soundButton.addEventListener("click", () => {
    localStorage.setItem("dw_sound", soundState() ? "off" : "on");
    if (soundState()) beep();  // a click lets the page play sound later, and says how it sounds
    renderAlerts();
  });
  renderAlerts();
}

function announce(events) {
  const banner = document.getElementById("new-banner");
  if (banner) {
    announce.count = (announce.count || 0) + events.length;
    banner.querySelector("span").textContent =
      announce.count + (announce.count === 1 ? " new open event." : " new open events.");
    banner.hidden = false;
  }
  window.dispatchEvent(new CustomEvent("deskwatch:new-events", {detail: events}));
  if (!alertsState()) return;
  if (soundState()) beep();
  if ("Notification" in window && Notification.permission === "granted") {
    for (const ev of events.slice(0, 3)) {
      const n = new Notification("deskwatch: " + (ev.label || ev.type), {
        body: ev.device_id + " · " + ev.worker_id + " · " + ev.site, tag: ev.event_id});
      n.onclick = () => { window.focus(); location.href = "/events/" + ev.event_id; };
    }
  }
}

// A session the server ended (signed out after the idle timeout, or elsewhere): the sign-in
// form, saying why, instead of a page that goes on showing findings to whoever sits down.
async function signedOut(r) {
  let why = "";
  try { why = (await r.json()).signed_out || ""; } catch (e) { /* not JSON */ }
  location.href = "/login" + (why ? "?signed_out=" + encodeURIComponent(why) : "");
}

(function watchSession() {
  if (alertsButton || !document.getElementById("logout")) return;  // the alert poll does it on supervisors' pages
  async function tick() {
    try {
      const r = await fetch("/api/session", {credentials: "same-origin"});
      if (r.status === 401) { await signedOut(r); return; }
    } catch (e) { /* offline for a moment: next tick */ }
    setTimeout(tick, 30000);
  }
  setTimeout(tick, 30000);
})();

(function pollNewEvents() {
  if (!alertsButton) return;  // workers get no alerts
  let latest = body.dataset.latestId || "0";  // sealed by the server: passed back as it came
  const every = Math.max(1, Number(body.dataset.poll || 5)) * 1000;
  let first = !body.dataset.latestId;
  async function tick() {
    try {
      const r = await fetch("/api/queue/latest?after_id=" + encodeURIComponent(latest), {credentials: "same-origin"});
      if (r.status === 401) { await signedOut(r); return; }
      if (r.ok) {
        const got = await r.json();
        if (!first && got.events.length) announce(got.events);
        latest = got.latest_id;
        first = false;
      }
    } catch (e) { /* offline for a moment: next tick */ }
    setTimeout(tick, every);
  }
  setTimeout(tick, first ? 0 : every);
})();

const filterBox = document.getElementById("filters");
if (filterBox && window.matchMedia("(max-width: 900px)").matches) filterBox.open = false;

// -- queue: j/k selection, Enter to open ------------------------------------------------------
const rows = Array.from(document.querySelectorAll(".event-row"));
let selected = -1;
function select(i) {
  if (!rows.length) return;
  selected = Math.max(0, Math.min(rows.length - 1, i));
  rows.forEach((r, k) => r.classList.toggle("selected", k === selected));
  rows[selected].focus();
}
rows.forEach((r, i) => r.addEventListener("focus", () => { selected = i; rows.forEach((x, k) => x.classList.toggle("selected", k === i)); }));

// -- event detail: review by keyboard or mouse ------------------------------------------------
const form = document.getElementById("review-form");
const dismissBox = document.getElementById("dismiss-box");
const note = document.getElementById("review-note");
const reviewError = document.getElementById("review-error");

function showDismiss() {
  if (!dismissBox) return;
  dismissBox.hidden = false;
  const toggle = form.querySelector('[data-action="show-dismiss"]');
  if (toggle) toggle.setAttribute("aria-expanded", "true");
  const first = dismissBox.querySelector("input[type=radio]:checked") || dismissBox.querySelector("input[type=radio]");
  if (first) first.focus();
}

async function act(action) {
  if (!form) return;
  const data = {action, note: note ? note.value : ""};
  if (action === "dismiss") {
    const chosen = dismissBox.querySelector("input[type=radio]:checked");
    if (!chosen) { reviewError.textContent = "Pick a reason (1–7)."; showDismiss(); return; }
    data.reason = chosen.value;
  }
  reviewError.textContent = "";
  form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    await postJSON("/api/events/" + form.dataset.eventId + "/review", data);
    const verb = {acknowledge: "Upheld", dismiss: "Dismissed", reopen: "Reopened"}[action];
    sessionStorage.setItem("dw_toast", verb + ".");
    // Work the queue: after a decision go on to the next event; reopening stays here.
    location.href = action !== "reopen" && body.dataset.next ? body.dataset.next : location.href;
  } catch (e) {
    reviewError.textContent = e.message;
    form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
  }
}

if (form) {
  form.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-action]");
    if (!b) return;
    if (b.dataset.action === "show-dismiss") showDismiss(); else act(b.dataset.action);
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  if (note) note.addEventListener("keydown", (e) => {
    // Enter saves a dismissal being written; otherwise it is a new line (upholding takes "a" or the button).
    if (e.key === "Enter" && !e.shiftKey && !dismissBox.hidden) { e.preventDefault(); act("dismiss"); }
    if (e.key === "Escape") note.blur();
  });
  dismissBox.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); act("dismiss"); }
  });
}
function enabled(action) {
  const b = form && form.querySelector('[data-action="' + action + '"]');
  return Boolean(b && !b.disabled);
}

const shown = sessionStorage.getItem("dw_toast");
if (shown) { sessionStorage.removeItem("dw_toast"); toast(shown); }

const toggleBoxes = document.getElementById("toggle-boxes");
function flipBoxes() {
  const frame = document.querySelector(".frame");
  if (!frame || !toggleBoxes) return;
  const hidden = frame.classList.toggle("no-boxes");
  toggleBoxes.setAttribute("aria-pressed", String(!hidden));
  toggleBoxes.textContent = hidden ? "Show boxes (b)" : "Hide boxes (b)";
}
if (toggleBoxes) toggleBoxes.addEventListener("click", flipBoxes);

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (typing(e)) {
    if (e.key === "Escape") e.target.blur();
    if (!(dismissBox && !dismissBox.hidden && e.target.type === "radio")) return;
  }
  const k = e.key;
  if (k === "?") { if (help) help.showModal(); return; }
  if (k === "/") { const f = document.getElementById("filters"); if (f) { e.preventDefault(); f.open = true; f.querySelector("input, select").focus(); } return; }
  if (rows.length) {
    if (k === "j") { select(selected + 1); return; }
    if (k === "k") { select(selected - 1); return; }
    if ((k === "Enter" || k === "o") && selected >= 0) { location.href = rows[selected].href; return; }
  }
  if (page === "event") {
    if (k === "j" && body.dataset.next) location.href = body.dataset.next;
    else if (k === "k" && body.dataset.prev) location.href = body.dataset.prev;
    else if (k === "u") location.href = body.dataset.queue;
    else if (k === "a" && enabled("acknowledge")) act("acknowledge");
    else if (k === "d" && enabled("show-dismiss")) showDismiss();
    else if (k === "r" && form.querySelector('[data-action="reopen"]')) act("reopen");
    else if (k === "n" && note) { e.preventDefault(); note.focus(); }
    else if (k === "b") flipBoxes();
    else if (/^[1-9]$/.test(k) && dismissBox) {
      const radios = dismissBox.querySelectorAll("input[type=radio]");
      const r = radios[Number(k) - 1];
      if (r) { showDismiss(); r.checked = true; r.focus(); }
    }
  }
});

// -- worker: contest ------------------------------------------------------------------------
document.querySelectorAll(".contest-form").forEach((f) => {
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = f.querySelector(".error");
    err.textContent = "";
    try {
      await postJSON("/api/events/" + f.dataset.eventId + "/contest", {note: f.querySelector("textarea").value});
      sessionStorage.setItem("dw_toast", "Sent to your supervisor.");
      location.reload();
    } catch (ex) { err.textContent = ex.message; }
  });
});
