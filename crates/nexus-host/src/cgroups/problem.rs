//! Why a cgroup controller is unusable, and what to do about it.

use std::fmt;
use std::path::PathBuf;

use nix::errno::Errno;
use serde::Serialize;

use super::Controller;

/// Why a controller is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControllerProblem {
    /// No mounted hierarchy carries the controller.
    NotMounted,
    /// The cgroup2 root does not offer it (kernel config or `cgroup_disable=` at boot).
    NotEnabled,
    /// cgroup v2: the parent cgroup does not delegate it to ours.
    NotDelegated {
        /// The parent whose `cgroup.subtree_control` lacks it.
        parent: PathBuf,
    },
    /// cgroup v2 has no `cgroup.freeze` (Linux older than 5.2).
    FreezeUnsupported,
    /// This process's cgroup could not be located under the mount.
    OwnCgroupUnknown,
    /// A cgroup file or directory could not be read.
    Unreadable {
        /// The path.
        path: PathBuf,
        /// `errno` of the failure.
        errno: i32,
    },
    /// Our cgroup (or its `cgroup.subtree_control`) is not writable by this process.
    NotWritable {
        /// The path.
        path: PathBuf,
        /// `errno` of `access(W_OK)`.
        errno: i32,
    },
}

impl ControllerProblem {
    /// A command or setting that would remove the problem.
    pub fn fix(&self, controller: Controller) -> String {
        let name = controller.name();
        match self {
            ControllerProblem::NotMounted => format!(
                "mount cgroup2: sudo mount -t cgroup2 none /sys/fs/cgroup (on a cgroup v1 host: \
                 sudo mkdir -p /sys/fs/cgroup/{name} && sudo mount -t cgroup -o {name} cgroup /sys/fs/cgroup/{name})"
            ),
            ControllerProblem::NotEnabled => format!(
                "the kernel offers no {name} controller: remove cgroup_disable={name} from the \
                 kernel command line (some boards need cgroup_enable={name})"
            ),
            ControllerProblem::NotDelegated { parent } => format!(
                "run nexusd as a systemd service with Delegate=yes, or: echo +{name} > {}",
                parent.join("cgroup.subtree_control").display()
            ),
            ControllerProblem::FreezeUnsupported => {
                "pausing sandboxes on cgroup v2 needs Linux 5.2 or later".to_owned()
            }
            ControllerProblem::OwnCgroupUnknown => "mount the cgroup hierarchy of this cgroup \
                namespace at /sys/fs/cgroup (compare /proc/self/cgroup and /proc/self/mountinfo)"
                .to_owned(),
            ControllerProblem::Unreadable { path, .. } => {
                format!("check the permissions of {}", path.display())
            }
            ControllerProblem::NotWritable { errno, .. } if *errno == Errno::EROFS as i32 => {
                "the cgroup filesystem is mounted read-only: remount it read-write (in a \
                 container, give it a private, writable cgroup namespace)"
                    .to_owned()
            }
            ControllerProblem::NotWritable { .. } => "run nexusd as root, or as a systemd \
                service with Delegate=yes so its cgroup belongs to its user"
                .to_owned(),
        }
    }
}

impl fmt::Display for ControllerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControllerProblem::NotMounted => f.write_str("no cgroup hierarchy carries it"),
            ControllerProblem::NotEnabled => f.write_str("not offered by the cgroup2 root"),
            ControllerProblem::NotDelegated { parent } => {
                write!(f, "not delegated by {}", parent.display())
            }
            ControllerProblem::FreezeUnsupported => f.write_str("cgroup.freeze is missing"),
            ControllerProblem::OwnCgroupUnknown => {
                f.write_str("this process's cgroup is not under the mount")
            }
            ControllerProblem::Unreadable { path, errno } => {
                write!(
                    f,
                    "cannot read {}: {}",
                    path.display(),
                    Errno::from_raw(*errno).desc()
                )
            }
            ControllerProblem::NotWritable { path, errno } => write!(
                f,
                "{} is not writable: {}",
                path.display(),
                Errno::from_raw(*errno).desc()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_errors_get_a_remount_fix() {
        let problem = ControllerProblem::NotWritable {
            path: "/sys/fs/cgroup/x".into(),
            errno: Errno::EROFS as i32,
        };
        assert_eq!(
            problem.to_string(),
            "/sys/fs/cgroup/x is not writable: Read-only file system"
        );
        assert!(problem.fix(Controller::Memory).contains("read-only"));
    }

    #[test]
    fn delegation_fix_names_the_parent_subtree_control() {
        let problem = ControllerProblem::NotDelegated {
            parent: "/sys/fs/cgroup/system.slice".into(),
        };
        assert_eq!(
            problem.to_string(),
            "not delegated by /sys/fs/cgroup/system.slice"
        );
        assert!(
            problem
                .fix(Controller::Pids)
                .ends_with("echo +pids > /sys/fs/cgroup/system.slice/cgroup.subtree_control")
        );
    }
}
