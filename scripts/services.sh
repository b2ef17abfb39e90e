#!/usr/bin/env bash
# Makes sure the PostgreSQL and MariaDB servers the tests use are running on 127.0.0.1, and that
# headless Chromium and chromedriver (the console's browser tests) are installed.
# Starts them when installed but stopped; installs the Debian packages when missing (as root).
# Says what it did; exits non-zero with instructions when it cannot.
set -euo pipefail

say() { echo "services: $*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

apt_install() {
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_until() { # seconds, command...
  local n=$1; shift
  for _ in $(seq 1 "$((n * 5))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_up; then say "PostgreSQL is running on 127.0.0.1:5432"; return; fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql postgresql-client
  fi
  local ver; ver=$(ls /etc/postgresql | sort -V | tail -1)
  say "starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  if ! wait_until 30 pg_up; then
    say "PostgreSQL did not start; try: pg_ctlcluster --skip-systemctl-redirect $ver main start"; exit 1
  fi
  # A fresh install: let local tests in as root over TCP, and give them a `test` database.
  as_root su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='root'\" | grep -q 1 || psql -qc 'CREATE ROLE root SUPERUSER LOGIN'" || true
  as_root su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='test'\" | grep -q 1 || createdb -O root test" || true
  local hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if [ -f "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload || true
    say "PostgreSQL: trusted local TCP connections from 127.0.0.1 (test machine setup)"
  fi
}

my_up() { mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -uroot ping; }

ensure_mariadb() {
  if command -v mysqladmin >/dev/null && my_up >/dev/null 2>&1; then say "MariaDB is running on 127.0.0.1:3306"; return; fi
  if [ ! -x /usr/sbin/mariadbd ]; then apt_install mariadb-server mariadb-client; fi
  say "starting MariaDB"
  as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  if ! wait_until 60 my_up; then
    say "MariaDB did not start; try: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"; exit 1
  fi
  as_root mysql -uroot -e "CREATE DATABASE IF NOT EXISTS test; ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;" 2>/dev/null || true
}

ensure_browser() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    say "Chromium and chromedriver are installed"; return
  fi
  apt_install chromium chromium-driver
  command -v chromedriver >/dev/null || { say "chromedriver is still missing after installing chromium-driver"; exit 1; }
}

ensure_postgres
ensure_mariadb
ensure_browser
