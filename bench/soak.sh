#!/usr/bin/env bash
# bench/soak.sh — the gateway's memory and tail latency over a long open-loop run, on this
# machine, loopback (127.0.0.1) only.
#
# 1. Starts target/release/gateway as bench/run.sh's `gateway` row does (fresh store, the logger
#    plugin routed with fsync = "always", [log] level = "warn") and reads its idle RSS.
# 2. Finds the closed-loop maximum with `loadgen run` for $PROBE_SECS s (unless RATE is given),
#    restarts the gateway on a fresh store.
# 3. Runs `loadgen run --rate (FRACTION x max) --duration $SECS` (open loop: latency measured from
#    each request's intended send time, so a stall cannot hide) with --metrics, so it waits until
#    every stored event was delivered; meanwhile samples the gateway's VmRSS every $EVERY s.
# 4. Control (unless CONTROL_SECS=0): the bare receiver (`loadgen baseline`: one thread, verify +
#    decrypt + token, no store) under the same open loop for $CONTROL_SECS s, so the table shows
#    the tail this machine gives a receiver that does nothing else; then the disk alone
#    (`loadgen disk`: a 40 KiB write + fsync in a loop, as the store commits, for $CONTROL_SECS
#    s), so it shows the tail the disk gives any receiver that syncs before answering; and the
#    CPU time the hypervisor took (steal, from /proc/stat) during each run.
# Reports: idle RSS; RSS after the first minute, at the end and its maximum; the growth from the
# second minute's mean to the last minute's mean (flat = a few MB at most; only when SECS >= 180);
# p50/p99/p99.9/max latency, statuses, the drain, CPU µs per event (the gateway and its children,
# load + drain).
# Written to bench/results/soak.md (OUT=...), RSS samples beside it in soak-rss.tsv (for
# OUT=x.md: x-rss.tsv).
#
# Usage: bench/soak.sh   (after: cargo build --release -p gateway -p logger -p gateway-bench)
# Env knobs (defaults): SECS=300 FRACTION=0.5 PROBE_SECS=10 RATE= CONNS=32 EVERY=5 CONTROL_SECS=60
#   PORT=17990 (admin PORT+1) WORK=/tmp/gateway-bench KEEP= OUT=bench/results/soak.md
#   GATEWAY_BIN=target/release/gateway LOGGER_SO=target/release/liblogger.so (another build)
#   LOADGEN_ARGS= extra `loadgen run` arguments, e.g. "--prebuild 800000" to build every request
#   before the load (then loadgen spends no CPU on signing during it; ~1.5 kB per request)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
bench_setup soak LOADGEN_ARGS RATE FRACTION PROBE_SECS SECS CONNS CONTROL_SECS
rss_out="${out%.md}-rss.tsv"
control_secs=${CONTROL_SECS:-60}
secs=${SECS:-300}
fraction=${FRACTION:-0.5}
probe_secs=${PROBE_SECS:-10}
every=${EVERY:-5}
srv_pid=''
sampler=''
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$run"
}
trap cleanup EXIT

start_gateway() {  # DIR
  local dir=$1
  mkdir -p "$dir/data"
  gateway_toml "$dir/gateway.toml" "$host:$port" "$host:$admin" "$path" "$token" "$key" \
    "path = \"$dir/data/gateway.db\"" "$logger_so" "$dir/data/assets.jsonl" always
  run_gateway "$dir/gateway.toml" "$dir/server.log"
}

stop_gateway() {
  kill "$srv_pid" 2>/dev/null || true
  wait "$srv_pid" 2>/dev/null || true
  srv_pid=''
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# utime + stime of the process and its reaped children, in clock ticks.
ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }

lg() {  # extra loadgen arguments...
  "$loadgen" run --url "http://$host:$port$path" --key "$key" --token "$token" \
    --connections "$conns" --metrics "http://$host:$admin/metrics" --json "$@" ${LOADGEN_ARGS:-}
}

loadavg0=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "${RATE:-}" ]; then
  rate=$RATE
  max_note="given (RATE=$RATE)"
else
  start_gateway "$run/probe"
  echo "probing the closed-loop maximum for ${probe_secs}s..."
  lg --duration "${probe_secs}s" >"$run/probe.json"
  stop_gateway
  max=$(jq -r '.rps' "$run/probe.json")
  rate=$(awk -v m="$max" -v f="$fraction" 'BEGIN { printf "%d", m * f }')
  max_note="closed loop for ${probe_secs}s: $(printf '%.0f' "$max") req/s"
fi

start_gateway "$run/soak"
sleep 2
idle_kb=$(rss_kb "$srv_pid")
echo "idle RSS: $((idle_kb / 1024)) MB; open loop at $rate req/s for ${secs}s..."
samples=$run/rss.tsv
printf 't_s\trss_kb\n' >"$samples"
(
  t=0
  while kill -0 "$srv_pid" 2>/dev/null; do
    printf '%s\t%s\n' "$t" "$(rss_kb "$srv_pid")" >>"$samples"
    sleep "$every"; t=$((t + every))
  done
) &
sampler=$!
cpu0=$(ticks "$srv_pid")
st0=$(steal_ticks)
lg --rate "$rate" --duration "${secs}s" >"$run/soak.json"
steal=$(steal_share "$st0")
cpu1=$(ticks "$srv_pid")
end_kb=$(rss_kb "$srv_pid")
kill "$sampler" 2>/dev/null || true
sampler=''
stop_gateway
hz=$(getconf CLK_TCK)

