// provisiond console: small enhancements only; every page works without this file.
"use strict";

// Times are written in UTC (RFC 3339); shown in the browser's zone.
function localTime(t) {
  const d = new Date(t.getAttribute("datetime"));
  if (!isNaN(d)) {
    t.textContent = d.toLocaleString();
    t.title = t.getAttribute("datetime");
  }
}

// A note at the top of the page saying that what it shows may be stale.
function staleHint(text) {
  let p = document.getElementById("live-hint");
  if (!p) {
    p = document.createElement("p");
    p.id = "live-hint";
    p.className = "live-hint";
    p.setAttribute("role", "status");
    const main = document.querySelector("main");
    if (!main) return;
    main.prepend(p);
  }
  p.textContent = text + " ";
  const a = document.createElement("a");
  a.href = window.location.href;
  a.textContent = "Reload";
  p.appendChild(a);
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

// Server-sent events: rollout rows turn Registered, boot events appear on the overview.
function listen() {
  const entries = document.querySelector("table#entries[data-rollout]");
  const boots = document.querySelector("table#boots");
  if ((!entries && !boots) || !window.EventSource) return;
  const source = new EventSource("/console/events");
  let interrupted = false;
  source.addEventListener("ready", () => {
    document.body.dataset.live = "on";
    if (interrupted) staleHint("Live updates were interrupted; some changes may be missing.");
  });
  source.addEventListener("lagged", () => {
    staleHint("Some live updates were missed.");
  });
  source.addEventListener("error", () => {
    interrupted = true;
    document.body.dataset.live = source.readyState === EventSource.CLOSED ? "off" : "reconnecting";
    if (source.readyState === EventSource.CLOSED) staleHint("Live updates stopped.");
  });
  if (entries) {
    source.addEventListener("code", (m) => {
      const e = JSON.parse(m.data);
      if (e.rollout !== entries.dataset.rollout || typeof e.entry !== "number") return;
      const row = entries.querySelector('tr[data-entry="' + e.entry + '"]');
      if (!row) return;
      const state = row.querySelector("td.state");
      if (state) {
        state.textContent = e.state;
        state.className = "state " + e.state;
      }
      const device = row.querySelector("td.device-cell");
      if (device && e.device_mac) device.textContent = e.device_mac;
    });
  }
  if (boots) {
    source.addEventListener("boot", (m) => {
      const e = JSON.parse(m.data);
      const tr = document.createElement("tr");
      const when = document.createElement("td");
      const t = document.createElement("time");
      t.setAttribute("datetime", e.time);
      t.textContent = e.time;
      localTime(t);
      when.appendChild(t);
      tr.appendChild(when);
      const dev = document.createElement("td");
      const a = document.createElement("a");
      a.href = "/console/devices/" + encodeURIComponent(e.device);
      a.textContent = e.device;
      dev.appendChild(a);
      tr.appendChild(dev);
      tr.appendChild(cell(e.file));
      tr.appendChild(cell([e.vendor, e.model].filter(Boolean).join(" ")));
      tr.appendChild(cell(e.ip + " (" + e.transport + ")"));
      const body = boots.tBodies[0];
      body.prepend(tr);
      const max = parseInt(boots.dataset.max, 10) || 20;
      while (body.rows.length > max) body.deleteRow(-1);
      boots.hidden = false;
      const empty = document.getElementById("boots-empty");
      if (empty) empty.hidden = true;
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll("time[datetime]")) localTime(t);
  // A CSV file chosen for a rollout is read into the entries list.
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = document.getElementById(input.dataset.fills);
      if (!file || !target) return;
      file.text().then((text) => { target.value = text; });
    });
  }
  // Destructive buttons ask first (the server asks again on a page of its own without JS).
  for (const b of document.querySelectorAll("button.danger:not(#confirm)")) {
    b.addEventListener("click", (e) => {
      if (!window.confirm(b.textContent.trim() + "?")) { e.preventDefault(); return; }
      const yes = document.createElement("input");
      yes.type = "hidden"; yes.name = "confirm"; yes.value = "yes";
      b.form.appendChild(yes);
    });
  }
  // Without JavaScript, a note says to reload; with it, the page updates itself.
  for (const note of document.querySelectorAll("[data-live-note]")) note.hidden = true;
  listen();
});
