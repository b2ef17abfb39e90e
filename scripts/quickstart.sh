#!/usr/bin/env bash
# Builds Ferry and runs `ferry quickstart`: a local scheduler and agent, a bundled sample sync
# (CSV orders -> SQLite warehouse) with live progress, and a check of the target's rows.
# Extra arguments go to `ferry quickstart` (e.g. --rows 1000000 --keep-running).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
exec target/debug/ferry quickstart "$@"
