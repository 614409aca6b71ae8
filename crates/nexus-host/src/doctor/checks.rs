//! Turning probe results into doctor checks: status, one-line detail and fix.

use std::path::{Path, PathBuf};

use super::{Check, CheckStatus};
use crate::cgroups::{CgroupReport, CgroupVersion, Controller};
use crate::filesystems::{self, Filesystems};
use crate::kvm::KvmProblem;
use crate::landlock::LandlockProblem;
use crate::seccomp::{SeccompProblem, SeccompReport};
use crate::tools::{ToolError, ToolVersion};
use crate::userns::UsernsReport;
use crate::{ProbeError, error_chain};

/// The host's package manager, for install hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PackageManager {
    Apt,
    Dnf,
    Pacman,
    Zypper,
    Apk,
    Unknown,
}

/// Packages the hints name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Package {
    Bubblewrap,
    Qemu,
    Mmdebstrap,
}

impl PackageManager {
    /// The first package manager found on `PATH`.
    pub fn detect() -> Self {
        [
            ("apt-get", PackageManager::Apt),
            ("dnf", PackageManager::Dnf),
            ("pacman", PackageManager::Pacman),
            ("zypper", PackageManager::Zypper),
            ("apk", PackageManager::Apk),
        ]
        .into_iter()
        .find(|(program, _)| crate::tools::find_program(Path::new(program)).is_some())
        .map_or(PackageManager::Unknown, |(_, manager)| manager)
    }

    /// The command that installs `package`.
    pub fn install(self, package: Package) -> String {
        let name = match (package, self) {
            (Package::Bubblewrap, _) => "bubblewrap".to_owned(),
            (Package::Mmdebstrap, _) => "mmdebstrap".to_owned(),
            (Package::Qemu, PackageManager::Apt) => match std::env::consts::ARCH {
                "aarch64" | "arm" => "qemu-system-arm".to_owned(),
                "powerpc64" => "qemu-system-ppc".to_owned(),
                "s390x" => "qemu-system-s390x".to_owned(),
                "riscv64" => "qemu-system-misc".to_owned(),
                _ => "qemu-system-x86".to_owned(),
            },
            (Package::Qemu, PackageManager::Dnf) => "qemu-kvm".to_owned(),
            (Package::Qemu, PackageManager::Pacman) => "qemu-base".to_owned(),
            (Package::Qemu, PackageManager::Apk) => crate::tools::qemu_program(),
            (Package::Qemu, _) => "qemu".to_owned(),
        };
        match self {
            PackageManager::Apt => format!("sudo apt-get install -y {name}"),
            PackageManager::Dnf => format!("sudo dnf install -y {name}"),
            PackageManager::Pacman => format!("sudo pacman -S {name}"),
            PackageManager::Zypper => format!("sudo zypper install {name}"),
            PackageManager::Apk => format!("sudo apk add {name}"),
            PackageManager::Unknown => format!("install the {name} package"),
        }
    }
}

pub(super) fn bwrap(
    result: Result<ToolVersion, ToolError>,
    asked: &Path,
    packages: PackageManager,
) -> Check {
    match result {
        Ok(found) => pass(
            "bwrap",
            format!("{} ({})", found.version, found.path.display()),
        ),
        Err(ToolError::NotFound { .. }) => fail(
            "bwrap",
            not_found(asked),
            format!(
                "{} (or set the bwrap path to the binary)",
                packages.install(Package::Bubblewrap)
            ),
        ),
        Err(error) => fail(
            "bwrap",
            error_chain(&error),
            format!(
                "reinstall bubblewrap: {}",
                packages.install(Package::Bubblewrap)
            ),
        ),
    }
}

pub(super) fn bwrap_functional(
    result: Result<PathBuf, ToolError>,
    packages: PackageManager,
) -> Check {
    match result {
        Ok(_) => pass(
            "bwrap_functional",
            "sandbox with user, pid and network namespaces ran".to_owned(),
        ),
        Err(error @ ToolError::NotFound { .. }) => fail(
            "bwrap_functional",
            format!("not run: {}", error_chain(&error)),
            packages.install(Package::Bubblewrap),
        ),
        Err(error) => fail(
            "bwrap_functional",
            error_chain(&error),
            crate::bwrap::smoke_test_fix(&error),
        ),
    }
}

