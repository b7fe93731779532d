#!/usr/bin/env node
// Drives a STOMP-over-WebSocket server with the real @stomp/stompjs client.
//
//   node scenarios.mjs <ws-url> [login] [passcode]
//   (login/passcode may also come from STOMP_LOGIN / STOMP_PASSCODE;
//    STOMP_DEBUG=1 dumps stompjs' frame log to stderr)
//
// Prints `ok <name>` or `FAIL <name>: <reason>` per scenario and exits 0 only
// if every scenario passed. The same script is run against RabbitMQ (the
// semantics reference) and against stompbox, so it only asserts behaviour the
// STOMP 1.2 spec and RabbitMQ agree on.

import { randomBytes } from 'node:crypto';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import { Inbox, ScenarioError, WAIT_MS, check, withTimeout } from './harness.mjs';

const SCRIPT_MS = 55_000; // hard ceiling so a wedged server can never hang CI

const [url, argLogin, argPasscode] = process.argv.slice(2);
if (!url) {
  console.error('usage: node scenarios.mjs <ws-url> [login] [passcode]');
  process.exit(64);
}
const login = argLogin ?? process.env.STOMP_LOGIN;
const passcode = argPasscode ?? process.env.STOMP_PASSCODE;
const debug = process.env.STOMP_DEBUG ? (m) => console.error(`[stompjs] ${m}`) : () => {};

// Unique per run: RabbitMQ keeps /queue/* queues (durable) between runs, so a
// fixed name could hand us leftovers from an earlier, failed run.
const RUN = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
const dest = (kind, name) => `/${kind}/stompbox-${name}-${RUN}`;

let currentScenario = '(startup)';
const watchdog = setTimeout(() => {
  console.log(`FAIL ${currentScenario}: whole script exceeded ${SCRIPT_MS} ms`);
  process.exit(2);
}, SCRIPT_MS);

// One STOMP connection with promise-based helpers.
class Peer {
  constructor(name) {
    this.name = name;
    this.receiptSeq = 0;
    this.expectClose = false;
    // Rejects when the server sends ERROR or drops the socket. Every wait
    // races against it so a scenario fails at once with the server's reason
    // instead of an uninformative timeout.
    this.broken = new Promise((_, reject) => {
      this.breakWith = reject;
    });
    this.broken.catch(() => {}); // observed via races; silence "unhandled"
    this.client = new Client({
      // Node 20 has no global WebSocket; offer every STOMP subprotocol so the
      // server picks its highest (we expect v12.stomp).
      webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
      connectHeaders: {
        ...(login !== undefined && { login }),
        ...(passcode !== undefined && { passcode }),
      },
      // A silent reconnect would hide server faults and re-run SUBSCRIBEs.
      reconnectDelay: 0,
      // Heart-beats are not what these scenarios test; keep the wire quiet.
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
      debug: (m) => debug(`${name}: ${m}`),
      onStompError: (frame) =>
        this.breakWith(new ScenarioError(`${name} got ERROR: ${[frame.headers.message, frame.body].filter(Boolean).join(' ')}`)),
      onWebSocketClose: (evt) => {
        if (!this.expectClose) this.breakWith(new ScenarioError(`${name} socket closed unexpectedly (code ${evt?.code})`));
      },
      onWebSocketError: (evt) =>
        this.breakWith(new ScenarioError(`${name} WebSocket error: ${evt?.message ?? evt?.error?.message ?? 'unknown'}`)),
    });
  }

  connect() {
    const connected = new Promise((resolve) => {
      this.client.onConnect = resolve;
    });
    this.client.activate();
    return withTimeout(Promise.race([connected, this.broken]), `CONNECTED for ${this.name}`);
  }

  // Must be called *before* the frame carrying the receipt header is sent,
  // otherwise a fast server's RECEIPT could arrive before we listen.
  receipt(label) {
    const id = `${this.name}-${label}-${++this.receiptSeq}`;
    const p = new Promise((resolve) => this.client.watchForReceipt(id, resolve));
    return { id, done: withTimeout(Promise.race([p, this.broken]), `RECEIPT ${id}`) };
  }

  async subscribe(destination, headers = {}) {
    const inbox = new Inbox(`${this.name}:${destination}`, this.broken);
    const r = this.receipt('sub');
    // Receipt on SUBSCRIBE: a topic drops messages sent before the
    // subscription is live, so we must know it is active before publishing.
    const sub = this.client.subscribe(destination, (m) => inbox.push(m), { ...headers, receipt: r.id });
    await r.done;
    return { inbox, sub };
  }

