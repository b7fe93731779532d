"""What the scenario scripts (scenarios.py, secure.py) share: a failed
check, and running the scenarios with one `ok`/`FAIL` line each under a
whole-script time limit."""

import os
import sys
import threading


class ScenarioError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise ScenarioError(msg)


def run(runner, scenarios, script_seconds):
    """Runs each `(name, fn)` of `scenarios` as `fn(runner)`, then
    `runner.cleanup()`, printing `ok <name>` or `FAIL <name>: <reason>`; exits
    the process, 0 only if every scenario passed."""
    state = {"current": "(startup)"}

    def watchdog():
        print(f"FAIL {state['current']}: whole script exceeded {script_seconds:g} s", flush=True)
        os._exit(2)

    timer = threading.Timer(script_seconds, watchdog)
    timer.daemon = True
    timer.start()

    failed = 0
    for name, fn in scenarios:
        state["current"] = name
        try:
            fn(runner)
            print(f"ok {name}", flush=True)
        except Exception as e:  # any failure, including client bugs, fails the scenario
            failed += 1
            reason = str(e) if isinstance(e, ScenarioError) else f"{type(e).__name__}: {e}"
            # Callers parse one line per scenario, and ERROR bodies are multi-line.
            print(f"FAIL {name}: {' '.join(reason.split())}", flush=True)
        finally:
            runner.cleanup()
    timer.cancel()
    sys.stdout.flush()
    # os._exit: stomp.py's receiver threads are daemons, but a half-closed
    # socket from a failed scenario must never delay the exit.
    os._exit(1 if failed else 0)
