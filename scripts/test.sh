#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: starts the brokers the tests
# need, installs the third-party test clients, then runs every Rust test,
# and the broker integration suite once more against each relay target, in
# each relay mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh
scripts/activemq.sh
scripts/install-test-deps.sh
cargo test --workspace --all-targets --locked
# Doc tests are not part of --all-targets.
cargo test --workspace --doc --locked
# The README's quick-start commands, as pasted from a fresh clone.
scripts/readme-quickstart.sh
# The same integration suite, relayed to RabbitMQ and to ActiveMQ, through
# the shared pool (the default) and with a broker connection per session.
# --workspace, not -p stompbox: with the workspace's features unified as
# in the first run, the test binary built there is reused, where -p would
# resolve features anew and compile the library again.
for broker in rabbitmq activemq; do
    for mode in shared per-session; do
        STOMPBOX_TEST_BROKER=$broker STOMPBOX_TEST_RELAY_MODE=$mode \
            cargo test --workspace --test integration --locked
    done
done
