//! The policy proxy end to end, in a real network namespace: clients inside it (blocking
//! sockets on a thread that joined it) reach servers on the host's loopback only as the
//! policy says, through the proxy variables' port, SOCKS5, and transparent capture.
//! Needs root (to make the namespace); skipped loudly otherwise.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_net::audit::{AuditSink, ConnectionRecord, Decision, Via};
use nexus_net::netns::{Netns, PROXY_PORT};
use nexus_net::policy::{Policy, PolicySpec};
use nexus_net::proxy::{Egress, EgressConfig};
use nexus_net::resolve::Resolver;

#[derive(Debug, Default)]
struct Records(Mutex<Vec<ConnectionRecord>>);

impl AuditSink for Records {
    fn record(&self, record: ConnectionRecord) {
        self.0.lock().expect("records").push(record);
    }
}

impl Records {
    /// The records once `done` holds of them (a record is written after the client
    /// has seen the outcome), or after 5 s.
    fn wait_until(&self, done: impl Fn(&[ConnectionRecord]) -> bool) -> Vec<ConnectionRecord> {
        for _ in 0..500 {
            let records = self.0.lock().expect("records").clone();
            if done(&records) {
                return records;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.0.lock().expect("records").clone()
    }
}

/// A server on the host's loopback answering every connection with one HTTP response
/// that echoes the request's first line.
fn start_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let first = text.lines().next().unwrap_or("").to_owned();
                let body = format!("echo: {first}\n");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

struct Lab {
    _runtime: tokio::runtime::Runtime,
    netns: Netns,
    egress: Egress,
    records: Arc<Records>,
    port: u16,
}

#[allow(clippy::print_stderr)] // a skip must be seen in the test output
/// A namespace served by a proxy whose policy allows the test server (`allow_for`).
fn lab() -> Option<Lab> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the egress tests need root to make a network namespace");
        return None;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let port = start_server();
    let mut overrides = HashMap::new();
    overrides.insert(
        "allowed.test".to_owned(),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    );
    overrides.insert(
        "denied.test".to_owned(),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    );
    overrides.insert(
        "private.test".to_owned(),
        vec!["10.1.2.3".parse().expect("ip")],
    );
    let records = Arc::new(Records::default());
    let egress = Egress::new(
        Resolver::new(overrides),
        records.clone(),
        EgressConfig::default(),
    );
    let (netns, capture) = Netns::create().expect("netns");
    assert!(capture.transparent, "{}", capture.detail);
    let policy = Policy::parse(&PolicySpec {
        allow: allow_for(port),
        deny: vec![],
    })
    .expect("policy");
    {
        let _enter = runtime.enter();
        egress.attach("sb-test", &netns, policy).expect("attach");
    }
    Some(Lab {
        _runtime: runtime,
        netns,
        egress,
        records,
        port,
    })
}

fn allow_for(port: u16) -> Vec<String> {
    vec![
        format!("allowed.test:{port}"),
        format!("127.0.0.1:{port}"),
        "private.test:*".to_owned(),
    ]
}

impl Lab {
    /// Runs a blocking client inside the namespace.
    fn inside<T: Send>(&self, f: impl FnOnce() -> std::io::Result<T> + Send) -> std::io::Result<T> {
        self.netns
            .run(f)
            .map_err(|nexus_net::netns::NetnsError::Sys { source, .. }| source)
    }

    fn exchange(&self, request: String) -> String {
        self.inside(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", PROXY_PORT))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            let mut out = String::new();
            stream.read_to_string(&mut out)?;
            Ok(out)
        })
        .expect("exchange")
    }

    fn resolve_inside(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        let name = name.to_owned();
        self.inside(move || {
            use std::net::ToSocketAddrs;
            Ok((name.as_str(), 0)
                .to_socket_addrs()?
                .map(|a| a.ip())
                .collect())
        })
    }
}

