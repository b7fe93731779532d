// The chat page in a real browser: Debian's Chromium, driven by
// playwright-core (which never downloads a browser of its own).
//
//   node tests/clients/node/browser-chat.mjs http://127.0.0.1:8080/ target/test-output/browser
//
// Three people: alice and bob in room 1, carol in room 2. Alice and bob each
// say something and both see both messages; carol sees none of it, as her
// first message is the only one in her room. Alice's connection is then
// dropped under her and the page reconnects by itself. Bob reloads the page
// and gets the room's history. A message the server refuses shows as an
// error. Finally a screenshot of alice's page goes to <output-dir>/chat.png.
//
// It expects a freshly started server (room history is kept in memory), as
// crates/stompbox-cli/tests/browser.rs starts one.
//
// Every wait is on a condition in a page, each step has a time limit, and
// the whole run is bounded: it prints one "ok" line per check and exits 0,
// or exits 1 with the reason.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join as joinPath } from "node:path";

const [base, outDir] = process.argv.slice(2);
if (!base || !outDir) {
  console.error("usage: node browser-chat.mjs <http-url> <output-dir>");
  process.exit(2);
}
const CHROMIUM = "/usr/bin/chromium";
const TOTAL_MS = 60_000;
const STEP_MS = 15_000;

let browser = null;
let step = "starting";

async function fail(message) {
  console.error(`browser-chat: FAILED while ${step}: ${message}`);
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

// The texts of the chat messages a page shows, in order.
async function messages(person) {
  return person.page.$$eval("#messages li.message .text", (els) => els.map((el) => el.textContent));
}

async function waitForMessage(person, text) {
  await person.page.waitForFunction(
    (text) => [...document.querySelectorAll("#messages li.message .text")].some((el) => el.textContent === text),
    text,
  );
}

async function waitForNotice(person, text) {
  await person.page.waitForFunction(
    (text) => [...document.querySelectorAll("#messages li.notice")].some((el) => el.textContent === text),
    text,
  );
}

// Waits until the page is connected and has the room's history: its
// subscription to the room is then in place.
async function inRoom(person) {
  await person.page.waitForSelector('#status[data-state="connected"]');
  await person.page.waitForSelector('#messages[data-history="loaded"]');
}

async function join(name, room, { routeSockets = false } = {}) {
  // A context each: separate cookies and storage, like separate people.
  const context = await browser.newContext({ viewport: { width: 820, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const person = { name, page, problems: [], sockets: [] };
  page.on("pageerror", (e) => person.problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") person.problems.push(`console error: ${m.text()}`);
  });
  if (routeSockets) {
    // Pass the WebSocket through to the server, keeping a handle on the
    // page's side so the test can drop the connection under the page.
    await context.routeWebSocket(/\/ws$/, (ws) => {
      ws.connectToServer();
      person.sockets.push(ws);
    });
  }
  await page.goto(base);
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join-button");
  await inRoom(person);
  return person;
}

async function say(person, text) {
  await person.page.fill("#text", text);
  await person.page.press("#text", "Enter");
}

async function main() {
  mkdirSync(outDir, { recursive: true });
  step = "launching Chromium";
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives the browser a fresh temporary profile (user data dir)
    // and removes it on close.
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

  step = "joining";
  const alice = await join("alice", "1", { routeSockets: true });
  const bob = await join("bob", "1");
  const carol = await join("carol", "2");
  await waitForNotice(alice, "bob joined");
  ok("alice and bob are in room 1, carol in room 2; alice saw bob join");

  step = "talking in room 1";
  await say(alice, "Hello from alice");
  await say(bob, "Hi alice, bob here");
  for (const person of [alice, bob]) {
    await waitForMessage(person, "Hello from alice");
    await waitForMessage(person, "Hi alice, bob here");
  }
  ok("alice and bob both see both messages");

  step = "talking in room 2";
  await say(carol, "Room 2 only");
  await waitForMessage(carol, "Room 2 only");
  const seenByCarol = await messages(carol);
  if (seenByCarol.length !== 1) throw new Error(`carol sees ${JSON.stringify(seenByCarol)}, expected only her own message`);
  if ((await messages(alice)).includes("Room 2 only")) throw new Error("alice saw room 2's message");
  ok("carol saw nothing from room 1; room 1 nothing from room 2");

  step = "losing alice's connection";
  const socket = alice.sockets.at(-1);
  if (!socket) throw new Error("alice's WebSocket was not routed");
  // 1012: "service restart", as a server going down for an update sends;
  // closing the page's side also closes the server's.
  await socket.close({ code: 1012, reason: "test: connection lost" });
  await alice.page.waitForSelector('#status[data-state="reconnecting"]');
  await inRoom(alice);
  if (alice.sockets.length < 2) throw new Error("the page did not open a new WebSocket");
  await say(bob, "Welcome back, alice");
  await waitForMessage(alice, "Welcome back, alice");
  ok("alice's page reconnected by itself and is back in room 1");

  step = "reloading bob's page";
  await bob.page.reload();
  await inRoom(bob);
  const history = await messages(bob);
  for (const text of ["Hello from alice", "Hi alice, bob here", "Welcome back, alice"]) {
    if (!history.includes(text)) throw new Error(`bob's history after a reload lacks "${text}": ${JSON.stringify(history)}`);
  }
  if (history.length !== new Set(history).size) throw new Error(`duplicates in bob's history: ${JSON.stringify(history)}`);
  ok(`bob reloaded and got the room's history (${history.length} messages)`);

  step = "sending a message the server refuses";
  // maxlength stops typing past 500 characters; a script can still do it,
  // and then the server's answer at /user/queue/errors is shown.
  await alice.page.$eval("#text", (el) => { el.value = "x".repeat(501); });
  await alice.page.press("#text", "Enter");
  await alice.page.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.error")].some((el) => el.textContent.includes("at most 500 characters")));
  ok("an over-long message shows the server's error");

  step = "taking the screenshot";
  await say(alice, "See you all tomorrow!");
  await waitForMessage(alice, "See you all tomorrow!");
  const shot = joinPath(outDir, "chat.png");
  await alice.page.screenshot({ path: shot, fullPage: true });
  ok(`screenshot at ${shot}`);

  const problems = [alice, bob, carol].flatMap((p) => p.problems.map((m) => `${p.name}: ${m}`));
  if (problems.length > 0) throw new Error(`errors in the pages:\n${problems.join("\n")}`);
  ok("no script errors in the pages");

  await browser.close();
  clearTimeout(watchdog);
  console.log("browser-chat: all checks passed");
}

main().catch((e) => fail(e?.stack ?? String(e)));
