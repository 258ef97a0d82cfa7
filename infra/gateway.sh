#!/usr/bin/env bash
# The local push gateway (infra/gateway.py) on 127.0.0.1, port from HERMES_GATEWAY_URL, bearer token
# HERMES_GATEWAY_TOKEN, receipts in $HERMES_HOME/gateway/receipts.sqlite. Faults: HERMES_GATEWAY_FAULTS=<json file>.
# usage: infra/gateway.sh start|stop
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"
port=$(port_of "$HERMES_GATEWAY_URL")
project=$(python - <<'PY'
from core.config.loader import load_config
from core.settings import Settings
print(load_config(Settings.from_env().conf_dir).config.platform.gateway.project)
PY
)

case "${1:-start}" in
  start)
    require_free_port gateway "$port" HERMES_GATEWAY_URL
    start_bg gateway python "$REPO/infra/gateway.py" --port "$port" --project "$project" \
      --db "$HERMES_HOME/gateway/receipts.sqlite" ${HERMES_GATEWAY_FAULTS:+--config "$HERMES_GATEWAY_FAULTS"}
    wait_http "http://127.0.0.1:$port/healthz" 30 gateway
    echo "gateway ready on http://127.0.0.1:$port (project $project)"
    ;;
  stop) stop_one gateway ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
