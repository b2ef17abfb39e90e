// The DAG of a business date's instances: all of them, a task's with its upstream and
// downstream, or the neighbourhood of one instance to a chosen depth up and down. The API
// narrows the graph when it knows `instance`/`depth_up`/`depth_down`; the page narrows it
// again itself, so an older scheduler gives the same picture. Refreshed every 5 seconds.

import * as api from '../api.js';
import { h, fill, badge, fmtTime, link, shortId, yesterday, toDateInput, fromDateInput, hashWith, busy, flash } from '../ui.js';
import { draw, neighbourhood } from '../dag.js';

/// The cycle time as yyyy-mm-dd HH:MM (the business date when there is none).
function cycle(i) {
  const c = i.cyctime || '';
  return c.length >= 12 ? `${c.slice(0, 4)}-${c.slice(4, 6)}-${c.slice(6, 8)} ${c.slice(8, 10)}:${c.slice(10, 12)}` : i.bizdate;
}

const LEGEND = ['success', 'running', 'waiting_resources', 'waiting_upstream', 'failed', 'killed', 'frozen'];

export async function render(view, _params, query) {
  const q = {
    bizdate: query.bizdate || yesterday(),
    task: query.task || '',
    instance: query.instance || '',
    up: query.up ?? '2',
    down: query.down ?? '2',
  };
  const bizdate = h('input', { type: 'date', id: 'dag-bizdate', value: toDateInput(q.bizdate) });
  const task = h('input', { id: 'dag-task', value: q.task, placeholder: 'all tasks' });
  const up = h('input', { id: 'dag-up', type: 'number', min: 0, max: 20, value: q.up });
  const down = h('input', { id: 'dag-down', type: 'number', min: 0, max: 20, value: q.down });
  const go = () => {
    location.hash = hashWith('/dag', {
      bizdate: fromDateInput(bizdate.value), task: task.value.trim(), instance: q.instance, up: q.instance ? up.value : '', down: q.instance ? down.value : '',
    });
  };
  for (const el of [bizdate, task, up, down]) el.addEventListener('change', go);
  const canvas = h('div.dag-canvas#dag-canvas');
  const notice = h('p.notice#dag-truncated', { hidden: true },
    'This day has more instances than one picture holds: only the first ones are drawn. Choose a task, or an instance and a depth.');
  const detail = h('aside.dag-detail#dag-detail', h('p.muted', 'Click an instance for its details.'));
  const zoomIn = h('button.small', { type: 'button', title: 'zoom in' }, '+');
  const zoomOut = h('button.small', { type: 'button', title: 'zoom out' }, '−');
  const fitBtn = h('button.small', { type: 'button' }, 'Fit');
  const centerBox = q.instance
    ? h('span.row',
      h('span.muted', 'around ', h('code', shortId(q.instance)), ' '),
      h('label.field.narrow', h('span.label', 'Upstream depth'), up), h('label.field.narrow', h('span.label', 'Downstream depth'), down),
      link(hashWith('/dag', { bizdate: q.bizdate, task: q.task }), 'whole day'))
    : null;
  fill(view,
    h('div.page-head', h('h1', 'DAG'), h('span.row', zoomOut, zoomIn, fitBtn)),
    h('div.row.filters', h('label.field', h('span.label', 'Business date'), bizdate), h('label.field', h('span.label', 'Task'), task), centerBox),
    h('div.legend', LEGEND.map((s) => h('span', badge(s))), h('span.edge-key.same', 'same cycle'), h('span.edge-key.previous', 'previous cycle')),
    notice,
    h('div.dag-wrap', canvas, detail));

  let graph = null;
  let selected = q.instance || '';
  let byId = new Map();
  let signature = '';

  function showDetail(id) {
    selected = id;
    const i = byId.get(id);
    if (!i) {
      fill(detail, h('p', h('code', id)), h('p.muted', 'Not an instance of this page (another day or workspace).'));
      return;
    }
    const rerun = h('button.small#dag-rerun', { type: 'button' }, 'Rerun');
    rerun.addEventListener('click', () => busy(rerun, async () => {
      await api.post('/instances/' + api.enc(id) + '/rerun', { id, downstream: false });
      flash('rerun requested');
      await refresh();
    }));
    fill(detail,
      h('h3', i.task),
      h('p', badge(i.state), i.waiting_reason ? h('span.muted', ' ' + i.waiting_reason) : null),
      h('table.props', h('tbody',
        [['Instance', h('code', shortId(i.id))], ['Business date', i.bizdate], ['Cycle time', i.cyctime || '-'], ['Run', i.run],
          ['Attempts', String((i.attempts || []).length)], ['Finished', fmtTime(i.finished_ms)]]
          .map(([k, v]) => h('tr', h('th', k), h('td', v))))),
      h('p.actions', link('#/instance/' + api.enc(i.id), 'Open instance'), ' ',
        link(hashWith('/dag', { bizdate: i.bizdate, instance: i.id, up: up.value || 2, down: down.value || 2 }), 'Center here'), ' ', rerun));
  }

  async function load() {
    const params = { bizdate: q.bizdate, task: q.task };
    if (q.instance) Object.assign(params, { instance: q.instance, depth_up: q.up, depth_down: q.down });
    try {
      return await api.get('/dag', params);
    } catch (e) {
      // An API that does not know the neighbourhood parameters: the whole day, narrowed here.
      if (q.instance && e.status === 400) return api.get('/dag', { bizdate: q.bizdate, task: q.task });
      throw e;
    }
  }

  async function refresh() {
    const r = await load();
    let instances = r.instances || [];
    let edges = r.edges || [];
    if (q.instance && instances.some((i) => i.id === q.instance)) {
      const keep = neighbourhood(q.instance, edges, Number(q.up) || 0, Number(q.down) || 0);
      instances = instances.filter((i) => keep.has(i.id));
      edges = edges.filter((e) => keep.has(e.from) && keep.has(e.to));
    }
    byId = new Map(instances.map((i) => [i.id, i]));
    // Instances whose graph goes on beyond the answer (an API that cuts the walk says which).
    const borders = new Map((r.borders || []).map((b) => [b.id, b]));
    notice.hidden = !r.truncated;
    // Endpoints of edges outside the answer (a previous day's instance) are drawn as ghosts.
    const ghosts = new Set();
    for (const e of edges) for (const id of [e.from, e.to]) if (!byId.has(id)) ghosts.add(id);
    const nodes = instances.map((i) => ({
      id: i.id, label: i.task, sub: `${i.state} · ${cycle(i)}`, state: i.state,
      moreUp: !!borders.get(i.id)?.more_upstream, moreDown: !!borders.get(i.id)?.more_downstream,
    }))
      .concat([...ghosts].map((id) => ({ id, label: (id.split('@')[0] || id).split('/').pop(), sub: 'other day', state: 'unknown', ghost: true })));
    const sig = JSON.stringify([nodes.map((n) => [n.id, n.state]), edges.map((e) => [e.from, e.to, e.previous])]);
    if (sig === signature) return;
    const firstDraw = !signature;
    signature = sig;
    if (!nodes.length) {
      fill(canvas, h('p.muted.empty', 'No instances for this business date.'));
      graph = null;
      return;
    }
    if (firstDraw || !graph) {
      graph = draw(canvas, nodes, edges, { onSelect: showDetail, selected });
    } else {
      // States changed: update colours in place, keeping the user's zoom and pan.
      for (const n of nodes) {
        const el = canvas.querySelector(`g.node[data-id="${CSS.escape(n.id)}"]`);
        if (!el) {
          graph = draw(canvas, nodes, edges, { onSelect: showDetail, selected });
          break;
        }
        el.setAttribute('class', `node state-${n.state}${n.ghost ? ' ghost' : ''}${n.id === selected ? ' selected' : ''}`);
        el.dataset.state = n.state;
        const sub = el.querySelector('text.sub');
        if (sub) sub.textContent = n.sub;
      }
    }
    if (selected) showDetail(selected);
  }

  zoomIn.addEventListener('click', () => graph?.zoom(1.25));
  zoomOut.addEventListener('click', () => graph?.zoom(0.8));
  fitBtn.addEventListener('click', () => graph?.fit());
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
