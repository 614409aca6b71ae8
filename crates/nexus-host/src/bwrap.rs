//! Proof that bubblewrap works here: start a real (tiny) sandbox and see it exit cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::tools::{self, ToolError};

/// Arguments of the smoke test: new user, pid, net, ipc, uts and cgroup namespaces over
/// a read-only view of `/`, running `true`.
///
/// `--unshare-user` is explicit because `--unshare-all` only *tries* a user namespace,
/// and as root bubblewrap would skip it: the test must prove that user namespaces work.
pub const SMOKE_TEST_ARGS: &[&str] = &[
    "--unshare-all",
    "--unshare-user",
    "--die-with-parent",
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "true",
];

/// Runs `bwrap SMOKE_TEST_ARGS` and returns where `bwrap` was found when the sandboxed
/// `true` exited with 0. On failure, [`ToolError::Failed`] carries bwrap's stderr.
pub fn smoke_test(bwrap: &Path, timeout: Duration) -> Result<PathBuf, ToolError> {
    let path = tools::find_program(bwrap).ok_or_else(|| ToolError::NotFound {
        program: bwrap.to_path_buf(),
    })?;
    let mut command = Command::new(&path);
    command.args(SMOKE_TEST_ARGS);
    let output = tools::run_with_timeout(command, timeout)?;
    if output.status.success() {
        Ok(path)
    } else {
        Err(tools::failed(&path, &output))
    }
}

/// A likely remedy for a failed smoke test, judged from bwrap's stderr.
pub fn smoke_test_fix(error: &ToolError) -> String {
    match error {
        ToolError::NotFound { .. } => {
            "install bubblewrap, or point the bwrap path at the binary".to_owned()
        }
        ToolError::Failed { stderr, .. }
            if stderr.contains("uid map")
                || stderr.contains("RTM_NEWADDR")
                || stderr.contains("No permissions to create new namespace")
                || stderr.contains("Operation not permitted") =>
        {
            "user namespaces are blocked: sysctl kernel.unprivileged_userns_clone=1 \
             kernel.apparmor_restrict_unprivileged_userns=0 (see user_namespaces)"
                .to_owned()
        }
        ToolError::TimedOut { .. } => {
            "bwrap hung: check that /proc and /dev can be mounted in a new namespace".to_owned()
        }
        _ => "run the command by hand to see why: bwrap ".to_owned() + &SMOKE_TEST_ARGS.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bwrap(dir: &Path, script: &str) -> PathBuf {
        let path = dir.join("bwrap");
        crate::test_support::write_script(&path, script);
        path
    }

    #[test]
    fn passes_the_namespace_flags_and_reports_success() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("args");
        let bwrap = fake_bwrap(dir.path(), &format!("echo \"$@\" > {}", log.display()));
        assert_eq!(
            smoke_test(&bwrap, tools::DEFAULT_TIMEOUT).expect("ok"),
            bwrap
        );
        let args = std::fs::read_to_string(&log).expect("the fake ran");
        assert_eq!(args.trim(), SMOKE_TEST_ARGS.join(" "));
        // What the check claims to prove: user, pid and network namespaces.
        for flag in ["--unshare-all", "--unshare-user"] {
            assert!(SMOKE_TEST_ARGS.contains(&flag), "{flag} missing");
        }
    }

    #[test]
    fn failure_carries_stderr_and_a_userns_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bwrap = fake_bwrap(
            dir.path(),
            "echo 'bwrap: setting up uid map: Permission denied' >&2; exit 1",
        );
        let error = smoke_test(&bwrap, tools::DEFAULT_TIMEOUT).expect_err("exit 1");
        assert!(
            error
                .to_string()
                .ends_with("bwrap: setting up uid map: Permission denied"),
            "{error}"
        );
        assert!(smoke_test_fix(&error).contains("unprivileged_userns_clone"));
    }

    #[test]
    fn missing_bwrap_is_not_found() {
        let error = smoke_test(Path::new("/nonexistent/bwrap"), tools::DEFAULT_TIMEOUT)
            .expect_err("missing");
        assert!(matches!(error, ToolError::NotFound { .. }));
        assert!(smoke_test_fix(&error).contains("install bubblewrap"));
    }
}
