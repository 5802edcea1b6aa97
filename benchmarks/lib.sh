# Sourced by the benchmark scripts: the processes a script starts, stopped by PID when it exits,
# and a wait for a port to accept.
#
#   pids+=($!)            after starting a process
#   trap stop_started EXIT   (or a cleanup of one's own that calls it)
#   wait_port PORT        waits up to 30 s

pids=()

stop_started() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

wait_port() {
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2
  return 1
}
