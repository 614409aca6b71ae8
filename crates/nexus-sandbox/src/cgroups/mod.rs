//! Per-sandbox cgroups on cgroup v1 and v2: creation with limits, joining, statistics,
//! killing every process, removal, and re-attaching after a daemon restart.
//!
//! # Layout
//!
//! Sandbox cgroups live under the daemon's own cgroup, found by the `nexus-host` probe:
//! - v1: one directory per controller hierarchy, `<mount>/<our cgroup>/nexus/<id>`
//!   (controllers co-mounted on one hierarchy, such as `cpu,cpuacct`, share it);
//! - v2: one directory, `<our cgroup>/nexus/<id>`.
//!
//! # The v2 "no internal processes" rule
//!
//! A v2 cgroup whose `cgroup.subtree_control` enables a controller may not itself hold
//! processes (the root excepted). So when our cgroup still holds processes and a
//! controller has to be enabled for `nexus/`, every process of our cgroup (the daemon;
//! under systemd's `Delegate=yes` the cgroup is ours alone) is first moved into the leaf
//! `<our cgroup>/nexusd`. After that, `/proc/self/cgroup` names the leaf: a daemon that
//! finds itself in a cgroup called `nexusd` uses its parent, so a restarted daemon finds
//! the sandboxes it left behind.
//!
//! Image builds get cgroups of their own, apart from sandboxes, under
//! `<our cgroup>/nexus-builds/<daemon instance>/<build>` in one hierarchy: see `build`.
//!
//! # Honesty
//!
//! A controller that is missing, not delegated or not writable does not stop a sandbox:
//! [`CgroupSetup::report`] says, per limit, whether it is enforced and why not.

mod build;
mod create;
mod files;
mod kill;
mod sandbox;
mod stats;

use std::fmt;
use std::path::{Path, PathBuf};

use nexus_host::cgroups::{CgroupReport, ControllerProblem};
pub use nexus_host::cgroups::{Controller, Hierarchy};
use serde::Serialize;

pub use self::build::{BUILDS_PARENT, BuildCgroup, BuildCgroups, LeftoverBuild};
use self::files::read_keyed;
pub use self::kill::DEFAULT_KILL_TIMEOUT;

/// Name of the leaf the daemon moves itself into on cgroup v2 (see the module docs).
pub const DAEMON_LEAF: &str = "nexusd";

/// CPU bandwidth period written with every quota, in microseconds (the kernel default).
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// Resource limits asked for a sandbox; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory, in MiB; swap is limited to zero where the host allows it.
    pub memory_mib: Option<u64>,
    /// CPU bandwidth, in CPUs (`0.5` is half of one CPU).
    pub cpus: Option<f64>,
    /// Number of processes and threads.
    pub pids: Option<u64>,
}

/// Whether one requested limit is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LimitStatus {
    /// The limit was not asked for.
    NotRequested,
    /// The kernel enforces it.
    Enforced,
    /// The kernel enforces it with a gap, explained in `reason`.
    Degraded {
        /// What is not covered, and how to cover it.
        reason: String,
    },
    /// This host cannot enforce it; the sandbox runs without it.
    NotEnforced {
        /// Why, and how to fix it.
        reason: String,
    },
}

/// Which requested limits are in force, for the sandbox's isolation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitReport {
    /// The memory limit.
    pub memory: LimitStatus,
    /// The CPU quota.
    pub cpus: LimitStatus,
    /// The process limit.
    pub pids: LimitStatus,
}

/// Usage counters of a sandbox cgroup; `None` where this host does not provide one
/// (see [`SandboxCgroup::stats`] for where each comes from).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    /// Memory in use, in bytes.
    pub memory_current: Option<u64>,
    /// Highest memory use seen, in bytes.
    pub memory_peak: Option<u64>,
    /// The memory limit in force, in bytes; `None` also when unlimited.
    pub memory_limit: Option<u64>,
    /// Processes the kernel killed because the memory limit was hit.
    pub oom_kills: Option<u64>,
    /// Processes and threads now in the cgroup.
    pub pids_current: Option<u64>,
    /// The process limit in force; `None` also when unlimited.
    pub pids_limit: Option<u64>,
    /// CPU time used, in microseconds.
    pub cpu_usage_usec: Option<u64>,
    /// CPU time spent in user mode, in microseconds.
    pub cpu_user_usec: Option<u64>,
    /// CPU time spent in the kernel, in microseconds.
    pub cpu_system_usec: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub io_write_bytes: Option<u64>,
    /// Read operations on block devices.
    pub io_read_ops: Option<u64>,
    /// Write operations on block devices.
    pub io_write_ops: Option<u64>,
}

