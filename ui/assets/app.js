// flowscope's web view. Plain JavaScript and SVG, no library: it reads the server's flows as
// newline-delimited JSON (one Hubble GetFlowsResponse per line, see ui/src/lib.rs) and draws
// them. Everything shown is built from those lines; nothing is fetched from anywhere else.
'use strict';

// Bounds: what the page keeps and draws. Beyond them it says so instead of growing.
const MAX_FLOWS = 2000; // flows kept (the path view and the panels read them)
const MAX_ROWS = 500; // rows of the flow table
const MAX_NODES = 120; // boxes on the map
const MAX_EDGES = 300; // edges on the map
const MAX_UNANSWERED = 200;
const RATE_WINDOW_MS = 10000;
const SAME_PACKET_NS = 50000000n; // hops of one packet follow each other within 50 ms (flowctl path)

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('data-')) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};
const svg = (tag, attrs, text) => {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

const state = {
  flows: [], // newest first
  uuids: new Set(),
  namespaces: new Set(),
  unanswered: [],
  unansweredIds: new Set(),
  lost: 0,
  mapSkipped: 0,
  selected: null,
  server: null,
};

function resetData() {
  state.flows = [];
  state.uuids = new Set();
  state.unanswered = [];
  state.unansweredIds = new Set();
  state.lost = 0;
  state.selected = null;
  $('#details').hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Reading flows
// ---------------------------------------------------------------------------------------------

function ext(f) {
  const e = f.extensions;
  return e && e['@type'] && e['@type'].endsWith('flowscope.v1.FlowExtension') ? e : {};
}

function nanos(ts) {
  // RFC 3339 with up to nine fractional digits → BigInt nanoseconds.
  if (!ts) return 0n;
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(ts);
  if (!m) return BigInt(Date.parse(ts) || 0) * 1000000n;
  const frac = (m[2] || '').padEnd(9, '0').slice(0, 9);
  return BigInt(Date.parse(m[1] + 'Z')) * 1000000n + BigInt(frac);
}

function fmtTime(ts) {
  if (!ts) return '';
  const m = /T(\d\d:\d\d:\d\d)(\.\d{0,3})?/.exec(ts);
  return m ? m[1] + (m[2] || '') : ts;
}

function durationNs(d) {
  // protojson Duration: "1.500s"
  if (!d) return 0;
  return Math.round(parseFloat(d) * 1e9);
}

function fmtDelta(ns) {
  ns = Number(ns);
  if (ns < 1000000) return '+' + Math.floor(ns / 1000) + 'µs';
  return '+' + (ns / 1e6).toFixed(1) + 'ms';
}

function reserved(ep) {
  for (const l of (ep && ep.labels) || []) if (l.startsWith('reserved:')) return l.slice(9);
  return null;
}

// The map's box for an endpoint: pods by namespace, and world / host / remote-node boxes.
function nodeOf(ep, ip) {
  if (ep && ep.pod_name) {
    return { id: `pod:${ep.namespace}/${ep.pod_name}`, kind: 'pod', ns: ep.namespace || '', label: ep.pod_name, sub: ep.workloads && ep.workloads[0] ? `${ep.workloads[0].kind || ''} ${ep.workloads[0].name}`.trim() : '' };
  }
  const r = reserved(ep) || (ep && ep.identity === 2 ? 'world' : ep && ep.identity === 1 ? 'host' : null);
  if (r === 'world') return { id: `world:${ip}`, kind: 'world', label: 'world', sub: ip };
  if (r === 'host') return { id: 'host', kind: 'host', label: 'host', sub: '' };
  if (r === 'remote-node') return { id: `remote-node:${ip}`, kind: 'remote-node', label: 'remote-node', sub: ip };
  return { id: `ip:${ip}`, kind: 'world', label: r || 'unknown', sub: ip };
}

function l4(f) {
  const l = f.l4 || {};
  if (l.TCP) return { proto: 'TCP', sport: l.TCP.source_port, dport: l.TCP.destination_port };
  if (l.UDP) return { proto: 'UDP', sport: l.UDP.source_port, dport: l.UDP.destination_port };
  if (l.SCTP) return { proto: 'SCTP', sport: l.SCTP.source_port, dport: l.SCTP.destination_port };
  if (l.ICMPv4) return { proto: 'ICMPv4' };
  if (l.ICMPv6) return { proto: 'ICMPv6' };
  return { proto: 'IP' };
}

function endpointName(ep, ip, port) {
  const p = port ? ':' + port : '';
  if (ep && ep.pod_name) return `${ep.namespace}/${ep.pod_name}${p}`;
  const r = reserved(ep);
  return `${ip || ''}${p}${r ? ' (' + r + ')' : ''}`;
}

function point(f) {
  if (f.trace_observation_point) return f.trace_observation_point.replace(/_/g, '-').toLowerCase();
  if (f.Type === 'L3_L4' && f.verdict === 'DROPPED') return 'drop';
  return '';
}

function summaryOf(f) {
  const e = ext(f);
  if (f.verdict === 'DROPPED') return e.kernel_drop_reason_name || f.drop_reason_desc || 'dropped';
  const tcp = f.l4 && f.l4.TCP;
  if (tcp && tcp.flags) return 'TCP Flags: ' + Object.keys(tcp.flags).filter((k) => tcp.flags[k]).join(', ');
  return f.Summary || '';
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

let generation = 0; // bumped on every (re)start: a stale stream's lines are ignored
let controllers = [];
let retryTimer = null;
let retryDelay = 1000;

function filterWords() {
  let words = $('#filter').value.trim();
  const ns = $('#namespace').value;
  if (ns) words += ` -n ${ns}`;
  return words.trim();
}

function stopStreams() {
  generation++;
  for (const c of controllers) c.abort();
  controllers = [];
  clearTimeout(retryTimer);
}

function startStreams() {
  stopStreams();
  const gen = generation;
  const filter = filterWords();
  setState('connecting');
  readStream(gen, `/api/flows?last=1000&follow=1&filter=${encodeURIComponent(filter)}`, onFlowLine);
  readStream(gen, `/api/flows?last=100&follow=1&unanswered=1&filter=${encodeURIComponent(filter)}`, onUnansweredLine);
  refreshStatus();
}

async function readStream(gen, url, onLine) {
  const controller = new AbortController();
  controllers.push(controller);
  let response;
  try {
    response = await fetch(url, { signal: controller.signal, cache: 'no-store' });
  } catch (err) {
    if (gen === generation) unreachable(`${err.message || err}`);
    return;
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    if (gen !== generation) return;
    if (response.status === 400) { filterError(message); setState('live'); return; }
    unreachable(message);
    return;
  }
  filterError(null);
  reachable();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  let dirty = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (gen !== generation) return;
      buffered += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (!line) continue;
        let msg;
        try { msg = JSON.parse(line); } catch (_) { continue; }
        if (msg.error) { unreachable(msg.error); return; }
        onLine(msg);
        dirty = true;
      }
      if (dirty) { scheduleRender(); dirty = false; }
    }
  } catch (err) {
    if (gen !== generation || controller.signal.aborted) return;
    unreachable(`the stream broke: ${err.message || err}`);
    return;
  }
  if (gen === generation) unreachable('the server ended the stream');
}

