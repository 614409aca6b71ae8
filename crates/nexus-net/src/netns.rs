//! The network namespace a sandbox runs in when nexusd is root.
//!
//! The daemon makes it, so it belongs to the host's user namespace: nothing inside the
//! sandbox (whose user namespace is a child of the host's) can change its routes or its
//! rules, even with every capability of its own namespace. Inside it:
//! - loopback is up, and a default route (IPv4 and IPv6) points at loopback, so that a
//!   connection to any address is routed and meets the rules below;
//! - nftables rules redirect every outbound TCP connection to [`CAPTURE_PORT`] and every
//!   UDP datagram to port 53 (any address) to the resolver on [`DNS_PORT`]; loopback
//!   traffic between the sandbox's own programs passes; everything else (other UDP,
//!   ICMP) is dropped, which the sender sees at once as `EPERM`;
//! - the daemon's own sockets listen on loopback: the proxy ([`PROXY_PORT`]), the capture
//!   port and the resolver. They are the daemon's descriptors, made by a thread of the
//!   daemon that joined the namespace, so no bridge process sits in between.
//!
//! When the rules cannot be loaded (no `nft`, or a kernel without nf_tables NAT), no
//! route is added: the sandbox still reaches the proxy on loopback through the proxy
//! variables, and any other connection fails at once with `ENETUNREACH`, never a hang.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;

/// The proxy port on the sandbox's loopback: HTTP (plain and `CONNECT`) and SOCKS5.
pub const PROXY_PORT: u16 = 3128;
/// Where captured TCP connections arrive, on the sandbox's loopback.
pub const CAPTURE_PORT: u16 = 15001;
/// The resolver's port on the sandbox's loopback (UDP).
pub const DNS_PORT: u16 = 53;

/// The nftables ruleset loaded into every sandbox namespace.
fn ruleset() -> String {
    format!(
        "table inet nexus {{
  chain output_nat {{
    type nat hook output priority -100; policy accept;
    udp dport 53 redirect to :{DNS_PORT}
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    meta l4proto tcp redirect to :{CAPTURE_PORT}
  }}
  chain output_filter {{
    type filter hook output priority 0; policy drop;
    ip daddr 127.0.0.0/8 accept
    ip6 daddr ::1 accept
  }}
}}
"
    )
}

/// A network namespace, held open by a descriptor.
#[derive(Debug)]
pub struct Netns {
    file: OwnedFd,
}

/// Whether connections that ignore the proxy variables are captured too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Every outbound TCP connection goes through the policy proxy.
    pub transparent: bool,
    /// Why not, when not, with the fix.
    pub detail: String,
}

/// Why a namespace could not be made or joined.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A system call failed.
    #[error("cannot {what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> NetnsError {
    move |source| NetnsError::Sys { what, source }
}

impl Netns {
    /// Makes a namespace with loopback up and, where the host allows, the capture rules
    /// and routes. Needs root (`CAP_SYS_ADMIN` and `CAP_NET_ADMIN` on the host).
    pub fn create() -> Result<(Self, Capture), NetnsError> {
        on_fresh_thread(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| sys("create a network namespace")(e.into()))?;
            let file = std::fs::File::open("/proc/thread-self/ns/net")
                .map_err(sys("open the new network namespace"))?;
            loopback_up().map_err(sys("bring loopback up"))?;
            let capture = match load_capture() {
                Ok(()) => Capture {
                    transparent: true,
                    detail:
                        "every outbound TCP connection and DNS query goes through the policy proxy"
                            .into(),
                },
                Err(reason) => Capture {
                    transparent: false,
                    detail: format!(
                        "transparent capture unavailable ({reason}); only programs using the proxy variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) reach the network, others fail with 'network unreachable'; install nftables and use a kernel with nf_tables NAT"
                    ),
                },
            };
            Ok((Self { file: file.into() }, capture))
        })
    }

    /// The namespace of a running process (to re-attach after a daemon restart).
    pub fn of_process(pid: u32) -> Result<Self, NetnsError> {
        let file = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(sys("open the sandbox's network namespace"))?;
        Ok(Self { file: file.into() })
    }

    /// Runs `f` on a fresh thread that has joined this namespace; sockets it makes
    /// belong to the namespace for good.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> Result<T, NetnsError> {
        on_fresh_thread(|| {
            nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| sys("join the sandbox's network namespace")(e.into()))?;
            f().map_err(sys("make sockets in the sandbox's network namespace"))
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// Runs `f` on a new thread that ends with it, so a namespace change never leaks into
/// the runtime's threads.
fn on_fresh_thread<T: Send>(
    f: impl FnOnce() -> Result<T, NetnsError> + Send,
) -> Result<T, NetnsError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("nexus-netns".into())
            .spawn_scoped(scope, f)
            .map_err(sys("start a thread"))?
            .join()
            .unwrap_or_else(|_| {
                Err(NetnsError::Sys {
                    what: "configure a network namespace",
                    source: io::Error::other("the thread panicked"),
                })
            })
    })
}

/// `ip link set lo up`, by ioctl.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nothing else.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the flags member of the union is the initialised one.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Loads the rules, then the routes (in that order: routes without rules would send
/// connections into loopback where nothing answers them).
fn load_capture() -> Result<(), String> {
    let nft = find_tool("nft").ok_or("the nft tool is not installed")?;
    run_with_input(&nft, &["-f", "-"], &ruleset())?;
    crate::routes::add_default_routes().map_err(|e| format!("cannot add the default routes: {e}"))
}

