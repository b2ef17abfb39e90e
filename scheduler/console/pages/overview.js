// Overview: today's instances (the runs of yesterday's business date) counted by state, the
// ones that need a person (failed, killed) listed first, and the agents online per group.
// Refreshed every 5 seconds while open.

import * as api from '../api.js';
import { h, fill, badge, table, fmtTime, link, yesterday, toDateInput, fromDateInput, stateRank, STATE_ORDER, num, hashWith } from '../ui.js';

export async function render(view, _params, query) {
  const bizdate = query.bizdate || yesterday();
  const date = h('input', { type: 'date', id: 'overview-date', value: toDateInput(bizdate) });
  date.addEventListener('change', () => (location.hash = hashWith('/', { bizdate: fromDateInput(date.value) })));
  const counts = h('div.cards#state-counts');
  const list = h('div#overview-instances');
  const groupsBox = h('div#overview-groups');
  fill(view,
    h('div.page-head', h('h1', 'Overview'), h('label.inline', 'Business date ', date)),
    h('section', h('h2', 'Instances of ', bizdate), counts, list),
    h('section', h('h2', 'Agents online per resource group'), groupsBox));

  async function refresh() {
    const [inst, groups] = await Promise.all([
      api.get('/instances', { bizdate, limit: 1000 }),
      api.get('/groups'),
    ]);
    const all = inst.instances || [];
    // The API's counts by state cover the whole day (the list may be a first page of it);
    // an older API gives none, and the page counts what it got.
    const by = {};
    if (inst.counts && Object.keys(inst.counts).length) {
      for (const [s, n] of Object.entries(inst.counts)) if (num(n)) by[s] = num(n);
    } else {
      for (const i of all) by[i.state] = (by[i.state] || 0) + 1;
    }
    const states = STATE_ORDER.filter((s) => by[s]).concat(Object.keys(by).filter((s) => !STATE_ORDER.includes(s)));
    fill(counts,
      h('a.card.total', { href: hashWith('/instances', { bizdate }) }, h('span.count', String(num(inst.total) || all.length)), h('span', 'instances')),
      states.map((s) => h('a', { class: 'card state-' + s, href: hashWith('/instances', { bizdate, state: s }) }, h('span.count', String(by[s])), h('span', s))));
    const sorted = [...all].sort((a, b) => stateRank(a.state) - stateRank(b.state) || a.task.localeCompare(b.task));
    fill(list, table(['Task', 'State', 'Run', 'Created', 'Finished', ''],
      sorted.slice(0, 50).map((i) => [link('#/instance/' + api.enc(i.id), i.task), badge(i.state), i.run || '', fmtTime(i.created_ms), fmtTime(i.finished_ms),
        link(hashWith('/dag', { bizdate: i.bizdate, instance: i.id }), 'DAG')]),
      { empty: 'No instances for this business date.' }));
    fill(groupsBox, table(['Group', 'Online', 'Agents', 'Running / slots'],
      (groups.groups || []).map((g) => {
        const agents = g.agents || [];
        const online = agents.filter((a) => a.state === 'online' || a.state === 'draining');
        const running = online.reduce((n, a) => n + num(a.running), 0);
        const slots = online.reduce((n, a) => n + num(a.slots), 0);
        return [link('#/groups', g.name), h('span', { class: online.length ? 'ok' : 'bad' }, String(online.length)), String(agents.length), `${running} / ${slots}`];
      }),
      { empty: 'No resource group yet: create one on the Resource groups page.' }));
  }

  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
