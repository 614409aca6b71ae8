//! Creating a sandbox cgroup and writing its limits.

use std::path::Path;

use super::files::{self, write_file};
use super::kill::move_processes;
use super::{
    CPU_PERIOD_USEC, CgroupDir, CgroupError, CgroupManager, CgroupSetup, Controller,
    ControllerProblem, DAEMON_LEAF, Hierarchy, LimitReport, LimitStatus, Limits, SandboxCgroup,
    explain, io_reason, remove_created, validate_id,
};

impl CgroupManager {
    /// Creates the cgroup of sandbox `id` and writes `limits` into it.
    ///
    /// Fails only for invalid limits or id, or when the sandbox's cgroup exists already;
    /// everything else that goes wrong lands in the report and the sandbox runs without
    /// that limit. On failure nothing created here is left behind.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<CgroupSetup, CgroupError> {
        validate_id(id)?;
        limits.validate()?;
        let mut problems: Vec<(Controller, String)> = Vec::new();
        let mut dirs: Vec<CgroupDir> = Vec::new();
        if let Some(Ok(base)) = self
            .places
            .iter()
            .find(|place| place.hierarchy == Hierarchy::V2 && place.base.is_ok())
            .map(|place| &place.base)
        {
            self.prepare_v2_io(base);
        }
        for place in &self.places {
            let base = match &place.base {
                Ok(base) => base,
                Err(reason) => {
                    problems.push((place.controller, reason.clone()));
                    continue;
                }
            };
            // On v2 every controller needs enabling, even though all share one directory.
            let prepared = match place.hierarchy {
                Hierarchy::V2 => self.prepare_v2(base, place.controller),
                Hierarchy::V1 => Ok(()),
            };
            if let Err(reason) = prepared {
                problems.push((place.controller, reason));
                continue;
            }
            let path = base.join(&self.parent_name).join(id);
            if let Some(dir) = dirs.iter_mut().find(|dir| dir.path == path) {
                dir.controllers.push(place.controller);
                continue;
            }
            if let Err(error) = std::fs::create_dir_all(base.join(&self.parent_name)) {
                let parent = base.join(&self.parent_name);
                problems.push((place.controller, io_reason("create", &parent, &error)));
                continue;
            }
            match std::fs::create_dir(&path) {
                Ok(()) => dirs.push(CgroupDir {
                    path,
                    hierarchy: place.hierarchy,
                    controllers: vec![place.controller],
                    accounting: Vec::new(),
                }),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    remove_created(&dirs);
                    return Err(CgroupError::AlreadyExists(path));
                }
                Err(error) => problems.push((place.controller, io_reason("create", &path, &error))),
            }
        }
        self.create_accounting(id, &mut dirs);
        let cgroup = SandboxCgroup {
            id: id.to_owned(),
            dirs,
        };
        let report = self.apply_limits(&cgroup, limits, &problems);
        Ok(CgroupSetup { cgroup, report })
    }

    /// Adds the sandbox's directories in the accounting-only hierarchies. Best effort:
    /// a hierarchy that refuses leaves its counters unmeasured, nothing more.
    fn create_accounting(&self, id: &str, dirs: &mut Vec<CgroupDir>) {
        for (kind, base) in &self.accounting {
            let path = base.join(&self.parent_name).join(id);
            if let Some(dir) = dirs.iter_mut().find(|dir| dir.path == path) {
                dir.accounting.push(*kind);
                continue;
            }
            let made = std::fs::create_dir_all(base.join(&self.parent_name))
                .and_then(|()| std::fs::create_dir(&path))
                .or_else(|error| match error.kind() {
                    // Left by an earlier sandbox of this id: only counters live there.
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(error),
                });
            match made {
                Ok(()) => dirs.push(CgroupDir {
                    path,
                    hierarchy: Hierarchy::V1,
                    controllers: Vec::new(),
                    accounting: vec![*kind],
                }),
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "no accounting cgroup; its counters stay unmeasured");
                }
            }
        }
    }

    /// cgroup v2: enables the `io` controller for sandbox cgroups when it is delegated
    /// to us, so `io.stat` counts their block I/O. Best effort, like the accounting
    /// hierarchies of v1: without it the I/O counters stay unmeasured.
    fn prepare_v2_io(&self, base: &Path) {
        let delegated = files::read_list(&base.join("cgroup.controllers"))
            .is_ok_and(|available| available.iter().any(|c| c == "io"));
        if !delegated {
            return;
        }
        let parent = base.join(&self.parent_name);
        let enabled = std::fs::create_dir_all(&parent)
            .map_err(|error| io_reason("create", &parent, &error))
            .and_then(|()| enable_in_subtree(base, "io", true))
            .and_then(|()| enable_in_subtree(&parent, "io", false));
        if let Err(reason) = enabled {
            tracing::debug!(%reason, "cannot enable the io controller; I/O stays unmeasured");
        }
    }

    /// cgroup v2: makes `controller` available to `<base>/<parent>/<id>`, enabling it in
    /// `<base>` (after moving our processes out, see the module docs) and in `<parent>`.
    fn prepare_v2(&self, base: &Path, controller: Controller) -> Result<(), String> {
        let parent = base.join(&self.parent_name);
        std::fs::create_dir_all(&parent).map_err(|error| io_reason("create", &parent, &error))?;
        if controller == Controller::Freezer {
            // cgroup.freeze needs no enabling; it exists in every non-root cgroup (5.2+).
            return if parent.join("cgroup.freeze").exists() {
                Ok(())
            } else {
                Err(ControllerProblem::FreezeUnsupported.to_string())
            };
        }
        let name = controller.name();
        let available = files::read_list(&base.join("cgroup.controllers"))
            .map_err(|error| error.to_string())?;
        if !available.iter().any(|c| c == name) {
            let problem = ControllerProblem::NotDelegated {
                parent: base.parent().unwrap_or(base).to_path_buf(),
            };
            return Err(explain(controller, &problem));
        }
        enable_in_subtree(base, name, true)?;
        enable_in_subtree(&parent, name, false)
    }

    fn apply_limits(
        &self,
        cgroup: &SandboxCgroup,
        limits: &Limits,
        problems: &[(Controller, String)],
    ) -> LimitReport {
        let status =
            |controller: Controller, requested: bool, write: &dyn Fn(&CgroupDir) -> LimitStatus| {
                if !requested {
                    return LimitStatus::NotRequested;
                }
                match cgroup.dir_of(controller) {
                    Some(dir) => write(dir),
                    None => {
                        let reason = problems
                            .iter()
                            .find(|(c, _)| *c == controller)
                            .map_or_else(|| "no cgroup was created".to_owned(), |(_, r)| r.clone());
                        LimitStatus::NotEnforced { reason }
                    }
                }
            };
        let memory = status(Controller::Memory, limits.memory_mib.is_some(), &|dir| {
            let bytes = limits.memory_mib.unwrap_or(0) * 1024 * 1024;
            self.write_memory(dir, bytes)
        });
        let cpus = status(Controller::Cpu, limits.cpus.is_some(), &|dir| {
            let quota = cpu_quota_usec(limits.cpus.unwrap_or(1.0));
            write_cpu(dir, quota)
        });
        let pids = status(Controller::Pids, limits.pids.is_some(), &|dir| {
            let max = limits.pids.unwrap_or(0).to_string();
            written(write_file(&dir.path.join("pids.max"), &max))
        });
        LimitReport { memory, cpus, pids }
    }

    fn write_memory(&self, dir: &CgroupDir, bytes: u64) -> LimitStatus {
        let value = bytes.to_string();
        let (limit, swap_file, swap_value) = match dir.hierarchy {
            Hierarchy::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                &value,
            ),
            Hierarchy::V2 => ("memory.max", "memory.swap.max", &"0".to_owned()),
        };
        if let LimitStatus::NotEnforced { reason } =
            written(write_file(&dir.path.join(limit), &value))
        {
            return LimitStatus::NotEnforced { reason };
        }
        // The swap file exists only with swap accounting; on v2 it is looked for in the
        // parent, which a fake cgroup tree in the unit tests can provide.
        let swap_known = match dir.hierarchy {
            Hierarchy::V1 => dir.path.join(swap_file).exists(),
            Hierarchy::V2 => dir
                .path
                .parent()
                .is_some_and(|p| p.join(swap_file).exists()),
        };
        if swap_known {
            if let LimitStatus::NotEnforced { reason } =
                written(write_file(&dir.path.join(swap_file), swap_value))
            {
                return LimitStatus::Degraded {
                    reason: format!("swap is not limited: {reason}"),
                };
            }
        } else if self.swap_present {
            return LimitStatus::Degraded {
                reason: "swap is not limited: the kernel has no swap accounting \
                         (boot with swapaccount=1)"
                    .to_owned(),
            };
        }
        LimitStatus::Enforced
    }
}

