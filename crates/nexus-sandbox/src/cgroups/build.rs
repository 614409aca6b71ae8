//! Cgroups of image builds: one per build, so that every process a build starts, those
//! that leave its process group with `setsid` included, can be killed, and so that a
//! daemon restarted after a SIGKILL finds and kills what its builds left running.
//!
//! # Layout
//!
//! `<base>/nexus-builds/<instance>/<build>`, in one hierarchy, where `<base>` is the
//! daemon's cgroup (its parent when the daemon is in its v2 leaf `nexusd`, as for
//! sandboxes):
//! - `nexus-builds` ([`BUILDS_PARENT`]) is a sibling of the sandboxes' `nexus/`, so a
//!   build cgroup can never have a sandbox's name (`sb-*`, always under `nexus/`), and
//!   sweeping builds never touches a sandbox;
//! - `<instance>` names one daemon's state (`nexusd` derives it from its data directory),
//!   so a daemon sweeps only its own builds when several daemons share a cgroup;
//! - `<build>` is one build, named by its caller.
//!
//! Empty `<instance>` and `nexus-builds` directories are removed with the last build in
//! them; a build being created meanwhile retries its `mkdir`.
//!
//! # Which hierarchy
//!
//! A build needs no limits, only a cgroup that holds its processes and a way to kill
//! them all. In order of preference:
//! 1. cgroup2, alone or as the unified hierarchy of a hybrid host: no controller is
//!    needed, `cgroup.kill` (Linux 5.14+) kills every process at once, and older kernels
//!    freeze the cgroup and SIGKILL each pid;
//! 2. the v1 `freezer` hierarchy: freeze, SIGKILL each pid, thaw, so nothing forks
//!    between listing and killing;
//! 3. the v1 `pids` hierarchy: SIGKILL each pid, again until none is left.
//!
//! Where none is writable (a daemon that is not root and has no delegated cgroup),
//! [`BuildCgroups::detect`] says why and builds rely on their process group alone.
//!
//! # Joining
//!
//! [`BuildCgroup::join_at_spawn`] makes the spawned child write `0` (itself) into the
//! cgroup between `fork` and `exec`, so the tool is in the cgroup before it runs a single
//! instruction of its own: nothing it forks can be outside.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nexus_host::cgroups::{CgroupReport, Controller, Hierarchy};

use super::{CgroupDir, CgroupError, SandboxCgroup, sandbox_base, validate_id};

/// The directory, beside the sandboxes' `nexus/` in the daemon's cgroup, that holds the
/// build cgroups of every daemon instance.
pub const BUILDS_PARENT: &str = "nexus-builds";

/// How often a `mkdir` is retried when a finishing build removed the empty parent
/// directories meanwhile.
const CREATE_ATTEMPTS: usize = 5;

/// Where one daemon instance's build cgroups go:
/// `<base>/nexus-builds/<instance>` in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCgroups {
    home: PathBuf,
    hierarchy: Hierarchy,
    /// On v1, the controller of the hierarchy (`freezer` or `pids`); none on v2.
    controllers: Vec<Controller>,
}

/// The cgroup of one build.
#[derive(Debug)]
pub struct BuildCgroup {
    cgroup: SandboxCgroup,
    /// The instance's directory, removed with its last build.
    home: PathBuf,
}

/// A build cgroup an earlier daemon left, as [`BuildCgroups::sweep`] found and ended it.
#[derive(Debug)]
pub struct LeftoverBuild {
    /// Its directory.
    pub path: PathBuf,
    /// The processes found in it (pid and command name) and killed.
    pub processes: Vec<(u32, String)>,
    /// Whether they all ended and the directory is removed.
    pub result: Result<(), CgroupError>,
}

