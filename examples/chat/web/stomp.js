// A small STOMP 1.2 client over WebSocket for the demo pages, written for
// stompbox (no third-party code). It reconnects with backoff, keeps
// heart-beats, and resubscribes after a reconnect.
export class StompClient {
  constructor(url, { onState = () => {}, onError = () => {}, headers = {} } = {}) {
    this.url = url;
    this.onState = onState;
    this.onError = onError;
    this.connectHeaders = headers;
    this.subscriptions = new Map(); // id -> { destination, callback, headers }
    this.nextId = 0;
    this.nextReceipt = 0;
    this.receipts = new Map();
    this.pending = [];
    this.backoff = 500;
    this.closedByUser = false;
    this.buffer = "";
    this.open();
  }

  open() {
    this.onState("connecting");
    const ws = new WebSocket(this.url, ["v12.stomp"]);
    this.ws = ws;
    ws.onopen = () => {
      this.raw("CONNECT", { "accept-version": "1.2", host: location.hostname, "heart-beat": "10000,10000", ...this.connectHeaders });
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = () => {
      clearInterval(this.heartbeat);
      this.connected = false;
      if (this.closedByUser) { this.onState("closed"); return; }
      this.onState(`reconnecting in ${Math.round(this.backoff / 1000)} s`);
      setTimeout(() => this.open(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 15000);
    };
  }

  async receive(data) {
    // Binary messages carry bodies that are not UTF-8; the demo shows text.
    this.buffer += typeof data === "string" ? data : await data.text();
    let end;
    while ((end = this.buffer.indexOf("\0")) >= 0) {
      const text = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 1);
      const frame = parse(text.replace(/^(\r?\n)+/, ""));
      if (frame) this.dispatch(frame);
    }
    this.buffer = this.buffer.replace(/^(\r?\n)+/, "");
  }

  dispatch(frame) {
    switch (frame.command) {
      case "CONNECTED": {
        this.connected = true;
        this.backoff = 500;
        this.onState("connected");
        const [sx] = (frame.headers["heart-beat"] || "0,0").split(",").map(Number);
        const every = Math.max(sx, 10000);
        if (sx > 0) this.heartbeat = setInterval(() => this.ws.send("\n"), every);
        for (const [id, sub] of this.subscriptions) this.raw("SUBSCRIBE", { id, destination: sub.destination, ...sub.headers });
        for (const [command, headers, body] of this.pending.splice(0)) this.raw(command, headers, body);
        break;
      }
      case "MESSAGE": {
        const sub = this.subscriptions.get(frame.headers.subscription);
        if (sub) sub.callback(frame);
        break;
      }
      case "RECEIPT": {
        const done = this.receipts.get(frame.headers["receipt-id"]);
        this.receipts.delete(frame.headers["receipt-id"]);
        if (done) done();
        break;
      }
      case "ERROR":
        this.onError(frame.headers.message || frame.body);
        break;
    }
  }

  raw(command, headers = {}, body = "") {
    let text = command + "\n";
    for (const [k, v] of Object.entries(headers)) text += `${escape(k, command)}:${escape(String(v), command)}\n`;
    this.ws.send(text + "\n" + body + "\0");
  }

  subscribe(destination, callback, headers = {}) {
    const id = `sub-${this.nextId++}`;
    this.subscriptions.set(id, { destination, callback, headers });
    if (this.connected) this.raw("SUBSCRIBE", { id, destination, ...headers });
    return () => {
      this.subscriptions.delete(id);
      if (this.connected) this.raw("UNSUBSCRIBE", { id });
    };
  }

  send(destination, body, headers = {}) {
    const bytes = new TextEncoder().encode(body).length;
    const all = { destination, "content-type": "text/plain", "content-length": bytes, ...headers };
    if (this.connected) this.raw("SEND", all, body);
    else this.pending.push(["SEND", all, body]);
  }

  close() {
    this.closedByUser = true;
    if (this.connected) this.raw("DISCONNECT");
    this.ws.close();
  }
}

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
    if (!(name in headers)) headers[name] = command === "CONNECTED" ? line.slice(colon + 1) : unescape(line.slice(colon + 1));
  }
  const body = text.slice(split).replace(/^\r?\n\r?\n/, "");
  return { command, headers, body };
}
