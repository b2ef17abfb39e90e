#!/usr/bin/env bash
# Times Apache Airflow 3 on the scheduling benchmark's reference DAG: CHAINS parallel chains of
# LENGTH BashOperator tasks running `true`, LocalExecutor, metadata in PostgreSQL on
# 127.0.0.1:5432 (user postgres, trust auth) in a database this script creates and drops.
#
#   scripts/bench-airflow.sh [--chains 10] [--length 100] [--keep]
#
# Installs Airflow from PyPI into target/airflow-venv on first use (AIRFLOW_VERSION, default
# 3.1.8), writes the DAG file into target/airflow-home/dags, starts the api-server, scheduler and
# dag-processor, waits until the DAG is parsed, unpauses and triggers it, and waits until every
# task succeeded. Prints `airflow_seconds=S` (dag_run.queued_at to the last task's end_date, both
# from Airflow's own records) and `airflow_tasks=N`. The Ferry side of the comparison runs in
# `cargo bench -p ferry-scheduler --bench schedule_day -- --airflow`, which calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

CHAINS=10
LENGTH=100
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --chains) CHAINS=$2; shift 2 ;;
    --length) LENGTH=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "bench-airflow: unknown option $1" >&2; exit 2 ;;
  esac
done

say() { echo "bench-airflow: $*" >&2; }

VERSION=${AIRFLOW_VERSION:-3.1.8}
VENV=$PWD/target/airflow-venv
if ! "$VENV/bin/airflow" version 2>/dev/null | grep -q "^${VERSION}$"; then
  say "installing apache-airflow[postgres]==$VERSION into $VENV (PyPI)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "apache-airflow[postgres]==$VERSION"
fi

DB=ferry_bench_airflow_$$
PORT=${AIRFLOW_PORT:-18080}
export AIRFLOW_HOME=$PWD/target/airflow-home
rm -rf "$AIRFLOW_HOME"
mkdir -p "$AIRFLOW_HOME/dags" "$AIRFLOW_HOME/logs"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://postgres@127.0.0.1:5432/$DB"
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER=$AIRFLOW_HOME/dags
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$PORT/execution/"
export AIRFLOW__API__PORT=$PORT
export AIRFLOW__LOGGING__BASE_LOG_FOLDER=$AIRFLOW_HOME/logs

psql_q() { psql -h 127.0.0.1 -U postgres -d "$1" -tAq -c "$2"; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  if [ "$KEEP" = 0 ]; then
    psql_q postgres "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  else
    say "kept database $DB and $AIRFLOW_HOME"
  fi
}
trap cleanup EXIT

psql_q postgres "CREATE DATABASE $DB"
say "migrating the metadata database $DB"
"$VENV/bin/airflow" db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1

# The DAG: CHAINS chains of LENGTH tasks, each `true`.
cat >"$AIRFLOW_HOME/dags/ferry_chains.py" <<EOF
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG(
    dag_id="ferry_chains",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=$CHAINS,
):
    for c in range($CHAINS):
        prev = None
        for i in range($LENGTH):
            t = BashOperator(task_id=f"c{c:02d}_t{i:03d}", bash_command="true")
            if prev is not None:
                prev >> t
            prev = t
EOF

start() { # name, args...
  local name=$1; shift
  setsid "$VENV/bin/airflow" "$@" >"$AIRFLOW_HOME/$name.log" 2>&1 &
  PIDS+=($!)
}
start api-server api-server --port "$PORT"
start scheduler scheduler
start dag-processor dag-processor

say "waiting for the DAG to be parsed"
for _ in $(seq 1 600); do
  [ "$(psql_q "$DB" "SELECT count(*) FROM dag WHERE dag_id = 'ferry_chains'" 2>/dev/null || echo 0)" = 1 ] && break
  sleep 0.5
done
[ "$(psql_q "$DB" "SELECT count(*) FROM dag WHERE dag_id = 'ferry_chains'")" = 1 ] || {
  say "the DAG was not parsed; see $AIRFLOW_HOME/dag-processor.log"; exit 1; }
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/api/v2/version" >/dev/null 2>&1 && break
  sleep 0.5
done
"$VENV/bin/airflow" dags unpause ferry_chains >/dev/null 2>&1 || true

TOTAL=$((CHAINS * LENGTH))
say "triggering ferry_chains ($TOTAL tasks)"
"$VENV/bin/airflow" dags trigger ferry_chains -r bench >"$AIRFLOW_HOME/trigger.log" 2>&1
deadline=$((SECONDS + 3600))
while :; do
  done_n=$(psql_q "$DB" "SELECT count(*) FROM task_instance WHERE dag_id = 'ferry_chains' AND run_id = 'bench' AND state = 'success'")
  failed=$(psql_q "$DB" "SELECT count(*) FROM task_instance WHERE dag_id = 'ferry_chains' AND run_id = 'bench' AND state IN ('failed', 'upstream_failed')")
  [ "$done_n" = "$TOTAL" ] && break
  if [ "$failed" != 0 ]; then say "$failed tasks failed; see $AIRFLOW_HOME/logs"; exit 1; fi
  if [ $SECONDS -gt $deadline ]; then say "not done after an hour ($done_n of $TOTAL)"; exit 1; fi
  sleep 1
done
SECS=$(psql_q "$DB" "SELECT round(extract(epoch FROM max(ti.end_date) - dr.queued_at)::numeric, 2)
  FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id
  WHERE ti.dag_id = 'ferry_chains' AND ti.run_id = 'bench' GROUP BY dr.queued_at")
echo "airflow_version=$VERSION"
echo "airflow_tasks=$TOTAL"
echo "airflow_seconds=$SECS"
