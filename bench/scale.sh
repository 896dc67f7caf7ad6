#!/usr/bin/env bash
# bench/scale.sh — the gateway with a large store and with a large backlog, on this machine,
# loopback (127.0.0.1) only. Two measurements, each on the config of bench/run.sh's `gateway` row
# (bench/lib.sh: the logger routed with fsync = "always"):
#
# 1. Ingest against stored events: `loadgen run` (closed loop, $SECS s) on a fresh store, then
#    $FILL_SECS s more of closed-loop load to fill the store, then $SECS s again on the same
#    gateway. Reports both rates, the change, and how many events were stored before the second.
#    A long load slows this machine down by itself (its disk, the page cache), so the first
#    change mixes the store's size with the minute of load before it; then $ROUNDS interleaved
#    pairs separate the two: a fresh store, then the filled store (the gateway restarted on it),
#    $SECS s each, and the change between their means.
# 2. A restart with a backlog: the logger throttled (`[delivery] max_batch = 1`, the plugin's
#    `max_concurrency = 1`) under $BACKLOG_SECS s of load, so deliveries pile up; the gateway is
#    stopped (SIGTERM) and started on the normal config. Reports the pending count before the stop,
#    the time from the new process's start to its first delivery (a new line in the logger's
#    file) and to the last (`gateway_pending_deliveries` 0).
# Written to bench/results/scale.md (OUT=...).
#
# Usage: bench/scale.sh   (after: cargo build --release -p gateway -p logger -p gateway-bench)
# Env knobs (defaults): SECS=15 FILL_SECS=60 ROUNDS=2 BACKLOG_SECS=8 CONNS=32 PORT=17990 (admin PORT+1)
#   WORK=/tmp/gateway-bench KEEP= OUT=bench/results/scale.md
#   GATEWAY_BIN=target/release/gateway LOGGER_SO=target/release/liblogger.so (another build)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
bench_setup scale SECS FILL_SECS ROUNDS BACKLOG_SECS CONNS
secs=${SECS:-15}
fill_secs=${FILL_SECS:-60}
rounds=${ROUNDS:-2}
backlog_secs=${BACKLOG_SECS:-8}
srv_pid=''
cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$run"
}
trap cleanup EXIT

# write_config DIR: DIR/normal.toml (bench/lib.sh's config) and DIR/slow.toml (throttled logger).
write_config() {
  local dir=$1
  mkdir -p "$dir/data"
  gateway_toml "$dir/normal.toml" "$host:$port" "$host:$admin" "$path" "$token" "$key" \
    "path = \"$dir/data/gateway.db\"" "$logger_so" "$dir/data/assets.jsonl" always
  awk '/^\[\[plugins\]\]/ { print "[delivery]\nmax_batch = 1\n"; print; print "max_concurrency = 1"; next } { print }' \
    "$dir/normal.toml" >"$dir/slow.toml"
}

stop_gateway() { kill "$srv_pid"; wait "$srv_pid" 2>/dev/null || true; srv_pid=''; }

load() {  # SECONDS OUT_JSON: closed loop, waits until every stored event was delivered
  "$loadgen" run --url "http://$host:$port$path" --key "$key" --token "$token" \
    --connections "$conns" --duration "${1}s" --metrics "http://$host:$admin/metrics" --json >"$2"
}

metric() { curl -s "http://$host:$admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
now() { date +%s.%N; }

# 1. Ingest on a fresh store, then after filling it.
write_config "$run/a"
run_gateway "$run/a/normal.toml" "$run/a/server.log"
echo "fresh store: ${secs}s..."
load "$secs" "$run/fresh.json"
echo "filling: ${fill_secs}s..."
load "$fill_secs" "$run/fill.json"
stored=$(jq -s 'map(.requests) | add' "$run/fresh.json" "$run/fill.json")
echo "with $stored events stored: ${secs}s..."
load "$secs" "$run/filled.json"
stop_gateway
db_mb=$(du -m "$run/a/data/gateway.db" | awk '{print $1}')
fresh_rps=$(jq '.rps | floor' "$run/fresh.json")
filled_rps=$(jq '.rps | floor' "$run/filled.json")
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }'; }
change=$(pct "$fresh_rps" "$filled_rps")