function onFlowLine(msg) {
  if (msg.lost_events) {
    state.lost += Number(msg.lost_events.num_events_lost || 0);
    return;
  }
  const f = msg.flow;
  if (!f || !f.uuid || state.uuids.has(f.uuid)) return;
  state.uuids.add(f.uuid);
  state.flows.unshift(f);
  for (const ep of [f.source, f.destination]) if (ep && ep.namespace) addNamespace(ep.namespace);
  if (state.flows.length > MAX_FLOWS) state.uuids.delete(state.flows.pop().uuid);
}

function onUnansweredLine(msg) {
  const f = msg.flow;
  if (!f || !f.uuid || state.unansweredIds.has(f.uuid)) return;
  state.unansweredIds.add(f.uuid);
  state.unanswered.unshift(f);
  if (state.unanswered.length > MAX_UNANSWERED) state.unansweredIds.delete(state.unanswered.pop().uuid);
}

function addNamespace(ns) {
  if (state.namespaces.has(ns)) return;
  state.namespaces.add(ns);
  const select = $('#namespace');
  const options = [...state.namespaces].sort();
  const current = select.value;
  select.replaceChildren(el('option', { value: '' }, 'all namespaces'), ...options.map((n) => el('option', { value: n }, n)));
  select.value = current;
}

