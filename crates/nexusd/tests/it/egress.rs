//! Network egress of real sandboxes: programs inside reach servers this test starts on
//! the host's loopback only as the policy says, whether they honour the proxy variables
//! (curl, Python's urllib) or not (`--noproxy`, raw sockets); names that resolve to private
//! addresses, the daemon's own port, other addresses and UDP stay out of reach; a policy
//! change applies at once and can cut a running download; a restarted daemon, and a
//! stopped and started sandbox, are served again. Names come from the daemon's `network.hosts` table, so nothing leaves
//! this machine. Needs root (the proxy makes the sandbox's network namespace).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, skip};

/// Whether this test process can run egress tests, saying why not when not.
fn usable() -> bool {
    if !bwrap_usable() {
        skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        skip("network egress needs nexusd running as root; sandboxes here have loopback only");
        return false;
    }
    if !Path::new("/usr/bin/curl").exists() {
        skip("curl is not installed (scripts/test.sh installs it)");
        return false;
    }
    true
}

/// An HTTP server on the host's loopback: `GET /hello` answers `hello`, `GET /slow`
/// streams 16 KiB every 20 ms until the client goes away.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                if first.starts_with("GET /slow") {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                    let chunk = vec![b'x'; 16 * 1024];
                    while stream.write_all(&chunk).is_ok() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                } else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
                    );
                }
            });
        }
    });
    port
}

