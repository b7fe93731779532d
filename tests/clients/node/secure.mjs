#!/usr/bin/env node
// Drives a stompbox server's secured WebSocket listener (wss://) with the
// real @stomp/stompjs client over the `ws` package: logins, JWTs, access
// rules and the Origin check.
//
//   node secure.mjs <wss-url>
//
// The server's CA is trusted through NODE_EXTRA_CA_CERTS. Credentials come
// from the environment, not argv:
//   STOMP_LOGIN, STOMP_PASSCODE  a user the server accepts
//   STOMP_JWT, STOMP_JWT_SUBJECT a valid token (HS256) and its `sub`
//   STOMP_JWT_EXPIRED            a token whose `exp` has passed
//   STOMP_ALLOWED_ORIGIN         (optional) a foreign origin the server lists
//                                in allowed_origins
//   STOMP_DEBUG=1                dumps stompjs' frame log to stderr
//
// The server's access rules must let authenticated users SEND to
// /topic/secure.* and /user/{user}/queue/**, SUBSCRIBE to /topic/secure.* and
// /user/queue/**, and nothing under /topic/forbidden.
//
// Prints `ok <name>` or `FAIL <name>: <reason>` per scenario and exits 0 only
// if every scenario passed.

import { randomBytes } from 'node:crypto';
import { rootCertificates } from 'node:tls';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import { Inbox, ScenarioError, WAIT_MS, check, withTimeout } from './harness.mjs';

const SCRIPT_MS = 55_000; // hard ceiling so a wedged server can never hang CI
const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: node secure.mjs <wss-url>   (see the header for the environment)');
  process.exit(64);
}

let currentScenario = '(startup)';
const watchdog = setTimeout(() => {
  console.log(`FAIL ${currentScenario}: whole script exceeded ${SCRIPT_MS} ms`);
  process.exit(2);
}, SCRIPT_MS);

function env(name) {
  const value = process.env[name];
  if (!value) throw new ScenarioError(`environment variable ${name} is not set`);
  return value;
}

const debug = process.env.STOMP_DEBUG ? (m) => console.error(`[stompjs] ${m}`) : () => {};

// Unique per run, so an external broker's leftovers never match; no `.` in
// it, as `/topic/secure.*` allows one dot-word.
const RUN = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;

function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function errorText(frame) {
  return [frame.headers.message, frame.body].filter(Boolean).join(' ');
}

// One stompjs client. An ERROR or a closed socket fails every pending wait at
// once, unless the scenario said it expects one (`expectError`).
class Peer {
  constructor(name, { connectHeaders = {}, wsOptions = {} } = {}) {
    this.name = name;
    this.receiptSeq = 0;
    this.expectError = false;
    this.connected = false;
    this.error = deferred(); // the first ERROR frame
    this.closed = deferred(); // the socket's close event
    this.broken = new Promise((_, reject) => {
      this.breakWith = reject;
    });
    this.broken.catch(() => {}); // observed via races
    this.client = new Client({
      webSocketFactory: () => new WebSocket(url, PROTOCOLS, wsOptions),
      connectHeaders,
      // A silent reconnect would retry a refused CONNECT and hide it.
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      debug: (m) => debug(`${name}: ${m}`),
      onConnect: () => {
        this.connected = true;
        this.connectedNow?.();
      },
      onStompError: (frame) => {
        this.error.resolve(frame);
        if (!this.expectError) this.breakWith(new ScenarioError(`${name} got ERROR: ${errorText(frame)}`));
      },
      onWebSocketClose: (evt) => {
        this.closed.resolve(evt);
        if (!this.expectError) {
          this.breakWith(new ScenarioError(`${name} socket closed unexpectedly (code ${evt?.code})`));
        }
      },
      onWebSocketError: (evt) => {
        this.socketError = evt?.message ?? evt?.error?.message ?? 'unknown';
        if (!this.expectError) this.breakWith(new ScenarioError(`${name} WebSocket error: ${this.socketError}`));
      },
    });
  }

  connect() {
    const connected = new Promise((resolve) => {
      this.connectedNow = resolve;
    });
    this.client.activate();
    return withTimeout(Promise.race([connected, this.broken]), `CONNECTED for ${this.name}`);
  }

  // The CONNECT must be answered with an ERROR and a closed socket, and
  // never with CONNECTED; returns the ERROR frame.
  async refusedConnect() {
    this.expectError = true;
    this.client.activate();
    const frame = await withTimeout(this.error.promise, `ERROR refusing ${this.name}'s CONNECT`);
    await withTimeout(this.closed.promise, `the socket closing after ${this.name}'s ERROR`);
    check(!this.connected, `${this.name} got CONNECTED although its CONNECT was refused`);
    return frame;
  }

  receipt(label) {
    const id = `${this.name}-${label}-${++this.receiptSeq}`;
    const p = new Promise((resolve) => this.client.watchForReceipt(id, resolve));
    return { id, done: withTimeout(Promise.race([p, this.broken]), `RECEIPT ${id}`) };
  }

