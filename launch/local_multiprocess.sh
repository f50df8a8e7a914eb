#!/usr/bin/env bash
# Runs `python -m sketchjax.main` as N cooperating JAX processes on this machine,
# each with M simulated CPU devices (N*M global devices), joined through a
# coordinator on 127.0.0.1 and a free port: a multi-host run without the hosts.
#
#   launch/local_multiprocess.sh [--processes=N] [--devices_per_process=M] \
#       --config=configs/quickstart.py:smoke --workdir=/tmp/mp [--config.x.y=v ...]
#
# Run it from the repository root. N defaults to 2, M to 4; every other argument
# goes to sketchjax.main unchanged and must include --workdir. Process i logs
# to <workdir>/logs/process_<i>.log; process 0's log is also followed here.
# Each process gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
# JAX_PROCESS_ID. The script waits for all processes; when one fails it stops
# the others and exits with the failed one's status (0 when all succeed). A
# process preempted by SIGTERM/SIGINT (status 75: it checkpointed and stopped,
# and so do the others, after the same step) is waited for like a finished
# one; the script then exits with 75.
# PYTHON (default: python) selects the interpreter.
set -euo pipefail

processes=2
devices_per_process=4
main_args=()
workdir=""
expect_workdir=0
for arg in "$@"; do
  if (( expect_workdir )); then
    workdir="$arg"
    expect_workdir=0
  fi
  case "$arg" in
    --processes=*) processes="${arg#*=}"; continue ;;
    --devices_per_process=*) devices_per_process="${arg#*=}"; continue ;;
    --workdir=*) workdir="${arg#*=}" ;;
    --workdir) expect_workdir=1 ;;
  esac
  main_args+=("$arg")
done

for value in "$processes" "$devices_per_process"; do
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    echo "local_multiprocess.sh: --processes and --devices_per_process take a positive" \
         "integer, got '$value'" >&2
    exit 2
  fi
done
if [[ -z "$workdir" ]]; then
  echo "local_multiprocess.sh: pass --workdir=<dir> (the logs go to <dir>/logs)" >&2
  exit 2
fi

python="${PYTHON:-python}"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log_dir="$workdir/logs"
mkdir -p "$log_dir"

pids=()
follower=""

stop_all() {  # TERM to every process still running, KILL after 10 s; ends the log follower.
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 20); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -n "$follower" ]]; then kill "$follower" 2>/dev/null || true; fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "local_multiprocess.sh: $processes processes x $devices_per_process CPU devices," \
     "coordinator 127.0.0.1:$port, logs in $log_dir" >&2
for (( i = 0; i < processes; i++ )); do
  log="$log_dir/process_$i.log"
  : > "$log"
  JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" \
  XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices_per_process" \
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" \
  JAX_COORDINATOR_BIND_ADDRESS="127.0.0.1:$port" \
  JAX_NUM_PROCESSES="$processes" \
  JAX_PROCESS_ID="$i" \
    "$python" -m sketchjax.main "${main_args[@]}" > "$log" 2>&1 &
  pids+=("$!")
done
tail -n +1 -f "$log_dir/process_0.log" &
follower="$!"

# Poll rather than `wait -n` (absent from macOS's bash 3.2).
finished=()
finished_count=0
preempted=0
PREEMPTED=75  # sketchjax.main's status for a run stopped with a checkpoint
while (( finished_count < processes )); do
  for (( i = 0; i < processes; i++ )); do
    if [[ -n "${finished[$i]:-}" ]] || kill -0 "${pids[$i]}" 2>/dev/null; then
      continue
    fi
    code=0
    wait "${pids[$i]}" || code=$?
    if (( code == PREEMPTED )); then
      preempted=1
    elif (( code != 0 )); then
      echo "local_multiprocess.sh: process $i exited with status $code; stopping the" \
           "others. Last lines of $log_dir/process_$i.log:" >&2
      tail -n 30 "$log_dir/process_$i.log" >&2
      exit "$code"
    fi
    finished[$i]=1
    finished_count=$(( finished_count + 1 ))
  done
  if (( finished_count < processes )); then sleep 0.5; fi
done
if (( preempted )); then
  echo "local_multiprocess.sh: preempted; the same command resumes the run" >&2
  exit "$PREEMPTED"
fi
echo "local_multiprocess.sh: all $processes processes finished" >&2
