// Data sources: list, create, edit, test, remove. Secrets (passwords) are write-only: the API
// never returns them, the form shows only whether one is set, and an edit that leaves the
// password empty keeps the stored one (`keep_secrets`).

import * as api from '../api.js';
import { h, fill, table, fmtTime, flash, busy, field, badge } from '../ui.js';

const KINDS = ['postgresql', 'mysql', 'sqlite', 'csv', 'stream'];
const DB_FIELDS = [
  ['host', 'Host', 'db1.internal'],
  ['port', 'Port', ''],
  ['database', 'Database', 'shop'],
  ['username', 'User', 'etl'],
  ['sslmode', 'TLS (sslmode)', 'prefer'],
];

function summary(d) {
  const f = d.fields || {};
  if (f.host) return `${f.username || ''}@${f.host}:${f.port || ''}/${f.database || ''}`;
  return f.path || '';
}

/// A connectivity test of a saved data source (`name`, or a chooser when null) from the agents
/// of a group, with an optional table check; the reports show per agent.
export async function testPanel(name, groupNames) {
  const groups = groupNames ?? ((await api.get('/groups')).groups || []).map((g) => g.name);
  let dsSelect = null;
  if (name === null) {
    const list = (await api.get('/datasources')).datasources || [];
    dsSelect = h('select', { id: 'test-datasource' }, list.map((d) => h('option', { value: d.name }, d.name)));
  }
  const group = h('select', { id: 'test-group' }, groups.map((g) => h('option', { value: g }, g)));
  const tbl = h('input', { id: 'test-table', placeholder: 'optional: a table to check' });
  const access = h('select', { id: 'test-access' }, ['read', 'write', 'both'].map((a) => h('option', { value: a }, a)));
  const out = h('div.test-result#test-result');
  const run = h('button.primary#test-run', { type: 'submit' }, 'Test connectivity');
  return h('form.test-panel', {
    on: {
      submit: (e) => {
        e.preventDefault();
        busy(run, async () => {
          const ds = name ?? dsSelect.value;
          fill(out, h('p.muted', `Asking the agents of ${group.value} to reach ${ds}…`));
          const r = await api.post('/datasources/' + api.enc(ds) + '/test', {
            name: ds, group: group.value, table: tbl.value.trim(), access: tbl.value.trim() ? access.value : '', describe: !!tbl.value.trim(),
          });
          const reports = r.reports || [];
          const ok = reports.length > 0 && reports.every((x) => x.reachable);
          fill(out,
            h('p', { class: ok ? 'ok' : 'bad', id: 'test-verdict' }, ok ? `reachable from every agent of ${group.value}` : `not reachable from every agent of ${group.value}`),
            table(['Agent', 'Host', 'Result', 'Latency', 'Message'], reports.map((x) => [
              h('code', (x.agent_id || '').slice(0, 8)), x.hostname, badge(x.reachable ? 'success' : 'failed'),
              x.reachable ? `${x.latency_ms || 0} ms` : (x.error_kind || ''), x.message || ''])),
            reports.some((x) => (x.columns || []).length) ? table(['Column', 'Type', 'Null', 'Key'],
              (reports.find((x) => (x.columns || []).length).columns).map((c) => [c.name, c.type, c.nullable ? 'yes' : 'no', c.primary_key ? 'PK' : ''])) : null);
        });
      },
    },
  },
  h('div.row', dsSelect ? field('Data source', dsSelect) : null, field('Resource group', group), field('Table', tbl), field('Access', access), run),
  out);
}