  async subscribe(destination) {
    const inbox = new Inbox(`${this.name}:${destination}`, this.broken);
    const r = this.receipt('sub');
    // Receipted, so the subscription is live before anything is published.
    this.client.subscribe(destination, (m) => inbox.push(m), { receipt: r.id });
    await r.done;
    return inbox;
  }

  async send(destination, body) {
    const r = this.receipt('send');
    this.client.publish({ destination, body, headers: { receipt: r.id } });
    await r.done;
  }

  // Cleanup: never throws, never waits long.
  async dispose() {
    if (!this.client.active) return;
    this.expectError = true;
    try {
      await withTimeout(this.client.deactivate(), `${this.name} close`, 1_000);
    } catch {
      await withTimeout(this.client.deactivate({ force: true }), `${this.name} forced close`, 1_000).catch(() => {});
    }
  }
}

async function withPeer(name, options, body) {
  const peer = new Peer(name, options);
  try {
    return await body(peer);
  } finally {
    await peer.dispose();
  }
}

// `peer` is signed in as `user`: what it sends to a topic and to its own
// user queue comes back to it marked with that name.
async function roundTrip(peer, user, label) {
  const topic = `/topic/secure.${label}-${RUN}`;
  const queue = `/queue/secure-${label}-${RUN}`;
  const fromTopic = await peer.subscribe(topic);
  const fromQueue = await peer.subscribe(`/user${queue}`);
  await peer.send(topic, `${label} to the topic`);
  await peer.send(`/user/${user}${queue}`, `${label} to myself`);
  for (const [inbox, body] of [
    [fromTopic, `${label} to the topic`],
    [fromQueue, `${label} to myself`],
  ]) {
    const m = await inbox.next(`${JSON.stringify(body)} back`);
    check(m.body === body, `got ${JSON.stringify(m.body)}, expected ${JSON.stringify(body)}`);
    const sender = m.headers['stompbox-sender'];
    check(sender === user, `${JSON.stringify(body)} has stompbox-sender ${JSON.stringify(sender)}, expected ${JSON.stringify(user)}`);
  }
}

// A refused CONNECT's ERROR, as the user of stompjs sees it: the server
// writes ERRORs before CONNECTED unescaped (stompjs unescapes only once
// CONNECTED said 1.2), so the message reads exactly `reason`.
function expectRefusal(frame, reason) {
  const message = frame.headers.message ?? '';
  check(message.startsWith(reason), `ERROR message ${JSON.stringify(message)} does not start with ${JSON.stringify(reason)}`);
}

// A bare WebSocket handshake; resolves with the HTTP status it ended with
// (101 on success) and, when refused, the response body.
function handshake(options) {
  const ws = new WebSocket(url, PROTOCOLS, options);
  const outcome = new Promise((resolve, reject) => {
    ws.on('open', () => {
      resolve({ status: 101, protocol: ws.protocol });
      ws.terminate();
    });
    // With this listener ws hands over the response instead of an error.
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        body += chunk;
      });
      res.on('end', () => {
        resolve({ status: res.statusCode, body });
        ws.terminate();
      });
    });
    // After either outcome terminate() reports an error too: ignored then.
    ws.on('error', (e) => reject(e));
  });
  const closed = new Promise((resolve) => ws.on('close', resolve));
  return withTimeout(outcome, 'the WebSocket handshake').finally(() =>
    withTimeout(closed, 'the handshake socket closing', 1_000).catch(() => {}),
  );
}

// ---------------------------------------------------------------- scenarios

async function loginOverWss() {
  check(url.startsWith('wss://'), `${url} is not a wss:// URL`);
  const login = env('STOMP_LOGIN');
  await withPeer('login', { connectHeaders: { login, passcode: env('STOMP_PASSCODE') } }, async (peer) => {
    await peer.connect();
    await roundTrip(peer, login, 'login');
  });
}

async function wrongPasscode() {
  const login = env('STOMP_LOGIN');
  await withPeer('wrong', { connectHeaders: { login, passcode: `${env('STOMP_PASSCODE')}-wrong` } }, async (peer) => {
    expectRefusal(await peer.refusedConnect(), 'access refused: wrong login or passcode');
  });
}

async function jwtAsPasscode() {
  const subject = env('STOMP_JWT_SUBJECT');
  // The login names someone else: the token alone says who this is.
  const connectHeaders = { login: `not-${subject}`, passcode: env('STOMP_JWT') };
  await withPeer('jwt-passcode', { connectHeaders }, async (peer) => {
    await peer.connect();
    await roundTrip(peer, subject, 'jwtpass');
  });
}

async function jwtAsBearerHeader() {
  const subject = env('STOMP_JWT_SUBJECT');
  const connectHeaders = { Authorization: `Bearer ${env('STOMP_JWT')}` };
  await withPeer('jwt-bearer', { connectHeaders }, async (peer) => {
    await peer.connect();
    await roundTrip(peer, subject, 'jwtbearer');
  });
}