#[test]
fn connect_and_plain_http_through_the_proxy_follow_the_policy() {
    let Some(lab) = lab() else { return };
    let port = lab.port;
    let out = lab.exchange(format!(
        "CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\nGET /tunnel HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    assert!(
        out.starts_with("HTTP/1.1 200 Connection established"),
        "{out}"
    );
    assert!(out.contains("echo: GET /tunnel HTTP/1.1"), "{out}");

    let out = lab.exchange(format!(
        "GET http://allowed.test:{port}/plain HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"
    ));
    assert!(out.contains("echo: GET /plain HTTP/1.1"), "{out}");

    let out = lab.exchange(format!(
        "CONNECT denied.test:{port} HTTP/1.1\r\nHost: denied.test\r\n\r\n"
    ));
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("default deny"), "{out}");

    // An allowed name that resolves to a private address is refused at the address.
    let out =
        lab.exchange("CONNECT private.test:443 HTTP/1.1\r\nHost: private.test\r\n\r\n".into());
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("10.1.2.3"), "{out}");

    let records = lab.records.wait_until(|records| {
        records.iter().filter(|r| r.via != Via::Dns).count() >= 4
            && records.iter().any(|r| r.bytes_down > 0)
    });
    let decisions: Vec<_> = records
        .iter()
        .map(|r| (r.via, r.host.clone().unwrap_or_default(), r.decision))
        .collect();
    assert!(
        decisions.contains(&(Via::Connect, "allowed.test".into(), Decision::Allowed)),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&(Via::Http, "allowed.test".into(), Decision::Allowed)),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&(Via::Connect, "denied.test".into(), Decision::Denied)),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&(Via::Connect, "private.test".into(), Decision::Denied)),
        "{decisions:?}"
    );
    let tunnel = records
        .iter()
        .find(|r| r.via == Via::Connect && r.decision == Decision::Allowed)
        .expect("tunnel record");
    assert_eq!(
        tunnel.address,
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    );
    assert!(tunnel.bytes_up > 0 && tunnel.bytes_down > 0, "{tunnel:?}");
    assert_eq!(
        tunnel.rule,
        format!("allowed.test:{port}, 127.0.0.1:{port}")
    );
}

#[test]
fn socks5_reaches_allowed_names_only() {
    let Some(lab) = lab() else { return };
    let port = lab.port;
    let socks = |name: &'static str| {
        lab.inside(move || {
            let mut s = TcpStream::connect(("127.0.0.1", PROXY_PORT))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(&[5, 1, 0])?;
            let mut greeting = [0u8; 2];
            s.read_exact(&mut greeting)?;
            let mut request = vec![5, 1, 0, 3, name.len() as u8];
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(&port.to_be_bytes());
            s.write_all(&request)?;
            let mut reply = [0u8; 10];
            s.read_exact(&mut reply)?;
            if reply[1] != 0 {
                return Ok((reply[1], String::new()));
            }
            s.write_all(b"GET /socks HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok((0, out))
        })
        .expect("socks exchange")
    };
    let (code, out) = socks("allowed.test");
    assert_eq!(code, 0);
    assert!(out.contains("echo: GET /socks"), "{out}");
    let (code, _) = socks("denied.test");
    assert_eq!(code, 2, "connection not allowed by ruleset");
}

#[test]
fn programs_ignoring_the_proxy_are_captured_and_judged_by_name() {
    let Some(lab) = lab() else { return };
    let port = lab.port;
    // The resolver answers for the allowed name with a synthetic address, and refuses
    // the others.
    let addrs = lab.resolve_inside("allowed.test").expect("resolve allowed");
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert!(nexus_net::proxy::is_synthetic(addrs[0]), "{addrs:?}");
    assert!(lab.resolve_inside("denied.test").is_err());

    // A raw client dialling that address reaches the server on the host's loopback.
    let target = SocketAddr::new(addrs[0], port);
    let out = lab
        .inside(move || {
            let mut s = TcpStream::connect(target)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /raw HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .expect("captured exchange");
    assert!(out.contains("echo: GET /raw"), "{out}");

    // A raw connection to an address no rule allows, IPv4 or IPv6, is reset at once.
    for target in ["192.0.2.10:80", "[2001:db8::10]:80"] {
        let refused = lab.inside(move || {
            let mut s =
                TcpStream::connect_timeout(&target.parse().expect("addr"), Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut buf = [0u8; 16];
            s.write_all(b"hello")?;
            s.read(&mut buf)
        });
        match refused {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes from a denied target {target}"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
                ),
                "{target}: {e}"
            ),
        }
    }
    // The daemon's port on the host's loopback is not the sandbox's loopback.
    let daemon = lab.inside(|| {
        TcpStream::connect_timeout(
            &"127.0.0.1:9600".parse().expect("addr"),
            Duration::from_secs(2),
        )
        .map(drop)
    });
    assert!(
        daemon.is_err(),
        "127.0.0.1:9600 inside must not reach the host"
    );
    // UDP other than DNS is dropped.
    let udp = lab.inside(|| UdpSocket::bind("0.0.0.0:0")?.send_to(b"x", "192.0.2.10:9999"));
    assert!(udp.is_err());

    let records = lab
        .records
        .wait_until(|records| records.iter().filter(|r| r.via == Via::Transparent).count() >= 2);
    assert!(
        records.iter().any(|r| r.via == Via::Transparent
            && r.decision == Decision::Allowed
            && r.host.as_deref() == Some("allowed.test")),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r.via == Via::Transparent
            && r.decision == Decision::Denied
            && r.address == Some("192.0.2.10:80".parse().expect("addr"))),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r.via == Via::Transparent
            && r.decision == Decision::Denied
            && r.address == Some("[2001:db8::10]:80".parse().expect("addr"))),
        "IPv6 is captured too: {records:?}"
    );
    assert!(
        records.iter().any(|r| r.via == Via::Dns
            && r.decision == Decision::Denied
            && r.host.as_deref() == Some("denied.test")),
        "{records:?}"
    );
}

