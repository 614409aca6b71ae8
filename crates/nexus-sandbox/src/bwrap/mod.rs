//! The bubblewrap command line of a sandbox, built purely from a [`BwrapSpec`].
//!
//! # The filesystem a sandbox sees
//!
//! The root is bwrap's own tmpfs, remounted read-only once everything is in place. Each
//! top-level entry of the image is bound read-only onto it (symlinks such as `/bin ->
//! usr/bin` recreated), because a read-only bind of the whole image at `/` would leave
//! no way to create `/workspace`. On top:
//! - `/proc` fresh for the new pid namespace, `/dev` minimal (read-only, with a
//!   size-limited `/dev/shm`), `/tmp` a size-limited tmpfs;
//! - `/run` an empty read-only tmpfs (container-engine and D-Bus sockets live under the
//!   host's), holding only the agent at [`AGENT_PATH`];
//! - the [`ShadowDir`]s the read-only binds need (see [`mounts`]);
//! - the masks ([`Mask`]): secrets replaced by empty read-only directories or by
//!   `/dev/null`, mounted *before* the workspace and the read-only binds, because those
//!   live in a masked data directory and must show on top of the masks;
//! - the workspace, read-write at [`WORKSPACE_DIR`];
//! - the trees of other workspaces ([`ReadOnlyBind`]), read-only, after the workspace so
//!   that a target under `/workspace` shows on top of it;
//! - last, the read-only remounts of the shadows, `/run` and `/` (not recursive: the
//!   binds keep their own flags).
//!
//! With a [`BwrapSpec::tree`] (a root daemon), the launcher has already assembled the
//! root tmpfs, the image's entries, the masks and `/run` with the agent ([`plan_tree`]),
//! and bwrap binds that tree read-only at `/` instead; the rest is the same, except that
//! shadows take their entries from the tree, masks included, and that `/dev` is the
//! tree's too.
//!
//! # Namespaces and privileges
//!
//! New user (uid/gid [`SANDBOX_UID`] inside, no further user namespaces:
//! `--disable-userns`), pid, network (loopback only), IPC, UTS and cgroup namespaces;
//! every capability dropped; a new session (no `TIOCSTI` into the daemon's terminal);
//! the seccomp program of [`crate::seccomp`]; bwrap sets `no_new_privs` itself. This
//! follows the untrusted profile of the deployment guide
//! (`shared/seeds/003_4600213d8d1cfe0c.txt`: `--unshare-net`, `--new-session`,
//! `--cap-drop ALL`, read-only root, workspace at `/workspace`) with one deliberate
//! difference: no `--die-with-parent`. A sandbox must survive a restart of `nexusd`,
//! even `kill -9`, and be adopted again; with that flag the kernel would kill it the
//! moment the daemon's thread that spawned bwrap exits. Stopping is explicit instead
//! (see [`crate::launch`]).
//!
//! `--as-pid-1` makes the command itself PID 1 of the sandbox, so the agent is init:
//! it reaps orphans, and when it dies the kernel kills everything else in the sandbox.
//! bwrap loads the seccomp program as its very last step before exec'ing the command,
//! so the filter (which refuses namespace creation and mounts) never hinders bwrap's
//! own setup, with or without `--as-pid-1`.
//!
//! bwrap runs unprivileged here (the launcher drops to the sandbox's host uid first), and
//! an unprivileged bwrap gives the command no capabilities at all; `--cap-drop ALL` only
//! matters if bwrap were ever started privileged, and is kept so that it never does.

mod masks;
mod mounts;
mod tree;

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Component, Path, PathBuf};

pub use self::masks::{
    EntryKind, HOST_SECRETS, ImageRoot, Mask, RootEntry, resolve_masks, searchable_by,
    unreachable_ancestor,
};
pub use self::mounts::{ReadOnlyBind, ShadowDir, plan_shadows};
pub use self::tree::{DEVPTS, TreeOp, plan_tree};