// ---------------------------------------------------------------------------------------------
// Reachability
// ---------------------------------------------------------------------------------------------

function setState(s) { document.body.dataset.state = s; }

function serverName() {
  return state.server ? `the flowscope ${state.server}` : 'the flowscope server';
}

function unreachable(reason) {
  setState('unreachable');
  const banner = $('#banner');
  const seconds = Math.round(retryDelay / 1000);
  banner.textContent = `Cannot reach ${serverName()} at ${location.host}: ${reason}. ` +
    `What is shown may be out of date. Retrying in ${seconds} s…`;
  banner.hidden = false;
  for (const c of controllers) c.abort();
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => { retryDelay = Math.min(retryDelay * 2, 10000); startStreams(); }, retryDelay);
}

function reachable() {
  if (document.body.dataset.state !== 'live') setState('live');
  $('#banner').hidden = true;
  retryDelay = 1000;
}

function filterError(message) {
  const box = $('#filter-error');
  box.hidden = !message;
  box.textContent = message ? `Filter: ${message}` : '';
}

async function refreshStatus() {
  try {
    const r = await fetch('/api/status', { cache: 'no-store' });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    state.server = body.server;
    const s = body.status || {};
    const nodes = s.num_connected_nodes !== undefined
      ? ` · ${s.num_connected_nodes}/${Number(s.num_connected_nodes || 0) + Number(s.num_unavailable_nodes || 0)} nodes`
      : '';
    const rate = s.flows_rate !== undefined ? ` · ${Number(s.flows_rate).toFixed(1)} flows/s` : '';
    $('#server').textContent = `${body.server} at ${location.host}${nodes} · ${s.num_flows || 0}/${s.max_flows || 0} flows stored${rate}`;
  } catch (_) {
    // The flow streams report unreachability; the header keeps its last answer.
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering: at most every 250 ms, however fast flows come (a hidden tab has no stream)
// ---------------------------------------------------------------------------------------------

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => { renderPending = false; render(); }, 250);
}

function render() {
  renderMap();
  renderTable();
  renderDrops();
  renderUnanswered();
  if (state.selected) renderDetails(state.selected);
}

// The map: nodes and aggregated edges, original direction (a reply counts for its request).
function aggregate() {
  const nodes = new Map();
  const edges = new Map();
  let skipped = 0;
  const now = Date.now();
  for (const f of state.flows) {
    if (!f.source && !f.destination) continue;
    const ip = f.IP || {};
    const reply = f.is_reply === true;
    let src = nodeOf(f.source, ip.source);
    let dst = nodeOf(f.destination, ip.destination);
    const t = l4(f);
    let port = t.dport;
    if (reply) { [src, dst] = [dst, src]; port = t.sport; }
    const proto = port ? `${t.proto}/${port}` : t.proto;
    for (const n of [src, dst]) {
      if (!nodes.has(n.id)) {
        if (nodes.size >= MAX_NODES) continue;
        nodes.set(n.id, n);
      }
    }
    if (!nodes.has(src.id) || !nodes.has(dst.id)) { skipped++; continue; }
    // Forwarded and dropped traffic between two boxes are two edges: a drop stands out in red
    // next to the traffic that went through.
    const kind = f.verdict === 'DROPPED' ? 'dropped' : 'forwarded';
    const key = `${src.id}→${dst.id}|${kind}`;
    let e = edges.get(key);
    if (!e) {
      if (edges.size >= MAX_EDGES) { skipped++; continue; }
      e = { key, kind, from: src.id, to: dst.id, protocols: new Map(), flows: 0, dropped: 0, recent: 0 };
      edges.set(key, e);
    }
    e.flows++;
    if (f.verdict === 'DROPPED') e.dropped++;
    if (now - Number(nanos(f.time) / 1000000n) < RATE_WINDOW_MS) e.recent++;
    const p = e.protocols.get(proto) || { flows: 0, dropped: 0 };
    p.flows++;
    if (f.verdict === 'DROPPED') p.dropped++;
    e.protocols.set(proto, p);
  }
  state.mapSkipped = skipped;
  return { nodes, edges };
}

