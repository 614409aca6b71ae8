//! Sandbox network egress (issue 5): connection set-up and a big download, straight on
//! the host's loopback and through `nexus-net`'s policy proxy from inside a network
//! namespace, the way nexusd serves a sandbox when it runs as root.
//!
//! Two servers on the host's loopback, each one thread taking its connections one at a
//! time: an echo server (reads one byte, writes it back, closes) and a sender (writes
//! `transfer_mib` MiB of zeros from a static 1 MiB buffer, then closes). The proxy is an
//! [`Egress`] on its own multi-threaded Tokio runtime (as in nexusd) attached to a fresh
//! [`Netns`]; its policy allows `bench.test:PORT` and `127.0.0.1:PORT` for both ports (a
//! loopback address is reached only through a rule naming it), and a resolver override
//! points `bench.test` at 127.0.0.1. Its audit records go to [`Discard`], which drops
//! them: the daemon's sink also bumps a counter and pushes the record into its mutex-held
//! network log, so these rows measure the proxy without the daemon's log. The clients in
//! the namespace run on one thread that joined it, one connection after the other.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use nexus_net::audit::{AuditSink, ConnectionRecord};
use nexus_net::netns::{Netns, PROXY_PORT};
use nexus_net::policy::{Policy, PolicySpec};
use nexus_net::proxy::{Egress, EgressConfig, is_synthetic};
use nexus_net::resolve::Resolver;

use crate::measure::Plan;
use crate::report::{Group, Operation};
use crate::stats::{Rates, Samples};