/// The uid sandboxed processes have inside their user namespace.
pub const SANDBOX_UID: u32 = 1000;
/// The gid sandboxed processes have inside their user namespace.
pub const SANDBOX_GID: u32 = 1000;
/// Where the workspace appears.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Where the agent binary appears.
pub const AGENT_PATH: &str = "/run/nexus/agent";
/// `PATH` when the spec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Top-level names that never come from the image: each gets its own mount.
const RESERVED_TOP: &[&str] = &["proc", "dev", "tmp", "run", "workspace", "lost+found"];

/// Top-level image entries bound after every other mount: nothing is mounted under them,
/// and their many submounts would otherwise lengthen the mount table bwrap parses for
/// each mount that follows.
const DEFERRED_TOP: &[&str] = &["sys"];

/// What a sandbox's bwrap invocation is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BwrapSpec {
    /// The image's root directory and its top-level entries.
    pub root: ImageRoot,
    /// Paths hidden from the sandbox (for the `host` image: [`resolve_masks`]).
    pub masks: Vec<Mask>,
    /// The host directory mounted read-write at [`WORKSPACE_DIR`].
    pub workspace: PathBuf,
    /// Host trees bound read-only (other workspaces); targets neither equal nor nest.
    pub read_only: Vec<ReadOnlyBind>,
    /// Image directories recreated so the read-only targets can be made in them
    /// ([`plan_shadows`]).
    pub shadows: Vec<ShadowDir>,
    /// Size of `/tmp` (and of `/dev/shm`), in MiB.
    pub tmp_mib: u64,
    /// The sandbox's hostname.
    pub hostname: String,
    /// The whole environment of the command (`PATH` and `HOME` get defaults).
    pub env: Vec<(String, String)>,
    /// The agent binary on the host, bound read-only at [`AGENT_PATH`].
    pub agent: Option<PathBuf>,
    /// The command and its arguments, as seen inside the sandbox.
    pub command: Vec<OsString>,
    /// Bind `root` read-write as the sandbox's `/` (a per-sandbox overlay of an image, see
    /// [`crate::layer`]) instead of the read-only entries on a tmpfs. Masks and shadows
    /// must then be empty: nothing of the host is in such a root.
    pub writable_root: bool,
    /// Keep the network namespace bwrap starts in (one the launching process joined:
    /// the daemon's policy-proxy namespace, see `nexus_net::netns`) instead of making a
    /// new one with loopback only.
    pub joined_network: bool,
    /// Where the launcher assembles the root before bwrap runs ([`plan_tree`]; needs a
    /// root daemon): an empty directory the sandbox's host uid can reach, mounted over
    /// only in the launcher's own mount namespace. bwrap then binds it read-only as `/`
    /// instead of making the image's entries, the masks and `/run` itself. `None`:
    /// bwrap makes everything. Ignored with [`BwrapSpec::writable_root`].
    pub tree: Option<PathBuf>,
}

/// The file descriptors bwrap reads, as numbered in its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecFds {
    /// The seccomp program (`--seccomp`).
    pub seccomp: RawFd,
    /// Where bwrap writes the sandbox's pid as JSON (`--info-fd`), if anywhere.
    pub info: Option<RawFd>,
}

/// A spec that cannot become a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A path that must be absolute and normal is not.
    #[error("{field} must be an absolute path without `..`: {path}")]
    RelativePath {
        /// Which part of the spec.
        field: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The hostname is not a valid host name.
    #[error("invalid hostname {0:?}: use 1-63 letters, digits and '-'")]
    Hostname(String),
    /// An environment variable cannot be passed.
    #[error(
        "invalid environment variable {0:?}: names are non-empty without '=', and nothing may contain NUL"
    )]
    Env(String),
    /// `tmp_mib` is zero or too large.
    #[error("invalid tmp size {0} MiB")]
    TmpSize(u64),
    /// No command was given.
    #[error("the command is empty")]
    EmptyCommand,
    /// A read-only mount cannot be placed at its target.
    #[error("cannot mount a workspace read-only at {target}: {reason}")]
    MountTarget {
        /// The path inside the sandbox.
        target: PathBuf,
        /// Why not.
        reason: String,
    },
}