/// A cgroup v1 hierarchy a sandbox joins for accounting only, when the counter it
/// offers is not on the hierarchy of a limit controller: `cpuacct` mounted apart from
/// `cpu`, and `blkio`. No limits are written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounting {
    /// `cpuacct`: CPU time, user and system.
    Cpuacct,
    /// `blkio`: bytes and operations per block device.
    Blkio,
}

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A limit is out of range.
    #[error("invalid limit {field}: {reason}")]
    InvalidLimit {
        /// `memory_mib`, `cpus` or `pids`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The sandbox id cannot name a directory.
    #[error("invalid sandbox id {0:?}: use 1-64 letters, digits, '-', '_' or '.'")]
    InvalidId(String),
    /// A cgroup for this sandbox exists already.
    #[error("cgroup {0} already exists")]
    AlreadyExists(PathBuf),
    /// No cgroup of this sandbox exists.
    #[error("no cgroup of sandbox {0} exists")]
    NotFound(String),
    /// A cgroup file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup file could not be written.
    #[error("cannot write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No cgroup hierarchy this process can write to holds the cgroups asked for.
    #[error("no writable cgroup hierarchy: {reason}")]
    Unavailable {
        /// What was looked for, and why each place is unusable.
        reason: String,
    },
    /// A cgroup directory could not be removed.
    #[error("cannot remove {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The freezer did not reach the asked state in time.
    #[error("{path} did not become {state} within {waited:?}")]
    FreezeTimeout {
        /// The directory.
        path: PathBuf,
        /// `frozen` or `thawed`.
        state: &'static str,
        /// How long was waited.
        waited: std::time::Duration,
    },
    /// No freezer is available for this cgroup.
    #[error("no freezer is available: neither a v1 freezer controller nor cgroup.freeze on v2")]
    NoFreezer,
    /// Processes survived SIGKILL for the whole timeout.
    #[error("{remaining} processes are still in {path} after being killed")]
    KillTimeout {
        /// One directory that still has processes.
        path: PathBuf,
        /// How many it has.
        remaining: usize,
    },
}

/// Creates sandbox cgroups under the daemon's own cgroup.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    parent_name: String,
    places: Vec<Place>,
    /// Accounting-only v1 hierarchies: the daemon's cgroup in each.
    accounting: Vec<(Accounting, PathBuf)>,
    swap_present: bool,
}

/// A sandbox cgroup and the report of what it enforces, as [`CgroupManager::create`]
/// returns them.
#[derive(Debug)]
pub struct CgroupSetup {
    /// The cgroup.
    pub cgroup: SandboxCgroup,
    /// Which limits are in force.
    pub report: LimitReport,
}

/// The cgroup directories of one sandbox (one per v1 hierarchy, or one on v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroup {
    id: String,
    dirs: Vec<CgroupDir>,
}

/// One directory of a sandbox cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupDir {
    path: PathBuf,
    hierarchy: Hierarchy,
    controllers: Vec<Controller>,
    accounting: Vec<Accounting>,
}

/// Where one controller's sandbox cgroups go, or why they cannot.
#[derive(Debug, Clone)]
struct Place {
    controller: Controller,
    hierarchy: Hierarchy,
    /// The daemon's cgroup in this controller's hierarchy.
    base: Result<PathBuf, String>,
}

impl Limits {
    /// Checks that every limit given is in range.
    pub fn validate(&self) -> Result<(), CgroupError> {
        let invalid = |field, reason| Err(CgroupError::InvalidLimit { field, reason });
        if let Some(mib) = self.memory_mib {
            if mib == 0 {
                return invalid("memory_mib", "must be at least 1");
            }
            if mib.checked_mul(1024 * 1024).is_none() {
                return invalid("memory_mib", "is too large");
            }
        }
        if let Some(cpus) = self.cpus {
            if !cpus.is_finite() || cpus < 0.01 {
                return invalid("cpus", "must be a number of CPUs of at least 0.01");
            }
            if cpus > 4096.0 {
                return invalid("cpus", "is too large");
            }
        }
        if self.pids == Some(0) {
            return invalid("pids", "must be at least 1");
        }
        Ok(())
    }
}

impl LimitStatus {
    /// Whether the limit is in force (possibly with a documented gap).
    pub fn enforced(&self) -> bool {
        matches!(self, LimitStatus::Enforced | LimitStatus::Degraded { .. })
    }
}

impl fmt::Display for LimitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitStatus::NotRequested => f.write_str("not requested"),
            LimitStatus::Enforced => f.write_str("enforced"),
            LimitStatus::Degraded { reason } => write!(f, "enforced, but {reason}"),
            LimitStatus::NotEnforced { reason } => write!(f, "not enforced: {reason}"),
        }
    }
}

