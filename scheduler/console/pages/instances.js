// Instances of a business date with filters (task name search, state), in cycle-time order,
// paged by the API (`offset`/`total`), refreshed every 5 seconds while open.

import * as api from '../api.js';
import { h, fill, badge, table, fmtTime, link, shortId, yesterday, toDateInput, fromDateInput, hashWith, num, STATE_ORDER } from '../ui.js';

const PAGE = 100;

export async function render(view, _params, query) {
  const q = { bizdate: query.bizdate ?? yesterday(), task: query.task || '', state: query.state || '', offset: Number(query.offset) || 0 };
  const bizdate = h('input', { type: 'date', id: 'filter-bizdate', value: toDateInput(q.bizdate) });
  const task = h('input', { id: 'filter-task', value: q.task, placeholder: 'task name contains', list: 'task-names' });
  const names = h('datalist#task-names');
  const state = h('select#filter-state', h('option', { value: '' }, 'any state'), STATE_ORDER.map((s) => h('option', { value: s, selected: s === q.state }, s)));
  const apply = () => {
    location.hash = hashWith('/instances', { bizdate: fromDateInput(bizdate.value), task: task.value.trim(), state: state.value });
  };
  for (const el of [bizdate, state]) el.addEventListener('change', apply);
  task.addEventListener('change', apply);
  const box = h('div#instance-list');
  const pager = h('div.pager');
  fill(view,
    h('div.page-head', h('h1', 'Instances'), link(hashWith('/dag', { bizdate: q.bizdate, task: q.task }), 'Show as DAG')),
    h('div.row.filters', h('label.field', h('span.label', 'Business date'), bizdate), h('label.field', h('span.label', 'Task'), task, names),
      h('label.field', h('span.label', 'State'), state)),
    box, pager);
  api.get('/tasks').then((r) => fill(names, (r.tasks || []).map((t) => h('option', { value: t.name })))).catch(() => {});

  async function refresh() {
    const r = await api.get('/instances', { bizdate: q.bizdate, search: q.task, state: q.state, limit: PAGE, offset: q.offset || undefined });
    const list = r.instances || [];
    fill(box, table(['Instance', 'Task', 'Business date', 'State', 'Run', 'Attempts', 'Created', 'Finished', ''], list.map((i) => h('tr', { 'data-instance': i.id },
      [link('#/instance/' + api.enc(i.id), h('code', shortId(i.id))), link('#/task/' + api.enc(i.task), i.task), i.bizdate, badge(i.state), i.run,
        String((i.attempts || []).length), fmtTime(i.created_ms), fmtTime(i.finished_ms),
        link(hashWith('/dag', { bizdate: i.bizdate, instance: i.id }), 'DAG')].map((c) => h('td', c)))),
    { empty: 'No instance matches.' }));
    // Paging only when the API says how many there are.
    const total = r.total === undefined ? null : num(r.total);
    if (total !== null && total > PAGE) {
      const go = (offset) => hashWith('/instances', { ...q, bizdate: q.bizdate, offset: offset || '' });
      fill(pager,
        q.offset > 0 ? link(go(Math.max(0, q.offset - PAGE)), '← earlier') : null,
        h('span.muted', ` ${q.offset + 1}–${q.offset + list.length} of ${total} `),
        q.offset + PAGE < total ? link(go(q.offset + PAGE), 'later →') : null);
    } else {
      pager.replaceChildren();
    }
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