const BOX_W = 170, BOX_H = 40, GAP_Y = 16, COL_GAP = 170, PAD = 20;
const TOP = 50; // room above the columns for edges that cross one

function layout(nodes) {
  // Columns: host and remote nodes | one per namespace | world.
  const columns = [];
  const reservedCol = [...nodes.values()].filter((n) => n.kind === 'host' || n.kind === 'remote-node');
  if (reservedCol.length) columns.push({ title: 'node', items: reservedCol });
  const byNs = new Map();
  for (const n of nodes.values()) if (n.kind === 'pod') {
    if (!byNs.has(n.ns)) byNs.set(n.ns, []);
    byNs.get(n.ns).push(n);
  }
  for (const ns of [...byNs.keys()].sort()) columns.push({ title: `namespace ${ns}`, items: byNs.get(ns), group: true });
  const world = [...nodes.values()].filter((n) => n.kind === 'world');
  if (world.length) columns.push({ title: 'outside the cluster', items: world });
  const pos = new Map();
  let x = PAD + 130; // room on the left for edges within a column
  let height = 0;
  const groups = [];
  for (const col of columns) {
    col.items.sort((a, b) => (a.label + a.sub).localeCompare(b.label + b.sub));
    let y = TOP + 22;
    for (const n of col.items) {
      pos.set(n.id, { x, y });
      y += BOX_H + GAP_Y;
    }
    groups.push({ x: x - 8, y: TOP, w: BOX_W + 16, h: y - TOP - GAP_Y + 10, title: col.title, group: col.group });
    height = Math.max(height, y);
    x += BOX_W + COL_GAP;
  }
  return { pos, groups, width: Math.max(x - COL_GAP + PAD, 400), height: Math.max(height + PAD, 200) };
}

