#!/usr/bin/env bash
# Cluster DNS: queries/s of a `shoal dev` node's DNS server, side by side in one run with Knot DNS
# (knotd) serving the same records from a zone file, both driven by the same dnsperf and query
# file. Alternates Shoal, Knot, Shoal, Knot, ... and prints a Markdown table with the median QPS
# and latency of each and the ratio Shoal/Knot.
#
# Records: SERVICES Services (svc-0..) in namespace `bench`, all selecting one HTTP workload
# `hello`; each has an A record and an `_http._tcp` SRV record (target the node, whose A rides
# along as additional). Queries: one A and one SRV per service, plus ~10% names that do not exist
# (NXDOMAIN). Knot's zone is built from Shoal's own answers and checked to answer the same.
#
# dnsperf runs on the same machine and takes CPU from the server under test; the table shows how
# much CPU each used. Needs the release binary and the guests (`cargo build --release`);
# installs knot, knot-dnsutils (kdig) and dnsperf (apt) when missing.
#
# Knobs (environment): SERVICES=50 ROUNDS=2 DURATION=10 (s) CLIENTS=8 THREADS=2 OUTSTANDING=500
# KNOT_PORT=15354 SHOAL=target/release/shoal HELLO=<hello.wasm> DNSPERF_ARGS= (extra, e.g. -e)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=${SERVICES:-50}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
OUTSTANDING=${OUTSTANDING:-500}
KNOT_PORT=${KNOT_PORT:-15354}
DNSPERF_ARGS=${DNSPERF_ARGS:-}
SHOAL=${SHOAL:-$PWD/target/release/shoal}
DOMAIN=cluster.local
NS=bench

die() { echo "dns.sh: $*" >&2; exit 1; }
[ -x "$SHOAL" ] || die "no shoal binary at $SHOAL; build it first: cargo build --release"
if [ -z "${HELLO:-}" ]; then
  HELLO=$(find "$PWD/target/release/build" -name hello.wasm -path '*wasm32-wasip2*' 2>/dev/null | head -1 || true)
fi
[ -n "${HELLO:-}" ] && [ -f "$HELLO" ] || die "no hello.wasm (wasm32-wasip2) under target/release/build; build it first: cargo build --release (or set HELLO=)"

missing=()
command -v knotd >/dev/null || missing+=(knot)
command -v kdig >/dev/null || missing+=(knot-dnsutils)
command -v dnsperf >/dev/null || missing+=(dnsperf)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# waits up to $1 seconds for the command that follows to succeed
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}
# the A/SRV records (+short) for a name at port $1
short() { kdig @127.0.0.1 -p "$1" +short +timeout=1 +retry=0 "$2" "$3"; }
has_answer() { [ -n "$(short "$@")" ]; }

# --- Shoal ---------------------------------------------------------------------------------------
export SHOAL_CONFIG=$work/config.yaml
"$SHOAL" dev --data-dir "$work/dev" --api-listen 127.0.0.1:0 --dns-listen 127.0.0.1:0 \
  --ingress-listen 127.0.0.1:0 >"$work/dev.out" 2>"$work/dev.err" &
shoal_pid=$!
pids+=("$shoal_pid")
if ! wait_for 60 grep -q "dns listening" "$work/dev.out"; then
  cat "$work/dev.out" "$work/dev.err" >&2
  die "shoal dev did not announce its DNS address within 60 s"
