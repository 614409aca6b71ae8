#!/usr/bin/env bash
# Runs the benchmark suite (BENCHMARKS.md): installs what it and its peers need (podman
# with the runc runtime, since crun refuses hosts with a v1/v2 cgroup hybrid), builds a
# release and runs nexus-bench with the arguments given, e.g. `--quick` or
# `--json bench.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}" podman runc
command -v npm >/dev/null || apt_install nodejs npm
ensure_rust

log "building every binary (release)"
cargo build --release --locked --bins
exec target/release/nexus-bench "$@"
