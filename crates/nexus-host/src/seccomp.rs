//! Seccomp probe: can sandboxes get a syscall filter with the actions Nexus uses?

use std::fmt;

use nix::errno::Errno;
use serde::Serialize;

/// The filter return actions the sandbox policy relies on, by their `actions_avail` name.
const REQUIRED_ACTIONS: &[(&str, u32)] = &[
    ("kill_process", libc::SECCOMP_RET_KILL_PROCESS),
    ("errno", libc::SECCOMP_RET_ERRNO),
];

/// What the probe found when filters are available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompReport {
    /// This process's own mode: 0 none, 1 strict, 2 filtered (e.g. inside a container).
    pub current_mode: u32,
    /// Actions listed in `/proc/sys/kernel/seccomp/actions_avail` (empty if unreadable).
    pub actions: Vec<String>,
}

/// Why seccomp filters cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SeccompProblem {
    /// `prctl(PR_GET_SECCOMP)` fails or `/proc/self/status` has no `Seccomp:` field:
    /// the kernel lacks `CONFIG_SECCOMP`.
    NotSupported,
    /// Seccomp exists but filter mode does not (`CONFIG_SECCOMP_FILTER`, Linux 4.14+).
    FilterUnsupported,
    /// Filters work but some actions Nexus uses are missing.
    MissingActions {
        /// Their `actions_avail` names.
        actions: Vec<String>,
    },
}

impl SeccompProblem {
    /// How to get a kernel that has what is missing.
    pub fn fix(&self) -> &'static str {
        match self {
            SeccompProblem::NotSupported | SeccompProblem::FilterUnsupported => {
                "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y"
            }
            SeccompProblem::MissingActions { .. } => {
                "use Linux 4.14 or later (SECCOMP_RET_KILL_PROCESS)"
            }
        }
    }
}

impl fmt::Display for SeccompProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeccompProblem::NotSupported => f.write_str("the kernel has no seccomp"),
            SeccompProblem::FilterUnsupported => f.write_str("seccomp filter mode is unavailable"),
            SeccompProblem::MissingActions { actions } => {
                write!(f, "filter actions unavailable: {}", actions.join(", "))
            }
        }
    }
}

/// Probes the running kernel.
pub fn probe() -> Result<SeccompReport, SeccompProblem> {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments; it only returns this thread's
    // mode (or fails with EINVAL without CONFIG_SECCOMP).
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let current_mode = u32::try_from(mode).map_err(|_| SeccompProblem::NotSupported)?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if parse_status_mode(&status).is_none() {
        return Err(SeccompProblem::NotSupported);
    }
    let listed = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").ok();
    let actions = listed.as_deref().map(parse_actions).unwrap_or_default();

    let mut missing = Vec::new();
    for &(name, action) in REQUIRED_ACTIONS {
        match action_available(action) {
            Ok(true) => {}
            Ok(false) => missing.push(name.to_owned()),
            // The query itself is unavailable (old kernel, or a filter in our way):
            // fall back to the sysctl, which exists only with filter support.
            Err(_) if listed.is_none() => return Err(SeccompProblem::FilterUnsupported),
            Err(_) if !actions.iter().any(|a| a == name) => missing.push(name.to_owned()),
            Err(_) => {}
        }
    }
    if missing.is_empty() {
        Ok(SeccompReport {
            current_mode,
            actions,
        })
    } else {
        Err(SeccompProblem::MissingActions { actions: missing })
    }
}

/// `seccomp(SECCOMP_GET_ACTION_AVAIL)`: `Ok(false)` when the kernel says the action is
/// unsupported, `Err` when it cannot answer.
fn action_available(action: u32) -> Result<bool, Errno> {
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 through the pointer, which points
    // at a live local for the whole call; nothing is installed or changed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    match rc {
        0 => Ok(true),
        _ => match Errno::last() {
            Errno::EOPNOTSUPP => Ok(false),
            errno => Err(errno),
        },
    }
}

/// The `Seccomp:` field of `/proc/<pid>/status`.
fn parse_status_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .and_then(|value| value.trim().parse().ok())
}

/// The names in `actions_avail`, e.g. `kill_process kill_thread trap errno ...`.
fn parse_actions(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_field() {
        let status = "Name:\tcat\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(parse_status_mode(status), Some(2));
        assert_eq!(parse_status_mode("Name:\tcat\n"), None);
    }

    #[test]
    fn parses_available_actions() {
        assert_eq!(
            parse_actions("kill_process kill_thread trap errno user_notif trace log allow\n"),
            [
                "kill_process",
                "kill_thread",
                "trap",
                "errno",
                "user_notif",
                "trace",
                "log",
                "allow"
            ]
        );
    }

    #[test]
    fn the_kernel_answers_action_queries() {
        // Every kernel with the query (4.14+) knows SECCOMP_RET_ALLOW; none knows 0x12340000.
        if let Ok(known) = action_available(libc::SECCOMP_RET_ALLOW) {
            assert!(known);
            assert_eq!(action_available(0x1234_0000), Ok(false));
        }
    }

    #[test]
    fn problems_explain_themselves() {
        let problem = SeccompProblem::MissingActions {
            actions: vec!["kill_process".into()],
        };
        assert_eq!(
            problem.to_string(),
            "filter actions unavailable: kill_process"
        );
        assert!(problem.fix().contains("4.14"));
    }
}
