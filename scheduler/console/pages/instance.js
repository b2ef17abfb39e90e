// One instance: its state and why it waits, resolved parameters, state history, attempts with
// their statistics, the live log (polled every second while the instance has not ended), and
// the operator's actions: rerun, rerun with downstream, kill, freeze, mark success.

import * as api from '../api.js';
import { h, fill, badge, table, shortId, fmtTime, fmtDuration, fmtCount, flash, busy, link, hashWith, num, FINAL } from '../ui.js';

export async function render(view, params) {
  const id = params.id;
  const head = h('div.page-head');
  const summary = h('div#instance-summary');
  const actions = h('div.actions#instance-actions');
  const paramsBox = h('div#instance-params');
  const historyBox = h('div#instance-history');
  const attemptsBox = h('div#instance-attempts');
  const log = h('pre.log#instance-log');
  const logStatus = h('span.muted#log-status');
  fill(view, head, actions,
    h('div.two', summary, h('section.log-box', h('div.section-head', h('h2', 'Log'), logStatus), log)),
    h('section', h('h2', 'Attempts'), attemptsBox),
    h('div.two', h('section', h('h2', 'Parameters (resolved)'), paramsBox), h('section', h('h2', 'History'), historyBox)));

  let inst = null;
  let shown = 0;
  let lastAttempt = '';
  let timer = null;
  let stopped = false;

  function button(label, idAttr, cls, fn) {
    const b = h('button', { type: 'button', id: idAttr, class: cls || '' }, label);
    b.addEventListener('click', () => busy(b, async () => {
      await fn();
      await refresh();
    }));
    return b;
  }

  function renderInstance(i) {
    fill(head, h('h1', 'Instance ', h('code', shortId(i.id))),
      h('span.actions', link('#/task/' + api.enc(i.task), 'Task ' + i.task), ' ', link(hashWith('/dag', { bizdate: i.bizdate, instance: i.id }), 'DAG')));
    const final = FINAL.has(i.state);
    fill(actions,
      button('Rerun', 'act-rerun', 'primary', async () => {
        await api.post('/instances/' + api.enc(id) + '/rerun', { id, downstream: false });
        flash('rerun requested');
      }),
      button('Rerun with downstream', 'act-rerun-downstream', '', async () => {
        const r = await api.post('/instances/' + api.enc(id) + '/rerun', { id, downstream: true });
        flash(`rerun of ${(r.ids || []).length} instances requested`);
      }),
      final ? null : button('Kill', 'act-kill', 'danger', async () => {
        if (!confirm('Kill this instance? Its running attempt is stopped.')) return;
        await api.post('/instances/' + api.enc(id) + '/kill', { id });
        flash('kill requested');
      }),
      button(i.state === 'frozen' ? 'Unfreeze' : 'Freeze', 'act-freeze', '', async () => {
        await api.post('/instances/' + api.enc(id) + '/freeze', { id, freeze: i.state !== 'frozen' });
        flash(i.state === 'frozen' ? 'instance unfrozen' : 'instance frozen');
      }),
      i.state === 'success' ? null : button('Mark success', 'act-mark-success', '', async () => {
        if (!confirm('Mark this instance successful? Its downstream may start.')) return;
        await api.post('/instances/' + api.enc(id) + '/mark-success', { id });
        flash('marked success');
      }));
    const rows = [
      ['Task', link('#/task/' + api.enc(i.task), `${i.task} v${num(i.version)}`)], ['Business date', i.bizdate], ['Cycle time', i.cyctime || '-'],
      ['State', h('span', badge(i.state), i.waiting_reason ? h('span.muted', ' ' + i.waiting_reason) : null)],
      ['Run', i.run], ['Type', i.kind], ['Due', fmtTime(i.due_ms)], ['Created', fmtTime(i.created_ms)], ['Finished', fmtTime(i.finished_ms)],
      ['Retries left', String(num(i.retries_left))], ['Priority', String(num(i.priority))],
      ['Upstream', !(i.upstream || []).length && !(i.previous || []).length ? '-' : (i.upstream || []).concat((i.previous || []).map((p) => p + ' (previous cycle)')).map((u, k) => [k ? ', ' : '', link('#/instance/' + api.enc(u.replace(/ \(previous cycle\)$/, '')), shortId(u))])],
      i.dry_run ? ['Dry run', i.dry_run] : null,
      num(i.dirty_records) ? ['Dirty records', fmtCount(i.dirty_records)] : null,
    ].filter(Boolean);
    fill(summary, h('table.props', h('tbody', rows.map(([k, v]) => h('tr', h('th', k), h('td', { id: k === 'State' ? 'instance-state' : null, 'data-state': k === 'State' ? i.state : null }, v))))));
    const params = Object.entries(i.params || {}).sort();
    fill(paramsBox, table(['Name', 'Value'], params.map(([k, v]) => [h('code', k), h('code', v)]), { empty: 'No parameters.' }));
    fill(historyBox, table(['At', 'State', 'Why'], (i.history || []).map((t) => [fmtTime(t.at_ms), badge(t.state), t.reason || '']), { empty: 'No transitions yet.' }));
    fill(attemptsBox, table(['Attempt', 'Agent', 'State', 'Started', 'Took', 'Read', 'Written', 'Dirty', 'Splits', 'Error'],
      (i.attempts || []).map((a) => {
        const s = a.stats || {};
        const took = num(a.finished_ms) && num(a.started_ms) ? fmtDuration(num(a.finished_ms) - num(a.started_ms)) : (num(s.elapsed_ms) ? fmtDuration(s.elapsed_ms) : '-');
        return h('tr', { 'data-attempt': a.id }, [h('code', a.id.slice(0, 12)), h('code', (a.agent_id || '').slice(0, 8) + (a.reader_agent_id ? ' ← ' + a.reader_agent_id.slice(0, 8) : '')),
          badge(a.state), fmtTime(a.started_ms), took, fmtCount(s.records_read), fmtCount(s.records_written), fmtCount(s.dirty_records),
          num(s.splits_total) ? `${num(s.splits_done)}/${num(s.splits_total)}` : '-', [a.error || '', a.late_report ? ` (late report: ${a.late_report})` : '']].map((c) => h('td', c)));
      }), { empty: 'Not dispatched yet.' }));
  }

  async function refreshLog() {
    const r = await api.get('/instances/' + api.enc(id) + '/logs');
    const lines = r.lines || [];
    if (lines.length < shown) {
      log.replaceChildren();
      shown = 0;
      lastAttempt = '';
    }
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    if (shown === 0 && lines.length) log.replaceChildren();
    for (const l of lines.slice(shown)) {
      if (l.attempt_id !== lastAttempt) {
        log.append(h('div.log-attempt', `── attempt ${l.attempt_id}`));
        lastAttempt = l.attempt_id;
      }
      log.append(h('div', { class: 'log-line level-' + (l.level || 'info').toLowerCase() },
        h('span.ts', fmtTime(l.ts_ms).slice(11) + ' '), h('span.lvl', (l.level || '').toUpperCase().padEnd(5) + ' '), l.message));
    }
    shown = lines.length;
    if (!shown) fill(log, h('span.muted', 'No log lines yet.'));
    if (atBottom) log.scrollTop = log.scrollHeight;
    log.dataset.lines = String(shown);
  }

  async function refresh() {
    inst = await api.get('/instances/' + api.enc(id));
    renderInstance(inst);
    await refreshLog();
    const live = !FINAL.has(inst.state);
    logStatus.textContent = live ? 'live: updated every second' : 'ended';
    logStatus.dataset.live = String(live);
    return live;
  }

  // Polls while the instance runs, slower once it has ended (a rerun elsewhere wakes it up).
  async function loop() {
    if (stopped) return;
    let live = true;
    try {
      live = await refresh();
    } catch (e) {
      if (e.status === 401) return;
      logStatus.textContent = 'cannot refresh: ' + e.message;
    }
    if (!stopped) timer = setTimeout(loop, live ? 1000 : 5000);
  }
  await refresh();
  timer = setTimeout(loop, 1000);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
