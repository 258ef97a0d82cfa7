# Sourced by the Makefile and infra scripts: the environment every Hermes process shares.
# Only variables are set here; nothing is started. Override any of them before calling make.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HERMES_HOME="${HERMES_HOME:-$REPO/var}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$HERMES_HOME/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$REPO/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="${AIRFLOW__LOGGING__BASE_LOG_FOLDER:-$AIRFLOW_HOME/logs}"
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
# Task runners reach the API server here; without it they call localhost:8080 whatever port the API uses.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://127.0.0.1:$AIRFLOW__API__PORT/execution/}"
export MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="${AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT:-60}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$HERMES_HOME/mlflow/mlflow.db}"
export PYSPARK_PYTHON="$REPO/.venv/bin/python"
export PATH="$REPO/.venv/bin:$PATH"
mkdir -p "$HERMES_HOME" "$AIRFLOW_HOME" "$HERMES_HOME/mlflow"
# Local secrets (S3 keys, gateway token): generated once per HERMES_HOME, mode 600, never committed or logged.
# Set the variables yourself to use real credentials instead.
if [ ! -f "$HERMES_HOME/secrets.env" ]; then
  ( umask 077; "$(command -v python3)" - >"$HERMES_HOME/secrets.env" <<'PY'
import secrets
print(f"HERMES_LOCAL_S3_KEY=hermes{secrets.token_hex(6)}")
print(f"HERMES_LOCAL_S3_SECRET={secrets.token_urlsafe(30)}")
print(f"HERMES_LOCAL_GATEWAY_TOKEN={secrets.token_urlsafe(30)}")
PY
  )
fi
for name in HERMES_LOCAL_PG_PASSWORD HERMES_LOCAL_UI_TOKEN HERMES_LOCAL_EVENTS_TOKEN; do   # added later than the others
  grep -q "^$name=" "$HERMES_HOME/secrets.env" ||
    echo "$name=$("$(command -v python3)" -c 'import secrets; print(secrets.token_hex(16))')" >>"$HERMES_HOME/secrets.env"
done
# shellcheck disable=SC1091
source "$HERMES_HOME/secrets.env"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-$HERMES_LOCAL_S3_KEY}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-$HERMES_LOCAL_S3_SECRET}"
export HERMES_GATEWAY_TOKEN="${HERMES_GATEWAY_TOKEN:-$HERMES_LOCAL_GATEWAY_TOKEN}"
export HERMES_PG_PASSWORD="${HERMES_PG_PASSWORD:-$HERMES_LOCAL_PG_PASSWORD}"
export HERMES_UI_TOKEN="${HERMES_UI_TOKEN:-$HERMES_LOCAL_UI_TOKEN}"
export HERMES_UI_PORT="${HERMES_UI_PORT:-8090}"
export HERMES_EVENTS_TOKEN="${HERMES_EVENTS_TOKEN:-$HERMES_LOCAL_EVENTS_TOKEN}"   # producers of the live event API
export HERMES_EVENTS_PORT="${HERMES_EVENTS_PORT:-8470}"
export HERMES_S3_ENDPOINT="${HERMES_S3_ENDPOINT:-http://127.0.0.1:8333}"
export HERMES_GATEWAY_URL="${HERMES_GATEWAY_URL:-http://127.0.0.1:8480}"
