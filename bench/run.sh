#!/usr/bin/env bash
# bench/run.sh — one load run comparing the gateway with a bare receiver and with the official Lark
# SDKs' webhook receivers, on this machine, loopback (127.0.0.1) only.
#
# Every system gets the same work: unique `hire.referral_account.assets_update_v1` events, each
# AES-encrypted and signed (Encrypt Key + Verification Token set on every receiver), sent by
# `loadgen run` in a closed loop over $CONNS keep-alive connections for $SECS s. The systems are
# interleaved over $ROUNDS rounds (round 1: every system, round 2: every system, ...) so a drift of
# the machine hits them all alike. Each system is started fresh before its turn and stopped after.
#
#   baseline         `loadgen baseline`: single-thread hyper receiver, verify + decrypt + token, no store
#   gateway          target/release/gateway, fresh store, logger plugin routed with fsync = "always";
#                    `--metrics` makes loadgen wait until every stored event was delivered (drain)
#   gateway-nofsync  the same with the logger's fsync = "never"
#   node-cluster     @larksuiteoapi/node-sdk (latest) EventDispatcher + adaptDefault on
#                    http.createServer (bench/receivers/node/server.js), node:cluster x $NODE_WORKERS
#   node-1           the same, one process
#   python-gunicorn  lark-oapi (latest) EventDispatcherHandler + its Flask adapter
#                    (bench/receivers/python/app.py) under gunicorn, $PY_WORKERS workers
#
# Before loading a system the script sends it one event signed with the current time (built here
# with openssl + sha256sum, independent of loadgen) and requires a 200 (and the "success" body
# where the receiver gives one); it also sends one with a wrong signature and one with a wrong
# token and notes what the receiver answered. Per run it collects req/s, p50/p99/p99.9 (ms), the
# server's CPU time per request (utime+stime from /proc of the server process and all its
# descendants, plus the reaped children's cutime+cstime, before and after the load; for the gateway
# rows "after" is after the drain, so delivery work is included) and, for the gateway rows, the
# end-to-end rate (events stored / (load + drain time)) and the drain time.
# At the end it prints ONE markdown table and writes it, with the date, the machine and the command
# line, to bench/results/latest.md (override with OUT=...).
#
# Usage: bench/run.sh            (after: cargo build --release -p gateway -p logger -p gateway-bench)
# Env knobs (defaults):
#   ROUNDS=2 SECS=15 CONNS=32      rounds, seconds per load, connections
#   SYSTEMS="baseline gateway gateway-nofsync node-cluster node-1 python-gunicorn"  which rows, in order
#   WORK=/tmp/gateway-bench        scratch folder: npm install in $WORK/node, pip venv in $WORK/venv
#                                  (kept between runs), per-run data in $WORK/run.XXXXXX (removed)
#   PORT_BASE=17800                ports PORT_BASE+1.. (webhooks) and PORT_BASE+101.. (gateway admin)
#   NODE_WORKERS=2 PY_WORKERS=2    processes of the node-cluster and python-gunicorn rows
#   PY_THREADS=4                   gunicorn gthread threads per worker (keep-alive needs gthread: the
#                                  default sync worker closes every connection after one answer)
#   SKIP_INSTALL=1                 use what is in $WORK as is (no npm/pip call)
#   LOADGEN_ARGS=                  extra arguments for every `loadgen run` (e.g. "--threads 1")
#   PREBUILD_PER_SEC=120000        requests built (encrypted and signed) before each load: SECS x this,
#                                  more than any row answers, so no row's requests are built during
#                                  its load on the same cores (that cost ~9 us of CPU per request:
#                                  it held the fastest rows down most); a row that outran it is noted
#   KEEP=1                         keep the per-run folder (configs, server logs, loadgen JSON)
#   OUT=bench/results/latest.md    where the table goes
# Needs: bash, curl, jq, openssl, sha256sum, awk; node + npm and python3 (with venv) for the SDK rows
# (a row whose install fails is reported as failed and the others run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
cmdline="bench/run.sh${*:+ $*}"
for v in PREBUILD_PER_SEC SKIP_INSTALL LOADGEN_ARGS PY_THREADS PY_WORKERS NODE_WORKERS SYSTEMS CONNS SECS ROUNDS; do
  [ -n "${!v:-}" ] && cmdline="$v=${!v} $cmdline"
