// Comet's ops console: a single-page app in plain JavaScript (no build step, no dependencies),
// served by comet-api at /ops. It reads and acts through /api/v1 with the session cookie; every
// request carries the session's CSRF token in X-CSRF-Token (the API refuses the cookie
// without it). Views live in the URL hash, so a view (queue, state, page, job) can be shared:
//   #/                               overview: queues, outbox, workers
//   #/jobs?queue=ping&state=dead&page=1
//   #/job/<id>
//   #/workers
// Views refresh every 2 s (not while the tab is hidden), without reloading the page.
(function () {
  'use strict';

  const body = document.body;
  const CSRF = body.dataset.csrf || '';
  const PERMS = new Set((body.dataset.perms || '').split(' ').filter(Boolean));
  const PLATFORM = body.dataset.platform === 'true';
  const can = (p) => PERMS.has(p);
  const view = document.getElementById('view');
  const statusBox = document.getElementById('status');
  const REFRESH_MS = 2000;
  const STATES = ['waiting', 'delayed', 'active', 'retrying', 'completed', 'dead', 'cancelled'];
  const PER_PAGE = 20;

  // jobs seen in lists, by id: a platform operator's job detail falls back to them (job routes
  // by id answer only within the caller's project)
  const seen = new Map();
  let route = 0; // bumped on every navigation: a late answer of an old view is dropped
  let timer = null;
  let sessionOver = false;

  // ---------------------------------------------------------------------------------------
  // Helpers

  /** An element: h('td', {class: 'n', dataset: {state: 'dead'}}, 'text', child, …). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  /** A time in the browser's zone, UTC in its tooltip. */
  function time(iso) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    const d = new Date(iso);
    if (isNaN(d)) return h('span', {}, iso);
    return h('time', { datetime: d.toISOString(), title: 'UTC: ' + d.toISOString().replace('T', ' ').replace('Z', ' UTC') },
      d.toLocaleString());
  }

  function ago(iso) {
    if (!iso) return '';
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  function say(message, kind) {
    statusBox.textContent = message || '';
    statusBox.className = 'status' + (kind ? ' ' + kind : '');
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Calls /api/v1 with the session cookie and its CSRF token; the envelope's `data` (or the
   *  whole body for lists). */
  async function api(method, path) {
    const res = await fetch('/api/v1' + path, {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'X-CSRF-Token': CSRF, Accept: 'application/json' },
    });
    let json = null;
    try { json = await res.json(); } catch (_) { /* no body */ }
    if (res.status === 401) {
      endSession((json && json.error && json.error.message) || 'signed out');
      throw new ApiError(401, 'unauthorized', 'Your session has ended.');
    }
    if (!res.ok) {
      const e = (json && json.error) || {};
      throw new ApiError(res.status, e.code || String(res.status), e.message || res.statusText);
    }
    return json;
  }

  function endSession(why) {
    if (sessionOver) return;
    sessionOver = true;
    clearTimeout(timer);
    say('', null);
    statusBox.replaceChildren('Your session has ended (' + why + '). ',
      h('a', { href: '/ops/login', id: 'sign-in-again' }, 'Sign in again'));
    statusBox.className = 'status error';
  }

  /** Replaces `box`'s content, keeping keyboard focus on the element with the same id. */
  function fill(box, ...children) {
    const focused = document.activeElement && box.contains(document.activeElement) ? document.activeElement.id : null;
    box.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus();
    }
  }

  function needs(permission, what) {
    return h('p', { class: 'notice' }, what + ' needs the ', h('code', {}, permission),
      ' permission' + (permission.startsWith('queues:') ? ' (platform operators: sign in with a platform token).' : '.'));
  }

  function problem(e) {
    return h('p', { class: 'notice error', role: 'alert' }, e.message || String(e));
  }

  function hashQuery() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, query] = hash.split('?');
    return { path, params: new URLSearchParams(query || '') };
  }

  /** Runs `action` after the user confirms `question`; refreshes the view after. */
  async function act(question, action, done) {
    if (!window.confirm(question)) return;
    try {
      await action();
      say(done, 'ok');
    } catch (e) {
      if (e.status !== 401) say(e.message, 'error');
    }
    refresh();
  }

  // ---------------------------------------------------------------------------------------
  // Views

  function openJobForm() {
    if (!can('jobs:read')) return null;
    const input = h('input', { id: 'open-job-id', name: 'id', required: true, autocomplete: 'off',
      pattern: '[0-9a-fA-F-]{36}', placeholder: '01a1fcb3-…', size: 38 });
    return h('form', { class: 'inline', id: 'open-job-form', onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = '#/job/' + encodeURIComponent(input.value.trim());
    } }, h('label', { for: 'open-job-id' }, 'Open a job by id '), input, ' ',
    h('button', { type: 'submit', id: 'open-job' }, 'Open'));
  }

  function queueTable(queues) {
    const head = h('tr', {}, h('th', { scope: 'col' }, 'Queue'),
      STATES.map((s) => h('th', { scope: 'col', class: 'n' }, s)),
      h('th', { scope: 'col' }, 'Status'), can('queues:write') ? h('th', { scope: 'col' }, 'Control') : null);
    const rows = queues.map((q) => h('tr', { dataset: { queue: q.queue } },
      h('th', { scope: 'row' }, h('a', { href: '#/jobs?queue=' + encodeURIComponent(q.queue) + '&state=waiting' }, q.queue)),
      STATES.map((s) => h('td', { class: 'n' + (s === 'dead' && q[s] > 0 ? ' bad' : ''), dataset: { state: s } },
        h('a', { href: '#/jobs?queue=' + encodeURIComponent(q.queue) + '&state=' + s,
          'aria-label': q[s] + ' ' + s + ' jobs in ' + q.queue }, String(q[s] ?? 0)))),
      h('td', { class: 'paused-cell', dataset: { paused: String(!!q.paused) } },
        q.paused ? h('span', { class: 'badge warn' }, 'paused') : h('span', { class: 'badge ok' }, 'running')),
      can('queues:write') ? h('td', {}, q.paused
        ? h('button', { type: 'button', id: 'resume-' + q.queue, onclick: () => act('Resume queue ' + q.queue + '? Workers start leasing its jobs at once.',
          () => api('POST', '/queues/' + encodeURIComponent(q.queue) + '/resume'), 'Queue ' + q.queue + ' resumed.') }, 'Resume')
        : h('button', { type: 'button', class: 'danger', id: 'pause-' + q.queue, onclick: () => act('Pause queue ' + q.queue + '? Workers stop leasing its jobs within a second (running jobs finish).',
          () => api('POST', '/queues/' + encodeURIComponent(q.queue) + '/pause'), 'Queue ' + q.queue + ' paused.') }, 'Pause')) : null));
    return h('div', { class: 'scroll' }, h('table', { id: 'queues' }, h('caption', {}, 'Jobs per queue and state'),
      h('thead', {}, head), h('tbody', {}, rows)));
  }

  function outboxCard(o) {
    return h('dl', { class: 'facts', id: 'outbox' },
      h('div', {}, h('dt', {}, 'Outbox rows waiting'), h('dd', { id: 'outbox-waiting' }, String(o.waiting))),
      h('div', {}, h('dt', {}, 'Relay lag'), h('dd', { id: 'outbox-lag', class: o.lagSeconds > 5 ? 'bad' : '' }, o.lagSeconds.toFixed(1) + ' s')),
      h('div', {}, h('dt', {}, 'Oldest row'), h('dd', {}, time(o.oldestAt))));
  }

  async function overview(token) {
    const parts = [];
    if (!can('queues:read')) {
      fill(view, h('h1', {}, 'Overview'), needs('queues:read', 'The queue overview'), openJobForm());
      return;
    }
    const [queues, outbox, workers] = await Promise.all([
      api('GET', '/queues'), api('GET', '/outbox'), api('GET', '/workers')]);
    if (token !== route) return;
    const live = workers.data.filter((w) => !w.lost).length;
    const lost = workers.data.length - live;
    parts.push(h('h1', {}, 'Overview'), queueTable(queues.data),
      h('h2', {}, 'Outbox'), outboxCard(outbox.data),
      h('h2', {}, 'Workers'),
      h('p', { id: 'worker-count' }, live + ' live worker process' + (live === 1 ? '' : 'es') +
        (lost ? ', ' + lost + ' lost' : '') + ' · ', h('a', { href: '#/workers' }, 'details')),
      openJobForm());
    fill(view, ...parts);
  }

  function jobRow(j) {
    seen.set(j.id, j);
    return h('tr', { dataset: { jobId: j.id, state: j.state } },
      h('td', {}, h('a', { href: '#/job/' + j.id, class: 'mono' }, j.id)),
      h('td', {}, j.kind), h('td', {}, j.state),
      h('td', { class: 'n' }, j.attempts + '/' + j.maxAttempts),
      h('td', { class: 'err' }, j.lastError || ''),
      h('td', {}, time(j.createdAt)), h('td', {}, time(j.finishedAt)));
  }

  async function jobs(token) {
    const { params } = hashQuery();
    const queue = params.get('queue') || '';
    const state = params.get('state') || 'dead';
    const page = Math.max(1, parseInt(params.get('page') || '1', 10) || 1);
    if (!can('queues:read')) {
      fill(view, h('h1', {}, 'Jobs'), needs('queues:read', 'Listing a queue\'s jobs'), openJobForm());
      return;
    }
    const queues = (await api('GET', '/queues')).data.map((q) => q.queue);
    const chosen = queue || queues[0] || '';
    let list = null;
    let failure = null;
    if (chosen) {
      try {
        list = await api('GET', '/queues/' + encodeURIComponent(chosen) + '/jobs?state=' + encodeURIComponent(state) +
          '&page=' + page + '&perPage=' + PER_PAGE);
      } catch (e) {
        if (e.status === 401) return;
        failure = e;
      }
    }
    if (token !== route) return;
    const qSelect = h('select', { id: 'filter-queue', name: 'queue' },
      queues.map((q) => h('option', { value: q, selected: q === chosen }, q)));
    const sSelect = h('select', { id: 'filter-state', name: 'state' },
      STATES.map((s) => h('option', { value: s, selected: s === state }, s)));
    const filters = h('form', { class: 'inline', id: 'job-filters', onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = '#/jobs?queue=' + encodeURIComponent(qSelect.value) + '&state=' + encodeURIComponent(sSelect.value);
    } }, h('label', { for: 'filter-queue' }, 'Queue '), qSelect, ' ',
    h('label', { for: 'filter-state' }, 'State '), sSelect, ' ', h('button', { type: 'submit', id: 'apply-filters' }, 'Show'));
    const parts = [h('h1', {}, 'Jobs'), filters];
    if (failure) parts.push(problem(failure));
    if (list) {
      const total = list.meta && list.meta.pagination ? list.meta.pagination.total : list.data.length;
      const pages = Math.max(1, Math.ceil(total / PER_PAGE));
      parts.push(h('p', { id: 'jobs-total' }, total + ' ' + state + ' job' + (total === 1 ? '' : 's') + ' in ' + chosen));
      parts.push(h('div', { class: 'scroll' }, h('table', { id: 'jobs' },
        h('thead', {}, h('tr', {}, ['Id', 'Kind', 'State', 'Attempts', 'Last error', 'Created', 'Finished'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, list.data.length ? list.data.map(jobRow) : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No jobs.'))))));
      const link = (p, text) => h('a', { href: '#/jobs?queue=' + encodeURIComponent(chosen) + '&state=' + state + '&page=' + p }, text);
      parts.push(h('nav', { class: 'pager', 'aria-label': 'Pages' },
        page > 1 ? link(page - 1, '← Newer') : null, ' Page ' + page + ' of ' + pages + ' ',
        page < pages ? link(page + 1, 'Older →') : null));
    }
    parts.push(openJobForm());
    fill(view, ...parts);
  }

  function fact(label, value, id) {
    return h('div', {}, h('dt', {}, label), h('dd', id ? { id } : {}, value));
  }

  function json(value) {
    return h('pre', { class: 'json' }, value === null || value === undefined ? '—' : JSON.stringify(value, null, 2));
  }

  async function job(token, id) {
    let record = null;
    let fromList = false;
    try {
      record = (await api('GET', '/jobs/' + encodeURIComponent(id))).data;
    } catch (e) {
      if (e.status === 401) return;
      if ((e.status === 404 || e.status === 403) && seen.has(id)) {
        record = seen.get(id);
        fromList = true;
      } else {
        if (token === route) fill(view, h('h1', {}, 'Job'), problem(e), openJobForm());
        return;
      }
    }
    if (fromList && can('queues:read')) {
      // keep a platform operator's copy fresh from the list of the job's state
      try {
        const list = await api('GET', '/queues/' + encodeURIComponent(record.queue) + '/jobs?state=' + record.state + '&perPage=100');
        list.data.forEach((j) => seen.set(j.id, j));
        record = seen.get(id) || record;
      } catch (_) { /* keep the last copy */ }
    }
    if (token !== route) return;
    const j = record;
    const controls = [];
    if (!fromList && can('jobs:write')) {
      if (j.state === 'dead') {
        controls.push(h('button', { type: 'button', id: 'retry', onclick: () => act('Retry job ' + j.id + '? It runs again with fresh attempts.',
          () => api('POST', '/jobs/' + j.id + '/retry'), 'Job retried.') }, 'Retry'));
      }
      if (['waiting', 'delayed', 'retrying'].includes(j.state)) {
        controls.push(h('button', { type: 'button', class: 'danger', id: 'cancel', onclick: () => act('Cancel job ' + j.id + '? It will not run.',
          () => api('POST', '/jobs/' + j.id + '/cancel'), 'Job cancelled.') }, 'Cancel'));
      }
    }
    const errors = (j.errors || []).map((e) => h('tr', {},
      h('td', { class: 'n' }, String(e.attempt)), h('td', {}, time(e.at)), h('td', { class: 'mono' }, e.worker || ''),
      h('td', { class: 'err' }, e.error)));
    fill(view,
      h('p', {}, h('a', { href: '#/jobs?queue=' + encodeURIComponent(j.queue) + '&state=' + j.state }, '← ' + j.queue + ' · ' + j.state)),
      h('h1', {}, 'Job ', h('span', { class: 'mono' }, j.id)),
      fromList ? h('p', { class: 'notice' }, 'Shown from the queue\'s job list: this job is not in your project, so its controls are not offered here.') : null,
      h('dl', { class: 'facts' },
        fact('State', h('span', { class: 'badge state-' + j.state }, j.state), 'job-state'),
        fact('Kind', j.kind), fact('Queue', j.queue),
        fact('Attempts', j.attempts + ' of ' + j.maxAttempts, 'job-attempts'),
        fact('Priority', String(j.priority)),
        fact('Run at', time(j.runAt)), fact('Created', time(j.createdAt)),
        fact('Started', time(j.startedAt)), fact('Finished', time(j.finishedAt)),
        fact('Worker', j.worker || '—'), fact('Project', j.projectId || '—'),
        fact('Request id', j.requestId || '—')),
      controls.length ? h('div', { class: 'controls' }, controls) : null,
      h('h2', {}, 'Progress'), json(j.progress),
      h('h2', {}, 'Result'), json(j.result),
      'payload' in j ? [h('h2', {}, 'Payload'), json(j.payload)] : null,
      h('h2', {}, 'Attempts that failed'),
      errors.length ? h('div', { class: 'scroll' }, h('table', { id: 'job-errors' },
        h('thead', {}, h('tr', {}, ['Attempt', 'At', 'Worker', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, errors))) : h('p', { class: 'muted', id: 'job-errors' }, 'None.'));
  }

  async function workers(token) {
    if (!can('queues:read')) {
      fill(view, h('h1', {}, 'Workers'), needs('queues:read', 'The worker list'));
      return;
    }
    const [list, outbox] = await Promise.all([api('GET', '/workers'), api('GET', '/outbox')]);
    if (token !== route) return;
    const rows = list.data.map((w) => h('tr', { dataset: { worker: w.name, lost: String(w.lost) } },
      h('td', { class: 'mono' }, w.name), h('td', {}, w.host || ''), h('td', { class: 'n' }, w.pid ?? ''),
      h('td', {}, w.version || ''), h('td', {}, time(w.startedAt)),
      h('td', {}, time(w.lastHeartbeat), ' ', h('span', { class: 'muted' }, ago(w.lastHeartbeat))),
      h('td', {}, w.lost ? h('span', { class: 'badge bad' }, 'lost') : h('span', { class: 'badge ok' }, 'live')),
      h('td', {}, (w.queues || []).map((q) => q.queue + ' ' + q.inFlight + '/' + q.concurrency).join(', '))));
    fill(view, h('h1', {}, 'Workers'),
      h('div', { class: 'scroll' }, h('table', { id: 'workers' },
        h('thead', {}, h('tr', {}, ['Name', 'Host', 'Pid', 'Version', 'Started', 'Last heartbeat', 'State', 'Queues (in flight/concurrency)'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No worker process has announced itself.'))))),
      h('h2', {}, 'Outbox'), outboxCard(outbox.data));
  }

  // ---------------------------------------------------------------------------------------
  // Routing and polling

  function current() {
    const { path } = hashQuery();
    if (path.startsWith('/job/')) return (t) => job(t, decodeURIComponent(path.slice(5)));
    if (path === '/jobs') return jobs;
    if (path === '/workers') return workers;
    return overview;
  }

  function markNav() {
    const { path } = hashQuery();
    for (const a of document.querySelectorAll('#nav a')) {
      const target = a.getAttribute('href').slice(1);
      const on = target === '/' ? (path === '/' || path === '') : path.startsWith(target);
      if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
  }

  async function refresh() {
    clearTimeout(timer);
    if (sessionOver) return;
    const token = route;
    if (!document.hidden) {
      try {
        await current()(token);
        if (token === route) body.dataset.refreshedAt = new Date().toISOString();
      } catch (e) {
        if (e.status !== 401 && token === route) say(e.message, 'error');
      }
    }
    if (token === route && !sessionOver) timer = setTimeout(refresh, REFRESH_MS);
  }

  function navigate() {
    route += 1;
    say('', null);
    markNav();
    view.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    refresh().then(() => view.focus({ preventScroll: true }));
  }

  window.addEventListener('hashchange', navigate);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  if (PLATFORM) body.classList.add('platform');
  navigate();
}());
