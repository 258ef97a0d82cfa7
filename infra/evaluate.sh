#!/usr/bin/env bash
# `make evaluate`: Push 1.0 vs Hermes in a closed loop (lab/evaluation/) for each seed in $SEEDS.
# Starts the object store and the push gateway for the run (stopped on exit, unless they were running already).
set -euo pipefail
source "$(dirname "$0")/env.sh"
SEEDS="${SEEDS:-7}" EVAL_DAYS="${EVAL_DAYS:-3}" EVAL_USERS="${EVAL_USERS:-4000}"
log="$HERMES_HOME/logs"; mkdir -p "$log"

source "$(dirname "$0")/lib.sh"
trap stop_owned EXIT
start_owned s3 gateway

for seed in $SEEDS; do
  echo "== seed $seed: $EVAL_USERS users, $EVAL_DAYS days per policy (log: $log/evaluate-$seed.log)"
  start=$(date +%s)
  if ! hermes evaluate --seed "$seed" --days "$EVAL_DAYS" --users "$EVAL_USERS" >"$log/evaluate-$seed.log" 2>&1; then
    echo "evaluation for seed $seed FAILED:" >&2; grep -E "Error|error" "$log/evaluate-$seed.log" | tail -20 >&2
    exit 1
  fi
  cat "$HERMES_HOME/evaluation/seed=$seed/report.md"
  echo "(seed $seed: $(( $(date +%s) - start )) s)"
done