/// The operations measured here, in report order.
const NAMES: [&str; 5] = [
    "net_connect_direct",
    "net_connect_transparent",
    "net_connect_proxy",
    "net_download_direct",
    "net_download_transparent",
];
/// The name the clients in the namespace ask for; it resolves to 127.0.0.1 on the host.
const NAME: &str = "bench.test";
/// The sandbox id the proxy is attached under.
const SANDBOX: &str = "nexus-bench";
/// Untimed connects before each connect row.
const WARM_UP: usize = 10;
/// Failures after which a row stops trying: something is broken, not slow.
const MAX_ERRORS: usize = 10;
/// Time limit of every connect, read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The sender's writes and the clients' reads.
const CHUNK: usize = 1024 * 1024;
/// What the sender sends, over and over.
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Connects timed per connect row: ten times the latency iterations (200 quick, 1,000
/// full).
pub fn connects(plan: &Plan) -> usize {
    plan.iterations * 10
}

/// Measures every row, or skips them all with the reason when not root.
pub async fn measure(plan: &Plan) -> Vec<Operation> {
    if !nix::unistd::geteuid().is_root() {
        return skip_all("needs root: the proxy makes a network namespace");
    }
    let plan = plan.clone();
    match tokio::task::spawn_blocking(move || measure_blocking(&plan)).await {
        Ok(operations) => operations,
        Err(e) => skip_all(&format!("the measurement panicked: {e}")),
    }
}

/// Drops every audit record (see the module documentation).
#[derive(Debug)]
struct Discard;

impl AuditSink for Discard {
    fn record(&self, _record: ConnectionRecord) {}
}

/// Everything, on the calling (blocking) thread; the proxy runs on its own runtime.
fn measure_blocking(plan: &Plan) -> Vec<Operation> {
    let bytes = plan.transfer_mib * 1024 * 1024;
    let servers = Server::start(echo_one_byte)
        .and_then(|echo| Ok((echo, Server::start(move |s| send_zeros(s, bytes))?)));
    let (echo, sender) = match servers {
        Ok(servers) => servers,
        Err(e) => {
            return skip_all(&format!(
                "cannot start a server on the host's loopback: {e}"
            ));
        }
    };
    let proxied = Proxied::start(&[echo.port, sender.port]);
    let n = connects(plan);
    let heavy = plan.heavy_iterations;

    let direct = time_connects(n, || connect(loopback(echo.port)));
    let transparent = through(&proxied, |p| p.transparent_connects(n, echo.port));
    let proxy = through(&proxied, |p| p.proxy_connects(n, echo.port));
    let down_direct = time_downloads(heavy, loopback(sender.port), bytes);
    let down_transparent = through(&proxied, |p| {
        p.transparent_downloads(heavy, sender.port, bytes)
    });
    // The proxy first, while the servers still answer what it has open.
    drop(proxied);

    let echoed = "the time includes one byte sent and echoed back by the server";
    let mib = plan.transfer_mib;
    let size = if mib == 1024 {
        "1 GiB per connection".to_owned()
    } else {
        format!("{mib} MiB per connection (quick mode; 1 GiB in full mode)")
    };
    let download =
        format!("{size}, read with a 1 MiB buffer; timed from connect to the end of the stream");
    vec![
        Operation::measured(NAMES[0], Group::Peer, direct).with_note(format!(
            "connect to 127.0.0.1 from the host's namespace; {echoed}"
        )),
        connect_row(
            NAMES[1],
            transparent,
            format!(
                "connect from inside the namespace to {NAME}'s synthetic address, captured and relayed by the proxy; {echoed}"
            ),
        ),
        connect_row(
            NAMES[2],
            proxy,
            format!(
                "connect from inside the namespace to 127.0.0.1:{PROXY_PORT}, `CONNECT {NAME}:PORT`, its 200 head read; {echoed} through the tunnel"
            ),
        ),
        Operation::throughput(NAMES[3], Group::Peer, &down_direct)
            .with_note(format!("{download}; from the host's namespace")),
        match down_transparent {
            Ok(rates) => Operation::throughput(NAMES[4], Group::Nexus, &rates).with_note(format!(
                "{download}; to {NAME}'s synthetic address from inside the namespace"
            )),
            Err(reason) => Operation::skipped(NAMES[4], Group::Nexus, reason),
        },
    ]
}

/// What `measure` gave through the proxy, or why the proxy is not there.
fn through<T>(
    proxied: &Result<Proxied, String>,
    measure: impl FnOnce(&Proxied) -> Result<T, String>,
) -> Result<T, String> {
    proxied.as_ref().map_err(Clone::clone).and_then(measure)
}

/// Every row skipped for one reason.
fn skip_all(reason: &str) -> Vec<Operation> {
    NAMES
        .iter()
        .map(|name| {
            let group = if name.ends_with("_direct") {
                Group::Peer
            } else {
                Group::Nexus
            };
            Operation::skipped(name, group, reason.to_owned())
        })
        .collect()
}

fn connect_row(name: &str, samples: Result<Samples, String>, note: String) -> Operation {
    match samples {
        Ok(samples) => Operation::measured(name, Group::Nexus, samples).with_note(note),
        Err(reason) => Operation::skipped(name, Group::Nexus, reason),
    }
}

/// The proxy serving a fresh namespace, until dropped.
#[derive(Debug)]
struct Proxied {
    netns: Netns,
    egress: Egress,
    /// The proxy's tasks run here; `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
    /// `bench.test`'s synthetic address, or why capture cannot be measured here.
    synthetic: Result<IpAddr, String>,
}

impl Proxied {
    /// Makes the namespace and attaches the proxy to it with the bench's policy.
    fn start(ports: &[u16]) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the proxy's runtime: {e}"))?;
        let overrides = HashMap::from([(NAME.to_owned(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])]);
        let egress = Egress::new(
            Resolver::new(overrides),
            Arc::new(Discard),
            EgressConfig::default(),
        );
        // The errors of `nexus-net` name what failed and why in their own message.
        let (netns, capture) = Netns::create().map_err(|e| e.to_string())?;
        let allow = ports
            .iter()
            .flat_map(|port| [format!("{NAME}:{port}"), format!("127.0.0.1:{port}")])
            .collect();
        let policy = Policy::parse(&PolicySpec {
            allow,
            deny: Vec::new(),
        })
        .map_err(|e| format!("the bench's policy is not valid: {e}"))?;
        {
            let _entered = runtime.enter();
            egress
                .attach(SANDBOX, &netns, policy)
                .map_err(|e| format!("cannot attach the proxy to the namespace: {e}"))?;
        }
        let synthetic = if capture.transparent {
            resolve_inside(&netns)
        } else {
            Err(capture.detail)
        };
        Ok(Self {
            netns,
            egress,
            runtime: Some(runtime),
            synthetic,
        })
    }

    /// `net_connect_transparent`: to the synthetic address, captured by the rules.
    fn transparent_connects(&self, n: usize, port: u16) -> Result<Samples, String> {
        let target = SocketAddr::new(self.synthetic.clone()?, port);
        self.inside(move || time_connects(n, || connect(target)))
    }

    /// `net_connect_proxy`: `CONNECT` through the proxy variables' port.
    fn proxy_connects(&self, n: usize, port: u16) -> Result<Samples, String> {
        let request = format!("CONNECT {NAME}:{port} HTTP/1.1\r\nHost: {NAME}:{port}\r\n\r\n");
        self.inside(move || time_connects(n, || open_tunnel(request.as_bytes())))
    }

    /// `net_download_transparent`: the sender's bytes through the captured connection.
    fn transparent_downloads(&self, n: usize, port: u16, bytes: u64) -> Result<Rates, String> {
        let target = SocketAddr::new(self.synthetic.clone()?, port);
        self.inside(move || time_downloads(n, target, bytes))
    }

    /// Runs `work` on a thread inside the namespace.
    fn inside<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, String> {
        self.netns.run(|| Ok(work())).map_err(|e| e.to_string())
    }
}

