#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: starts the brokers the tests
# need, installs the third-party test clients, then runs every Rust test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh
scripts/install-test-deps.sh
cargo test --workspace --all-targets --locked
# Doc tests are not part of --all-targets.
cargo test --workspace --doc --locked