impl BuildCgroups {
    /// Finds the best place on this host (see the module docs) for the build cgroups of
    /// daemon `instance`, or says why there is none.
    pub fn detect(instance: &str) -> Result<Self, CgroupError> {
        let first = Self::places(instance)?.into_iter().next();
        first.ok_or_else(|| CgroupError::Unavailable {
            reason: "no place was found".to_owned(),
        })
    }

    /// Every place on this host that can hold the build cgroups of `instance`, best first
    /// (see the module docs); at least one, or why there is none.
    pub fn places(instance: &str) -> Result<Vec<Self>, CgroupError> {
        let report = nexus_host::cgroups::probe().map_err(|error| CgroupError::Unavailable {
            reason: format!("cannot probe cgroups: {error}"),
        })?;
        let v2 = nexus_host::cgroups::v2_cgroup();
        Self::from_probe(&report, v2.as_deref(), instance)
    }

    /// [`places`](Self::places) from a probe `report` and this process's writable cgroup2
    /// directory `v2` (see `nexus_host::cgroups::v2_cgroup`).
    pub fn from_probe(
        report: &CgroupReport,
        v2: Option<&Path>,
        instance: &str,
    ) -> Result<Vec<Self>, CgroupError> {
        validate_id(instance)?;
        let mut places = Vec::new();
        let mut reasons = Vec::new();
        let home = |base: &Path, hierarchy| {
            sandbox_base(base, hierarchy)
                .join(BUILDS_PARENT)
                .join(instance)
        };
        match v2 {
            Some(own) => places.push(Self {
                home: home(own, Hierarchy::V2),
                hierarchy: Hierarchy::V2,
                controllers: Vec::new(),
            }),
            None => reasons.push(
                "cgroup2: not mounted, or this process's cgroup there is not writable".to_owned(),
            ),
        }
        for controller in [Controller::Freezer, Controller::Pids] {
            let state = report.controller(controller);
            match (&state.hierarchy, &state.cgroup, &state.problem) {
                (Some(Hierarchy::V1), Some(own), None) => places.push(Self {
                    home: home(own, Hierarchy::V1),
                    hierarchy: Hierarchy::V1,
                    controllers: vec![controller],
                }),
                // On cgroup2 it is the place above.
                (Some(Hierarchy::V2), _, _) => {}
                (_, _, Some(problem)) => {
                    reasons.push(format!("v1 {}: {problem}", controller.name()));
                }
                (_, _, None) => reasons.push(format!("v1 {}: not mounted", controller.name())),
            }
        }
        if places.is_empty() {
            return Err(CgroupError::Unavailable {
                reason: reasons.join("; "),
            });
        }
        Ok(places)
    }

    /// The directory that holds this instance's build cgroups.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The hierarchy they are in.
    pub fn hierarchy(&self) -> Hierarchy {
        self.hierarchy
    }

    /// Creates the cgroup of build `name` (1-64 letters, digits, `-`, `_`, `.`); fails
    /// when it exists already.
    pub fn create(&self, name: &str) -> Result<BuildCgroup, CgroupError> {
        validate_id(name)?;
        let path = self.home.join(name);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let made =
                std::fs::create_dir_all(&self.home).and_then(|()| std::fs::create_dir(&path));
            match made {
                Ok(()) => break,
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(CgroupError::AlreadyExists(path));
                }
                // A build that just ended removed the empty parents: make them again.
                Err(error)
                    if error.kind() == std::io::ErrorKind::NotFound
                        && attempt < CREATE_ATTEMPTS => {}
                Err(source) => return Err(CgroupError::Create { path, source }),
            }
        }
        Ok(self.open(name, path))
    }

    /// Kills the processes of every build cgroup of this instance and removes them: the
    /// leftovers of a daemon that could not (one killed with SIGKILL). Run at startup,
    /// before the instance starts builds. Returns what was found, each with its outcome.
    pub fn sweep(&self) -> Result<Vec<LeftoverBuild>, CgroupError> {
        let entries = match std::fs::read_dir(&self.home) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CgroupError::Read {
                    path: self.home.clone(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| validate_id(name).is_ok())
            .collect();
        names.sort();
        let mut found = Vec::new();
        for name in names {
            let path = self.home.join(&name);
            let build = self.open(&name, path.clone());
            let processes = build
                .pids()
                .unwrap_or_default()
                .into_iter()
                .map(|pid| (pid, command_name(pid)))
                .collect();
            let result = build.destroy();
            found.push(LeftoverBuild {
                path,
                processes,
                result,
            });
        }
        remove_empty_parents(&self.home);
        Ok(found)
    }

    fn open(&self, name: &str, path: PathBuf) -> BuildCgroup {
        BuildCgroup {
            cgroup: SandboxCgroup {
                id: name.to_owned(),
                dirs: vec![CgroupDir {
                    path,
                    hierarchy: self.hierarchy,
                    controllers: self.controllers.clone(),
                    accounting: Vec::new(),
                }],
            },
            home: self.home.clone(),
        }
    }
}