impl Drop for Proxied {
    fn drop(&mut self) {
        // Stop serving the namespace (its tasks end, its connections are cut), then the
        // runtime they ran on; the namespace goes with its last socket.
        self.egress.detach(SANDBOX);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(IO_TIMEOUT);
        }
    }
}

/// `bench.test` looked up from inside the namespace (through its resolver, which every
/// query to port 53 reaches), as a program in the sandbox would.
fn resolve_inside(netns: &Netns) -> Result<IpAddr, String> {
    let addrs = netns
        .run(|| {
            Ok((NAME, 0)
                .to_socket_addrs()?
                .map(|a| a.ip())
                .collect::<Vec<_>>())
        })
        .map_err(|e| format!("cannot look {NAME} up inside the namespace: {e}"))?;
    addrs
        .iter()
        .copied()
        .find(|ip| is_synthetic(*ip))
        .ok_or_else(|| {
            format!("{NAME} resolved inside the namespace to {addrs:?}, no synthetic address")
        })
}

/// Times `n` set-ups (after [`WARM_UP`] untimed ones), each `open` followed by a
/// one-byte echo; the connection is closed after the clock stops.
fn time_connects(n: usize, open: impl Fn() -> anyhow::Result<TcpStream>) -> Samples {
    let mut samples = Samples::default();
    for i in 0..WARM_UP + n {
        let start = Instant::now();
        let result = open().and_then(|mut stream| echo_round_trip(&mut stream).map(|()| stream));
        let elapsed = start.elapsed();
        let stream = if i >= WARM_UP {
            samples.record(elapsed, result)
        } else {
            result.ok()
        };
        drop(stream);
        if samples.errors >= MAX_ERRORS {
            break;
        }
    }
    samples
}