pub(super) fn user_namespaces(report: &UsernsReport, privileged: bool) -> Check {
    let name = "user_namespaces";
    let blocking: Vec<_> = report
        .problems
        .iter()
        .filter(|problem| !privileged || problem.affects_privileged())
        .collect();
    if blocking.is_empty() {
        let mut detail = "enabled".to_owned();
        if !report.problems.is_empty() {
            let restrictions = join(report.problems.iter().map(ToString::to_string));
            detail = format!("enabled for root only ({restrictions})");
        }
        return pass(name, detail);
    }
    fail(
        name,
        join(blocking.iter().map(ToString::to_string)),
        blocking
            .iter()
            .map(|problem| problem.fix())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// `cgroups` and one `cgroup_<controller>` check per controller.
pub(super) fn cgroups(result: &Result<CgroupReport, ProbeError>) -> Vec<Check> {
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let detail = error_chain(error);
            let fix = "mount /proc (cgroups are found through /proc/self/mountinfo)";
            let mut checks = vec![fail("cgroups", detail.clone(), fix.to_owned())];
            checks.extend(Controller::ALL.iter().map(|controller| {
                fail(
                    &controller_check(*controller),
                    detail.clone(),
                    fix.to_owned(),
                )
            }));
            return checks;
        }
    };
    let v2_mount = report
        .v2_mount
        .as_deref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let mut checks = vec![match report.version {
        CgroupVersion::V2 => pass("cgroups", format!("v2 ({v2_mount})")),
        CgroupVersion::V1 => pass("cgroups", "v1".to_owned()),
        CgroupVersion::Hybrid => pass(
            "cgroups",
            format!("hybrid (v1 controllers, cgroup2 at {v2_mount})"),
        ),
        CgroupVersion::NotMounted => fail(
            "cgroups",
            "no cgroup filesystem mounted".to_owned(),
            "sudo mount -t cgroup2 none /sys/fs/cgroup".to_owned(),
        ),
    }];
    for state in &report.controllers {
        let name = controller_check(state.controller);
        let check = match (&state.problem, &state.hierarchy, &state.cgroup) {
            (None, Some(hierarchy), Some(cgroup)) => {
                pass(&name, format!("{hierarchy} {}", cgroup.display()))
            }
            (None, _, _) => pass(&name, "usable".to_owned()),
            (Some(problem), _, _) => {
                let consequence = match state.controller {
                    Controller::Freezer => "pause and resume unavailable",
                    _ => "limits will not be enforced",
                };
                fail(
                    &name,
                    format!("{problem}; {consequence}"),
                    problem.fix(state.controller),
                )
            }
        };
        checks.push(check);
    }
    checks
}

pub(super) fn seccomp(result: &Result<SeccompReport, SeccompProblem>) -> Check {
    match result {
        Ok(report) => {
            let mut detail = "filter mode with kill_process and errno".to_owned();
            if report.current_mode == 2 {
                detail.push_str(" (this process is already filtered)");
            }
            pass("seccomp", detail)
        }
        Err(problem) => fail("seccomp", problem.to_string(), problem.fix().to_owned()),
    }
}

pub(super) fn landlock(result: Result<u32, LandlockProblem>) -> Check {
    match result {
        Ok(abi) => pass("landlock", format!("ABI {abi}")),
        Err(problem) => fail("landlock", problem.to_string(), problem.fix().to_owned()),
    }
}

/// `overlayfs` (expected on every modern kernel: a failure) and `btrfs` (optional).
pub(super) fn filesystems(
    result: &Result<Filesystems, ProbeError>,
    mkfs_btrfs: Option<&Path>,
) -> [Check; 2] {
    let listed = |name: &str| result.as_ref().is_ok_and(|list| list.contains(name));
    let supported = |name: &str| {
        if listed(name) {
            Some("supported".to_owned())
        } else if filesystems::module_available(name) {
            Some("available as a module (loads on first mount)".to_owned())
        } else {
            None
        }
    };
    let absent = match result {
        Ok(_) => "not supported by this kernel".to_owned(),
        Err(error) => error_chain(error),
    };
    let overlay = match supported("overlay") {
        Some(detail) => pass("overlayfs", detail),
        None => fail(
            "overlayfs",
            absent.clone(),
            "sudo modprobe overlay (or use a kernel with CONFIG_OVERLAY_FS)".to_owned(),
        ),
    };
    let btrfs = match supported("btrfs") {
        Some(detail) => {
            let tool = match mkfs_btrfs {
                Some(path) => format!("mkfs.btrfs at {}", path.display()),
                None => "mkfs.btrfs not installed".to_owned(),
            };
            pass("btrfs", format!("{detail}; {tool}"))
        }
        None => skip(
            "btrfs",
            format!("{absent} (optional: copy-on-write workspace snapshots)"),
            "sudo modprobe btrfs".to_owned(),
        ),
    };
    [overlay, btrfs]
}

