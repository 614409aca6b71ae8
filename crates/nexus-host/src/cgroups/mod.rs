//! Cgroup probe: how the hierarchies are mounted (v1, v2 or hybrid) and whether Nexus
//! can create child cgroups with the memory, pids, cpu and freezer controllers.
//!
//! The probe never creates a cgroup: `doctor` must not change the host. Writability is
//! judged with `access(W_OK)`, which accounts for a read-only mount and for the caller's
//! credentials (including inside a user namespace). On cgroup v2 "usable" also needs the
//! controller in our cgroup's `cgroup.controllers` and `cgroup.subtree_control` enabled
//! or writable. The v2 "no internal processes" rule still applies: before enabling
//! controllers for children, the daemon must move itself into a leaf of its own cgroup
//! (which is what systemd's `Delegate=yes` expects).

mod parse;
mod problem;

use std::fmt;
use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;
use serde::Serialize;

use self::parse::{CgroupMount, Membership, MountKind};
pub use self::problem::ControllerProblem;
use crate::{ProbeError, read_file};

/// How cgroup hierarchies are mounted on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    /// Only the unified cgroup2 hierarchy (the modern default).
    V2,
    /// Only legacy v1 hierarchies.
    V1,
    /// v1 controller hierarchies beside a cgroup2 mount (systemd's "hybrid" mode).
    Hybrid,
    /// No cgroup filesystem is mounted.
    NotMounted,
}

/// Which kind of hierarchy a controller is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hierarchy {
    /// A cgroup v1 hierarchy.
    V1,
    /// The cgroup2 hierarchy.
    V2,
}

/// The controllers Nexus uses for sandbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Controller {
    /// Memory limit (`memory.max` / `memory.limit_in_bytes`).
    Memory,
    /// Process count limit.
    Pids,
    /// CPU bandwidth and weight.
    Cpu,
    /// Pause and resume (`cgroup.freeze` on v2, the `freezer` controller on v1).
    Freezer,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupReport {
    /// The mount layout.
    pub version: CgroupVersion,
    /// Where cgroup2 is mounted, if it is.
    pub v2_mount: Option<PathBuf>,
    /// One entry per [`Controller::ALL`], in that order.
    pub controllers: Vec<ControllerState>,
}

/// Whether one controller is usable, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerState {
    /// The controller.
    pub controller: Controller,
    /// The hierarchy it is attached to, if any.
    pub hierarchy: Option<Hierarchy>,
    /// This process's cgroup in that hierarchy: where Nexus would create sandbox cgroups.
    pub cgroup: Option<PathBuf>,
    /// Why the controller cannot be used; `None` when it can.
    pub problem: Option<ControllerProblem>,
}

impl Controller {
    /// Every controller, in report order.
    pub const ALL: [Controller; 4] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::Freezer,
    ];

    /// The kernel's name for it (`memory`, `pids`, `cpu`, `freezer`).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Freezer => "freezer",
        }
    }
}

impl CgroupReport {
    /// The state of one controller.
    pub fn controller(&self, controller: Controller) -> &ControllerState {
        self.controllers
            .iter()
            .find(|state| state.controller == controller)
            .expect("the probe reports every controller in Controller::ALL")
    }
}

impl ControllerState {
    /// Whether Nexus can create child cgroups that enforce this controller.
    pub fn usable(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V2 => "v2",
            CgroupVersion::V1 => "v1",
            CgroupVersion::Hybrid => "hybrid",
            CgroupVersion::NotMounted => "not mounted",
        })
    }
}

impl fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hierarchy::V1 => "v1",
            Hierarchy::V2 => "v2",
        })
    }
}

/// Probes this process's view of the cgroup hierarchies.
pub fn probe() -> Result<CgroupReport, ProbeError> {
    let mountinfo = read_file("/proc/self/mountinfo")?;
    let own = read_file("/proc/self/cgroup")?;
    Ok(probe_from(&mountinfo, &own))
}

/// This process's cgroup in the v1 hierarchy that carries `controller` (`cpuacct`,
/// `blkio`, ...), when one is mounted, located and writable. Sandboxes join such
/// accounting-only hierarchies so their CPU time and I/O can be read where those are not
/// on a limit controller's hierarchy.
pub fn v1_cgroup(controller: &str) -> Option<PathBuf> {
    let mountinfo = read_file("/proc/self/mountinfo").ok()?;
    let own = read_file("/proc/self/cgroup").ok()?;
    v1_cgroup_from(&mountinfo, &own, controller)
}