impl BuildCgroup {
    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.cgroup.dirs[0].path
    }

    /// Makes the process `command` spawns join this cgroup between `fork` and `exec`, so
    /// that it and everything it forks are in it from their first instruction. Spawning
    /// fails with the `errno` of the write when the kernel refuses it.
    pub fn join_at_spawn(&self, command: &mut std::process::Command) {
        let paths: Vec<CString> = self
            .cgroup
            .self_join_paths()
            .iter()
            .map(|path| {
                CString::new(path.as_os_str().as_bytes())
                    .expect("the directory was made by mkdir, which refuses NUL bytes")
            })
            .collect();
        // SAFETY: the closure runs in the forked child, which has one thread; it only
        // calls open, write and close (async-signal-safe) on strings prepared here, and
        // allocates nothing (an `io::Error` from errno does not allocate).
        unsafe {
            command.pre_exec(move || join_self(&paths));
        }
    }

    /// The pids of the processes in the cgroup.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        self.cgroup.pids()
    }

    /// Sends SIGKILL to every process in the cgroup once, without waiting: for a drop
    /// guard. [`destroy`](Self::destroy) finishes the job.
    pub fn kill_once(&self) -> Result<(), CgroupError> {
        self.cgroup.kill_once()
    }

    /// Kills every process in the cgroup, waits until none is left (at most
    /// [`super::DEFAULT_KILL_TIMEOUT`]), and removes the cgroup, and the instance's
    /// directories when they are left empty. Blocks.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.cgroup.kill_all()?;
        self.cgroup.remove()?;
        remove_empty_parents(&self.home);
        Ok(())
    }
}

