#!/usr/bin/env bash
# bench/replicas.sh — ingest and end-to-end throughput of the gateway with 1 and 3 replicas on one
# PostgreSQL database, against one gateway on the embedded (SQLite) store. This machine, loopback
# (127.0.0.1) only.
#
# One throwaway PostgreSQL cluster serves the whole run (initdb in $WORK/pg.XXXXXX, server
# binaries from /usr/lib/postgresql/*/bin or $PG_BIN; as root the cluster belongs to the
# `postgres` user and initdb/pg_ctl run as that user). It keeps PostgreSQL's default durability:
# fsync = on, synchronous_commit = on (stated in the output). It is stopped and removed at the end
# (trap on EXIT, also on Ctrl-C / kill).
#
# The rows, interleaved over $ROUNDS rounds (round 1: every row, round 2: every row, ...):
#   sqlite-1  one gateway, a fresh embedded store ([store] path) in its own folder
#   pg-1      one gateway on a fresh database (CREATE DATABASE per row and round)
#   pg-3      three gateways on one fresh database, each with its own ports, folder and logger
#             file; the load is split evenly: three `loadgen run` at once, one per replica, with
#             $CONNS/3 connections each (the remainder spread over the first ones)
# Every gateway: one app (Encrypt Key + Verification Token), the logger plugin
# (target/release/liblogger.so) routed with fsync = "always", [log] level = "warn".
# Before each row: `CHECKPOINT` and `sync`, so the previous row's dirty pages are not written
# during this one.
#
# Per row and round: `loadgen run` (closed loop, unique signed + encrypted assets_update events)
# with `--metrics` on the replica it loads, so after the load it waits until that replica has
# delivered ("ok") every event it stored (each replica claims and runs the deliveries of the events
# it accepted); then the shared backlog gauge gateway_pending_deliveries must read 0 (for PostgreSQL
# it is read from the shared tables, so one replica suffices). Reported:
#   ingest req/s   answers / load time, summed over the loadgens (pg-3);
#   p99            the worst loadgen and round;
#   end-to-end/s   events stored during the load / (load + drain) s; pg-3: the sum over the
#                  replicas / the longest (load + drain) of the three; drain: until delivered;
#   server CPU     utime+stime (+ reaped children) of every gateway process and of the postmaster
#                  and all its children (backends, checkpointer, walwriter, autovacuum...), from
#                  /proc before and after (load + drain), per request answered;
#   CPU busy       the machine's busy share (/proc/stat, all cores) over load + drain, the
#                  loadgens' share of the machine (they run on the same cores) and the share used
#                  by other processes (neither loadgen nor the servers: should be near 0), from
#                  the moment every replica has answered its first request (loadgen first builds
#                  up to 100 000 requests, not counted) until the drain has ended;
#   delivered      lines in the logger files vs events in the store (the database's `events`
#                  table, or the gateway's stored counter for SQLite): duplicate event ids and
#                  missing ones (each event must be delivered exactly once).
# Ratios are to sqlite-1's mean. One markdown table is printed and written, with the date, the
# machine and the command, to bench/results/replicas.md (OUT=...).
#
# Usage: bench/replicas.sh   (builds the release binaries first if missing or older than sources)
# Env knobs (defaults):
#   ROUNDS=2 SECS=15 CONNS=32   rounds, seconds of load per row, connections in total per row
#   ROWS="sqlite-1 pg-1 pg-3"   which rows, in this order
#   WORK=/tmp/gateway-bench     scratch: per-run data in $WORK/replicas.XXXXXX, the cluster in
#                               $WORK/pg.XXXXXX (both removed at the end)
#   KEEP=1                      keep them (configs, server logs, logger files, loadgen JSON, the
#                               databases; the cluster is still stopped)
#   PORT_BASE=17900             webhooks PORT_BASE+1..+3, admin PORT_BASE+101..+103
#   PG_PORT=PORT_BASE+50        the cluster's TCP port
#   PG_BIN=                     PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)
#   PG_POOL=                    [store] pool_size of every PostgreSQL replica (default: the gateway's, 8)
#   LOADGEN_ARGS=               extra arguments for every `loadgen run` (e.g. "--threads 1")
#   NO_BUILD=1                  do not run cargo; use target/release as it is
#   OUT=bench/results/replicas.md
# Needs: bash, curl, jq, awk, the postgresql server package (13+: DROP DATABASE ... WITH (FORCE));
# as root `runuser` or `setpriv`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
cmdline="bench/replicas.sh${*:+ $*}"
for v in NO_BUILD LOADGEN_ARGS PG_POOL ROWS CONNS SECS ROUNDS; do
  [ -n "${!v:-}" ] && cmdline="$v=${!v} $cmdline"
