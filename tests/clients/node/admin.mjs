// The admin page in a real browser: Debian's Chromium, driven by
// playwright-core, against a server started with an admin token.
//
//   node tests/clients/node/admin.mjs http://127.0.0.1:8080/ target/test-output/browser TOKEN
//
// The API refuses requests without the token or with a wrong one (401), and
// so does the page's login form. Logged in, the page follows the server
// live: a STOMP client (a WebSocket opened here, speaking STOMP itself)
// shows up in the sessions table when it connects and goes when it leaves.
// Disconnect on a session's row closes exactly that client (it gets an
// ERROR, then the socket closes). Messages sent to a queue nobody consumes
// show as its depth; Purge empties it. No page reload happens throughout,
// and the page logs no error (a Content-Security-Policy violation would be
// one). Screenshots: <output-dir>/admin-login.png, admin.png (live tables)
// and admin-purged.png.
//
// Every wait is on a condition, each step has a time limit, and the whole
// run is bounded: it prints one "ok" line per check and exits 0, or exits 1
// with the reason.

import { chromium } from "playwright-core";
import WebSocket from "ws";
import { mkdirSync } from "node:fs";
import { join as joinPath } from "node:path";

const USAGE = "usage: node admin.mjs <http-url> <output-dir> <admin-token>";
const [base, outDir, token] = process.argv.slice(2);
if (!base || !outDir || !token) {
  console.error(USAGE);
  process.exit(2);
}
const NAME = "admin";
const CHROMIUM = "/usr/bin/chromium";
const TOTAL_MS = 60_000;
const STEP_MS = 15_000;

let browser = null;
let step = "starting";
const sockets = [];

async function fail(message) {
  console.error(`${NAME}: FAILED while ${step}: ${message}`);
  for (const socket of sockets) socket.terminate();
  try {
    await browser?.close();
  } catch {
    // Already gone; exiting anyway.
  }
  process.exit(1);
}

const watchdog = setTimeout(() => fail(`not done within ${TOTAL_MS / 1000} s`), TOTAL_MS);

function ok(what) {
  console.log(`ok ${what}`);
}

function check(condition, what) {
  if (!condition) throw new Error(what);
}

