#!/usr/bin/env bash
# `make ui` / `make ui-stop`: Airflow (standalone) and the MLflow UI on 127.0.0.1 over the state in $HERMES_HOME.
# Each server runs in its own process group (setsid) and is stopped by that group's PID.
set -euo pipefail
source "$(dirname "$0")/env.sh"
run="$HERMES_HOME/run"; mkdir -p "$run" "$HERMES_HOME/logs"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"

stop_one() {
  local name=$1 pidf="$run/$1.pid"
  [ -f "$pidf" ] || return 0
  local pid; pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $name (pid group $pid)"
  fi
  rm -f "$pidf"
}

wait_http() {  # poll until the URL answers, or fail after $2 seconds
  local url=$1 limit=$2
  for _ in $(seq 1 $((limit * 2))); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "no answer from $url after ${limit}s; see $HERMES_HOME/logs" >&2; return 1
}

case "${1:-start}" in
  start)
    airflow db migrate >"$HERMES_HOME/logs/airflow-db.log" 2>&1
    if [ ! -f "$run/airflow.pid" ] || ! kill -0 "$(cat "$run/airflow.pid")" 2>/dev/null; then
      setsid airflow standalone >"$HERMES_HOME/logs/airflow-standalone.log" 2>&1 < /dev/null &
      echo $! >"$run/airflow.pid"
    fi
    if [ ! -f "$run/mlflow.pid" ] || ! kill -0 "$(cat "$run/mlflow.pid")" 2>/dev/null; then
      MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" \
        --workers 1 --backend-store-uri "$MLFLOW_TRACKING_URI" \
        --artifacts-destination "$HERMES_HOME/mlflow/artifacts" \
        >"$HERMES_HOME/logs/mlflow-server.log" 2>&1 < /dev/null &
      echo $! >"$run/mlflow.pid"
    fi
    wait_http "http://127.0.0.1:$MLFLOW_PORT/health" 90
    wait_http "http://127.0.0.1:$AIRFLOW__API__PORT/api/v2/monitor/health" 180
    pw="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
    echo "Airflow: http://127.0.0.1:$AIRFLOW__API__PORT  (user/password in $pw)"
    echo "MLflow:  http://127.0.0.1:$MLFLOW_PORT"
    echo "stop both with: make ui-stop"
    ;;
  stop)
    stop_one airflow
    stop_one mlflow
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
