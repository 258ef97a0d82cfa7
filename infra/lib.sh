# Shared by the infra scripts: start a server in its own process group, stop it by that group's PID.
run_dir="$HERMES_HOME/run"; log_dir="$HERMES_HOME/logs"; mkdir -p "$run_dir" "$log_dir"

running() {  # running NAME: true when NAME's PID file points at a live process
  [ -f "$run_dir/$1.pid" ] && alive "$(cat "$run_dir/$1.pid")"
}

port_taken() {  # port_taken PORT: true when something accepts connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

require_free_port() {  # require_free_port NAME PORT VAR: fail when PORT is held by a process that is not our NAME
  local name=$1 port=$2 var=$3
  running "$name" && return 0
  if port_taken "$port"; then
    echo "cannot start $name: port $port on 127.0.0.1 is held by another process (not the $name this project" \
         "started); stop it or choose another port with $var" >&2
    return 1
  fi
}

start_bg() {  # start_bg NAME CMD...: setsid CMD in the background, log to logs/NAME.log, PID to run/NAME.pid
  local name=$1; shift
  running "$name" && return 0
  setsid "$@" >"$log_dir/$name.log" 2>&1 < /dev/null &
  echo $! >"$run_dir/$name.pid"
}

alive() {  # alive PID: the process exists and is not a corpse. A script that started a server and stops it again is
  # its parent and never reaps it: kill -0 alone would wait out the whole grace period on a zombie. A killed
  # multi-threaded leader shows Z while its other threads still exit, holding its sockets: those count as alive.
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed -E 's/^.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ] && return 0
  local tasks=("/proc/$1/task/"*)
  [ "${#tasks[@]}" -gt 1 ]
}

stop_one() {  # stop_one NAME [GRACE_SECONDS]: TERM the process group, wait (30 s), then KILL what is left
  local name=$1 pidf="$run_dir/$1.pid" grace=${2:-30}
  [ -f "$pidf" ] || return 0
  local pid; pid=$(cat "$pidf")
  if alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 2))); do alive "$pid" || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do alive "$pid" || break; sleep 0.25; done  # SIGKILL is delivered, not yet done
    echo "stopped $name (pid group $pid)"
  fi
  rm -f "$pidf"
}

wait_http() {  # wait_http URL SECONDS [NAME]: poll until the URL answers (any HTTP status), fail after SECONDS
  local url=$1 limit=$2 name=${3:-}
  for _ in $(seq 1 $((limit * 4))); do
    # our process first: an answer from a process that is not ours (it held the port) is no success
    if [ -n "$name" ] && ! running "$name"; then
      echo "$name exited while starting; its log:" >&2; tail -20 "$log_dir/$name.log" >&2; return 1
    fi
    curl -sS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.25
  done
  echo "no answer from $url after ${limit}s; see $log_dir" >&2; return 1
}

port_of() {  # port_of URL
  local hostport=${1#*://}; hostport=${hostport%%/*}; echo "${hostport##*:}"
}

infra_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
owned_servers=()
start_owned() {  # start_owned NAME...: infra/NAME.sh start; remember those not running before, for stop_owned
  local name
  for name in "$@"; do
    running "$name" || owned_servers+=("$name")
    bash "$infra_dir/$name.sh" start
  done
}

stop_owned() {  # stop_owned: stop (last started first) what start_owned started; leave servers that were up already
  local i
  for ((i = ${#owned_servers[@]} - 1; i >= 0; i--)); do bash "$infra_dir/${owned_servers[i]}.sh" stop >/dev/null; done
}
