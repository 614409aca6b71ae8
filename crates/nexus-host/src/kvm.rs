//! KVM probe: is `/dev/kvm` present, openable read-write, and speaking the stable API?

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use serde::Serialize;

/// The KVM device node.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// The only API version Linux has ever returned since 2.6.22 (`KVM_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;

/// `_IO(KVMIO, 0x00)` from `<linux/kvm.h>`.
const KVM_GET_API_VERSION: libc::Ioctl = 0xAE00;

/// Why KVM cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KvmProblem {
    /// The device node does not exist.
    Missing,
    /// The node exists but cannot be opened read-write.
    Open {
        /// The `errno` of `open`.
        errno: i32,
    },
    /// `KVM_GET_API_VERSION` failed (the node is not a KVM device).
    Ioctl {
        /// The `errno` of `ioctl`.
        errno: i32,
    },
    /// The kernel speaks another API version.
    ApiVersion {
        /// What it returned.
        version: i32,
    },
}

impl KvmProblem {
    /// How to make KVM usable.
    pub fn fix(self) -> &'static str {
        match self {
            KvmProblem::Missing => {
                "enable virtualization (VT-x/AMD-V) in the firmware and load the module: \
                 modprobe kvm_intel (or kvm_amd); in a VM, enable nested virtualization"
            }
            KvmProblem::Open { errno } if errno == libc::EACCES => {
                "add the daemon's user to the kvm group: usermod -aG kvm $USER (then log in again)"
            }
            KvmProblem::Open { .. } | KvmProblem::Ioctl { .. } => {
                "check that /dev/kvm is the KVM device (char 10:232) and the kvm module is loaded"
            }
            KvmProblem::ApiVersion { .. } => "use a mainline Linux kernel",
        }
    }
}

impl fmt::Display for KvmProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmProblem::Missing => write!(f, "{KVM_DEVICE} not present"),
            KvmProblem::Open { errno } => {
                write!(
                    f,
                    "cannot open {KVM_DEVICE}: {}",
                    Errno::from_raw(*errno).desc()
                )
            }
            KvmProblem::Ioctl { errno } => {
                write!(
                    f,
                    "KVM_GET_API_VERSION failed: {}",
                    Errno::from_raw(*errno).desc()
                )
            }
            KvmProblem::ApiVersion { version } => {
                write!(f, "API version {version}, expected {KVM_API_VERSION}")
            }
        }
    }
}

/// Probes [`KVM_DEVICE`] and returns its API version.
pub fn probe() -> Result<i32, KvmProblem> {
    probe_device(Path::new(KVM_DEVICE))
}

/// Probes a device node that should be KVM.
pub fn probe_device(path: &Path) -> Result<i32, KvmProblem> {
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => KvmProblem::Missing,
            _ => KvmProblem::Open {
                errno: error.raw_os_error().unwrap_or(0),
            },
        })?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is
    // open for the duration of the call. On a non-KVM file the ioctl fails with ENOTTY.
    let version = unsafe { libc::ioctl(device.as_raw_fd(), KVM_GET_API_VERSION) };
    if version < 0 {
        return Err(KvmProblem::Ioctl {
            errno: Errno::last() as i32,
        });
    }
    if version != KVM_API_VERSION {
        return Err(KvmProblem::ApiVersion { version });
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_node() {
        assert_eq!(
            probe_device(Path::new("/nonexistent/kvm")),
            Err(KvmProblem::Missing)
        );
    }

    #[test]
    fn a_device_that_is_not_kvm_fails_the_ioctl() {
        assert_eq!(
            probe_device(Path::new("/dev/null")),
            Err(KvmProblem::Ioctl {
                errno: libc::ENOTTY
            })
        );
    }

    #[test]
    fn permission_errors_suggest_the_kvm_group() {
        let problem = KvmProblem::Open {
            errno: libc::EACCES,
        };
        assert_eq!(
            problem.to_string(),
            "cannot open /dev/kvm: Permission denied"
        );
        assert!(problem.fix().contains("usermod -aG kvm"));
    }
}
