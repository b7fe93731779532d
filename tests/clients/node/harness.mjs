// What the scenario scripts (scenarios.mjs, secure.mjs) share: a failed
// check, waits with a time limit, and a queue that turns message callbacks
// into awaitable arrivals.

export const WAIT_MS = 5_000; // upper bound for any single expected event

export class ScenarioError extends Error {}

export function check(cond, msg) {
  if (!cond) throw new ScenarioError(msg);
}

export function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ScenarioError(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Messages arrive via callbacks; the scenarios want to `await` them one at a
// time in arrival order, so buffer them in a tiny async queue. `broken`
// rejects when the connection fails, which ends any wait at once.
export class Inbox {
  constructor(label, broken) {
    this.label = label;
    this.broken = broken;
    this.buffer = [];
    this.waiters = [];
  }
  push(msg) {
    const w = this.waiters.shift();
    if (w) w(msg);
    else this.buffer.push(msg);
  }
  next(what = `a message on ${this.label}`) {
    if (this.buffer.length) return Promise.resolve(this.buffer.shift());
    let waiter;
    const p = new Promise((resolve) => {
      waiter = resolve;
      this.waiters.push(waiter);
    });
    return withTimeout(Promise.race([p, this.broken]), what).catch((e) => {
      // Drop our waiter so a late message is buffered, not swallowed.
      this.waiters = this.waiters.filter((w) => w !== waiter);
      throw e;
    });
  }
}
