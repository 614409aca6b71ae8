//! Read-only binds of other workspaces' trees, and the mount points they need.
//!
//! bwrap creates a bind's mount point (and its parents) when it is missing, which works
//! on writable ground: the root tmpfs before it is remounted read-only (`/data`), a
//! top-level mask (`/home/x`, an empty directory on that tmpfs), `/tmp`, `/run` (its
//! read-only remount comes after the binds) and the workspace (`/workspace/ref`: the
//! directory is made in the workspace tree, as the sandbox's own user). It fails
//! (`Can't mkdir /mnt/data: Read-only file system`, checked with bwrap 0.8) inside a
//! directory bound read-only from the image, and it must not write there anyway: that
//! is the host. For such a target [`plan_shadows`] picks the deepest directory of the
//! image that exists on the way (`/mnt`), and the command line recreates it as a
//! [`ShadowDir`]: a tmpfs holding a read-only bind of each of its entries (symlinks
//! recreated), exactly like the root, on which the mount point can be made; it is
//! remounted read-only after the binds.

use std::path::{Component, Path, PathBuf};

use super::{EntryKind, ImageRoot, Mask, RootEntry, SpecError};

/// A host tree bound read-only into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnlyBind {
    /// The tree on the host.
    pub source: PathBuf,
    /// Where it appears in the sandbox: absolute, validated by [`super::BwrapSpec::validate`].
    pub target: PathBuf,
}

/// A directory of the image recreated as a tmpfs with each entry bound read-only, so that
/// mount points missing from the image can be made in it without touching the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDir {
    /// The directory as seen in the sandbox (the same path under the image root).
    pub path: PathBuf,
    /// Its entries in the image, sorted by name.
    pub entries: Vec<RootEntry>,
}

/// Paths no read-only bind may cover: the sandbox's own mounts, where the sandbox would
/// break or see the host's kernel interfaces, and the agent.
const FORBIDDEN_TARGETS: &[&str] = &["/proc", "/dev", "/sys"];

/// The directories to shadow so that every target of `targets` can be created: for each
/// target under a directory bound read-only from the image, the deepest directory of the
/// image on its way. Reads the image (one `lstat` per component and one directory listing
/// per shadow). A target that crosses a symlink or a file of the image, or lies under a
/// masked path, is refused: its mount point could not be made where the sandbox sees it.
pub fn plan_shadows(
    root: &ImageRoot,
    masks: &[Mask],
    targets: &[&Path],
) -> Result<Vec<ShadowDir>, SpecError> {
    let mut shadows: Vec<ShadowDir> = Vec::new();
    for target in targets {
        let Some(dir) = shadow_for(root, masks, target)? else {
            continue;
        };
        if shadows.iter().any(|s| s.path == dir) {
            continue;
        }
        let host = root.path.join(dir.strip_prefix("/").unwrap_or(&dir));
        let listing = ImageRoot::scan(&host).map_err(|e| refused(target, &e.to_string()))?;
        shadows.push(ShadowDir {
            path: dir,
            entries: listing.entries,
        });
    }
    shadows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(shadows)
}

/// Checks one target on its own (absolute, normal, not over the sandbox's own mounts).
pub(super) fn validate_target(target: &Path) -> Result<(), SpecError> {
    let normal = target.is_absolute()
        && target
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal {
        return Err(refused(target, "it must be an absolute path without `..`"));
    }
    if target == Path::new("/") || target == Path::new(super::WORKSPACE_DIR) {
        return Err(refused(
            target,
            "it would hide the sandbox's root or workspace",
        ));
    }
    if FORBIDDEN_TARGETS.iter().any(|f| target.starts_with(f)) {
        return Err(refused(target, "it is a kernel interface of the sandbox"));
    }
    if Path::new(super::AGENT_PATH).starts_with(target) {
        return Err(refused(target, "it would hide the agent"));
    }
    Ok(())
}

