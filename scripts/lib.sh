# Shared helpers of the project's scripts. Sourced, not run.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $* (install sudo or run as root)"
    fi
}

# apt_install PKG...: installs the packages that are missing, and nothing else.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install these packages by hand: ${missing[*]}"
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_rust: cargo on PATH, through rustup when the machine has none.
ensure_rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    command -v cargo >/dev/null && return 0
    log "installing the Rust toolchain with rustup"
    apt_install curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    . "$HOME/.cargo/env"
}

# The system packages Nexus needs at run time, and to build. btrfs-progs makes O(1)
# workspace snapshots possible when the data directory is on btrfs, and lets the tests
# make a loop-mounted btrfs image to cover that path. nftables loads the
# rules that capture a sandbox's outbound connections for the policy proxy.
RUNTIME_PACKAGES=(bubblewrap btrfs-progs ca-certificates mmdebstrap nftables)
BUILD_PACKAGES=(gcc libc6-dev pkg-config)

# Starts nexusd ($1) in the background on a free loopback port, with its XDG directories
# under $2 and any further VAR=VALUE arguments in its environment; waits until /healthz
# answers. Sets `daemon` (its pid) and `addr` (host:port); its log is $2/nexusd.log.
start_test_daemon() {
    local nexusd=$1 dir=$2
    shift 2
    log "starting $nexusd"
    env -i PATH="$PATH" HOME="$dir/home" \
        XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/data" \
        XDG_STATE_HOME="$dir/state" XDG_RUNTIME_DIR="$dir/run" "$@" \
        "$nexusd" --listen 127.0.0.1:0 --log-format json --log-level warn,nexusd=info \
        2>"$dir/nexusd.log" >/dev/null &
    daemon=$!
    # The daemon picks a free port and logs it: {"fields":{"message":"listening","addr":...}}.
    addr=
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/.*"message":"listening","addr":"\([^"]*\)".*/\1/p' "$dir/nexusd.log" | head -n 1)
        [ -n "$addr" ] && break
        kill -0 "$daemon" 2>/dev/null || { cat "$dir/nexusd.log" >&2; die "nexusd exited before listening"; }
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$dir/nexusd.log" >&2; die "nexusd did not report its address"; }
    for _ in $(seq 1 100); do
        [ "$(curl -fsS "http://$addr/healthz" 2>/dev/null)" = ok ] && break
        sleep 0.1
    done
    [ "$(curl -fsS "http://$addr/healthz" 2>/dev/null)" = ok ] || die "http://$addr/healthz does not answer"
}