done
rounds=${ROUNDS:-2}
secs=${SECS:-15}
prebuild=$((secs * ${PREBUILD_PER_SEC:-120000}))
conns=${CONNS:-32}
systems=${SYSTEMS:-baseline gateway gateway-nofsync node-cluster node-1 python-gunicorn}
work=${WORK:-/tmp/gateway-bench}
port_base=${PORT_BASE:-17800}
node_workers=${NODE_WORKERS:-2}
py_workers=${PY_WORKERS:-2}
py_threads=${PY_THREADS:-4}
out=${OUT:-$here/bench/results/latest.md}
read -r -a loadgen_extra <<<"${LOADGEN_ARGS:-}"
key=bench-encrypt-key
token=bench-verification-token
path=/webhook/event
host=127.0.0.1
tick=$(getconf CLK_TCK)

gateway_bin=$here/target/release/gateway
logger_so=$here/target/release/liblogger.so
loadgen=$here/target/release/loadgen
for f in "$gateway_bin" "$logger_so" "$loadgen"; do
  if [ ! -x "$f" ] && [ ! -f "$f" ]; then
    echo "missing $f: run  cargo build --release -p gateway -p logger -p gateway-bench" >&2
    exit 1
  fi
done
for tool in curl jq openssl sha256sum awk; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

mkdir -p "$work"
run_dir=$(mktemp -d "$work/run.XXXXXX")

# ---------------------------------------------------------------- processes and their CPU time
started=()     # every server root pid this script started
srv_pid=''     # the server of the current turn

# proc_table: bench/lib.sh.

# The pid itself and all its descendants, one per line.
tree_pids() {
  proc_table | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      for (p in parent) {
        q = p
        for (depth = 0; depth < 64 && q != "" && q != 0; depth++) {
          if (q == root) { print p; break }
          q = parent[q]
        }
      }
    }'
}

# CPU ticks of the pid and all its descendants (and the children they reaped).
tree_ticks() {
  proc_table | awk -v root="$1" '
    { parent[$1] = $2; ticks[$1] = $3 }
    END {
      total = 0
      for (p in parent) {
        q = p
        for (depth = 0; depth < 64 && q != "" && q != 0; depth++) {
          if (q == root) { total += ticks[p]; break }
          q = parent[q]
        }
      }
      print total
    }'
}

# Stops a server and everything it forked: TERM to the root, then KILL to what is left.
stop_tree() {
  local root=$1 pids p
  [ -n "$root" ] || return 0
  pids=$(tree_pids "$root" || true)
  kill -TERM "$root" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$root" 2>/dev/null || break
    sleep 0.1
  done
  for p in $pids; do
    kill -KILL "$p" 2>/dev/null || true
  done
  wait "$root" 2>/dev/null || true
}

