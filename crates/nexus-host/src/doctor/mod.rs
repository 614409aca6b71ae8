//! `doctor`: runs every probe and reports what this host can enforce, as a table in the
//! format of the Nexus setup notes (seed 003, "Self-Check"): a title, a `─` rule of 50
//! characters, one `✓`/`✗`/`─` line per check with the name padded to 26 columns, the
//! rule again and a summary line. `--json` output comes from the `Serialize` impl.

mod checks;
mod render;

use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::{cgroups, filesystems, kvm, landlock, seccomp, tools, userns};

/// Every check, in report order. The names are stable: scripts match on them.
pub const CHECK_NAMES: [&str; 16] = [
    "bwrap",
    "bwrap_functional",
    "user_namespaces",
    "cgroups",
    "cgroup_memory",
    "cgroup_pids",
    "cgroup_cpu",
    "cgroup_freezer",
    "seccomp",
    "landlock",
    "overlayfs",
    "btrfs",
    "kvm",
    "qemu",
    "mmdebstrap",
    "network_egress",
];

/// The driver new sandboxes get by default; it decides which checks are required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultDriver {
    /// Namespaces through bubblewrap: needs bwrap, user namespaces and seccomp.
    #[default]
    Bwrap,
    /// No isolation: needs nothing.
    Host,
}

/// What to check against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// Decides which checks are required.
    pub default_driver: DefaultDriver,
    /// The bubblewrap binary: a bare name is looked up on `PATH`.
    pub bwrap_path: PathBuf,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Works (`✓`).
    Pass,
    /// Present but broken, or missing where it matters (`✗`); always carries a fix.
    Fail,
    /// Optional and absent (`─`); may carry a hint in `fix`.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable snake_case name, one of [`CHECK_NAMES`].
    pub name: String,
    /// The outcome.
    pub status: CheckStatus,
    /// What was found (a version, a path, a reason), on one line.
    pub detail: String,
    /// How to fix a failure, or how to get an optional feature.
    pub fix: Option<String>,
    /// Whether the default driver needs this check to pass.
    pub required: bool,
}

/// All checks, in [`CHECK_NAMES`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    /// The driver the `required` flags were computed for.
    pub default_driver: DefaultDriver,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            default_driver: DefaultDriver::Bwrap,
            bwrap_path: PathBuf::from("bwrap"),
        }
    }
}

impl DefaultDriver {
    /// The checks this driver cannot work without.
    pub fn requires(self, check: &str) -> bool {
        match self {
            DefaultDriver::Bwrap => matches!(
                check,
                "bwrap" | "bwrap_functional" | "user_namespaces" | "seccomp"
            ),
            DefaultDriver::Host => false,
        }
    }

    /// Its name in configuration and JSON (`bwrap`, `host`).
    pub fn name(self) -> &'static str {
        match self {
            DefaultDriver::Bwrap => "bwrap",
            DefaultDriver::Host => "host",
        }
    }
}

impl DoctorReport {
    /// True when no required check failed.
    pub fn ok(&self) -> bool {
        self.failed(true).next().is_none()
    }

    /// The check called `name`, if the report has it.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.name == name)
    }

    /// The report as a table for a terminal; `color` adds ANSI colours to the marks
    /// (callers decide from `NO_COLOR` and whether stdout is a terminal).
    pub fn render(&self, color: bool) -> String {
        render::render(self, color)
    }

    /// Failed checks that are (or are not) required.
    fn failed(&self, required: bool) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(move |c| c.status == CheckStatus::Fail && c.required == required)
    }
}

/// `{"ok":…,"default_driver":"bwrap","checks":[…]}`.
impl Serialize for DoctorReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            ok: bool,
            default_driver: DefaultDriver,
            checks: &'a [Check],
        }
        Json {
            ok: self.ok(),
            default_driver: self.default_driver,
            checks: &self.checks,
        }
        .serialize(serializer)
    }
}

