// The admin page: a login form, then live tables fed by the server-sent
// event stream /admin/api/events. EventSource cannot send an Authorization
// header, so the stream is read with fetch() and a ReadableStream. The
// credential is kept in memory only, never in storage or a cookie.
//
// Every text from the server (user names, destinations, addresses) is
// attacker-controlled and only ever set as textContent.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const passwordLogin = document.body.dataset.passwordLogin === 'true';
  let authorization = null;
  let streamController = null;

  if (passwordLogin) {
    $('password-fields').hidden = false;
  }

  // ---------------------------------------------------------------- format

  const number = new Intl.NumberFormat('en');
  function count(n) {
    return number.format(n);
  }
  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
  }
  function rate(n) {
    return n === undefined || n === null ? '–' : number.format(Math.round(n * 10) / 10);
  }
  function duration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = Math.floor(seconds % 60);
    if (d > 0) return `${d}d ${h}h`;
    if (h > 0) return `${h}h ${m}m`;
    if (m > 0) return `${m}m ${s}s`;
    return `${s}s`;
  }
  function since(ms) {
    if (ms === null || ms === undefined) return 'connecting';
    const at = new Date(ms);
    // The date only when it is not today's.
    return at.toDateString() === new Date().toDateString()
      ? at.toLocaleTimeString()
      : at.toLocaleString();
  }

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  function setStatus(text, kind) {
    const status = $('status');
    setText(status, text);
    status.className = `status ${kind || ''}`;
  }

  function notice(text) {
    setText($('notice'), text);
  }

  // ---------------------------------------------------------------- api

  async function api(method, path, body) {
    const headers = { Authorization: authorization };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try {
      json = await response.json();
    } catch (_) {
      json = null;
    }
    return { status: response.status, ok: response.ok, json };
  }

  function errorText(result) {
    return (result.json && result.json.error) || `HTTP ${result.status}`;
  }

  // A destructive button asks for a second click within three seconds.
  function armed(button, label, action) {
    button.addEventListener('click', () => {
      if (!button.classList.contains('armed')) {
        button.classList.add('armed');
        button.textContent = 'Confirm';
        setTimeout(() => {
          button.classList.remove('armed');
          button.textContent = label;
        }, 3000);
        return;
      }
      button.classList.remove('armed');
      button.textContent = label;
      button.disabled = true;
      action().finally(() => {
        button.disabled = false;
      });
    });
  }

  async function disconnect(id, who) {
    const result = await api('POST', `/admin/api/sessions/${encodeURIComponent(id)}/disconnect`);
    notice(result.ok ? `Disconnected session ${id}${who ? ` (${who})` : ''}.` : `Disconnect failed: ${errorText(result)}`);
  }

  async function purge(destination) {
    const result = await api('POST', '/admin/api/queues/purge', { destination });
    notice(result.ok
      ? `Purged ${destination}: ${count(result.json.purged)} messages removed.`
      : `Purge of ${destination} failed: ${errorText(result)}`);
  }

  // ---------------------------------------------------------------- tables

  // Brings `tbody` to `rows` in order, keeping the rows that stay (so a
  // half-clicked button is not replaced under the pointer).
  function syncRows(tbody, rows, keyOf, cellsOf, actionOf) {
    const existing = new Map();
    for (const tr of Array.from(tbody.rows)) existing.set(tr.dataset.key, tr);
    rows.forEach((row, index) => {
      const key = keyOf(row);
      const cells = cellsOf(row);
      let tr = existing.get(key);
      if (tr) {
        existing.delete(key);
      } else {
        tr = document.createElement('tr');
        tr.dataset.key = key;
        for (const cell of cells) {
          const td = document.createElement('td');
          if (cell.className) td.className = cell.className;
          tr.appendChild(td);
        }
        const actions = document.createElement('td');
        const button = actionOf(row);
        if (button) actions.appendChild(button);
        tr.appendChild(actions);
      }
      cells.forEach((cell, i) => setText(tr.cells[i], cell.text));
      if (tbody.rows[index] !== tr) tbody.insertBefore(tr, tbody.rows[index] || null);
    });
    for (const tr of existing.values()) tr.remove();
  }

  function renderSessions(list) {
    setText($('sessions-count'), list.total > list.sessions.length
      ? `(${count(list.sessions.length)} of ${count(list.total)}, fullest outbox first)`
      : `(${count(list.total)})`);
    syncRows(
      $('sessions').tBodies[0],
      list.sessions,
      (s) => s.id,
      (s) => [
        { text: s.id, className: 'mono' },
        { text: s.user === null ? (s.version === null ? '' : 'anonymous') : s.user },
        { text: s.address, className: 'mono' },
        { text: s.transport },
        { text: s.version === null ? '–' : s.version },
        { text: count(s.subscriptions), className: 'n' },
        { text: bytes(s.outbox_bytes), className: 'n' },
        { text: count(s.messages_in), className: 'n' },
        { text: count(s.messages_out), className: 'n' },
        { text: since(s.connected_at_ms) },
      ],
      (s) => {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'danger';
        button.textContent = 'Disconnect';
        armed(button, 'Disconnect', () => disconnect(s.id, s.user));
        return button;
      },
    );
  }

  function renderDestinations(list) {
    setText($('destinations-count'), list.total > list.destinations.length
      ? `(${count(list.destinations.length)} of ${count(list.total)}, busiest first)`
      : `(${count(list.total)})`);
    syncRows(
      $('destinations').tBodies[0],
      list.destinations,
      (d) => `${d.kind} ${d.name}`,
      (d) => [
        { text: d.name, className: 'mono' },
        { text: d.kind },
        { text: count(d.subscribers), className: 'n' },
        { text: count(d.ready), className: 'n' },
        { text: bytes(d.ready_bytes), className: 'n' },
        { text: count(d.unacked), className: 'n' },
      ],
      (d) => {
        if (d.kind !== 'queue') return null;
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'danger';
        button.textContent = 'Purge';
        armed(button, 'Purge', () => purge(d.name));
        return button;
      },
    );
  }

  function renderRelay(relay) {
    $('relay').hidden = relay === null;
    if (relay === null) return;
    const figures = [
      ['Mode', relay.mode],
      ['Broker available', relay.available ? 'yes' : 'NO'],
      ['Broker connections', count(relay.broker_connections)],
      ['Pool links up', `${count(relay.links_up)} of ${count(relay.links_total)}`],
      ['Reconnects', count(relay.reconnects)],
      ['Failed connection attempts', count(relay.connection_failures)],
      ['Upstream subscriptions', count(relay.upstream_subscriptions)],
      ['Relayed topic subscribers', count(relay.relayed_topic_subscribers)],
    ];
    const dl = $('relay-figures');
    if (dl.children.length !== figures.length * 2) {
      dl.replaceChildren();
      for (const [label] of figures) {
        const dt = document.createElement('dt');
        dt.textContent = label;
        dl.appendChild(dt);
        dl.appendChild(document.createElement('dd'));
      }
    }
    figures.forEach(([, value], i) => setText(dl.children[i * 2 + 1], value));
  }

  function render(snapshot) {
    const o = snapshot.overview;
    const r = snapshot.rates;
    setText($('f-uptime'), duration(o.uptime_seconds));
    setText($('f-connections'), count(o.connections));
    setText($('f-sessions'), count(o.sessions));
    setText($('f-subscriptions'), count(o.subscriptions));
    setText($('f-rate-in'), r ? rate(r.messages_in) : '–');
    setText($('f-rate-out'), r ? rate(r.messages_out) : '–');
    setText($('f-bytes-in'), r ? `${bytes(Math.round(r.bytes_in))}` : '–');
    setText($('f-bytes-out'), r ? `${bytes(Math.round(r.bytes_out))}` : '–');
    setText($('f-backlog'), bytes(o.backlog_bytes));
    setText($('f-queue-bytes'), bytes(o.queue_bytes));
    setText($('f-slow'), count(o.slow_consumers));
    setText($('f-broker'), o.broker.available ? 'available' : 'UNAVAILABLE');
    renderSessions(snapshot.sessions);
    renderDestinations(snapshot.destinations);
    renderRelay(o.broker.relay);
  }

  // ---------------------------------------------------------------- stream

  function handleEvent(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
    }
    if (event === 'snapshot' && data.length > 0) render(JSON.parse(data.join('\n')));
  }

  async function follow() {
    while (authorization !== null) {
      const controller = new AbortController();
      streamController = controller;
      try {
        const response = await fetch('/admin/api/events', {
          headers: { Authorization: authorization },
          cache: 'no-store',
          signal: controller.signal,
        });
        if (response.status === 401) {
          logout('Logged out: the credential is no longer accepted.');
          return;
        }
        if (!response.ok) {
          let text = `HTTP ${response.status}`;
          try {
            text = (await response.json()).error || text;
          } catch (_) { /* not JSON */ }
          setStatus('not live', 'down');
          notice(`Live updates refused: ${text}`);
        } else {
          setStatus('live', 'live');
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            let end = buffer.indexOf('\n\n');
            while (end >= 0) {
              handleEvent(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
              end = buffer.indexOf('\n\n');
            }
          }
          setStatus('reconnecting', 'down');
        }
      } catch (_) {
        if (controller.signal.aborted) return;
        setStatus('reconnecting', 'down');
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  // ---------------------------------------------------------------- login

  function basic(login, password) {
    const utf8 = new TextEncoder().encode(`${login}:${password}`);
    let binary = '';
    for (const b of utf8) binary += String.fromCharCode(b);
    return `Basic ${btoa(binary)}`;
  }

  function logout(message) {
    authorization = null;
    if (streamController) streamController.abort();
    streamController = null;
    $('dashboard').hidden = true;
    $('login').hidden = false;
    $('logout').hidden = true;
    setText($('operator'), '');
    setText($('login-error'), message || '');
    setStatus('logged out', '');
  }

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    const login = passwordLogin ? $('login-name').value : '';
    const password = passwordLogin ? $('password').value : '';
    if (token !== '') authorization = `Bearer ${token}`;
    else if (login !== '') authorization = basic(login, password);
    else {
      setText($('login-error'), passwordLogin ? 'Enter the admin token, or a login and password.' : 'Enter the admin token.');
      return;
    }
    setText($('login-error'), 'Checking…');
    let result;
    try {
      result = await api('GET', '/admin/api/overview');
    } catch (e) {
      authorization = null;
      setText($('login-error'), `Cannot reach the server: ${e.message}`);
      return;
    }
    if (!result.ok) {
      authorization = null;
      setText($('login-error'), errorText(result));
      return;
    }
    $('token').value = '';
    $('password').value = '';
    setText($('login-error'), '');
    setText($('operator'), token !== '' ? 'admin token' : login);
    $('login').hidden = true;
    $('dashboard').hidden = false;
    $('logout').hidden = false;
    follow();
  });

  $('logout').addEventListener('click', () => logout(''));
})();
