#!/usr/bin/env bash
# `make evaluate`: Push 1.0 vs Hermes in a closed loop (lab/evaluation/) for each seed in $SEEDS.
# Starts the object store and the push gateway for the run (stopped on exit, unless they were running already).
set -euo pipefail
source "$(dirname "$0")/env.sh"
SEEDS="${SEEDS:-7}" EVAL_DAYS="${EVAL_DAYS:-3}" EVAL_USERS="${EVAL_USERS:-4000}"
VARIANT="${VARIANT:-base}"              # the kind of world (hermes simulate --variant)
extra=(); suffix=""
if [ "${COLD_START:-0}" = 1 ]; then extra+=(--cold-start); suffix="-cold"; fi   # COLD_START=1: no push history at all
if [ "${REALTIME:-0}" = 1 ]; then extra+=(--realtime); suffix="$suffix-rt"; fi   # REALTIME=1: + the streaming arm
log="$HERMES_HOME/logs"; mkdir -p "$log"

source "$(dirname "$0")/lib.sh"
trap stop_owned EXIT
start_owned s3 gateway

for seed in $SEEDS; do
  echo "== seed $seed: $EVAL_USERS users, $EVAL_DAYS days per policy (log: $log/evaluate-$seed.log)"
  start=$(date +%s)
  out="$HERMES_HOME/evaluation/$VARIANT$suffix/seed=$seed"
  if ! hermes evaluate --seed "$seed" --days "$EVAL_DAYS" --users "$EVAL_USERS" --variant "$VARIANT" "${extra[@]}" \
      --out "$out" >"$log/evaluate-$seed.log" 2>&1; then
    echo "evaluation for seed $seed FAILED:" >&2; grep -E "Error|error" "$log/evaluate-$seed.log" | tail -20 >&2
    exit 1
  fi
  cat "$out/report.md"
  echo "(seed $seed: $(( $(date +%s) - start )) s)"
done