done
rounds=${ROUNDS:-2}
secs=${SECS:-15}
conns=${CONNS:-32}
rows=${ROWS:-sqlite-1 pg-1 pg-3}
work=${WORK:-/tmp/gateway-bench}
port_base=${PORT_BASE:-17900}
pg_port=${PG_PORT:-$((port_base + 50))}
pg_pool=${PG_POOL:-}
out=${OUT:-$here/bench/results/replicas.md}
read -r -a loadgen_extra <<<"${LOADGEN_ARGS:-}"
key=bench-encrypt-key
token=bench-verification-token
path=/webhook/event
host=127.0.0.1
tick=$(getconf CLK_TCK)

for tool in curl jq awk; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
for r in $rows; do
  case $r in sqlite-1|pg-1|pg-3) ;; *) echo "unknown row $r (sqlite-1, pg-1, pg-3)" >&2; exit 1 ;; esac
done
if [ "$conns" -lt 3 ]; then echo "CONNS must be at least 3 (pg-3 splits them)" >&2; exit 1; fi

# ---------------------------------------------------------------- the binaries
gateway_bin=$here/target/release/gateway
logger_so=$here/target/release/liblogger.so
loadgen=$here/target/release/loadgen
build_note=''
stale() {  # prints why a build is needed, or nothing
  local f newer
  for f in "$gateway_bin" "$logger_so" "$loadgen"; do
    [ -f "$f" ] || { echo "missing ${f#"$here"/}"; return; }
    newer=$(find "$here/Cargo.toml" "$here/Cargo.lock" "$here/crates" "$here/plugins/logger" "$here/bench/loadgen" \
              \( -path '*/target' -o -path '*/fuzz' \) -prune -o \
              -type f \( -name '*.rs' -o -name 'Cargo.toml' -o -name 'Cargo.lock' -o -name '*.sql' \) \
              -newer "$f" -print 2>/dev/null | head -n1)
    [ -n "$newer" ] && { echo "${newer#"$here"/} is newer than ${f#"$here"/}"; return; }
  done
  return 0
}
if [ -z "${NO_BUILD:-}" ]; then
  why=$(stale)
  if [ -n "$why" ]; then
    echo "building the release binaries ($why): cargo build --release -p gateway -p logger -p gateway-bench"
    mkdir -p "$work"
    if ! (cd "$here" && cargo build --release -p gateway -p logger -p gateway-bench) >"$work/replicas-build.log" 2>&1; then
      if [ -f "$gateway_bin" ] && [ -f "$logger_so" ] && [ -f "$loadgen" ]; then
        build_note="cargo build failed ($(grep -m1 -E '^error' "$work/replicas-build.log" || tail -n1 "$work/replicas-build.log")); the existing binaries were used"
        echo "note: $build_note"
      else
        echo "cargo build failed; see $work/replicas-build.log:" >&2
        tail -n 20 "$work/replicas-build.log" >&2
        exit 1
      fi
    fi
  fi
fi
for f in "$gateway_bin" "$logger_so" "$loadgen"; do
  [ -f "$f" ] || { echo "missing $f: cargo build --release -p gateway -p logger -p gateway-bench" >&2; exit 1; }
done

# ---------------------------------------------------------------- PostgreSQL binaries and user
pg_bin=${PG_BIN:-}
if [ -z "$pg_bin" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
fi
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin or PG_BIN): install the postgresql package" >&2
  exit 1
fi
pg_user=''
if [ "$(id -u)" = 0 ]; then
  # initdb, pg_ctl and postgres refuse to run as root: the cluster belongs to `postgres` (or nobody).
  if getent passwd postgres >/dev/null; then pg_user=postgres; else pg_user=nobody; fi
