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
