#!/usr/bin/env bash
# Installs etcd (the side-by-side anchor) if missing, then runs the control-plane benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
fi
cargo bench --bench control_plane
