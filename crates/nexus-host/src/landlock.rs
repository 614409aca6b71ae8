//! Landlock probe: which ABI version the kernel offers for unprivileged filesystem rules.

use std::fmt;

use nix::errno::Errno;
use serde::Serialize;

/// `LANDLOCK_CREATE_RULESET_VERSION` from `<linux/landlock.h>` (not in the libc crate).
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;

/// Why Landlock cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LandlockProblem {
    /// `ENOSYS`: the kernel predates 5.13 or lacks `CONFIG_SECURITY_LANDLOCK` (or a
    /// seccomp filter around us hides the syscall).
    NotSupported,
    /// `EOPNOTSUPP`: built in but not enabled in the `lsm=` boot parameter.
    Disabled,
    /// Any other failure.
    Failed {
        /// The `errno`.
        errno: i32,
    },
}

impl LandlockProblem {
    /// How to get Landlock.
    pub fn fix(self) -> &'static str {
        match self {
            LandlockProblem::NotSupported => {
                "use Linux 5.13 or later built with CONFIG_SECURITY_LANDLOCK=y"
            }
            LandlockProblem::Disabled => {
                "add landlock to the lsm= kernel parameter, e.g. \
                 lsm=landlock,lockdown,yama,integrity,apparmor,bpf, and reboot"
            }
            LandlockProblem::Failed { .. } => "check the kernel log (dmesg) for Landlock errors",
        }
    }
}

impl fmt::Display for LandlockProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LandlockProblem::NotSupported => f.write_str("not supported by this kernel"),
            LandlockProblem::Disabled => f.write_str("supported but disabled at boot"),
            LandlockProblem::Failed { errno } => write!(
                f,
                "landlock_create_ruleset failed: {}",
                Errno::from_raw(*errno).desc()
            ),
        }
    }
}

/// The Landlock ABI version (1 for Linux 5.13, growing with each kernel feature set).
pub fn abi_version() -> Result<u32, LandlockProblem> {
    // SAFETY: with LANDLOCK_CREATE_RULESET_VERSION the attribute pointer must be NULL and
    // the size 0; the kernel then only returns the ABI version and creates no ruleset.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc >= 0 {
        return u32::try_from(rc).map_err(|_| LandlockProblem::Failed { errno: 0 });
    }
    Err(match Errno::last() {
        Errno::ENOSYS => LandlockProblem::NotSupported,
        Errno::EOPNOTSUPP => LandlockProblem::Disabled,
        errno => LandlockProblem::Failed {
            errno: errno as i32,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_version_or_a_reason() {
        match abi_version() {
            Ok(abi) => assert!(abi >= 1, "ABI versions start at 1"),
            Err(problem) => assert!(!problem.fix().is_empty()),
        }
    }

    #[test]
    fn the_version_matches_the_kernel_listing() {
        // Since Linux 5.13 /sys/kernel/security/lsm lists enabled LSMs (when securityfs is
        // mounted): if it names landlock, the syscall must answer with a version.
        let Ok(lsm) = std::fs::read_to_string("/sys/kernel/security/lsm") else {
            return;
        };
        if lsm.split(',').any(|name| name.trim() == "landlock") {
            assert!(abi_version().is_ok());
        } else {
            assert!(abi_version().is_err());
        }
    }

    #[test]
    fn disabled_points_at_the_boot_parameter() {
        assert!(LandlockProblem::Disabled.fix().contains("lsm="));
        assert_eq!(
            LandlockProblem::Failed { errno: libc::EPERM }.to_string(),
            "landlock_create_ruleset failed: Operation not permitted"
        );
    }
}