function renderMap() {
  const { nodes, edges } = aggregate();
  const { pos, groups, width, height } = layout(nodes);
  const map = $('#map');
  map.setAttribute('viewBox', `0 0 ${width} ${height}`);
  map.style.height = Math.min(Math.max(height, 260), 700) + 'px';
  const defs = svg('defs');
  for (const kind of ['forwarded', 'dropped']) {
    const m = svg('marker', { id: `arrow-${kind}`, viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' });
    m.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: kind === 'dropped' ? '#cf222e' : '#1a7f37' }));
    defs.append(m);
  }
  const layer = [defs];
  for (const g of groups) {
    const group = svg('g', { class: g.group ? 'group' : 'group plain' });
    group.append(svg('rect', { x: g.x, y: g.y, width: g.w, height: g.h, rx: 8 }));
    group.append(svg('text', { x: g.x + 8, y: g.y + 14 }, g.title));
    layer.push(group);
  }
  // Edges under the boxes.
  const pairCount = new Map(); // edges drawn so far between two boxes, either way
  const ordered = [...edges.values()].sort((x, y) => x.key.localeCompare(y.key)); // stable drawing
  for (const e of ordered) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const kind = e.kind;
    const protocols = [...e.protocols.keys()].sort();
    const g = svg('g', { class: `edge ${kind}`, 'data-from': e.from, 'data-to': e.to, 'data-protocols': protocols.join(' '), 'data-flows': e.flows, 'data-dropped': e.dropped });
    const pair = [e.from, e.to].sort().join('|');
    const n = pairCount.get(pair) || 0; // the second edge of a pair is drawn beside the first
    pairCount.set(pair, n + 1);
    let x1, y1, x2, y2, d, lx, ly, anchor = 'middle';
    if (e.from === e.to) {
      x1 = a.x + BOX_W; y1 = a.y + 10; x2 = a.x + BOX_W; y2 = a.y + BOX_H - 10;
      d = `M ${x1} ${y1} C ${x1 + 50} ${y1 - 20}, ${x2 + 50} ${y2 + 20}, ${x2} ${y2}`;
      lx = x1 + 40; ly = a.y + BOX_H / 2;
    } else if (a.x === b.x) {
      // Within a column: out on the left side, away from the edges to the next column.
      x1 = a.x; y1 = a.y + BOX_H / 2 - 4; x2 = b.x; y2 = b.y + BOX_H / 2 + 4;
      const bend = 40 + 25 * n;
      d = `M ${x1} ${y1} C ${x1 - bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
      lx = x1 - bend * 0.75 - 4; ly = (y1 + y2) / 2; anchor = 'end';
    } else if (Math.abs(b.x - a.x) > BOX_W + COL_GAP) {
      // Across a column (host → world): over the top, not through the boxes between.
      const right = b.x > a.x;
      x1 = right ? a.x + BOX_W : a.x; y1 = a.y + BOX_H / 2;
      x2 = right ? b.x : b.x + BOX_W; y2 = b.y + BOX_H / 2;
      const top = 6 + 10 * n;
      const dx = right ? 60 : -60;
      d = `M ${x1} ${y1} C ${x1 + dx} ${top}, ${x2 - dx} ${top}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2; ly = top + 18;
    } else {
      const right = b.x > a.x;
      const off = n * 12;
      x1 = right ? a.x + BOX_W : a.x; y1 = a.y + BOX_H / 2 - 6 + off;
      x2 = right ? b.x : b.x + BOX_W; y2 = b.y + BOX_H / 2 - 6 + off;
      const mx = (x1 + x2) / 2;
      const lift = 40 * n; // labels of parallel edges apart
      d = `M ${x1} ${y1} C ${mx} ${y1 + lift}, ${mx} ${y2 + lift}, ${x2} ${y2}`;
      lx = mx; ly = (y1 + y2) / 2 - 4 + lift * 0.75;
    }
    g.append(svg('path', { d, 'marker-end': `url(#arrow-${kind})` }));
    const rate = e.recent / (RATE_WINDOW_MS / 1000);
    const label = protocols.join(', ') + (kind === 'dropped' ? ' dropped' : '');
    const text = svg('text', { x: lx, y: ly, 'text-anchor': anchor });
    text.append(svg('tspan', { x: lx, dy: 0 }, label));
    text.append(svg('tspan', { x: lx, dy: 12 }, `${e.flows} flows · ${rate.toFixed(1)}/s`));
    g.append(svg('title', {}, `${e.from} → ${e.to}\n${label}\n${e.flows} flows`));
    g.append(text);
    layer.push(g);
  }
  for (const n of nodes.values()) {
    const p = pos.get(n.id);
    const g = svg('g', { class: `node ${n.kind}`, 'data-id': n.id });
    g.append(svg('rect', { x: p.x, y: p.y, width: BOX_W, height: BOX_H, rx: 6 }));
    g.append(svg('text', { x: p.x + 8, y: p.y + 16 }, n.label));
    if (n.sub) g.append(svg('text', { x: p.x + 8, y: p.y + 31, class: 'sub' }, n.sub));
    layer.push(g);
  }
  map.replaceChildren(...layer);
  const notes = [];
  if (state.mapSkipped) notes.push(`${state.mapSkipped} flows not drawn (map capped at ${MAX_NODES} boxes, ${MAX_EDGES} edges)`);
  if (state.lost) notes.push(`${state.lost} flows lost by the server (this view or its buffers fell behind)`);
  $('#map-note').textContent = notes.join(' · ');
}

