// Resource groups: their agents (state, host, load, slots) with drain, resume and revoke; a new
// group or a rotated token shows the registration token and the install command once; a
// connectivity test asks every online agent of a group to reach a data source.

import * as api from '../api.js';
import { h, fill, badge, table, fmtTime, flash, busy, field, copyButton, num } from '../ui.js';
import { testPanel } from './datasources.js';

function secretBox(r) {
  return h('div.notice#group-token',
    h('p', 'Group ', h('b', r.name), ': the registration token is shown this once (only its hash is kept).'),
    h('pre.code', r.registration_token), copyButton(r.registration_token),
    h('p', 'Install an agent on a server of the network:'),
    h('pre.code', r.install_command), copyButton(r.install_command));
}

export async function render(view) {
  const tokenBox = h('div');
  const groupsBox = h('div#groups');
  const name = h('input', { id: 'group-name', placeholder: 'rg-east', required: true });
  const create = h('button.primary', { type: 'submit' }, 'Create group');
  const form = h('form.inline-form', {
    on: {
      submit: (e) => {
        e.preventDefault();
        busy(create, async () => {
          const r = await api.post('/groups', { name: name.value.trim() });
          fill(tokenBox, secretBox(r));
          name.value = '';
          await refresh();
        });
      },
    },
  }, field('New group', name), create);
  const testBox = h('section');
  fill(view, h('div.page-head', h('h1', 'Resource groups')), form, tokenBox, groupsBox, testBox);

  async function agentAction(btn, path, body, done) {
    await busy(btn, async () => {
      await api.post(path, body);
      flash(done);
      await refresh();
    });
  }

  async function refresh() {
    const r = await api.get('/groups');
    const groups = r.groups || [];
    fill(groupsBox, groups.length ? groups.map((g) => {
      const agents = g.agents || [];
      const rotate = h('button.small', { type: 'button' }, 'Rotate token');
      rotate.addEventListener('click', () => busy(rotate, async () => {
        if (!confirm(`Issue a new registration token for ${g.name}? The old one admits no one afterwards.`)) return;
        fill(tokenBox, secretBox(await api.post('/groups/' + api.enc(g.name) + '/token', { name: g.name })));
      }));
      return h('section.group', { 'data-group': g.name },
        h('div.section-head', h('h2', g.name),
          h('span.muted', `workspaces: ${(g.workspaces || []).join(', ') || '-'} · max concurrency ${num(g.max_concurrency) || 'unlimited'} · shell ${g.allow_shell ? 'allowed' : 'off'}`),
          rotate),
        table(['Agent', 'Host', 'State', 'Version', 'Running / slots', 'Load', 'Last heartbeat', 'Labels', ''],
          agents.map((a) => {
            const drain = h('button.small', { type: 'button' }, a.state === 'draining' ? 'Resume' : 'Drain');
            drain.addEventListener('click', () => agentAction(drain, '/agents/' + api.enc(a.id) + '/drain', { id: a.id, drain: a.state !== 'draining' },
              a.state === 'draining' ? 'agent resumed' : 'agent draining'));
            const revoke = h('button.small.danger', { type: 'button' }, 'Revoke');
            revoke.addEventListener('click', () => {
              if (confirm(`Revoke agent ${a.hostname}? It is cut off at once and must be installed again.`)) {
                agentAction(revoke, '/agents/' + api.enc(a.id) + '/revoke', { id: a.id }, 'agent revoked');
              }
            });
            return [h('code', a.id.slice(0, 8)), a.hostname, badge(a.state), a.version, `${num(a.running)} / ${num(a.slots)}`,
              num(a.load1).toFixed(2), fmtTime(a.last_heartbeat_ms),
              Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(', '),
              a.state === 'revoked' ? '' : h('span.actions', drain, revoke)];
          }),
          { empty: 'No agent yet: create or rotate the token and run the install command on a server.' }));
    }) : h('p.muted', 'No resource group yet.'));
    return groups;
  }

  const groups = await refresh();
  fill(testBox, h('h2', 'Connectivity test'), await testPanel(null, groups.map((g) => g.name)));
}