impl BwrapSpec {
    /// The agent's command line: `/run/nexus/agent --listen-fd <fd>`, plus `--env K=V`
    /// for each variable every process in the sandbox must have.
    pub fn agent_command(listen_fd: RawFd, env: &[(String, String)]) -> Vec<OsString> {
        let mut command: Vec<OsString> = vec![
            AGENT_PATH.into(),
            "--listen-fd".into(),
            listen_fd.to_string().into(),
        ];
        for (key, value) in env {
            command.push("--env".into());
            command.push(format!("{key}={value}").into());
        }
        command
    }

    /// Checks the spec without building anything.
    pub fn validate(&self) -> Result<(), SpecError> {
        absolute("root", &self.root.path)?;
        absolute("workspace", &self.workspace)?;
        if let Some(agent) = &self.agent {
            absolute("agent", agent)?;
        }
        for mask in &self.masks {
            absolute("mask", mask.path())?;
        }
        for (i, bind) in self.read_only.iter().enumerate() {
            absolute("read-only mount source", &bind.source)?;
            mounts::validate_target(&bind.target)?;
            let clash = self.read_only[..i].iter().find(|other| {
                bind.target.starts_with(&other.target) || other.target.starts_with(&bind.target)
            });
            if let Some(other) = clash {
                return Err(SpecError::MountTarget {
                    target: bind.target.clone(),
                    reason: format!("it overlaps the mount at {}", other.target.display()),
                });
            }
        }
        for shadow in &self.shadows {
            absolute("shadowed directory", &shadow.path)?;
        }
        if self.writable_root && (!self.masks.is_empty() || !self.shadows.is_empty()) {
            return Err(SpecError::MountTarget {
                target: "/".into(),
                reason: "a writable root has no masks or shadowed directories".into(),
            });
        }
        let host_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if self.hostname.is_empty()
            || self.hostname.len() > 63
            || self.hostname.starts_with('-')
            || !self.hostname.chars().all(host_char)
        {
            return Err(SpecError::Hostname(self.hostname.clone()));
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(SpecError::Env(name.clone()));
            }
        }
        if self.tmp_mib == 0 || self.tmp_mib > 1 << 30 {
            return Err(SpecError::TmpSize(self.tmp_mib));
        }
        if self.command.is_empty() {
            return Err(SpecError::EmptyCommand);
        }
        Ok(())
    }
}

