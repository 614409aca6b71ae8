#!/usr/bin/env bash
# Runs the whole test suite the way CI does: formatting, lints, then every test against
# real binaries, real bubblewrap and real files. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}"
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
