#!/usr/bin/env bash
# The production-like profile on 127.0.0.1: Airflow on PostgreSQL (infra/postgres.sh) with the LocalExecutor —
# scheduler, DAG processor and API server as separate processes — over the same DAGs; runs are triggered
# through the scheduler (`airflow dags trigger`), not `dags test`, and show in the UI.
# usage: infra/prod.sh start|stop|env     (`eval "$(bash infra/prod.sh env)"` points airflow commands at it)
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"
here="$(dirname "$0")"
export AIRFLOW_HOME="$HERMES_HOME/airflow-prod"
url=$(bash "$here/postgres.sh" url)
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$url" AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC="$url"
export AIRFLOW__API__PORT="${HERMES_PROD_API_PORT:-8081}"
# task processes report to the API server's execution API: on this port, not the default 8080
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$AIRFLOW__API__PORT/execution/"
export AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL=5 AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
mkdir -p "$AIRFLOW_HOME"

case "${1:-start}" in
  start)
    bash "$here/postgres.sh" start >/dev/null
    airflow db migrate >"$log_dir/airflow-prod-db.log" 2>&1
    start_bg airflow-prod-scheduler airflow scheduler
    start_bg airflow-prod-dag-processor airflow dag-processor
    start_bg airflow-prod-api airflow api-server --host 127.0.0.1 --port "$AIRFLOW__API__PORT"
    wait_http "http://127.0.0.1:$AIRFLOW__API__PORT/api/v2/monitor/health" 180 airflow-prod-api
    echo "Airflow (PostgreSQL, LocalExecutor) on http://127.0.0.1:$AIRFLOW__API__PORT"
    # the live trigger path, once a nightly has run (ledger and stream on $HERMES_LEDGER_URL: PostgreSQL in production)
    if compgen -G "${HERMES_WAREHOUSE:-$HERMES_HOME/warehouse}/features/sides_user/ds=*" >/dev/null; then
      bash "$here/gateway.sh" start >/dev/null
      bash "$here/stream.sh" start
    fi
    ;;
  stop)
    bash "$here/stream.sh" stop
    for n in airflow-prod-api airflow-prod-dag-processor airflow-prod-scheduler; do stop_one "$n"; done
    bash "$here/postgres.sh" stop
    ;;
  env)
    for v in AIRFLOW_HOME AIRFLOW__DATABASE__SQL_ALCHEMY_CONN AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC AIRFLOW__API__PORT \
             AIRFLOW__CORE__EXECUTION_API_SERVER_URL; do
      printf 'export %s=%q\n' "$v" "${!v}"
    done
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