lg_pid=''      # the loadgen run in progress
cleanup() {
  local p
  if [ -n "$lg_pid" ]; then kill -TERM "$lg_pid" 2>/dev/null || true; wait "$lg_pid" 2>/dev/null || true; fi
  for p in "${started[@]}"; do
    stop_tree "$p"
  done
  if [ -z "${KEEP:-}" ]; then rm -rf "$run_dir"; else echo "kept $run_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until something listens on host:port (or the server died / 20 s passed).
wait_port() {
  local port=$1 pid=$2
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- one signed event, by hand
# probe URL [good|badsig|badtoken] -> prints "STATUS BODY"
probe() {
  local url=$1 mode=${2:-good} i ts nonce keyhex iv plain enc body sig tok=$token
  ts=$(date +%s)
  nonce=$RANDOM$RANDOM
  [ "$mode" = badtoken ] && tok=not-the-token
  keyhex=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
  iv=$(openssl rand -hex 16)
  plain='{"schema":"2.0","header":{"event_id":"probe-'$ts-$nonce-$mode'","event_type":"hire.referral_account.assets_update_v1","create_time":"'$ts'000","token":"'$tok'","app_id":"cli_probe","tenant_key":"probe"},"event":{"account_id":"7000000000000000001","assets":{"confirmed_bonus":{"point_bonus":1,"cash_bonus":[{"currency_type":"CNY","amount":1.5}]}},"modify_time":"'$ts'000"}}'
  enc=$( { for ((i = 0; i < 32; i += 2)); do printf '%b' "\\x${iv:i:2}"; done
           printf %s "$plain" | openssl enc -aes-256-cbc -K "$keyhex" -iv "$iv"; } | base64 -w0)
  body='{"encrypt":"'$enc'"}'
  sig=$(printf %s "$ts$nonce$key$body" | sha256sum | cut -d' ' -f1)
  [ "$mode" = badsig ] && sig=$(printf %s "x$sig" | sha256sum | cut -d' ' -f1)
  curl -sS -m 5 -o "$run_dir/probe.body" -w '%{http_code}' \
    -H 'Content-Type: application/json; charset=utf-8' -H "X-Lark-Request-Timestamp: $ts" \
    -H "X-Lark-Request-Nonce: $nonce" -H "X-Lark-Signature: $sig" -H "X-Request-Id: probe-$nonce" \
    --data-binary "$body" "$url" 2>/dev/null || true
  local answer
  answer=$(head -c 200 "$run_dir/probe.body" 2>/dev/null | tr -d '\n')
  printf ' %s\n' "${answer:-(empty body)}"
}

# ---------------------------------------------------------------- SDK installs (scratch folder)
declare -A unavailable=()   # system -> why it cannot run
node_sdk_version='' py_sdk_version=''
wants() { [[ " $systems " == *" $1 "* ]]; }

if wants node-cluster || wants node-1; then
  why=''
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    why='node/npm not installed'
  elif [ -z "${SKIP_INSTALL:-}" ]; then
    mkdir -p "$work/node"
    [ -f "$work/node/package.json" ] || echo '{"name":"bench-node","private":true}' >"$work/node/package.json"
    if ! (cd "$work/node" && timeout 300 npm install --no-audit --no-fund --loglevel=error --fetch-retry-maxtimeout=15000 \
            @larksuiteoapi/node-sdk@latest) >"$run_dir/npm.log" 2>&1; then
      why="npm install @larksuiteoapi/node-sdk failed: $(grep -m1 -iE 'err|fail' "$run_dir/npm.log" || tail -n1 "$run_dir/npm.log")"
    fi
  fi
  pkg=$work/node/node_modules/@larksuiteoapi/node-sdk/package.json
  if [ -f "$pkg" ]; then
    node_sdk_version=$(jq -r .version "$pkg")
    [ -n "$why" ] && echo "note: $why; using the installed @larksuiteoapi/node-sdk $node_sdk_version"
    why=''
  elif [ -z "$why" ]; then
    why="no @larksuiteoapi/node-sdk in $work/node"
  fi
  if [ -n "$why" ]; then
    echo "node rows skipped: $why"
    unavailable[node-cluster]=$why; unavailable[node-1]=$why
  fi
fi

if wants python-gunicorn; then
  why=''
  venv=$work/venv
  if [ -z "${SKIP_INSTALL:-}" ]; then
    if [ ! -x "$venv/bin/pip" ] && ! python3 -m venv "$venv" >"$run_dir/venv.log" 2>&1; then
      why="python3 -m venv failed: $(tail -n1 "$run_dir/venv.log")"
    elif ! timeout 300 "$venv/bin/pip" install --disable-pip-version-check -q --timeout 30 \
            --upgrade lark-oapi flask gunicorn >"$run_dir/pip.log" 2>&1; then
      why="pip install lark-oapi flask gunicorn failed: $(grep -m1 -iE 'error' "$run_dir/pip.log" || tail -n1 "$run_dir/pip.log")"
    fi
  fi
  if [ -x "$venv/bin/gunicorn" ] && "$venv/bin/python" -c 'import lark_oapi, flask' 2>/dev/null; then
    py_sdk_version=$("$venv/bin/python" -c 'from importlib.metadata import version as v; print(v("lark-oapi"))')
    [ -n "$why" ] && echo "note: $why; using the installed lark-oapi $py_sdk_version"
    why=''
  elif [ -z "$why" ]; then
    why="no lark-oapi/flask/gunicorn in $venv"
  fi
  if [ -n "$why" ]; then
    echo "python row skipped: $why"
    unavailable[python-gunicorn]=$why
  fi
fi

# ---------------------------------------------------------------- starting one system
# start_SYSTEM DIR: starts the server in the background, sets srv_pid, url, metrics, port.
sys_index() {
  local i=0 s
  for s in baseline gateway gateway-nofsync node-cluster node-1 python-gunicorn; do
    i=$((i + 1)); [ "$s" = "$1" ] && { echo "$i"; return; }
  done
  echo 99
}

start_gateway() {  # DIR FSYNC
  local dir=$1 fsync=$2 admin=$((port + 100))
  mkdir -p "$dir/data"
  gateway_toml "$dir/gateway.toml" "$host:$port" "$host:$admin" "$path" "$token" "$key" \
    "path = \"$dir/data/gateway.db\"" "$logger_so" "$dir/data/assets.jsonl" "$fsync"
  "$gateway_bin" run --config "$dir/gateway.toml" >"$dir/server.log" 2>&1 &
  srv_pid=$!
  metrics="http://$host:$admin/metrics"
  for _ in $(seq 1 200); do
    curl -sf "http://$host:$admin/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$srv_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_system() {  # SYSTEM DIR
  local sys=$1 dir=$2
  port=$((port_base + $(sys_index "$sys")))
  url="http://$host:$port$path"
  metrics=''
  mkdir -p "$dir"
  case $sys in
    baseline)
      "$loadgen" baseline --listen "$host:$port" --key "$key" --token "$token" >"$dir/server.log" 2>&1 &
      srv_pid=$! ;;
    gateway) start_gateway "$dir" always || { started+=("$srv_pid"); return 1; } ;;
    gateway-nofsync) start_gateway "$dir" never || { started+=("$srv_pid"); return 1; } ;;
    node-cluster|node-1)
      local n=1
      [ "$sys" = node-cluster ] && n=$node_workers
      PORT=$port HOST=$host KEY=$key TOKEN=$token PATH_=$path WORKERS=$n \
        NODE_PATH=$work/node/node_modules NODE_ENV=production \
        node "$here/bench/receivers/node/server.js" >"$dir/server.log" 2>&1 &
      srv_pid=$! ;;
    python-gunicorn)
      local gargs=()
      "$work/venv/bin/gunicorn" --help 2>/dev/null | grep -q -- --no-control-socket && gargs+=(--no-control-socket)
      KEY=$key TOKEN=$token PATH_=$path \
        "$work/venv/bin/gunicorn" -w "$py_workers" -k gthread --threads "$py_threads" \
        -b "$host:$port" --chdir "$here/bench/receivers/python" --log-level warning \
        "${gargs[@]}" app:app >"$dir/server.log" 2>&1 &
      srv_pid=$! ;;
    *) echo "unknown system $sys" >&2; return 1 ;;
  esac
  started+=("$srv_pid")
  wait_port "$port" "$srv_pid"
}

