// A small STOMP 1.2 client over WebSocket, written for stompbox's pages (no
// third-party code).
//
//   const client = new StompClient("ws://host/ws", { headers: { login: "alice" }, onState });
//   const stop = client.subscribe("/topic/chat/1", (frame) => show(frame.body));
//   client.send("/app/chat/1", JSON.stringify({ text: "hi" }), { "content-type": "application/json" });
//
// It reconnects by itself with growing, jittered delays and subscribes again
// to everything it was subscribed to; it keeps heart-beats both ways and
// treats a silent server as a lost connection. A CONNECT the server refuses
// (an ERROR before CONNECTED, such as a bad login) is final: retrying would
// only be refused again.
//
// The CONNECT headers (which may hold a passcode) stay in this object's
// memory for the reconnects, and are dropped once it is refused or closed:
// such a client never connects again.
//
// onState(state, detail) is told "connecting", "connected", "reconnecting"
// (detail: seconds until the next try), "rejected" (detail: the server's
// message) or "closed".

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const HEARTBEAT_MS = 10000;
const MAX_PENDING = 100;

export class StompClient {
  constructor(url, { headers = {}, onState = () => {}, onError = () => {} } = {}) {
    this.url = url;
    this.connectHeaders = headers;
    this.onState = onState;
    this.onError = onError;
    this.subscriptions = new Map(); // id -> { destination, callback, headers }
    this.nextId = 0;
    this.pending = []; // SENDs made while disconnected, sent on connect
    this.delay = MIN_DELAY_MS;
    this.stopped = false;
    this.connected = false;
    this.timers = [];
    this.open();
  }

  open() {
    this.onState("connecting");
    this.connected = false;
    this.buffer = "";
    this.decoder = new TextDecoder();
    const ws = new WebSocket(this.url, ["v12.stomp"]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.raw("CONNECT", {
        "accept-version": "1.2",
        host: location.hostname,
        "heart-beat": `${HEARTBEAT_MS},${HEARTBEAT_MS}`,
        ...this.connectHeaders,
      });
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws || this.stopped) return;
      this.lastHeard = Date.now();
      this.receive(event.data);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.stopTimers();
      this.connected = false;
      if (this.stopped) return;
      // Jittered, so a restarted server is not hit by every page at once.
      const wait = Math.round(this.delay / 2 + Math.random() * this.delay / 2);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
      this.onState("reconnecting", Math.max(1, Math.round(wait / 1000)));
      this.retry = setTimeout(() => this.open(), wait);
    };
  }

  receive(data) {
    // Text and binary messages alike, decoded in arrival order.
    this.buffer += typeof data === "string" ? data : this.decoder.decode(data, { stream: true });
    let end;
    while ((end = this.buffer.indexOf("\0")) >= 0) {
      const frame = parse(this.buffer.slice(0, end).replace(/^(\r?\n)+/, ""));
      this.buffer = this.buffer.slice(end + 1);
      if (frame) this.dispatch(frame);
    }
    this.buffer = this.buffer.replace(/^(\r?\n)+/, "");
  }

  dispatch(frame) {
    switch (frame.command) {
      case "CONNECTED":
        this.connected = true;
        this.delay = MIN_DELAY_MS;
        this.startHeartbeats(frame.headers["heart-beat"]);
        this.onState("connected", frame.headers.session);
        for (const [id, sub] of this.subscriptions) this.raw("SUBSCRIBE", { id, destination: sub.destination, ...sub.headers });
        for (const [headers, body] of this.pending.splice(0)) this.raw("SEND", headers, body);
        break;
      case "MESSAGE": {
        const sub = this.subscriptions.get(frame.headers.subscription);
        if (sub) sub.callback(frame);
        break;
      }
      case "ERROR": {
        const message = frame.headers.message || frame.body || "error";
        if (!this.connected) {
          // Refused at CONNECT: stop here rather than retry forever.
          this.stopped = true;
          this.connectHeaders = {};
          this.onState("rejected", message);
        }
        this.onError(message);
        break; // the server closes the connection after an ERROR
      }
    }
  }

  // heart-beat "sx,sy" from CONNECTED: the server sends every sx ms and
  // wants ours every sy ms; each side uses the larger of both wishes.
  startHeartbeats(header = "0,0") {
    const [sx, sy] = header.split(",").map(Number);
    if (sy > 0) {
      const every = Math.max(HEARTBEAT_MS, sy);
      this.timers.push(setInterval(() => this.ws.readyState === WebSocket.OPEN && this.ws.send("\n"), every));
    }
    if (sx > 0) {
      const every = Math.max(HEARTBEAT_MS, sx);
      this.lastHeard = Date.now();
      this.timers.push(setInterval(() => {
        // Nothing for 2.5 intervals: the connection is dead even if the
        // socket has not noticed (a sleeping laptop, a dropped network).
        if (Date.now() - this.lastHeard > every * 2.5) this.ws.close();
      }, every));
    }
  }

  stopTimers() {
    for (const timer of this.timers.splice(0)) clearInterval(timer);
  }

  raw(command, headers = {}, body = "") {
    let text = command + "\n";
    for (const [k, v] of Object.entries(headers)) text += `${escape(k, command)}:${escape(String(v), command)}\n`;
    this.ws.send(text + "\n" + body + "\0");
  }

  // Returns a function that unsubscribes.
  subscribe(destination, callback, headers = {}) {
    const id = `sub-${this.nextId++}`;
    this.subscriptions.set(id, { destination, callback, headers });
    if (this.connected) this.raw("SUBSCRIBE", { id, destination, ...headers });
    return () => {
      if (this.subscriptions.delete(id) && this.connected) this.raw("UNSUBSCRIBE", { id });
    };
  }

  // Sent now, or on the next connect (at most MAX_PENDING wait; older ones
  // are dropped). Returns false when it had to drop one.
  send(destination, body, headers = {}) {
    const all = {
      destination,
      "content-type": "text/plain;charset=utf-8",
      ...headers,
      "content-length": new TextEncoder().encode(body).length,
    };
    if (this.connected) {
      this.raw("SEND", all, body);
      return true;
    }
    this.pending.push([all, body]);
    return this.pending.length <= MAX_PENDING || (this.pending.shift(), false);
  }

  sendJson(destination, value) {
    return this.send(destination, JSON.stringify(value), { "content-type": "application/json" });
  }

  close() {
    this.stopped = true;
    this.connectHeaders = {};
    clearTimeout(this.retry);
    this.stopTimers();
    if (this.connected) this.raw("DISCONNECT");
    this.connected = false;
    this.ws.close();
    this.onState("closed");
  }
}

// CONNECT and CONNECTED headers are not escaped (STOMP 1.2).
function escape(text, command) {
  if (command === "CONNECT") return text;
  return text.replace(/\\/g, "\\\\").replace(/\r/g, "\\r").replace(/\n/g, "\\n").replace(/:/g, "\\c");
}

function unescape(text) {
  return text.replace(/\\(.)/g, (_, c) => ({ n: "\n", r: "\r", c: ":", "\\": "\\" })[c] ?? c);
}

function parse(text) {
  const split = text.search(/\r?\n\r?\n/);
  if (split < 0) return null;
  const [command, ...lines] = text.slice(0, split).split(/\r?\n/);
  const headers = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const name = unescape(line.slice(0, colon));
    // The first of repeated headers wins (STOMP 1.2).
    if (!(name in headers)) headers[name] = command === "CONNECTED" ? line.slice(colon + 1) : unescape(line.slice(colon + 1));
  }
  const body = text.slice(split).replace(/^\r?\n\r?\n/, "");
  return { command, headers, body };
}