#[test]
fn a_policy_change_applies_to_new_connections_and_can_cut_open_ones() {
    let Some(lab) = lab() else { return };
    let port = lab.port;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let request = format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n");
    let handle = {
        let fd = lab.inside(move || {
            let mut s = TcpStream::connect(("127.0.0.1", PROXY_PORT))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut head = [0u8; 39];
            s.read_exact(&mut head)?;
            Ok(s)
        });
        fd.expect("tunnel")
    };
    let reader = std::thread::spawn(move || {
        let mut s = handle;
        let _ = rx.recv();
        let mut buf = [0u8; 64];
        s.read(&mut buf)
    });
    // Deny everything and cut existing connections.
    lab.egress.update("sb-test", Policy::default(), true);
    tx.send(()).expect("signal");
    let read = reader.join().expect("reader");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the open tunnel must be cut: {read:?}"
    );
    let out = lab.exchange(format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n"));
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
}

/// A server that accepts and then never says anything: a slow target.
fn silent_server() -> (u16, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().expect("held").push(stream);
        }
    });
    (port, held)
}

#[test]
fn a_sandbox_at_its_connection_limit_or_a_slow_target_holds_up_no_one_else() {
    let Some(lab) = lab() else { return };
    let (silent, _held) = silent_server();
    let port = lab.port;
    let rules = |extra: u16| {
        let mut allow = allow_for(port);
        allow.push(format!("allowed.test:{extra}"));
        allow.push(format!("127.0.0.1:{extra}"));
        Policy::parse(&PolicySpec {
            allow,
            deny: vec![],
        })
        .expect("policy")
    };
    // A second sandbox, busy to its limit with connections to a target that never answers.
    let busy_egress = Egress::new(
        Resolver::new(HashMap::from([(
            "allowed.test".to_owned(),
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        )])),
        lab.records.clone(),
        EgressConfig {
            max_connections: 8,
            ..EgressConfig::default()
        },
    );
    let (busy_ns, _) = Netns::create().expect("netns");
    {
        let _enter = lab._runtime.enter();
        busy_egress
            .attach("sb-busy", &busy_ns, rules(silent))
            .expect("attach");
    }
    lab.egress.update("sb-test", rules(silent), false);
    let hung: Vec<TcpStream> = busy_ns
        .run(|| {
            (0..8)
                .map(|_| {
                    let mut s = TcpStream::connect(("127.0.0.1", PROXY_PORT))?;
                    s.write_all(
                        format!("CONNECT allowed.test:{silent} HTTP/1.1\r\n\r\n").as_bytes(),
                    )?;
                    let mut head = [0u8; 12];
                    s.read_exact(&mut head)?;
                    Ok(s)
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .expect("eight tunnels to the silent target");
    // Its ninth connection is closed at once, not queued (a queued one would hit the
    // read timeout, an error).
    let ninth = busy_ns
        .run(|| {
            let mut s = TcpStream::connect(("127.0.0.1", PROXY_PORT))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let _ = s.write_all(b"CONNECT allowed.test:1 HTTP/1.1\r\n\r\n");
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(n) => Ok(format!("read {n}")),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok("reset".into()),
                Err(e) => Err(e),
            }
        })
        .expect("the ninth connection must be closed, not left waiting");
    assert!(
        ninth == "read 0" || ninth == "reset",
        "over the limit: closed without an answer, got {ninth}"
    );
    // Meanwhile the first sandbox is served at once, while its own slow tunnel hangs.
    let _slow = lab
        .inside(move || {
            let mut s = TcpStream::connect(("127.0.0.1", PROXY_PORT))?;
            s.write_all(format!("CONNECT allowed.test:{silent} HTTP/1.1\r\n\r\n").as_bytes())?;
            Ok(s)
        })
        .expect("slow tunnel");
    // (`exchange` reads with a timeout: a stalled answer fails the test.)
    let out = lab.exchange(format!(
        "GET http://allowed.test:{port}/quick HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
    ));
    assert!(out.contains("echo: GET /quick"), "{out}");
    drop(hung);
}