# ---------------------------------------------------------------- the rounds
declare -A rps=() p50=() p99=() p999=() reqs=() ticks=() e2e=() drain=() failed=() notes=() errs=()
note() { notes[$1]="${notes[$1]:+${notes[$1]}; }$2"; }

loadavg0=$(cut -d' ' -f1-3 /proc/loadavg)
steal0=$(steal_ticks)
echo "run: $rounds round(s) x [$systems], $conns connections, $secs s each; scratch $run_dir"
for round in $(seq 1 "$rounds"); do
  for sys in $systems; do
    if [ -n "${unavailable[$sys]:-}" ]; then failed[$sys]=${unavailable[$sys]}; continue; fi
    dir=$run_dir/$sys-$round
    srv_pid=''
    if ! start_system "$sys" "$dir"; then
      failed[$sys]="round $round: did not start ($(tail -n1 "$dir/server.log" 2>/dev/null | cut -c1-160))"
      echo "$sys round $round: did not start; see the last line of its log: $(tail -n1 "$dir/server.log" 2>/dev/null)"
      stop_tree "$srv_pid"; continue
    fi
    answer=$(probe "$url" good)
    status=${answer%% *}
    if [ "$status" != 200 ] || [[ "$answer" != *success* ]]; then
      failed[$sys]="round $round: a freshly signed event got: $answer"
      echo "$sys round $round: a freshly signed event got: $answer (server log: $(tail -n1 "$dir/server.log" | cut -c1-160))"
      stop_tree "$srv_pid"; continue
    fi
    if [ "$round" = 1 ]; then
      note "$sys" "signed event: $answer"
      note "$sys" "bad signature: $(probe "$url" badsig)"
      note "$sys" "wrong token: $(probe "$url" badtoken)"
    fi
    metric_args=()
    [ -n "$metrics" ] && metric_args=(--metrics "$metrics")
    cpu0=$(tree_ticks "$srv_pid")
    # In the background + wait, so that a TERM/INT reaches the trap at once.
    "$loadgen" run --url "$url" --key "$key" --token "$token" --connections "$conns" \
      --duration "${secs}s" --prebuild "$prebuild" "${metric_args[@]}" "${loadgen_extra[@]}" --json \
      >"$dir/loadgen.json" 2>"$dir/loadgen.err" &
    lg_pid=$!
    if ! wait "$lg_pid"; then
      lg_pid=''
      failed[$sys]="round $round: loadgen failed: $(tail -n1 "$dir/loadgen.err" | cut -c1-200)"
      echo "$sys round $round: loadgen failed: $(tail -n1 "$dir/loadgen.err")"
      stop_tree "$srv_pid"; continue
    fi
    lg_pid=''
    cpu1=$(tree_ticks "$srv_pid")
    if ! kill -0 "$srv_pid" 2>/dev/null; then note "$sys" "round $round: the server died during the load"; fi
    stop_tree "$srv_pid"
    j=$dir/loadgen.json
    k="$sys,$round"
    rps[$k]=$(jq -r '.rps' "$j")
    p50[$k]=$(jq -r '.latency_ms.p50' "$j")
    p99[$k]=$(jq -r '.latency_ms.p99' "$j")
    p999[$k]=$(jq -r '.latency_ms["p99.9"]' "$j")
    reqs[$k]=$(jq -r '.requests' "$j")
    built=$(jq -r '.prebuilt // empty' "$j")
    if [ -n "$built" ] && [ "${reqs[$k]}" -gt "$built" ]; then
      note "$sys" "round $round: $((reqs[$k] - built)) of ${reqs[$k]} requests were built during the load (past --prebuild $built)"
    fi
    ticks[$k]=$((cpu1 - cpu0))
    bad=$(jq -r '[(.statuses | to_entries[] | select(.key != "200") | "status \(.key): \(.value)"),
                  (.transport_errors | to_entries[] | "\(.key): \(.value)")] | join(", ")' "$j")
    [ -n "$bad" ] && errs[$sys]="${errs[$sys]:+${errs[$sys]}; }round $round: $bad"
    if [ -n "$metrics" ]; then
      e2e[$k]=$(jq -r '.end_to_end_rps // empty' "$j")
      drain[$k]=$(jq -r '.drain_s // empty' "$j")
      [ "$(jq -r '.drain_timed_out // false' "$j")" = true ] && note "$sys" "round $round: drain TIMED OUT"
    fi
    printf '%-16s round %s: %8.0f req/s  p50 %7.2f  p99 %7.2f  p99.9 %7.2f ms  %s req  cpu %s ticks%s\n' \
      "$sys" "$round" "${rps[$k]}" "${p50[$k]}" "${p99[$k]}" "${p999[$k]}" "${reqs[$k]}" "${ticks[$k]}" \
      "${e2e[$k]:+  e2e $(printf '%.0f' "${e2e[$k]}")/s drain $(printf '%.2f' "${drain[$k]}") s}"
  done
