#!/usr/bin/env bash
# The whole test suite: formatting, lints, one debug build shared by every test binary, and
# all tests (unit and end-to-end against real processes and databases).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins --locked
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  echo "(cargo-nextest not found; using cargo test. Install it with: cargo install cargo-nextest --locked)"
  cargo test --workspace --locked --no-fail-fast
fi
