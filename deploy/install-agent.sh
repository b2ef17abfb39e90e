#!/usr/bin/env bash
# Installs a Ferry agent on a fresh Debian, Ubuntu or RHEL-family server and joins it to a
# resource group. It downloads nothing unless you point it at a URL yourself (--url), and then
# checks the SHA-256 you give (--sha256).
#
#   sudo ./install-agent.sh --binary ./ferry-agent \
#        --scheduler https://sched.example:7100 --group rg-east --token frt_… \
#        [--ca-cert ca.pem] [--slots 4] [--labels zone=east] [--user ferry]
#
# What it does: installs the binary to /usr/local/bin, creates the system user the agent runs as,
# copies the CA certificate to /etc/ferry/ca.pem, then runs `ferry-agent install`, which
# registers with the token (used once, never stored), writes /etc/ferry/agent.env and the
# systemd unit, and starts it. Undo with `ferry-agent uninstall --purge`.
#
# Paths can be moved for a dry run or a non-standard layout with FERRY_BIN_DIR, FERRY_ETC_DIR,
# FERRY_UNIT_DIR, FERRY_DATA_DIR; --no-start writes everything without starting the unit.
set -euo pipefail

say() { echo "install-agent: $*"; }
die() { echo "install-agent: $*" >&2; exit 1; }

binary="" url="" sha="" scheduler="" group="" token="${FERRY_AGENT_TOKEN:-}" ca="" slots=4 labels=""
user=ferry no_start=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --url) url=$2; shift 2 ;;
    --sha256) sha=$2; shift 2 ;;
    --scheduler) scheduler=$2; shift 2 ;;
    --group) group=$2; shift 2 ;;
    --token) token=$2; shift 2 ;;
    --ca-cert) ca=$2; shift 2 ;;
    --slots) slots=$2; shift 2 ;;
    --labels) labels=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --no-start) no_start=--no-start; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ -n "$scheduler" ] || die "--scheduler URL is required"
[ -n "$group" ] || die "--group is required"
[ -n "$token" ] || die "--token is required (printed by \`ferry group create\`)"
[ -n "$binary" ] || [ -n "$url" ] || die "give the agent binary with --binary PATH (or --url URL --sha256 SUM)"
[ "$(id -u)" = 0 ] || [ -n "${FERRY_BIN_DIR:-}" ] || die "run as root (it installs a system service)"

bin_dir=${FERRY_BIN_DIR:-/usr/local/bin}
etc_dir=${FERRY_ETC_DIR:-/etc/ferry}
unit_dir=${FERRY_UNIT_DIR:-/etc/systemd/system}
data_dir=${FERRY_DATA_DIR:-/var/lib/ferry-agent}

if [ -n "$url" ]; then
  [ -n "$sha" ] || die "--url needs --sha256: a downloaded binary is checked before it runs"
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  if command -v curl >/dev/null; then curl -fsSL "$url" -o "$tmp"
  elif command -v wget >/dev/null; then wget -q "$url" -O "$tmp"
  else die "neither curl nor wget is installed; copy the binary and use --binary"; fi
  echo "$sha  $tmp" | sha256sum -c --quiet - || die "checksum mismatch for $url"
  binary=$tmp
fi
[ -f "$binary" ] || die "no file at $binary"

mkdir -p "$bin_dir" "$etc_dir" "$unit_dir"
install -m 0755 "$binary" "$bin_dir/ferry-agent"
say "installed $bin_dir/ferry-agent ($("$bin_dir/ferry-agent" --version))"

if [ "$user" != root ] && ! id "$user" >/dev/null 2>&1; then
  nologin=$(command -v nologin || echo /usr/sbin/nologin)
  if command -v useradd >/dev/null; then
    useradd --system --home-dir "$data_dir" --no-create-home --shell "$nologin" "$user"
  elif command -v adduser >/dev/null; then
    adduser --system --home "$data_dir" --no-create-home --shell "$nologin" --group "$user"
  else
    die "cannot create user $user (no useradd or adduser); create it or pass --user root"
  fi
  say "created system user $user"
fi
mkdir -p "$data_dir"

args=(install --scheduler "$scheduler" --group "$group" --slots "$slots" --user "$user"
      --data-dir "$data_dir" --config "$etc_dir/agent.env" --unit-dir "$unit_dir")
if [ -n "$ca" ]; then
  install -m 0644 "$ca" "$etc_dir/ca.pem"
  args+=(--ca-cert "$etc_dir/ca.pem")
fi
[ -n "$labels" ] && args+=(--labels "$labels")
[ -n "$no_start" ] && args+=("$no_start")
# The token goes through the environment, not the process list.
FERRY_AGENT_TOKEN=$token "$bin_dir/ferry-agent" "${args[@]}"