/// This process's cgroup in the cgroup2 hierarchy, when cgroup2 is mounted (alone, or
/// beside v1 hierarchies on a hybrid host), located and writable. Holding and killing
/// processes there needs no controller (`cgroup.procs`, `cgroup.kill`, `cgroup.freeze`
/// exist in every non-root cgroup), which is all an image build's cgroup is for.
pub fn v2_cgroup() -> Option<PathBuf> {
    let mountinfo = read_file("/proc/self/mountinfo").ok()?;
    let own = read_file("/proc/self/cgroup").ok()?;
    v2_cgroup_from(&mountinfo, &own)
}

/// [`v2_cgroup`] over given `mountinfo` and `/proc/self/cgroup` texts.
fn v2_cgroup_from(mountinfo: &str, self_cgroup: &str) -> Option<PathBuf> {
    let mounts = parse::parse_mountinfo(mountinfo);
    let candidates: Vec<&CgroupMount> = mounts.iter().filter(|m| m.kind == MountKind::V2).collect();
    let own = parse::parse_proc_cgroup(self_cgroup);
    let own = own.iter().find(|m| m.is_v2())?;
    let (_, dir) = locate(&candidates, &own.path)?;
    writable(&dir).is_ok().then_some(dir)
}

/// [`v1_cgroup`] over given `mountinfo` and `/proc/self/cgroup` texts.
fn v1_cgroup_from(mountinfo: &str, self_cgroup: &str, controller: &str) -> Option<PathBuf> {
    let mounts = parse::parse_mountinfo(mountinfo);
    let candidates: Vec<&CgroupMount> = mounts
        .iter()
        .filter(|m| m.kind.has_v1_controller(controller))
        .collect();
    let own = parse::parse_proc_cgroup(self_cgroup);
    let own = own
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == controller))?;
    let (_, dir) = locate(&candidates, &own.path)?;
    writable(&dir).is_ok().then_some(dir)
}

/// The probe over given `mountinfo` and `/proc/self/cgroup` texts; it reads the cgroup
/// files under the mount points they name.
fn probe_from(mountinfo: &str, self_cgroup: &str) -> CgroupReport {
    let mounts = parse::parse_mountinfo(mountinfo);
    let own = parse::parse_proc_cgroup(self_cgroup);
    let has_v1 = mounts
        .iter()
        .any(|m| matches!(&m.kind, MountKind::V1(list) if !list.is_empty()));
    let v2_mounts: Vec<&CgroupMount> = mounts.iter().filter(|m| m.kind == MountKind::V2).collect();
    let version = match (has_v1, !v2_mounts.is_empty()) {
        (true, true) => CgroupVersion::Hybrid,
        (true, false) => CgroupVersion::V1,
        (false, true) => CgroupVersion::V2,
        (false, false) => CgroupVersion::NotMounted,
    };
    let controllers = Controller::ALL
        .iter()
        .map(|&controller| probe_controller(controller, &mounts, &v2_mounts, &own))
        .collect();
    CgroupReport {
        version,
        v2_mount: v2_mounts.first().map(|m| m.mount_point.clone()),
        controllers,
    }
}

fn probe_controller(
    controller: Controller,
    mounts: &[CgroupMount],
    v2_mounts: &[&CgroupMount],
    own: &[Membership],
) -> ControllerState {
    let state = |hierarchy, cgroup, problem| ControllerState {
        controller,
        hierarchy,
        cgroup,
        problem,
    };
    // A controller bound to a v1 hierarchy is absent from cgroup2, so v1 decides first.
    let v1_mounts: Vec<&CgroupMount> = mounts
        .iter()
        .filter(|m| m.kind.has_v1_controller(controller.name()))
        .collect();
    let (hierarchy, candidates, own_path) = if v1_mounts.is_empty() {
        let own_path = own.iter().find(|m| m.is_v2());
        (Hierarchy::V2, v2_mounts.to_vec(), own_path)
    } else {
        let own_path = own
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller.name()));
        (Hierarchy::V1, v1_mounts, own_path)
    };
    if candidates.is_empty() {
        return state(None, None, Some(ControllerProblem::NotMounted));
    }
    let located = own_path.and_then(|own| locate(&candidates, &own.path));
    let Some((mount, dir)) = located else {
        return state(
            Some(hierarchy),
            None,
            Some(ControllerProblem::OwnCgroupUnknown),
        );
    };
    let problem = match hierarchy {
        Hierarchy::V1 => writable(&dir).err(),
        Hierarchy::V2 => check_v2(controller, &dir, dir == mount.mount_point).err(),
    };
    state(Some(hierarchy), Some(dir), problem)
}