/// The directory to shadow for `target`, if any.
fn shadow_for(
    root: &ImageRoot,
    masks: &[Mask],
    target: &Path,
) -> Result<Option<PathBuf>, SpecError> {
    validate_target(target)?;
    let mut names = target.components().skip(1).map(Component::as_os_str);
    let top = names.next().expect("validated: not the root");
    let top_path = Path::new("/").join(top);
    if let Some(mask) = masks
        .iter()
        .find(|m| m.path() != top_path && target.starts_with(m.path()))
    {
        return Err(refused(
            target,
            &format!(
                "it lies under the masked host path {}",
                mask.path().display()
            ),
        ));
    }
    if top
        .to_str()
        .is_some_and(|t| super::RESERVED_TOP.contains(&t))
    {
        // The workspace, /tmp and /run are writable while the binds are made.
        return Ok(None);
    }
    let Some(entry) = root.entries.iter().find(|e| e.name == top) else {
        return Ok(None); // made on the root tmpfs
    };
    let masked = masks.iter().find(|m| m.path() == top_path);
    match (&entry.kind, masked) {
        (EntryKind::Dir, Some(Mask::EmptyDir(_))) | (EntryKind::Symlink(_), Some(_)) => {
            return Ok(None); // an empty directory on the root tmpfs, or nothing at all
        }
        (EntryKind::Symlink(_), None) => {
            return Err(refused(
                target,
                &format!("{} is a symlink in the image", top_path.display()),
            ));
        }
        (EntryKind::File, _) | (EntryKind::Dir, Some(Mask::EmptyFile(_))) => {
            return Err(refused(
                target,
                &format!("{} is not a directory", top_path.display()),
            ));
        }
        (EntryKind::Dir, None) => {}
    }
    let mut inside = top_path;
    for name in names {
        let next = inside.join(name);
        let host = root.path.join(next.strip_prefix("/").unwrap_or(&next));
        match std::fs::symlink_metadata(&host) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(inside)),
            Err(e) => return Err(refused(target, &format!("{}: {e}", host.display()))),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refused(
                    target,
                    &format!("{} is a symlink in the image", next.display()),
                ));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(refused(
                    target,
                    &format!("{} is not a directory", next.display()),
                ));
            }
            Ok(_) => inside = next,
        }
    }
    Ok(None) // the target exists in the image: bound over
}

fn refused(target: &Path, reason: &str) -> SpecError {
    SpecError::MountTarget {
        target: target.to_path_buf(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    fn image() -> (tempfile::TempDir, ImageRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["mnt/existing", "usr/local/share", "etc/ssh", "home/me"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(dir.path().join("mnt/file"), "").expect("write");
        std::fs::write(dir.path().join("vmlinuz"), "").expect("write");
        std::os::unix::fs::symlink("usr/lib", dir.path().join("lib")).expect("symlink");
        std::os::unix::fs::symlink("existing", dir.path().join("mnt/link")).expect("symlink");
        let root = ImageRoot::scan(dir.path()).expect("scan");
        (dir, root)
    }

    fn masks() -> Vec<Mask> {
        vec![
            Mask::EmptyDir("/home".into()),
            Mask::EmptyDir("/etc/ssh".into()),
        ]
    }

    #[test]
    fn targets_under_read_only_image_dirs_shadow_the_deepest_existing_one() {
        let (_dir, root) = image();
        let targets = [
            Path::new("/mnt/data"),
            Path::new("/mnt/other"),
            Path::new("/usr/local/share/a/b"),
            Path::new("/mnt/existing"),
            Path::new("/data"),
            Path::new("/home/me/ref"),
            Path::new("/workspace/ref"),
            Path::new("/tmp/x"),
            Path::new("/run/ro"),
        ];
        let shadows = plan_shadows(&root, &masks(), &targets).expect("planned");
        let paths: Vec<&Path> = shadows.iter().map(|s| s.path.as_path()).collect();
        assert_eq!(paths, [Path::new("/mnt"), Path::new("/usr/local/share")]);
        let names: Vec<&OsStr> = shadows[0]
            .entries
            .iter()
            .map(|e| e.name.as_os_str())
            .collect();
        assert_eq!(names, ["existing", "file", "link"]);
        assert_eq!(
            shadows[0].entries[2].kind,
            EntryKind::Symlink("existing".into())
        );
    }

    #[test]
    fn impossible_targets_are_refused() {
        let (_dir, root) = image();
        for target in [
            "/lib/x",
            "/mnt/link/x",
            "/mnt/file/x",
            "/mnt/file",
            "/vmlinuz/x",
            "/etc/ssh/x",
            "/etc/ssh",
            "/",
            "/workspace",
            "/proc/x",
            "/sys",
            "/dev/shm",
            "/run",
            "/run/nexus",
            "/mnt/../etc",
            "relative",
        ] {
            let result = plan_shadows(&root, &masks(), &[Path::new(target)]);
            assert!(
                matches!(result, Err(SpecError::MountTarget { .. })),
                "{target}: {result:?}"
            );
        }
    }
}
