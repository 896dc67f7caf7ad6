# bench/lib.sh — sourced by the bench scripts (run.sh, replicas.sh, soak.sh, scale.sh): the gateway config
# every benchmark row runs, so they measure the same thing.

# gateway_toml OUT LISTEN ADMIN_LISTEN PATH TOKEN KEY STORE_TOML LOGGER_SO LOGGER_OUT FSYNC
# Writes a config with one encrypted webhook app, the store given as a TOML line (`path = ...`
# or `url = ...`), the logger plugin routed for assets_update_v1 with the logger's fsync
# (`always` or `never`), and warnings-only logs.
gateway_toml() {
  local out=$1 listen=$2 admin=$3 path=$4 token=$5 key=$6 store=$7 logger=$8 logger_out=$9 fsync=${10}
  cat >"$out" <<TOML
[server]
listen = "$listen"
[admin]
listen = "$admin"
[log]
level = "warn"
[[apps]]
name = "bench"
path = "$path"
verification_token = "$token"
encrypt_key = "$key"
[store]
$store
[[plugins]]
name = "audit"
library = "$logger"
config = { path = "$logger_out", fsync = "$fsync" }
[[routes]]
events = ["hire.referral_account.assets_update_v1"]
plugins = ["audit"]
TOML
}

# proc_table: "pid ppid ticks" for every process (ticks = utime+stime+cutime+cstime), for the
# scripts' CPU accounting of a process tree.
proc_table() {
  local f line pid x
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    pid=${f#/proc/}; pid=${pid%/stat}
    # The fields after "(comm) " (comm may hold spaces or parentheses), 0-based: state ppid ...
    # utime(11) stime(12) cutime(13) cstime(14).
    read -r -a x <<<"${line##*) }"
    echo "$pid ${x[1]} $((x[11] + x[12] + x[13] + x[14]))"
  done
}

# steal_ticks: "steal total" ticks of all CPUs so far (/proc/stat); steal_share BEFORE: the
# share of CPU time stolen by the hypervisor since BEFORE, in percent (one decimal).
steal_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }
steal_share() {
  local before=$1
  awk -v b="$before" '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; split(b, x, " ");
    d = t - x[2]; printf "%.1f", (d > 0 ? ($9 - x[1]) * 100 / d : 0) }' /proc/stat
}

# Table helpers. mean_of / max_of read ARRAY[KEY,ROUND] for rounds 1..$rounds (the caller's
# global) and print nothing when no round ran.
join_by() { local sep=$1 acc=$2 x; shift 2; for x in "$@"; do acc+="$sep$x"; done; echo "$acc"; }
fmt0() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
fmt2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
mean_of() {  # ARRAY-NAME KEY -> mean over the rounds that ran
  local -n arr=$1
  local r vals=()
  for r in $(seq 1 "$rounds"); do [ -n "${arr[$2,$r]:-}" ] && vals+=("${arr[$2,$r]}"); done
  [ ${#vals[@]} -gt 0 ] || return 0
  printf '%s\n' "${vals[@]}" | awk '{ s += $1; n++ } END { printf "%.6f", s / n }'
}
max_of() {  # ARRAY-NAME KEY -> the largest value over the rounds that ran
  local -n arr=$1
  local r vals=()
  for r in $(seq 1 "$rounds"); do [ -n "${arr[$2,$r]:-}" ] && vals+=("${arr[$2,$r]}"); done
  [ ${#vals[@]} -gt 0 ] || return 0
  printf '%s\n' "${vals[@]}" | awk 'NR == 1 || $1 > m { m = $1 } END { printf "%.6f", m }'
}

# bench_setup NAME KNOB...: the start soak.sh and scale.sh share. Sets cmdline (bench/NAME.sh with
# the given knobs that are set), conns, port, admin, host, out (bench/results/NAME.md unless OUT),
# gateway_bin, logger_so, loadgen (checked to exist), a scratch folder $run under WORK, and the
# app's key, token and path. Needs $here.
bench_setup() {
  local name=$1 v
  shift
  cmdline="bench/$name.sh"
  for v in "$@"; do
    if [ -n "${!v:-}" ]; then cmdline="$v=${!v} $cmdline"; fi
  done
  conns=${CONNS:-32}
  port=${PORT:-17990}
  admin=$((port + 1))
  host=127.0.0.1
  out=${OUT:-$here/bench/results/$name.md}
  gateway_bin=${GATEWAY_BIN:-$here/target/release/gateway}
  logger_so=${LOGGER_SO:-$here/target/release/liblogger.so}
  loadgen=$here/target/release/loadgen
  for v in "$gateway_bin" "$logger_so" "$loadgen"; do
    [ -e "$v" ] || { echo "missing $v: cargo build --release -p gateway -p logger -p gateway-bench" >&2; exit 2; }
  done
  for v in curl jq awk; do
    command -v "$v" >/dev/null || { echo "needs $v" >&2; exit 2; }
  done
  mkdir -p "${WORK:-/tmp/gateway-bench}"
  run=$(mktemp -d "${WORK:-/tmp/gateway-bench}/$name.XXXXXX")
  key=$name-encrypt-key
  token=$name-verification-token
  path=/webhook/event
}

# run_gateway CONFIG LOG: starts $gateway_bin on CONFIG (output to LOG), sets srv_pid and waits
# up to 30 s for the admin listener's /readyz; exits with the log if it does not get ready.
run_gateway() {
  "$gateway_bin" run --config "$1" >"$2" 2>&1 &
  srv_pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://$host:$admin/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "the gateway did not get ready; its log:" >&2
  cat "$2" >&2
  exit 1
}
