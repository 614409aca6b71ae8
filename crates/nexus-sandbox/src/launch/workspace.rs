//! Handing a workspace to the sandbox's host uid.
//!
//! The top directory ends up 0750: the owner (the sandbox) works in it, members of its
//! group (sandboxes that mount this tree read-only, see [`super::ids`]) may enter and
//! read, nobody else may enter.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::LaunchError;

/// Hands `workspace` to `uid` (owner and group, recursively, mode 0750 at the top) when
/// its top directory belongs to someone else; a workspace already owned by `uid` is left
/// as it is, so this costs one `stat` per launch.
pub fn prepare_workspace(workspace: &Path, uid: u32) -> Result<(), LaunchError> {
    let meta = std::fs::metadata(workspace).map_err(|source| LaunchError::Workspace {
        path: workspace.to_path_buf(),
        source: Some(source),
    })?;
    if !meta.is_dir() {
        return Err(LaunchError::Workspace {
            path: workspace.to_path_buf(),
            source: None,
        });
    }
    if meta.uid() == uid && meta.gid() == uid {
        return Ok(());
    }
    chown_tree(workspace, uid)?;
    std::fs::set_permissions(workspace, std::fs::Permissions::from_mode(0o750)).map_err(|source| {
        LaunchError::Chown {
            path: workspace.to_path_buf(),
            uid,
            source,
        }
    })
}

fn chown_tree(path: &Path, uid: u32) -> Result<(), LaunchError> {
    let error = |source| LaunchError::Chown {
        path: path.to_path_buf(),
        uid,
        source,
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).map_err(error)?;
    let meta = std::fs::symlink_metadata(path).map_err(error)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(error)? {
            chown_tree(&entry.map_err(error)?.path(), uid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspaces_are_handed_over_once() {
        if !nix::unistd::Uid::effective().is_root() {
            return; // chown needs root; the integration tests cover the non-root path.
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let workspace = dir.path().join("ws");
        std::fs::create_dir_all(workspace.join("sub")).expect("mkdir");
        std::fs::write(workspace.join("sub/file"), "x").expect("write");
        prepare_workspace(&workspace, 4_000_001).expect("chown");
        for path in [
            &workspace,
            &workspace.join("sub"),
            &workspace.join("sub/file"),
        ] {
            let meta = std::fs::metadata(path).expect("stat");
            assert_eq!(
                (meta.uid(), meta.gid()),
                (4_000_001, 4_000_001),
                "{}",
                path.display()
            );
        }
        assert_eq!(
            std::fs::metadata(&workspace).expect("stat").mode() & 0o777,
            0o750
        );
        let missing = prepare_workspace(&dir.path().join("missing"), 4_000_001);
        assert!(matches!(missing, Err(LaunchError::Workspace { .. })));
    }
}
