//! The image's top-level entries, the host secrets masked in the `host` image, and
//! whether an unprivileged host uid can reach a path at all.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, Uid, access};

/// Host paths masked in the `host` image when they exist, besides the Nexus directories
/// the daemon adds. `/run` (container-engine, D-Bus and per-user sockets) is always an
/// empty tmpfs and needs no entry; `/var/run` does when it is not a symlink to it.
pub const HOST_SECRETS: &[&str] = &[
    "/root",
    "/home",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containers",
    "/var/lib/containerd",
    "/var/lib/kubelet",
];

/// An image root directory and its top-level entries, which bwrap binds one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRoot {
    /// The directory on the host (`/` for the `host` image).
    pub path: PathBuf,
    /// Its entries, sorted by name.
    pub entries: Vec<RootEntry>,
}

/// One top-level entry of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootEntry {
    /// The file name.
    pub name: OsString,
    /// What it is.
    pub kind: EntryKind,
}

/// The kind of a top-level entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory: bound read-only.
    Dir,
    /// A regular file: bound read-only.
    File,
    /// A symlink, recreated with its target (resolved inside the sandbox).
    Symlink(PathBuf),
}

/// A path hidden from the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// A directory replaced by an empty read-only tmpfs.
    EmptyDir(PathBuf),
    /// A file replaced by `/dev/null` (reads fail or return nothing).
    EmptyFile(PathBuf),
}

impl ImageRoot {
    /// Lists the top-level entries of `path`; sockets, fifos and devices are left out.
    pub fn scan(path: &Path) -> std::io::Result<Self> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink(std::fs::read_link(entry.path())?)
            } else if file_type.is_dir() {
                EntryKind::Dir
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                continue;
            };
            entries.push(RootEntry {
                name: entry.file_name(),
                kind,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ImageRoot {
            path: path.to_path_buf(),
            entries,
        })
    }
}

impl Mask {
    /// The masked path.
    pub fn path(&self) -> &Path {
        match self {
            Mask::EmptyDir(path) | Mask::EmptyFile(path) => path,
        }
    }
}

/// The masks for the `host` image: [`HOST_SECRETS`] and `extra` (the daemon's config,
/// state, data and runtime directories), each if it exists, symlinks resolved.
///
/// bwrap runs as `host_uid` and must reach a path to mount over it. A path behind a
/// directory that uid cannot search is out of the sandbox's reach anyway; the first
/// such directory is masked instead, which bwrap can reach.
pub fn resolve_masks(extra: &[PathBuf], host_uid: u32) -> Vec<Mask> {
    let candidates = HOST_SECRETS
        .iter()
        .map(PathBuf::from)
        .chain(extra.iter().cloned());
    let mut masks: Vec<Mask> = Vec::new();
    for path in candidates {
        let Ok(canonical) = std::fs::canonicalize(&path) else {
            continue;
        };
        let target = unreachable_ancestor(&canonical, host_uid).unwrap_or(canonical);
        let mask = if target.is_dir() {
            Mask::EmptyDir(target)
        } else {
            Mask::EmptyFile(target)
        };
        if !masks.contains(&mask) {
            masks.push(mask);
        }
    }
    masks
}

/// The first proper ancestor of `path` that `uid` cannot search, if any.
pub fn unreachable_ancestor(path: &Path, uid: u32) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .find(|dir| !searchable_by(dir, uid))
        .map(Path::to_path_buf)
}

/// Whether `uid` may search directory `dir`.
///
/// For our own uid the kernel answers (`access(X_OK)`, groups and ACLs included). For
/// another uid (a sandbox's, whose gid equals its uid) the mode bits decide; ACLs and
/// supplementary groups are not consulted (a sandbox's only ones are those of the trees
/// it mounts read-only, which grant nothing on the way to them).
pub fn searchable_by(dir: &Path, uid: u32) -> bool {
    if uid == Uid::effective().as_raw() {
        return access(dir, AccessFlags::X_OK).is_ok();
    }
    if uid == 0 {
        return true;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let mode = meta.mode();
    if meta.uid() == uid {
        mode & 0o100 != 0
    } else if meta.gid() == uid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn scan_lists_dirs_files_and_symlinks_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("usr")).expect("mkdir");
        std::fs::write(dir.path().join("file"), "").expect("write");
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).expect("symlink");
        let root = ImageRoot::scan(dir.path()).expect("scan");
        assert_eq!(
            root.entries,
            vec![
                RootEntry {
                    name: "bin".into(),
                    kind: EntryKind::Symlink("usr/bin".into())
                },
                RootEntry {
                    name: "file".into(),
                    kind: EntryKind::File
                },
                RootEntry {
                    name: "usr".into(),
                    kind: EntryKind::Dir
                },
            ]
        );
    }

    #[test]
    fn masks_only_existing_paths_and_resolves_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        chmod(dir.path(), 0o755);
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(dir.path().join("token"), "secret").expect("write");
        std::os::unix::fs::symlink(&data, dir.path().join("link")).expect("symlink");
        let extra = [
            data.clone(),
            dir.path().join("token"),
            dir.path().join("link"),
            dir.path().join("missing"),
        ];
        let own = Uid::effective().as_raw();
        let masks: Vec<Mask> = resolve_masks(&extra, own)
            .into_iter()
            .filter(|m| m.path().starts_with(dir.path()))
            .collect();
        assert_eq!(
            masks,
            vec![
                Mask::EmptyDir(data),
                Mask::EmptyFile(dir.path().join("token"))
            ],
            "the symlink resolves to data (masked once); missing paths are skipped"
        );
    }

    #[test]
    fn a_path_behind_an_unsearchable_directory_masks_that_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        chmod(dir.path(), 0o755);
        let private = dir.path().join("private");
        std::fs::create_dir_all(private.join("nexus/token-dir")).expect("mkdir");
        chmod(&private, 0o700);
        let stranger = 4_000_000;
        assert!(!searchable_by(&private, stranger));
        assert!(searchable_by(dir.path(), stranger));
        assert_eq!(
            unreachable_ancestor(&private.join("nexus/token-dir"), stranger),
            Some(private.clone())
        );
        let masks = resolve_masks(&[private.join("nexus/token-dir")], stranger);
        assert!(masks.contains(&Mask::EmptyDir(private)), "{masks:?}");
    }

    #[test]
    fn mode_bits_decide_for_other_uids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path();
        let owner = std::fs::metadata(path).expect("stat").uid();
        chmod(path, 0o711);
        assert!(searchable_by(path, 4_000_000), "o+x");
        chmod(path, 0o700);
        assert!(!searchable_by(path, 4_000_000));
        assert!(searchable_by(path, owner), "the owner");
        assert!(!searchable_by(&path.join("missing"), 4_000_000));
    }
}
