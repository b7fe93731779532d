#!/usr/bin/env bash
# Makes sure the message brokers the test suite talks to are up on loopback:
# RabbitMQ with its STOMP plugin (61613) and Web-STOMP plugin (15674, the
# reference the load tool compares against). Installs RabbitMQ with apt where
# it is missing and starts it where it is not running.
#
#   scripts/services.sh        start (the default)
#   scripts/services.sh stop   stop RabbitMQ and the ActiveMQ of scripts/activemq.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf 'services: %s\n' "$*"; }

# apt-get needs root; say so plainly instead of failing half-way through.
need_root_for() {
  if [ "$(id -u)" -ne 0 ]; then
    say "ERROR: $1 is not installed, and installing it with apt-get needs root."
    say "Install it yourself (sudo apt-get install $1) or run this script as root."
    exit 1
  fi
}

case "${1:-start}" in
  start) ;;
  stop)
    if command -v rabbitmqctl >/dev/null && rabbitmqctl -q status >/dev/null 2>&1; then
      say "stopping RabbitMQ"
      rabbitmqctl -q stop
    else
      say "RabbitMQ is not running"
    fi
    "$ROOT/scripts/activemq.sh" stop
    exit 0
    ;;
  *)
    say "usage: $0 [start|stop]"
    exit 2
    ;;
esac

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "ERROR: $1:$2 did not answer within $3 s"
      return 1
    fi
    sleep 0.5
  done
}

if ! command -v rabbitmq-server >/dev/null; then
  need_root_for rabbitmq-server
  say "installing rabbitmq-server with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  say "starting RabbitMQ"
  rabbitmq-server -detached
  # `await_startup` waits for the node to boot, not just for the process.
  timeout 120 rabbitmqctl -q await_startup
fi

# Enabling an enabled plugin is a no-op, so this is safe on every run.
rabbitmq-plugins -q enable rabbitmq_stomp rabbitmq_web_stomp >/dev/null
wait_port 127.0.0.1 61613 60
wait_port 127.0.0.1 15674 60
say "RabbitMQ STOMP on 127.0.0.1:61613, Web-STOMP on 127.0.0.1:15674"