/// The arguments to pass to `bwrap` (without `bwrap` itself) for `spec`.
pub fn build_args(spec: &BwrapSpec, fds: SpecFds) -> Result<Vec<OsString>, SpecError> {
    spec.validate()?;
    let mut args = Args::default();
    let uid = SANDBOX_UID.to_string();
    let gid = SANDBOX_GID.to_string();
    args.push([
        "--unshare-user",
        "--disable-userns",
        "--uid",
        &uid,
        "--gid",
        &gid,
    ]);
    args.push(["--unshare-pid"]);
    if !spec.joined_network {
        args.push(["--unshare-net"]);
    }
    args.push(["--unshare-ipc", "--unshare-uts"]);
    args.push(["--unshare-cgroup", "--hostname", &spec.hostname]);
    args.push(["--cap-drop", "ALL", "--new-session", "--as-pid-1"]);

    args.push(["--clearenv"]);
    for (name, value) in environment(&spec.env) {
        args.push(["--setenv", name, value]);
    }

    let masks = effective_masks(&spec.masks);
    // The tree the launcher assembled holds the entries, the masks and `/run`.
    let tree = spec.tree.as_ref().filter(|_| !spec.writable_root);
    if spec.writable_root {
        // Mount points bwrap needs are made in the layer, by the sandbox's own user,
        // who owns that root.
        args.push_os(["--bind".into(), spec.root.path.clone().into(), "/".into()]);
    } else if let Some(tree) = tree {
        // Sealed by the launcher (read-only, nosuid, nodev but for its device nodes):
        // `--ro-bind` would add nodev to those.
        args.push_os(["--dev-bind".into(), tree.into(), "/".into()]);
    }
    let entries = if spec.writable_root || tree.is_some() {
        &[][..]
    } else {
        &spec.root.entries[..]
    };
    // `/sys` carries many submounts (a dozen cgroup hierarchies on a hybrid host), and
    // bwrap re-reads the whole mount table for every later read-only bind and remount:
    // binding it last, just before the root turns read-only, spares every other mount
    // that cost (see `DEFERRED_TOP`).
    let mut deferred: Vec<[OsString; 3]> = Vec::new();
    for entry in entries {
        let Some(name) = entry.name.to_str() else {
            // Non-UTF-8 top-level names do not occur in images; skip rather than guess.
            continue;
        };
        if RESERVED_TOP.contains(&name) {
            continue;
        }
        let inside = Path::new("/").join(name);
        let masked = masks.iter().any(|mask| mask.path() == inside);
        match (&entry.kind, masked) {
            (EntryKind::Dir, true) => args.push_os(["--dir".into(), inside.into()]),
            (EntryKind::File, true) => {
                args.push_os(["--ro-bind".into(), "/dev/null".into(), inside.into()]);
            }
            (EntryKind::Symlink(_), true) => {}
            (EntryKind::Dir | EntryKind::File, false) => {
                let source = spec.root.path.join(name);
                let bind = ["--ro-bind".into(), source.into(), inside.into()];
                if DEFERRED_TOP.contains(&name) {
                    deferred.push(bind);
                } else {
                    args.push_os(bind);
                }
            }
            (EntryKind::Symlink(target), false) => {
                args.push_os(["--symlink".into(), target.into(), inside.into()]);
            }
        }
    }

    let size = (spec.tmp_mib * 1024 * 1024).to_string();
    args.push(["--proc", "/proc"]);
    if tree.is_none() {
        // With a tree, `/dev` is in it, and the launcher mounts the sandbox's own
        // `/dev/pts` (see `plan_tree`).
        args.push(["--dev", "/dev", "--remount-ro", "/dev"]);
    }
    args.push(["--perms", "01777", "--size", &size, "--tmpfs", "/dev/shm"]);
    args.push(["--perms", "01777", "--size", &size, "--tmpfs", "/tmp"]);
    if tree.is_none() {
        args.push(["--perms", "0755", "--tmpfs", "/run"]);
        if let Some(agent) = &spec.agent {
            args.push_os(["--ro-bind".into(), agent.into(), AGENT_PATH.into()]);
        }
    }

    let mut shadows: Vec<&ShadowDir> = spec.shadows.iter().collect();
    shadows.sort_by(|a, b| a.path.cmp(&b.path));
    for shadow in &shadows {
        // From the tree, the masks come along; from the image, they follow below.
        let host = tree
            .unwrap_or(&spec.root.path)
            .join(shadow.path.strip_prefix("/").unwrap_or(&shadow.path));
        args.push_os(["--tmpfs".into(), shadow.path.clone().into()]);
        for entry in &shadow.entries {
            let inside = shadow.path.join(&entry.name);
            match &entry.kind {
                EntryKind::Dir | EntryKind::File => {
                    args.push_os([
                        "--ro-bind".into(),
                        host.join(&entry.name).into(),
                        inside.into(),
                    ]);
                }
                EntryKind::Symlink(target) => {
                    args.push_os(["--symlink".into(), target.into(), inside.into()]);
                }
            }
        }
    }

    // Top-level masks were handled with the image's entries; with a tree, all of them.
    for mask in masks
        .iter()
        .filter(|mask| tree.is_none() && mask.path().components().count() > 2)
    {
        match mask {
            Mask::EmptyDir(path) => {
                args.push_os(["--tmpfs".into(), path.into()]);
                args.push_os(["--remount-ro".into(), path.into()]);
            }
            Mask::EmptyFile(path) => {
                args.push_os(["--ro-bind".into(), "/dev/null".into(), path.into()]);
            }
        }
    }

    args.push_os([
        "--bind".into(),
        spec.workspace.clone().into(),
        WORKSPACE_DIR.into(),
    ]);
    let mut read_only: Vec<&ReadOnlyBind> = spec.read_only.iter().collect();
    read_only.sort_by(|a, b| a.target.cmp(&b.target));
    for bind in read_only {
        args.push_os([
            "--ro-bind".into(),
            bind.source.clone().into(),
            bind.target.clone().into(),
        ]);
    }
    for shadow in &shadows {
        args.push_os(["--remount-ro".into(), shadow.path.clone().into()]);
    }
    for bind in deferred {
        args.push_os(bind);
    }
    if tree.is_none() {
        args.push(["--remount-ro", "/run"]);
        if !spec.writable_root {
            args.push(["--remount-ro", "/"]);
        }
    }
    args.push(["--seccomp", &fds.seccomp.to_string()]);
    if let Some(info) = fds.info {
        args.push(["--info-fd", &info.to_string()]);
    }
    args.push(["--chdir", WORKSPACE_DIR, "--"]);
    args.0.extend(spec.command.iter().cloned());
    Ok(args.0)
}

