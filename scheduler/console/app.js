// The console's entry point: a hash router over the pages, the login page and the header.
// Each page module exports `render(view, params, query)`, which may return a function that
// stops what the page runs in the background (polling), called when the user leaves it.

import * as api from './api.js';
import { h, fill, flash, field, busy } from './ui.js';
import * as overview from './pages/overview.js';
import * as groups from './pages/groups.js';
import * as datasources from './pages/datasources.js';
import * as tasks from './pages/tasks.js';
import * as instances from './pages/instances.js';
import * as instance from './pages/instance.js';
import * as dag from './pages/dag.js';

/// [pattern, page module, nav entry]; `:name` parts become params.
const ROUTES = [
  ['/', overview, 'overview'],
  ['/groups', groups, 'groups'],
  ['/datasources', datasources, 'datasources'],
  ['/tasks', tasks, 'tasks'],
  ['/tasks/new', { render: tasks.renderNew }, 'tasks'],
  ['/task/:name', { render: tasks.renderTask }, 'tasks'],
  ['/instances', instances, 'instances'],
  ['/instance/:id', instance, 'instances'],
  ['/dag', dag, 'dag'],
];

let stop = null;
let me = null;

function match(path) {
  const parts = path.split('/').filter(Boolean);
  for (const [pattern, mod, nav] of ROUTES) {
    const want = pattern.split('/').filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(':') ? ((params[w.slice(1)] = decodeURIComponent(parts[i])), true) : w === parts[i]))) {
      return { mod, params, nav };
    }
  }
  return null;
}

function loginPage(view) {
  document.getElementById('top').hidden = true;
  const error = h('p.error#login-error');
  const after = () => {
    const next = sessionStorage.getItem('ferry.after');
    sessionStorage.removeItem('ferry.after');
    location.hash = next && next !== '#/login' ? next : '#/';
  };
  const ws = h('input', { id: 'login-workspace', value: api.workspace(), autocomplete: 'off' });
  const workspace = () => ws.value.trim() || 'default';

  // A user name and password (`ferry user passwd`) buys a session token of 12 hours.
  const user = h('input', { id: 'login-user', autocomplete: 'username' });
  const password = h('input', { id: 'login-password', type: 'password', autocomplete: 'current-password' });
  const signIn = h('button.primary#login-password-submit', { type: 'submit' }, 'Log in');
  const withPassword = h('form.login-part', {
    on: {
      submit: (e) => {
        e.preventDefault();
        busy(signIn, async () => {
          error.textContent = '';
          let r;
          try {
            r = await api.call('POST', '/login', { body: { user: user.value.trim(), password: password.value }, tok: '', ws: workspace() });
          } catch (err) {
            error.textContent = err.status === 401 ? 'Wrong user name or password.' : err.message;
            return;
          } finally {
            password.value = '';
          }
          api.setSession(r.token, workspace(), r.info?.id);
          after();
        });
      },
    },
  }, field('User', user), field('Password', password), signIn);

  // Or an API token: the first admin's, printed at the first start, or one of `ferry token create`.
  const tok = h('textarea', { id: 'login-token', rows: 2, autocomplete: 'off', spellcheck: 'false', placeholder: 'frt_…' });
  const submit = h('button#login-submit', { type: 'submit' }, 'Use token');
  const withToken = h('form.login-part', {
    on: {
      submit: (e) => {
        e.preventDefault();
        busy(submit, async () => {
          error.textContent = '';
          const t = tok.value.trim();
          try {
            await api.call('GET', '/whoami', { tok: t, ws: workspace() });
          } catch (err) {
            error.textContent = err.status === 401 ? 'This token is not valid (unknown, revoked or expired).' : err.message;
            return;
          }
          api.setSession(t, workspace());
          after();
        });
      },
    },
  }, field('API token', tok, 'the admin token printed at the first start, or one from ferry token create'), submit);

  fill(view, h('div.login',
    h('h1', 'Ferry console'),
    h('p.muted', 'Your session is kept in this browser tab only.'),
    field('Workspace', ws),
    withPassword,
    h('p.or', 'or'),
    withToken,
    error));
  user.focus();
}

async function header(navName) {
  const top = document.getElementById('top');
  top.hidden = false;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === navName);
  if (me) return;
  me = await api.get('/whoami');
  document.getElementById('user').textContent = me.name + (me.cluster_admin ? ' (cluster admin)' : '');
  const names = new Set(Object.keys(me.roles || {}));
  names.add(api.workspace());
  try {
    const r = await api.get('/workspaces');
    for (const w of r.workspaces || []) names.add(w.name);
  } catch {
    // Listing workspaces may be refused to this user: the ones it has a role in remain.
  }
  const sel = document.getElementById('workspace');
  fill(sel, [...names].sort().map((n) => h('option', { value: n, selected: n === api.workspace() }, n)));
}

async function route() {
  if (stop) {
    try {
      stop();
    } catch {
      // A page that failed to stop cleanly must not keep the next one from rendering.
    }
    stop = null;
  }
  const view = document.getElementById('view');
  const hash = location.hash.replace(/^#/, '') || '/';
  const path = hash.split('?')[0] || '/';
  const query = Object.fromEntries(new URLSearchParams(hash.split('?')[1] || ''));
  if (path === '/login' || !api.token()) {
    if (path !== '/login') {
      sessionStorage.setItem('ferry.after', location.hash);
      location.hash = '#/login';
      return;
    }
    me = null;
    loginPage(view);
    return;
  }
  const m = match(path);
  if (!m) {
    fill(view, h('h1', 'Not found'), h('p', 'No page at ', h('code', path), '. ', h('a', { href: '#/' }, 'Overview')));
    return;
  }
  try {
    await header(m.nav);
    view.replaceChildren(h('p.muted', 'Loading…'));
    const s = await m.mod.render(view, m.params, query);
    if (typeof s === 'function') stop = s;
  } catch (e) {
    if (e.status === 401) return;
    fill(view, h('h1', 'Something went wrong'), h('p.error', e.message || String(e)));
  }
}

document.getElementById('workspace').addEventListener('change', (e) => {
  api.setWorkspace(e.target.value);
  flash('workspace ' + e.target.value);
  route();
});
document.getElementById('logout').addEventListener('click', async () => {
  // A password login's session token is revoked, not just forgotten.
  const id = api.sessionTokenId();
  if (id) await api.del('/tokens/' + api.enc(id)).catch(() => {});
  api.logout();
  me = null;
  location.hash = '#/login';
});
window.addEventListener('hashchange', route);
route();
