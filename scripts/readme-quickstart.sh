#!/usr/bin/env bash
# Runs the README's quick-start commands as a new user pastes them, so the
# README cannot drift from what works: every ```sh block after a line
# starting with "<!-- quickstart" is read from README.md, not copied here.
#
# Each command runs as written, with only what a terminal of its own gives
# a person: servers get a free port (--http 127.0.0.1:0, or the example's
# address argument) and run in the background; the clients get that
# server's URL; `subscribe` gets --count 1 so it ends after its message.
# A `send` whose comment says "prints X" must make the subscriber print X;
# one whose comment says "exits 1" must fail. A command of another kind
# fails the run, so a new README command needs a rule here first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'quickstart: %s\n' "$*"; }
fail() {
  say "FAIL: $*"
  exit 1
}

WORK="$(mktemp -d)"
server_pid=""
subscriber_pid=""
cleanup() {
  for pid in $subscriber_pid $server_pid; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Waits until `file` has a line containing `text`; a child that exits
# first, or the deadline, is a failure.
wait_for() { # file text pid what
  local deadline=$((SECONDS + 120))
  until grep -qF -- "$2" "$1" 2>/dev/null; do
    if ! kill -0 "$3" 2>/dev/null; then
      cat "$1" "$1.err" 2>/dev/null || true
      fail "$4 exited before printing '$2'"
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "$4 did not print '$2' within 120 s"
    sleep 0.1
  done
}

# Ends the running server with SIGINT, as Ctrl-C would; it must exit 0.
stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -INT "$server_pid"
  local status=0
  wait "$server_pid" || status=$?
  [ "$status" -eq 0 ] || fail "the server exited $status on Ctrl-C: $(cat "$WORK/server.err")"
  server_pid=""
}

# The quick-start blocks' lines, in README order.
mapfile -t lines < <(awk '
  /^<!-- quickstart/ { want = 1; next }
  want && /^```/ { if (inside) { inside = 0; want = 0 } else { inside = 1 }; next }
  inside { print }
' README.md)
[ "${#lines[@]}" -ge 4 ] || fail "README.md has no quick-start blocks (<!-- quickstart --> before a sh block)"

url=""
for line in "${lines[@]}"; do
  command="${line%%  #*}"
  command="${command%"${command##*[![:space:]]}"}"
  comment=""
  [[ "$line" == *"  # "* ]] && comment="${line#*  # }"
  [ -n "$command" ] || continue
  # The README's own shell words, quotes and all.
  eval "words=( $command )"
  say "\$ $command"
  case "$command" in
    "cargo install "*)
      "${words[@]}" --root "$WORK/root"
      PATH="$WORK/root/bin:$PATH"
      ;;
    "stompbox serve"* | *" -- serve"*)
      stop_server
      "${words[@]}" --http 127.0.0.1:0 >"$WORK/server.out" 2>"$WORK/server.err" &
      server_pid=$!
      wait_for "$WORK/server.out" "stompbox listening" "$server_pid" "serve"
      url="$(grep -o 'ws=[^ ]*' "$WORK/server.out" | head -1)"
      url="${url#ws=}"
      ;;
    "cargo run --example "*)
      stop_server
      # Compiled first, with no deadline: a first `cargo run` compiles for
      # as long as the machine needs (it resolves features for this package
      # alone, so the workspace's test build is not reused), and only the
      # start-up after it is the example's to be quick about.
      build=("${words[@]}")
      build[1]=build
      "${build[@]}"
      "${words[@]}" -- 127.0.0.1:0 >"$WORK/server.out" 2>"$WORK/server.err" &
      server_pid=$!
      wait_for "$WORK/server.out" "ws://" "$server_pid" "the example"
      url="$(grep -o 'ws://[^ ]*' "$WORK/server.out" | head -1)"
      ;;
    "stompbox subscribe "*)
      [ -n "$url" ] || fail "subscribe before any server"
      "${words[@]}" --url "$url" --count 1 >"$WORK/sub.out" 2>"$WORK/sub.err" &
      subscriber_pid=$!
      wait_for "$WORK/sub.err" "subscribed to" "$subscriber_pid" "subscribe"
      ;;
    "stompbox send "*)
      [ -n "$url" ] || fail "send before any server"
      status=0
      "${words[@]}" --url "$url" >"$WORK/send.out" 2>"$WORK/send.err" || status=$?
      if [[ "$comment" == *"exits 1"* ]]; then
        [ "$status" -eq 1 ] || fail "expected exit 1, got $status: $(cat "$WORK/send.err")"
        say "exited 1: $(cat "$WORK/send.err")"
      else
        [ "$status" -eq 0 ] || fail "send exited $status: $(cat "$WORK/send.err")"
      fi
      if [[ "$comment" == *"prints "* ]]; then
        expected="${comment#*prints }"
        [ -n "$subscriber_pid" ] || fail "'prints' with no subscriber running"
        status=0
        timeout 30 tail --pid="$subscriber_pid" -f /dev/null || fail "the subscriber did not get its message within 30 s"
        wait "$subscriber_pid" || status=$?
        subscriber_pid=""
        [ "$status" -eq 0 ] || fail "subscribe exited $status: $(cat "$WORK/sub.err")"
        grep -qxF -- "$expected" "$WORK/sub.out" ||
          fail "the subscriber printed no line '$expected':$(printf '\n'; cat "$WORK/sub.out")"
        say "the subscriber printed $expected"
      fi
      ;;
    *)
      fail "no rule for the README command '$command'; add one to $0"
      ;;
  esac
done
stop_server
say "every quick-start command worked"
