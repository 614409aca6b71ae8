//! The policy proxy: one per daemon, serving every attached sandbox on sockets inside
//! that sandbox's network namespace (see [`crate::netns`]):
//! - [`PROXY_PORT`]: what the proxy variables point at; HTTP `CONNECT`, plain HTTP and
//!   SOCKS5, told apart by the first byte ([`front`]);
//! - [`CAPTURE_PORT`]: connections that ignored the variables, redirected by the
//!   namespace's rules; the name comes from the resolver's synthetic address, the TLS
//!   SNI or the HTTP `Host` header, else the address decides ([`transparent`]);
//! - [`DNS_PORT`]: the resolver, answering only for names the policy allows, with
//!   synthetic addresses ([`NameTable`], [`resolver`]).
//!
//! Every way in ends in [`open`], which decides and dials, and every attempt is
//! recorded through the [`AuditSink`]. Each connection is its own task with its own
//! timeouts, so a slow target or a busy sandbox holds up nothing else; each sandbox may
//! have at most [`EgressConfig::max_connections`] open at once.

mod front;
mod open;
mod relay;
mod resolver;
mod splice;
mod transparent;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::audit::{AuditSink, ConnectionRecord};
use crate::netns::{CAPTURE_PORT, Capture, DNS_PORT, Netns, NetnsError, NetnsPool, PROXY_PORT};
use crate::policy::Policy;
use crate::resolve::Resolver;

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// How long dialling one address may take.
    pub connect_timeout: Duration,
    /// How long a client may take to say where it wants to go (proxy request, SOCKS
    /// handshake).
    pub handshake_timeout: Duration,
    /// How long a captured connection is watched for a TLS or HTTP opening before the
    /// address alone decides (programs that wait for the server to speak first).
    pub sniff_timeout: Duration,
    /// Connections one sandbox may have open at once; more are closed at once.
    pub max_connections: usize,
    /// TTL of the resolver's answers, seconds.
    pub dns_ttl: u32,
    /// Namespaces kept made ahead of need ([`NetnsPool`]).
    pub spare_namespaces: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            sniff_timeout: Duration::from_secs(1),
            max_connections: 512,
            dns_ttl: 30,
            spare_namespaces: 4,
        }
    }
}

/// The environment every process of an attached sandbox gets.
pub fn proxy_environment() -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{PROXY_PORT}");
    let socks = format!("socks5h://127.0.0.1:{PROXY_PORT}");
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    [
        ("HTTP_PROXY", &http),
        ("HTTPS_PROXY", &http),
        ("ALL_PROXY", &socks),
        ("NO_PROXY", &no_proxy),
        ("http_proxy", &http),
        ("https_proxy", &http),
        ("all_proxy", &socks),
        ("no_proxy", &no_proxy),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.clone()))
    .collect()
}

/// The daemon's policy proxy.
#[derive(Debug)]
pub struct Egress {
    shared: Arc<Shared>,
    sandboxes: Mutex<HashMap<String, Attached>>,
    pool: NetnsPool,
}

/// What every sandbox's tasks share.
#[derive(Debug)]
struct Shared {
    resolver: Resolver,
    sink: Arc<dyn AuditSink>,
    config: EgressConfig,
}

/// One attached sandbox: its state, and the tasks serving it.
#[derive(Debug)]
struct Attached {
    net: Arc<SandboxNet>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Cut the connections still open.
        self.net.kill.send_modify(|generation| *generation += 1);
    }
}

/// A sandbox as the proxy sees it.
#[derive(Debug)]
pub(crate) struct SandboxNet {
    id: String,
    shared: Arc<Shared>,
    policy: RwLock<Arc<Policy>>,
    /// Bumped to cut every open connection.
    kill: watch::Sender<u64>,
    /// The resolver's synthetic addresses.
    names: Mutex<NameTable>,
    connections: Arc<Semaphore>,
}