fi
SHOAL_PORT=$(sed -n 's/^dns listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/dev.out")
[ -n "$SHOAL_PORT" ] || die "could not parse the DNS port from: $(grep 'dns listening' "$work/dev.out")"

{
  printf 'apiVersion: shoal.dev/v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$NS"
  printf -- '---\napiVersion: shoal.dev/v1\nkind: Workload\nmetadata:\n  name: hello\n  namespace: %s\n' "$NS"
  printf 'spec:\n  module: %s\n  type: http\n  replicas: 1\n' "$HELLO"
  for ((i = 0; i < SERVICES; i++)); do
    printf -- '---\napiVersion: shoal.dev/v1\nkind: Service\nmetadata:\n  name: svc-%d\n  namespace: %s\n' "$i" "$NS"
    printf 'spec:\n  selector:\n    workload: hello\n  ports:\n  - name: http\n    port: 80\n'
  done
} >"$work/bench.yaml"
"$SHOAL" apply -f "$work/bench.yaml" >"$work/apply.out" || { cat "$work/apply.out" >&2; die "shoal apply failed"; }
last=$((SERVICES - 1))
for svc in svc-0 "svc-$last"; do
  wait_for 60 has_answer "$SHOAL_PORT" "$svc.$NS.svc.$DOMAIN." A ||
    die "Shoal never answered $svc.$NS.svc.$DOMAIN A (no endpoints after 60 s)"
done
wait_for 10 has_answer "$SHOAL_PORT" "_http._tcp.svc-$last.$NS.svc.$DOMAIN." SRV ||
  die "Shoal never answered _http._tcp.svc-$last.$NS.svc.$DOMAIN SRV"

# What Shoal serves, to copy into Knot's zone: the node's address, the SRV target and port.
ADDR=$(short "$SHOAL_PORT" "svc-0.$NS.svc.$DOMAIN." A | head -1)
read -r SRV_PRIO SRV_WEIGHT SRV_PORT SRV_TARGET < <(short "$SHOAL_PORT" "_http._tcp.svc-0.$NS.svc.$DOMAIN." SRV | head -1)
[ -n "$ADDR" ] && [ -n "${SRV_TARGET:-}" ] || die "could not read Shoal's A/SRV answers"

# --- Knot ----------------------------------------------------------------------------------------
mkdir -p "$work/knot/run" "$work/knot/db"
{
  printf '$ORIGIN %s.\n$TTL 5\n' "$DOMAIN"
  # the same SOA Shoal serves; Knot also needs an apex NS (Shoal has none) and its address
  printf '@ SOA ns.dns.%s. hostmaster.%s. 1 60 10 3600 5\n' "$DOMAIN" "$DOMAIN"
  printf '@ NS ns.dns.%s.\nns.dns A 127.0.0.1\n' "$DOMAIN"
  printf '%s A %s\n' "$SRV_TARGET" "$ADDR"
  for ((i = 0; i < SERVICES; i++)); do
    printf 'svc-%d.%s.svc A %s\n' "$i" "$NS" "$ADDR"
    printf '_http._tcp.svc-%d.%s.svc SRV %s %s %s %s\n' "$i" "$NS" "$SRV_PRIO" "$SRV_WEIGHT" "$SRV_PORT" "$SRV_TARGET"
  done
} >"$work/knot/$DOMAIN.zone"
cat >"$work/knot/knot.conf" <<CONF
server:
    rundir: "$work/knot/run"
    listen: 127.0.0.1@$KNOT_PORT
log:
  - target: stderr
    any: warning
database:
    storage: "$work/knot/db"
control:
    listen: "$work/knot/run/knot.sock"
template:
  - id: default
    storage: "$work/knot"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: $DOMAIN
CONF
knotd -c "$work/knot/knot.conf" >"$work/knot.out" 2>&1 &
knot_pid=$!
pids+=("$knot_pid")
if ! wait_for 20 has_answer "$KNOT_PORT" "svc-0.$NS.svc.$DOMAIN." A; then
  cat "$work/knot.out" >&2
  die "knotd did not answer on 127.0.0.1:$KNOT_PORT within 20 s (port taken? set KNOT_PORT=)"
fi

# --- queries -------------------------------------------------------------------------------------
nx=$(((2 * SERVICES + 8) / 9)) # ~10% of all queries
for ((i = 0; i < SERVICES; i++)); do
  echo "svc-$i.$NS.svc.$DOMAIN. A"
  echo "_http._tcp.svc-$i.$NS.svc.$DOMAIN. SRV"
  if ((i * nx / SERVICES != (i + 1) * nx / SERVICES)); then echo "missing-$i.$NS.svc.$DOMAIN. A"; fi
done >"$work/queries.txt"

# Both servers must give the same status and answer/additional records for every query.
answers() {
  kdig @127.0.0.1 -p "$1" +timeout=1 +retry=0 +nocomments +noquestion +noauthority +nostats "$2" "$3" |
    awk '!/^;/ && NF' | sort
  kdig @127.0.0.1 -p "$1" +timeout=1 +retry=0 "$2" "$3" | grep -o 'status: [A-Z]*'
}
while read -r name type; do
  if ! diff <(answers "$SHOAL_PORT" "$name" "$type") <(answers "$KNOT_PORT" "$name" "$type") >"$work/diff" 2>&1; then
    cat "$work/diff" >&2
    die "Shoal (<) and Knot (>) answer $name $type differently"
  fi
done <"$work/queries.txt"

# --- runs ----------------------------------------------------------------------------------------
# CPU seconds (user + system) a process has used so far
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
dnsperf_cmd=(dnsperf -s 127.0.0.1 -p PORT -d queries.txt -c "$CLIENTS" -T "$THREADS" -q "$OUTSTANDING" -l "$DURATION")
# shellcheck disable=SC2206
extra=($DNSPERF_ARGS)
# run <port> <pid> <seconds>: prints "qps latency_ms lost_pct server_cpu_pct dnsperf_cpu_pct"; CPU
# is sampled from 1 s after the start to 1 s before the end (dnsperf then waits for stragglers)
run() {
  local perf out sb pb t0 sa pa t1 cpu="0 0"
  dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries.txt" -c "$CLIENTS" -T "$THREADS" -q "$OUTSTANDING" \
    -l "$3" ${extra[@]+"${extra[@]}"} >"$work/dnsperf.out" 2>&1 &
  perf=$!
  if [ "$3" -ge 4 ]; then
    sleep 1
    sb=$(cpu_seconds "$2") pb=$(cpu_seconds "$perf") t0=$(date +%s.%N)
    sleep $(($3 - 2))
    sa=$(cpu_seconds "$2") pa=$(cpu_seconds "$perf") t1=$(date +%s.%N)
    cpu=$(awk -v sb="$sb" -v sa="$sa" -v pb="$pb" -v pa="$pa" -v t0="$t0" -v t1="$t1" \
      'BEGIN { printf "%.0f %.0f", 100 * (sa - sb) / (t1 - t0), 100 * (pa - pb) / (t1 - t0) }')
  fi
  wait "$perf" || { cat "$work/dnsperf.out" >&2; die "dnsperf failed"; }
  out=$(awk '/Queries per second:/ { q = $4 } /Average Latency \(s\):/ { l = $4 * 1000 }
             /Queries sent:/ { s = $3 } /Queries lost:/ { x = $3 }
             END { if (q == "") exit 1; printf "%s %.3f %.2f", q, l, (s ? 100 * x / s : 0) }' "$work/dnsperf.out") ||
    { cat "$work/dnsperf.out" >&2; die "could not parse dnsperf's output"; }
  echo "$out $cpu"
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

run "$SHOAL_PORT" "$shoal_pid" 2 >/dev/null # warm-up
run "$KNOT_PORT" "$knot_pid" 2 >/dev/null
declare -a s_qps s_lat s_cpu s_perf k_qps k_lat k_cpu k_perf s_lost k_lost
for ((round = 1; round <= ROUNDS; round++)); do
  read -r q l x c p < <(run "$SHOAL_PORT" "$shoal_pid" "$DURATION")
  s_qps+=("$q") s_lat+=("$l") s_lost+=("$x") s_cpu+=("$c") s_perf+=("$p")
  echo "round $round shoal: $q qps, avg latency $l ms, lost $x%, server cpu $c%, dnsperf cpu $p%" >&2
  read -r q l x c p < <(run "$KNOT_PORT" "$knot_pid" "$DURATION")
  k_qps+=("$q") k_lat+=("$l") k_lost+=("$x") k_cpu+=("$c") k_perf+=("$p")
  echo "round $round knot:  $q qps, avg latency $l ms, lost $x%, server cpu $c%, dnsperf cpu $p%" >&2
done

sq=$(median "${s_qps[@]}") kq=$(median "${k_qps[@]}")
echo
echo "Cluster DNS, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')),"
echo "$SERVICES services, $(wc -l <"$work/queries.txt") query names ($nx NXDOMAIN), median of $ROUNDS rounds of ${DURATION}s,"
echo "knotd $(knotd --version | awk '{ print $NF }'), $(dnsperf -h 2>&1 | awk '/^Version/ { print "dnsperf " $2 }'). Command (PORT = each server's):"
echo '`'"${dnsperf_cmd[*]}${extra[*]+ ${extra[*]}}"'`'
echo "dnsperf runs on the same $(nproc) CPUs and competes with the server; CPU % is of one CPU (100% = 1 core)."
echo "Queries \"lost\" are mostly the ones still in flight when dnsperf stops."
echo
echo "| server | QPS | avg latency (ms) | lost | server CPU | dnsperf CPU |"
echo "|---|---:|---:|---:|---:|---:|"
printf '| Shoal (shoal dev) | %.0f | %.3f | %.2f%% | %.0f%% | %.0f%% |\n' "$sq" "$(median "${s_lat[@]}")" \
  "$(median "${s_lost[@]}")" "$(median "${s_cpu[@]}")" "$(median "${s_perf[@]}")"
printf '| Knot DNS (knotd) | %.0f | %.3f | %.2f%% | %.0f%% | %.0f%% |\n' "$kq" "$(median "${k_lat[@]}")" \
  "$(median "${k_lost[@]}")" "$(median "${k_cpu[@]}")" "$(median "${k_perf[@]}")"
awk -v s="$sq" -v k="$kq" 'BEGIN { printf "| **ratio Shoal/Knot** | **%.2f** | | | | |\n", s / k }'
