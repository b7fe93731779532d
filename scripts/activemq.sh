#!/usr/bin/env bash
# Starts the ActiveMQ instance the relay tests use (STOMP on 127.0.0.1:61623),
# installing Debian's activemq package where it is missing. Idempotent: does
# nothing when the port already answers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="$ROOT/target/activemq"
say() { printf 'activemq: %s\n' "$*"; }

answers() { (exec 3<>/dev/tcp/127.0.0.1/61623) 2>/dev/null; }

# `scripts/activemq.sh stop`: ends the instance this script started, by
# the process id it wrote when starting it.
if [ "${1:-start}" = stop ]; then
  pid="$(cat "$BASE/activemq.pid" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    say "not running (no live process in $BASE/activemq.pid)"
    exit 0
  fi
  say "stopping process $pid"
  kill "$pid"
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "ERROR: process $pid still running after 30 s"
      exit 1
    fi
    sleep 0.5
  done
  rm -f "$BASE/activemq.pid"
  exit 0
fi
if ! command -v activemq >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    say "ERROR: activemq is not installed, and installing it with apt-get needs root."
    say "Install it yourself (sudo apt-get install activemq) or run this script as root."
    exit 1
  fi
  say "installing activemq with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq activemq
fi
if answers; then
  # Another start would not bind the port and would stay running anyway:
  # one more JVM per test run.
  say "STOMP on 127.0.0.1:61623 already answers"
  exit 0
fi
mkdir -p "$BASE/data" "$BASE/conf"
cp "$ROOT/scripts/activemq/activemq.xml" "$BASE/conf/activemq.xml"
say "starting (log: $BASE/activemq.log)"
mkdir -p "$BASE/tmp"
# Closes every descriptor above stderr that this shell inherited. ActiveMQ
# outlives the script: a descriptor left open would keep its caller's lock
# held, or its output pipe from ending, for as long as ActiveMQ runs.
close_inherited_fds() {
  local fd
  for fd in $(ls /proc/$BASHPID/fd 2>/dev/null || ls /dev/fd); do
    if [ "$fd" -gt 2 ]; then
      { exec {fd}>&-; } 2>/dev/null || true
    fi
  done
}
# Java directly rather than Debian's wrapper, which switches to the
# activemq user and reads the system instance's settings.
(
  close_inherited_fds
  exec setsid nohup java -Xms64M -Xmx384M -Djava.io.tmpdir="$BASE/tmp" \
    -Dactivemq.classpath="$BASE/conf" -Dactivemq.home=/usr/share/activemq \
    -Dactivemq.base="$BASE" -Dactivemq.conf="$BASE/conf" -Dactivemq.data="$BASE/data" \
    -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$BASE/conf/activemq.xml" \
    >"$BASE/activemq.log" 2>&1 </dev/null
) &
# The subshell execs java, so this is ActiveMQ's own process id.
echo $! >"$BASE/activemq.pid"
deadline=$((SECONDS + 90))
until answers; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "ERROR: port 61623 did not answer within 90 s; last log lines:"
    tail -20 "$BASE/activemq.log" >&2
    exit 1
  fi
  sleep 0.5
done
say "STOMP on 127.0.0.1:61623"