function form(existing, onSaved) {
  const editing = !!existing;
  const fields = existing?.fields || {};
  const name = h('input', { id: 'ds-name', value: existing?.name || '', required: true, readonly: editing, autocomplete: 'off' });
  const kind = h('select', { id: 'ds-type', disabled: editing }, KINDS.map((k) => h('option', { value: k, selected: k === (existing?.type || 'postgresql') }, k)));
  const inputs = {};
  for (const [k, , ph] of DB_FIELDS) inputs[k] = h('input', { id: 'ds-' + k, value: fields[k] || '', placeholder: ph, autocomplete: 'off' });
  inputs.path = h('input', { id: 'ds-path', value: fields.path || '', placeholder: '/data/in', autocomplete: 'off' });
  const hasPassword = (existing?.secret_fields || []).includes('password');
  // Never pre-filled: the value is not known to the console, only whether one is set.
  const password = h('input', {
    id: 'ds-password', type: 'password', autocomplete: 'new-password',
    placeholder: hasPassword ? 'set: leave empty to keep it' : 'not set',
  });
  const groups = h('input', { id: 'ds-groups', value: (existing?.groups || []).join(', '), placeholder: 'any group of the workspace' });
  const dbBox = h('div.row', DB_FIELDS.map(([k, label]) => field(label, inputs[k])), field('Password', password, 'write-only'));
  const pathBox = h('div.row', field('Path (on the agents)', inputs.path));
  const show = () => {
    const db = kind.value === 'mysql' || kind.value === 'postgresql';
    dbBox.hidden = !db;
    pathBox.hidden = !(kind.value === 'sqlite' || kind.value === 'csv');
  };
  kind.addEventListener('change', show);
  show();
  const save = h('button.primary#ds-save', { type: 'submit' }, editing ? 'Save changes' : 'Create data source');
  const error = h('p.error#ds-error');
  return h('form.card-form#ds-form', {
    on: {
      submit: (e) => {
        e.preventDefault();
        busy(save, async () => {
          error.textContent = '';
          const body = { name: name.value.trim(), type: kind.value, fields: {}, secrets: {}, keep_secrets: editing,
            groups: groups.value.split(',').map((g) => g.trim()).filter(Boolean) };
          if (kind.value === 'mysql' || kind.value === 'postgresql') {
            for (const [k] of DB_FIELDS) if (inputs[k].value.trim()) body.fields[k] = inputs[k].value.trim();
            if (password.value) body.secrets.password = password.value;
          } else if (kind.value !== 'stream') {
            body.fields.path = inputs.path.value.trim();
          }
          try {
            await api.post('/datasources', body);
          } catch (err) {
            error.textContent = err.message;
            return;
          }
          password.value = '';
          flash(`data source ${body.name} saved`);
          await onSaved(body.name);
        });
      },
    },
  },
  h('h2', editing ? 'Edit ' + existing.name : 'New data source'),
  h('div.row', field('Name', name), field('Type', kind), field('Allowed groups', groups)),
  dbBox, pathBox, error, save);
}

export async function render(view, _params, query) {
  const formBox = h('div#ds-form-box');
  const testBox = h('div#ds-test-box');
  const listBox = h('div#ds-list');
  const add = h('button.primary#ds-new', { type: 'button' }, 'New data source');
  fill(view, h('div.page-head', h('h1', 'Data sources'), add), formBox, testBox, listBox);

  async function openTest(dsName) {
    fill(testBox, h('section', h('h2', 'Test ' + dsName), await testPanel(dsName)));
  }
  const saved = async (dsName) => {
    formBox.replaceChildren();
    await refresh();
    await openTest(dsName);
  };
  add.addEventListener('click', () => {
    fill(formBox, form(null, saved));
    testBox.replaceChildren();
  });

  async function refresh() {
    const list = (await api.get('/datasources')).datasources || [];
    fill(listBox, table(['Name', 'Type', 'Connection', 'Password', 'Groups', 'Updated', ''], list.map((d) => {
      const edit = h('button.small', { type: 'button' }, 'Edit');
      edit.addEventListener('click', async () => fill(formBox, form(await api.get('/datasources/' + api.enc(d.name)), saved)));
      const test = h('button.small', { type: 'button', 'data-test': d.name }, 'Test');
      test.addEventListener('click', () => busy(test, () => openTest(d.name)));
      const remove = h('button.small.danger', { type: 'button' }, 'Remove');
      remove.addEventListener('click', () => {
        if (!confirm(`Remove data source ${d.name}?`)) return;
        busy(remove, async () => {
          await api.del('/datasources/' + api.enc(d.name));
          flash(`data source ${d.name} removed`);
          await refresh();
        });
      });
      return h('tr', { 'data-datasource': d.name },
        [d.name, d.type, summary(d), (d.secret_fields || []).includes('password') ? 'set' : '-', (d.groups || []).join(', ') || 'any',
          fmtTime(d.updated_ms), h('span.actions', edit, test, remove)].map((c) => h('td', c)));
    }), { empty: 'No data source yet.' }));
  }
  await refresh();
  if (query.new !== undefined) add.click();
}
