// The DAG drawing: a layered layout computed here (longest-path layers, then barycenter passes
// to untangle each layer's order) drawn as SVG, top to bottom. Nodes are coloured by state;
// same-cycle edges are solid, cross-cycle ("previous") edges dashed. The wheel zooms around
// the pointer, dragging the background pans, clicking a node selects it.

import { shortId } from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';
export const NODE_W = 180;
export const NODE_H = 46;
const GAP_X = 36;
const GAP_Y = 70;

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/// Layers and order of `nodes` (ids) under `edges` ({from, to}); returns id -> {layer, pos}.
/// Longest path from the sources gives each node its layer (edges that would close a cycle, as
/// a previous-cycle edge of a task on itself might, are ignored); four down and up sweeps of
/// the barycenter heuristic then order each layer by the mean position of its neighbours.
export function layout(nodes, edges, key = (id) => id) {
  const ids = [...nodes];
  const idSet = new Set(ids);
  const es = edges.filter((e) => idSet.has(e.from) && idSet.has(e.to) && e.from !== e.to);
  const out = new Map(ids.map((id) => [id, []]));
  const inn = new Map(ids.map((id) => [id, []]));
  const indeg = new Map(ids.map((id) => [id, 0]));
  for (const e of es) {
    out.get(e.from).push(e.to);
    inn.get(e.to).push(e.from);
    indeg.set(e.to, indeg.get(e.to) + 1);
  }
  // Kahn's order; what a cycle leaves over is appended as it comes.
  const order = [];
  const queue = ids.filter((id) => indeg.get(id) === 0);
  const deg = new Map(indeg);
  while (queue.length) {
    const id = queue.shift();
    order.push(id);
    for (const t of out.get(id)) {
      deg.set(t, deg.get(t) - 1);
      if (deg.get(t) === 0) queue.push(t);
    }
  }
  const placed = new Set(order);
  for (const id of ids) if (!placed.has(id)) order.push(id);
  const rank = new Map(order.map((id, i) => [id, i]));
  const layer = new Map();
  for (const id of order) {
    let l = 0;
    for (const u of inn.get(id)) if (rank.get(u) < rank.get(id)) l = Math.max(l, (layer.get(u) ?? 0) + 1);
    layer.set(id, l);
  }
  const layers = [];
  for (const id of order) (layers[layer.get(id)] ||= []).push(id);
  for (const l of layers) l.sort((a, b) => String(key(a)).localeCompare(String(key(b))));
  const pos = new Map();
  const index = () => layers.forEach((l) => l.forEach((id, i) => pos.set(id, i)));
  index();
  const bary = (id, nbrs) => {
    const ps = nbrs.filter((n) => pos.has(n)).map((n) => pos.get(n));
    return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : pos.get(id);
  };
  for (let pass = 0; pass < 4; pass++) {
    for (let i = 1; i < layers.length; i++) {
      const b = new Map(layers[i].map((id) => [id, bary(id, inn.get(id))]));
      layers[i].sort((x, y) => b.get(x) - b.get(y));
      layers[i].forEach((id, k) => pos.set(id, k));
    }
    for (let i = layers.length - 2; i >= 0; i--) {
      const b = new Map(layers[i].map((id) => [id, bary(id, out.get(id))]));
      layers[i].sort((x, y) => b.get(x) - b.get(y));
      layers[i].forEach((id, k) => pos.set(id, k));
    }
  }
  const result = new Map();
  layers.forEach((l, li) => l.forEach((id, i) => result.set(id, { layer: li, pos: i, width: l.length })));
  return result;
}

function truncate(text, n) {
  return text.length > n ? text.slice(0, n - 1) + '…' : text;
}