  async send(destination, body, headers = {}, { receipt = false } = {}) {
    if (!receipt) {
      this.client.publish({ destination, body, headers });
      return;
    }
    const r = this.receipt('send');
    this.client.publish({ destination, body, headers: { ...headers, receipt: r.id } });
    await r.done;
  }

  // Orderly DISCONNECT; stompjs waits for its RECEIPT before closing the socket.
  async close() {
    this.expectClose = true;
    try {
      await withTimeout(this.client.deactivate(), `${this.name} DISCONNECT receipt/close`);
    } catch (e) {
      await withTimeout(this.client.deactivate({ force: true }), `${this.name} forced close`, 1_000).catch(() => {});
      throw e;
    }
  }

  // For cleanup paths: never throws, never waits long. Polite DISCONNECT
  // first, but with a short bound so cleanup after a failure cannot eat the
  // script's time budget.
  async dispose() {
    if (!this.client.active) return;
    this.expectClose = true;
    try {
      await withTimeout(this.client.deactivate(), `${this.name} close`, 1_000);
    } catch {
      await withTimeout(this.client.deactivate({ force: true }), `${this.name} forced close`, 1_000).catch(() => {});
    }
  }
}

// Runs `body` with freshly connected peers and always tears them down.
async function withPeers(names, body) {
  const peers = names.map((n) => new Peer(n));
  try {
    await Promise.all(peers.map((p) => p.connect()));
    return await body(...peers);
  } finally {
    await Promise.all(peers.map((p) => p.dispose()));
  }
}

// ---------------------------------------------------------------- scenarios

async function pubsub() {
  await withPeers(['pubsub-sub', 'pubsub-pub'], async (sub, pub) => {
    const topic = dest('topic', 'pubsub');
    const { inbox } = await sub.subscribe(topic);
    // Newlines, a colon and non-ASCII in the body check that the server
    // frames by content-length (bytes), not by guessing.
    const bodies = [1, 2, 3].map((i) => `message ${i}\nsecond line: caf\u00e9 \u2713`);
    for (const body of bodies) {
      await pub.send(topic, body, { 'x-test': '1', 'content-type': 'text/plain' });
    }
    for (const [i, expected] of bodies.entries()) {
      const m = await inbox.next(`pubsub message ${i + 1}`);
      check(m.body === expected, `message ${i + 1}: body ${JSON.stringify(m.body)} != ${JSON.stringify(expected)}`);
      check(m.headers['x-test'] === '1', `message ${i + 1}: x-test header is ${JSON.stringify(m.headers['x-test'])}`);
      check(
        (m.headers['content-type'] ?? '').startsWith('text/plain'),
        `message ${i + 1}: content-type is ${JSON.stringify(m.headers['content-type'])}`,
      );
    }
  });
}

async function queueAckRedelivery() {
  const queue = dest('queue', 'ackq');
  const names = ['m1', 'm2', 'm3', 'm4'];

  await withPeers(['ack-A', 'ack-producer'], async (a, producer) => {
    const { inbox } = await a.subscribe(queue, { ack: 'client-individual' });
    for (const body of names) await producer.send(queue, body, {}, { receipt: true });

    const got = [];
    for (const expected of names) {
      const m = await inbox.next(`A receiving ${expected}`);
      check(m.body === expected, `A expected ${expected}, got ${JSON.stringify(m.body)}`);
      got.push(m);
    }
    // client-individual: acking m3 must NOT implicitly ack m2 (unlike `client`).
    // Receipts on the ACKs prove the server processed them before we leave.
    for (const m of [got[0], got[2]]) {
      const r = a.receipt(`ack-${m.body}`);
      m.ack({ receipt: r.id });
      await r.done;
    }
    await a.close();

    await withPeers(['ack-B'], async (b) => {
      const { inbox: inboxB } = await b.subscribe(queue); // ack: auto
      const redelivered = [];
      for (let i = 0; i < 2; i++) redelivered.push(await inboxB.next(`B receiving redelivery #${i + 1}`));
      const bodies = redelivered.map((m) => m.body).sort();
      check(JSON.stringify(bodies) === '["m2","m4"]', `B got ${JSON.stringify(bodies)}, expected m2 and m4`);
      for (const m of redelivered) {
        check(m.headers.redelivered === 'true', `${m.body} lacks redelivered:true (got ${JSON.stringify(m.headers.redelivered)})`);
      }
      // Prove nothing else (e.g. a wrongly re-queued m1/m3) is pending: the
      // next thing B sees must be a marker sent only now.
      await producer.send(queue, 'marker', {}, { receipt: true });
      const m = await inboxB.next('marker after redeliveries');
      check(m.body === 'marker', `B got unexpected extra message ${JSON.stringify(m.body)} before the marker`);
    });
  });
}

