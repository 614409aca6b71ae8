#!/usr/bin/env bash
# Runs the whole test suite the way CI does: formatting, lints, then every test against
# real binaries, real bubblewrap and real files. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# curl and openssl are what the egress tests run inside sandboxes and serve HTTPS with;
# tmux drives `nexusctl attach` as a terminal would.
apt_install "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}" curl openssl tmux
# npm fetches xterm.js for the web console at build time (crates/nexusd/build.rs); Chromium
# runs the console's browser test. A node that came with its own npm is kept.
command -v npm >/dev/null || apt_install nodejs npm
apt_install chromium
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
log "web console in headless Chromium (playwright-core)"
scripts/console-test.sh target/debug/nexusd