pub(super) fn kvm(result: Result<i32, KvmProblem>) -> Check {
    match result {
        Ok(version) => pass("kvm", format!("API version {version}")),
        Err(problem @ KvmProblem::Missing) => skip(
            "kvm",
            format!("{problem} (needed for microvm sandboxes)"),
            problem.fix().to_owned(),
        ),
        Err(problem) => fail("kvm", problem.to_string(), problem.fix().to_owned()),
    }
}

/// What a trial network namespace showed about sandboxes' egress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EgressProbe {
    /// Not root: the daemon cannot make sandboxes' namespaces.
    NotRoot,
    /// A namespace was made; whether the capture rules loaded, and why not.
    Made(nexus_net::netns::Capture),
    /// Making a namespace failed.
    Failed(String),
}

impl EgressProbe {
    /// Makes (and drops) a namespace the way a sandbox's is made, when root.
    pub(super) fn run(privileged: bool) -> Self {
        if !privileged {
            return Self::NotRoot;
        }
        match nexus_net::netns::Netns::create() {
            Ok((_netns, capture)) => Self::Made(capture),
            Err(e) => Self::Failed(e.to_string()),
        }
    }
}

/// `network_egress`: whether sandboxes reach the network through the policy proxy with
/// every TCP connection captured, only through the proxy variables, or not at all.
pub(super) fn network_egress(probe: &EgressProbe) -> Check {
    const NAME: &str = "network_egress";
    match probe {
        EgressProbe::Made(capture) if capture.transparent => pass(
            NAME,
            "policy proxy with transparent capture (nftables): no program can bypass it"
                .into(),
        ),
        EgressProbe::Made(capture) => fail(
            NAME,
            capture.detail.clone(),
            "apt-get install -y nftables (and a kernel with nf_tables NAT)".into(),
        ),
        EgressProbe::NotRoot => skip(
            NAME,
            "sandboxes have loopback only: egress needs nexusd running as root (it makes each sandbox's network namespace)".into(),
            "run nexusd as root to give sandboxes policy-controlled network access".into(),
        ),
        EgressProbe::Failed(reason) => fail(
            NAME,
            format!("cannot make a network namespace: {reason}"),
            "check that network namespaces are enabled (CONFIG_NET_NS)".into(),
        ),
    }
}

/// A program that only optional features need: absent is `─`, broken is `✗`.
pub(super) fn optional_tool(
    name: &str,
    result: Result<ToolVersion, ToolError>,
    purpose: &str,
    install: String,
) -> Check {
    match result {
        Ok(found) => pass(
            name,
            format!("{} ({})", found.version, found.path.display()),
        ),
        Err(ToolError::NotFound { .. }) => {
            skip(name, format!("not installed ({purpose})"), install)
        }
        Err(error) => fail(
            name,
            error_chain(&error),
            format!("reinstall it: {install}"),
        ),
    }
}

fn controller_check(controller: Controller) -> String {
    format!("cgroup_{}", controller.name())
}