/// Runs in the forked child: writes `0` (the writer) into each join file. Raw syscalls
/// only, on strings prepared before the fork.
fn join_self(paths: &[CString]) -> std::io::Result<()> {
    for path in paths {
        // SAFETY: a NUL-terminated path owned by the closure; see `join_at_spawn`.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: writes one byte from a static buffer to the descriptor opened above.
        let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let error = std::io::Error::last_os_error();
        // SAFETY: closes the descriptor opened above, once.
        unsafe { libc::close(fd) };
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Removes the instance's directory and `nexus-builds` when they hold no cgroup any more.
/// A directory that is not empty (another build, another instance) stays.
fn remove_empty_parents(home: &Path) {
    if std::fs::remove_dir(home).is_ok()
        && let Some(parent) = home.parent()
    {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The command name of `pid` (`/proc/<pid>/comm`), or `?`.
fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::create::tests::report;
    use super::*;

    #[test]
    fn v2_is_preferred_then_the_v1_freezer_then_v1_pids() {
        let root = tempfile::tempdir().expect("tempdir");
        let dirs = ["memory/x", "pids/y", "cpu", "freezer/z"].map(|d| root.path().join(d));
        let report = report(
            Hierarchy::V1,
            [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.as_path()),
        );
        let unified = root.path().join("unified/nexusd.service");

        let places = BuildCgroups::from_probe(&report, Some(&unified), "inst").expect("places");
        let homes: Vec<(&Path, Hierarchy)> =
            places.iter().map(|p| (p.home(), p.hierarchy())).collect();
        let (v2, freezer, pids) = (
            unified.join("nexus-builds/inst"),
            dirs[3].join("nexus-builds/inst"),
            dirs[1].join("nexus-builds/inst"),
        );
        assert_eq!(
            homes,
            [
                (v2.as_path(), Hierarchy::V2),
                (freezer.as_path(), Hierarchy::V1),
                (pids.as_path(), Hierarchy::V1),
            ]
        );
        assert_eq!(places[1].controllers, [Controller::Freezer]);

        let places = BuildCgroups::from_probe(&report, None, "inst").expect("places");
        assert_eq!(places[0].home(), freezer);
    }

    #[test]
    fn v2_daemon_in_its_leaf_puts_builds_beside_it() {
        let report = report(Hierarchy::V2, [Path::new("/none"); 4]);
        let leaf = Path::new("/sys/fs/cgroup/nexus.service/nexusd");
        let places = BuildCgroups::from_probe(&report, Some(leaf), "inst").expect("places");
        assert_eq!(
            places[0].home(),
            Path::new("/sys/fs/cgroup/nexus.service/nexus-builds/inst")
        );
        assert_eq!(places.len(), 1, "v2 controllers are not v1 places");
    }

    #[test]
    fn no_writable_hierarchy_says_why_for_each() {
        let mut report = report(Hierarchy::V1, [Path::new("/none"); 4]);
        for state in &mut report.controllers {
            state.problem = Some(nexus_host::cgroups::ControllerProblem::NotWritable {
                path: PathBuf::from("/sys/fs/cgroup/pids"),
                errno: libc::EACCES,
            });
        }
        let error = BuildCgroups::from_probe(&report, None, "inst").expect_err("none");
        let text = error.to_string();
        assert!(
            text.starts_with("no writable cgroup hierarchy: cgroup2: "),
            "{text}"
        );
        assert!(
            text.contains("v1 freezer: ") && text.contains("v1 pids: "),
            "{text}"
        );
    }

    #[test]
    fn names_that_could_escape_the_directory_are_refused() {
        let report = report(Hierarchy::V2, [Path::new("/none"); 4]);
        for bad in ["", "..", "a/b", ".hidden"] {
            assert!(matches!(
                BuildCgroups::from_probe(&report, Some(Path::new("/cg")), bad),
                Err(CgroupError::InvalidId(_))
            ));
        }
        let places =
            BuildCgroups::from_probe(&report, Some(Path::new("/cg")), "inst").expect("places");
        assert!(matches!(
            places[0].create("../escape"),
            Err(CgroupError::InvalidId(_))
        ));
    }

    #[test]
    fn creating_twice_fails_and_the_last_build_removes_the_empty_parents() {
        let root = tempfile::tempdir().expect("tempdir");
        let report = report(Hierarchy::V2, [Path::new("/none"); 4]);
        let places = BuildCgroups::from_probe(&report, Some(root.path()), "inst").expect("places");
        let builds = &places[0];
        let one = builds.create("b-1").expect("create");
        assert_eq!(one.path(), root.path().join("nexus-builds/inst/b-1"));
        assert!(matches!(
            builds.create("b-1"),
            Err(CgroupError::AlreadyExists(_))
        ));
        // A plain directory stands in for cgroupfs: the fake control files make it
        // non-empty, so only the parents' removal is checked here.
        std::fs::remove_dir(one.path()).expect("rmdir");
        remove_empty_parents(builds.home());
        assert!(!root.path().join(BUILDS_PARENT).exists());
        assert_eq!(builds.sweep().expect("sweep").len(), 0, "nothing to sweep");
    }
}
