#!/usr/bin/env bash
# `make bench-nightly`: the whole hermes_nightly DAG at several world sizes (bench/nightly.py), with the object
# store the batches task writes to started here and stopped on exit (left alone if it was already running).
# usage: infra/bench-nightly.sh [--users 50000 200000 1000000] [--days 30]
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"
trap stop_owned EXIT
start_owned s3
python "$REPO/bench/nightly.py" "$@"
