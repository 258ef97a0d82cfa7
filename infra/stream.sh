#!/usr/bin/env bash
# The live event API (hermes events-api, 127.0.0.1:$HERMES_EVENTS_PORT, bearer $HERMES_EVENTS_TOKEN) and the
# streaming trigger engine (hermes stream), each in its own process group, PIDs in $HERMES_HOME/run/.
# The engine needs a nightly run (its plan-day sides and the @champion model) and the push gateway.
# usage: infra/stream.sh start|stop|status
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"

case "${1:-start}" in
  start)
    require_free_port events-api "$HERMES_EVENTS_PORT" HERMES_EVENTS_PORT
    start_bg events-api hermes events-api --port "$HERMES_EVENTS_PORT"
    wait_http "http://127.0.0.1:$HERMES_EVENTS_PORT/healthz" 60 events-api
    start_bg stream hermes stream
    for _ in $(seq 1 240); do            # healthy = the engine reported (it does at once after loading the nightly)
      running stream || { echo "the streaming engine exited while starting; its log:" >&2; tail -20 "$log_dir/stream.log" >&2; exit 1; }
      hermes stream-status --max-silence 30 >/dev/null 2>&1 && break
      sleep 0.5
    done
    hermes stream-status --max-silence 30 >/dev/null
    echo "live events on http://127.0.0.1:$HERMES_EVENTS_PORT/v1/events (docs /docs); engine log $log_dir/stream.log"
    ;;
  stop) stop_one stream; stop_one events-api ;;
  status) hermes stream-status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
