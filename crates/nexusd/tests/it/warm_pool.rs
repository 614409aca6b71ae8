//! The warm pool through a real daemon with real bubblewrap sandboxes: a create is
//! served by a pooled sandbox that looks fresh (its name as host name, an empty
//! workspace, a uid of its own), pooled sandboxes stay hidden, the pool refills, and a
//! restarted daemon replaces the previous run's pool, also one stopped or killed while
//! a top-up was starting a sandbox.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::harness::{Api, Daemon, Dirs, bwrap_usable, cgroup_dirs_named, skip};

macro_rules! require_bwrap {
    () => {
        if !bwrap_usable() {
            skip("bubblewrap cannot run sandboxes on this host (`nexusctl doctor` says why)");
            return;
        }
    };
}

/// The checks of leftovers find a sandbox's processes by its cgroup, which a root
/// daemon always makes.
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            skip("finding sandbox processes by their cgroup needs nexusd running as root");
            return;
        }
    };
}

/// The warm pool section of `GET /v1/status`.
async fn pool(api: &Api) -> Value {
    let (status, body) = api.get("/v1/status").await;
    assert_eq!(status, 200, "{body}");
    body["warm_pool"].clone()
}

/// Waits until the first profile has `ready` sandboxes ready.
async fn wait_ready(api: &Api, daemon: &Daemon, ready: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool = pool(api).await;
        if pool[0]["ready"] == ready {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not reach {ready} ready: {pool}\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ids of the sandboxes the daemon logged as ready in its pool.
fn pooled_ids(daemon: &Daemon) -> BTreeSet<String> {
    daemon
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["fields"]["message"] == "warm pool sandbox ready")
        .filter_map(|v| v["fields"]["sandbox_id"].as_str().map(str::to_owned))
        .collect()
}

/// The names in a list answer (`{"sandboxes": [...]}` or `{"workspaces": [...]}`).
fn names(list: &Value) -> Vec<String> {
    list["sandboxes"]
        .as_array()
        .or_else(|| list["workspaces"].as_array())
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_is_served_by_the_pool_with_a_fresh_looking_sandbox() {
    require_bwrap!();
    let dirs = Dirs::new();
    dirs.write_config("warm_pool:\n  - size: 2\n");
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);

    let ready = wait_ready(&api, &daemon, 2).await;
    assert_eq!(ready[0]["image"], "host", "{ready}");
    assert_eq!(ready[0]["size"], 2, "{ready}");
    assert_eq!(ready[0]["limits"]["tmp_mib"], 512, "{ready}");
    if let Some(bytes) = ready[0]["memory_bytes"].as_u64() {
        assert!(bytes > 0, "two running sandboxes use some memory: {ready}");
    }
    let pooled = pooled_ids(&daemon);
    assert_eq!(pooled.len(), 2, "{}", daemon.logs());

    // Hidden while they wait.
    let (status, list) = api.get("/v1/sandboxes").await;
    assert_eq!(status, 200);
    assert!(names(&list).is_empty(), "pooled sandboxes listed: {list}");
    let (_, workspaces) = api.get("/v1/workspaces").await;
    assert!(
        names(&workspaces).is_empty(),
        "pool workspaces listed: {workspaces}"
    );
    for id in &pooled {
        let (status, body) = api.get(&format!("/v1/sandboxes/{id}")).await;
        assert_eq!(status, 404, "a pooled sandbox was found by id: {body}");
    }

    let first = api
        .create(json!({"name": "first", "env": {"GREETING": "hello"}, "labels": {"team": "a"}}))
        .await;
    let first_id = first["id"].as_str().expect("id").to_owned();
    assert!(
        pooled.contains(&first_id),
        "not served by the pool: {first}"
    );
    assert_eq!(first["labels"]["team"], "a");
    assert_eq!(first["isolation"]["isolated"], true, "{first}");

    let out = api
        .sh(
            "first",
            "hostname; echo $GREETING; ls -A /workspace | wc -l; pwd",
        )
        .await;
    assert_eq!(
        out["stdout"], "first\nhello\n0\n/workspace\n",
        "the host name (needs the bwrap driver's set_hostname), env or workspace: {out}"
    );
    api.sh("first", "echo mine > /workspace/note").await;

    let second = api.create(json!({"name": "second"})).await;
    let second_id = second["id"].as_str().expect("id").to_owned();
    assert!(
        pooled.contains(&second_id),
        "not served by the pool: {second}"
    );
    assert_eq!(
        api.sh("second", "hostname; ls -A /workspace | wc -l").await["stdout"],
        "second\n0\n",
        "another sandbox's files, or its host name"
    );
    if first["isolation"]["uid_host"].is_u64() {
        assert_ne!(
            first["isolation"]["uid_host"], second["isolation"]["uid_host"],
            "two pooled sandboxes share a host uid"
        );
    }

    // Only the user's sandboxes and workspaces are listed, named after them.
    let (_, list) = api.get("/v1/sandboxes").await;
    assert_eq!(names(&list), ["first", "second"], "{list}");
    let (_, workspaces) = api.get("/v1/workspaces").await;
    assert_eq!(names(&workspaces), ["first", "second"], "{workspaces}");

    // The pool refills with new sandboxes.
    wait_ready(&api, &daemon, 2).await;
    let refilled = pooled_ids(&daemon);
    assert_eq!(refilled.len(), 4, "{}", daemon.logs());
    // The pool's own starts are not logged at info under their placeholder names.
    let placeholder_lines: Vec<String> = daemon
        .logs()
        .lines()
        .filter(|l| l.contains(r#""level":"INFO""#) && l.contains("0pool-"))
        .map(str::to_owned)
        .collect();
    assert!(placeholder_lines.is_empty(), "{placeholder_lines:#?}");
    let res = reqwest::get(daemon.url("/metrics")).await.expect("metrics");
    let text = res.text().await.expect("body");
    assert!(
        text.lines()
            .any(|l| l == r#"nexus_warm_pool_ready{image="host",profile="0"} 2"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"nexus_sandboxes{state="running"} 4"#),
        "pooled sandboxes counted as the user's: {text}"
    );

    // A request that does not match the pool is created cold.
    let cold = api
        .create(json!({"name": "cold", "limits": {"memory_mib": 256}}))
        .await;
    assert!(!refilled.contains(cold["id"].as_str().expect("id")));
    assert_eq!(pool(&api).await[0]["ready"], 2);

    for name in ["first", "second", "cold"] {
        let (status, body) = api
            .delete(&format!("/v1/sandboxes/{name}?force=true"))
            .await;
        assert_eq!(status, 204, "{body}");
    }
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_replaces_the_previous_pool() {
    require_bwrap!();
    let dirs = Dirs::new();
    dirs.write_config("warm_pool:\n  - size: 1\n");
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    wait_ready(&api, &daemon, 1).await;
    let before = pooled_ids(&daemon);
    daemon.stop();

    let runtime = dirs.path("run").join("nexus").join("sandboxes");
    for id in &before {
        assert!(
            runtime.join(id).exists(),
            "a pooled sandbox survives a daemon stop like any other"
        );
    }
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    wait_ready(&api, &daemon, 1).await;
    let after = pooled_ids(&daemon);
    assert_eq!(after.len(), 1, "{}", daemon.logs());
    assert!(after.is_disjoint(&before), "the old pool was kept");
    for id in &before {
        assert!(
            !runtime.join(id).exists(),
            "the previous pool's sandbox {id} was left behind"
        );
    }
    let (_, list) = api.get("/v1/sandboxes").await;
    assert!(names(&list).is_empty(), "{list}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_waits_for_a_warm_pool_start_under_way() {
    require_bwrap!();
    require_root!();
    let dirs = Dirs::new();
    dirs.write_config("warm_pool:\n  - size: 3\n");
    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    wait_ready(&api, &daemon, 3).await;
    // A create takes a pooled sandbox and the pool tops itself up: stop the daemon while
    // that start is under way.
    let claimed = api.create(json!({"name": "claimed"})).await;
    let claimed_id = claimed["id"].as_str().expect("id").to_owned();
    let starting = wait_for_record(&dirs, &daemon, |r| r.state == "starting").await;
    let logs = daemon.stop();
    assert!(!logs.contains("panicked"), "{logs}");

    // The start was finished, not cut off: every record is whole and runs.
    let stopped = records(&dirs);
    let mut known: BTreeSet<String> = stopped.iter().map(|r| r.id.clone()).collect();
    known.insert(starting.id.clone());
    let processes = sandbox_processes(&dirs, &known);
    for record in &stopped {
        assert!(
            record.state == "running" && record.runtime,
            "a sandbox was left half-started by the stop: {record:?}\nall: {stopped:#?}\n{logs}"
        );
        assert!(
            processes.contains_key(&record.id),
            "{record:?} has no processes: {processes:?}"
        );
    }
    assert!(
        stopped.iter().any(|r| r.id == starting.id),
        "the start under way ({starting:?}) was rolled back: {stopped:#?}\n{logs}"
    );
    assert_eq!(
        stopped.len(),
        4,
        "three pooled and the claimed one: {stopped:#?}"
    );

    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    wait_ready(&api, &daemon, 3).await;
    assert_consistent(&dirs, &known, 3);
    let (_, list) = api.get("/v1/sandboxes").await;
    assert_eq!(names(&list), ["claimed"], "{list}");
    let records = records(&dirs);
    assert!(
        records
            .iter()
            .any(|r| r.id == claimed_id && r.state == "running"),
        "the claimed sandbox was not adopted: {records:#?}"
    );
    let (status, body) = api.delete("/v1/sandboxes/claimed?force=true").await;
    assert_eq!(status, 204, "{body}");
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_warm_pool_start_leaks_nothing_at_the_next_start() {
    require_bwrap!();
    require_root!();
    let dirs = Dirs::new();
    dirs.write_config("warm_pool:\n  - size: 3\n");
    let mut known = BTreeSet::new();
    // Killed between the launch and the recording of its runtime handle, a pooled
    // sandbox has processes and a cgroup but a record without a handle. The window is
    // a few milliseconds wide: try again (each start clears the previous attempt) until
    // a kill lands in it.
    let mut half_started = None;
    for _ in 0..20 {
        let daemon = Daemon::start(&dirs);
        // The pool fills well within 3 s; a miss is tried again.
        let found = poll_record(&dirs, Duration::from_secs(3), |r| {
            r.state == "starting"
                && !r.runtime
                && sandbox_processes(&dirs, &BTreeSet::from([r.id.clone()])).contains_key(&r.id)
        })
        .await;
        daemon.signal(Signal::SIGKILL);
        daemon.wait();
        known.extend(records(&dirs).into_iter().map(|r| r.id));
        known.extend(sandbox_processes(&dirs, &known).into_keys());
        let Some(found) = found else { continue };
        let still_half = records(&dirs)
            .into_iter()
            .any(|r| r.id == found.id && !r.runtime);
        if still_half && sandbox_processes(&dirs, &known).contains_key(&found.id) {
            half_started = Some(found);
            break;
        }
    }
    let Some(half_started) = half_started else {
        panic!("no kill landed between a pooled sandbox's launch and its recording in 20 tries");
    };
    assert!(
        !cgroup_dirs_named(&half_started.id).is_empty(),
        "the half-started sandbox has a cgroup"
    );

    let daemon = Daemon::start(&dirs);
    let api = Api::new(&daemon, &dirs);
    wait_ready(&api, &daemon, 3).await;
    assert_consistent(&dirs, &known, 3);
    assert!(
        cgroup_dirs_named(&half_started.id).is_empty(),
        "the half-started sandbox's cgroup outlived the restart"
    );
    let (_, list) = api.get("/v1/sandboxes").await;
    assert!(names(&list).is_empty(), "{list}");
    daemon.stop();
}

/// One row of the `sandboxes` table.
#[derive(Debug)]
struct Record {
    id: String,
    name: String,
    state: String,
    /// Whether it holds the driver's runtime handle.
    runtime: bool,
}

/// Every sandbox the database records, the pooled ones included.
fn records(dirs: &Dirs) -> Vec<Record> {
    let conn = rusqlite::Connection::open(dirs.db_file()).expect("open the database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let mut query = conn
        .prepare("SELECT id, name, state, runtime IS NOT NULL FROM sandboxes ORDER BY id")
        .expect("prepare");
    query
        .query_map([], |row| {
            Ok(Record {
                id: row.get(0)?,
                name: row.get(1)?,
                state: row.get(2)?,
                runtime: row.get(3)?,
            })
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Polls the database until a record matches; panics after 30 s.
async fn wait_for_record(dirs: &Dirs, daemon: &Daemon, found: impl Fn(&Record) -> bool) -> Record {
    match poll_record(dirs, Duration::from_secs(30), found).await {
        Some(record) => record,
        None => panic!("no such record: {:#?}\n{}", records(dirs), daemon.logs()),
    }
}

/// Polls the database every millisecond, for up to `within`, until a record matches.
async fn poll_record(
    dirs: &Dirs,
    within: Duration,
    found: impl Fn(&Record) -> bool,
) -> Option<Record> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if dirs.db_file().exists()
            && let Some(record) = records(dirs).into_iter().find(&found)
        {
            return Some(record);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Live processes by sandbox id (read from their cgroup), of the sandboxes in `known`
/// and of any whose command line names the test's directories (bwrap's binds do).
fn sandbox_processes(dirs: &Dirs, known: &BTreeSet<String>) -> BTreeMap<String, Vec<u32>> {
    let needle = dirs.root.path().as_os_str().as_encoded_bytes();
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Some(id) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| sandbox_of_cgroup(&text))
        else {
            continue;
        };
        let mentions = || {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
        };
        if known.contains(&id) || mentions() {
            found.entry(id).or_default().push(pid);
        }
    }
    found
}

/// The sandbox id in a `/proc/<pid>/cgroup` text, if the process is in a sandbox's.
fn sandbox_of_cgroup(text: &str) -> Option<String> {
    text.lines()
        .flat_map(|line| line.split('/'))
        .find(|part| part.starts_with("sb-") && part.len() == "sb-".len() + 16)
        .map(str::to_owned)
}

/// After a restart filled the pool: `size` pooled records, every record running with its
/// runtime handle and processes, and nothing left of the sandboxes in `known` that no
/// record accounts for (no process, no cgroup).
fn assert_consistent(dirs: &Dirs, known: &BTreeSet<String>, size: usize) {
    let records = records(dirs);
    let pooled = records
        .iter()
        .filter(|r| r.name.starts_with("0pool-"))
        .count();
    assert_eq!(pooled, size, "the pool is not at its size: {records:#?}");
    let recorded: BTreeSet<&String> = records.iter().map(|r| &r.id).collect();
    let processes = sandbox_processes(dirs, known);
    for record in &records {
        assert!(
            record.state == "running" && record.runtime,
            "an inconsistent record: {record:?}"
        );
        assert!(
            processes.contains_key(&record.id),
            "{record:?} has no processes"
        );
    }
    let orphans: Vec<_> = processes
        .iter()
        .filter(|(id, _)| !recorded.contains(id))
        .collect();
    assert!(
        orphans.is_empty(),
        "processes no record accounts for: {orphans:?}"
    );
    for id in known.iter().filter(|id| !recorded.contains(id)) {
        let left = cgroup_dirs_named(id);
        assert!(left.is_empty(), "a cgroup no record accounts for: {left:?}");
    }
}