fi
as_pg() {  # runs a command as the cluster's owner, from /
  if [ -z "$pg_user" ]; then
    (cd / && "$@")
  elif command -v runuser >/dev/null; then
    (cd / && runuser -u "$pg_user" -- "$@")
  else
    (cd / && setpriv --reuid="$pg_user" --regid="$(id -g "$pg_user")" --init-groups -- "$@")
  fi
}
psql_do() {  # DB SQL -> stdout (unaligned, tuples only)
  PGOPTIONS="-c client_min_messages=warning" "$pg_bin/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$host" -p "$pg_port" -U gateway -d "$1" -c "$2"
}

# ---------------------------------------------------------------- processes and their CPU time
mkdir -p "$work"
run_dir=$(mktemp -d "$work/replicas.XXXXXX")
pg_dir=''
pg_up=''
gw_pids=()     # the gateways of the current row
lg_pids=()     # the loadgens in progress (each in a subshell that notes when it ended)

# proc_table: bench/lib.sh.

# CPU ticks of the given pids and all their descendants (and the children they reaped), summed.
tree_ticks() {
  proc_table | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) root[r[i]] = 1 }
    { parent[$1] = $2; ticks[$1] = $3 }
    END {
      total = 0
      for (p in parent) {
        q = p
        for (depth = 0; depth < 64 && q != "" && q != 0; depth++) {
          if (q in root) { total += ticks[p]; break }
          q = parent[q]
        }
      }
      print total
    }'
}

# CPU ticks of the children this shell has reaped (cutime + cstime): the loadgens.
reaped_ticks() {
  local line x
  read -r line </proc/$$/stat
  read -r -a x <<<"${line##*) }"
  echo $((x[13] + x[14]))
}

# "busy total" jiffies of all CPUs from /proc/stat (busy = all but idle and iowait).
cpu_stat() {
  awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

stop_gateways() {  # PID... : TERM, up to 15 s (shutdown_grace is 10 s), then KILL
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 150); do
    local alive=''
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

cleanup() {
  local p
  for p in "${lg_pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill -TERM "$p" 2>/dev/null || true; done
  for p in "${lg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ ${#gw_pids[@]} -gt 0 ]; then stop_gateways "${gw_pids[@]}"; fi
  if [ -n "$pg_up" ]; then
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -z "${KEEP:-}" ]; then
    rm -rf "$run_dir"
    [ -n "$pg_dir" ] && rm -rf "$pg_dir"
  else
    echo "kept $run_dir${pg_dir:+ and $pg_dir}"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }
needed_ports="$pg_port"
for i in 1 2 3; do needed_ports+=" $((port_base + i)) $((port_base + 100 + i))"; done
for p in $needed_ports; do
  if port_busy "$p"; then echo "port $p on $host is in use (set PORT_BASE / PG_PORT)" >&2; exit 1; fi
done

# ---------------------------------------------------------------- the PostgreSQL cluster
if [[ " $rows " == *" pg-"* ]]; then
  pg_dir=$(mktemp -d "$work/pg.XXXXXX")
  chmod 700 "$pg_dir"
  [ -n "$pg_user" ] && chown "$pg_user:$(id -gn "$pg_user")" "$pg_dir"
  if ! as_pg "$pg_bin/initdb" -U gateway --auth=trust -E UTF8 --locale=C.UTF-8 -D "$pg_dir/data" >"$run_dir/initdb.log" 2>&1; then
    rm -rf "$pg_dir/data"
    as_pg "$pg_bin/initdb" -U gateway --auth=trust -E UTF8 --no-locale -D "$pg_dir/data" >"$run_dir/initdb.log" 2>&1 ||
      { echo "initdb failed:" >&2; tail -n 20 "$run_dir/initdb.log" >&2; exit 1; }
  fi
  pg_opts="-c listen_addresses=$host -c port=$pg_port -c unix_socket_directories=$pg_dir -c fsync=on -c synchronous_commit=on"
  if ! as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -o "$pg_opts" -w -t 60 start >"$run_dir/pg_ctl.log" 2>&1; then
    echo "PostgreSQL did not start:" >&2; cat "$run_dir/pg_ctl.log" "$pg_dir/server.log" >&2 2>/dev/null; exit 1
  fi
  pg_up=1
  postmaster=$(head -n1 "$pg_dir/data/postmaster.pid")
  pg_version=$(psql_do postgres 'SHOW server_version')
  pg_settings=$(psql_do postgres "SELECT string_agg(name || ' = ' || current_setting(name), ', ' ORDER BY name)
    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
      'shared_buffers', 'max_wal_size', 'max_connections', 'wal_level')")
  pg_line="PostgreSQL $pg_version ($pg_bin), one cluster for the run on $host:$pg_port, default durability: $pg_settings"
  echo "$pg_line"
