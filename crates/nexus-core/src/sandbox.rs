//! Sandboxes as the domain sees them: identity, the requested shape, and the state
//! machine every lifecycle change goes through.

use std::collections::BTreeMap;
use std::fmt;

use crate::clock::Timestamp;
use crate::workspace::{WorkspaceId, WorkspaceMount};

crate::id::prefixed_id!(
    /// A sandbox's stable id, e.g. `sb-3f9a1c0e5b7d2a64`. Generated, never reused.
    SandboxId,
    "sb-"
);

/// A sandbox's unique, human-chosen (or generated) name: 1 to 63 characters of
/// lowercase letters, digits and `-`, starting with a letter, not ending with `-`
/// (a DNS label, so it can become a hostname).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxName(String);

impl SandboxName {
    /// Validates a name; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok_chars = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if text.is_empty() || text.len() > 63 {
            return Err(format!("name {text:?} must be 1 to 63 characters long"));
        }
        if !ok_chars {
            return Err(format!(
                "name {text:?} may only contain lowercase letters, digits and '-'"
            ));
        }
        if !text.as_bytes()[0].is_ascii_lowercase() {
            return Err(format!("name {text:?} must start with a lowercase letter"));
        }
        if text.ends_with('-') {
            return Err(format!("name {text:?} must not end with '-'"));
        }
        Ok(Self(text.to_owned()))
    }

    /// A generated name such as `sandbox-3f9a1c`.
    pub fn generate() -> Self {
        Self(format!("sandbox-{:06x}", random_u64() & 0xff_ffff))
    }

    /// The name of a sandbox waiting in the warm pool, e.g. `0pool-3f9a1c0e5b7d2a64`.
    /// It starts with a digit, so [`SandboxName::parse`] refuses it and no user's name can
    /// ever collide with it, yet it is a valid host name (the driver names the sandbox's
    /// host after it until the sandbox is claimed and renamed). See `service::pool`.
    pub fn placeholder() -> Self {
        Self(placeholder_text())
    }

    /// Whether this is a warm-pool [`placeholder`](Self::placeholder).
    pub fn is_placeholder(&self) -> bool {
        is_placeholder(&self.0)
    }

    /// A name as a store recorded it: a user's name or a pool placeholder.
    pub fn parse_stored(text: &str) -> Result<Self, String> {
        if is_placeholder(text) {
            return Ok(Self(text.to_owned()));
        }
        Self::parse(text)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a sandbox is in its life.
///
/// ```text
/// created → starting → running → stopping → stopped
///              │        ↑   ↓        ↑   │         │
///              │        paused ──────┘   │         │
///              └──────────┴─────────────┴→ crashed ┘ (start again from stopped or crashed)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    /// Recorded, nothing started yet.
    Created,
    /// The driver is bringing it up.
    Starting,
    /// Its agent answers; commands can run.
    Running,
    /// Every process is frozen (freezer cgroup); nothing runs until it is resumed.
    Paused,
    /// Its processes are being terminated.
    Stopping,
    /// Nothing runs; the workspace is kept.
    Stopped,
    /// It died without being asked to; the reason is recorded.
    Crashed,
}

impl SandboxState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 7] = [
        Self::Created,
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::Stopping,
        Self::Stopped,
        Self::Crashed,
    ];

    /// Whether the state machine allows going from `self` to `next`.
    pub fn can_become(self, next: Self) -> bool {
        use SandboxState::*;
        matches!(
            (self, next),
            (Created | Stopped | Crashed, Starting)
                | (Starting, Running)
                | (Running, Paused)
                | (Paused, Running)
                | (Starting | Running | Paused, Stopping)
                | (Stopping, Stopped)
                | (Starting | Running | Paused | Stopping, Crashed)
        )
    }

    /// The state's wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
        }
    }

    /// Parses a wire or database name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a sandbox is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// Linux namespaces through bubblewrap, seccomp, no capabilities, cgroup limits.
    Bwrap,
    /// No isolation at all: a plain process tree. Refused unless the config allows it.
    Host,
}

impl DriverKind {
    /// The driver's wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bwrap => "bwrap",
            Self::Host => "host",
        }
    }

    /// Parses a wire or database name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Bwrap, Self::Host]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resource limits requested for a sandbox. `None` means "no limit of this kind".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory (RAM, no swap) in MiB.
    pub memory_mib: Option<u64>,
    /// CPU quota in cores, e.g. `0.5` or `2`.
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
    /// Size of the private `/tmp` in MiB.
    pub tmp_mib: Option<u64>,
}

/// The bounds a limit must stay within, checked before anything is created.
impl Limits {
    /// Checks each limit; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = self.memory_mib
            && !(16..=1_048_576).contains(&m)
        {
            return Err(format!(
                "limits.memory_mib must be between 16 and 1048576, got {m}"
            ));
        }
        if let Some(c) = self.cpus
            && !(c.is_finite() && (0.01..=1024.0).contains(&c))
        {
            return Err(format!(
                "limits.cpus must be between 0.01 and 1024, got {c}"
            ));
        }
        if let Some(p) = self.pids
            && !(8..=1_000_000).contains(&p)
        {
            return Err(format!(
                "limits.pids must be between 8 and 1000000, got {p}"
            ));
        }
        if let Some(t) = self.tmp_mib
            && !(1..=1_048_576).contains(&t)
        {
            return Err(format!(
                "limits.tmp_mib must be between 1 and 1048576, got {t}"
            ));
        }
        Ok(())
    }
}

