#!/usr/bin/env bash
# Installs the peer tools the sync benchmark compares against: pgloader (Debian package) and
# sling (PyPI, with its Linux binary package) in a virtualenv under target/bench-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pgloader >/dev/null; then
  echo "bench-peers: installing pgloader (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgloader >/dev/null
fi
# The sling binary is inside the PyPI package sling-linux-amd64 (the `sling` wrapper package
# would download one at run time, which needs network beyond the package registries).
SLING=$(ls target/bench-venv/lib/python3*/site-packages/sling_linux_amd64/bin/sling-linux-amd64 2>/dev/null || true)
if [ -z "$SLING" ]; then
  echo "bench-peers: installing sling-linux-amd64 (PyPI) into target/bench-venv"
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install -q sling-linux-amd64
  SLING=$(ls target/bench-venv/lib/python3*/site-packages/sling_linux_amd64/bin/sling-linux-amd64)
fi
pgloader --version | head -1
"$SLING" --version | tail -1
