//! User namespace probe: may user namespaces be created here (bubblewrap needs them)?
//!
//! Reads the sysctls that restrict them; the fixes follow the Nexus setup notes
//! (seed 003, "User namespaces" and "AppArmor restriction").

use std::fmt;
use std::path::Path;

use serde::Serialize;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsernsReport {
    /// `user.max_user_namespaces`, when readable.
    pub max_user_namespaces: Option<u64>,
    /// Everything that blocks user namespaces; empty when nothing does.
    pub problems: Vec<UsernsProblem>,
}

/// One thing that blocks user namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsernsProblem {
    /// The kernel was built without `CONFIG_USER_NS`.
    NotSupported,
    /// `user.max_user_namespaces` is 0: nobody, root included, may create one.
    LimitZero,
    /// Debian's `kernel.unprivileged_userns_clone` is 0: only privileged callers may.
    UnprivilegedCloneDisabled,
    /// Ubuntu's `kernel.apparmor_restrict_unprivileged_userns` is 1.
    AppArmorRestricted,
}

impl UsernsReport {
    /// Whether a process with (`privileged`) or without `CAP_SYS_ADMIN` may create one.
    pub fn allowed(&self, privileged: bool) -> bool {
        self.problems
            .iter()
            .all(|problem| privileged && !problem.affects_privileged())
    }
}

impl UsernsProblem {
    /// Whether the restriction also applies to root.
    pub fn affects_privileged(self) -> bool {
        matches!(self, UsernsProblem::NotSupported | UsernsProblem::LimitZero)
    }

    /// The commands that lift the restriction (persistently).
    pub fn fix(self) -> &'static str {
        match self {
            UsernsProblem::NotSupported => "use a kernel built with CONFIG_USER_NS=y",
            UsernsProblem::LimitZero => {
                "sudo sysctl user.max_user_namespaces=15000 && \
                 echo 'user.max_user_namespaces=15000' | sudo tee /etc/sysctl.d/99-userns.conf"
            }
            UsernsProblem::UnprivilegedCloneDisabled => {
                "sudo sysctl kernel.unprivileged_userns_clone=1 && \
                 echo 'kernel.unprivileged_userns_clone=1' | sudo tee /etc/sysctl.d/99-userns.conf"
            }
            UsernsProblem::AppArmorRestricted => {
                "sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0 && \
                 echo 'kernel.apparmor_restrict_unprivileged_userns=0' | \
                 sudo tee /etc/sysctl.d/99-bwrap-userns.conf"
            }
        }
    }
}

impl fmt::Display for UsernsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsernsProblem::NotSupported => "the kernel has no user namespaces",
            UsernsProblem::LimitZero => "user.max_user_namespaces is 0",
            UsernsProblem::UnprivilegedCloneDisabled => "kernel.unprivileged_userns_clone is 0",
            UsernsProblem::AppArmorRestricted => {
                "kernel.apparmor_restrict_unprivileged_userns is 1"
            }
        })
    }
}

/// Probes `/proc`.
pub fn probe() -> UsernsReport {
    probe_in(Path::new("/proc"))
}

/// Probes a `/proc`-shaped tree. A missing sysctl restricts nothing (it is distro-specific).
fn probe_in(proc_root: &Path) -> UsernsReport {
    let read = |relative: &str| -> Option<u64> {
        std::fs::read_to_string(proc_root.join(relative))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let max_user_namespaces = read("sys/user/max_user_namespaces");
    let mut problems = Vec::new();
    if !proc_root.join("self/ns/user").exists() {
        problems.push(UsernsProblem::NotSupported);
    }
    if max_user_namespaces == Some(0) {
        problems.push(UsernsProblem::LimitZero);
    }
    if read("sys/kernel/unprivileged_userns_clone") == Some(0) {
        problems.push(UsernsProblem::UnprivilegedCloneDisabled);
    }
    if read("sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        problems.push(UsernsProblem::AppArmorRestricted);
    }
    UsernsReport {
        max_user_namespaces,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (relative, content) in files {
            let path = dir.path().join(relative);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        }
        dir
    }

    #[test]
    fn permissive_host() {
        let proc_root = fake_proc(&[
            ("self/ns/user", ""),
            ("sys/user/max_user_namespaces", "63229\n"),
            ("sys/kernel/unprivileged_userns_clone", "1\n"),
            ("sys/kernel/apparmor_restrict_unprivileged_userns", "0\n"),
        ]);
        let report = probe_in(proc_root.path());
        assert_eq!(report.max_user_namespaces, Some(63229));
        assert!(report.problems.is_empty());
        assert!(report.allowed(false));
    }

    #[test]
    fn ubuntu_apparmor_restriction_blocks_only_unprivileged_callers() {
        let proc_root = fake_proc(&[
            ("self/ns/user", ""),
            ("sys/user/max_user_namespaces", "63229\n"),
            ("sys/kernel/apparmor_restrict_unprivileged_userns", "1\n"),
        ]);
        let report = probe_in(proc_root.path());
        assert_eq!(report.problems, vec![UsernsProblem::AppArmorRestricted]);
        assert!(!report.allowed(false));
        assert!(report.allowed(true));
        assert!(
            UsernsProblem::AppArmorRestricted
                .fix()
                .contains("99-bwrap-userns.conf")
        );
    }

    #[test]
    fn every_restriction_is_listed() {
        let proc_root = fake_proc(&[
            ("sys/user/max_user_namespaces", "0\n"),
            ("sys/kernel/unprivileged_userns_clone", "0\n"),
        ]);
        let report = probe_in(proc_root.path());
        assert_eq!(
            report.problems,
            vec![
                UsernsProblem::NotSupported,
                UsernsProblem::LimitZero,
                UsernsProblem::UnprivilegedCloneDisabled
            ]
        );
        assert!(!report.allowed(true), "a zero limit binds root too");
        assert_eq!(
            UsernsProblem::UnprivilegedCloneDisabled.to_string(),
            "kernel.unprivileged_userns_clone is 0"
        );
    }
}