async function jwtExpired() {
  const token = env('STOMP_JWT_EXPIRED');
  for (const [label, connectHeaders] of [
    ['expired-passcode', { passcode: token }],
    ['expired-bearer', { Authorization: `Bearer ${token}` }],
  ]) {
    await withPeer(label, { connectHeaders }, async (peer) => {
      expectRefusal(await peer.refusedConnect(), 'access refused: the token has expired');
    });
  }
}

async function foreignOrigin() {
  const foreign = 'https://evil.example';
  const refused = await handshake({ origin: foreign });
  check(refused.status === 403, `Origin ${foreign}: handshake ended with HTTP ${refused.status}, expected 403`);
  check(/origin not allowed/.test(refused.body), `Origin ${foreign}: 403 body ${JSON.stringify(refused.body)}`);

  // stompjs behind that origin never gets a session.
  await withPeer('foreign-origin', {
    connectHeaders: { login: env('STOMP_LOGIN'), passcode: env('STOMP_PASSCODE') },
    wsOptions: { origin: foreign },
  }, async (peer) => {
    peer.expectError = true;
    peer.client.activate();
    await withTimeout(peer.closed.promise, 'the refused socket closing');
    check(!peer.connected, 'stompjs got CONNECTED through a refused handshake');
    check(/403/.test(peer.socketError ?? ''), `stompjs saw ${JSON.stringify(peer.socketError)}, expected a 403`);
  });

  const own = new URL(url).origin.replace(/^wss:/, 'https:');
  const allowed = [['no Origin', {}], [own, { origin: own }]];
  if (process.env.STOMP_ALLOWED_ORIGIN) allowed.push([process.env.STOMP_ALLOWED_ORIGIN, { origin: process.env.STOMP_ALLOWED_ORIGIN }]);
  for (const [what, options] of allowed) {
    const ok = await handshake(options);
    check(ok.status === 101, `${what}: handshake ended with HTTP ${ok.status} ${JSON.stringify(ok.body)}, expected 101`);
    check(ok.protocol === 'v12.stomp', `${what}: subprotocol ${JSON.stringify(ok.protocol)}`);
  }
  // And a full session from the server's own origin.
  const login = env('STOMP_LOGIN');
  await withPeer('same-origin', {
    connectHeaders: { login, passcode: env('STOMP_PASSCODE') },
    wsOptions: { origin: own },
  }, async (peer) => {
    await peer.connect();
    await roundTrip(peer, login, 'origin');
  });
}

async function sendOutsideRules() {
  const login = env('STOMP_LOGIN');
  await withPeer('outside', { connectHeaders: { login, passcode: env('STOMP_PASSCODE') } }, async (peer) => {
    await peer.connect();
    const destination = `/topic/forbidden.${RUN}`;
    peer.expectError = true;
    peer.client.publish({ destination, body: 'not allowed', headers: { receipt: 'denied' } });
    const frame = await withTimeout(peer.error.promise, `ERROR refusing the SEND to ${destination}`);
    const expected = `access refused: SEND to '${destination}' is not allowed for user '${login}'`;
    check(frame.headers.message === expected, `ERROR message ${JSON.stringify(frame.headers.message)}, expected ${JSON.stringify(expected)}`);
    check(frame.headers['receipt-id'] === 'denied', `ERROR receipt-id ${JSON.stringify(frame.headers['receipt-id'])}`);
    await withTimeout(peer.closed.promise, 'the socket closing after the ERROR');
  });
}

async function untrustedCa() {
  // An explicit `ca` replaces the trusted set, NODE_EXTRA_CA_CERTS included:
  // the public roots do not vouch for the test CA.
  const outcome = await handshake({ ca: [...rootCertificates] }).then(
    (o) => ({ status: o.status }),
    (e) => ({ error: e }),
  );
  check(outcome.error, `a client not trusting the CA completed the handshake (HTTP ${outcome.status})`);
  const code = outcome.error.code ?? '';
  check(
    /CERT|UNABLE_TO_VERIFY|ISSUER/.test(code),
    `expected a certificate verification error, got ${code} ${outcome.error.message}`,
  );
}

const SCENARIOS = [
  ['login-over-wss', loginOverWss],
  ['wrong-passcode-refused', wrongPasscode],
  ['jwt-as-passcode', jwtAsPasscode],
  ['jwt-as-bearer-header', jwtAsBearerHeader],
  ['expired-jwt-refused', jwtExpired],
  ['foreign-origin-403', foreignOrigin],
  ['send-outside-rules-refused', sendOutsideRules],
  ['untrusted-ca-refused', untrustedCa],
];

let failed = 0;
for (const [name, fn] of SCENARIOS) {
  currentScenario = name;
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    failed++;
    const reason = e instanceof ScenarioError ? e.message : String(e?.message ?? e);
    console.log(`FAIL ${name}: ${reason.replace(/\s+/g, ' ').trim()}`);
  }
}
clearTimeout(watchdog);
process.exit(failed ? 1 : 0);
