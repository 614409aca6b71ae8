#!/usr/bin/env bash
# Runs the whole test suite the way CI does: formatting, lints, then every test against
# real binaries, real bubblewrap and real files. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# curl and openssl are what the egress tests run inside sandboxes and serve HTTPS with.
apt_install "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}" curl openssl
ensure_rust
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast "$@"
log "MCP conformance suite (2025-11-25 and 2026-07-28 requirement sets)"
scripts/mcp-conformance.sh target/debug/nexusd