/// Draws the graph into `host`; `nodes` are {id, label, sub, state, ghost, moreUp, moreDown},
/// `edges` {from, to, previous}. Returns { select(id), fit() }.
export function draw(host, nodes, edges, { onSelect, selected } = {}) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const lay = layout(nodes.map((n) => n.id), edges, (id) => byId.get(id).label);
  const widest = Math.max(1, ...[...lay.values()].map((p) => p.width));
  const span = widest * (NODE_W + GAP_X);
  const at = (id) => {
    const p = lay.get(id);
    const rowW = p.width * (NODE_W + GAP_X);
    return { x: (span - rowW) / 2 + p.pos * (NODE_W + GAP_X), y: p.layer * (NODE_H + GAP_Y) };
  };
  const svg = s('svg', { class: 'dag', role: 'img', 'aria-label': 'dependency graph' });
  const defs = s('defs', {},
    s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' })));
  const world = s('g', { class: 'world' });
  svg.append(defs, s('rect', { class: 'backdrop', x: 0, y: 0, width: '100%', height: '100%' }), world);
  for (const e of edges) {
    if (!lay.has(e.from) || !lay.has(e.to) || e.from === e.to) continue;
    const a = at(e.from);
    const b = at(e.to);
    const x1 = a.x + NODE_W / 2;
    const y1 = a.y + NODE_H;
    const x2 = b.x + NODE_W / 2;
    const y2 = b.y;
    const dy = Math.max(30, (y2 - y1) / 2);
    world.append(s('path', {
      class: 'edge' + (e.previous ? ' previous' : ''), 'data-from': e.from, 'data-to': e.to,
      d: `M${x1},${y1} C${x1},${y1 + dy} ${x2},${y2 - dy} ${x2},${y2}`, 'marker-end': 'url(#arrow)',
    }, s('title', {}, e.previous ? 'previous cycle (cross-cycle dependency)' : 'same cycle')));
  }
  const els = new Map();
  for (const n of nodes) {
    const p = at(n.id);
    const g = s('g', { class: `node state-${n.state || 'unknown'}${n.ghost ? ' ghost' : ''}`, transform: `translate(${p.x},${p.y})`, 'data-id': n.id, 'data-state': n.state || '', tabindex: 0 },
      s('title', {}, `${n.label} · ${n.state || ''}\n${shortId(n.id)}`),
      s('rect', { width: NODE_W, height: NODE_H, rx: 6, ry: 6 }),
      s('text', { x: 10, y: 19, class: 'label' }, truncate(n.label, 22)),
      s('text', { x: 10, y: 36, class: 'sub' }, truncate(n.sub || '', 28)),
      // More of the graph beyond the drawing: centre on the node to see it.
      n.moreUp ? s('text', { x: NODE_W / 2, y: -5, class: 'more', 'text-anchor': 'middle' }, '⋯ more upstream') : null,
      n.moreDown ? s('text', { x: NODE_W / 2, y: NODE_H + 13, class: 'more', 'text-anchor': 'middle' }, '⋯ more downstream') : null);
    g.addEventListener('click', (ev) => {
      ev.stopPropagation();
      select(n.id);
      onSelect?.(n.id);
    });
    g.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') {
        select(n.id);
        onSelect?.(n.id);
      }
    });
    els.set(n.id, g);
    world.append(g);
  }
  host.replaceChildren(svg);

  // Zoom and pan: one transform on the world group.
  let k = 1;
  let tx = 20;
  let ty = 20;
  const apply = () => world.setAttribute('transform', `translate(${tx},${ty}) scale(${k})`);
  svg.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const px = ev.clientX - r.left;
    const py = ev.clientY - r.top;
    const f = Math.exp(-ev.deltaY * 0.0015);
    const nk = Math.min(4, Math.max(0.1, k * f));
    tx = px - ((px - tx) * nk) / k;
    ty = py - ((py - ty) * nk) / k;
    k = nk;
    apply();
  }, { passive: false });
  let drag = null;
  svg.addEventListener('pointerdown', (ev) => {
    if (ev.target.closest('.node')) return;
    drag = { x: ev.clientX, y: ev.clientY, tx, ty };
    svg.setPointerCapture(ev.pointerId);
    svg.classList.add('panning');
  });
  svg.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    tx = drag.tx + ev.clientX - drag.x;
    ty = drag.ty + ev.clientY - drag.y;
    apply();
  });
  const end = () => {
    drag = null;
    svg.classList.remove('panning');
  };
  svg.addEventListener('pointerup', end);
  svg.addEventListener('pointercancel', end);

  function fit() {
    const r = svg.getBoundingClientRect();
    const layers = Math.max(1, ...[...lay.values()].map((p) => p.layer + 1));
    const w = span;
    const hgt = layers * (NODE_H + GAP_Y);
    k = Math.min(1.2, Math.max(0.1, Math.min((r.width - 40) / w, (r.height - 40) / hgt)));
    tx = (r.width - w * k) / 2;
    ty = 20;
    apply();
  }

  function select(id) {
    for (const [nid, el] of els) el.classList.toggle('selected', nid === id);
    for (const p of world.querySelectorAll('path.edge')) {
      p.classList.toggle('lit', p.dataset.from === id || p.dataset.to === id);
    }
  }

  fit();
  if (selected) select(selected);
  return {
    select,
    fit,
    zoom: (f) => {
      const r = svg.getBoundingClientRect();
      const nk = Math.min(4, Math.max(0.1, k * f));
      tx = r.width / 2 - ((r.width / 2 - tx) * nk) / k;
      ty = r.height / 2 - ((r.height / 2 - ty) * nk) / k;
      k = nk;
      apply();
    },
  };
}

/// The instances within `up` steps upstream and `down` steps downstream of `center`.
export function neighbourhood(center, edges, up, down) {
  const keep = new Set([center]);
  const walk = (dir, depth) => {
    let frontier = [center];
    for (let d = 0; d < depth && frontier.length; d++) {
      const next = [];
      for (const id of frontier) {
        for (const e of edges) {
          const [from, to] = dir === 'up' ? [e.to, e.from] : [e.from, e.to];
          if (from === id && !keep.has(to)) {
            keep.add(to);
            next.push(to);
          }
        }
      }
      frontier = next;
    }
  };
  walk('up', up);
  walk('down', down);
  return keep;
}