fn not_found(asked: &Path) -> String {
    if asked.components().count() > 1 || asked.is_absolute() {
        format!("{} not found", asked.display())
    } else {
        format!("{} not found on PATH", asked.display())
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join("; ")
}

fn pass(name: &str, detail: String) -> Check {
    check(name, CheckStatus::Pass, detail, None)
}

fn fail(name: &str, detail: String, fix: String) -> Check {
    check(name, CheckStatus::Fail, detail, Some(fix))
}

fn skip(name: &str, detail: String, hint: String) -> Check {
    check(name, CheckStatus::Skip, detail, Some(hint))
}

fn check(name: &str, status: CheckStatus, detail: String, fix: Option<String>) -> Check {
    Check {
        name: name.to_owned(),
        status,
        detail,
        fix,
        required: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::UsernsProblem;

    #[test]
    fn missing_bwrap_fails_with_an_install_fix() {
        let missing = || ToolError::NotFound {
            program: "bwrap".into(),
        };
        let check = bwrap(Err(missing()), Path::new("bwrap"), PackageManager::Apt);
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(check.detail, "bwrap not found on PATH");
        assert_eq!(
            check.fix.as_deref(),
            Some("sudo apt-get install -y bubblewrap (or set the bwrap path to the binary)")
        );
        let check = bwrap(Err(missing()), Path::new("/opt/bwrap"), PackageManager::Dnf);
        assert_eq!(check.detail, "/opt/bwrap not found");
        let check = bwrap_functional(Err(missing()), PackageManager::Unknown);
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(check.detail, "not run: bwrap not found");
        assert_eq!(check.fix.as_deref(), Some("install the bubblewrap package"));
    }

    #[test]
    fn root_is_not_blocked_by_unprivileged_only_restrictions() {
        let report = UsernsReport {
            max_user_namespaces: Some(100),
            problems: vec![UsernsProblem::AppArmorRestricted],
        };
        let as_root = user_namespaces(&report, true);
        assert_eq!(as_root.status, CheckStatus::Pass);
        assert_eq!(
            as_root.detail,
            "enabled for root only (kernel.apparmor_restrict_unprivileged_userns is 1)"
        );
        let as_user = user_namespaces(&report, false);
        assert_eq!(as_user.status, CheckStatus::Fail);
        assert!(
            as_user
                .fix
                .as_deref()
                .is_some_and(|fix| fix.contains("sysctl"))
        );
    }

    #[test]
    fn absent_optional_tools_are_skipped_and_broken_ones_fail() {
        let check = optional_tool(
            "mmdebstrap",
            Err(ToolError::NotFound {
                program: "mmdebstrap".into(),
            }),
            "needed for hermetic images",
            PackageManager::Apt.install(Package::Mmdebstrap),
        );
        assert_eq!(check.status, CheckStatus::Skip);
        assert_eq!(check.detail, "not installed (needed for hermetic images)");
        assert_eq!(
            check.fix.as_deref(),
            Some("sudo apt-get install -y mmdebstrap")
        );

        let check = optional_tool(
            "qemu",
            Err(ToolError::TimedOut {
                program: "/usr/bin/qemu-system-x86_64".into(),
                timeout: std::time::Duration::from_secs(3),
            }),
            "needed for microvm sandboxes",
            "x".to_owned(),
        );
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.fix.is_some());
    }

    #[test]
    fn network_egress_says_what_sandboxes_fall_back_to() {
        use nexus_net::netns::Capture;
        assert_eq!(
            network_egress(&EgressProbe::NotRoot).status,
            CheckStatus::Skip
        );
        assert!(
            network_egress(&EgressProbe::NotRoot)
                .detail
                .contains("loopback only")
        );
        let made = |transparent| {
            EgressProbe::Made(Capture {
                transparent,
                detail: "transparent capture unavailable (no nft)".into(),
            })
        };
        assert_eq!(network_egress(&made(true)).status, CheckStatus::Pass);
        let partial = network_egress(&made(false));
        assert_eq!(partial.status, CheckStatus::Fail);
        assert!(partial.detail.contains("no nft"), "{partial:?}");
        assert!(
            partial
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("nftables"))
        );
    }

    #[test]
    fn kvm_absent_is_informational_but_unusable_is_a_failure() {
        assert_eq!(kvm(Err(KvmProblem::Missing)).status, CheckStatus::Skip);
        let denied = kvm(Err(KvmProblem::Open {
            errno: libc::EACCES,
        }));
        assert_eq!(denied.status, CheckStatus::Fail);
        assert_eq!(kvm(Ok(12)).detail, "API version 12");
    }

    #[test]
    fn unmounted_cgroups_fail_every_controller_with_a_fix() {
        let report = CgroupReport {
            version: CgroupVersion::NotMounted,
            v2_mount: None,
            controllers: Controller::ALL
                .iter()
                .map(|&controller| crate::cgroups::ControllerState {
                    controller,
                    hierarchy: None,
                    cgroup: None,
                    problem: Some(crate::cgroups::ControllerProblem::NotMounted),
                })
                .collect(),
        };
        let checks = cgroups(&Ok(report));
        let names: Vec<_> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cgroups",
                "cgroup_memory",
                "cgroup_pids",
                "cgroup_cpu",
                "cgroup_freezer"
            ]
        );
        for check in &checks {
            assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
            assert!(check.fix.is_some(), "{check:?}");
        }
        assert!(checks[1].detail.ends_with("limits will not be enforced"));
        assert!(checks[4].detail.ends_with("pause and resume unavailable"));
    }

    #[test]
    fn filesystems_from_a_listing() {
        let list = Filesystems::parse("nodev\toverlay\n\tbtrfs\n");
        let [overlay, btrfs] = filesystems(&Ok(list), None);
        assert_eq!(overlay.status, CheckStatus::Pass);
        assert_eq!(btrfs.status, CheckStatus::Pass);
        assert_eq!(btrfs.detail, "supported; mkfs.btrfs not installed");
        if !filesystems::module_available("overlay") && !filesystems::module_available("btrfs") {
            let [overlay, btrfs] = filesystems(&Ok(Filesystems::parse("nodev\tproc\n")), None);
            assert_eq!(overlay.status, CheckStatus::Fail);
            assert!(
                overlay
                    .fix
                    .as_deref()
                    .is_some_and(|fix| fix.contains("modprobe overlay"))
            );
            assert_eq!(btrfs.status, CheckStatus::Skip);
        }
    }
}