/// Finds this process's cgroup directory under the first mount that contains it.
fn locate<'a>(mounts: &[&'a CgroupMount], own_path: &str) -> Option<(&'a CgroupMount, PathBuf)> {
    mounts.iter().find_map(|mount| {
        let relative = if mount.root == "/" {
            own_path
        } else {
            own_path
                .strip_prefix(mount.root.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                // In a cgroup namespace paths are relative to its root: try them as they are.
                .unwrap_or(own_path)
        };
        let relative = relative.trim_start_matches('/');
        let dir = if relative.is_empty() {
            mount.mount_point.clone()
        } else {
            mount.mount_point.join(relative)
        };
        dir.is_dir().then_some((*mount, dir))
    })
}

fn check_v2(controller: Controller, dir: &Path, is_root: bool) -> Result<(), ControllerProblem> {
    if controller == Controller::Freezer {
        // cgroup.freeze exists in every non-root cgroup since Linux 5.2.
        let in_child = || {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|entry| entry.path().join("cgroup.freeze").exists())
            })
        };
        let freezable = dir.join("cgroup.freeze").exists() || (is_root && in_child());
        if !freezable {
            return Err(ControllerProblem::FreezeUnsupported);
        }
        return writable(dir);
    }
    let name = controller.name();
    let available = read_list(&dir.join("cgroup.controllers"))?;
    if !available.iter().any(|c| c == name) {
        return Err(match dir.parent().filter(|_| !is_root) {
            Some(parent) => ControllerProblem::NotDelegated {
                parent: parent.to_path_buf(),
            },
            None => ControllerProblem::NotEnabled,
        });
    }
    writable(dir)?;
    let subtree = dir.join("cgroup.subtree_control");
    if read_list(&subtree)?.iter().any(|c| c == name) {
        Ok(())
    } else {
        writable(&subtree)
    }
}

fn read_list(path: &Path) -> Result<Vec<String>, ControllerProblem> {
    std::fs::read_to_string(path)
        .map(|text| text.split_whitespace().map(str::to_owned).collect())
        .map_err(|error| ControllerProblem::Unreadable {
            path: path.to_path_buf(),
            errno: error.raw_os_error().unwrap_or(0),
        })
}

