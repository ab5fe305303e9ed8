"""The status page: one HTML document and its script, self-contained (no CDN: works offline).

The script asks ``/api/status`` every ``refresh_s`` and shows each pipeline's latest snapshot,
fps, latency percentiles and model, the broker link, the outbox backlog and the last errors.
Everything from the daemon is written with ``textContent`` (never parsed as HTML).
"""

from __future__ import annotations

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>edge-runtime</title>
<style>
body{font-family:system-ui,sans-serif;margin:1em;background:#111;color:#eee}
h1{font-size:1.3em;margin:0 0 .5em}
.bar span{margin-right:1.5em}.ok{color:#6c6}.bad{color:#f66}
#pipelines{display:flex;flex-wrap:wrap;gap:1em;margin-top:1em}
.card{background:#222;padding:.7em;border-radius:6px;max-width:660px}
.card h2{font-size:1.1em;margin:0 0 .4em}
.card img{max-width:640px;width:100%;display:block;background:#000;min-height:60px}
table{border-collapse:collapse;margin-top:.4em}td,th{padding:0 .6em 0 0;text-align:left;font-size:.9em}
#errors{font-family:monospace;font-size:.85em;white-space:pre-wrap}
</style></head>
<body data-refresh="__REFRESH__">
<h1 id="device">edge-runtime</h1>
<div class="bar"><span id="health"></span><span id="mqtt"></span><span id="outbox"></span>
<span id="updated"></span></div>
<div id="pipelines"></div>
<h3>Last errors</h3><div id="errors">none</div>
<script src="/app.js"></script>
</body></html>
"""

SCRIPT = b"""'use strict';
const refreshMs = 1000 * parseFloat(document.body.dataset.refresh || '2');
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function ms(v) { return v === null || v === undefined ? '-' : v.toFixed(1); }
function card(name) {
  let c = document.getElementById('p-' + name);
  if (c) return c;
  c = el('div', null, 'card'); c.id = 'p-' + name;
  c.appendChild(el('h2', name));
  const img = el('img'); img.alt = 'latest snapshot of ' + name; img.hidden = true;
  img.dataset.busy = '';
  img.addEventListener('load', () => { img.dataset.busy = ''; img.hidden = false; });
  img.addEventListener('error', () => { img.dataset.busy = ''; });
  c.appendChild(img);
  c.appendChild(el('div', null, 'facts'));
  c.appendChild(el('table'));
  document.getElementById('pipelines').appendChild(c);
  return c;
}
function fill(name, p) {
  const c = card(name);
  const img = c.querySelector('img');
  if (p.snapshot && !img.dataset.busy) { img.dataset.busy = '1'; img.src = p.snapshot + '?t=' + Date.now(); }
  const facts = c.querySelector('.facts');
  facts.textContent = `${p.model || ''}  source ${p.source_state || '?'}  fps ${p.fps ?? '-'}  ` +
    `frames ${p.frames ?? 0}  inferred ${p.inferred ?? 0}  errors ${p.errors ?? 0}  ` +
    `dropped ${p.dropped_frames ?? 0}`;
  if (p.source_error) facts.appendChild(el('div', p.source_error, 'bad'));
  const t = c.querySelector('table'); t.replaceChildren();
  const head = el('tr'); ['latency ms', 'p50', 'p95', 'p99'].forEach(h => head.appendChild(el('th', h)));
  t.appendChild(head);
  for (const [stage, q] of Object.entries(p.latency_ms || {})) {
    const r = el('tr'); r.appendChild(el('td', stage));
    ['p50', 'p95', 'p99'].forEach(k => r.appendChild(el('td', ms(q[k])))); t.appendChild(r);
  }
}
async function refresh() {
  try {
    const r = await fetch('/api/status', {cache: 'no-store'});
    const s = await r.json();
    document.getElementById('device').textContent = 'edge-runtime: ' + s.device;
    const h = document.getElementById('health');
    h.textContent = s.healthy ? 'healthy' : 'unhealthy: ' + s.problems.join('; ');
    h.className = s.healthy ? 'ok' : 'bad';
    const m = document.getElementById('mqtt');
    m.textContent = s.mqtt ? 'MQTT ' + (s.mqtt.connected ? 'connected' : 'disconnected') : '';
    m.className = s.mqtt && s.mqtt.connected ? 'ok' : 'bad';
    document.getElementById('outbox').textContent = s.outbox ?
      `outbox ${s.outbox.pending} waiting, ${s.outbox.dropped} dropped` : '';
    for (const [name, p] of Object.entries(s.pipelines)) fill(name, p);
    const errs = document.getElementById('errors');
    errs.textContent = s.errors.length ? s.errors.map(e =>
      new Date(e.ts * 1000).toISOString() + ' ' + e.level + ' ' + e.message).join('\\n') : 'none';
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById('updated').textContent = 'no answer from the device';
  }
}
refresh();
setInterval(refresh, refreshMs);
"""


def html(refresh_s: float) -> bytes:
    """The page, refreshing every ``refresh_s`` seconds."""
    return _HTML.replace("__REFRESH__", f"{refresh_s:g}").encode()
