#!/usr/bin/env bash
# `make run`: simulate a marketplace, run the nightly DAG through Airflow for one logical date, summarise.
# Everything lives under $HERMES_HOME (default ./var); whatever this script starts, it stops on exit
# (a server that was already running, e.g. from `make ui`, is left running).
set -euo pipefail
source "$(dirname "$0")/env.sh"
USERS="${USERS:-10000}" DAYS="${DAYS:-30}" SEED="${SEED:-7}" DS="${DS:-2026-10-30}"
started=$(date +%s)
log="$HERMES_HOME/logs"; mkdir -p "$log"

step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - started ))"; }

step "simulating $USERS users x $DAYS days (seed $SEED)"
hermes simulate --users "$USERS" --days "$DAYS" --seed "$SEED" 2>>"$log/simulate.log"

step "starting the object store (SeaweedFS on $HERMES_S3_ENDPOINT, stopped when this script ends)"
s3_was_running=no
[ -f "$HERMES_HOME/run/s3.pid" ] && kill -0 "$(cat "$HERMES_HOME/run/s3.pid")" 2>/dev/null && s3_was_running=yes
bash "$(dirname "$0")/s3.sh" start
[ "$s3_was_running" = yes ] || trap 'bash "$(dirname "$0")/s3.sh" stop >/dev/null' EXIT

step "preparing Airflow metadata in $AIRFLOW_HOME"
airflow db migrate >"$log/airflow-db.log" 2>&1
airflow dags reserialize >>"$log/airflow-db.log" 2>&1

step "running hermes_nightly for logical date $DS through Airflow (log: $log/nightly-$DS.log)"
if ! airflow dags test hermes_nightly "$DS" >"$log/nightly-$DS.log" 2>&1; then
  echo "hermes_nightly FAILED for $DS; the errors:" >&2
  grep -E "ERROR|Error|FAIL|rule=" "$log/nightly-$DS.log" | grep -v "Skipping registering" | tail -30 >&2
  exit 1
fi
grep -q "state=success" "$log/nightly-$DS.log" || { echo "hermes_nightly did not report success" >&2; exit 1; }

step "summary"
echo "hermes_nightly ds=$DS: success in $(( $(date +%s) - started )) s (task states: airflow tasks states-for-dag-run hermes_nightly <run_id>)"
airflow dags list-runs hermes_nightly 2>/dev/null | grep -E "run_id|$DS" | head -3 || true
echo
hermes summary --ds "$DS"
cat <<TXT

Look at it:
  make ui        # Airflow UI on http://127.0.0.1:${AIRFLOW__API__PORT} (login printed by the script), MLflow UI on http://127.0.0.1:5000
  make ui-stop   # stops both
  logs:          $log
TXT
