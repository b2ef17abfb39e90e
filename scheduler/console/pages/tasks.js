// Tasks: the list, a task's page (run now, freeze, backfill) and the new-task page with its
// two modes, as in DataWorks: the wizard (two tables; the scheduler reads their columns
// through an agent and writes the job, the same logic as `ferry task create --from --to`) and
// script mode (the job JSON in an editor). "Show as script" turns the wizard's job into the
// script; there is no way back, because the script is what is stored.

import * as api from '../api.js';
import { h, fill, table, fmtTime, flash, busy, field, link, badge, yesterday, toDateInput, fromDateInput, hashWith, num } from '../ui.js';
import { jsonEditor } from '../editor.js';

const DB_KINDS = new Set(['mysql', 'postgresql', 'sqlite']);

const TEMPLATE = `{
  "job": {
    "setting": { "speed": { "channel": 1 }, "errorLimit": { "record": 0 } },
    "content": [{
      "reader": { "name": "postgresqlreader", "parameter": {
        "datasource": "SOURCE", "table": ["orders"], "column": ["*"] } },
      "writer": { "name": "postgresqlwriter", "parameter": {
        "datasource": "TARGET", "table": ["orders_copy"], "column": ["*"],
        "preSql": ["DELETE FROM @table"] } }
    }]
  }
}
`;

export async function render(view) {
  const list = (await api.get('/tasks')).tasks || [];
  fill(view,
    h('div.page-head', h('h1', 'Tasks'), h('a.button.primary#task-new', { href: '#/tasks/new' }, 'New task')),
    table(['Task', 'Type', 'Group', 'Version', 'Schedule', 'Upstream', '', 'Updated'], list.map((t) => [
      link('#/task/' + api.enc(t.name), t.name), t.kind, t.group + (t.writer_group ? ' → ' + t.writer_group : ''), 'v' + num(t.version),
      t.cron ? `${t.cron} (${t.timezone})` : 'manual',
      (t.dependencies || []).map((d) => d.upstream + (d.previous ? ' (previous)' : '')).join(', '),
      t.frozen ? badge('frozen') : '', fmtTime(t.updated_ms)]), { empty: 'No task yet.' }));
}

export async function renderTask(view, params) {
  const t = await api.get('/tasks/' + api.enc(params.name));
  const bizdate = h('input', { type: 'date', id: 'run-bizdate', value: toDateInput(yesterday()) });
  const run = h('button.primary#task-run', { type: 'button' }, 'Run now');
  run.addEventListener('click', () => busy(run, async () => {
    const i = await api.post('/tasks/' + api.enc(t.name) + '/run', { name: t.name, bizdate: fromDateInput(bizdate.value) });
    flash(i.joined ? `joined instance ${i.id}, already ${i.state}` : `instance ${i.id} created`);
    location.hash = '#/instance/' + api.enc(i.id);
  }));
  const freeze = h('button#task-freeze', { type: 'button' }, t.frozen ? 'Unfreeze' : 'Freeze');
  freeze.addEventListener('click', () => busy(freeze, async () => {
    await api.post('/tasks/' + api.enc(t.name) + '/freeze', { name: t.name, freeze: !t.frozen });
    flash(t.frozen ? 'task unfrozen' : 'task frozen: its waiting instances and new ones wait');
    await renderTask(view, params);
  }));
  const from = h('input', { type: 'date', id: 'backfill-from' });
  const to = h('input', { type: 'date', id: 'backfill-to' });
  const downstream = h('input', { type: 'checkbox', id: 'backfill-downstream' });
  const parallel = h('input', { type: 'number', id: 'backfill-parallelism', min: 1, value: 1 });
  const go = h('button#backfill-run', { type: 'submit' }, 'Backfill');
  const backfill = h('form.row', {
    on: {
      submit: (e) => {
        e.preventDefault();
        busy(go, async () => {
          const r = await api.post('/tasks/' + api.enc(t.name) + '/backfill', {
            task: t.name, from: fromDateInput(from.value), to: fromDateInput(to.value || from.value), downstream: downstream.checked, parallelism: Number(parallel.value) || 1,
          });
          flash(`backfill ${r.id}: ${(r.days || []).length} days, ${num(r.instances)} instances`);
        });
      },
    },
  }, field('From', from), field('To', to), field('Parallel days', parallel), h('label.check', downstream, ' with downstream'), go);
  const rows = [
    ['Type', t.kind], ['Resource group', t.group + (t.writer_group ? ` (writer: ${t.writer_group})` : '')], ['Version', 'v' + num(t.version)],
    ['Schedule', t.cron ? `${t.cron} (${t.timezone}), generated from ${t.first_day || '-'}` : 'manual only'],
    ['Upstream', (t.dependencies || []).map((d) => d.upstream + (d.previous ? ' (previous cycle)' : '')).join(', ') || '-'],
    ['Parameters', t.params || '-'], ['Retries', `${num(t.retries)} every ${num(t.retry_interval_secs)}s, rerun ${t.rerun}`],
    ['Priority / timeout', `${num(t.priority)} / ${num(t.timeout_secs) ? num(t.timeout_secs) + 's' : 'none'}`],
    ['State', t.frozen ? badge('frozen') : 'active'], ['Updated', fmtTime(t.updated_ms)],
  ];
  fill(view,
    h('div.page-head', h('h1', 'Task ', t.name),
      h('span.actions', link(hashWith('/instances', { task: t.name }), 'Instances'), ' ', link(hashWith('/dag', { task: t.name }), 'DAG'))),
    h('table.props', h('tbody', rows.map(([k, v]) => h('tr', h('th', k), h('td', v))))),
    h('section', h('h2', 'Run'), h('div.row', field('Business date', bizdate), run, freeze)),
    h('section', h('h2', 'Backfill'), backfill));
}