# 1b. Interleaved: a fresh store, then the filled one restarted, $rounds times.
pairs_fresh=() pairs_filled=() pairs_fresh_p99=() pairs_filled_p99=()
for r in $(seq 1 "$rounds"); do
  write_config "$run/f$r"
  run_gateway "$run/f$r/normal.toml" "$run/f$r/server.log"
  echo "round $r: a fresh store, ${secs}s..."
  load "$secs" "$run/f$r.json"
  stop_gateway
  run_gateway "$run/a/normal.toml" "$run/a/server-$r.log"
  echo "round $r: the filled store, restarted, ${secs}s..."
  load "$secs" "$run/a$r.json"
  stop_gateway
  pairs_fresh+=("$(jq '.rps | floor' "$run/f$r.json")")
  pairs_filled+=("$(jq '.rps | floor' "$run/a$r.json")")
  pairs_fresh_p99+=("$(jq '.latency_ms.p99' "$run/f$r.json")")
  pairs_filled_p99+=("$(jq '.latency_ms.p99' "$run/a$r.json")")
  rm -rf "$run/f$r"
done
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.0f", s / NR }'; }
fresh_mean=$(mean "${pairs_fresh[@]}")
filled_mean=$(mean "${pairs_filled[@]}")
stored_after=$(jq -s 'map(.requests) | add' "$run/fresh.json" "$run/fill.json" "$run/filled.json")

# 2. A restart with a backlog.
write_config "$run/b"
run_gateway "$run/b/slow.toml" "$run/b/slow.log"
echo "building a backlog: ${backlog_secs}s with the logger throttled..."
"$loadgen" run --url "http://$host:$port$path" --key "$key" --token "$token" \
  --connections "$conns" --duration "${backlog_secs}s" --json >"$run/backlog.json"
pending=$(metric gateway_pending_deliveries)
stop_gateway
logged=$run/b/data/assets.jsonl
before=$(lines "$logged")
t0=$(now)
run_gateway "$run/b/normal.toml" "$run/b/normal.log"
first=''
while :; do
  t=$(now)
  [ -z "$first" ] && [ "$(lines "$logged")" -gt "$before" ] && first=$(awk -v a="$t0" -v b="$t" 'BEGIN { printf "%.3f", b - a }')
  [ "$(metric gateway_pending_deliveries)" = 0 ] && break
  awk -v a="$t0" -v b="$t" 'BEGIN { exit !(b - a > 600) }' && { echo "not drained in 600 s" >&2; exit 1; }
  sleep 0.02
done
all=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
delivered=$(($(lines "$logged") - before))
stop_gateway

{
  echo "# Scale — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs; loadgen on the same machine (loopback)"
  echo "- command: \`$cmdline\` ($conns connections, closed loop)"
  echo "- gateway binary built $(date -u -r "$gateway_bin" '+%Y-%m-%d %H:%M UTC') (tree: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "| store | events stored before | req/s | p99 ms | change |"
  echo "|---|---|---|---|---|"
  echo "| fresh | 0 | $fresh_rps | $(jq '.latency_ms.p99' "$run/fresh.json") | |"
  echo "| filled (${fill_secs} s of load more) | $stored (${db_mb} MB file) | $filled_rps | $(jq '.latency_ms.p99' "$run/filled.json") | $change |"
  echo
  echo "| interleaved, after the fill ($rounds rounds) | events stored before | req/s (per round) | p99 ms (per round) | change of the means |"
  echo "|---|---|---|---|---|"
  echo "| a fresh store each round | 0 | $(join_by ' / ' "${pairs_fresh[@]}") | $(join_by ' / ' "${pairs_fresh_p99[@]}") | |"
  echo "| the filled store, gateway restarted | $stored_after and more | $(join_by ' / ' "${pairs_filled[@]}") | $(join_by ' / ' "${pairs_filled_p99[@]}") | $(pct "$fresh_mean" "$filled_mean") |"
  echo
  echo "| restart with a backlog | pending before the stop | first delivery after | all delivered after | delivered after the restart |"
  echo "|---|---|---|---|---|"
  echo "| ${backlog_secs} s of load, logger throttled | ${pending:-?} | ${first:-?} s | $all s | $delivered |"
  echo
  echo "Times from starting the new process (its store open included)."
} | tee "$out"