fi

# ---------------------------------------------------------------- one gateway
# start_gateway DIR I STORE_TOML: replica I (1..3) on ports PORT_BASE+I and PORT_BASE+100+I.
start_gateway() {
  local dir=$1 i=$2 store=$3
  mkdir -p "$dir/data"
  gateway_toml "$dir/gateway.toml" "$host:$((port_base + i))" "$host:$((port_base + 100 + i))" \
    "$path" "$token" "$key" "$store" "$logger_so" "$dir/data/assets.jsonl" always
  "$gateway_bin" run --config "$dir/gateway.toml" >"$dir/server.log" 2>&1 &
  gw_pids+=("$!")
}

wait_ready() {  # I PID: until /readyz answers 200 (60 s; the first PostgreSQL replica migrates)
  local i=$1 pid=$2
  for _ in $(seq 1 600); do
    curl -sf -m 2 "http://$host:$((port_base + 100 + i))/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

metric() {  # I NAME -> the sum of the series' samples on replica I's /metrics
  curl -sf -m 10 "http://$host:$((port_base + 100 + $1))/metrics" |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF; found = 1 } END { if (found) printf "%.0f", s }'
}

# ---------------------------------------------------------------- the rounds
declare -A pgwork=() batch=() rps=() p99=() reqs=() gw_ticks=() pg_ticks=() lg_ticks=() busy=() e2e=() drain=() \
  stored=() lines=() dups=() missing=() failed=() notes=() errs=() logs=()
note() { notes[$1]="${notes[$1]:+${notes[$1]}; }$2"; }
# fmt0, fmt2: bench/lib.sh.

