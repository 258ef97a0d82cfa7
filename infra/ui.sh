#!/usr/bin/env bash
# `make ui` / `make ui-stop`: Airflow (its four components), the MLflow UI, the Configuration Center and (after a nightly) the
# live event API + streaming engine with the push gateway, on 127.0.0.1 over the state in $HERMES_HOME.
# Each server runs in its own process group (setsid) and is stopped by that group's PID.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"

case "${1:-start}" in
  start)
    require_free_port airflow-api "$AIRFLOW__API__PORT" AIRFLOW__API__PORT
    require_free_port mlflow-server "$MLFLOW_PORT" MLFLOW_PORT
    require_free_port configcenter "$HERMES_UI_PORT" HERMES_UI_PORT
    airflow db migrate >"$HERMES_HOME/logs/airflow-db.log" 2>&1
    # what `airflow standalone` runs, as separate processes: standalone's scheduler and triggerer also start log
    # servers on 0.0.0.0:8793/8794 (the host is hard-coded). Every task runs on this machine, so the API server
    # reads task logs from the log folder and the log servers are not needed: --skip-serve-logs.
    start_bg airflow-api airflow api-server --host 127.0.0.1 --port "$AIRFLOW__API__PORT"
    start_bg airflow-scheduler airflow scheduler --skip-serve-logs
    start_bg airflow-dag-processor airflow dag-processor
    start_bg airflow-triggerer airflow triggerer --skip-serve-logs
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false start_bg mlflow-server mlflow server --host 127.0.0.1 \
      --port "$MLFLOW_PORT" --workers 1 --backend-store-uri "$MLFLOW_TRACKING_URI" \
      --artifacts-destination "$HERMES_HOME/mlflow/artifacts"
    start_bg configcenter hermes ui
    wait_http "http://127.0.0.1:$HERMES_UI_PORT/login" 60 configcenter
    wait_http "http://127.0.0.1:$MLFLOW_PORT/health" 90 mlflow-server
    wait_http "http://127.0.0.1:$AIRFLOW__API__PORT/api/v2/monitor/health" 180 airflow-api
    pw="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
    echo "Airflow: http://127.0.0.1:$AIRFLOW__API__PORT  (user/password in $pw)"
    echo "MLflow:  http://127.0.0.1:$MLFLOW_PORT"
    echo "Configuration Center: http://127.0.0.1:$HERMES_UI_PORT  (operator token: HERMES_LOCAL_UI_TOKEN in $HERMES_HOME/secrets.env)"
    # the live trigger path too, once a nightly has run (the engine scores with its sides and model)
    if compgen -G "${HERMES_WAREHOUSE:-$HERMES_HOME/warehouse}/features/sides_user/ds=*" >/dev/null; then
      bash "$(dirname "$0")/gateway.sh" start >/dev/null
      bash "$(dirname "$0")/stream.sh" start
    else
      echo "streaming engine: not started (no nightly has run yet: make run)"
    fi
    echo "stop them all with: make ui-stop"
    ;;
  stop)
    for n in airflow-api airflow-scheduler airflow-dag-processor airflow-triggerer airflow-standalone; do stop_one "$n"; done
    stop_one mlflow-server
    stop_one configcenter
    bash "$(dirname "$0")/stream.sh" stop
    bash "$(dirname "$0")/gateway.sh" stop
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
