#!/usr/bin/env bash
# A Spark standalone cluster on 127.0.0.1 from the pyspark distribution: one master and two workers
# (1 core, 2 GiB each), started with spark-class, stopped by their PIDs. Jobs use it with
# HERMES_SPARK_MASTER=spark://127.0.0.1:$SPARK_MASTER_PORT; the session factory ships the project's code.
# usage: infra/spark-cluster.sh start|stop|url      (SPARK_MASTER_PORT default 7077; web UIs on +1000..+1002)
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib.sh"
port="${SPARK_MASTER_PORT:-7077}"
export SPARK_HOME; SPARK_HOME=$(python -c "import os, pyspark; print(os.path.dirname(pyspark.__file__))")
export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR="$log_dir" SPARK_WORKER_DIR="$HERMES_HOME/spark-work"
url="spark://127.0.0.1:$port"

case "${1:-start}" in
  start)
    mkdir -p "$SPARK_WORKER_DIR"
    start_bg spark-master "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host 127.0.0.1 --port "$port" --webui-port $((port + 1000))
    wait_http "http://127.0.0.1:$((port + 1000))/" 60 spark-master
    for w in 1 2; do
      start_bg "spark-worker-$w" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$url" \
        --host 127.0.0.1 --cores 1 --memory 2g --webui-port $((port + 1000 + w)) --work-dir "$SPARK_WORKER_DIR"
    done
    for w in 1 2; do wait_http "http://127.0.0.1:$((port + 1000 + w))/" 60 "spark-worker-$w"; done
    # the master knows both workers before anyone submits
    for _ in $(seq 1 120); do
      n=$(curl -s "http://127.0.0.1:$((port + 1000))/json/" | python -c "import json,sys; print(sum(w['state']=='ALIVE' for w in json.load(sys.stdin)['workers']))" 2>/dev/null || echo 0)
      [ "$n" = 2 ] && break; sleep 0.25
    done
    [ "$n" = 2 ] || { echo "spark workers did not register with $url" >&2; exit 1; }
    echo "spark cluster ready: $url (2 workers)"
    ;;
  stop) for n in spark-worker-1 spark-worker-2 spark-master; do stop_one "$n"; done ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
