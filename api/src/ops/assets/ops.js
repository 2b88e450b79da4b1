// Comet's ops console: a single-page app in plain JavaScript (no build step, no dependencies),
// served by comet-api at /ops. It reads and acts through /api/v1 with the session cookie; every
// request carries the session's CSRF token in X-CSRF-Token (the API refuses the cookie
// without it). Views live in the URL hash, so a view (its filters, page or cursor) can be
// shared and reloaded:
//   #/                               overview: queues (counts, latency, last hour), outbox, workers
//   #/jobs?queue=ping&state=dead&page=1          one queue's jobs in one state (Redis)
//   #/search?state=dead&queue=ping&error=timeout  finished jobs (the Postgres archive), by
//                                    state, queue, kind, error text, id prefix, finish time,
//                                    project (operators); &after=<cursor> for later pages
//   #/failures?queue=ping            dead jobs grouped by error fingerprint
//   #/job/<id>
//   #/workers
//   #/schedules                      the schedules: next and last fire, pause, resume, run now
// Views refresh without reloading the page (not while the tab is hidden): every 2 s, the
// archive's views every 5 s (the archive lags a finish by about a second anyway). The
// overview's per-queue charts of the last hour are read at most every 10 s (one request per
// queue: at the table's 2 s that would be 7 requests a second for 15 queues).
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
  const ARCHIVE_REFRESH_MS = 5000;
  const STATES = ['waiting', 'delayed', 'active', 'retrying', 'completed', 'dead', 'cancelled'];
  /** The states the archive (and so the search) holds. */
  const FINISHED = ['completed', 'dead', 'cancelled'];
  /** Every queue, from the server (the search's queue list needs no queues:read). */
  const QUEUES = (body.dataset.queues || '').split(' ').filter(Boolean);
  const PER_PAGE = 20;
  const SEARCH_LIMIT = 50;
  /** The search's filters, as named in the URL and by GET /api/v1/jobs. */
  const SEARCH_KEYS = ['state', 'queue', 'kind', 'error', 'idPrefix', 'from', 'to', 'projectId'];
  /** How often the overview reads every queue's last hour (GET /queues/{q}/series). */
  const SERIES_MS = 10000;
  const SERIES_MINUTES = 60;
  /** A queue's latency (its next job's wait) past which the overview highlights it. */
  const SLOW_SECONDS = 60;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const UUID_PATTERN = '[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}';

  // jobs seen in lists, by id: a platform operator's job detail falls back to them (job routes
  // by id answer only within the caller's project)
  const seen = new Map();
  let route = 0; // bumped on every navigation: a late answer of an old view is dropped
  let timer = null;
  // the archive views' form and result box, built once per navigation: a refresh replaces the
  // results only, so it never undoes what the user is typing
  let shell = null;
  let sessionOver = false;
  // every queue's last hour, kept across refreshes and views so that the 2 s refresh of the
  // overview reads it only every SERIES_MS: when it was last asked for, whether a read is under
  // way, and the minutes by queue
  const series = { at: 0, loading: false, byQueue: new Map() };

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

  /** An SVG element (createElementNS: the page never parses markup), as h() for HTML. */
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) el.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  /** A count with the browser's digit grouping (1,204). */
  function num(n) {
    return (Number(n) || 0).toLocaleString();
  }

  /** A wait in seconds, readable: "0 s", "0.4 s", "42 s", "3 min", "5 h", "2 d". */
  function duration(seconds) {
    const s = Math.max(0, Number(seconds) || 0);
    if (s === 0) return '0 s';
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 59.5) return Math.round(s) + ' s';
    if (s < 3570) return Math.round(s / 60) + ' min';
    if (s < 86400) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
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

  /** The views that span every project (throughput, workers, outbox): a platform token with
   *  queues:read. A project's queues:read shows its own part of each queue. */
  function fleet() { return PLATFORM && can('queues:read'); }

  function platformOnly(what) {
    return h('p', { class: 'notice', id: 'platform-only' }, what + ' spans every project: platform operators only. ',
      'Your project\'s part of each queue is on the ', h('a', { href: '#/' }, 'Overview'), ' and under ',
      h('a', { href: '#/jobs' }, 'Jobs'), '.');
  }

  function needs(permission, what) {
    let hint = '.';
    if (permission === 'queues:write' || permission.startsWith('schedules:')) {
      hint = ' (platform operators: sign in with a platform token).';
    } else if (permission === 'queues:read') {
      hint = ' (a project\'s admin role holds it; platform operators\' tokens too).';
    } else if (permission === 'jobs:read' && PLATFORM) {
      // the default platform token grants queues:* but not jobs:read
      hint = [': this platform token does not hold it (the default of ', h('code', {}, 'comet-api token --platform'),
        ' does not). Sign in with one minted with it as well, e.g. ',
        h('code', {}, 'comet-api token --platform -p queues:read -p queues:write -p jobs:read'),
        '; with queues:read it sees every project\'s jobs.'];
    }
    return h('p', { class: 'notice', id: 'needs-' + permission.replace(':', '-') }, what + ' needs the ',
      h('code', {}, permission), ' permission', hint);
  }

  /** At most `n` characters of `text`, the whole in the tooltip. */
  function clip(text, n) {
    if (!text) return h('span', { class: 'muted' }, '—');
    return text.length > n ? h('span', { title: text }, text.slice(0, n - 1) + '…') : h('span', {}, text);
  }

  /** An RFC 3339 instant as a datetime-local input shows it (the browser's zone). */
  function toLocalInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return '';
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' +
      p(d.getMinutes()) + (d.getSeconds() ? ':' + p(d.getSeconds()) : '');
  }

  /** A datetime-local input's value (the browser's zone) as RFC 3339 UTC, '' when empty. */
  function fromLocalInput(value) {
    if (!value) return '';
    const d = new Date(value); // a date-time without offset is local time
    return isNaN(d) ? '' : d.toISOString().replace('.000Z', 'Z');
  }

  /** The search view's hash for `filters` (empty ones left out) from the cursor `after`. */
  function searchHash(filters, after) {
    const q = new URLSearchParams();
    for (const k of SEARCH_KEYS) if (filters[k]) q.set(k, filters[k]);
    if (after) q.set('after', after);
    const query = q.toString();
    return '#/search' + (query ? '?' + query : '');
  }

  /** The longest literal part of a failure group's error (what its fingerprint did not mask),
   *  found in its sample error: an error text that finds the group's jobs; '' if none. */
  function literalPart(fingerprint, sample) {
    if (!sample) return '';
    const lower = sample.toLowerCase();
    const parts = (fingerprint || '').split(/'\?'|<id>|<email>|<n>/)
      .map((p) => p.trim().slice(0, 120).trim())
      .filter((p) => p.length >= 3)
      .sort((a, b) => b.length - a.length);
    for (const p of parts) if (lower.includes(p.toLowerCase())) return p;
    // the fingerprint folds whitespace: fall back to the longest word without a value in it
    const words = sample.split(/\s+/).filter((w) => w.length >= 4 && !/[0-9'"`]/.test(w))
      .sort((a, b) => b.length - a.length);
    return words[0] || '';
  }

  /** Builds the archive view's form and result box once per navigation; the result box. */
  function archiveShell(token, title, form) {
    if (!shell || shell.token !== token) {
      shell = { token, results: h('div', { id: 'results' }, h('p', { class: 'muted' }, 'Loading…')) };
      fill(view, h('h1', {}, title), form(), shell.results);
    }
    return shell.results;
  }

  /** Goes to `hash`; the same hash again (a form submitted twice) refreshes instead. */
  function go(hash) {
    if (location.hash === hash) refresh(); else location.hash = hash;
  }

  /** A labelled field of a filter form. */
  function field(label, input) {
    return h('div', { class: 'field' }, h('label', { for: input.id }, label), input);
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

  /** Reads every queue's last hour unless it was asked for less than SERIES_MS ago, in the
   *  background (the table never waits for it), then redraws the charts on the page. A queue
   *  whose series cannot be read shows no chart until the next read. */
  function loadSeries() {
    if (series.loading || Date.now() - series.at < SERIES_MS) return;
    series.at = Date.now();
    series.loading = true;
    Promise.all(QUEUES.map((q) =>
      api('GET', '/queues/' + encodeURIComponent(q) + '/series?minutes=' + SERIES_MINUTES).then(
        (r) => [q, r.data],
        () => [q, null]))) // a 401 has ended the session already
      .then((answers) => {
        for (const [q, minutes] of answers) {
          if (minutes) series.byQueue.set(q, minutes); else series.byQueue.delete(q);
        }
        drawCharts();
      })
      .finally(() => { series.loading = false; });
  }

  /** Redraws the overview's charts (if it is showing) from the series read last. */
  function drawCharts() {
    for (const row of document.querySelectorAll('#queues tbody tr[data-queue]')) {
      const cell = row.querySelector('td.chart');
      if (cell) cell.replaceChildren(chart(row.dataset.queue, series.byQueue.get(row.dataset.queue)));
    }
  }

  /** A queue's last hour as a small chart: a line of jobs completed per minute and bars of jobs
   *  retried (upper, amber) and gone dead (lower, red) per minute, on one scale (a bar is at
   *  least 1.5 px, so a single failure among thousands still shows); its text alternative
   *  gives the hour's totals. */
  function chart(queue, minutes) {
    if (!minutes || !minutes.length) {
      return h('span', { class: 'muted', title: 'The last hour of ' + queue + ': not read yet, or could not be read.' }, '—');
    }
    const W = 90;
    const H = 28;
    const TOP = 2;
    const step = W / minutes.length;
    let completed = 0;
    let retried = 0;
    let dead = 0;
    let peak = 1;
    let busiest = 0;
    for (const m of minutes) {
      completed += m.completed;
      retried += m.retried;
      dead += m.dead;
      busiest = Math.max(busiest, m.completed);
      peak = Math.max(peak, m.completed, m.retried + m.dead);
    }
    const height = (v) => (v > 0 ? Math.max(1.5, (v / peak) * (H - 1 - TOP)) : 0);
    const label = 'last hour: ' + num(completed) + ' completed, ' + num(retried) + ' retried, ' + num(dead) + ' dead' +
      (busiest ? '; at most ' + num(busiest) + ' completed a minute' : '');
    const bars = [];
    minutes.forEach((m, i) => {
      const x = (i * step + step * 0.1).toFixed(2);
      const width = (step * 0.8).toFixed(2);
      const dh = height(m.dead);
      const rh = height(m.retried);
      if (dh) bars.push(svg('rect', { class: 'spark-dead', x, width, y: (H - 1 - dh).toFixed(2), height: dh.toFixed(2) }));
      if (rh) bars.push(svg('rect', { class: 'spark-retried', x, width, y: (H - 1 - dh - rh).toFixed(2), height: rh.toFixed(2) }));
    });
    const line = minutes.map((m, i) => (i * step + step / 2).toFixed(2) + ',' + (H - 1 - (m.completed / peak) * (H - 1 - TOP)).toFixed(2));
    return svg('svg', { class: 'spark', width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': label },
      svg('title', {}, label),
      svg('line', { class: 'spark-axis', x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }),
      bars,
      svg('polyline', { class: 'spark-completed', points: line.join(' ') }));
  }

  /** A queue's latency cell: highlighted past SLOW_SECONDS unless the queue is paused (then its
   *  jobs wait by design). */
  function latencyCell(q) {
    const seconds = Number(q.latencySeconds) || 0;
    const slow = seconds > SLOW_SECONDS && !q.paused;
    let title = 'The next job in line has waited ' + seconds.toFixed(1) + ' s';
    if (slow) title += ' (over ' + SLOW_SECONDS + ' s: too few workers, or stuck ones?)';
    else if (q.paused && seconds > 0) title += ' (the queue is paused)';
    return h('td', { class: 'n latency' + (slow ? ' bad' : '') + (q.paused ? ' muted' : ''), title,
      dataset: { seconds: String(seconds) } }, duration(seconds));
  }

  /** A queue's share of the fleet: jobs in flight of the live workers' summed concurrency;
   *  flagged when no live worker runs the queue. */
  function slotsCell(w) {
    if (!w) return h('td', { class: 'n muted' }, '–');
    if (!w.processes) return h('td', { class: 'n bad in-flight', title: 'No live worker process runs this queue' }, 'no workers');
    return h('td', { class: 'n in-flight', dataset: { inFlight: String(w.inFlight), concurrency: String(w.concurrency) },
      title: w.processes + ' live worker process' + (w.processes === 1 ? '' : 'es') + ', ' + w.concurrency + ' slots' },
    w.inFlight + ' / ' + w.concurrency);
  }

  const ALL_TIME = 'Jobs completed since the queue began. The completed column counts only those still in Redis: ' +
    'once finished jobs are archived to Postgres, Redis keeps just the newest (JOB_REDIS_COMPLETED), so in a busy ' +
    'system that count stops growing. Search finds every archived job.';

  function queueTable(queues) {
    const head = h('tr', {}, h('th', { scope: 'col' }, 'Queue'),
      STATES.flatMap((s) => [h('th', { scope: 'col', class: 'n', title: s === 'completed' ? ALL_TIME : null }, s),
        s === 'completed' ? h('th', { scope: 'col', class: 'n wrap', title: ALL_TIME }, 'completed (all time)') : null]),
      h('th', { scope: 'col', class: 'n', title: 'How long the next job in line has waited; highlighted past ' + SLOW_SECONDS + ' s unless the queue is paused' }, 'Latency'),
      fleet() ? h('th', { scope: 'col', class: 'n', title: 'Jobs held now by the live workers running the queue, of their summed concurrency' }, 'In flight') : null,
      h('th', { scope: 'col', title: 'Per minute: the line jobs completed, the bars jobs retried (upper) and gone dead (lower)' }, 'Last hour'),
      h('th', { scope: 'col' }, 'Status'), can('queues:write') ? h('th', { scope: 'col' }, 'Control') : null);
    const rows = queues.map((q) => h('tr', { dataset: { queue: q.queue } },
      h('th', { scope: 'row' }, h('a', { href: '#/jobs?queue=' + encodeURIComponent(q.queue) + '&state=waiting' }, q.queue),
        q.partitions > 1 ? h('span', { class: 'muted', title: 'Split into ' + q.partitions + ' partitions (QUEUE_PARTITIONS); the counts are their sums' }, ' ×' + q.partitions) : null),
      STATES.flatMap((s) => [h('td', { class: 'n' + (s === 'dead' && q[s] > 0 ? ' bad' : ''), dataset: { state: s } },
        h('a', { href: '#/jobs?queue=' + encodeURIComponent(q.queue) + '&state=' + s,
          'aria-label': q[s] + ' ' + s + ' jobs in ' + q.queue }, String(q[s] ?? 0))),
      s === 'completed' ? h('td', { class: 'n completed-total', title: ALL_TIME }, num(q.completedTotal)) : null]),
      latencyCell(q),
      fleet() ? slotsCell(q.workers) : null,
      h('td', { class: 'chart' }, chart(q.queue, series.byQueue.get(q.queue))),
      h('td', { class: 'paused-cell', dataset: { paused: String(!!q.paused) } },
        q.paused ? h('span', { class: 'badge warn' }, 'paused') : h('span', { class: 'badge ok' }, 'running')),
      can('queues:write') ? h('td', {}, q.paused
        ? h('button', { type: 'button', id: 'resume-' + q.queue, onclick: () => act('Resume queue ' + q.queue + '? Workers start leasing its jobs at once.',
          () => api('POST', '/queues/' + encodeURIComponent(q.queue) + '/resume'), 'Queue ' + q.queue + ' resumed.') }, 'Resume')
        : h('button', { type: 'button', class: 'danger', id: 'pause-' + q.queue, onclick: () => act('Pause queue ' + q.queue + '? Workers stop leasing its jobs within a second (running jobs finish).',
          () => api('POST', '/queues/' + encodeURIComponent(q.queue) + '/pause'), 'Queue ' + q.queue + ' paused.') }, 'Pause')) : null));
    return h('div', { class: 'scroll' }, h('table', { id: 'queues' },
      h('caption', {}, 'Jobs per queue and state. Last hour, per minute on one scale: the line is jobs completed, ' +
        'the bars jobs retried (upper, amber) and gone dead (lower, red).'),
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
    if (!fleet()) {
      // a project's token: its own jobs in each queue; the fleet views are not its to see
      const queues = await api('GET', '/queues');
      if (token !== route) return;
      fill(view, h('h1', {}, 'Overview'),
        h('p', { id: 'project-scope' }, 'Your project\'s jobs in each queue: open ones now, finished ones since the queue began counting them.'),
        queueTable(queues.data), openJobForm());
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
    loadSeries(); // after the table: the counts never wait for the charts
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
    const states = STATES;
    const wanted = params.get('state') || 'dead';
    const state = states.includes(wanted) ? wanted : states[0];
    const page = Math.max(1, parseInt(params.get('page') || '1', 10) || 1);
    if (!can('queues:read')) {
      fill(view, h('h1', {}, 'Jobs'), needs('queues:read', 'Listing a queue\'s open jobs'),
        can('jobs:read') ? h('p', {}, 'Your project\'s finished jobs: ', h('a', { href: '#/search' }, 'Search'), ', ',
          h('a', { href: '#/failures' }, 'Failures'), '.') : null, openJobForm());
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
      states.map((s) => h('option', { value: s, selected: s === state }, s)));
    const filters = h('form', { class: 'inline', id: 'job-filters', onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = '#/jobs?queue=' + encodeURIComponent(qSelect.value) + '&state=' + encodeURIComponent(sSelect.value);
    } }, h('label', { for: 'filter-queue' }, 'Queue '), qSelect, ' ',
    h('label', { for: 'filter-state' }, 'State '), sSelect, ' ', h('button', { type: 'submit', id: 'apply-filters' }, 'Show'));
    const parts = [h('h1', {}, 'Jobs'), filters];
    if (!PLATFORM) {
      parts.push(h('p', { class: 'muted', id: 'finished-hint' }, 'Your project\'s jobs, newest first. To search them: ',
        h('a', { href: '#/search' }, 'Search'), ', ', h('a', { href: '#/failures' }, 'Failures'), '.'));
    }
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

  function searchForm(f) {
    const state = h('select', { id: 'search-state', name: 'state' }, h('option', { value: '' }, 'any finished'),
      FINISHED.map((s) => h('option', { value: s, selected: s === f.state }, s)));
    const queue = h('select', { id: 'search-queue', name: 'queue' }, h('option', { value: '' }, 'any queue'),
      QUEUES.map((q) => h('option', { value: q, selected: q === f.queue }, q)));
    const error = h('input', { id: 'search-error', name: 'error', type: 'search', value: f.error, maxlength: 300,
      autocomplete: 'off', placeholder: 'text in the last error' });
    const kind = h('input', { id: 'search-kind', name: 'kind', value: f.kind, size: 14, autocomplete: 'off' });
    const idPrefix = h('input', { id: 'search-id', name: 'idPrefix', value: f.idPrefix, size: 14, autocomplete: 'off',
      pattern: '[0-9a-fA-F-]{1,36}', title: 'The first hex digits of the job id', placeholder: '01a1fc' });
    const from = h('input', { id: 'search-from', name: 'from', type: 'datetime-local', step: 1, value: toLocalInput(f.from) });
    const to = h('input', { id: 'search-to', name: 'to', type: 'datetime-local', step: 1, value: toLocalInput(f.to) });
    const project = PLATFORM ? h('input', { id: 'search-project', name: 'projectId', value: f.projectId, size: 38,
      autocomplete: 'off', pattern: UUID_PATTERN, placeholder: 'every project' }) : null;
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
    return h('form', { class: 'filters', id: 'search-form', role: 'search', onsubmit: (ev) => {
      ev.preventDefault();
      go(searchHash({
        state: state.value, queue: queue.value, kind: kind.value.trim(), error: error.value.trim(),
        idPrefix: idPrefix.value.trim(), from: fromLocalInput(from.value), to: fromLocalInput(to.value),
        projectId: project ? project.value.trim() : '',
      }, ''));
    } },
    field('State', state), field('Queue', queue), field('Error contains', error), field('Kind', kind),
    field('Id prefix', idPrefix), field('Finished from (' + zone + ')', from), field('Finished before', to),
    project ? field('Project id', project) : null,
    h('div', { class: 'field actions' }, h('button', { type: 'submit', id: 'search' }, 'Search'),
      h('a', { href: '#/search', id: 'search-clear' }, 'Clear')));
  }

  function searchRow(j) {
    seen.set(j.id, j);
    return h('tr', { dataset: { jobId: j.id, state: j.state } },
      h('td', {}, h('a', { href: '#/job/' + j.id, class: 'mono' }, j.id)),
      h('td', {}, j.queue), h('td', {}, h('span', { class: 'badge state-' + j.state }, j.state)),
      h('td', { class: 'n' }, j.attempts + '/' + j.maxAttempts),
      h('td', { class: 'err' }, clip(j.lastError, 120)),
      h('td', {}, time(j.finishedAt)),
      PLATFORM ? h('td', { class: 'mono nowrap' }, j.projectId ? clip(j.projectId, 9) : '—') : null);
  }

  /** Finished jobs from the archive (GET /api/v1/jobs), the filters and cursor in the URL. */
  async function search(token) {
    const { params } = hashQuery();
    const f = {};
    for (const k of SEARCH_KEYS) f[k] = (params.get(k) || '').trim();
    const after = params.get('after') || '';
    if (!can('jobs:read')) {
      fill(view, h('h1', {}, 'Search'), needs('jobs:read', 'Searching finished jobs'), openJobForm());
      return;
    }
    const results = archiveShell(token, 'Search finished jobs', () => searchForm(f));
    const q = new URLSearchParams();
    for (const k of SEARCH_KEYS) if (f[k]) q.set(k, f[k]);
    if (after) q.set('after', after);
    q.set('limit', String(SEARCH_LIMIT));
    let page;
    try {
      page = await api('GET', '/jobs?' + q.toString());
    } catch (e) {
      if (e.status === 401 || token !== route) return;
      fill(results, e.status === 403 ? needs('jobs:read', 'Searching finished jobs') : problem(e));
      return;
    }
    if (token !== route) return;
    const next = page.meta && page.meta.nextCursor;
    const n = page.data.length;
    const cols = ['Id', 'Queue', 'State', 'Attempts', 'Last error', 'Finished'].concat(PLATFORM ? ['Project'] : []);
    fill(results,
      h('p', { id: 'search-summary', class: 'muted' }, (n ? n + ' finished job' + (n === 1 ? '' : 's') : 'No finished job') +
        (after ? ' on this page' : '') + ' matching, newest first' + (next ? '; more on the next page.' : '.') +
        ' Open jobs (waiting, delayed, active, retrying) are in ', h('a', { href: '#/jobs' }, 'Jobs'), '.'),
      h('div', { class: 'scroll' }, h('table', { id: 'search-results' },
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, n ? page.data.map(searchRow) : h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, 'No jobs.'))))),
      h('nav', { class: 'pager', 'aria-label': 'Pages' },
        after ? h('a', { href: searchHash(f, ''), id: 'first-page' }, '← Newest') : null,
        next ? h('a', { href: searchHash(f, next), id: 'next-page' }, 'Next page →') : null));
  }

  function failuresForm(queue, projectId) {
    const select = h('select', { id: 'failures-queue', name: 'queue' }, h('option', { value: '' }, 'any queue'),
      QUEUES.map((q) => h('option', { value: q, selected: q === queue }, q)));
    const project = PLATFORM ? h('input', { id: 'failures-project', name: 'projectId', value: projectId, size: 38,
      autocomplete: 'off', pattern: UUID_PATTERN, placeholder: 'every project' }) : null;
    return h('form', { class: 'filters', id: 'failures-form', onsubmit: (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      if (select.value) q.set('queue', select.value);
      if (project && project.value.trim()) q.set('projectId', project.value.trim());
      go('#/failures' + (q.toString() ? '?' + q.toString() : ''));
    } }, field('Queue', select), project ? field('Project id', project) : null,
    h('div', { class: 'field actions' }, h('button', { type: 'submit', id: 'show-failures' }, 'Show')));
  }

  /** Dead jobs grouped by error fingerprint (GET /api/v1/jobs/failures). */
  async function failures(token) {
    const { params } = hashQuery();
    const queue = params.get('queue') || '';
    const projectId = PLATFORM ? params.get('projectId') || '' : '';
    if (!can('jobs:read')) {
      fill(view, h('h1', {}, 'Failures'), needs('jobs:read', 'Seeing the failure groups'));
      return;
    }
    const results = archiveShell(token, 'Failures', () => failuresForm(queue, projectId));
    const q = new URLSearchParams({ limit: '100' });
    if (queue) q.set('queue', queue);
    if (projectId) q.set('projectId', projectId);
    let groups;
    try {
      groups = (await api('GET', '/jobs/failures?' + q.toString())).data;
    } catch (e) {
      if (e.status === 401 || token !== route) return;
      fill(results, e.status === 403 ? needs('jobs:read', 'Seeing the failure groups') : problem(e));
      return;
    }
    if (token !== route) return;
    const rows = groups.map((g) => {
      const text = literalPart(g.fingerprint, g.sampleError);
      const jobs = searchHash({ state: 'dead', queue: g.queue, error: text, projectId }, '');
      return h('tr', { dataset: { queue: g.queue, sampleJobId: g.sampleJobId } },
        h('td', { class: 'mono' }, clip(g.fingerprint, 90)),
        h('td', {}, g.queue),
        h('td', { class: 'n count' }, String(g.count)),
        h('td', {}, time(g.firstSeen)), h('td', {}, time(g.lastSeen)),
        h('td', { class: 'err' }, clip(g.sampleError, 120)),
        h('td', {}, h('a', { href: '#/job/' + g.sampleJobId, class: 'mono sample', title: g.sampleJobId }, g.sampleJobId.slice(0, 8) + '…')),
        h('td', {}, h('a', { href: jobs, class: 'show-jobs',
          title: text ? 'Dead jobs of ' + g.queue + ' whose error contains “' + text + '”' : 'Dead jobs of ' + g.queue },
        'show jobs')));
    });
    const cols = ['Fingerprint', 'Queue', 'Count', 'First seen', 'Last seen', 'Sample error', 'Sample job', 'Jobs'];
    fill(results,
      h('p', { class: 'muted' }, 'Dead jobs in the archive grouped by their last error with ids, numbers and quoted values masked; largest groups first.'),
      h('div', { class: 'scroll' }, h('table', { id: 'failures' },
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: c === 'Count' ? 'n' : null }, c)))),
        h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, 'No dead jobs.'))))));
  }

  function fact(label, value, id) {
    return h('div', {}, h('dt', {}, label), h('dd', id ? { id } : {}, value));
  }

  /** A JSON value pretty-printed (a string holding JSON too). */
  function json(value, id) {
    let v = value;
    if (typeof v === 'string') {
      try { v = JSON.parse(v); } catch (_) { /* shown as the string it is */ }
    }
    return h('pre', { class: 'json', id }, v === null || v === undefined ? '—' : JSON.stringify(v, null, 2));
  }

  /** A copy of job `id` from the lists a platform operator may read (GET /api/v1/jobs/{id}
   *  answers within the caller's project only): the queue's list of the state last seen
   *  (Redis, current), else the archive; else the last copy seen; null if none. */
  async function listedCopy(id) {
    const last = seen.get(id);
    if (last && can('queues:read')) {
      try {
        const list = await api('GET', '/queues/' + encodeURIComponent(last.queue) + '/jobs?state=' + last.state + '&perPage=100');
        list.data.forEach((j) => seen.set(j.id, j));
        const found = list.data.find((j) => j.id === id);
        if (found) return found;
      } catch (e) { if (e.status === 401) throw e; }
    }
    if (can('jobs:read') && /^[0-9a-fA-F-]{36}$/.test(id)) {
      try {
        const found = (await api('GET', '/jobs?limit=1&idPrefix=' + id.replace(/-/g, ''))).data.find((j) => j.id === id);
        if (found) return found;
      } catch (e) { if (e.status === 401) throw e; }
    }
    return last || null;
  }

  async function job(token, id) {
    let record = null;
    let fromList = false;
    try {
      record = (await api('GET', '/jobs/' + encodeURIComponent(id))).data;
    } catch (e) {
      if (e.status === 401) return;
      const copy = e.status === 404 || e.status === 403 ? await listedCopy(id) : null;
      if (!copy) {
        if (token === route) fill(view, h('h1', {}, 'Job'), problem(e), openJobForm());
        return;
      }
      record = copy;
      fromList = true;
    }
    if (token !== route) return;
    const j = record;
    seen.set(j.id, j);
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
      h('td', { class: 'n' }, String(e.attempt)), h('td', {}, time(e.at)), h('td', { class: 'mono' }, e.worker || '—'),
      h('td', { class: 'err chain' }, e.error)));
    // back to the list the job is in: the queue's (operators), else the search (finished jobs)
    let back = null;
    if (can('queues:read')) {
      back = h('a', { href: '#/jobs?queue=' + encodeURIComponent(j.queue) + '&state=' + j.state }, '← ' + j.queue + ' · ' + j.state);
    } else if (can('jobs:read') && FINISHED.includes(j.state)) {
      back = h('a', { href: searchHash({ queue: j.queue, state: j.state }, '') }, '← finished ' + j.queue + ' jobs · ' + j.state);
    }
    fill(view,
      back ? h('p', {}, back) : null,
      h('h1', {}, 'Job ', h('span', { class: 'mono' }, j.id)),
      fromList ? h('p', { class: 'notice', id: 'job-listed' }, 'Shown from the job lists: this job is not in your project ',
        '(a job\'s own record, with its payload, answers within its project), so its controls are not offered here.') : null,
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
      h('h2', {}, 'Payload'),
      'payload' in j ? json(j.payload, 'job-payload')
        : h('p', { class: 'muted', id: 'job-payload' }, fromList ? 'Not in the lists: shown to the job\'s project.' : 'Not kept.'),
      h('h2', {}, 'Attempts that failed'),
      errors.length ? h('div', { class: 'scroll' }, h('table', { id: 'job-errors' },
        h('thead', {}, h('tr', {}, ['Attempt', 'At', 'Worker', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, errors))) : h('p', { class: 'muted', id: 'job-errors' }, 'None.'),
      h('h2', {}, 'Progress'), json(j.progress, 'job-progress'),
      h('h2', {}, 'Result'), json(j.result, 'job-result'));
  }

  async function workers(token) {
    if (!can('queues:read')) {
      fill(view, h('h1', {}, 'Workers'), needs('queues:read', 'The worker list'));
      return;
    }
    if (!fleet()) {
      fill(view, h('h1', {}, 'Workers'), platformOnly('The worker list'));
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

  /** The schedules (GET /api/v1/schedules): expression, next and last fire, the latest run,
   *  missed ticks; pause, resume and trigger with schedules:manage. */
  async function schedules(token) {
    if (!can('schedules:read')) {
      fill(view, h('h1', {}, 'Schedules'), needs('schedules:read', 'The schedule list'));
      return;
    }
    const list = await api('GET', '/schedules');
    if (token !== route) return;
    const manage = can('schedules:manage');
    const control = (sc) => {
      const path = '/schedules/' + encodeURIComponent(sc.name);
      const buttons = [h('button', { type: 'button', id: 'trigger-' + sc.name,
        onclick: () => act('Run ' + sc.name + ' now? One job is enqueued outside its tick sequence.',
          () => api('POST', path + '/trigger'), 'Schedule ' + sc.name + ' triggered.') }, 'Run now')];
      if (sc.paused) {
        buttons.push(' ', h('button', { type: 'button', id: 'resume-schedule-' + sc.name,
          onclick: () => act('Resume ' + sc.name + '? Its next tick fires as usual.',
            () => api('POST', path + '/resume'), 'Schedule ' + sc.name + ' resumed.') }, 'Resume'));
      } else if (sc.expression !== 'off') {
        buttons.push(' ', h('button', { type: 'button', class: 'danger', id: 'pause-schedule-' + sc.name,
          onclick: () => act('Pause ' + sc.name + '? Its ticks are skipped until it is resumed.',
            () => api('POST', path + '/pause'), 'Schedule ' + sc.name + ' paused.') }, 'Pause'));
      }
      return h('td', { class: 'nowrap' }, buttons);
    };
    const status = (sc) => {
      if (sc.paused) return h('span', { class: 'badge warn', title: 'by ' + (sc.pausedBy || '?') + ' ' + (sc.pausedAt || '') }, 'paused');
      if (!sc.enabled) return h('span', { class: 'badge', title: 'SCHEDULE_' + sc.name.toUpperCase() + '=off' }, 'off');
      return h('span', { class: 'badge ok' }, 'on');
    };
    const rows = list.data.map((sc) => h('tr', { dataset: { schedule: sc.name, paused: String(sc.paused) } },
      h('th', { scope: 'row' }, sc.name),
      h('td', { class: 'mono' }, sc.expression, sc.overridden ? h('span', { class: 'muted', title: 'from SCHEDULE_' + sc.name.toUpperCase() }, ' (env)') : null),
      h('td', {}, sc.timeZone), h('td', {}, sc.queue),
      h('td', { class: 'next-fire' }, time(sc.nextFireAt)),
      h('td', {}, time(sc.lastFireAt), ' ', h('span', { class: 'muted' }, ago(sc.lastFireAt))),
      h('td', {}, sc.lastJob ? [h('a', { href: '#/job/' + sc.lastJob.id, class: 'mono' }, sc.lastJob.id.slice(0, 8)), ' ',
        h('span', { class: 'badge state-' + (sc.lastJob.state || 'gone') }, sc.lastJob.state || 'gone')] : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'n' + (sc.missedCount > 0 ? ' bad' : ''), title: 'catch-up ' + sc.catchUp + ', overlap ' + sc.overlap }, String(sc.missedCount)),
      h('td', { class: 'schedule-status' }, status(sc)),
      manage ? control(sc) : null));
    fill(view, h('h1', {}, 'Schedules'),
      h('p', { class: 'muted' }, 'Each tick enqueues one job, however many workers run the scheduler. Times in ',
        Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time', '; UTC on hover.'),
      h('div', { class: 'scroll' }, h('table', { id: 'schedules' },
        h('thead', {}, h('tr', {}, ['Schedule', 'Expression', 'Zone', 'Queue', 'Next fire', 'Last fire', 'Latest run', 'Missed', 'Status']
          .concat(manage ? ['Control'] : []).map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows))));
  }

  // ---------------------------------------------------------------------------------------
  // Routing and polling

  /** The view of the URL and how often it refreshes: [render(token), milliseconds]. */
  function current() {
    const { path } = hashQuery();
    if (path.startsWith('/job/')) return [(t) => job(t, decodeURIComponent(path.slice(5))), REFRESH_MS];
    if (path === '/jobs') return [jobs, REFRESH_MS];
    if (path === '/search') return [search, ARCHIVE_REFRESH_MS];
    if (path === '/failures') return [failures, ARCHIVE_REFRESH_MS];
    if (path === '/workers') return [workers, REFRESH_MS];
    if (path === '/schedules') return [schedules, REFRESH_MS];
    return [overview, REFRESH_MS];
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
    const [render, every] = current();
    if (!document.hidden) {
      try {
        await render(token);
        if (token === route) body.dataset.refreshedAt = new Date().toISOString();
      } catch (e) {
        if (e.status !== 401 && token === route) say(e.message, 'error');
      }
    }
    if (token === route && !sessionOver) timer = setTimeout(refresh, every);
  }

  function navigate() {
    route += 1;
    shell = null;
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
