//! Renaming a running sandbox: a short-lived thread of the daemon joins the sandbox's UTS
//! namespace and sets the host name there. Joining needs `CAP_SYS_ADMIN` over the
//! namespace and in the daemon's own user namespace, so only a root daemon can; a
//! sandbox taken from the warm pool is renamed this way.

use std::fs::File;

use nix::sched::CloneFlags;

use super::SandboxProcess;

/// Why a sandbox could not be renamed.
#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    /// The name is not a host name.
    #[error("invalid hostname {0:?}: use 1-63 letters, digits and '-', not starting with '-'")]
    Invalid(String),
    /// The sandbox's PID 1 is gone.
    #[error("the sandbox is not running")]
    NotRunning,
    /// Only a root daemon may enter a sandbox's namespaces.
    #[error("renaming a running sandbox needs nexusd running as root")]
    NotRoot,
    /// A call failed.
    #[error("cannot {step}")]
    Failed {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Sets the host name of the sandbox whose PID 1 is `process`'s.
pub fn set_hostname(process: &SandboxProcess, hostname: &str) -> Result<(), HostnameError> {
    let valid = !hostname.is_empty()
        && hostname.len() <= 63
        && !hostname.starts_with('-')
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(HostnameError::Invalid(hostname.to_owned()));
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err(HostnameError::NotRoot);
    }
    let uts = File::open(format!("/proc/{}/ns/uts", process.init_pid))
        .map_err(|_| HostnameError::NotRunning)?;
    // Checked after the open: a pid reused in between has another start time.
    if !process.is_alive() {
        return Err(HostnameError::NotRunning);
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&uts, CloneFlags::CLONE_NEWUTS).map_err(|errno| {
                    HostnameError::Failed {
                        step: "enter the sandbox's UTS namespace",
                        source: errno.into(),
                    }
                })?;
                // The thread ends here, and its membership of the namespace with it.
                nix::unistd::sethostname(hostname).map_err(|errno| HostnameError::Failed {
                    step: "set the host name",
                    source: errno.into(),
                })
            })
            .join()
            .unwrap_or_else(|_| {
                Err(HostnameError::Failed {
                    step: "set the host name",
                    source: std::io::Error::other("the renaming thread panicked"),
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_anything_is_touched() {
        let nobody = SandboxProcess {
            bwrap_pid: 0,
            bwrap_start: 0,
            init_pid: 0,
            init_start: 0,
        };
        for name in ["", "-x", "a.b", "a b", &"x".repeat(64)] {
            assert!(
                matches!(set_hostname(&nobody, name), Err(HostnameError::Invalid(_))),
                "{name:?}"
            );
        }
    }
}
