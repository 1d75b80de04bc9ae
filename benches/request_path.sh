#!/usr/bin/env bash
# Request path: requests/s of examples/hello through a `shoal dev` node's ingress, side by side in
# one run with `wasmtime serve` (wasmtime-cli 48.0.8, the library version Shoal links) on the same
# component, both driven by the same wrk. Runs each twice, alternating, and prints the ratio.
#
# Installs wrk (apt) and wasmtime-cli (cargo install, a long build) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
if ! wasmtime --version 2>/dev/null | grep -q '^wasmtime 48.0.8'; then
  cargo install wasmtime-cli --version 48.0.8 --locked
fi
cargo build --release --manifest-path examples/guests/Cargo.toml --target wasm32-wasip2 -p hello
cargo build --release --bin shoal
HELLO=$PWD/examples/guests/target/wasm32-wasip2/release/hello.wasm
SHOAL=$PWD/target/release/shoal

work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

export SHOAL_CONFIG=$work/config.yaml
"$SHOAL" dev --data-dir "$work/dev" --api-listen 127.0.0.1:0 --dns-listen 127.0.0.1:0 --ingress-listen 127.0.0.1:18080 >"$work/dev.out" 2>"$work/dev.err" &
pids+=($!)
until grep -q "ingress listening" "$work/dev.out" 2>/dev/null; do sleep 0.1; done
cat >"$work/hello.yaml" <<YAML
apiVersion: shoal.dev/v1
kind: Workload
metadata: {name: hello, namespace: default}
spec: {module: $HELLO, type: http, replicas: 1}
YAML
"$SHOAL" apply -f "$work/hello.yaml"
until curl -sf -H "Host: hello.default.localhost" http://127.0.0.1:18080/ >/dev/null; do sleep 0.1; done

wasmtime serve -Scli --addr 127.0.0.1:18081 "$HELLO" >"$work/wasmtime.out" 2>&1 &
pids+=($!)
until curl -sf http://127.0.0.1:18081/ >/dev/null; do sleep 0.1; done

rate() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
declare -a shoal wasmtime
for round in 1 2; do
  shoal+=("$(rate -H 'Host: hello.default.localhost' http://127.0.0.1:18080/)")
  wasmtime+=("$(rate http://127.0.0.1:18081/)")
done
echo "shoal ingress (requests/s): ${shoal[*]}"
echo "wasmtime serve (requests/s): ${wasmtime[*]}"
awk -v a="${shoal[0]}" -v b="${shoal[1]}" -v c="${wasmtime[0]}" -v d="${wasmtime[1]}" \
  'BEGIN { printf "ratio shoal/wasmtime (mean of the two rounds): %.2f\n", (a + b) / (c + d) }'
