// The chat page in a real browser: Debian's Chromium, driven by
// playwright-core (which never downloads a browser of its own).
//
//   node tests/clients/node/browser-chat.mjs http://127.0.0.1:8080/ target/test-output/browser
//   node tests/clients/node/browser-chat.mjs http://127.0.0.1:8080/ target/test-output/browser \
//       accounts alice:PASSWORD bob:PASSWORD
//
// Without accounts (the first form; the server has no authenticator): three
// people with nicknames, alice and bob in room 1, carol in room 2. Alice and
// bob each say something and both see both messages; carol sees none of it,
// as her first message is the only one in her room. The page says nicknames
// are not verified and marks none of them. Alice's connection is then dropped
// under her and the page reconnects by itself. Bob reloads the page and gets
// the room's history. A message the server refuses shows as an error.
// Screenshot: <output-dir>/chat.png.
// Presence and rooms, in the same run: once joined, the join form shrinks to
// one line; "No messages in room 1 yet." shows until the first message;
// alice and bob see each other in the room's presence list; the room list
// shows rooms 1 and 2 with their counts, and carol opening a room "garden"
// moves her there for everyone's list; a link in a message is a link
// (http/https only, rel="noopener noreferrer") and markup stays text. Dave
// joins (screenshot <output-dir>/chat-presence.png) and his browser goes
// away without a word: he leaves alice's list; bob clicks Leave: he leaves
// it too.
//
// With accounts (the server has these password users): the page shows a
// login form. Joining without credentials is tried first (refused unless the
// server lets guests in). Alice logs in with a wrong password: the server's
// refusal is shown next to the form, the password field is cleared, and the
// page does not try again by itself (<output-dir>/chat-login-refused.png).
// Then she logs in, bob too, and they chat: names carry the verified mark.
// A refused message shows as an error. Alice's connection is dropped and
// the page logs in again with the same credentials (kept in memory only:
// nothing in storage or the URL). Screenshot: <output-dir>/chat-login.png.
// Bob logs out: alice sees him leave (the notice and the presence list),
// his page shows the form and stays disconnected.
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

const USAGE = "usage: node browser-chat.mjs <http-url> <output-dir> [accounts <user>:<password> <user>:<password>]";
const [base, outDir, mode = "nicknames", ...accountArgs] = process.argv.slice(2);
if (!base || !outDir || !["nicknames", "accounts"].includes(mode)) {
  console.error(USAGE);
  process.exit(2);
}
// user:password, split at the first colon (a user name has none).
const accounts = accountArgs.map((arg) => {
  const colon = arg.indexOf(":");
  return colon > 0 ? { user: arg.slice(0, colon), password: arg.slice(colon + 1) } : null;
});
if (mode === "accounts" && (accounts.length !== 2 || accounts.includes(null) || accounts.some((a) => !a.password))) {
  console.error(USAGE);
  process.exit(2);
}
const NAME = mode === "accounts" ? "browser-chat (accounts)" : "browser-chat";
const CHROMIUM = "/usr/bin/chromium";
const TOTAL_MS = 60_000;
const STEP_MS = 15_000;
// Longer than any reconnect delay of stomp.js (15 s at most): a page that
// would retry has done so once its clock is moved on by this much.
const RETRY_HORIZON_MS = 20_000;

let browser = null;
let step = "starting";

