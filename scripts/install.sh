#!/usr/bin/env bash
# Installs what is missing, builds Nexus, installs it for this user, starts nexusd on its
# embedded defaults and shows it working. Safe to run again: it upgrades in place.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

BIN_DIR="${NEXUS_BIN_DIR:-$HOME/.local/bin}"

apt_install "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}"
# The build bundles the web console's xterm.js from its npm package (crates/nexusd/build.rs).
command -v npm >/dev/null || apt_install nodejs npm
ensure_rust

log "building nexusd, nexusctl and nexus-agent (release)"
cargo build --release --locked --bin nexusd --bin nexusctl --bin nexus-agent

log "installing into $BIN_DIR"
mkdir -p "$BIN_DIR"
for bin in nexusd nexusctl nexus-agent; do
    # Copy then rename, so a running nexusd keeps its old binary until it restarts.
    install -m 0755 "target/release/$bin" "$BIN_DIR/.$bin.new"
    mv -f "$BIN_DIR/.$bin.new" "$BIN_DIR/$bin"
done
ln -sf nexusctl "$BIN_DIR/nxc"
case ":$PATH:" in *":$BIN_DIR:"*) ;; *) log "note: add $BIN_DIR to your PATH" ;; esac
export PATH="$BIN_DIR:$PATH"

UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
mkdir -p "$UNIT_DIR"
install -m 0644 packaging/systemd/nexus.service "$UNIT_DIR/nexus.service"

RUNTIME="${XDG_RUNTIME_DIR:-/tmp/nexus-$(id -u)}/nexus"
STATE="${XDG_STATE_HOME:-$HOME/.local/state}/nexus"
if systemctl --user show-environment >/dev/null 2>&1; then
    log "starting nexusd as a systemd user service"
    systemctl --user daemon-reload
    systemctl --user enable nexus.service >/dev/null 2>&1 || true
    systemctl --user restart nexus.service
else
    # No systemd user session (a container, a bare SSH login): run it in the background.
    log "no systemd user session here; starting nexusd in the background (log: $STATE/nexusd.log)"
    if [ -f "$RUNTIME/nexusd.pid" ] && kill -0 "$(cat "$RUNTIME/nexusd.pid")" 2>/dev/null; then
        pid="$(cat "$RUNTIME/nexusd.pid")"
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    mkdir -p "$STATE"
    nohup "$BIN_DIR/nexusd" >>"$STATE/nexusd.log" 2>&1 </dev/null &
fi

for _ in $(seq 1 100); do
    nexusctl status >/dev/null 2>&1 && break
    sleep 0.1
done
log "nexusd is up:"
nexusctl status
log "a first command in a throwaway sandbox:"
nexusctl run -- sh -c 'echo "hello from $(hostname), uid $(id -u), in $(pwd)"'