impl SandboxNet {
    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .expect("policy lock is never poisoned")
            .clone()
    }

    fn record(&self, record: ConnectionRecord) {
        tracing::debug!(
            sandbox_id = %record.sandbox, via = record.via.as_str(), host = ?record.host,
            port = record.port, address = ?record.address, decision = record.decision.as_str(),
            rule = %record.rule, "egress"
        );
        self.shared.sink.record(record);
    }

    /// The name a synthetic address was handed out for.
    fn name_of(&self, ip: IpAddr) -> Option<String> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self
                .names
                .lock()
                .expect("name table lock is never poisoned")
                .name_of(v4),
            IpAddr::V6(_) => None,
        }
    }

    /// The synthetic address of a name, handed out now if it has none yet.
    fn address_for(&self, name: &str) -> Ipv4Addr {
        self.names
            .lock()
            .expect("name table lock is never poisoned")
            .address_for(name)
    }
}

/// The addresses the resolver hands out: each allowed name gets its own address from
/// [`SYNTHETIC_RANGE`] (`198.18.0.0/15`, reserved for benchmarking and never a real
/// destination), stable for the sandbox's life, so a captured connection to it is known
/// by its name whatever the protocol, and the name is resolved on the host only when
/// dialled, where the address it really has is checked. A sandbox cannot tell a real
/// address of a name, so it cannot aim at one its policy does not allow.
#[derive(Debug, Default)]
struct NameTable {
    by_name: HashMap<String, Ipv4Addr>,
    by_address: HashMap<Ipv4Addr, String>,
    order: VecDeque<Ipv4Addr>,
    next: u32,
}

/// Where synthetic addresses come from.
pub const SYNTHETIC_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 15);

impl NameTable {
    /// Names remembered at once; the oldest is forgotten first.
    const CAPACITY: usize = 65_536;

    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        self.by_address.get(&ip).cloned()
    }

    fn address_for(&mut self, name: &str) -> Ipv4Addr {
        if let Some(ip) = self.by_name.get(name) {
            return *ip;
        }
        if self.order.len() >= Self::CAPACITY
            && let Some(old) = self.order.pop_front()
            && let Some(old_name) = self.by_address.remove(&old)
        {
            self.by_name.remove(&old_name);
        }
        let base = u32::from(SYNTHETIC_RANGE.0);
        let size = 1u32 << (32 - SYNTHETIC_RANGE.1);
        let ip = loop {
            // Skip .0 and .255 of every /24: some programs refuse them.
            self.next = (self.next + 1) % size;
            let candidate = Ipv4Addr::from(base + self.next);
            let last = candidate.octets()[3];
            if last != 0 && last != 255 && !self.by_address.contains_key(&candidate) {
                break candidate;
            }
        };
        self.by_name.insert(name.to_owned(), ip);
        self.by_address.insert(ip, name.to_owned());
        self.order.push_back(ip);
        ip
    }
}

/// Whether an address is one of the resolver's synthetic ones.
pub fn is_synthetic(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mask = u32::MAX << (32 - SYNTHETIC_RANGE.1);
            u32::from(v4) & mask == u32::from(SYNTHETIC_RANGE.0)
        }
        IpAddr::V6(_) => false,
    }
}

/// The sockets serving one sandbox, made inside its namespace.
struct Sockets {
    proxy: Vec<std::net::TcpListener>,
    capture: Vec<std::net::TcpListener>,
    dns: Vec<std::net::UdpSocket>,
}

impl Sockets {
    /// Binds on the namespace's loopback, IPv4 and (where the kernel has it) IPv6.
    fn bind() -> std::io::Result<Self> {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let tcp = |port: u16| -> std::io::Result<Vec<std::net::TcpListener>> {
            let mut listeners = vec![std::net::TcpListener::bind(SocketAddr::new(v4, port))?];
            if let Ok(l) = std::net::TcpListener::bind(SocketAddr::new(v6, port)) {
                listeners.push(l);
            }
            for l in &listeners {
                l.set_nonblocking(true)?;
            }
            Ok(listeners)
        };
        let mut dns = vec![std::net::UdpSocket::bind(SocketAddr::new(v4, DNS_PORT))?];
        if let Ok(s) = std::net::UdpSocket::bind(SocketAddr::new(v6, DNS_PORT)) {
            dns.push(s);
        }
        for s in &dns {
            s.set_nonblocking(true)?;
        }
        Ok(Self {
            proxy: tcp(PROXY_PORT)?,
            capture: tcp(CAPTURE_PORT)?,
            dns,
        })
    }
}

