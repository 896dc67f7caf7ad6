#!/usr/bin/env bash
# Side-by-side load runs of gateway builds on this machine, interleaved in rounds (loopback only).
# For each build: a fresh store, the logger routed with fsync = "always", wrk -t2 -c$CONNS for
# $SECS s replaying unique signed + encrypted assets_update deliveries (tests/load/lark.lua),
# then the time until every stored event is in the logger's file (end to end), and the server's
# CPU time per request (utime + stime from /proc, the gateway and its plugin processes).
#
# Usage: bench/compare.sh LABEL=GATEWAY_BIN:LOGGER_SO[:ISOLATION] [LABEL=...] ; env ROUNDS, SECS,
# CONNS. ISOLATION is the logger's `isolation` ("none", the default, or "process").
# Needs: wrk (Debian package), target/release/loadgen (cargo build --release -p gateway-bench).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-2}
secs=${SECS:-15}
conns=${CONNS:-32}
work=$(mktemp -d /tmp/gw-bench.XXXXXX)
load=$work/load.tsv
"$here/target/release/loadgen" make --out "$load" --count 400000 --key bench-key --token bench-token
tick=$(getconf CLK_TCK)
# CPU ticks (user + system) of a process and its live children (isolated plugin processes).
cpu_of() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
printf '%-10s %5s %9s %8s %8s %9s %10s %9s\n' build round req/s p50ms p99ms cpu_us/req drain_s e2e/s
for round in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    label=${spec%%=*}; rest=${spec#*=}; bin=${rest%%:*}; rest=${rest#*:}
    logger=${rest%%:*}; isolation=none
    [ "$rest" != "$logger" ] && isolation=${rest#*:}
    dir=$work/$label-$round; mkdir -p "$dir"
    cat >"$dir/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:7799"
[admin]
listen = "127.0.0.1:9499"
[log]
level = "warn"
[[apps]]
name = "load"
path = "/webhook/event"
verification_token = "bench-token"
encrypt_key = "bench-key"
[store]
path = "data/gateway.db"
[[plugins]]
name = "audit"
library = "$logger"
config = { path = "data/assets.jsonl", fsync = "always" }
isolation = "$isolation"
[[routes]]
events = ["hire.referral_account.assets_update_v1"]
plugins = ["audit"]
TOML
    "$bin" --config "$dir/gateway.toml" run >"$dir/out.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf 127.0.0.1:9499/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    cpu0=$(cpu_of "$pid")
    wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$here/tests/load/lark.lua" \
      http://127.0.0.1:7799/webhook/event -- "$load" >"$dir/wrk.txt"
    start=$(date +%s.%N)
    stored=$(curl -s 127.0.0.1:9499/metrics | awk '/^gateway_events_stored_total/ {print $2}')
    stored=${stored:-0}
    while :; do
      lines=$(wc -l <"$dir/data/assets.jsonl" 2>/dev/null || echo 0)
      [ "$lines" -ge "${stored%.*}" ] && break
      [ "$(echo "$(date +%s.%N) - $start > 300" | bc)" = 1 ] && break
      sleep 0.05
    done
    drain=$(echo "$(date +%s.%N) - $start" | bc)
    cpu1=$(cpu_of "$pid")
    kill -TERM $pid; wait $pid 2>/dev/null || true
    rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.txt")
    p50=$(awk '/^p50 latency/ {print $3}' "$dir/wrk.txt")
    p99=$(awk '/^p99 latency/ {print $3}' "$dir/wrk.txt")
    reqs=$(awk '/^requests:/ {gsub(",","",$2); print $2}' "$dir/wrk.txt")
    cpu_us=$(echo "scale=1; ($cpu1 - $cpu0) * 1000000 / $tick / $reqs" | bc)
    e2e=$(echo "scale=0; ${stored%.*} / ($secs + $drain)" | bc)
    printf '%-10s %5s %9s %8s %8s %9s %10.2f %9s\n' "$label" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$drain" "$e2e"
  done
done
rm -rf "$work"