async function fail(message) {
  console.error(`${NAME}: FAILED while ${step}: ${message}`);
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

// The texts of the chat messages a page shows, in order.
async function messages(person) {
  return person.page.$$eval("#messages li.message .text", (els) => els.map((el) => el.textContent));
}

// Who wrote each message a page shows: { user, verified, marked }, where
// `marked` says whether the name carries the verified mark.
async function authors(person) {
  return person.page.$$eval("#messages li.message", (els) => els.map((el) => ({
    user: el.querySelector(".user")?.textContent,
    verified: el.dataset.verified === "true",
    marked: el.querySelector(".user + .verified") !== null,
  })));
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

async function waitForJoinError(person, part) {
  await person.page.waitForFunction(
    (part) => document.getElementById("join-error").textContent.includes(part),
    part,
  );
}

// The names in a page's presence list, in order.
async function waitForPeople(person, names) {
  await person.page.waitForFunction(
    (names) => JSON.stringify([...document.querySelectorAll("#people li[data-user]")].map((el) => el.dataset.user)) === JSON.stringify(names),
    names,
  );
}

// A page's room list, as [[room, count], …] in order.
async function waitForRooms(person, rooms) {
  await person.page.waitForFunction(
    (rooms) => JSON.stringify([...document.querySelectorAll("#room-list li[data-room]")].map((el) => [el.dataset.room, Number(el.dataset.count)])) === JSON.stringify(rooms),
    rooms,
  );
}

const emptyNotice = (person) => person.page.$$eval("#messages li.empty", (els) => els.map((el) => el.textContent));

// Waits until the page is connected, knows who it is, and has the room's
// history: its subscription to the room is then in place.
async function inRoom(person) {
  await person.page.waitForSelector('#status[data-state="connected"]');
  await person.page.waitForSelector('#messages[data-history="loaded"]');
  await person.page.waitForFunction(() => document.querySelector("#whoami .user") !== null);
}

// The name the page shows as its own, and whether it carries the mark.
async function whoami(person) {
  return person.page.$eval("#whoami", (el) => ({
    shown: !el.hidden,
    text: el.textContent,
    user: el.querySelector(".user")?.textContent,
    marked: el.querySelector(".user + .verified") !== null,
  }));
}

const visible = (person, selector) => person.page.isVisible(selector);

async function open(name, { routeSockets = false, clock = false } = {}) {
  // A context each: separate cookies and storage, like separate people.
  const context = await browser.newContext({ viewport: { width: 820, height: 760 } });
  if (clock) {
    // Time still flows; the test may move it on at once (fastForward) to
    // show that no retry is pending.
    await context.clock.install();
  }
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
  return person;
}

async function join(name, room, options) {
  return enterAs(await open(name, options), room);
}

async function enterAs(person, room) {
  const name = person.name;
  await person.page.fill("#name", name);
  await person.page.fill("#room", room);
  await person.page.click("#join-button");
  await inRoom(person);
  return person;
}

// Fills in the login form and submits it; the caller waits for the outcome.
async function submitLogin(person, user, password, room = "1") {
  await person.page.fill("#user", user);
  await person.page.fill("#password", password);
  await person.page.fill("#room", room);
  await person.page.click("#join-button");
}

async function say(person, text) {
  await person.page.fill("#text", text);
  await person.page.press("#text", "Enter");
}

async function sayTooMuch(person) {
  // maxlength stops typing past 500 characters; a script can still do it,
  // and then the server's answer at /user/queue/errors is shown.
  await person.page.$eval("#text", (el) => { el.value = "x".repeat(501); });
  await person.page.press("#text", "Enter");
  await person.page.waitForFunction(() =>
    [...document.querySelectorAll("#messages li.error")].some((el) => el.textContent.includes("at most 500 characters")));
}

// Drops the page's WebSocket as a server going down for an update would
// (1012, "service restart"), and waits until the page is back in its room.
async function dropAndReconnect(person) {
  const socket = person.sockets.at(-1);
  check(socket, `${person.name}'s WebSocket was not routed`);
  const before = person.sockets.length;
  // Closing the page's side also closes the server's.
  await socket.close({ code: 1012, reason: "test: connection lost" });
  await person.page.waitForSelector('#status[data-state="reconnecting"]');
  await inRoom(person);
  check(person.sockets.length > before, "the page did not open a new WebSocket");
}

async function screenshot(person, file) {
  const shot = joinPath(outDir, file);
  await person.page.screenshot({ path: shot, fullPage: true });
  ok(`screenshot at ${shot}`);
}

function noPageErrors(people) {
  const problems = people.flatMap((p) => p.problems.map((m) => `${p.name}: ${m}`));
  check(problems.length === 0, `errors in the pages:\n${problems.join("\n")}`);
  ok("no script errors in the pages");
}

async function withoutAccounts() {
  step = "checking the nickname mode";
  const alice = await open("alice", { routeSockets: true });
  check(await visible(alice, "#name"), "no nickname field");
  check(!(await visible(alice, "#password")), "a password field, on a server without accounts");
  const note = await alice.page.textContent("#nickname-note");
  check(await visible(alice, "#nickname-note") && note.includes("not verified"), `no visible "not verified" note: ${note}`);

  step = "joining";
  await enterAs(alice, "1");
  const me = await whoami(alice);
  check(me.shown && me.user === "alice" && !me.marked && me.text.includes("not verified"), `alice's page shows her as ${JSON.stringify(me)}`);
  ok("the page asks for a nickname, says nicknames are not verified, and shows alice's as such");
  check(JSON.stringify(await emptyNotice(alice)) === JSON.stringify(["No messages in room 1 yet."]), `alice's empty room shows ${JSON.stringify(await emptyNotice(alice))}`);
  ok("a room without messages says so");
  const welcomes = await alice.page.$$eval("#messages li.notice", (els) => els.filter((el) => el.textContent === "You are in room 1 as alice.").length);
  check(welcomes === 1, `"You are in room 1 as alice." shown ${welcomes} times`);
  for (const hidden of ["#join", "#name", "#room", "#nickname-note"]) {
    check(!(await visible(alice, hidden)), `${hidden} still shows after joining`);
  }
  check(await visible(alice, "#logout") && (await alice.page.textContent("#logout")) === "Leave", "no Leave button after joining");
  const card = await alice.page.$eval("#join-card", (el) => el.getBoundingClientRect().height);
  check(card < 80, `the join card still takes ${card}px after joining`);
  ok(`once joined, the form gives way to one line (${Math.round(card)}px) with a Leave button`);

  const bob = await join("bob", "1");
  const carol = await join("carol", "2");
  await waitForNotice(alice, "bob joined");
  ok("alice and bob are in room 1, carol in room 2; alice saw bob join");

  step = "checking presence and the room list";
  for (const person of [alice, bob]) {
    await waitForPeople(person, ["alice", "bob"]);
    const mine = await person.page.$eval("#people li.me", (el) => el.dataset.user);
    check(mine === person.name, `${person.name}'s page marks ${mine} as itself`);
    await waitForRooms(person, [["1", 2], ["2", 1]]);
  }
  await waitForPeople(carol, ["carol"]);
  ok("alice and bob see each other online in room 1; the room list shows 1 (2) and 2 (1)");

  step = "talking in room 1";
  await say(alice, "Hello from alice");
  await say(bob, "Hi alice, bob here");
  for (const person of [alice, bob]) {
    await waitForMessage(person, "Hello from alice");
    await waitForMessage(person, "Hi alice, bob here");
  }
  ok("alice and bob both see both messages");
  for (const person of [alice, bob]) {
    await person.page.waitForFunction(() => document.querySelector("#messages li.empty") === null);
  }
  ok('"No messages in room 1 yet." went away with the first message');

  const names = await authors(alice);
  check(names.length === 2 && names.every((n) => !n.verified && !n.marked), `names marked as verified: ${JSON.stringify(names)}`);
  check((await alice.page.$$("#messages .verified")).length === 0, "a verified mark in a chat of nicknames");
  ok("no nickname carries the verified mark, in messages or notices");

  step = "sending a link";
  await say(alice, "Docs at https://example.com/docs?page=2. Not javascript:alert(1) nor <b>bold</b>");
  await waitForMessage(bob, "Docs at https://example.com/docs?page=2. Not javascript:alert(1) nor <b>bold</b>");
  const links = await bob.page.$$eval("#messages li.message .text a", (els) => els.map((a) => ({
    href: a.getAttribute("href"), text: a.textContent, rel: a.rel, target: a.target,
  })));
  check(
    JSON.stringify(links) === JSON.stringify([{ href: "https://example.com/docs?page=2", text: "https://example.com/docs?page=2", rel: "noopener noreferrer", target: "_blank" }]),
    `links in bob's page: ${JSON.stringify(links)}`,
  );
  check((await bob.page.$$("#messages li.message .text b")).length === 0, "markup in a message became an element");
  ok("a link in a message is clickable (https only, noopener noreferrer); markup stays text");

  step = "talking in room 2";
  await say(carol, "Room 2 only");
  await waitForMessage(carol, "Room 2 only");
  const seenByCarol = await messages(carol);
  check(seenByCarol.length === 1, `carol sees ${JSON.stringify(seenByCarol)}, expected only her own message`);
  check(!(await messages(alice)).includes("Room 2 only"), "alice saw room 2's message");
  ok("carol saw nothing from room 1; room 1 nothing from room 2");

  step = "opening a room";
  await carol.page.fill("#new-room-name", "no spaces");
  await carol.page.press("#new-room-name", "Enter");
  await carol.page.waitForFunction(() => document.getElementById("room-error").textContent.includes("A room is 1 to 32"));
  check((await carol.page.textContent("#room-title")) === "Room 2", "a bad room name moved carol");
  await carol.page.fill("#new-room-name", "garden");
  await carol.page.press("#new-room-name", "Enter");
  await inRoom(carol);
  check((await carol.page.textContent("#room-title")) === "Room garden", "carol is not in the garden");
  await waitForRooms(alice, [["1", 2], ["garden", 1]]);
  ok("carol opened room garden: alice's list shows it, and room 2 is gone with her");

  step = "losing alice's connection";
  await dropAndReconnect(alice);
  await say(bob, "Welcome back, alice");
  await waitForMessage(alice, "Welcome back, alice");
  await waitForPeople(alice, ["alice", "bob"]);
  ok("alice's page reconnected by itself and is back in room 1, with its presence list");

  step = "reloading bob's page";
  await bob.page.reload();
  await inRoom(bob);
  const history = await messages(bob);
  for (const text of ["Hello from alice", "Hi alice, bob here", "Welcome back, alice"]) {
    check(history.includes(text), `bob's history after a reload lacks "${text}": ${JSON.stringify(history)}`);
  }
  check(history.length === new Set(history).size, `duplicates in bob's history: ${JSON.stringify(history)}`);
  ok(`bob reloaded and got the room's history (${history.length} messages)`);

  step = "sending a message the server refuses";
  await sayTooMuch(alice);
  ok("an over-long message shows the server's error");

  step = "taking the screenshot";
  await say(alice, "See you all tomorrow!");
  await waitForMessage(alice, "See you all tomorrow!");
  await screenshot(alice, "chat.png");

  step = "dave joins, and his browser goes away";
  const dave = await join("dave", "1");
  await waitForPeople(alice, ["alice", "bob", "dave"]);
  await waitForRooms(alice, [["1", 3], ["garden", 1]]);
  await say(dave, "Hi all, more at http://example.org/dave");
  await waitForMessage(alice, "Hi all, more at http://example.org/dave");
  await screenshot(alice, "chat-presence.png");
  noPageErrors([dave]);
  // No DISCONNECT: the connection just ends, as with a closed laptop lid.
  await dave.page.context().close();
  await waitForPeople(alice, ["alice", "bob"]);
  await waitForRooms(alice, [["1", 2], ["garden", 1]]);
  ok("dave's dropped connection took him off alice's presence list and the room count");

  step = "bob leaves";
  await bob.page.click("#logout");
  await waitForPeople(alice, ["alice"]);
  await waitForNotice(alice, "bob left");
  check(await visible(bob, "#name") && await visible(bob, "#room"), "bob's page shows no join form after leaving");
  check(await bob.page.isHidden("#chat"), "bob's page still shows the chat after leaving");
  ok("bob left: he is off alice's list, and his page shows the form again");

  noPageErrors([alice, bob, carol]);
}

async function withAccounts([first, second]) {
  step = "opening the login page";
  const alice = await open(first.user, { routeSockets: true, clock: true });
  check(!(await visible(alice, "#name")), "a nickname field, on a server with accounts");
  check(!(await visible(alice, "#nickname-note")), "the nickname note, on a server with accounts");
  const fields = await alice.page.$$eval("#user, #password", (els) => els.map((el) => [el.id, el.type, el.autocomplete, el.offsetParent !== null]));
  check(
    JSON.stringify(fields) === JSON.stringify([["user", "text", "username", true], ["password", "password", "current-password", true]]),
    `login fields: ${JSON.stringify(fields)}`,
  );
  ok("the page shows a login form (user name, password with autocomplete hints)");

  step = "joining without credentials";
  await alice.page.click("#join-button");
  await alice.page.waitForFunction(() =>
    ["rejected", "connected"].includes(document.getElementById("status").dataset.state));
  if (await alice.page.$('#status[data-state="connected"]')) {
    // This server lets guests in: one is unverified and named by the server.
    await inRoom(alice);
    const me = await whoami(alice);
    check(me.user?.startsWith("guest-") && !me.marked, `the guest is shown as ${JSON.stringify(me)}`);
    await alice.page.click("#logout");
    await alice.page.waitForSelector('#status[data-state="closed"]');
    ok(`guests are let in: joined as ${me.user}, unverified, and logged out`);
  } else {
    await waitForJoinError(alice, "does not let guests in");
    check(await alice.page.isHidden("#chat"), "the chat shows after a refusal");
    ok("guests are not let in, and the page says so");
  }

  step = "logging in with a wrong password";
  await submitLogin(alice, first.user, `not-${first.password}`);
  await waitForJoinError(alice, "Access refused: wrong login or passcode");
  await alice.page.waitForSelector('#status[data-state="rejected"]');
  check(await alice.page.inputValue("#password") === "", "the password field was not cleared");
  check(await alice.page.inputValue("#user") === first.user, "the user name was not kept for the next try");
  check(await alice.page.isHidden("#chat"), "the chat shows after a refusal");
  check(await alice.page.evaluate(() => document.activeElement?.id) === "password", "the password field has no focus");
  const sockets = alice.sockets.length;
  // A page retrying on its own would have opened a new connection by now:
  // every reconnect timer is due within this time.
  await alice.page.clock.fastForward(RETRY_HORIZON_MS);
  check(await alice.page.$eval("#status", (el) => el.dataset.state) === "rejected", "the page tried again by itself");
  check(alice.sockets.length === sockets, "the page opened another WebSocket by itself");
  ok("a wrong password shows the server's refusal, clears the field, and the page waits for the user");
  await screenshot(alice, "chat-login-refused.png");

  step = "logging in";
  await submitLogin(alice, first.user, first.password);
  await inRoom(alice);
  const bob = await open(second.user, { clock: true });
  await submitLogin(bob, second.user, second.password);
  await inRoom(bob);
  for (const person of [alice, bob]) {
    const me = await whoami(person);
    check(me.shown && me.user === person.name && me.marked && me.text.startsWith("Logged in as"), `${person.name}'s page shows ${JSON.stringify(me)}`);
    check(!(await visible(person, "#user")) && !(await visible(person, "#password")), "the login fields still show");
    check(await visible(person, "#logout"), "no way to log out");
    check(await person.page.inputValue("#password") === "", "the password is still in the form");
  }
  await waitForNotice(alice, `${second.user} ✓ joined`);
  ok("alice and bob logged in; each page shows its verified name; alice saw bob (verified) join");
  for (const person of [alice, bob]) {
    await waitForPeople(person, [first.user, second.user]);
    const marked = await person.page.$$eval("#people li[data-user]", (els) => els.map((el) => el.dataset.verified === "true" && el.querySelector(".user + .verified") !== null));
    check(marked.every(Boolean), `${person.name}'s presence list has unmarked names: ${JSON.stringify(marked)}`);
  }
  ok("both presence lists show both users, verified");

  step = "talking";
  await say(alice, "Hello, it is really alice");
  await say(bob, "And really bob");
  for (const person of [alice, bob]) {
    await waitForMessage(person, "Hello, it is really alice");
    await waitForMessage(person, "And really bob");
    const names = await authors(person);
    check(
      JSON.stringify(names) === JSON.stringify([
        { user: first.user, verified: true, marked: true },
        { user: second.user, verified: true, marked: true },
      ]),
      `${person.name} sees ${JSON.stringify(names)}`,
    );
  }
  check((await alice.page.$$("#messages li.message.mine")).length === 1, "alice's own message is not marked as hers");
  ok("both see both messages, each name with the verified mark");

  step = "sending a message the server refuses";
  await sayTooMuch(bob);
  ok("an over-long message shows the server's error");

  step = "losing alice's connection";
  await dropAndReconnect(alice);
  // Had the page lost the credentials, the server would have refused it
  // (or let it in as an unverified guest).
  const me = await whoami(alice);
  check(me.user === first.user && me.marked, `after reconnecting alice's page shows ${JSON.stringify(me)}`);
  await say(bob, "Welcome back, alice");
  await waitForMessage(alice, "Welcome back, alice");
  await say(alice, "Still me");
  await waitForMessage(bob, "Still me");
  const last = (await authors(bob)).at(-1);
  check(last.user === first.user && last.verified && last.marked, `bob sees alice's message from ${JSON.stringify(last)}`);
  ok("alice's page logged in again by itself with the same credentials, still verified");

  step = "checking where the passwords are";
  for (const person of [alice, bob]) {
    const kept = await person.page.evaluate((passwords) => {
      const stores = [localStorage, sessionStorage].flatMap((s) => Object.keys(s).map((k) => `${k}=${s.getItem(k)}`));
      const places = [...stores, location.href, document.cookie, document.documentElement.outerHTML];
      return places.filter((text) => passwords.some((p) => text.includes(p)));
    }, [first.password, second.password]);
    check(kept.length === 0, `${person.name}'s page keeps a password: ${JSON.stringify(kept)}`);
    const stored = await person.page.evaluate(() => localStorage.length + sessionStorage.length);
    check(stored === 0, `${person.name}'s page stores ${stored} items`);
  }
  ok("no password in storage, cookies, the URL or the document");

  step = "taking the screenshot";
  await say(bob, "See you tomorrow!");
  await waitForMessage(alice, "See you tomorrow!");
  await screenshot(alice, "chat-login.png");

  step = "logging bob out";
  await bob.page.click("#logout");
  await waitForNotice(alice, `${second.user} ✓ left`);
  await waitForPeople(alice, [first.user]);
  await bob.page.waitForSelector('#status[data-state="closed"]');
  check(await visible(bob, "#user") && await visible(bob, "#password"), "bob's page shows no login form after logging out");
  check(await bob.page.isHidden("#chat") && await bob.page.isHidden("#whoami"), "bob's page still shows the chat");
  await bob.page.clock.fastForward(RETRY_HORIZON_MS);
  check(await bob.page.$eval("#status", (el) => el.dataset.state) === "closed", "bob's page connected again after logging out");
  ok("bob logged out: alice saw him leave; his page shows the login form and stays disconnected");

  noPageErrors([alice, bob]);
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

  if (mode === "accounts") {
    await withAccounts(accounts);
  } else {
    await withoutAccounts();
  }

  await browser.close();
  clearTimeout(watchdog);
  console.log(`${NAME}: all checks passed`);
}

main().catch((e) => fail(e?.stack ?? String(e)));