/// The system directories `nft` lives in; the daemon's `PATH` may lack them.
fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// Runs a tool (it inherits the calling thread's network namespace) with `input` on
/// stdin; its stderr becomes the error.
fn run_with_input(tool: &Path, args: &[&str], input: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("cannot feed {}: {e}", tool.display()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{} failed: {e}", tool.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Namespaces made ahead of need, so starting a sandbox does not wait for one.
///
/// Making a namespace costs 6.6 ms p50 here (30 in a row, release build): about 1 ms
/// for `unshare`, the rest starting `nft` (the routes are added in-process, see
/// [`crate::routes`]; starting `ip` for them had cost 4 ms more). A background thread keeps
/// [`NetnsPool::new`]'s `ready` namespaces made; [`NetnsPool::take`] hands one out at once
/// when there is one, else makes one on the spot. A pooled namespace is fresh: nothing has
/// run in it, and the proxy's sockets are bound in it only when a sandbox takes it.
#[derive(Debug)]
pub struct NetnsPool {
    shared: std::sync::Arc<PoolShared>,
}

#[derive(Debug)]
struct PoolShared {
    ready: usize,
    state: std::sync::Mutex<PoolState>,
    wake: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    namespaces: Vec<(Netns, Capture)>,
    filler_started: bool,
    closed: bool,
}

impl NetnsPool {
    /// A pool keeping `ready` namespaces made (0: none, every `take` makes its own). The
    /// filling thread starts with the first [`NetnsPool::take`].
    pub fn new(ready: usize) -> Self {
        Self {
            shared: std::sync::Arc::new(PoolShared {
                ready,
                state: std::sync::Mutex::default(),
                wake: std::sync::Condvar::new(),
            }),
        }
    }

    /// A namespace, from the pool when one is ready.
    pub fn take(&self) -> Result<(Netns, Capture), NetnsError> {
        let pooled = {
            let mut state = self.shared.lock();
            let pooled = state.namespaces.pop();
            if self.shared.ready > 0 && !state.filler_started {
                state.filler_started = true;
                let shared = self.shared.clone();
                let started = std::thread::Builder::new()
                    .name("nexus-netns-pool".into())
                    .spawn(move || shared.fill());
                if started.is_err() {
                    state.filler_started = false;
                }
            }
            pooled
        };
        self.shared.wake.notify_one();
        match pooled {
            Some(made) => Ok(made),
            None => Netns::create(),
        }
    }

    /// How many namespaces are ready now.
    pub fn ready(&self) -> usize {
        self.shared.lock().namespaces.len()
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.namespaces.clear();
        drop(state);
        self.shared.wake.notify_all();
    }
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `ready` namespaces made until the pool is dropped.
    fn fill(&self) {
        loop {
            {
                let mut state = self.lock();
                while !state.closed && state.namespaces.len() >= self.ready {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if state.closed {
                    return;
                }
            }
            match Netns::create() {
                Ok(made) => {
                    let mut state = self.lock();
                    if state.closed {
                        return;
                    }
                    state.namespaces.push(made);
                }
                Err(e) => {
                    // Let `take` make them (and report the error) instead of spinning.
                    tracing::warn!(error = %e, "cannot make a network namespace ahead of need");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::print_stderr)] // a skip must be seen in the test output
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn the_ruleset_redirects_tcp_and_dns_and_drops_the_rest() {
        let rules = ruleset();
        assert!(rules.contains("meta l4proto tcp redirect to :15001"));
        assert!(rules.contains("udp dport 53 redirect to :53"));
        assert!(rules.contains("policy drop"));
    }

    #[test]
    fn a_connection_to_any_address_lands_on_the_capture_port() {
        if !is_root() {
            eprintln!("SKIP: making a network namespace needs root");
            return;
        }
        let (netns, capture) = Netns::create().expect("namespace");
        assert!(capture.transparent, "{}", capture.detail);
        let listener = netns
            .run(|| TcpListener::bind(("127.0.0.1", CAPTURE_PORT)))
            .expect("listener");
        let (client, _) = netns
            .run(|| {
                let stream = TcpStream::connect(("192.0.2.7", 8443))?;
                let local = stream.local_addr()?;
                Ok((stream, local))
            })
            .expect("captured connect");
        let (accepted, _) = listener.accept().expect("accept");
        let original = crate::capture::original_destination(&accepted).expect("original dst");
        assert_eq!(original.to_string(), "192.0.2.7:8443");
        drop(client);
    }

    #[test]
    fn the_pool_hands_out_fresh_namespaces_and_refills() {
        if !is_root() {
            eprintln!("SKIP: making a network namespace needs root");
            return;
        }
        let pool = NetnsPool::new(2);
        let (first, capture) = pool.take().expect("made on the spot");
        assert!(capture.transparent, "{}", capture.detail);
        for _ in 0..500 {
            if pool.ready() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(pool.ready(), 2, "the pool refills in the background");
        let (second, _) = pool.take().expect("pooled");
        // Distinct namespaces, and a pooled one is as configured as a fresh one.
        let inode = |ns: &Netns| nix::sys::stat::fstat(ns.as_fd()).expect("fstat").st_ino;
        assert_ne!(inode(&first), inode(&second));
        let listener = second
            .run(|| TcpListener::bind(("127.0.0.1", CAPTURE_PORT)))
            .expect("listener");
        second
            .run(|| TcpStream::connect(("192.0.2.7", 80)).map(drop))
            .expect("captured connect");
        listener.accept().expect("accept");
    }

    #[test]
    fn udp_other_than_dns_is_refused_at_once() {
        if !is_root() {
            eprintln!("SKIP: making a network namespace needs root");
            return;
        }
        let (netns, _) = Netns::create().expect("namespace");
        let err = netns
            .run(|| {
                let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
                socket.send_to(b"x", "192.0.2.7:9999").map(drop)
            })
            .expect_err("udp must be dropped");
        assert!(err.to_string().contains("not permitted"), "{err}");
    }
}
