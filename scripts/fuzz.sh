#!/usr/bin/env bash
# Fuzzes the STOMP codec with cargo-fuzz: `decode` for the given number of
# seconds (default 60), then `unescape` for half as long.
#
#   scripts/fuzz.sh [seconds]
#
# The seeds in fuzz/seeds/<target>/ are copied into fuzz/corpus/<target>/
# (gitignored), which libFuzzer grows as it runs. Crashes land in
# fuzz/artifacts/<target>/ and make this script exit non-zero; replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> <file>
#
# cargo-fuzz needs nightly features (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain through. It is installed from crates.io if missing.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1

run() {
    local target="$1" secs="$2"
    mkdir -p "fuzz/corpus/$target"
    cp "fuzz/seeds/$target/"* "fuzz/corpus/$target/"
    cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -print_final_stats=1
}

run decode "$seconds"
run unescape "$(( (seconds + 1) / 2 ))"
