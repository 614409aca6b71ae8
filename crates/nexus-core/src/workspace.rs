//! Persistent workspaces as the domain sees them: directory trees that outlive
//! sandboxes, their snapshots, and where sandboxes mount them.
//!
//! A workspace's tree has a *generation*: 1 when it is created, and a new, larger number
//! each time the tree is replaced as a whole (a restore from a snapshot). Stores change
//! it only by compare-and-set, so two restores racing each other cannot both win.

use std::collections::BTreeMap;
use std::fmt;

use crate::clock::Timestamp;
use crate::sandbox::{SandboxId, SandboxName};

crate::id::prefixed_id!(
    /// A workspace's stable id, e.g. `ws-3f9a1c0e5b7d2a64`. Generated, never reused.
    WorkspaceId,
    "ws-"
);

/// A workspace's unique name, with the rules of a [`SandboxName`] (a DNS label: 1 to 63
/// lowercase letters, digits and `-`, starting with a letter, not ending with `-`).
///
/// A name shaped like a workspace id (`ws-` and 16 hex digits) is refused, so that
/// "an id or a name" always means one workspace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspaceName(String);

impl WorkspaceName {
    /// Validates a name; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = SandboxName::parse(text)?;
        if WorkspaceId::parse(text).is_some() {
            return Err(format!(
                "name {text:?} would be mistaken for a workspace id; choose another name"
            ));
        }
        Ok(Self(name.as_str().to_owned()))
    }

    /// A generated name such as `workspace-3f9a1c`.
    pub fn generate() -> Self {
        Self(format!(
            "workspace-{:06x}",
            rand::random::<u32>() & 0xff_ffff
        ))
    }

    /// The name of a warm-pool sandbox's workspace until the sandbox is claimed, shaped
    /// like [`SandboxName::placeholder`]: refused by [`WorkspaceName::parse`], so no user
    /// workspace can collide with it, and hidden from every listing.
    pub fn placeholder() -> Self {
        Self(crate::sandbox::placeholder_text())
    }

    /// Whether this is a warm-pool [`placeholder`](Self::placeholder).
    pub fn is_placeholder(&self) -> bool {
        crate::sandbox::is_placeholder(&self.0)
    }

    /// A name as a store recorded it: a user's name or a pool placeholder.
    pub fn parse_stored(text: &str) -> Result<Self, String> {
        if crate::sandbox::is_placeholder(text) {
            return Ok(Self(text.to_owned()));
        }
        Self::parse(text)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

crate::id::prefixed_id!(
    /// A snapshot's stable id, e.g. `snap-3f9a1c0e5b7d2a64`. Generated, never reused.
    SnapshotId,
    "snap-"
);

/// A snapshot's name (its tag), unique within its workspace: 1 to 64 letters, digits,
/// `-`, `_` and `.`, not starting with `.`, and not shaped like a snapshot id.
///
/// When the caller gives none, [`SnapshotName::generate`] names it after the UTC time it
/// was taken, `snap-YYYYMMDD-HHMMSS`; a second snapshot within the same second takes
/// [`SnapshotName::generate_nth`] (`snap-YYYYMMDD-HHMMSS-2`, `-3`, ...) once the store has
/// answered [`StoreError::SnapshotNameTaken`](crate::StoreError::SnapshotNameTaken).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName(String);

impl SnapshotName {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates a name; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(format!(
                "snapshot name {text:?} must be 1 to {} characters long",
                Self::MAX_LEN
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "snapshot name {text:?} may only contain letters, digits, '-', '_' and '.'"
            ));
        }
        if text.starts_with('.') {
            return Err(format!("snapshot name {text:?} must not start with '.'"));
        }
        if SnapshotId::parse(text).is_some() {
            return Err(format!(
                "snapshot name {text:?} would be mistaken for a snapshot id; choose another name"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The name of a snapshot taken at `at`: `snap-YYYYMMDD-HHMMSS`, in UTC.
    pub fn generate(at: Timestamp) -> Self {
        Self(format!("snap-{}", utc_compact(at)))
    }

    /// The `n`th name for a snapshot taken at `at`, for when earlier ones are taken:
    /// `n` of 0 or 1 is [`SnapshotName::generate`], 2 and above append `-n`.
    pub fn generate_nth(at: Timestamp, n: u32) -> Self {
        if n <= 1 {
            Self::generate(at)
        } else {
            Self(format!("snap-{}-{n}", utc_compact(at)))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A persistent directory tree that sandboxes mount: read-write as their `/workspace`,
/// or read-only elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Stable id.
    pub id: WorkspaceId,
    /// Unique name.
    pub name: WorkspaceName,
    /// Generation of the current tree: 1 at creation, larger after each restore.
    pub generation: u64,
    /// Disk quota in MiB; `None` for no quota of its own.
    pub quota_mib: Option<u64>,
    /// Free-form labels for the caller's bookkeeping.
    pub labels: BTreeMap<String, String>,
    /// The sandbox it was made for implicitly, which deletes it along with itself unless
    /// asked to keep it; `None` for a workspace created on its own (or kept).
    pub owner: Option<SandboxId>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed (generation, quota, owner).
    pub updated_at: Timestamp,
}

impl Workspace {
    /// The generation of a workspace's first tree.
    pub const FIRST_GENERATION: u64 = 1;

    /// The largest quota accepted, in MiB (16 TiB).
    pub const MAX_QUOTA_MIB: u64 = 16 * 1024 * 1024;

    /// A new workspace with a fresh id, at the first generation, without quota, labels
    /// or owner.
    pub fn new(name: WorkspaceName, at: Timestamp) -> Self {
        Self {
            id: WorkspaceId::generate(),
            name,
            generation: Self::FIRST_GENERATION,
            quota_mib: None,
            labels: BTreeMap::new(),
            owner: None,
            created_at: at,
            updated_at: at,
        }
    }

    /// Checks a requested quota; the error names the field and the allowed range.
    pub fn validate_quota_mib(quota_mib: u64) -> Result<(), String> {
        if !(1..=Self::MAX_QUOTA_MIB).contains(&quota_mib) {
            return Err(format!(
                "quota_mib must be between 1 and {}, got {quota_mib}",
                Self::MAX_QUOTA_MIB
            ));
        }
        Ok(())
    }
}

/// A frozen copy of a workspace's tree, which the workspace can later be restored to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Stable id.
    pub id: SnapshotId,
    /// The workspace it was taken of.
    pub workspace: WorkspaceId,
    /// Its name, unique within the workspace.
    pub name: SnapshotName,
    /// The generation of the tree it was taken from.
    pub generation: u64,
    /// Bytes it holds on disk, when measured.
    pub size_bytes: Option<u64>,
    /// When it was taken.
    pub created_at: Timestamp,
}

impl Snapshot {
    /// A new snapshot of `workspace`'s current tree, with a fresh id and no size yet.
    pub fn new(workspace: &Workspace, name: SnapshotName, at: Timestamp) -> Self {
        Self {
            id: SnapshotId::generate(),
            workspace: workspace.id.clone(),
            name,
            generation: workspace.generation,
            size_bytes: None,
            created_at: at,
        }
    }
}

/// A workspace mounted into a sandbox at a path other than its `/workspace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceMount {
    /// The workspace mounted.
    pub workspace: WorkspaceId,
    /// Where, inside the sandbox: absolute and normalized, e.g. `/mnt/data`.
    pub path: String,
    /// Whether the sandbox may only read it.
    pub read_only: bool,
}

impl WorkspaceMount {
    /// The most mounts one sandbox may have.
    pub const MAX_PER_SANDBOX: usize = 32;

    /// Checks the mount's path; the error names the field and says what to do.
    pub fn validate(&self) -> Result<(), String> {
        check_mount_path("path", &self.path)
    }

    /// Checks the mounts of one sandbox: each path, and that no two paths are the same
    /// or one inside the other. Errors name the entry, e.g. `mounts[1].path`.
    pub fn validate_all(mounts: &[Self]) -> Result<(), String> {
        if mounts.len() > Self::MAX_PER_SANDBOX {
            return Err(format!(
                "mounts may hold at most {} entries, got {}",
                Self::MAX_PER_SANDBOX,
                mounts.len()
            ));
        }
        for (i, mount) in mounts.iter().enumerate() {
            check_mount_path(&format!("mounts[{i}].path"), &mount.path)?;
            for (j, earlier) in mounts[..i].iter().enumerate() {
                if earlier.path == mount.path {
                    return Err(format!(
                        "mounts[{i}].path {:?} is already used by mounts[{j}]; give each mount its own path",
                        mount.path
                    ));
                }
                let (outer, inner, o, n) = if is_inside(&mount.path, &earlier.path) {
                    (&earlier.path, &mount.path, j, i)
                } else if is_inside(&earlier.path, &mount.path) {
                    (&mount.path, &earlier.path, i, j)
                } else {
                    continue;
                };
                return Err(format!(
                    "mounts[{n}].path {inner:?} is inside mounts[{o}].path {outer:?}; mount them side by side, e.g. under /mnt"
                ));
            }
        }
        Ok(())
    }
}

/// The path every sandbox's own read-write workspace is mounted at.
pub const WORKSPACE_PATH: &str = "/workspace";

/// The top-level directories a mount may not be at or under: the sandbox's kernel file
/// systems live there.
const RESERVED_TOPS: [&str; 3] = ["proc", "sys", "dev"];

/// The longest mount path accepted, in bytes (`PATH_MAX` minus its NUL).
const MAX_PATH_LEN: usize = 4095;

/// Checks one mount path, naming it `field` in the error.
fn check_mount_path(field: &str, path: &str) -> Result<(), String> {
    let fix = "use an absolute, normalized path such as /mnt/data";
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "{field} must be at most {MAX_PATH_LEN} bytes long, got {}",
            path.len()
        ));
    }
    if path.contains('\0') {
        return Err(format!("{field} {path:?} must not contain NUL bytes"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{field} {path:?} is not absolute; {fix}"));
    };
    if rest.is_empty() {
        return Err(format!(
            "{field} \"/\" would hide the sandbox's whole file system; {fix}"
        ));
    }
    for component in rest.split('/') {
        match component {
            "" => {
                return Err(format!(
                    "{field} {path:?} is not normalized (empty component or trailing '/'); {fix}"
                ));
            }
            "." | ".." => {
                return Err(format!(
                    "{field} {path:?} must not contain {component:?} components; {fix}"
                ));
            }
            c if c.len() > 255 => {
                return Err(format!(
                    "{field} {path:?} has a component longer than 255 bytes"
                ));
            }
            _ => {}
        }
    }
    let top = rest.split('/').next().unwrap_or_default();
    if RESERVED_TOPS.contains(&top) {
        return Err(format!(
            "{field} {path:?} is inside /{top}, which belongs to the sandbox's kernel file systems; {fix}"
        ));
    }
    if path == WORKSPACE_PATH {
        return Err(format!(
            "{field} {path:?} is the sandbox's own read-write workspace; choose another path such as /mnt/data"
        ));
    }
    Ok(())
}

/// Whether normalized absolute path `inner` lies strictly below `outer`.
fn is_inside(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `YYYYMMDD-HHMMSS` of a timestamp, in UTC; times before the epoch clamp to it.
fn utc_compact(at: Timestamp) -> String {
    let secs = at.0.max(0) / 1000;
    let (days, in_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (`days >= 0`), after
/// Howard Hinnant's `civil_from_days`. Hand-written: one function does not justify a
/// date-time dependency.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str) -> WorkspaceMount {
        WorkspaceMount {
            workspace: WorkspaceId::generate(),
            path: path.to_owned(),
            read_only: true,
        }
    }

    #[test]
    fn ids_are_unique_and_parse_back() {
        let (a, b) = (WorkspaceId::generate(), WorkspaceId::generate());
        assert_ne!(a, b);
        assert!(
            a.as_str().starts_with("ws-") && a.as_str().len() == 19,
            "{a}"
        );
        assert_eq!(WorkspaceId::parse(a.as_str()), Some(a));
        let s = SnapshotId::generate();
        assert!(
            s.as_str().starts_with("snap-") && s.as_str().len() == 21,
            "{s}"
        );
        assert_eq!(SnapshotId::parse(s.as_str()), Some(s));
        for bad in [
            "ws-",
            "ws-0123456789ABCDEF",
            "ws-0123456789abcdeg",
            "ws-0123456789abcdef0",
            "sb-0123456789abcdef",
            "data",
        ] {
            assert_eq!(WorkspaceId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(SnapshotId::parse("ws-0123456789abcdef"), None);
        assert_eq!(WorkspaceId::parse("snap-0123456789abcdef"), None);
    }

    #[test]
    fn workspace_names_follow_sandbox_name_rules() {
        assert!(WorkspaceName::parse("data-1").is_ok());
        assert!(WorkspaceName::parse(WorkspaceName::generate().as_str()).is_ok());
        for bad in ["", "Data", "1abc", "a_b", "abc-", &"a".repeat(64)] {
            let err = WorkspaceName::parse(bad).expect_err(bad);
            assert!(err.starts_with("name "), "{err}");
        }
        let err = WorkspaceName::parse("ws-0123456789abcdef").expect_err("id-shaped");
        assert!(err.contains("workspace id"), "{err}");
    }

    #[test]
    fn snapshot_names_allow_tags_and_name_the_problem() {
        for good in ["v1", "before-upgrade", "2024.01_rc", "A", &"x".repeat(64)] {
            assert!(SnapshotName::parse(good).is_ok(), "{good:?} refused");
        }
        for (bad, problem) in [
            ("", "1 to 64"),
            (&"x".repeat(65) as &str, "1 to 64"),
            (".hidden", "start with '.'"),
            ("a/b", "may only contain"),
            ("a b", "may only contain"),
            ("snap-0123456789abcdef", "snapshot id"),
        ] {
            let err = SnapshotName::parse(bad).expect_err(bad);
            assert!(
                err.contains("snapshot name") && err.contains(problem),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn generated_snapshot_names_are_utc_times_and_valid() {
        // 2024-02-29 13:05:09.999 UTC.
        let at = Timestamp(1_709_211_909_999);
        assert_eq!(SnapshotName::generate(at).as_str(), "snap-20240229-130509");
        assert_eq!(
            SnapshotName::generate_nth(at, 1),
            SnapshotName::generate(at)
        );
        assert_eq!(
            SnapshotName::generate_nth(at, 3).as_str(),
            "snap-20240229-130509-3"
        );
        assert_eq!(
            SnapshotName::generate(Timestamp(0)).as_str(),
            "snap-19700101-000000"
        );
        assert_eq!(
            SnapshotName::generate(Timestamp(-5)).as_str(),
            "snap-19700101-000000"
        );
        // 2000-12-31 23:59:59 and 2100-03-01 00:00:00 cross leap-year rules.
        assert_eq!(
            SnapshotName::generate(Timestamp(978_307_199_000)).as_str(),
            "snap-20001231-235959"
        );
        assert_eq!(
            SnapshotName::generate(Timestamp(4_107_542_400_000)).as_str(),
            "snap-21000301-000000"
        );
        for at in [Timestamp(0), at, Timestamp(i64::MAX)] {
            let name = SnapshotName::generate_nth(at, u32::MAX);
            assert!(SnapshotName::parse(name.as_str()).is_ok(), "{name}");
        }
    }

    #[test]
    fn new_workspaces_and_snapshots_start_where_documented() {
        let ws = Workspace::new(WorkspaceName::parse("data").expect("name"), Timestamp(7));
        assert_eq!(ws.generation, 1);
        assert_eq!((ws.quota_mib, ws.owner.as_ref()), (None, None));
        assert_eq!((ws.created_at, ws.updated_at), (Timestamp(7), Timestamp(7)));
        let snap = Snapshot::new(&ws, SnapshotName::generate(Timestamp(8)), Timestamp(8));
        assert_eq!((&snap.workspace, snap.generation), (&ws.id, 1));
    }

    #[test]
    fn quotas_name_the_field() {
        assert!(Workspace::validate_quota_mib(1024).is_ok());
        for bad in [0, Workspace::MAX_QUOTA_MIB + 1] {
            let err = Workspace::validate_quota_mib(bad).expect_err("out of range");
            assert!(
                err.contains("quota_mib") && err.contains(&bad.to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn mount_paths_must_be_absolute_normalized_and_unreserved() {
        for good in [
            "/mnt/data",
            "/data",
            "/workspace2",
            "/workspace/ref",
            "/devices",
            "/home/u/x",
        ] {
            mount(good)
                .validate()
                .unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        for (bad, problem) in [
            ("", "not absolute"),
            ("mnt/data", "not absolute"),
            ("/", "whole file system"),
            ("//mnt", "not normalized"),
            ("/mnt//data", "not normalized"),
            ("/mnt/data/", "not normalized"),
            ("/mnt/./data", "\".\" components"),
            ("/mnt/../etc", "\"..\" components"),
            ("/..", "\"..\" components"),
            ("/proc", "inside /proc"),
            ("/proc/1", "inside /proc"),
            ("/sys/fs/cgroup", "inside /sys"),
            ("/dev/shm", "inside /dev"),
            ("/workspace", "own read-write workspace"),
            ("/mnt/a\0b", "NUL"),
        ] {
            let err = mount(bad).validate().expect_err(bad);
            assert!(err.starts_with("path"), "{bad:?}: {err}");
            assert!(err.contains(problem), "{bad:?}: {err}");
        }
        let long = format!("/{}", "a".repeat(256));
        assert!(mount(&long).validate().expect_err("long").contains("255"));
        let longer = "/a".repeat(2048);
        assert!(
            mount(&longer)
                .validate()
                .expect_err("long")
                .contains("4095")
        );
    }

    #[test]
    fn mount_lists_name_the_entry_and_refuse_overlaps() {
        assert!(WorkspaceMount::validate_all(&[]).is_ok());
        assert!(WorkspaceMount::validate_all(&[mount("/mnt/a"), mount("/mnt/ab")]).is_ok());
        let err =
            WorkspaceMount::validate_all(&[mount("/mnt/a"), mount("/proc")]).expect_err("reserved");
        assert!(err.starts_with("mounts[1].path \"/proc\""), "{err}");
        let err = WorkspaceMount::validate_all(&[mount("/mnt/a"), mount("/mnt/a")])
            .expect_err("duplicate");
        assert!(
            err.contains("mounts[1].path") && err.contains("mounts[0]"),
            "{err}"
        );
        let err = WorkspaceMount::validate_all(&[mount("/mnt/a/b"), mount("/mnt/a")])
            .expect_err("nested");
        assert!(
            err.contains("mounts[0].path \"/mnt/a/b\" is inside mounts[1].path \"/mnt/a\""),
            "{err}"
        );
        let many = vec![mount("/mnt/x"); WorkspaceMount::MAX_PER_SANDBOX + 1];
        assert!(
            WorkspaceMount::validate_all(&many)
                .expect_err("many")
                .contains("at most")
        );
    }
}