/// What a caller asks for when creating a sandbox, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    /// Unique name.
    pub name: SandboxName,
    /// Image the root filesystem comes from (`host` is built in).
    pub image: String,
    /// Isolation backend.
    pub driver: DriverKind,
    /// Environment of every process started in it.
    pub env: BTreeMap<String, String>,
    /// Free-form labels for the caller's bookkeeping.
    pub labels: BTreeMap<String, String>,
    /// Resource limits.
    pub limits: Limits,
    /// Seconds after start when the sandbox is stopped; `None` for never.
    pub ttl_seconds: Option<u64>,
    /// The workspace mounted read-write at `/workspace`. `None` only for sandboxes
    /// recorded before workspaces existed, which keep their private directory.
    pub workspace: Option<WorkspaceId>,
    /// Further workspaces mounted elsewhere, in order.
    pub mounts: Vec<WorkspaceMount>,
    /// What the sandbox may reach on the network (validated: it parses).
    pub network: nexus_net::policy::PolicySpec,
}

/// A sandbox as stored: its spec, where it is in life, and what the driver needs to
/// find it again after a daemon restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// Stable id.
    pub id: SandboxId,
    /// What was asked for.
    pub spec: SandboxSpec,
    /// Current state.
    pub state: SandboxState,
    /// Why it crashed, when it did.
    pub crash_reason: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its state last changed.
    pub updated_at: Timestamp,
    /// When it last became running.
    pub started_at: Option<Timestamp>,
    /// Driver-private handle (pids, uid, cgroup, socket path), opaque JSON.
    pub runtime: Option<String>,
}

fn random_u64() -> u64 {
    rand::random()
}

/// How every warm-pool placeholder name starts (sandboxes and workspaces alike).
const PLACEHOLDER_PREFIX: &str = "0pool-";

/// Whether `text` is a warm-pool placeholder: [`PLACEHOLDER_PREFIX`] and 16 hex digits.
pub(crate) fn is_placeholder(text: &str) -> bool {
    crate::id::is_prefixed_hex(text, PLACEHOLDER_PREFIX)
}

/// A fresh placeholder text, for sandbox and workspace names.
pub(crate) fn placeholder_text() -> String {
    format!("{PLACEHOLDER_PREFIX}{:016x}", random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_parse_back() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(SandboxId::parse(a.as_str()), Some(a));
        assert_eq!(SandboxId::parse("sb-XYZ"), None);
        assert_eq!(SandboxId::parse("web"), None);
    }

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(SandboxName::parse("web-1").is_ok());
        assert!(SandboxName::parse(SandboxName::generate().as_str()).is_ok());
        for bad in ["", "Web", "1abc", "a_b", "abc-", &"a".repeat(64)] {
            assert!(SandboxName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pool_placeholders_are_stored_names_no_user_can_choose() {
        let placeholder = SandboxName::placeholder();
        assert!(placeholder.is_placeholder());
        assert!(SandboxName::parse(placeholder.as_str()).is_err());
        assert_eq!(
            SandboxName::parse_stored(placeholder.as_str()),
            Ok(placeholder.clone())
        );
        assert!(SandboxName::parse_stored("web").is_ok_and(|n| !n.is_placeholder()));
        assert!(SandboxName::parse_stored("0pool-nothex").is_err());
        // A host name: letters, digits and '-', at most 63.
        assert!(placeholder.as_str().len() <= 63);
        assert!(
            placeholder
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        );
    }

    #[test]
    fn the_state_machine_allows_only_the_documented_moves() {
        use SandboxState::*;
        let allowed = [
            (Created, Starting),
            (Stopped, Starting),
            (Crashed, Starting),
            (Starting, Running),
            (Starting, Stopping),
            (Running, Stopping),
            (Running, Paused),
            (Paused, Running),
            (Paused, Stopping),
            (Paused, Crashed),
            (Stopping, Stopped),
            (Starting, Crashed),
            (Running, Crashed),
            (Stopping, Crashed),
        ];
        for from in SandboxState::ALL {
            for to in SandboxState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn states_and_drivers_round_trip_their_names() {
        for s in SandboxState::ALL {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
        }
        assert_eq!(DriverKind::parse("bwrap"), Some(DriverKind::Bwrap));
        assert_eq!(DriverKind::parse("vm"), None);
    }

    #[test]
    fn limits_name_the_bad_field() {
        assert!(Limits::default().validate().is_ok());
        let err = Limits {
            memory_mib: Some(1),
            ..Limits::default()
        }
        .validate()
        .expect_err("too small");
        assert!(err.contains("limits.memory_mib"), "{err}");
        let err = Limits {
            cpus: Some(f64::NAN),
            ..Limits::default()
        }
        .validate()
        .expect_err("nan");
        assert!(err.contains("limits.cpus"), "{err}");
        let err = Limits {
            pids: Some(2),
            ..Limits::default()
        }
        .validate()
        .expect_err("pids");
        assert!(err.contains("limits.pids"), "{err}");
    }
}