/// Times `n` downloads of `bytes` from `target`.
fn time_downloads(n: usize, target: SocketAddr, bytes: u64) -> Rates {
    let mut buf = vec![0u8; CHUNK];
    let mut rates = Rates::default();
    for _ in 0..n {
        let start = Instant::now();
        let result = download(target, bytes, &mut buf);
        rates.record(bytes, start.elapsed(), result);
        if rates.errors >= MAX_ERRORS {
            break;
        }
    }
    rates
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn connect(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .with_context(|| format!("cannot connect to {target}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Connects to the proxy and sends `request` (a `CONNECT`); returns the tunnel once the
/// whole `200` head is read.
fn open_tunnel(request: &[u8]) -> anyhow::Result<TcpStream> {
    let mut stream = connect(loopback(PROXY_PORT))?;
    stream
        .write_all(request)
        .context("cannot send the CONNECT request")?;
    let mut head = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).context("no answer to CONNECT")?;
        ensure!(
            read > 0 && head.len() < 16 * 1024,
            "the proxy closed the tunnel after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&chunk[..read]);
    }
    ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "the proxy answered {:?}",
        String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
    );
    Ok(stream)
}

fn echo_round_trip(stream: &mut TcpStream) -> anyhow::Result<()> {
    stream.write_all(b"x").context("cannot send the byte")?;
    let mut byte = [0u8; 1];
    stream
        .read_exact(&mut byte)
        .context("the byte did not come back")?;
    ensure!(byte == *b"x", "{byte:?} came back instead of b\"x\"");
    Ok(())
}

/// Reads a whole stream from `target`, which must be `want` bytes long.
fn download(target: SocketAddr, want: u64, buf: &mut [u8]) -> anyhow::Result<()> {
    let mut stream = connect(target)?;
    let mut got = 0u64;
    loop {
        let read = stream.read(buf).context("the download broke off")?;
        if read == 0 {
            break;
        }
        got += read as u64;
    }
    ensure!(got == want, "{got} bytes instead of {want}");
    Ok(())
}

/// A server on the host's loopback: one thread taking connections one at a time, until
/// dropped.
#[derive(Debug)]
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(serve: impl Fn(TcpStream) -> io::Result<()> + Send + 'static) -> io::Result<Self> {
        let listener = TcpListener::bind(loopback(0))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nexus-bench-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    match stream {
                        // A client that left early is its own problem: it counts the error.
                        Ok(stream) => {
                            let _ = serve(stream);
                        }
                        // Out of descriptors and the like: back off instead of spinning.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the thread up from `accept`; it sees `stop` and ends.
        let _ = TcpStream::connect_timeout(&loopback(self.port), Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The echo server's side of one connection: one byte back, then close.
fn echo_one_byte(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    stream.write_all(&byte)
}

/// The sender's side of one connection: `bytes` zeros as fast as it can, then close.
fn send_zeros(mut stream: TcpStream, bytes: u64) -> io::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut left = bytes;
    while left > 0 {
        let len = usize::try_from(left.min(CHUNK as u64)).expect("a chunk is at most 1 MiB");
        stream.write_all(&ZEROS[..len])?;
        left -= len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_and_downloads_on_the_hosts_loopback() {
        let echo = Server::start(echo_one_byte).expect("echo server");
        let samples = time_connects(3, || connect(loopback(echo.port)));
        assert_eq!((samples.durations.len(), samples.errors), (3, 0));
        let bytes = 3 * CHUNK as u64 + 5;
        let sender = Server::start(move |s| send_zeros(s, bytes)).expect("sender");
        let rates = time_downloads(2, loopback(sender.port), bytes);
        assert_eq!(
            (rates.mib_per_s.len(), rates.errors),
            (2, 0),
            "{:?}",
            rates.first_error
        );
    }

    #[test]
    fn a_wrong_length_is_an_error() {
        let sender = Server::start(|s| send_zeros(s, 10)).expect("sender");
        let rates = time_downloads(1, loopback(sender.port), 11);
        assert_eq!(rates.errors, 1);
        assert_eq!(rates.first_error.as_deref(), Some("10 bytes instead of 11"));
    }

    #[test]
    fn as_root_every_row_is_measured_through_a_real_proxy() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: the egress rows need root to make a network namespace");
            return;
        }
        let plan = Plan {
            iterations: 2,
            heavy_iterations: 2,
            transfer_mib: 8,
            workspace_mib: 0,
            small_files: 0,
            idle: 0,
            many: 0,
            concurrency: 1,
            curve_levels: Vec::new(),
            curve_probes: 0,
        };
        for op in measure_blocking(&plan) {
            eprintln!("{}: {:?}", op.name, op.summary);
            assert_eq!(op.skipped, None, "{}", op.name);
            assert_eq!(op.first_error, None, "{}", op.name);
            let summary = op.summary.expect("measured");
            let n = if op.name.contains("connect") { 20 } else { 2 };
            assert_eq!(summary.n, n, "{}", op.name);
        }
    }

    #[test]
    fn without_root_every_row_is_skipped_with_the_reason() {
        let ops = skip_all("needs root: the proxy makes a network namespace");
        let names: Vec<&str> = ops.iter().map(|op| op.name.as_str()).collect();
        assert_eq!(names, NAMES);
        assert!(ops.iter().all(|op| op.skipped.is_some()));
        assert_eq!(ops[0].group, Group::Peer);
        assert_eq!(ops[1].group, Group::Nexus);
    }
}