/// A TCP server on the host's loopback that echoes what it reads.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// `openssl s_server -www` with a certificate for `allowed.test`, when openssl exists.
struct TlsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server() -> Option<TlsServer> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=allowed.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        skip("openssl cannot make a test certificate; the HTTPS checks are skipped");
        return None;
    }
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let mut child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(TlsServer {
                child,
                port,
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("openssl s_server did not start");
}

/// A daemon whose proxy resolves the test names to loopback (and one to a private
/// address), with a running sandbox `name` allowed to reach `ports`.
async fn daemon_with_sandbox(name: &str, ports: &[u16]) -> (Dirs, Daemon, Api, serde_json::Value) {
    let dirs = Dirs::new();
    dirs.write_config(
        "network:\n  hosts:\n    allowed.test: [\"127.0.0.1\"]\n    denied.test: [\"127.0.0.1\"]\n    private.test: [\"10.255.255.1\"]\n",
    );
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    let created = api
        .create(json!({"name": name, "network": {"allow": allow(ports)}}))
        .await;
    (dirs, daemon, api, created)
}

/// The allow rules for these servers: the name, and the loopback port it resolves to
/// (a loopback address is reached only through a rule naming it).
fn allow(ports: &[u16]) -> Vec<String> {
    let mut rules = vec!["private.test:*".to_owned()];
    for port in ports {
        rules.push(format!("allowed.test:{port}"));
        rules.push(format!("127.0.0.1:{port}"));
    }
    rules
}

async fn stdout(api: &Api, sandbox: &str, script: &str) -> String {
    let result = api.sh(sandbox, script).await;
    result["stdout"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn programs_reach_allowed_targets_only_with_or_without_the_proxy() {
    if !usable() {
        return;
    }
    let (http, echo) = (http_server(), echo_server());
    let tls = tls_server();
    let mut ports = vec![http, echo];
    ports.extend(tls.as_ref().map(|t| t.port));
    let (_dirs, daemon, api, created) = daemon_with_sandbox("net", &ports).await;
    let isolation = created["isolation"]["network"].as_str().unwrap_or_default();
    assert!(isolation.contains("policy proxy"), "{created}");

    // curl through the proxy variables, and around them (captured).
    let out = stdout(&api, "net", &format!(
        "curl -sS -m 10 http://allowed.test:{http}/hello; curl -sS -m 10 --noproxy '*' http://allowed.test:{http}/hello"
    )).await;
    assert_eq!(out, "hello\nhello\n");
    let out = stdout(&api, "net", &format!(
        "curl -s -m 10 -o /dev/null -w '%{{http_code}}' http://denied.test:{http}/hello; echo; curl -s -m 10 --noproxy '*' http://denied.test:{http}/hello; echo \" exit=$?\""
    )).await;
    assert_eq!(
        out, "403\n exit=6\n",
        "denied: a 403 through the proxy, no name without it"
    );
    let body = stdout(
        &api,
        "net",
        &format!("curl -s -m 10 http://denied.test:{http}/hello"),
    )
    .await;
    assert!(
        body.contains("default deny"),
        "the refusal names the rule: {body}"
    );

    // Python's urllib (honours the variables) and a raw socket (ignores them).
    let script = format!(
        r#"
import socket, urllib.request, urllib.error
print(urllib.request.urlopen("http://allowed.test:{http}/hello", timeout=10).read().decode().strip())
try:
    urllib.request.urlopen("http://denied.test:{http}/hello", timeout=10)
except urllib.error.HTTPError as e:
    print("urllib denied", e.code)
s = socket.create_connection(("allowed.test", {echo}), timeout=10)
s.sendall(b"ping"); print("echo", s.recv(16).decode())
for target in [("192.0.2.10", {echo}), ("127.0.0.1", 9600)]:
    try:
        c = socket.create_connection(target, timeout=10); c.sendall(b"x"); data = c.recv(1)
        print("raw", target[1], "read", len(data))
    except OSError as e:
        print("raw", target[1], type(e).__name__)
try:
    socket.getaddrinfo("denied.test", 80)
    print("resolved denied")
except socket.gaierror:
    print("denied.test unresolved")
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.10", 9999))
    print("udp sent")
except OSError as e:
    print("udp", type(e).__name__)
"#
    );
    let result = api
        .post(
            "/v1/sandboxes/net/exec",
            json!({"argv": ["python3", "-c", script], "timeout_ms": 60000}),
        )
        .await
        .1;
    let out = result["stdout"].as_str().unwrap_or_default();
    let expected = [
        "hello",
        "urllib denied 403",
        "echo ping",
        // Another address: reset at once by the proxy (or read nothing).
        "raw",
        // 9600 inside is the sandbox's own loopback: nothing listens there.
        "raw 9600 ConnectionRefusedError",
        "denied.test unresolved",
        "udp PermissionError",
    ];
    for line in expected {
        assert!(out.contains(line), "missing {line:?} in:\n{out}\n{result}");
    }
    assert!(
        out.contains(&format!("raw {echo} ConnectionResetError"))
            || out.contains(&format!("raw {echo} read 0")),
        "a connection to an address no rule allows must fail at once:\n{out}"
    );

    // An allowed name that resolves to a private address is refused at the address.
    let body = stdout(
        &api,
        "net",
        "curl -s -m 10 -w ' %{http_code}' http://private.test:8080/",
    )
    .await;
    assert!(body.ends_with(" 403"), "{body}");
    assert!(body.contains("10.255.255.1 is a private"), "{body}");
    // The daemon's API through the proxy: a loopback address no rule names.
    let port = daemon.addr.rsplit(':').next().expect("port");
    let code = stdout(
        &api,
        "net",
        &format!(
            "env -u NO_PROXY -u no_proxy curl -s -m 10 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/v1/health"
        ),
    )
    .await;
    assert_eq!(code, "403");

    if let Some(tls) = &tls {
        let tls = tls.port;
        let out = stdout(&api, "net", &format!(
            "curl -sk -m 10 -o /dev/null -w '%{{http_code}} ' https://allowed.test:{tls}/; curl -sk -m 10 --noproxy '*' -o /dev/null -w '%{{http_code}}' https://allowed.test:{tls}/"
        )).await;
        assert_eq!(
            out, "200 200",
            "HTTPS through CONNECT and captured by SNI/name"
        );
    }

    // The log has both decisions, each with its rule, and the counters count them.
    let (status, log) = api.get("/v1/sandboxes/net/network/log?limit=10000").await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().expect("entries").clone();
    let has = |via: &str, host: &str, decision: &str| {
        entries.iter().any(|e| {
            e["via"] == via && e["host"].as_str() == Some(host) && e["decision"] == decision
        })
    };
    assert!(has("http", "allowed.test", "allowed"), "{log}");
    assert!(has("transparent", "allowed.test", "allowed"), "{log}");
    assert!(has("http", "denied.test", "denied"), "{log}");
    assert!(has("dns", "denied.test", "denied"), "{log}");
    assert!(has("http", "private.test", "denied"), "{log}");
    let allowed = entries
        .iter()
        .find(|e| e["via"] == "http" && e["decision"] == "allowed")
        .expect("an allowed entry");
    assert_eq!(
        allowed["rule"],
        format!("allowed.test:{http}, 127.0.0.1:{http}")
    );
    assert!(allowed["bytes_down"].as_u64() > Some(0), "{allowed}");
    let metrics = reqwest::get(daemon.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("nexus_network_connections_total{decision=\"denied\",via=\"http\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_applies_at_once_and_can_cut_a_running_download() {
    if !usable() {
        return;
    }
    let http = http_server();
    let (_dirs, _daemon, api, _) = daemon_with_sandbox("dl", &[http]).await;
    // A download that runs until cut, captured (no proxy variables).
    let (status, started) = api
        .post(
            "/v1/sandboxes/dl/processes",
            json!({"argv": ["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", format!("http://allowed.test:{http}/slow")]}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let process = started["id"].as_u64().expect("id");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Without --kill-existing the download goes on; new connections follow the policy.
    let (status, changed) = api
        .send(
            reqwest::Method::PATCH,
            "/v1/sandboxes/dl/network",
            Some(json!({"allow": [], "deny": []})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let code = stdout(
        &api,
        "dl",
        &format!("curl -s -m 10 -o /dev/null -w '%{{http_code}}' http://allowed.test:{http}/hello"),
    )
    .await;
    assert_eq!(
        code, "403",
        "a new connection follows the new policy at once"
    );
    let (_, list) = api.get("/v1/sandboxes/dl/processes").await;
    let running = list["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["id"] == process && p["state"] == "running");
    assert!(
        running,
        "the open download must survive a change without kill: {list}"
    );

    // With kill_existing the open connection is cut: curl fails at once.
    let (status, changed) = api
        .send(
            reqwest::Method::PATCH,
            "/v1/sandboxes/dl/network",
            Some(json!({"allow": [], "kill_existing": true})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let (status, exit) = tokio::time::timeout(
        Duration::from_secs(20),
        api.post(
            &format!("/v1/sandboxes/dl/processes/{process}/wait"),
            json!({}),
        ),
    )
    .await
    .expect("the download must end once its connection is cut");
    assert_eq!(status, 200, "{exit}");
    assert_ne!(
        exit["exit_code"].as_i64(),
        Some(0),
        "curl must fail once cut: {exit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_serves_the_sandboxs_network_again() {
    if !usable() {
        return;
    }
    let http = http_server();
    let (dirs, daemon, api, _) = daemon_with_sandbox("keep", &[http]).await;
    let fetch = format!(
        "curl -sS -m 10 http://allowed.test:{http}/hello; curl -sS -m 10 --noproxy '*' http://allowed.test:{http}/hello"
    );
    assert_eq!(stdout(&api, "keep", &fetch).await, "hello\nhello\n");
    daemon.signal(Signal::SIGKILL);
    let _ = daemon.wait();
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    assert_eq!(stdout(&api, "keep", &fetch).await, "hello\nhello\n");
    // Stopped and started again: a new namespace, served as the first was.
    for action in ["stop", "start"] {
        let (status, body) = api
            .post(&format!("/v1/sandboxes/keep/{action}"), json!({}))
            .await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    assert_eq!(stdout(&api, "keep", &fetch).await, "hello\nhello\n");
    let (status, _) = api.delete("/v1/sandboxes/keep?force=true").await;
    assert_eq!(status, 204);
}