control_row=''
disk_note=''
if [ "$control_secs" != 0 ]; then
  echo "control: the bare receiver at $rate req/s for ${control_secs}s..."
  "$loadgen" baseline --listen "$host:$port" --key "$key" --token "$token" >"$run/baseline.log" 2>&1 &
  srv_pid=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://$host:$port/" && break
    sleep 0.05
  done
  st0=$(steal_ticks)
  "$loadgen" run --url "http://$host:$port$path" --key "$key" --token "$token" \
    --connections "$conns" --json --rate "$rate" --duration "${control_secs}s" ${LOADGEN_ARGS:-} \
    >"$run/control.json"
  control_steal=$(steal_share "$st0")
  stop_gateway
  control_row=$(jq -r --arg st "$control_steal" '"| bare receiver (`loadgen baseline`), \(.rate) req/s for \(.duration_s) s | \(.requests) | \(.rps | floor) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.latency_ms["p99.9"]) | \(.latency_ms.max) | - | - | \($st)% |"' "$run/control.json")
  echo "control: the disk alone (write + fsync in a loop) for ${control_secs}s..."
  st0=$(steal_ticks)
  "$loadgen" disk --dir "$run" --duration "${control_secs}s" --json >"$run/disk.json"
  disk_steal=$(steal_share "$st0")
  control_row+=$'\n'$(jq -r --arg st "$disk_steal" '"| the disk alone (`loadgen disk`: \(.write_bytes / 1024) KiB write + `fsync`, one thread, back to back) for \(.duration_s) s | \(.syncs) syncs | \(.per_s | floor) syncs/s | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.latency_ms["p99.9"]) | \(.latency_ms.max) | - | - | \($st)% |"' "$run/disk.json")
  disk_note=$(jq -r '"The disk alone: \(.over_2ms) of its syncs took over 2 ms and \(.over_5ms) over 5 ms; the slowest: \([.slowest[] | "\(.ms * 10 | round / 10) ms at \(.at_s * 1000 | round / 1000) s"] | join(", "))."' "$run/disk.json")
fi

j=$run/soak.json
reqs=$(jq -r '.requests' "$j")
mean_kb() {  # FROM_S TO_S: mean RSS of the samples in [FROM, TO)
  awk -F'\t' -v a="$1" -v b="$2" 'NR > 1 && $1 >= a && $1 < b { s += $2; n++ } END { printf "%d", n ? s / n : 0 }' "$samples"
}
max_kb=$(awk -F'\t' 'NR > 1 && $2 > m { m = $2 } END { print m + 0 }' "$samples")
at60_kb=$(awk -F'\t' 'NR > 1 && $1 >= 60 { print $2; exit }' "$samples")
second_min=$(mean_kb 60 120)
last_min=$(mean_kb $((secs - 60)) "$secs")
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
cpu_us=$(awk -v t=$((cpu1 - cpu0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.0f", n ? t / hz * 1e6 / n : 0 }')
bad=$(jq -r '[(.statuses | to_entries[] | select(.key != "200") | "status \(.key): \(.value)"),
              (if (.transport_errors | length) > 0 then "transport errors: \(.transport_errors)" else empty end),
              (if .unsent > 0 then "unsent: \(.unsent)" else empty end)] | join(", ")' "$j")

{
  echo "# Soak — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs; loadgen on the same machine (loopback); load average before: $loadavg0"
  echo "- command: \`$cmdline\` ($conns connections; maximum: $max_note)"
  echo "- gateway binary built $(date -u -r "$gateway_bin" '+%Y-%m-%d %H:%M UTC') (tree: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "| open loop | answered | req/s | p50 ms | p99 ms | p99.9 ms | max ms | drain s | CPU µs/event | steal |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  jq -r --arg cpu "$cpu_us" --arg st "$steal" '"| gateway, \(.rate) req/s for \(.duration_s) s | \(.requests) | \(.rps | floor) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.latency_ms["p99.9"]) | \(.latency_ms.max) | \(.drain_s // "-") | \($cpu) | \($st)% |"' "$j"
  if [ -n "$control_row" ]; then echo "$control_row"; fi
  echo
  echo "| RSS idle | after 1 min | at the end | max | mean of minute 2 | mean of the last minute | growth |"
  echo "|---|---|---|---|---|---|---|"
  if [ "$secs" -ge 180 ]; then
    echo "| $(mb "$idle_kb") MB | $(mb "${at60_kb:-0}") MB | $(mb "$end_kb") MB | $(mb "$max_kb") MB | $(mb "$second_min") MB | $(mb "$last_min") MB | $(mb $((last_min - second_min))) MB |"
  else
    # Minute 2 and the last minute overlap (or do not exist) in a run under three minutes.
    at60="—"; [ -n "${at60_kb:-}" ] && at60="$(mb "$at60_kb") MB"
    echo "| $(mb "$idle_kb") MB | $at60 | $(mb "$end_kb") MB | $(mb "$max_kb") MB | — | — | — (needs SECS ≥ 180) |"
  fi
  echo
  echo "Latency from each request's intended send time. Steal: CPU time the hypervisor gave to others during the run, as a share of all CPU time (/proc/stat). RSS: VmRSS of the gateway every ${every} s ($(basename "$rss_out"))."
  if [ -n "$disk_note" ]; then echo "$disk_note"; fi
  if [ -n "$bad" ]; then echo "Not 200: $bad"; fi
} | tee "$out"
cp "$samples" "$rss_out"
