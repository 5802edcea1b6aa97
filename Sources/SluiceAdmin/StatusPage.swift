/// The admin status page: one self-contained document (no external scripts, styles or fonts),
/// refreshed from `/routes`, `/upstreams` and `/config`. The chart is drawn on a canvas from the
/// differences between successive `/upstreams` readings.
enum StatusPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sluice status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #fafbfc; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e3e6ea; font-variant-numeric: tabular-nums; }
  th { background: #f0f2f5; }
  .ok { color: #1a7f37; } .bad { color: #cf222e; } .muted { color: #6e7781; }
  #chart { width: 100%; height: 260px; background: #fff; border: 1px solid #e3e6ea; }
  #legend span { display: inline-block; margin-right: 1rem; }
  #legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: middle; }
</style>
</head>
<body>
<h1>Sluice</h1>
<div class="muted" id="summary">loading…</div>

<h2>Requests per second and error rate by service</h2>
<canvas id="chart" width="1200" height="260"></canvas>
<div id="legend"></div>

<h2>Configuration errors</h2>
<div id="errors" class="muted">none</div>

<h2>Backends</h2>
<table id="backends"><thead><tr><th>service</th><th>endpoint</th><th>state</th><th>requests</th><th>failures</th><th>req/s</th><th>5xx %</th></tr></thead><tbody></tbody></table>

<h2>Hosts and routes</h2>
<table id="routes"><thead><tr><th>host</th><th>path</th><th>type</th><th>ingress</th><th>service</th><th>endpoints</th><th>source</th></tr></thead><tbody></tbody></table>

<script>
"use strict";
const colors = ["#0969da", "#1a7f37", "#bf8700", "#8250df", "#cf222e", "#1b7c83", "#953800", "#6e7781"];
const history = {};      // service -> [{t, rps, err}]
let previous = null;     // the last /upstreams reading
const windowSeconds = 120;

function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }

async function getJSON(path) { const r = await fetch(path, {cache: "no-store"}); return r.json(); }

async function refreshRoutes() {
  const routes = await getJSON("/routes");
  const body = document.querySelector("#routes tbody");
  body.replaceChildren();
  for (const r of routes) {
    const row = body.insertRow();
    cell(row, r.host); cell(row, r.path); cell(row, r.pathType); cell(row, r.ingress); cell(row, r.service);
    cell(row, r.problem ? r.problem : r.endpoints.join(", "), r.problem ? "bad" : "");
    cell(row, r.source, "muted");
  }
}

async function refreshConfig() {
  const c = await getJSON("/config");
  document.getElementById("summary").textContent =
    `generation ${c.generation} · ${c.routes} routes · ${c.backends} backends · ${c.reloads} reloads (${c.reloadFailures} with refused files) · rules: ${c.rulesDirectory}`;
  const errors = document.getElementById("errors");
  const list = c.problems.filter(p => p.severity === "error");
  if (list.length === 0) { errors.textContent = "none"; errors.className = "muted ok"; return; }
  errors.className = "bad";
  errors.replaceChildren(...list.map(p => {
    const d = document.createElement("div");
    d.textContent = `${p.file}:${p.line}: ${p.object} ${p.field}: ${p.message}`;
    return d;
  }));
}

async function refreshUpstreams() {
  const u = await getJSON("/upstreams");
  const body = document.querySelector("#backends tbody");
  body.replaceChildren();
  const rates = {};
  for (const s of u.services) {
    let rps = 0, err = 0;
    if (previous) {
      const p = previous.services.find(x => x.name === s.name);
      const dt = u.time - previous.time;
      if (p && dt > 0) {
        const dReq = s.requests - p.requests, dErr = s.errors - p.errors;
        rps = Math.max(0, dReq / dt);
        err = dReq > 0 ? 100 * dErr / dReq : 0;
      }
    }
    rates[s.name] = {rps, err};
    for (const e of (s.endpoints.length ? s.endpoints : [null])) {
      const row = body.insertRow();
      cell(row, s.name);
      cell(row, e ? e.address : "—");
      if (!e) cell(row, s.problem || "no endpoint", "bad");
      else if (e.ejected) cell(row, "ejected (" + e.ejections + ")", "bad");
      else if (!e.healthy) cell(row, "failing health checks", "bad");
      else cell(row, e.ready ? "ready" : "not ready", e.ready ? "ok" : "bad");
      cell(row, e ? e.requests : 0); cell(row, e ? e.failures : 0, e && e.failures ? "bad" : "");
      cell(row, rps.toFixed(1)); cell(row, err.toFixed(1), err > 0 ? "bad" : "");
    }
    (history[s.name] = history[s.name] || []).push({t: u.time, rps, err});
  }
  for (const name in history) history[name] = history[name].filter(p => u.time - p.t <= windowSeconds);
  previous = u;
  draw(u.time);
}

function draw(now) {
  const canvas = document.getElementById("chart");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 40;
  g.clearRect(0, 0, w, h);
  const names = Object.keys(history).sort();
  let max = 1;
  for (const n of names) for (const p of history[n]) max = Math.max(max, p.rps);
  g.strokeStyle = "#e3e6ea"; g.fillStyle = "#6e7781"; g.font = "12px system-ui";
  for (let k = 0; k <= 4; k++) {
    const y = h - pad + (-(h - 2 * pad) * k / 4);
    g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 10, y); g.stroke();
    g.fillText((max * k / 4).toFixed(max < 10 ? 1 : 0), 4, y + 4);
  }
  g.fillText("req/s (solid) · 5xx % of max scale (dashed) · last " + windowSeconds + " s", pad, 14);
  const x = t => pad + (w - pad - 10) * (1 - (now - t) / windowSeconds);
  const y = v => h - pad - (h - 2 * pad) * v / max;
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  names.forEach((n, i) => {
    const color = colors[i % colors.length];
    const pts = history[n];
    g.strokeStyle = color; g.lineWidth = 2; g.setLineDash([]);
    g.beginPath(); pts.forEach((p, k) => k ? g.lineTo(x(p.t), y(p.rps)) : g.moveTo(x(p.t), y(p.rps))); g.stroke();
    g.setLineDash([4, 3]); g.lineWidth = 1;
    g.beginPath(); pts.forEach((p, k) => k ? g.lineTo(x(p.t), y(max * p.err / 100)) : g.moveTo(x(p.t), y(max * p.err / 100))); g.stroke();
    const last = pts[pts.length - 1] || {rps: 0, err: 0};
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${color}"></i>`;
    item.append(`${n}: ${last.rps.toFixed(1)} req/s, ${last.err.toFixed(1)} % 5xx`);
    legend.append(item);
  });
  canvas.dataset.series = String(names.length);
  canvas.dataset.points = String(names.reduce((a, n) => a + history[n].length, 0));
}

async function tick() {
  try { await Promise.all([refreshUpstreams(), refreshConfig()]); document.body.dataset.ready = "1"; }
  catch (e) { document.getElementById("summary").textContent = "admin interface unreachable: " + e; }
}
refreshRoutes(); tick();
setInterval(tick, 2000);
setInterval(refreshRoutes, 10000);
</script>
</body>
</html>
"""#
}