function withTimeout(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${STEP_MS / 1000} s`)), STEP_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------- STOMP

// A STOMP 1.2 client on a WebSocket of its own, reading frames as they
// come: enough to connect, send with receipts, and see how it ends.
class Stomp {
  constructor(name) {
    this.name = name;
    this.frames = [];
    this.waiters = [];
    this.closed = false;
  }

  static async connect(name) {
    const client = new Stomp(name);
    const url = new URL("ws", base).href.replace(/^http/, "ws");
    const socket = new WebSocket(url, ["v12.stomp"]);
    sockets.push(socket);
    client.socket = socket;
    socket.on("message", (data) => {
      for (const raw of data.toString().split("\0")) {
        const text = raw.replace(/^\n+/, "");
        if (text === "") continue;
        const [head, ...body] = text.split("\n\n");
        const [command, ...lines] = head.split("\n");
        const headers = {};
        for (const line of lines) {
          const colon = line.indexOf(":");
          if (colon > 0 && !(line.slice(0, colon) in headers)) headers[line.slice(0, colon)] = line.slice(colon + 1);
        }
        client.frames.push({ command, headers, body: body.join("\n\n") });
      }
      client.wake();
    });
    socket.on("close", () => {
      client.closed = true;
      client.wake();
    });
    await withTimeout(new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    }), `${name}: opening the WebSocket`);
    client.send("CONNECT", { "accept-version": "1.2", host: "localhost", "heart-beat": "0,0" });
    const connected = await client.next();
    check(connected.command === "CONNECTED", `${name}: expected CONNECTED, got ${connected.command}`);
    client.session = connected.headers.session;
    check(client.session, `${name}: CONNECTED without a session header`);
    return client;
  }

  wake() {
    for (const wake of this.waiters.splice(0)) wake();
  }

  send(command, headers, body = "") {
    const lines = Object.entries(headers).map(([k, v]) => `${k}:${v}`);
    this.socket.send(`${command}\n${lines.join("\n")}\n\n${body}\0`);
  }

  // The next frame; throws if the connection closes first.
  async next() {
    return withTimeout((async () => {
      while (this.frames.length === 0) {
        check(!this.closed, `${this.name}: the connection closed`);
        await new Promise((resolve) => this.waiters.push(resolve));
      }
      return this.frames.shift();
    })(), `${this.name}: waiting for a frame`);
  }

  async sendWithReceipt(destination, body) {
    const receipt = `r-${Math.random().toString(36).slice(2)}`;
    this.send("SEND", { destination, receipt, "content-type": "text/plain" }, body);
    const answer = await this.next();
    check(answer.command === "RECEIPT" && answer.headers["receipt-id"] === receipt,
      `${this.name}: expected the RECEIPT of a SEND, got ${answer.command}`);
  }

  // Resolves once the server has closed the connection.
  async closedByServer() {
    return withTimeout((async () => {
      while (!this.closed) await new Promise((resolve) => this.waiters.push(resolve));
    })(), `${this.name}: waiting for the server to close the connection`);
  }

  async disconnect() {
    this.send("DISCONNECT", { receipt: "bye" });
    const answer = await this.next();
    check(answer.command === "RECEIPT", `${this.name}: expected the DISCONNECT receipt`);
    this.socket.close();
    await this.closedByServer();
  }
}

// ---------------------------------------------------------------- page

async function api(path, authorization) {
  const headers = authorization ? { Authorization: authorization } : {};
  const response = await fetch(new URL(path, base), { headers });
  return { status: response.status, body: await response.text() };
}

const sessionRow = (id) => `#sessions tbody tr[data-key="${id}"]`;

async function destinationDepth(page, name) {
  return page.$$eval("#destinations tbody tr", (rows, name) => {
    const row = rows.find((tr) => tr.cells[0].textContent === name);
    return row ? row.cells[3].textContent : null;
  }, name);
}

async function screenshot(page, file) {
  const shot = joinPath(outDir, file);
  await page.screenshot({ path: shot, fullPage: true });
  ok(`screenshot at ${shot}`);
}

async function main() {
  mkdirSync(outDir, { recursive: true });

  step = "asking the API without the token";
  for (const [what, authorization] of [["no credentials", null], ["a wrong token", "Bearer not-the-admin-token"]]) {
    for (const path of ["/admin/api/overview", "/admin/api/sessions", "/admin/api/events"]) {
      const answer = await withTimeout(api(path, authorization), path);
      check(answer.status === 401, `${path} with ${what}: expected 401, got ${answer.status} ${answer.body}`);
    }
  }
  ok("the admin API refuses requests without the token or with a wrong one (401)");

  step = "launching Chromium";
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
    ],
    timeout: STEP_MS,
  });
  ok(`Chromium ${browser.version()} started`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // A failed request is logged by Chromium as a console error too; those
  // are checked by their responses instead, where the expected ones (the
  // wrong token's 401, the favicon the server does not have) are known.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  let wrongLogin = false;
  page.on("response", (r) => {
    const path = new URL(r.url()).pathname;
    const expected = (wrongLogin && r.status() === 401 && path === "/admin/api/overview")
      || (r.status() === 404 && path === "/favicon.ico");
    if (r.status() >= 400 && !expected) problems.push(`HTTP ${r.status()} for ${path}`);
  });
  let loads = 0;
  page.on("load", () => {
    loads += 1;
  });

  step = "opening the page";
  await page.goto(new URL("/admin", base).href);
  await page.waitForSelector("#login-form");
  check(await page.isHidden("#dashboard"), "the dashboard shows before logging in");

  step = "logging in with a wrong token";
  wrongLogin = true;
  await page.fill("#token", "not-the-admin-token");
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction(() => /wrong admin credentials/.test(document.getElementById("login-error").textContent));
  check(await page.isHidden("#dashboard"), "a wrong token showed the dashboard");
  await screenshot(page, "admin-login.png");
  ok("the login form refuses a wrong token and says so");

  step = "logging in with the token";
  wrongLogin = false;
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#dashboard", { state: "visible" });
  await page.waitForSelector("#status.live");
  ok("logged in with the token: the event stream is live");

  step = "connecting STOMP clients";
  const watcher = await Stomp.connect("watcher");
  await page.waitForSelector(sessionRow(watcher.session));
  const shown = await page.$eval(sessionRow(watcher.session), (tr) => [...tr.cells].map((td) => td.textContent));
  check(shown[3] === "websocket" && shown[4] === "1.2", `the watcher's row: ${JSON.stringify(shown)}`);
  ok(`a new STOMP session (${watcher.session}) appeared live in the sessions table`);

  const visitor = await Stomp.connect("visitor");
  await page.waitForSelector(sessionRow(visitor.session));
  await visitor.disconnect();
  await page.waitForSelector(sessionRow(visitor.session), { state: "detached" });
  ok("a session that left disappeared from the table");

  step = "filling a queue";
  const queue = `/queue/admin-${Date.now().toString(36)}`;
  const producer = await Stomp.connect("producer");
  for (let n = 0; n < 3; n += 1) await producer.sendWithReceipt(queue, `job ${n}`);
  await page.waitForFunction(
    (name) => [...document.querySelectorAll("#destinations tbody tr")]
      .some((tr) => tr.cells[0].textContent === name && tr.cells[3].textContent === "3"),
    queue,
  );
  ok(`the queue ${queue} shows a depth of 3`);
  await page.waitForFunction(() => document.getElementById("f-rate-in").textContent !== "–");
  await screenshot(page, "admin.png");

  step = "disconnecting the watcher from the page";
  const button = `${sessionRow(watcher.session)} button`;
  await page.click(button);
  await page.waitForSelector(`${button}.armed`);
  await page.click(button);
  const error = await watcher.next();
  check(error.command === "ERROR" && /administrator/.test(error.headers.message ?? ""),
    `the watcher got ${error.command} ${JSON.stringify(error.headers)}`);
  await watcher.closedByServer();
  await page.waitForSelector(sessionRow(watcher.session), { state: "detached" });
  check(!producer.closed, "disconnecting one session closed another");
  await producer.sendWithReceipt(`/topic/admin-still-here`, "x");
  ok("Disconnect closed exactly that client (ERROR, then the socket closed); the others go on");

  step = "purging the queue from the page";
  const purgeButton = await page.evaluateHandle((name) => [...document.querySelectorAll("#destinations tbody tr")]
    .find((tr) => tr.cells[0].textContent === name)?.querySelector("button"), queue);
  check(await purgeButton.evaluate((b) => b !== undefined && b !== null && b.textContent === "Purge"),
    "no Purge button on the queue's row");
  await purgeButton.click();
  await purgeButton.click();
  await page.waitForFunction(() => /3 messages removed/.test(document.getElementById("notice").textContent));
  // An emptied queue nobody consumes is gone from the broker, so its row
  // goes; while listed its depth is 0.
  await page.waitForFunction(
    (name) => [...document.querySelectorAll("#destinations tbody tr")]
      .every((tr) => tr.cells[0].textContent !== name || tr.cells[3].textContent === "0"),
    queue,
  );
  const left = JSON.parse((await api(`/admin/api/destinations`, `Bearer ${token}`)).body).destinations
    .find((d) => d.name === queue);
  check(left === undefined || left.ready === 0, `the queue still holds ${left?.ready} messages`);
  ok(`Purge emptied ${queue} (depth ${await destinationDepth(page, queue) ?? "0, row gone"})`);
  await screenshot(page, "admin-purged.png");

  check(loads === 1, `the page loaded ${loads} times: live updates must not reload it`);
  check(problems.length === 0, problems.join("\n"));
  ok("no page reloads and no page errors");

  await producer.disconnect();
  await browser.close();
  clearTimeout(watchdog);
  console.log(`${NAME}: all checks passed`);
}

main().catch((e) => fail(e?.stack ?? String(e)));