/// Enables controller `name` in `dir/cgroup.subtree_control` unless it is on. For our own
/// cgroup (`own`), first moves its processes into the [`DAEMON_LEAF`].
fn enable_in_subtree(dir: &Path, name: &str, own: bool) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = files::read_list(&control).map_err(|error| error.to_string())?;
    if enabled.iter().any(|c| c == name) {
        return Ok(());
    }
    let mut last_error = String::new();
    // A process forked while we move the others lands in `dir` again: a few rounds.
    for _ in 0..5 {
        if own {
            move_processes(dir, &dir.join(DAEMON_LEAF)).map_err(|error| error.to_string())?;
        }
        match write_file(&control, &format!("+{name}")) {
            Ok(()) => return Ok(()),
            Err(error) => last_error = files::chain(&error),
        }
        if !own {
            break;
        }
    }
    Err(last_error)
}

fn cpu_quota_usec(cpus: f64) -> u64 {
    // The kernel's minimum quota is 1 ms.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "cpus is validated to lie in 0.01..=4096"
    )]
    let quota = (cpus * CPU_PERIOD_USEC as f64).round() as u64;
    quota.max(1000)
}

fn write_cpu(dir: &CgroupDir, quota: u64) -> LimitStatus {
    match dir.hierarchy {
        Hierarchy::V1 => {
            let period = write_file(
                &dir.path.join("cpu.cfs_period_us"),
                &CPU_PERIOD_USEC.to_string(),
            );
            if let LimitStatus::NotEnforced { reason } = written(period) {
                return LimitStatus::NotEnforced { reason };
            }
            written(write_file(
                &dir.path.join("cpu.cfs_quota_us"),
                &quota.to_string(),
            ))
        }
        Hierarchy::V2 => {
            let value = format!("{quota} {CPU_PERIOD_USEC}");
            written(write_file(&dir.path.join("cpu.max"), &value))
        }
    }
}

