#!/usr/bin/env bash
# Installs the peer tools the sync benchmark compares against: pgloader (Debian package) and
# sling (PyPI, with its Linux binary package) in a virtualenv under target/bench-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pgloader >/dev/null; then
  echo "bench-peers: installing pgloader (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgloader >/dev/null
fi
if [ ! -x target/bench-venv/bin/sling ]; then
  echo "bench-peers: installing sling (PyPI) into target/bench-venv"
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install -q sling sling-linux-amd64
fi
pgloader --version | head -1
target/bench-venv/bin/sling --version 2>/dev/null | head -1 || true