function renderTable() {
  const rows = state.flows.slice(0, MAX_ROWS).map((f) => {
    const ip = f.IP || {};
    const t = l4(f);
    const tr = el('tr', { 'data-uuid': f.uuid, class: state.selected === f.uuid ? 'selected' : '' },
      el('td', {}, fmtTime(f.time)),
      el('td', {}, f.node_name || ''),
      el('td', {}, endpointName(f.source, ip.source, t.sport)),
      el('td', {}, endpointName(f.destination, ip.destination, t.dport)),
      el('td', {}, t.proto),
      el('td', {}, point(f)),
      el('td', { class: `v-${f.verdict}` }, f.verdict || ''),
      el('td', {}, summaryOf(f)));
    tr.addEventListener('click', () => select(f.uuid));
    return tr;
  });
  $('#flows tbody').replaceChildren(...rows);
  const shown = Math.min(state.flows.length, MAX_ROWS);
  $('#flow-count').textContent = `${shown} shown, newest first` + (state.flows.length > MAX_ROWS ? ` (${state.flows.length} kept)` : '');
}

function renderDrops() {
  const reasons = new Map();
  for (const f of state.flows) {
    if (f.verdict !== 'DROPPED') continue;
    const reason = ext(f).kernel_drop_reason_name || f.drop_reason_desc || 'unknown';
    const r = reasons.get(reason) || { count: 0, last: f };
    r.count++;
    reasons.set(reason, r);
  }
  const rows = [...reasons.entries()].sort((a, b) => b[1].count - a[1].count).map(([reason, r]) => {
    const ip = r.last.IP || {};
    const t = l4(r.last);
    return el('tr', { 'data-reason': reason },
      el('td', { class: 'v-DROPPED' }, reason),
      el('td', {}, r.count),
      el('td', {}, fmtTime(r.last.time)),
      el('td', {}, `${endpointName(r.last.source, ip.source, t.sport)} → ${endpointName(r.last.destination, ip.destination, t.dport)} ${t.proto}`));
  });
  $('#drops tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colSpan: 4, class: 'muted' }, 'no drops'))]));
}

function renderUnanswered() {
  const rows = state.unanswered.slice(0, 50).map((f) => {
    const ip = f.IP || {};
    const t = l4(f);
    const u = ext(f).unanswered_connection || {};
    return el('tr', { 'data-uuid': f.uuid },
      el('td', {}, fmtTime(f.time)),
      el('td', {}, `${endpointName(f.source, ip.source, t.sport)} → ${endpointName(f.destination, ip.destination, t.dport)} ${t.proto}`),
      el('td', {}, u.waited || ''),
      el('td', {}, `${u.packets_sent || 0} pkts`));
  });
  $('#unanswered tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colSpan: 4, class: 'muted' }, 'none'))]));
}

// ---------------------------------------------------------------------------------------------
// Details and the path across the node (flowctl path, from the flows the page holds)
// ---------------------------------------------------------------------------------------------

function select(uuid) {
  state.selected = uuid;
  history.replaceState(null, '', `#flow=${encodeURIComponent(uuid)}`);
  renderTable();
  renderDetails(uuid);
}

// Packets of a connection: same skb hash and direction, hops within 50 ms, one hop per point.
function pathOf(flow) {
  const ctId = ext(flow).ct_id;
  if (!ctId || ctId === '0') return null;
  const flows = state.flows.filter((f) => ext(f).ct_id === ctId)
    .sort((a, b) => (nanos(a.time) < nanos(b.time) ? -1 : nanos(a.time) > nanos(b.time) ? 1 : 0));
  const packets = [];
  for (const f of flows) {
    const hash = ext(f).skb_hash || 0;
    const t = nanos(f.time);
    const p = [...packets].reverse().find((p) => p.hash === hash && p.reply === f.is_reply && t - p.first <= SAME_PACKET_NS && !p.hops.some((h) => point(h) === point(f)));
    if (p) p.hops.push(f); else packets.push({ hash, reply: f.is_reply, first: t, hops: [f] });
  }
  return { ctId, packets };
}

function natText(f) {
  const ip = f.IP || {};
  const e = ext(f);
  if (!ip.source_xlated) return '';
  const port = e.source_xlated_port ? ':' + e.source_xlated_port : '';
  return `SNAT ${ip.source} → ${ip.source_xlated}${port}`;
}

function renderDetails(uuid) {
  const f = state.flows.find((x) => x.uuid === uuid);
  const box = $('#details');
  if (!f) { box.hidden = true; return; }
  box.hidden = false;
  const ip = f.IP || {};
  const t = l4(f);
  $('#details-title').textContent = `${endpointName(f.source, ip.source, t.sport)} → ${endpointName(f.destination, ip.destination, t.dport)} ${t.proto}, ${f.verdict}`;

  const path = pathOf(f);
  const pathBox = $('#path');
  if (!path) {
    pathBox.replaceChildren(el('p', { class: 'muted' }, 'No connection id on this flow: no path across the node.'));
  } else {
    const parts = [el('h3', {}, `Path across the node (connection ${BigInt(path.ctId).toString(16).replace(/^/, '0x')})`)];
    for (const p of path.packets) {
      const first = p.hops[0];
      const mine = p.hops.some((h) => h.uuid === f.uuid);
      parts.push(el('div', { class: 'packet-title' + (mine ? ' mine' : '') }, `${p.reply ? 'reply' : 'request'} ${summaryOf(first)}${mine ? '  ← this flow' : ''}`));
      const hops = el('div', { class: 'hops', 'data-packet': mine ? 'selected' : '' });
      p.hops.forEach((h, i) => {
        if (i > 0) hops.append(el('span', { class: 'arrow' }, '→'));
        const hip = h.IP || {};
        const ht = l4(h);
        const nat = natText(h);
        hops.append(el('div', { class: 'hop' + (h.verdict === 'DROPPED' ? ' dropped' : ''), 'data-point': point(h), 'data-interface': (h.interface && h.interface.name) || '' },
          el('div', { class: 'point' }, `${(h.interface && h.interface.name) || '?'} ${point(h)}`),
          el('div', {}, i === 0 ? fmtTime(h.time) : fmtDelta(nanos(h.time) - p.first)),
          el('div', { class: 'muted' }, `${hip.source || ''}${ht.sport ? ':' + ht.sport : ''} → ${hip.destination || ''}${ht.dport ? ':' + ht.dport : ''}`),
          el('div', { class: 'nat' }, nat || (h.verdict === 'DROPPED' ? 'DROPPED' : ''))));
      });
      parts.push(hops);
    }
    pathBox.replaceChildren(...parts);
  }

  const fields = [];
  const walk = (prefix, v) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x);
    } else {
      fields.push(el('tr', {}, el('td', {}, prefix), el('td', {}, Array.isArray(v) ? v.map((x) => typeof x === 'object' ? JSON.stringify(x) : x).join(', ') : String(v))));
    }
  };
  walk('', f);
  $('#fields tbody').replaceChildren(...fields);
  $('#json').textContent = JSON.stringify(f, null, 2);
}

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

$('#filter-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  resetData();
  const params = new URLSearchParams(location.search);
  params.set('filter', $('#filter').value);
  history.replaceState(null, '', `?${params}`);
  startStreams();
});
$('#namespace').addEventListener('change', () => { resetData(); startStreams(); });
$('#details-close').addEventListener('click', () => {
  state.selected = null;
  $('#details').hidden = true;
  history.replaceState(null, '', location.pathname + location.search);
  renderTable();
});

// A hidden tab holds no stream: the server does no work for it. Back in view, it reads the
// recent history again (flows it already has are skipped by their uuid).
document.addEventListener('visibilitychange', () => {
  if (document.hidden) stopStreams(); else startStreams();
});
setInterval(() => { if (!document.hidden) refreshStatus(); }, 5000);
// Rates age even when no flow comes.
setInterval(() => { if (!document.hidden) scheduleRender(); }, 2000);

(function init() {
  const params = new URLSearchParams(location.search);
  if (params.get('filter')) $('#filter').value = params.get('filter');
  const m = /#flow=(.+)$/.exec(location.hash);
  if (m) state.selected = decodeURIComponent(m[1]);
  startStreams();
})();