done

# ---------------------------------------------------------------- the table
# join_by, fmt0, fmt2, mean_of, max_of: bench/lib.sh.

base=$(mean_of rps baseline)
table="| system | req/s (per round) | ratio to baseline | p99 ms | p99.9 ms | CPU µs/req | end-to-end/s (drain s) |
|---|---|---|---|---|---|---|"
for sys in $systems; do
  per=() e2e_per=() tot_ticks=0 tot_reqs=0
  for r in $(seq 1 "$rounds"); do
    k="$sys,$r"
    if [ -n "${rps[$k]:-}" ]; then
      per+=("$(fmt0 "${rps[$k]}")")
      tot_ticks=$((tot_ticks + ticks[$k])); tot_reqs=$((tot_reqs + reqs[$k]))
      [ -n "${e2e[$k]:-}" ] && e2e_per+=("$(fmt0 "${e2e[$k]}") ($(fmt2 "${drain[$k]}"))")
    else
      per+=("—")
    fi
  done
  mean=$(mean_of rps "$sys")
  if [ -z "$mean" ]; then
    table+=$'\n'"| $sys | failed: ${failed[$sys]:-no result} | | | | | |"
    continue
  fi
  ratio='—'
  [ -n "$base" ] && ratio=$(awk -v a="$mean" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
  cpu=$(awk -v t="$tot_ticks" -v n="$tot_reqs" -v hz="$tick" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "—" }')
  e2e_cell='—'
  [ ${#e2e_per[@]} -gt 0 ] && e2e_cell=$(join_by ' / ' "${e2e_per[@]}")
  per_cell=$(join_by ' / ' "${per[@]}")
  table+=$'\n'"| $sys | $per_cell | $ratio | $(fmt2 "$(max_of p99 "$sys")") | $(fmt2 "$(max_of p999 "$sys")") | $cpu | $e2e_cell |"
done

notes_text="p99 and p99.9: the worst round. CPU µs/req: server CPU time (process + descendants) over the load (for the gateway rows also the drain) / requests answered, all rounds together. Ratio: mean req/s / the baseline's mean req/s. End-to-end: events stored / (load + drain) s, per round, drain in parentheses."
extra=''
for sys in $systems; do
  [ -n "${errs[$sys]:-}" ] && extra+=$'\n'"- $sys: non-200 answers or transport errors: ${errs[$sys]}"
  [ -n "${failed[$sys]:-}" ] && [ -n "$(mean_of rps "$sys")" ] && extra+=$'\n'"- $sys: ${failed[$sys]}"
  [ -n "${notes[$sys]:-}" ] && extra+=$'\n'"- $sys: ${notes[$sys]}"
done
versions="gateway binary built $(date -u -r "$gateway_bin" '+%Y-%m-%d %H:%M UTC') (tree at run time: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$here" diff --quiet 2>/dev/null || echo '+dirty'))"
[ -n "$node_sdk_version" ] && versions+=", @larksuiteoapi/node-sdk $node_sdk_version on node $(node --version)"
[ -n "$py_sdk_version" ] && versions+=", lark-oapi $py_sdk_version on $("$work/venv/bin/python" --version 2>&1), gunicorn $("$work/venv/bin/gunicorn" --version 2>&1 | tr -d '()' | awk '{print $NF}') (gthread, $py_workers workers x $py_threads threads)"

echo
echo "$table"
echo
echo "$notes_text"
[ -n "$extra" ] && echo "${extra#$'\n'}"

model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
steal=$(steal_share "$steal0")
mkdir -p "$(dirname "$out")"
{
  echo "# Load comparison — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${model:-unknown model}; loadgen runs on the same machine (loopback); load average before the run: $loadavg0; CPU time taken by the hypervisor (steal, /proc/stat) over the run: $steal%"
  echo "- command: \`$cmdline\` ($rounds round(s), $conns connections, $secs s per load, closed loop)"
  echo "- versions: $versions"
  echo
  echo "$table"
  echo
  echo "$notes_text"
  [ -n "$extra" ] && echo "${extra#$'\n'}"
} >"$out"
echo
echo "written to ${out#"$here"/}"