/// Runs every check. The probes that start programs run concurrently, each with a
/// deadline of [`tools::DEFAULT_TIMEOUT`], so the doctor never hangs.
pub fn run(options: &DoctorOptions) -> DoctorReport {
    let timeout = tools::DEFAULT_TIMEOUT;
    let bwrap = options.bwrap_path.as_path();
    let qemu = tools::qemu_program();
    let mut checks = std::thread::scope(|scope| {
        let version = scope.spawn(|| tools::version(bwrap, &["--version"], timeout));
        let smoke = scope.spawn(|| crate::bwrap::smoke_test(bwrap, timeout));
        let qemu_version =
            scope.spawn(|| tools::version(Path::new(&qemu), &["--version"], timeout));
        let mmdebstrap =
            scope.spawn(|| tools::version(Path::new("mmdebstrap"), &["--version"], timeout));

        // The in-process probes take microseconds: run them while the programs run.
        let packages = checks::PackageManager::detect();
        let privileged = nix::unistd::geteuid().is_root();
        let userns = userns::probe();
        let cgroups = cgroups::probe();
        let seccomp = seccomp::probe();
        let landlock = landlock::abi_version();
        let filesystems = filesystems::Filesystems::read();
        let mkfs_btrfs = tools::find_program(Path::new("mkfs.btrfs"));
        let kvm = kvm::probe();
        let egress = checks::EgressProbe::run(privileged);

        let join = "probe threads only call functions that do not panic";
        let mut checks = vec![
            checks::bwrap(version.join().expect(join), bwrap, packages),
            checks::bwrap_functional(smoke.join().expect(join), packages),
            checks::user_namespaces(&userns, privileged),
        ];
        checks.extend(checks::cgroups(&cgroups));
        checks.push(checks::seccomp(&seccomp));
        checks.push(checks::landlock(landlock));
        checks.extend(checks::filesystems(&filesystems, mkfs_btrfs.as_deref()));
        checks.push(checks::kvm(kvm));
        checks.push(checks::optional_tool(
            "qemu",
            qemu_version.join().expect(join),
            "needed for microvm sandboxes",
            packages.install(checks::Package::Qemu),
        ));
        checks.push(checks::optional_tool(
            "mmdebstrap",
            mmdebstrap.join().expect(join),
            "needed for hermetic images",
            packages.install(checks::Package::Mmdebstrap),
        ));
        checks.push(checks::network_egress(&egress));
        checks
    });
    for check in &mut checks {
        check.required = options.default_driver.requires(&check.name);
    }
    DoctorReport {
        default_driver: options.default_driver,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: CheckStatus, required: bool) -> Check {
        Check {
            name: name.to_owned(),
            status,
            detail: String::new(),
            fix: None,
            required,
        }
    }

    #[test]
    fn ok_ignores_failures_that_are_not_required() {
        let mut report = DoctorReport {
            default_driver: DefaultDriver::Bwrap,
            checks: vec![
                check("bwrap", CheckStatus::Pass, true),
                check("kvm", CheckStatus::Fail, false),
                check("qemu", CheckStatus::Skip, false),
            ],
        };
        assert!(report.ok());
        report.checks[0].status = CheckStatus::Fail;
        assert!(!report.ok());
        assert_eq!(
            report.check("kvm").map(|c| c.status),
            Some(CheckStatus::Fail)
        );
        assert!(report.check("nope").is_none());
    }

    #[test]
    fn required_checks_follow_the_driver() {
        let bwrap: Vec<_> = CHECK_NAMES
            .into_iter()
            .filter(|name| DefaultDriver::Bwrap.requires(name))
            .collect();
        assert_eq!(
            bwrap,
            ["bwrap", "bwrap_functional", "user_namespaces", "seccomp"]
        );
        assert!(
            !CHECK_NAMES
                .iter()
                .any(|name| DefaultDriver::Host.requires(name))
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let report = DoctorReport {
            default_driver: DefaultDriver::Bwrap,
            checks: vec![
                Check {
                    fix: Some("sudo apt-get install -y bubblewrap".to_owned()),
                    detail: "bwrap not found on PATH".to_owned(),
                    ..check("bwrap", CheckStatus::Fail, true)
                },
                check("kvm", CheckStatus::Skip, false),
            ],
        };
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "ok": false,
                "default_driver": "bwrap",
                "checks": [
                    {
                        "name": "bwrap",
                        "status": "fail",
                        "detail": "bwrap not found on PATH",
                        "fix": "sudo apt-get install -y bubblewrap",
                        "required": true
                    },
                    { "name": "kvm", "status": "skip", "detail": "", "fix": null, "required": false }
                ]
            })
        );
        let host = serde_json::to_value(DefaultDriver::Host).expect("serializes");
        assert_eq!(host, "host");
        assert_eq!(DefaultDriver::Host.name(), "host");
    }

    #[test]
    fn defaults_use_bwrap_from_path() {
        let options = DoctorOptions::default();
        assert_eq!(options.default_driver, DefaultDriver::Bwrap);
        assert_eq!(options.bwrap_path, PathBuf::from("bwrap"));
    }
}