impl CgroupManager {
    /// Probes this host's cgroups and places sandbox cgroups under
    /// `<our cgroup>/<parent_name>/`.
    pub fn detect(parent_name: &str) -> Self {
        let report = nexus_host::cgroups::probe();
        let swap_present = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| read_keyed(&text, "SwapTotal:"))
            .is_some_and(|kib| kib > 0);
        match report {
            Ok(report) => {
                let accounting = [
                    (Accounting::Cpuacct, "cpuacct"),
                    (Accounting::Blkio, "blkio"),
                ]
                .into_iter()
                .filter_map(|(kind, name)| Some((kind, nexus_host::cgroups::v1_cgroup(name)?)))
                .collect();
                Self::from_report(&report, parent_name, swap_present).with_accounting(accounting)
            }
            Err(error) => {
                let reason = format!("cannot probe cgroups: {error}");
                Self::unavailable(parent_name, &reason)
            }
        }
    }

    /// Places sandbox cgroups as a probe `report` describes; `swap_present` tells whether
    /// the host has swap that a memory limit must also cover.
    pub fn from_report(report: &CgroupReport, parent_name: &str, swap_present: bool) -> Self {
        let places = report
            .controllers
            .iter()
            .map(|state| {
                let hierarchy = state.hierarchy.unwrap_or(Hierarchy::V2);
                let base = match (&state.cgroup, &state.problem) {
                    (Some(dir), _) => Ok(sandbox_base(dir, hierarchy)),
                    (None, Some(problem)) => Err(explain(state.controller, problem)),
                    (None, None) => Err("its cgroup was not found".to_owned()),
                };
                Place {
                    controller: state.controller,
                    hierarchy,
                    base,
                }
            })
            .collect();
        CgroupManager {
            parent_name: parent_name.to_owned(),
            places,
            accounting: Vec::new(),
            swap_present,
        }
    }

    /// Also places sandbox cgroups in these accounting-only v1 hierarchies, given as the
    /// daemon's cgroup in each (a hierarchy shared with a limit controller, such as
    /// `cpu,cpuacct`, simply adds its counters to that directory).
    pub fn with_accounting(mut self, accounting: Vec<(Accounting, PathBuf)>) -> Self {
        self.accounting = accounting;
        self
    }

    /// A manager that enforces nothing, every limit reported with `reason`.
    pub fn unavailable(parent_name: &str, reason: &str) -> Self {
        let places = Controller::ALL
            .iter()
            .map(|&controller| Place {
                controller,
                hierarchy: Hierarchy::V2,
                base: Err(reason.to_owned()),
            })
            .collect();
        CgroupManager {
            parent_name: parent_name.to_owned(),
            places,
            accounting: Vec::new(),
            swap_present: false,
        }
    }

    /// Re-attaches to the cgroup of sandbox `id` left by an earlier daemon.
    pub fn open(&self, id: &str) -> Result<SandboxCgroup, CgroupError> {
        validate_id(id)?;
        let mut dirs: Vec<CgroupDir> = Vec::new();
        for place in &self.places {
            let Ok(base) = &place.base else { continue };
            let path = base.join(&self.parent_name).join(id);
            if let Some(dir) = dirs.iter_mut().find(|dir| dir.path == path) {
                dir.controllers.push(place.controller);
            } else if path.is_dir() {
                dirs.push(CgroupDir {
                    path,
                    hierarchy: place.hierarchy,
                    controllers: vec![place.controller],
                    accounting: Vec::new(),
                });
            }
        }
        if dirs.is_empty() {
            return Err(CgroupError::NotFound(id.to_owned()));
        }
        for (kind, base) in &self.accounting {
            let path = base.join(&self.parent_name).join(id);
            if let Some(dir) = dirs.iter_mut().find(|dir| dir.path == path) {
                dir.accounting.push(*kind);
            } else if path.is_dir() {
                dirs.push(CgroupDir {
                    path,
                    hierarchy: Hierarchy::V1,
                    controllers: Vec::new(),
                    accounting: vec![*kind],
                });
            }
        }
        Ok(SandboxCgroup {
            id: id.to_owned(),
            dirs,
        })
    }
}

/// The directory sandbox cgroups go under: our cgroup, or its parent when we are in the
/// v2 leaf we moved ourselves into.
fn sandbox_base(own: &Path, hierarchy: Hierarchy) -> PathBuf {
    match (hierarchy, own.file_name(), own.parent()) {
        (Hierarchy::V2, Some(name), Some(parent)) if name == DAEMON_LEAF => parent.to_path_buf(),
        _ => own.to_path_buf(),
    }
}

fn explain(controller: Controller, problem: &ControllerProblem) -> String {
    format!(
        "the {} controller is unusable: {problem} (fix: {})",
        controller.name(),
        problem.fix(controller)
    )
}

fn io_reason(what: &str, path: &Path, error: &std::io::Error) -> String {
    format!("cannot {what} {}: {error}", path.display())
}

fn remove_created(dirs: &[CgroupDir]) {
    for dir in dirs {
        if let Err(error) = std::fs::remove_dir(&dir.path) {
            tracing::warn!(path = %dir.path.display(), %error, "cannot remove a cgroup on rollback");
        }
    }
}

/// Sandbox ids become directory names: no separators, no `.`/`..`.
pub(crate) fn validate_id(id: &str) -> Result<(), CgroupError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(CgroupError::InvalidId(id.to_owned()))
    }
}