/// The environment with `PATH` and `HOME` defaulted.
fn environment(env: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (name, value) in [("PATH", DEFAULT_PATH), ("HOME", WORKSPACE_DIR)] {
        if !all.iter().any(|(k, _)| *k == name) {
            all.push((name, value));
        }
    }
    all
}

/// The masks that need a mount: not under a reserved top-level directory (which is
/// replaced wholesale) nor under another mask, in path order.
fn effective_masks(masks: &[Mask]) -> Vec<Mask> {
    let mut sorted: Vec<&Mask> = masks.iter().collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    let mut kept: Vec<Mask> = Vec::new();
    for mask in sorted {
        let path = mask.path();
        let reserved = path
            .components()
            .nth(1)
            .and_then(|top| top.as_os_str().to_str())
            .is_some_and(|top| RESERVED_TOP.contains(&top));
        let covered = kept.iter().any(|k| path.starts_with(k.path()));
        if !reserved && !covered && path != Path::new("/") {
            kept.push(mask.clone());
        }
    }
    kept
}

fn absolute(field: &'static str, path: &Path) -> Result<(), SpecError> {
    let normal = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if normal {
        Ok(())
    } else {
        Err(SpecError::RelativePath {
            field,
            path: path.to_path_buf(),
        })
    }
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push<const N: usize>(&mut self, args: [&str; N]) {
        self.0.extend(args.iter().map(OsString::from));
    }

    fn push_os<const N: usize>(&mut self, args: [OsString; N]) {
        self.0.extend(args);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn entry(name: &str, kind: EntryKind) -> RootEntry {
        RootEntry {
            name: name.into(),
            kind,
        }
    }

    /// A host-image spec with a bit of everything.
    pub(super) fn spec() -> BwrapSpec {
        BwrapSpec {
            root: ImageRoot {
                path: "/".into(),
                entries: vec![
                    entry("bin", EntryKind::Symlink("usr/bin".into())),
                    entry("etc", EntryKind::Dir),
                    entry("home", EntryKind::Dir),
                    entry("proc", EntryKind::Dir),
                    entry("root", EntryKind::Dir),
                    entry("run", EntryKind::Dir),
                    entry("sys", EntryKind::Dir),
                    entry("tmp", EntryKind::Dir),
                    entry("usr", EntryKind::Dir),
                    entry("var", EntryKind::Dir),
                    entry("vmlinuz", EntryKind::File),
                ],
            },
            masks: vec![
                Mask::EmptyDir("/root".into()),
                Mask::EmptyDir("/home".into()),
                Mask::EmptyFile("/etc/shadow".into()),
                Mask::EmptyDir("/etc/ssh".into()),
                Mask::EmptyDir("/var/lib/nexus/workspaces".into()),
                Mask::EmptyDir("/var/lib/nexus".into()),
                Mask::EmptyDir("/run/user/0/nexus".into()),
            ],
            workspace: "/var/lib/nexus/workspaces/sb-1".into(),
            read_only: Vec::new(),
            shadows: Vec::new(),
            tmp_mib: 64,
            hostname: "sb-1".into(),
            env: vec![("LANG".into(), "C.UTF-8".into())],
            agent: Some("/usr/lib/nexus/nexus-agent".into()),
            writable_root: false,
            joined_network: false,
            tree: None,
            command: BwrapSpec::agent_command(3, &[]),
        }
    }

    fn render(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_str().expect("utf-8"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    const FDS: SpecFds = SpecFds {
        seccomp: 4,
        info: Some(5),
    };

    #[test]
    fn host_image_snapshot() {
        let args = build_args(&spec(), FDS).expect("valid");
        let expected = [
            "--unshare-user --disable-userns --uid 1000 --gid 1000",
            "--unshare-pid --unshare-net --unshare-ipc --unshare-uts --unshare-cgroup --hostname sb-1",
            "--cap-drop ALL --new-session --as-pid-1",
            "--clearenv --setenv LANG C.UTF-8 --setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --setenv HOME /workspace",
            "--symlink usr/bin /bin --ro-bind /etc /etc --dir /home --dir /root --ro-bind /usr /usr --ro-bind /var /var --ro-bind /vmlinuz /vmlinuz",
            "--proc /proc --dev /dev --remount-ro /dev --perms 01777 --size 67108864 --tmpfs /dev/shm",
            "--perms 01777 --size 67108864 --tmpfs /tmp",
            "--perms 0755 --tmpfs /run --ro-bind /usr/lib/nexus/nexus-agent /run/nexus/agent",
            "--ro-bind /dev/null /etc/shadow --tmpfs /etc/ssh --remount-ro /etc/ssh --tmpfs /var/lib/nexus --remount-ro /var/lib/nexus",
            // `/sys` last: its submounts would lengthen every mount table bwrap reads.
            "--bind /var/lib/nexus/workspaces/sb-1 /workspace --ro-bind /sys /sys --remount-ro /run --remount-ro /",
            "--seccomp 4 --info-fd 5 --chdir /workspace -- /run/nexus/agent --listen-fd 3",
        ]
        .join(" ");
        assert_eq!(render(&args), expected);
    }

    #[test]
    fn host_image_with_a_tree_snapshot() {
        let spec = BwrapSpec {
            tree: Some("/var/lib/nexus/rootfs".into()),
            ..spec()
        };
        let args = build_args(&spec, FDS).expect("valid");
        let expected = [
            "--unshare-user --disable-userns --uid 1000 --gid 1000",
            "--unshare-pid --unshare-net --unshare-ipc --unshare-uts --unshare-cgroup --hostname sb-1",
            "--cap-drop ALL --new-session --as-pid-1",
            "--clearenv --setenv LANG C.UTF-8 --setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --setenv HOME /workspace",
            // Entries, masks, `/run` with the agent, and `/dev` are in the tree.
            "--dev-bind /var/lib/nexus/rootfs /",
            "--proc /proc --perms 01777 --size 67108864 --tmpfs /dev/shm",
            "--perms 01777 --size 67108864 --tmpfs /tmp",
            "--bind /var/lib/nexus/workspaces/sb-1 /workspace",
            "--seccomp 4 --info-fd 5 --chdir /workspace -- /run/nexus/agent --listen-fd 3",
        ]
        .join(" ");
        assert_eq!(render(&args), expected);
    }

    #[test]
    fn shadows_come_from_the_tree_so_the_masks_come_along() {
        let spec = BwrapSpec {
            tree: Some("/t".into()),
            read_only: vec![ReadOnlyBind {
                source: "/src".into(),
                target: "/etc/ref".into(),
            }],
            shadows: vec![ShadowDir {
                path: "/etc".into(),
                entries: vec![entry("shadow", EntryKind::File)],
            }],
            ..spec()
        };
        let rendered = render(&build_args(&spec, FDS).expect("valid"));
        assert!(
            rendered.contains("--tmpfs /etc --ro-bind /t/etc/shadow /etc/shadow"),
            "{rendered}"
        );
        assert!(!rendered.contains("--ro-bind /dev/null"), "{rendered}");
    }

    #[test]
    fn a_joined_network_keeps_the_namespace_and_the_agent_gets_its_env() {
        let spec = BwrapSpec {
            joined_network: true,
            command: BwrapSpec::agent_command(
                3,
                &[("HTTP_PROXY".into(), "http://127.0.0.1:3128".into())],
            ),
            ..spec()
        };
        let args = render(&build_args(&spec, FDS).expect("valid"));
        assert!(!args.contains("--unshare-net"), "{args}");
        assert!(
            args.contains("--unshare-pid --unshare-ipc --unshare-uts"),
            "{args}"
        );
        assert!(
            args.ends_with("/run/nexus/agent --listen-fd 3 --env HTTP_PROXY=http://127.0.0.1:3128"),
            "{args}"
        );
    }

    #[test]
    fn hermetic_image_without_masks_or_agent() {
        let spec = BwrapSpec {
            root: ImageRoot {
                path: "/var/lib/nexus/images/debian".into(),
                entries: vec![entry("usr", EntryKind::Dir), entry("tmp", EntryKind::Dir)],
            },
            masks: Vec::new(),
            agent: None,
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("HOME".into(), "/tmp".into()),
            ],
            writable_root: false,
            joined_network: false,
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            ..spec()
        };
        let args = render(
            &build_args(
                &spec,
                SpecFds {
                    seccomp: 9,
                    info: None,
                },
            )
            .expect("valid"),
        );
        assert!(args.contains("--clearenv --setenv PATH /bin --setenv HOME /tmp --ro-bind"));
        assert!(args.contains("--ro-bind /var/lib/nexus/images/debian/usr /usr --proc"));
        assert!(
            !args.contains("images/debian/tmp"),
            "tmp is reserved: {args}"
        );
        assert!(args.contains("--tmpfs /run --bind"));
        assert!(args.contains("--remount-ro /run --remount-ro / --seccomp"));
        assert!(args.ends_with("--seccomp 9 --chdir /workspace -- sh -c echo hi"));
    }

    #[test]
    fn the_workspace_is_bound_after_every_mask_and_the_root_made_read_only_last() {
        let args = build_args(&spec(), FDS).expect("valid");
        let workspace = args.iter().position(|a| a == "--bind").expect("bind");
        let last_mask = args
            .iter()
            .rposition(|a| a == "/var/lib/nexus")
            .expect("mask");
        assert!(last_mask < workspace);
        let root_ro = args
            .windows(2)
            .position(|w| w[0] == "--remount-ro" && w[1] == "/");
        assert!(root_ro.expect("remount") > workspace);
        assert!(
            !args.iter().any(|a| a == "--die-with-parent"),
            "sandboxes outlive nexusd"
        );
    }

    #[test]
    fn read_only_binds_come_after_the_workspace_and_shadows_before_the_masks() {
        let spec = BwrapSpec {
            read_only: vec![
                ReadOnlyBind {
                    source: "/var/lib/nexus/workspaces/b/trees/3".into(),
                    target: "/workspace/ref".into(),
                },
                ReadOnlyBind {
                    source: "/var/lib/nexus/workspaces/a/trees/1".into(),
                    target: "/mnt/data".into(),
                },
            ],
            shadows: vec![ShadowDir {
                path: "/mnt".into(),
                entries: vec![
                    entry("cdrom", EntryKind::Dir),
                    entry("link", EntryKind::Symlink("cdrom".into())),
                ],
            }],
            ..spec()
        };
        let args = render(&build_args(&spec, FDS).expect("valid"));
        let expected = [
            "--ro-bind /usr/lib/nexus/nexus-agent /run/nexus/agent",
            "--tmpfs /mnt --ro-bind /mnt/cdrom /mnt/cdrom --symlink cdrom /mnt/link",
            "--ro-bind /dev/null /etc/shadow --tmpfs /etc/ssh --remount-ro /etc/ssh --tmpfs /var/lib/nexus --remount-ro /var/lib/nexus",
            "--bind /var/lib/nexus/workspaces/sb-1 /workspace",
            "--ro-bind /var/lib/nexus/workspaces/a/trees/1 /mnt/data",
            "--ro-bind /var/lib/nexus/workspaces/b/trees/3 /workspace/ref",
            "--remount-ro /mnt --ro-bind /sys /sys --remount-ro /run --remount-ro / --seccomp 4",
        ]
        .join(" ");
        assert!(args.contains(&expected), "{args}");
    }

    #[test]
    fn overlapping_or_forbidden_read_only_targets_are_refused() {
        let bind = |target: &str| ReadOnlyBind {
            source: "/var/lib/nexus/workspaces/a/trees/1".into(),
            target: target.into(),
        };
        for targets in [
            vec!["/data", "/data"],
            vec!["/data", "/data/sub"],
            vec!["/data/sub", "/data"],
            vec!["/workspace"],
            vec!["/"],
            vec!["/proc/x"],
            vec!["/run/nexus"],
            vec!["data"],
        ] {
            let spec = BwrapSpec {
                read_only: targets.iter().map(|t| bind(t)).collect(),
                ..spec()
            };
            assert!(
                matches!(build_args(&spec, FDS), Err(SpecError::MountTarget { .. })),
                "{targets:?}"
            );
        }
        let spec = BwrapSpec {
            read_only: vec![ReadOnlyBind {
                source: "tree".into(),
                target: "/data".into(),
            }],
            ..spec()
        };
        assert!(matches!(
            build_args(&spec, FDS),
            Err(SpecError::RelativePath { .. })
        ));
    }

    #[test]
    fn a_writable_root_is_bound_whole_and_stays_writable() {
        let spec = BwrapSpec {
            root: ImageRoot {
                path: "/var/lib/nexus/sandboxes/sb/layer/root".into(),
                entries: vec![entry("usr", EntryKind::Dir)],
            },
            masks: Vec::new(),
            shadows: Vec::new(),
            writable_root: true,
            joined_network: false,
            ..spec()
        };
        let args = render(&build_args(&spec, FDS).expect("valid"));
        assert!(
            args.contains("--bind /var/lib/nexus/sandboxes/sb/layer/root / "),
            "{args}"
        );
        assert!(
            !args.contains("--ro-bind /var/lib/nexus/sandboxes/sb/layer/root/usr"),
            "{args}"
        );
        assert!(!args.contains("--remount-ro / "), "{args}");
        assert!(args.contains("--remount-ro /run"), "{args}");
        let masked = BwrapSpec {
            writable_root: true,
            joined_network: false,
            ..self::spec()
        };
        assert!(
            build_args(&masked, FDS).is_err(),
            "masks make no sense there"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let cases: Vec<(BwrapSpec, SpecError)> = vec![
            (
                BwrapSpec {
                    hostname: "a b".into(),
                    ..spec()
                },
                SpecError::Hostname("a b".into()),
            ),
            (
                BwrapSpec {
                    workspace: "ws".into(),
                    ..spec()
                },
                SpecError::RelativePath {
                    field: "workspace",
                    path: "ws".into(),
                },
            ),
            (
                BwrapSpec {
                    workspace: "/data/../etc".into(),
                    ..spec()
                },
                SpecError::RelativePath {
                    field: "workspace",
                    path: "/data/../etc".into(),
                },
            ),
            (
                BwrapSpec {
                    env: vec![("A=B".into(), "c".into())],
                    ..spec()
                },
                SpecError::Env("A=B".into()),
            ),
            (
                BwrapSpec {
                    tmp_mib: 0,
                    ..spec()
                },
                SpecError::TmpSize(0),
            ),
            (
                BwrapSpec {
                    command: Vec::new(),
                    ..spec()
                },
                SpecError::EmptyCommand,
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(build_args(&spec, FDS), Err(expected));
        }
    }
}
