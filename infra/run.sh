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
# A DS outside the data fails in a second here, not minutes later in the DAG: name the days there are.
range=$(python -c "from core.settings import Settings; from core.warehouse import Warehouse
d = Warehouse(Settings.from_env().warehouse).raw_days('events'); print(d[0], d[-1]) if d else print('- -')")
first_day=${range% *} last_day=${range#* }
if [[ "$DS" < "$first_day" || "$DS" > "$last_day" ]]; then
  echo "DS=$DS is outside the data: raw/events has the days $first_day .. $last_day; run e.g. make run DS=$last_day" >&2
  exit 2
fi

source "$(dirname "$0")/lib.sh"
trap stop_owned EXIT
step "starting the object store (SeaweedFS on $HERMES_S3_ENDPOINT, stopped when this script ends)"
start_owned s3

step "starting the push gateway ($HERMES_GATEWAY_URL, stopped when this script ends)"
start_owned gateway

# `airflow dags test` runs the execution API in-process: its per-task request lines (task started, state updated,
# rendered fields: a sixth of the nightly log) belong in an API server's log, not in the DAG run's
export AIRFLOW__LOGGING__NAMESPACE_LEVELS="${AIRFLOW__LOGGING__NAMESPACE_LEVELS:-airflow.api_fastapi.execution_api=WARNING}"
step "preparing Airflow metadata in $AIRFLOW_HOME"
airflow db migrate >"$log/airflow-db.log" 2>&1
airflow dags reserialize >>"$log/airflow-db.log" 2>&1

step "running hermes_nightly for logical date $DS through Airflow (log: $log/nightly-$DS.log)"
nightly_started=$(date +%s)
if ! airflow dags test hermes_nightly "$DS" >"$log/nightly-$DS.log" 2>&1; then
  echo "hermes_nightly FAILED for $DS; the errors:" >&2
  grep -E "ERROR|Error|FAIL|rule=" "$log/nightly-$DS.log" | grep -v "Skipping registering" | tail -30 >&2
  exit 1
fi
grep -q "state=success" "$log/nightly-$DS.log" || { echo "hermes_nightly did not report success" >&2; exit 1; }
# A run that ran no task also says state=success (a date before the DAG's start): the plan report must be new.
plan_report=$(python -c "from core.settings import Settings; from core.warehouse import Warehouse
print(Warehouse(Settings.from_env().warehouse).report('plan', '$DS', 'plan'))")
if [ ! "$plan_report" -nt "$log/airflow-db.log" ]; then
  echo "hermes_nightly ran no task for $DS: no new plan report at $plan_report (see $log/nightly-$DS.log)" >&2
  exit 1
fi
# the UI cannot show an in-process run's task logs or true duration: say so on the run and its tasks
python infra/airflow_note.py hermes_nightly "$DS" "$log/nightly-$DS.log" --seconds $(( $(date +%s) - nightly_started )) \
  >"$log/airflow-notes.log" 2>&1 || echo "(could not note the run in Airflow; see $log/airflow-notes.log)" >&2

step "checking the batches as the scheduler would when they land (hermes_preflight, on the hermes_push_batches asset)"
if ! airflow dags test hermes_preflight "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)" >"$log/preflight-$DS.log" 2>&1 \
    || ! grep -q "state=success" "$log/preflight-$DS.log"; then
  echo "hermes_preflight FAILED for $DS; the errors:" >&2; grep -E "ERROR|Error" "$log/preflight-$DS.log" | tail -20 >&2
  exit 1
fi

SEND_DAY=$(python -c "from jobs.windows import send_day; print(send_day('$DS'))")
# The simulated world is replayed, not lived: receipts carry the planned send time, not today's clock.
export HERMES_RECEIPT_TIME=planned
step "delivering the busiest hour of $SEND_DAY through hermes_hourly (log: $log/hourly-$SEND_DAY.log)"
busiest=$(python -c "
import json; from core.settings import Settings; from core.warehouse import Warehouse
r = json.loads(Warehouse(Settings.from_env().warehouse).report('batches', '$DS', 'batches').read_text())
print(max(range(24), key=lambda h: r['hours'][h]))")
if ! airflow dags test hermes_hourly "${SEND_DAY}T$(printf %02d "$busiest"):00:00+00:00" -c '{"ramp": false}' \
    >"$log/hourly-$SEND_DAY.log" 2>&1; then
  echo "hermes_hourly FAILED; see $log/hourly-$SEND_DAY.log" >&2; grep -E "ERROR|Error" "$log/hourly-$SEND_DAY.log" | tail -20 >&2
  exit 1
fi
python infra/airflow_note.py hermes_hourly "${SEND_DAY}T$(printf %02d "$busiest"):00:00+00:00" "$log/hourly-$SEND_DAY.log" \
  >>"$log/airflow-notes.log" 2>&1 || echo "(could not note the run in Airflow; see $log/airflow-notes.log)" >&2
step "catching up the other hours of $SEND_DAY (hermes deliver --hour all: the busiest hour is already acked)"
hermes deliver --day "$SEND_DAY" --hour all --no-ramp >"$log/deliver-$SEND_DAY.log" 2>&1 || { tail -30 "$log/deliver-$SEND_DAY.log" >&2; exit 1; }

step "summary"
echo "hermes_nightly ds=$DS: success in $(( $(date +%s) - started )) s (task states: airflow tasks states-for-dag-run hermes_nightly <run_id>)"
airflow dags list-runs hermes_nightly 2>/dev/null | grep -E "run_id|$DS" | head -3 || true
echo
hermes summary --ds "$DS"
step "live events through the streaming engine (hermes events-api + hermes stream, stopped when this script ends)"
start_owned stream
python -m jobs.live_demo
hermes stream-status

cat <<TXT

Look at it:
  make ui        # Airflow UI on http://127.0.0.1:${AIRFLOW__API__PORT} (login printed by the script), MLflow UI on
                 # http://127.0.0.1:${MLFLOW_PORT}, Configuration Center on http://127.0.0.1:${HERMES_UI_PORT}
  make ui-stop   # stops them
  plan report:   open \$HERMES_HOME/warehouse/reports/plan/ds=$DS/plan.html
  logs:          $log
TXT
