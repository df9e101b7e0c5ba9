"""The page `mama serve` shows at /: one tile per camera (its live annotated frame, a rolling
score chart against the threshold, state, frames/s and lag) and the alarms as they come, each
with its snapshot. Plain HTML, CSS and JavaScript in this one string: no build step and nothing
fetched from outside the server, so it works with no internet."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mama: cameras</title>
<style>
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: #15181c; color: #e6e6e6; }
  header { padding: 10px 16px; background: #0d0f12; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header .muted { color: #8a9099; }
  main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(260px, 1fr); gap: 12px; padding: 12px; }
  #tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; align-content: start; }
  .tile { background: #1e2227; border-radius: 6px; padding: 8px; border: 2px solid transparent; }
  .tile.alarm { border-color: #e03131; }
  .tile.failed { border-color: #f08c00; }
  .tile h2 { font-size: 15px; margin: 0 0 6px; display: flex; justify-content: space-between; }
  .tile img.view { width: 100%; image-rendering: pixelated; background: #000; display: block; min-height: 120px; }
  .tile canvas { width: 100%; height: 70px; display: block; margin-top: 6px; background: #111417; }
  .stats { color: #aab; font-size: 12px; margin-top: 4px; }
  .state { font-size: 12px; padding: 1px 6px; border-radius: 8px; background: #2b3038; }
  .state.running { background: #2b8a3e; } .state.failed { background: #e8590c; } .state.ended { background: #495057; }
  .error { color: #ffa94d; font-size: 12px; margin-top: 4px; word-break: break-word; }
  aside h2 { font-size: 15px; margin: 0 0 8px; }
  #events { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 8px; }
  .event { background: #1e2227; border-radius: 6px; padding: 6px; display: flex; gap: 8px; cursor: pointer; }
  .event img { width: 96px; height: auto; image-rendering: pixelated; background: #000; }
  .event .what { font-weight: 600; } .event .open { color: #ff6b6b; } .event .when { color: #8a9099; font-size: 12px; }
  dialog { background: #1e2227; color: #e6e6e6; border: 1px solid #444; max-width: 90vw; }
  dialog img { max-width: 80vw; max-height: 70vh; image-rendering: pixelated; display: block; }
</style>
</head>
<body>
<header><h1>mama</h1><span class="muted" id="status">connecting...</span></header>
<main>
  <section id="tiles"></section>
  <aside><h2>Alarms</h2><ul id="events"></ul><p class="muted" id="no-events">none yet</p></aside>
</main>
<dialog id="detail"><div id="detail-text"></div><img id="detail-img" alt="snapshot"><form method="dialog"><button>close</button></form></dialog>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "token=" + encodeURIComponent(token) : "";
const withToken = (url) => q ? url + (url.includes("?") ? "&" : "?") + q : url;
const cams = {};
const events = {};

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function tile(name) {
  if (cams[name]) return cams[name];
  const t = el("div", {class: "tile", id: "tile-" + name, "data-points": "0"});
  const h = el("h2"); h.append(el("span", {}, name)); const st = el("span", {class: "state"}, "starting"); h.append(st);
  const img = el("img", {class: "view", alt: name + " live view"});
  img.hidden = true;  // until its first frame
  const canvas = el("canvas", {width: "600", height: "140"});
  const stats = el("div", {class: "stats"}); const err = el("div", {class: "error"});
  t.append(h, img, canvas, stats, err);
  document.getElementById("tiles").append(t);
  cams[name] = {t, st, img, canvas, stats, err, points: [], threshold: null, loading: false};
  return cams[name];
}

function showSource(s) {
  const c = tile(s.name);
  c.st.textContent = s.state; c.st.className = "state " + s.state;
  c.t.classList.toggle("failed", s.state === "failed");
  c.t.classList.toggle("alarm", !!s.open_event);
  c.err.textContent = s.error || "";
  if (s.threshold !== null && s.threshold !== undefined) c.threshold = s.threshold;
  const lag = s.lag_seconds === null || s.lag_seconds === undefined ? "-" : (s.lag_seconds * 1000).toFixed(0) + " ms";
  c.stats.textContent = `${s.frames_per_second} frames/s · lag ${lag} · ${s.frames_scored} scored · ${s.dropped} dropped` +
    (s.threshold !== null && s.threshold !== undefined ? ` · threshold ${s.threshold.toFixed(2)}` : "");
}

function draw(c) {
  const g = c.canvas.getContext("2d"), W = c.canvas.width, H = c.canvas.height;
  g.clearRect(0, 0, W, H);
  if (!c.points.length) return;
  const ys = c.points.map(p => p[1]).concat(c.threshold !== null ? [c.threshold] : []);
  let lo = Math.min(...ys), hi = Math.max(...ys); if (hi - lo < 1e-6) { hi += 1; lo -= 1; }
  const y = v => H - 6 - (v - lo) / (hi - lo) * (H - 12);
  const n = c.points.length, x = i => n < 2 ? W : i / (n - 1) * W;
  if (c.threshold !== null) {
    g.strokeStyle = "#e03131"; g.setLineDash([6, 4]); g.beginPath();
    g.moveTo(0, y(c.threshold)); g.lineTo(W, y(c.threshold)); g.stroke(); g.setLineDash([]);
  }
  g.strokeStyle = "#74c0fc"; g.lineWidth = 2; g.beginPath();
  c.points.forEach((p, i) => i ? g.lineTo(x(i), y(p[1])) : g.moveTo(x(i), y(p[1])));
  g.stroke();
}

function refreshViews() {
  for (const [name, c] of Object.entries(cams)) {
    if (c.loading || !c.points.length) continue;
    c.loading = true;
    const next = new Image();
    next.onload = () => { c.img.src = next.src; c.img.hidden = false; c.loading = false; };
    next.onerror = () => { c.loading = false; };
    next.src = withToken(`/api/sources/${encodeURIComponent(name)}/frame.jpg?t=${Date.now()}`);
  }
}

function showEvent(e) {
  if (!e.id || !["new", "update", "end"].includes(e.type)) return;
  document.getElementById("no-events").hidden = true;
  let item = events[e.id];
  if (!item) {
    item = el("li", {class: "event", id: "event-" + e.id});
    const img = el("img", {alt: "snapshot of " + e.id});
    const text = el("div"); item.append(img, text);
    item.addEventListener("click", () => openEvent(e.id));
    document.getElementById("events").prepend(item);
    events[e.id] = item;
  }
  const [img, text] = item.children;
  if (e.snapshot) img.src = withToken(`/api/events/${encodeURIComponent(e.id)}/snapshot.jpg?type=${e.type}`);
  text.replaceChildren(
    el("div", {class: "what " + (e.type === "end" ? "" : "open")}, `${e.source}: ${e.type === "end" ? "ended" : "ALARM"}`),
    el("div", {class: "when"}, `from ${e.start_time.slice(11, 19)} (frame ${e.start_frame})` +
       (e.type === "end" ? `, ${e.duration.toFixed(1)} s` : "")),
    el("div", {class: "when"}, `peak ${e.peak.toFixed(2)} / threshold ${e.threshold.toFixed(2)}`));
}

async function openEvent(id) {
  const r = await fetch(withToken(`/api/events/${encodeURIComponent(id)}`));
  if (!r.ok) return;
  const e = await r.json();
  document.getElementById("detail-text").textContent =
    `${e.source} · ${e.type} · started ${e.start_time} (frame ${e.start_frame}) · peak ${e.peak} at frame ${e.peak_frame}` +
    (e.end_time ? ` · ended ${e.end_time}` : "");
  document.getElementById("detail-img").src = withToken(`/api/events/${encodeURIComponent(id)}/snapshot.jpg?t=${Date.now()}`);
  document.getElementById("detail").showModal();
}

async function start() {
  const r = await fetch(withToken("/api/sources"));
  if (!r.ok) { document.getElementById("status").textContent = "cannot read /api/sources: " + r.status; return; }
  (await r.json()).forEach(showSource);
  const ev = await fetch(withToken("/api/events"));
  if (ev.ok) (await ev.json()).forEach(showEvent);
  const live = new EventSource(withToken("/api/live"));
  live.onopen = () => { document.getElementById("status").textContent = "live"; };
  live.onerror = () => { document.getElementById("status").textContent = "reconnecting..."; };
  live.onmessage = (m) => {
    const d = JSON.parse(m.data);
    if (d.kind === "source") showSource(d);
    else if (d.kind === "scores") {
      const c = tile(d.source); c.threshold = d.threshold;
      d.frames.forEach((f, i) => c.points.push([f, d.scores[i]]));
      if (c.points.length > 300) c.points.splice(0, c.points.length - 300);
      c.t.dataset.points = String(Number(c.t.dataset.points) + d.frames.length);
      draw(c);
    } else if (d.kind === "event") {
      showEvent(d);
      const c = cams[d.source]; if (c) c.t.classList.toggle("alarm", d.type !== "end" && d.type !== "gap");
    }
  };
  setInterval(refreshViews, 300);
  setInterval(async () => {
    const s = await fetch(withToken("/api/sources"));
    if (s.ok) (await s.json()).forEach(showSource);
  }, 2000);
}
start();
</script>
</body>
</html>
"""