run_row() {  # ROW ROUND; fills the arrays for "ROW,ROUND"; returns 1 if the row failed
  local row=$1 round=$2 k="$1,$2" dir=$run_dir/$1-$2 n=1 db='' store i
  [ "$row" = pg-3 ] && n=3
  mkdir -p "$dir"
  if [ "$row" = sqlite-1 ]; then
    store="path = \"$dir/gw1/data/gateway.db\""
  else
    db="bench_${row//-/_}_r$round"
    psql_do postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    psql_do postgres "CREATE DATABASE $db" >/dev/null
    store="url = \"postgres://gateway@$host:$pg_port/$db\""
    [ -n "$pg_pool" ] && store+=$'\n'"pool_size = $pg_pool"
  fi
  # Quiet start: no checkpoint or page cache flush left over from the previous row.
  [ -n "$pg_up" ] && psql_do postgres 'CHECKPOINT' >/dev/null
  sync
  gw_pids=()
  for i in $(seq 1 "$n"); do start_gateway "$dir/gw$i" "$i" "$store"; done
  for i in $(seq 1 "$n"); do
    if ! wait_ready "$i" "${gw_pids[i - 1]}"; then
      failed[$row]="round $round: replica $i did not become ready: $(tail -n1 "$dir/gw$i/server.log" | cut -c1-200)"
      echo "$row ${failed[$row]}"
      stop_gateways "${gw_pids[@]}"
      return 1
    fi
  done

  local pg0=0 pg1=0 gw0 gw1 lg0 lg1 st0 st1 c rc=0
  [ "$row" != sqlite-1 ] && pg0=$(tree_ticks "$postmaster")
  gw0=$(tree_ticks "${gw_pids[@]}")
  lg_pids=()
  for i in $(seq 1 "$n"); do
    c=$((conns / n + (i <= conns % n ? 1 : 0)))
    (
      if "$loadgen" run --url "http://$host:$((port_base + i))$path" --key "$key" --token "$token" \
           --connections "$c" --duration "${secs}s" --metrics "http://$host:$((port_base + 100 + i))/metrics" \
           "${loadgen_extra[@]}" --json >"$dir/loadgen-$i.json" 2>"$dir/loadgen-$i.err"; then s=0; else s=$?; fi
      date +%s.%N >"$dir/loadgen-$i.end"
      exit "$s"
    ) &
    lg_pids+=("$!")
    # loadgen derives its event ids from `run-<Unix ms at start>` and n: two started in the same
    # millisecond would send the same ids (deduplicated by the gateways). 50 ms apart.
    [ "$i" -lt "$n" ] && sleep 0.05
  done
  # The load begins once loadgen has built its first requests: wait until every replica has
  # answered one, then take the machine's and the loadgens' CPU counters.
  local seen alive r lgl0
  for _ in $(seq 1 1200); do
    seen=1 alive=1
    for i in $(seq 1 "$n"); do
      r=$(metric "$i" gateway_requests_total || true)
      [ "${r:-0}" -gt 0 ] || seen=''
      kill -0 "${lg_pids[i - 1]}" 2>/dev/null || alive=''
    done
    [ -n "$seen" ] || [ -z "$alive" ] && break
    sleep 0.05
  done
  st0=$(cpu_stat)
  lg0=$(reaped_ticks)
  lgl0=$(tree_ticks "${lg_pids[@]}")
  for i in $(seq 1 "$n"); do
    if ! wait "${lg_pids[i - 1]}"; then
      rc=1
      note "$row" "round $round: loadgen $i failed: $(tail -n1 "$dir/loadgen-$i.err" | cut -c1-200)"
    fi
  done
  lg_pids=()
  st1=$(cpu_stat)
  lg1=$(reaped_ticks)
  gw1=$(tree_ticks "${gw_pids[@]}")
  [ "$row" != sqlite-1 ] && pg1=$(tree_ticks "$postmaster")
  for i in $(seq 1 "$n"); do
    kill -0 "${gw_pids[i - 1]}" 2>/dev/null || note "$row" "round $round: replica $i died during the load"
  done
  if [ "$rc" != 0 ]; then
    failed[$row]="round $round: a loadgen failed"
    stop_gateways "${gw_pids[@]}"
    return 1
  fi

  # The shared backlog must be empty (pg: one replica reads the shared tables).
  local pending=""
  for _ in $(seq 1 600); do
    pending=$(metric 1 gateway_pending_deliveries || true)
    [ "$pending" = 0 ] && break
    sleep 0.1
  done
  [ "$pending" = 0 ] || note "$row" "round $round: gateway_pending_deliveries still ${pending:-unreadable} 60 s after the drain"
  local in_store
  if [ -n "$db" ]; then
    in_store=$(psql_do "$db" 'SELECT count(*) FROM events')
    local states
    states=$(psql_do "$db" "SELECT string_agg(state || ' ' || n, ', ' ORDER BY state) FROM
      (SELECT state, count(*) AS n FROM deliveries GROUP BY state) s")
    [[ "$states" == "done "* && "$states" != *,* ]] || note "$row" "round $round: deliveries by state: $states"
  else
    in_store=$(metric 1 gateway_events_stored_total || true)
  fi
  # Events the gateways answered as duplicates: none expected (every request carries a new id).
  local dup_seen=0 d
  for i in $(seq 1 "$n"); do
    d=$(metric "$i" gateway_duplicate_events_total || true)
    dup_seen=$((dup_seen + ${d:-0}))
  done
  [ "$dup_seen" -gt 0 ] && note "$row" "round $round: the gateways answered $dup_seen requests as duplicates (same event id sent twice)"
  # Writes per store transaction (group commit; with PostgreSQL: events per ingest commit).
  local bs=0 bc=0
  for i in $(seq 1 "$n"); do
    d=$(metric "$i" gateway_store_commit_batch_size_sum || true); bs=$((bs + ${d:-0}))
    d=$(metric "$i" gateway_store_commit_batch_size_count || true); bc=$((bc + ${d:-0}))
  done
  batch[$k]=$(awk -v s="$bs" -v c="$bc" 'BEGIN { if (c > 0) printf "%.1f", s / c; else print "?" }')
  stop_gateways "${gw_pids[@]}"
  if [ -n "$db" ]; then
    # What the database did per stored event (its backends flush their counters when they exit).
    for _ in $(seq 1 50); do
      [ "$(psql_do postgres "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")" = 0 ] && break
      sleep 0.1
    done
    pgwork[$k]=$(psql_do postgres "SELECT round(xact_commit::numeric / $in_store, 2) || ' commits, '
        || round(tup_inserted::numeric / $in_store, 2) || ' rows inserted, '
        || round(tup_updated::numeric / $in_store, 2) || ' rows updated, '
        || round(tup_fetched::numeric / $in_store, 1) || ' rows fetched'
      FROM pg_stat_database WHERE datname = '$db'" 2>/dev/null || true)
  fi

  # Figures from the loadgens' JSON.
  local js=() j
  for i in $(seq 1 "$n"); do js+=("$dir/loadgen-$i.json"); done
  rps[$k]=$(jq -s '[.[].rps] | add' "${js[@]}")
  reqs[$k]=$(jq -s '[.[].requests] | add' "${js[@]}")
  p99[$k]=$(jq -s '[.[].latency_ms.p99] | max' "${js[@]}")
  drain[$k]=$(jq -s '[.[].drain_s] | max' "${js[@]}")
  e2e[$k]=$(jq -s '([.[].stored_during_run] | add) / ([.[] | .elapsed_s + .drain_s] | max)' "${js[@]}")
  [ "$(jq -s 'any(.[]; .drain_timed_out)' "${js[@]}")" = true ] && note "$row" "round $round: drain TIMED OUT (120 s)"
  # When each loadgen's load began: its end - drain - load time (pg-3: how well the three overlapped).
  local spread
  spread=$(for i in $(seq 1 "$n"); do
             echo "$(cat "$dir/loadgen-$i.end") $(jq -r '.elapsed_s + .drain_s' "$dir/loadgen-$i.json")"
           done | awk '{ s = $1 - $2; if (NR == 1 || s < lo) lo = s; if (NR == 1 || s > hi) hi = s } END { printf "%.2f", hi - lo }')
  [ "$n" -gt 1 ] && note "$row" "round $round: the loadgens' loads began within $spread s of each other"
  for i in $(seq 1 "$n"); do
    j=$dir/loadgen-$i.json
    local bad
    bad=$(jq -r '[(.statuses | to_entries[] | select(.key != "200") | "status \(.key): \(.value)"),
                  (.transport_errors | to_entries[] | "\(.key): \(.value)")] | join(", ")' "$j")
    [ -n "$bad" ] && errs[$row]="${errs[$row]:+${errs[$row]}; }round $round, replica $i: $bad"
  done
  gw_ticks[$k]=$((gw1 - gw0))
  pg_ticks[$k]=$((pg1 - pg0))
  lg_ticks[$k]=$((lg1 - lg0 - lgl0))
  # Machine busy % over that window, the loadgens' part of it, and what neither they nor the servers
  # used (other processes on the machine: should be ~0; /proc/stat jiffies are USER_HZ ticks too).
  busy[$k]=$(awk -v a="$st0" -v b="$st1" -v l="${lg_ticks[$k]}" -v s=$((gw_ticks[$k] + pg_ticks[$k])) 'BEGIN {
    split(a, x, " "); split(b, y, " "); t = y[2] - x[2]; u = y[1] - x[1]; o = u - l - s; if (o < 0) o = 0
    if (t > 0) printf "%.0f%% (%.0f%%, %.0f%%)", 100 * u / t, 100 * l / t, 100 * o / t; else print "?" }')

  # Exactly once: every stored event is one line (one event id) in the logger files.
  local files=()
  for i in $(seq 1 "$n"); do [ -f "$dir/gw$i/data/assets.jsonl" ] && files+=("$dir/gw$i/data/assets.jsonl"); done
  local counts
  if [ ${#files[@]} -gt 0 ]; then
    counts=$(awk 'match($0, /"event_id":"[^"]*"/) { id = substr($0, RSTART + 12, RLENGTH - 13); if (seen[id]++ == 0) d++ }
                  { l++ } END { printf "%d %d", l, d }' "${files[@]}")
  else
    counts="0 0"
  fi
  lines[$k]=${counts% *}
  local distinct=${counts#* }
  stored[$k]=${in_store:-0}
  local ok_sum
  ok_sum=$(jq -s '[.[].ok] | add' "${js[@]}")
  [ "$ok_sum" != "${stored[$k]}" ] && note "$row" "round $round: $ok_sum requests answered 200 but ${stored[$k]} events in the store"
  dups[$k]=$((lines[$k] - distinct))
  missing[$k]=$((stored[$k] - distinct))

  # Anything the gateways logged (level warn: warnings and errors; not the two start lines).
  for i in $(seq 1 "$n"); do
    local l c
    c=$(grep -cv -e '^$' -e 'admin listening on ' -e 'gateway listening on ' "$dir/gw$i/server.log" || true)
    if [ "$c" -gt 0 ]; then
      l=$(grep -v -e '^$' -e 'admin listening on ' -e 'gateway listening on ' "$dir/gw$i/server.log" |
            head -n3 | cut -c1-300 | paste -sd'|' -)
      logs[$row]="${logs[$row]:+${logs[$row]}; }round $round, replica $i: $c line(s), first: $l"
    fi
  done

  printf '%-8s round %s: %7.0f req/s  p99 %6.2f ms  e2e %7.0f/s  drain %5.2f s  cpu gw %s + pg %s ticks  busy (loadgen, others) %s  lines %s / stored %s (dup %s, missing %s)  %s writes/commit%s\n' \
    "$row" "$round" "${rps[$k]}" "${p99[$k]}" "${e2e[$k]}" "${drain[$k]}" "${gw_ticks[$k]}" "${pg_ticks[$k]}" \
    "${busy[$k]}" "${lines[$k]}" "${stored[$k]}" "${dups[$k]}" "${missing[$k]}" \
    "${batch[$k]}" "$([ "$n" -gt 1 ] && printf '  (loads began within %s s)' "$spread")"
  if [ -z "${KEEP:-}" ]; then
    rm -rf "$dir"/gw*/data
    [ -n "$db" ] && psql_do postgres "DROP DATABASE $db WITH (FORCE)" >/dev/null
  fi
  return 0
}

loadavg0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "run: $rounds round(s) x [$rows], $conns connections in total per row, $secs s each; scratch $run_dir"
for round in $(seq 1 "$rounds"); do
  for row in $rows; do
    run_row "$row" "$round" || true
  done
done

# ---------------------------------------------------------------- the table
# join_by, mean_of, max_of: bench/lib.sh.
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo '—'; }

base_rps=$(mean_of rps sqlite-1)
base_e2e=$(mean_of e2e sqlite-1)
table="| row | ingest req/s (per round) | × sqlite-1 | p99 ms | end-to-end/s (drain s) | e2e × sqlite-1 | server CPU µs/req: gateways + PG = total | CPU busy (loadgen, other processes) | logger lines / stored events (dup, missing) |
|---|---|---|---|---|---|---|---|---|"
for row in $rows; do
  per=() e2e_per=() tg=0 tp=0 tr=0 tlines=0 tstored=0 tdup=0 tmiss=0 bz=()
  for r in $(seq 1 "$rounds"); do
    k="$row,$r"
    if [ -n "${rps[$k]:-}" ]; then
      per+=("$(fmt0 "${rps[$k]}")")
      e2e_per+=("$(fmt0 "${e2e[$k]}") ($(fmt2 "${drain[$k]}"))")
      bz+=("${busy[$k]}")
      tg=$((tg + gw_ticks[$k])); tp=$((tp + pg_ticks[$k])); tr=$((tr + reqs[$k]))
      tlines=$((tlines + lines[$k])); tstored=$((tstored + stored[$k]))
      tdup=$((tdup + dups[$k])); tmiss=$((tmiss + missing[$k]))
    else
      per+=("—"); e2e_per+=("—"); bz+=("—")
    fi
  done
  mean=$(mean_of rps "$row")
  if [ -z "$mean" ]; then
    table+=$'\n'"| $row | failed: ${failed[$row]:-no result} | | | | | | | |"
    continue
  fi
  us() { awk -v t="$1" -v n="$tr" -v hz="$tick" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "—" }'; }
  if [ "$row" = sqlite-1 ]; then cpu_cell="$(us "$tg") + — = $(us "$tg")"
  else cpu_cell="$(us "$tg") + $(us "$tp") = $(us $((tg + tp)))"; fi
  table+=$'\n'"| $row | $(join_by ' / ' "${per[@]}") | $(ratio "$mean" "$base_rps") | $(fmt2 "$(max_of p99 "$row")") | $(join_by ' / ' "${e2e_per[@]}") | $(ratio "$(mean_of e2e "$row")" "$base_e2e") | $cpu_cell | $(join_by ' / ' "${bz[@]}") | $tlines / $tstored ($tdup, $tmiss) |"
done

notes_text="Ingest req/s: HTTP answers / load time, per round (pg-3: the sum of its three loadgens). × sqlite-1: mean over the rounds / sqlite-1's mean. p99: the worst loadgen and round, closed loop. End-to-end: events stored during the load / (load + drain) s, per round (pg-3: the sum over the replicas / the longest load + drain); drain: from the end of the load until every stored event was delivered to the logger. Server CPU: utime+stime of the gateway processes, and of the postmaster with all its children (backends, background workers), over load + drain, per request answered, all rounds together. CPU busy: the whole machine ($(nproc) CPUs) over load + drain, per round; in parentheses the loadgens' share (they run on the same cores) and what was used by neither the loadgens nor the servers (other processes; should be near 0). Logger lines vs stored events, all rounds: lines in the logger files (pg-3: all three) and events in the store; dup = lines - distinct event ids, missing = stored - distinct event ids."
extra=''
for row in $rows; do
  [ -n "${errs[$row]:-}" ] && extra+=$'\n'"- $row: non-200 answers or transport errors: ${errs[$row]}"
  [ -n "${failed[$row]:-}" ] && [ -n "$(mean_of rps "$row")" ] && extra+=$'\n'"- $row: ${failed[$row]}"
  [ -n "${notes[$row]:-}" ] && extra+=$'\n'"- $row: ${notes[$row]}"
  bl=()
  for r in $(seq 1 "$rounds"); do [ -n "${batch[$row,$r]:-}" ] && bl+=("${batch[$row,$r]}"); done
  bl2=()
  for r in $(seq 1 "$rounds"); do [ -n "${pgwork[$row,$r]:-}" ] && bl2+=("${pgwork[$row,$r]}"); done
  [ ${#bl2[@]} -gt 0 ] && extra+=$'\n'"- $row: PostgreSQL per stored event (pg_stat_database), per round: $(join_by ' / ' "${bl2[@]}")"
  [ ${#bl[@]} -gt 0 ] && extra+=$'\n'"- $row: writes per store commit (gateway_store_commit_batch_size, mean), per round: $(join_by ' / ' "${bl[@]}")"
  [ -n "${logs[$row]:-}" ] && extra+=$'\n'"- $row: gateway log: ${logs[$row]}"
done
rows_text="Rows: \`sqlite-1\` one gateway on the embedded store; \`pg-1\` one gateway on a fresh PostgreSQL database; \`pg-3\` three gateways on one fresh database, each loaded by its own \`loadgen run\` with $((conns / 3))–$(( (conns + 2) / 3 )) of the $conns connections. Every gateway routes the events to the logger plugin with \`fsync = \"always\"\`${pg_pool:+, PostgreSQL pool_size = $pg_pool}."
versions="gateway binary built $(date -u -r "$gateway_bin" '+%Y-%m-%d %H:%M UTC') (tree at run time: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$here" diff --quiet 2>/dev/null || echo '+dirty'))"
[ -n "$build_note" ] && versions+="; $build_note"

echo
echo "$table"
echo
echo "$rows_text"
echo "$notes_text"
[ -n "$extra" ] && echo "${extra#$'\n'}"

model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
fs=$(df -PT "$work" 2>/dev/null | awk 'NR == 2 { print $2 " on " $7 }')
mkdir -p "$(dirname "$out")"
{
  echo "# Replicas on PostgreSQL vs the embedded store — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, ${model:-unknown model}; loadgen, gateways and PostgreSQL on the same machine (loopback); load average before the run: $loadavg0; stores and logger files on ${fs:-?}"
  echo "- command: \`$cmdline\` ($rounds round(s), $conns connections in total per row, $secs s per load, closed loop)"
  echo "- versions: $versions"
  [ -n "${pg_line:-}" ] && echo "- ${pg_line}"
  echo
  echo "$table"
  echo
  echo "$rows_text"
  echo
  echo "$notes_text"
  [ -n "$extra" ] && echo "${extra#$'\n'}"
} >"$out"
echo
echo "written to ${out#"$here"/}"
