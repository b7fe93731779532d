#!/usr/bin/env bash
# Installs what the third-party STOMP client scenario scripts and the browser
# test need:
#   - tests/clients/node:   npm ci (@stomp/stompjs, ws and playwright-core,
#                           versions from package-lock.json)
#   - Chromium:             Debian's package, at /usr/bin/chromium, which the
#                           browser test drives (playwright never downloads one)
#   - tests/clients/python: a venv at target/test-venv with requirements.txt
#   - Prometheus:           Debian's package, /usr/bin/prometheus and
#                           /usr/bin/promtool, which the Prometheus test runs
#                           (crates/stompbox-cli/tests/prometheus.rs); no
#                           service is left running
#
# Idempotent and cheap when nothing changed: each install leaves a stamp
# holding the hash of the file it installed from, and is skipped (without
# touching the network) while that hash still matches and the install still
# works. Safe to run from CI on every build.
#
# Afterwards:
#   node tests/clients/node/scenarios.mjs ws://127.0.0.1:8080/ws
#   node tests/clients/node/browser-chat.mjs http://127.0.0.1:8080/ target/test-output/browser
#   target/test-venv/bin/python tests/clients/python/scenarios.py 127.0.0.1 61613
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/tests/clients/node"
PY_DIR="$ROOT/tests/clients/python"
VENV="$ROOT/target/test-venv"

say() { printf 'install-test-deps: %s\n' "$*"; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

# Debian packages are only a fallback for a bare machine: the project's
# machines already ship node/npm/python3, and apt needs root.
apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    say "ERROR: need $* but cannot apt-get install it (not root or not Debian)"
    exit 1
  fi
  say "apt-get install $*"
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# ---------------------------------------------------------------- chromium

# The browser test uses the distribution's Chromium: a browser build fetched
# by playwright itself is neither wanted nor reachable from here.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -x /usr/bin/chromium ]; then
  say "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1 || echo present)"
else
  apt_install chromium
fi

# ---------------------------------------------------------------- prometheus

# The Prometheus test starts its own server on a free port and scrapes a
# `stompbox serve` it started; a packaged daemon on 9090 (or the node
# exporter on 9100, which the package recommends) would only be in the way.
# So: no recommends, and services kept from starting during the install
# (policy-rc.d, the Debian way; a container usually has one already). Under
# systemd the unit is stopped and disabled afterwards.
if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; then
  say "prometheus: $(/usr/bin/prometheus --version 2>&1 | head -n 1)"
else
  prometheus_was_running=
  pgrep -x prometheus >/dev/null 2>&1 && prometheus_was_running=1
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ "$(id -u)" -eq 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# install-test-deps.sh: no services started during the install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt_install --no-install-recommends prometheus
  if [ -n "$own_policy" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for unit in prometheus prometheus-node-exporter; do
      if systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit" 2>/dev/null; then
        say "prometheus: stopping and disabling the $unit service"
        systemctl disable --now --quiet "$unit" || true
      fi
    done
  fi
  if [ -z "$prometheus_was_running" ] && pgrep -x prometheus >/dev/null 2>&1; then
    say "WARNING: a prometheus process is running after the install (pgrep -a prometheus); it is not needed by the tests"
  fi
  say "prometheus: $(/usr/bin/prometheus --version 2>&1 | head -n 1)"
fi

# ---------------------------------------------------------------- node

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  # Not fatal: the scripts use `ws`, not a global WebSocket, so older Node
  # may still work, but only Node 20 is what they are checked against.
  say "WARNING: node $(node --version) found; the scenarios are written for Node 20+"
fi

node_stamp="$NODE_DIR/node_modules/.stompbox-lock.sha256"
lock_hash="$(sha "$NODE_DIR/package-lock.json")"
if [ -f "$node_stamp" ] && [ "$(cat "$node_stamp")" = "$lock_hash" ] \
  && (cd "$NODE_DIR" && node -e 'for (const m of ["@stomp/stompjs", "ws", "playwright-core"]) require.resolve(m)') 2>/dev/null; then
  say "node: node_modules up to date with package-lock.json, skipping npm ci"
else
  say "node: npm ci in tests/clients/node"
  # npm ci, not install: exactly the locked versions, and fails rather than
  # silently rewriting the lock file.
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund)
  echo "$lock_hash" >"$node_stamp"
fi

# ---------------------------------------------------------------- python

if ! command -v python3 >/dev/null; then
  apt_install python3 python3-venv
fi

req_hash="$(sha "$PY_DIR/requirements.txt")"
py_stamp="$VENV/.stompbox-requirements.sha256"
# A venv outlives the interpreter it was made from (e.g. after a Python
# upgrade) and then breaks; so "works" means "imports stomp", not "exists".
venv_works() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import stomp' 2>/dev/null; }

if [ -f "$py_stamp" ] && [ "$(cat "$py_stamp")" = "$req_hash" ] && venv_works; then
  say "python: $VENV up to date with requirements.txt, skipping pip"
else
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    # Debian splits venv/ensurepip out of python3.
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      apt_install python3-venv
    fi
    say "python: creating venv $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
  fi
  say "python: pip install -r tests/clients/python/requirements.txt into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PY_DIR/requirements.txt"
  echo "$req_hash" >"$py_stamp"
fi

say "done"