async function txCommit() {
  await withPeers(['txc-sub', 'txc-producer'], async (sub, producer) => {
    const queue = dest('queue', 'txcommit');
    const { inbox } = await sub.subscribe(queue);
    const tx = producer.client.begin();
    await producer.send(queue, 'tx-1', { transaction: tx.id });
    await producer.send(queue, 'tx-2', { transaction: tx.id });
    // The marker is outside the tx and sent after it: if the server leaked the
    // transactional SENDs early they would reach the subscriber first.
    await producer.send(queue, 'marker', {}, { receipt: true });
    const first = await inbox.next('marker before commit');
    check(first.body === 'marker', `got ${JSON.stringify(first.body)} before COMMIT (expected the marker)`);

    tx.commit();
    for (const expected of ['tx-1', 'tx-2']) {
      const m = await inbox.next(`${expected} after COMMIT`);
      check(m.body === expected, `after COMMIT expected ${expected}, got ${JSON.stringify(m.body)}`);
    }
  });
}

async function txAbort() {
  await withPeers(['txa-sub', 'txa-producer'], async (sub, producer) => {
    const queue = dest('queue', 'txabort');
    const { inbox } = await sub.subscribe(queue);
    const tx = producer.client.begin();
    await producer.send(queue, 'aborted', { transaction: tx.id });
    tx.abort();
    // Frames on one connection are processed in order, so once the marker
    // arrives the aborted message would already have been delivered if the
    // ABORT had been ignored.
    await producer.send(queue, 'marker', {}, { receipt: true });
    const m = await inbox.next('marker after ABORT');
    check(m.body === 'marker', `got ${JSON.stringify(m.body)} (expected only the marker)`);
  });
}

// The WebSocket closing handshake (RFC 6455 §5.5.1): the server answers a
// client's Close with the same code. Without that answer the client sees
// 1006 (an unclean close), which is what a browser reports as wasClean=false.
async function cleanClose() {
  for (const afterConnect of [false, true]) {
    for (const code of [1000, 4000]) {
      const what = `close ${code} ${afterConnect ? 'after' : 'before'} CONNECT`;
      const ws = new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
      const closed = new Promise((resolve) => ws.on('close', (got) => resolve(got)));
      await withTimeout(new Promise((resolve, reject) => {
        ws.on('open', resolve);
        ws.on('error', reject);
      }), `${what}: open`);
      if (afterConnect) {
        const connected = new Promise((resolve) => ws.once('message', (data) => resolve(String(data))));
        const credentials = [
          login !== undefined ? `login:${login}\n` : '',
          passcode !== undefined ? `passcode:${passcode}\n` : '',
        ].join('');
        // No host header: RabbitMQ takes it as the virtual host's name.
        ws.send(`CONNECT\naccept-version:1.2\nheart-beat:0,0\n${credentials}\n\0`);
        const frame = await withTimeout(connected, `${what}: CONNECTED`);
        check(frame.startsWith('CONNECTED'), `${what}: got ${JSON.stringify(frame.slice(0, 40))}`);
      }
      ws.close(code, 'bye');
      const got = await withTimeout(closed, `${what}: the server's Close`);
      check(got === code, `${what}: the socket closed with ${got}`);
    }
  }
}

const SCENARIOS = [
  ['pubsub', pubsub],
  ['queue-ack-redelivery', queueAckRedelivery],
  ['tx-commit', txCommit],
  ['tx-abort', txAbort],
  ['clean-close', cleanClose],
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
    // Callers parse one line per scenario, and ERROR bodies are multi-line.
    console.log(`FAIL ${name}: ${reason.replace(/\s+/g, ' ').trim()}`);
  }
}
clearTimeout(watchdog);
// Exit explicitly: a half-closed socket from a failed scenario must not keep
// the event loop (and thus the calling test) alive.
process.exit(failed ? 1 : 0);