impl Egress {
    /// A proxy resolving names with `resolver` and recording into `sink`.
    pub fn new(resolver: Resolver, sink: Arc<dyn AuditSink>, config: EgressConfig) -> Self {
        Self {
            pool: NetnsPool::new(config.spare_namespaces),
            shared: Arc::new(Shared {
                resolver,
                sink,
                config,
            }),
            sandboxes: Mutex::default(),
        }
    }

    /// A fresh namespace for a new sandbox, from the ones made ahead of need when there
    /// is one. Needs root.
    pub fn namespace(&self) -> Result<(Netns, Capture), NetnsError> {
        self.pool.take()
    }

    /// Starts serving a sandbox in `netns` under `policy`. Attaching again (after a
    /// daemon restart, or twice) replaces the previous attachment. Must be called from
    /// within the Tokio runtime.
    pub fn attach(&self, sandbox: &str, netns: &Netns, policy: Policy) -> Result<(), NetnsError> {
        self.detach(sandbox);
        let sockets = netns.run(Sockets::bind)?;
        let (kill, _) = watch::channel(0);
        let net = Arc::new(SandboxNet {
            id: sandbox.to_owned(),
            shared: self.shared.clone(),
            policy: RwLock::new(Arc::new(policy)),
            kill,
            names: Mutex::default(),
            connections: Arc::new(Semaphore::new(self.shared.config.max_connections)),
        });
        let mut tasks = Vec::new();
        let into_tokio = |e: std::io::Error| NetnsError::Sys {
            what: "register the sandbox's sockets",
            source: e,
        };
        for listener in sockets.proxy {
            let listener = TcpListener::from_std(listener).map_err(into_tokio)?;
            tasks.push(tokio::spawn(accept_loop(
                net.clone(),
                listener,
                Door::Proxy,
            )));
        }
        for listener in sockets.capture {
            let listener = TcpListener::from_std(listener).map_err(into_tokio)?;
            tasks.push(tokio::spawn(accept_loop(
                net.clone(),
                listener,
                Door::Capture,
            )));
        }
        for socket in sockets.dns {
            let socket = UdpSocket::from_std(socket).map_err(into_tokio)?;
            tasks.push(tokio::spawn(resolver::serve(net.clone(), socket)));
        }
        self.sandboxes
            .lock()
            .expect("sandbox map lock is never poisoned")
            .insert(sandbox.to_owned(), Attached { net, tasks });
        tracing::debug!(sandbox_id = sandbox, "egress attached");
        Ok(())
    }

    /// Applies a new policy to an attached sandbox: new connections at once, and open
    /// ones are cut too when `kill_existing`. Returns whether the sandbox was attached.
    pub fn update(&self, sandbox: &str, policy: Policy, kill_existing: bool) -> bool {
        let sandboxes = self
            .sandboxes
            .lock()
            .expect("sandbox map lock is never poisoned");
        let Some(attached) = sandboxes.get(sandbox) else {
            return false;
        };
        *attached
            .net
            .policy
            .write()
            .expect("policy lock is never poisoned") = Arc::new(policy);
        if kill_existing {
            attached.net.kill.send_modify(|generation| *generation += 1);
        }
        true
    }

    /// Stops serving a sandbox and cuts its open connections.
    pub fn detach(&self, sandbox: &str) {
        let removed = self
            .sandboxes
            .lock()
            .expect("sandbox map lock is never poisoned")
            .remove(sandbox);
        if removed.is_some() {
            tracing::debug!(sandbox_id = sandbox, "egress detached");
        }
    }
}

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy)]
enum Door {
    Proxy,
    Capture,
}

async fn accept_loop(net: Arc<SandboxNet>, listener: TcpListener, door: Door) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(sandbox_id = %net.id, error = %e, "egress accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = net.connections.clone().try_acquire_owned() else {
            tracing::warn!(sandbox_id = %net.id, "egress connection limit reached; connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let net = net.clone();
        tokio::spawn(async move {
            match door {
                Door::Proxy => front::serve(&net, stream).await,
                Door::Capture => transparent::serve(&net, stream).await,
            }
            drop(permit);
        });
    }
}