fn writable(path: &Path) -> Result<(), ControllerProblem> {
    nix::unistd::access(path, AccessFlags::W_OK).map_err(|errno| ControllerProblem::NotWritable {
        path: path.to_path_buf(),
        errno: errno as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup tree in a temporary directory, with a mountinfo text pointing at it.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.dir.path().join(relative)
        }

        fn file(&self, relative: &str, content: &str) {
            let path = self.path(relative);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        }

        fn mkdir(&self, relative: &str) {
            std::fs::create_dir_all(self.path(relative)).expect("mkdir");
        }

        /// A mountinfo line for `fs_type` with `options` mounted at `relative`.
        fn mount(&self, root: &str, relative: &str, fs_type: &str, options: &str) -> String {
            format!(
                "41 31 0:38 {root} {} rw,relatime - {fs_type} {fs_type} {options}\n",
                self.path(relative).display()
            )
        }
    }

    #[test]
    fn v2_delegated_cgroup() {
        let fake = Fake::new();
        fake.file("cgroup.controllers", "cpuset cpu io memory pids\n");
        fake.file("nexus.service/cgroup.controllers", "cpu memory\n");
        fake.file("nexus.service/cgroup.subtree_control", "memory\n");
        fake.file("nexus.service/cgroup.freeze", "0\n");
        let mountinfo = fake.mount("/", "", "cgroup2", "rw,nsdelegate");
        let report = probe_from(&mountinfo, "0::/nexus.service\n");

        assert_eq!(report.version, CgroupVersion::V2);
        assert_eq!(report.v2_mount, Some(fake.path("")));
        let memory = report.controller(Controller::Memory);
        assert!(memory.usable(), "{memory:?}");
        assert_eq!(memory.hierarchy, Some(Hierarchy::V2));
        assert_eq!(memory.cgroup, Some(fake.path("nexus.service")));
        assert!(
            report.controller(Controller::Cpu).usable(),
            "subtree_control is writable"
        );
        assert!(report.controller(Controller::Freezer).usable());
        let pids = report.controller(Controller::Pids);
        assert_eq!(
            pids.problem,
            Some(ControllerProblem::NotDelegated {
                parent: fake.path("")
            })
        );
        let fix = pids
            .problem
            .as_ref()
            .expect("a problem")
            .fix(Controller::Pids);
        assert!(fix.contains("Delegate=yes"), "{fix}");
        let subtree = fake.dir.path().join("cgroup.subtree_control");
        assert!(
            fix.ends_with(&format!("echo +pids > {}", subtree.display())),
            "{fix}"
        );
    }

    #[test]
    fn v2_root_cgroup() {
        let fake = Fake::new();
        fake.file("cgroup.controllers", "cpu pids\n");
        fake.file("cgroup.subtree_control", "cpu\n");
        let mountinfo = fake.mount("/", "", "cgroup2", "rw");

        let report = probe_from(&mountinfo, "0::/\n");
        assert_eq!(
            report.controller(Controller::Memory).problem,
            Some(ControllerProblem::NotEnabled)
        );
        assert!(report.controller(Controller::Pids).usable());
        assert_eq!(
            report.controller(Controller::Freezer).problem,
            Some(ControllerProblem::FreezeUnsupported),
            "the root has no cgroup.freeze and no child shows one"
        );

        fake.file("init.scope/cgroup.freeze", "0\n");
        let report = probe_from(&mountinfo, "0::/\n");
        assert!(report.controller(Controller::Freezer).usable());
    }

    #[test]
    fn hybrid_prefers_v1_hierarchies() {
        let fake = Fake::new();
        fake.mkdir("memory/process_api/x");
        fake.mkdir("cpu,cpuacct");
        fake.mkdir("pids");
        fake.file("unified/cgroup.controllers", "");
        fake.file("unified/cgroup.subtree_control", "");
        let mountinfo = [
            fake.mount("/", "cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
            fake.mount("/", "memory", "cgroup", "rw,memory"),
            fake.mount("/", "pids", "cgroup", "rw,pids"),
            fake.mount("/", "systemd", "cgroup", "rw,xattr,name=systemd"),
            fake.mount("/", "unified", "cgroup2", "rw"),
        ]
        .concat();
        let own = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/x\n1:cpu,cpuacct:/\n0::/\n";
        let report = probe_from(&mountinfo, own);

        assert_eq!(report.version, CgroupVersion::Hybrid);
        assert_eq!(report.v2_mount, Some(fake.path("unified")));
        let memory = report.controller(Controller::Memory);
        assert!(memory.usable(), "{memory:?}");
        assert_eq!(memory.hierarchy, Some(Hierarchy::V1));
        assert_eq!(memory.cgroup, Some(fake.path("memory/process_api/x")));
        let cpu = report
            .controller(Controller::Cpu)
            .cgroup
            .clone()
            .expect("located");
        assert_eq!(cpu.as_os_str(), fake.path("cpu,cpuacct").as_os_str());
        let pids = report
            .controller(Controller::Pids)
            .cgroup
            .clone()
            .expect("located");
        assert!(
            !pids.to_string_lossy().ends_with('/'),
            "no trailing slash: {pids:?}"
        );
        assert!(report.controller(Controller::Pids).usable());
        // No v1 freezer: it falls to cgroup2, whose root has neither freeze nor children.
        let freezer = report.controller(Controller::Freezer);
        assert_eq!(freezer.hierarchy, Some(Hierarchy::V2));
        assert_eq!(freezer.problem, Some(ControllerProblem::FreezeUnsupported));
    }

    #[test]
    fn v1_accounting_hierarchies_are_located() {
        let fake = Fake::new();
        fake.mkdir("cpuacct");
        fake.mkdir("blkio/x");
        let mountinfo = [
            fake.mount("/", "cpu", "cgroup", "rw,cpu"),
            fake.mount("/", "cpuacct", "cgroup", "rw,cpuacct"),
            fake.mount("/", "blkio", "cgroup", "rw,blkio"),
            fake.mount("/", "unified", "cgroup2", "rw"),
        ]
        .concat();
        let own = "7:blkio:/x
2:cpuacct:/
1:cpu:/
0::/
";
        assert_eq!(
            v1_cgroup_from(&mountinfo, own, "cpuacct"),
            Some(fake.path("cpuacct"))
        );
        assert_eq!(
            v1_cgroup_from(&mountinfo, own, "blkio"),
            Some(fake.path("blkio/x"))
        );
        assert_eq!(v1_cgroup_from(&mountinfo, own, "hugetlb"), None);
        assert_eq!(v1_cgroup_from(&mountinfo, "0::/\n", "cpuacct"), None);
    }

    #[test]
    fn v2_cgroup_is_located_on_v2_and_hybrid_hosts() {
        let fake = Fake::new();
        fake.mkdir("unified/nexus.service");
        fake.mkdir("pids");
        let hybrid = [
            fake.mount("/", "pids", "cgroup", "rw,pids"),
            fake.mount("/", "unified", "cgroup2", "rw"),
        ]
        .concat();
        let own = "8:pids:/\n0::/nexus.service\n";
        assert_eq!(
            v2_cgroup_from(&hybrid, own),
            Some(fake.path("unified/nexus.service"))
        );
        assert_eq!(
            v2_cgroup_from(&hybrid, "8:pids:/\n0::/\n"),
            Some(fake.path("unified")),
            "the root of cgroup2 holds processes too"
        );
        assert_eq!(v2_cgroup_from(&hybrid, "0::/gone.scope\n"), None);
        let v1_only = fake.mount("/", "pids", "cgroup", "rw,pids");
        assert_eq!(v2_cgroup_from(&v1_only, own), None);
    }

    #[test]
    fn v1_with_bind_mounted_subtrees() {
        let fake = Fake::new();
        fake.mkdir("memory");
        let mountinfo = fake.mount("/docker/abc", "memory", "cgroup", "rw,memory");

        // Without a cgroup namespace the path includes the subtree the mount shows.
        let report = probe_from(&mountinfo, "4:memory:/docker/abc\n");
        assert_eq!(report.version, CgroupVersion::V1);
        assert_eq!(report.v2_mount, None);
        let memory = report.controller(Controller::Memory);
        assert!(memory.usable(), "{memory:?}");
        assert_eq!(memory.cgroup, Some(fake.path("memory")));
        // Inside a cgroup namespace the same cgroup is "/".
        let report = probe_from(&mountinfo, "4:memory:/\n");
        assert_eq!(
            report.controller(Controller::Memory).cgroup,
            Some(fake.path("memory"))
        );
        // No pids hierarchy and no cgroup2 to fall back to.
        let pids = report.controller(Controller::Pids);
        assert_eq!(pids.problem, Some(ControllerProblem::NotMounted));
        assert_eq!(pids.hierarchy, None);
    }

    #[test]
    fn own_cgroup_outside_the_mount_is_reported() {
        let fake = Fake::new();
        fake.file("cgroup.controllers", "memory\n");
        let mountinfo = fake.mount("/", "", "cgroup2", "rw");
        let report = probe_from(&mountinfo, "0::/gone.scope\n");
        assert_eq!(
            report.controller(Controller::Memory).problem,
            Some(ControllerProblem::OwnCgroupUnknown)
        );
    }

    #[test]
    fn nothing_mounted() {
        let report = probe_from("28 1 254:1 / / rw - ext4 /dev/vda1 rw\n", "0::/\n");
        assert_eq!(report.version, CgroupVersion::NotMounted);
        assert_eq!(report.controllers.len(), Controller::ALL.len());
        for state in &report.controllers {
            assert_eq!(state.problem, Some(ControllerProblem::NotMounted));
        }
    }
}