function option(v, label, selected) {
  return h('option', { value: v, selected: v === selected }, label ?? v);
}

/// The new-task page: common settings, then the wizard or the script editor.
export async function renderNew(view, _params, query) {
  const [groupsR, dsR] = await Promise.all([api.get('/groups'), api.get('/datasources')]);
  const groups = (groupsR.groups || []).filter((g) => (g.workspaces || []).includes(api.workspace()) || !(g.workspaces || []).length);
  const dbs = (dsR.datasources || []).filter((d) => DB_KINDS.has(d.type));

  const name = h('input', { id: 'task-name', required: true, autocomplete: 'off', placeholder: 'copy_orders' });
  const group = h('select', { id: 'task-group' }, (groups.length ? groups : groupsR.groups || []).map((g) => option(g.name)));
  // A target in another private network: the writer runs on an agent of this group and the
  // rows cross through the scheduler's relay.
  const writerGroup = h('select', { id: 'task-writer-group' }, option('', 'same group'),
    (groups.length ? groups : groupsR.groups || []).map((g) => option(g.name)));
  const cron = h('input', { id: 'task-cron', placeholder: 'manual only; e.g. 30 2 * * *' });
  const timezone = h('input', { id: 'task-timezone', value: 'UTC' });
  const after = h('input', { id: 'task-after', placeholder: 'upstream tasks, comma separated' });
  const params = h('input', { id: 'task-params', placeholder: 'dt=$[yyyymmdd-1]' });
  const retries = h('input', { id: 'task-retries', type: 'number', min: 0, value: 0 });

  // Wizard fields.
  const dsOptions = (id) => h('select', { id }, dbs.map((d) => option(d.name, `${d.name} (${d.type})`)));
  const srcDs = dsOptions('wiz-src-ds');
  const srcTable = h('input', { id: 'wiz-src-table', placeholder: 'orders', autocomplete: 'off' });
  const dstDs = dsOptions('wiz-dst-ds');
  const dstTable = h('input', { id: 'wiz-dst-table', placeholder: 'orders_copy', autocomplete: 'off' });
  const where = h('input', { id: 'wiz-where', placeholder: "day = '${bizdate}'" });
  const writeMode = h('select', { id: 'wiz-write-mode' }, ['insert', 'replace', 'update'].map((m) => option(m)));
  const channels = h('input', { id: 'wiz-channels', type: 'number', min: 1, value: 1 });
  const preSql = h('textarea', { id: 'wiz-pre-sql', rows: 2, placeholder: "DELETE FROM @table WHERE day = '${bizdate}' (one statement per line)" });
  const columns = h('input', { id: 'wiz-columns', placeholder: 'every shared name; or id,name or src:dst pairs' });
  const mappingBox = h('div#wiz-mapping');
  const error = h('p.error#task-error');

  const editor = jsonEditor(query.template === '0' ? '' : TEMPLATE, { id: 'script-editor' });
  let mode = 'wizard';
  const wizardTab = h('button.tab.active#mode-wizard', { type: 'button' }, 'Wizard');
  const scriptTab = h('button.tab#mode-script', { type: 'button' }, 'Script');
  const wizardBox = h('div#wizard-box');
  const scriptBox = h('div#script-box', { hidden: true },
    h('p.muted#script-note', 'Script mode: the job file (DataX job JSON) as it is stored. Data sources are named with "datasource".'),
    editor.el);
  const preview = h('button#wiz-preview', { type: 'button' }, 'Preview mapping');
  const showScript = h('button#wiz-show-script', { type: 'button' }, 'Show as script');
  const save = h('button.primary#task-save', { type: 'submit' }, 'Save task');

  function wizardRequest() {
    return {
      group: group.value,
      writer_group: writerGroup.value,
      from: `${srcDs.value}.${srcTable.value.trim()}`,
      to: `${dstDs.value}.${dstTable.value.trim()}`,
      columns: columns.value.split(',').map((c) => c.trim()).filter(Boolean),
      where_clause: where.value.trim(),
      write_mode: writeMode.value,
      channels: Number(channels.value) || 1,
      pre_sql: preSql.value.split('\n').map((s) => s.trim()).filter(Boolean),
    };
  }

  async function wizardScript() {
    if (!srcTable.value.trim() || !dstTable.value.trim()) throw new Error('name the source and the target tables');
    fill(mappingBox, h('p.muted', 'Reading both tables\' columns through an agent of ' + group.value + '…'));
    let r;
    try {
      r = await api.post('/wizard/script', wizardRequest());
    } catch (e) {
      fill(mappingBox, h('p.error', e.message));
      throw e;
    }
    fill(mappingBox,
      h('h3', 'Column mapping'),
      table(['Source column', 'Source type', '', 'Target column', 'Target type'],
        (r.mapping || []).map((m) => [m.source, h('code', m.source_type), '→', m.target, h('code', m.target_type)]), { cls: 'mapping' }),
      (r.source_only || []).length ? h('p.muted#wiz-source-only', 'Not copied (no such target column): ', r.source_only.join(', ')) : null,
      (r.target_only || []).length ? h('p.muted#wiz-target-only', 'Left to their defaults: ', r.target_only.join(', ')) : null);
    return r;
  }

  function toScript(jobJson) {
    mode = 'script';
    editor.setValue(jobJson);
    wizardBox.hidden = true;
    scriptBox.hidden = false;
    wizardTab.disabled = true;
    wizardTab.classList.remove('active');
    scriptTab.classList.add('active');
    wizardTab.title = 'A script is never turned back into the wizard (as in DataWorks)';
    fill(scriptBox.querySelector('#script-note'), 'Converted to script mode: this job file is what will be stored. There is no way back to the wizard (as in DataWorks).');
  }

  preview.addEventListener('click', () => busy(preview, wizardScript));
  showScript.addEventListener('click', () => busy(showScript, async () => toScript((await wizardScript()).job_json)));
  wizardTab.addEventListener('click', () => {});
  scriptTab.addEventListener('click', () => {
    if (mode === 'script') return;
    if (!confirm('Switch to script mode? The wizard cannot be reopened for this task.')) return;
    toScript(editor.value() || TEMPLATE);
  });

  fill(wizardBox,
    h('div.row', field('Source data source', srcDs), field('Source table', srcTable)),
    h('div.row', field('Target data source', dstDs), field('Target table', dstTable)),
    h('div.row', field('Filter (where)', where), field('Write mode', writeMode), field('Channels', channels)),
    h('div.row', field('Columns', columns), field('Pre-SQL on the target', preSql)),
    h('div.row', preview, showScript),
    mappingBox);

  const form = h('form.card-form#task-form', {
    on: {
      submit: (e) => {
        e.preventDefault();
        busy(save, async () => {
          error.textContent = '';
          let jobJson;
          if (mode === 'wizard') {
            try {
              jobJson = (await wizardScript()).job_json;
            } catch (err) {
              error.textContent = err.message;
              return;
            }
          } else {
            if (!editor.validate()) return;
            jobJson = editor.value();
          }
          const body = {
            name: name.value.trim(), group: group.value, writer_group: writerGroup.value, kind: 'sync', job_json: jobJson,
            cron: cron.value.trim(), timezone: timezone.value.trim() || 'UTC', params: params.value.trim(),
            retries: Number(retries.value) || 0, rerun: 'always',
            dependencies: after.value.split(',').map((u) => u.trim()).filter(Boolean).map((u) => ({ upstream: u, previous: false })),
          };
          let t;
          try {
            t = await api.post('/tasks', body);
          } catch (err) {
            if (mode === 'script') editor.showError(err.message, 'server');
            else error.textContent = err.message;
            return;
          }
          flash(`task ${t.name} saved as version ${num(t.version)}`);
          location.hash = '#/task/' + api.enc(t.name);
        });
      },
    },
  },
  h('div.row', field('Task name', name), field('Resource group', group), field('Writer group', writerGroup), field('Schedule (cron)', cron), field('Time zone', timezone)),
  h('div.row', field('After (upstream)', after), field('Parameters', params), field('Retries', retries)),
  h('div.tabs', wizardTab, scriptTab),
  wizardBox, scriptBox, error, save);

  fill(view, h('div.page-head', h('h1', 'New sync task')),
    dbs.length ? null : h('p.notice', 'The wizard needs database data sources (MySQL, PostgreSQL, SQLite): ', link('#/datasources?new', 'create one'), ', or use script mode.'),
    form);
  if (query.mode === 'script') toScript(TEMPLATE);
}