fn written(result: Result<(), CgroupError>) -> LimitStatus {
    match result {
        Ok(()) => LimitStatus::Enforced,
        Err(error) => LimitStatus::NotEnforced {
            reason: files::chain(&error),
        },
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use nexus_host::cgroups::{CgroupReport, CgroupVersion, ControllerState};

    use super::*;

    /// A probe report placing every controller in `dirs` (one per controller, in
    /// `Controller::ALL` order) on `hierarchy`.
    pub(in crate::cgroups) fn report(hierarchy: Hierarchy, dirs: [&Path; 4]) -> CgroupReport {
        CgroupReport {
            version: match hierarchy {
                Hierarchy::V1 => CgroupVersion::V1,
                Hierarchy::V2 => CgroupVersion::V2,
            },
            v2_mount: None,
            controllers: Controller::ALL
                .iter()
                .zip(dirs)
                .map(|(&controller, dir)| ControllerState {
                    controller,
                    hierarchy: Some(hierarchy),
                    cgroup: Some(dir.to_path_buf()),
                    problem: None,
                })
                .collect(),
        }
    }

    pub(in crate::cgroups) fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    pub(in crate::cgroups) fn read(path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A fake v2 cgroup the daemon runs in, with processes, nothing enabled yet.
    pub(in crate::cgroups) fn fake_v2(controllers: &str) -> tempfile::TempDir {
        let own = tempfile::tempdir().expect("tempdir");
        write(own.path().join("cgroup.controllers"), controllers);
        write(own.path().join("cgroup.subtree_control"), "");
        write(own.path().join("cgroup.procs"), "100\n");
        // What the kernel puts into the `nexus` child once it exists.
        write(own.path().join("nexus/cgroup.subtree_control"), "");
        write(own.path().join("nexus/cgroup.freeze"), "0");
        write(own.path().join("nexus/memory.swap.max"), "max");
        own
    }

    const LIMITS: Limits = Limits {
        memory_mib: Some(64),
        cpus: Some(0.5),
        pids: Some(50),
    };

    #[test]
    fn v2_moves_the_daemon_to_a_leaf_enables_controllers_and_writes_limits() {
        let own = fake_v2("cpuset cpu io memory pids");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", true);
        let setup = manager.create("sb-1", &LIMITS).expect("create");
        let dir = own.path().join("nexus/sb-1");
        assert_eq!(setup.cgroup.dirs(), vec![dir.as_path()]);
        assert_eq!(
            setup.cgroup.procs_paths(),
            vec![dir.join("cgroup.procs")],
            "one unified directory"
        );
        assert!(read(own.path().join("nexusd/cgroup.procs")).starts_with("100"));
        for file in ["cgroup.subtree_control", "nexus/cgroup.subtree_control"] {
            let enabled = read(own.path().join(file));
            for name in ["+memory", "+pids", "+cpu"] {
                assert!(enabled.contains(name), "{file}: {enabled}");
            }
        }
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("memory.swap.max")), "0");
        assert_eq!(read(dir.join("pids.max")), "50");
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        let report = setup.report;
        assert_eq!(report.memory, LimitStatus::Enforced);
        assert_eq!(report.cpus, LimitStatus::Enforced);
        assert_eq!(report.pids, LimitStatus::Enforced);
    }

    #[test]
    fn v2_leaves_the_daemon_alone_when_controllers_are_enabled() {
        let own = fake_v2("cpu memory pids");
        write(own.path().join("cgroup.subtree_control"), "cpu memory pids");
        write(
            own.path().join("nexus/cgroup.subtree_control"),
            "cpu memory pids",
        );
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", false);
        manager.create("sb-1", &LIMITS).expect("create");
        assert!(!own.path().join("nexusd").exists());
        assert_eq!(
            read(own.path().join("cgroup.subtree_control")),
            "cpu memory pids"
        );
    }

    #[test]
    fn v2_daemon_in_its_leaf_uses_the_parent() {
        let own = fake_v2("cpu memory pids");
        let leaf = own.path().join(DAEMON_LEAF);
        std::fs::create_dir(&leaf).expect("mkdir");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [leaf.as_path(); 4]), "nexus", false);
        let setup = manager.create("sb-1", &Limits::default()).expect("create");
        assert_eq!(
            setup.cgroup.dirs(),
            vec![own.path().join("nexus/sb-1").as_path()]
        );
        assert_eq!(manager.open("sb-1").expect("open"), setup.cgroup);
    }

    #[test]
    fn v2_controller_not_delegated_is_reported_and_the_rest_enforced() {
        let own = fake_v2("cpu pids");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", false);
        let setup = manager.create("sb-1", &LIMITS).expect("create");
        let LimitStatus::NotEnforced { reason } = &setup.report.memory else {
            panic!("{:?}", setup.report.memory);
        };
        assert!(reason.contains("not delegated"), "{reason}");
        assert!(
            reason.contains("Delegate=yes"),
            "the fix is named: {reason}"
        );
        assert_eq!(setup.report.pids, LimitStatus::Enforced);
        assert_eq!(setup.report.cpus, LimitStatus::Enforced);
        assert!(!own.path().join("nexus/sb-1/memory.max").exists());
    }

    #[test]
    fn v2_without_swap_control_is_degraded_when_the_host_swaps() {
        let own = fake_v2("cpu memory pids");
        std::fs::remove_file(own.path().join("nexus/memory.swap.max")).expect("rm");
        let manager =
            CgroupManager::from_report(&report(Hierarchy::V2, [own.path(); 4]), "nexus", true);
        let setup = manager.create("sb-1", &LIMITS).expect("create");
        assert!(
            matches!(&setup.report.memory, LimitStatus::Degraded { reason } if reason.contains("swap")),
            "{:?}",
            setup.report.memory
        );
        assert!(setup.report.memory.enforced());
    }

    fn fake_v1() -> (tempfile::TempDir, [PathBuf; 4]) {
        let root = tempfile::tempdir().expect("tempdir");
        let dirs = ["memory/process_api/x", "pids", "cpu,cpuacct", "freezer"].map(|d| {
            let dir = root.path().join(d);
            std::fs::create_dir_all(&dir).expect("mkdir");
            dir
        });
        (root, dirs)
    }

    #[test]
    fn v1_makes_one_directory_per_hierarchy_and_writes_each_limit() {
        let (_root, dirs) = fake_v1();
        let report = report(
            Hierarchy::V1,
            [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.as_path()),
        );
        let manager = CgroupManager::from_report(&report, "nexus", false);
        let setup = manager.create("sb-1", &LIMITS).expect("create");
        let made: Vec<PathBuf> = dirs.iter().map(|d| d.join("nexus/sb-1")).collect();
        assert_eq!(
            setup.cgroup.dirs(),
            made.iter().map(PathBuf::as_path).collect::<Vec<_>>()
        );
        assert_eq!(read(made[0].join("memory.limit_in_bytes")), "67108864");
        assert_eq!(read(made[1].join("pids.max")), "50");
        assert_eq!(read(made[2].join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(made[2].join("cpu.cfs_quota_us")), "50000");
        assert!(setup.cgroup.can_freeze());
        assert_eq!(
            setup.report.memory,
            LimitStatus::Enforced,
            "no swap on this host"
        );
        assert_eq!(manager.open("sb-1").expect("open"), setup.cgroup);
    }

    #[test]
    fn v1_memsw_is_limited_when_present_and_missing_memsw_degrades_with_swap() {
        let (_root, dirs) = fake_v1();
        let report = report(
            Hierarchy::V1,
            [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.as_path()),
        );
        let manager = CgroupManager::from_report(&report, "nexus", true);
        let setup = manager.create("sb-1", &LIMITS).expect("create");
        assert!(matches!(setup.report.memory, LimitStatus::Degraded { .. }));

        // The kernel would create memory.memsw.limit_in_bytes with the directory.
        let dir = dirs[0].join("nexus/sb-2");
        std::fs::create_dir_all(&dir).expect("mkdir");
        write(dir.join("memory.memsw.limit_in_bytes"), "");
        let status = manager.write_memory(
            &CgroupDir {
                path: dir.clone(),
                hierarchy: Hierarchy::V1,
                controllers: vec![Controller::Memory],
                accounting: Vec::new(),
            },
            1 << 20,
        );
        assert_eq!(status, LimitStatus::Enforced);
        assert_eq!(read(dir.join("memory.memsw.limit_in_bytes")), "1048576");
    }

    #[test]
    fn existing_cgroup_fails_and_removes_what_was_made() {
        let (_root, dirs) = fake_v1();
        std::fs::create_dir_all(dirs[1].join("nexus/sb-1")).expect("mkdir");
        let report = report(
            Hierarchy::V1,
            [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.as_path()),
        );
        let manager = CgroupManager::from_report(&report, "nexus", false);
        let error = manager
            .create("sb-1", &Limits::default())
            .expect_err("exists");
        assert!(
            matches!(error, CgroupError::AlreadyExists(ref p) if *p == dirs[1].join("nexus/sb-1"))
        );
        assert!(
            !dirs[0].join("nexus/sb-1").exists(),
            "the memory cgroup was rolled back"
        );
    }

    #[test]
    fn bad_input_creates_nothing() {
        let (_root, dirs) = fake_v1();
        let report = report(
            Hierarchy::V1,
            [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.as_path()),
        );
        let manager = CgroupManager::from_report(&report, "nexus", false);
        for id in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(
                matches!(
                    manager.create(id, &Limits::default()),
                    Err(CgroupError::InvalidId(_))
                ),
                "{id}"
            );
        }
        for (limits, field) in [
            (
                Limits {
                    memory_mib: Some(0),
                    ..Limits::default()
                },
                "memory_mib",
            ),
            (
                Limits {
                    cpus: Some(0.0),
                    ..Limits::default()
                },
                "cpus",
            ),
            (
                Limits {
                    cpus: Some(f64::NAN),
                    ..Limits::default()
                },
                "cpus",
            ),
            (
                Limits {
                    pids: Some(0),
                    ..Limits::default()
                },
                "pids",
            ),
        ] {
            let error = manager.create("sb-1", &limits).expect_err("invalid");
            assert!(
                matches!(error, CgroupError::InvalidLimit { field: f, .. } if f == field),
                "{error}"
            );
        }
        assert!(!dirs[0].join("nexus/sb-1").exists());
    }

    #[test]
    fn unavailable_cgroups_report_every_requested_limit() {
        let manager = CgroupManager::unavailable("nexus", "cgroups are not mounted");
        let setup = manager
            .create(
                "sb-1",
                &Limits {
                    pids: Some(5),
                    ..Limits::default()
                },
            )
            .expect("create");
        assert!(!setup.cgroup.tracks_processes());
        assert_eq!(setup.report.memory, LimitStatus::NotRequested);
        assert_eq!(
            setup.report.pids.to_string(),
            "not enforced: cgroups are not mounted"
        );
        assert!(matches!(
            manager.open("sb-1"),
            Err(CgroupError::NotFound(_))
        ));
    }

    #[test]
    fn cpu_quota_rounds_and_respects_the_kernel_minimum() {
        assert_eq!(cpu_quota_usec(1.5), 150_000);
        assert_eq!(cpu_quota_usec(0.01), 1000);
        assert_eq!(cpu_quota_usec(0.004), 1000);
    }
}
