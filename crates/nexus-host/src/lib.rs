//! Probes of what this Linux host can enforce, and the `doctor` report built from them.
//!
//! Each probe module answers one question without changing the host (no cgroup is
//! created, no module loaded) and returns a structured answer with a reason when the
//! answer is "no", so the same probes can back both `nexusctl doctor` and the isolation
//! report of each sandbox:
//!
//! - [`cgroups`]: v1, v2 or hybrid, and whether memory, pids, cpu and freezer are usable;
//! - [`userns`]: whether user namespaces may be created;
//! - [`seccomp`]: whether seccomp filters with the actions Nexus needs are available;
//! - [`landlock`]: the Landlock ABI version;
//! - [`filesystems`]: the filesystems the kernel knows (overlay, btrfs);
//! - [`kvm`]: whether `/dev/kvm` is usable;
//! - [`tools`]: finding programs and asking their version, with a timeout;
//! - [`bwrap`]: whether bubblewrap can really start a sandbox.
//!
//! [`doctor::run`] runs them all and renders the table.

pub mod bwrap;
pub mod cgroups;
pub mod doctor;
pub mod filesystems;
pub mod kvm;
pub mod landlock;
pub mod seccomp;
pub mod tools;
pub mod userns;

use std::path::PathBuf;

pub use doctor::{Check, CheckStatus, DefaultDriver, DoctorOptions, DoctorReport};
pub use tools::ToolError;

/// A probe could not read what it needed from the host.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A file under `/proc` or `/sys` could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: impl Into<PathBuf>) -> Result<String, ProbeError> {
    let path = path.into();
    std::fs::read_to_string(&path).map_err(|source| ProbeError::Read { path, source })
}

/// Formats an error with all its causes: `outer: inner: innermost`.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;
    use std::process::Command;

    /// Writes an executable `#!/bin/sh` script through a child process.
    ///
    /// Writing it from the test process would race with other test threads that fork:
    /// a child inheriting the open write descriptor makes `exec` of the script fail with
    /// ETXTBSY ("Text file busy") until that child execs.
    pub fn write_script(path: &Path, body: &str) {
        let status = Command::new("sh")
            .args([
                "-c",
                r#"printf '#!/bin/sh\n%s\n' "$1" > "$2" && chmod 755 "$2""#,
            ])
            .args(["sh", body])
            .arg(path)
            .status()
            .expect("sh runs");
        assert!(status.success(), "cannot write {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_every_cause() {
        let error = read_file("/nonexistent/nexus-probe").expect_err("the file does not exist");
        assert_eq!(
            error_chain(&error),
            "cannot read /nonexistent/nexus-probe: No such file or directory (os error 2)"
        );
    }
}
