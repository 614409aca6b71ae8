//! Where Nexus keeps things on disk, following the XDG base-directory spec.
//!
//! | what | path |
//! |---|---|
//! | daemon config, token | `$XDG_CONFIG_HOME/nexus/` |
//! | CLI config | `$XDG_CONFIG_HOME/nexusctl/` |
//! | state database | `$XDG_STATE_HOME/nexus/` |
//! | images, workspaces | `$XDG_DATA_HOME/nexus/` |
//! | sockets, pid files | `$XDG_RUNTIME_DIR/nexus/` |
//!
//! Unset or relative variables fall back as the spec says: `~/.config`, `~/.local/state`,
//! `~/.local/share`. `XDG_RUNTIME_DIR` has no standard fallback; when it is unset Nexus
//! uses `/tmp/nexus-<uid>` (created with mode 0700 by whoever needs it).

use std::path::{Path, PathBuf};

/// The XDG base directories of the current user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdgDirs {
    /// `$XDG_CONFIG_HOME`.
    pub config_home: PathBuf,
    /// `$XDG_STATE_HOME`.
    pub state_home: PathBuf,
    /// `$XDG_DATA_HOME`.
    pub data_home: PathBuf,
    /// `$XDG_RUNTIME_DIR`, or the documented fallback.
    pub runtime_dir: PathBuf,
    /// Whether `$XDG_DATA_HOME` was set (rather than derived from `$HOME`).
    pub data_home_explicit: bool,
}

impl XdgDirs {
    /// Resolves the directories from the process environment.
    pub fn from_env() -> Self {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        Self::resolve(|name| std::env::var_os(name).map(PathBuf::from), uid)
    }

    /// Resolves the directories from an environment lookup (for tests).
    pub fn resolve(lookup: impl Fn(&str) -> Option<PathBuf>, uid: u32) -> Self {
        let home = lookup("HOME")
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from("/"));
        let var = |name: &str, fallback: &[&str]| {
            lookup(name)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| fallback.iter().fold(home.clone(), |p, part| p.join(part)))
        };
        Self {
            config_home: var("XDG_CONFIG_HOME", &[".config"]),
            state_home: var("XDG_STATE_HOME", &[".local", "state"]),
            data_home: var("XDG_DATA_HOME", &[".local", "share"]),
            data_home_explicit: lookup("XDG_DATA_HOME").is_some_and(|p| p.is_absolute()),
            runtime_dir: lookup("XDG_RUNTIME_DIR")
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| PathBuf::from(format!("/tmp/nexus-{uid}"))),
        }
    }

    /// `$XDG_CONFIG_HOME/nexus`: the daemon's config file and token.
    pub fn daemon_config_dir(&self) -> PathBuf {
        self.config_home.join("nexus")
    }

    /// `$XDG_CONFIG_HOME/nexus/nexus.yaml`.
    pub fn daemon_config_file(&self) -> PathBuf {
        self.daemon_config_dir().join("nexus.yaml")
    }

    /// `$XDG_CONFIG_HOME/nexus/token`: the generated API token.
    pub fn token_file(&self) -> PathBuf {
        self.daemon_config_dir().join("token")
    }

    /// `$XDG_CONFIG_HOME/nexusctl/config.yaml`.
    pub fn cli_config_file(&self) -> PathBuf {
        self.config_home.join("nexusctl").join("config.yaml")
    }

    /// `$XDG_STATE_HOME/nexus`: the state database.
    pub fn state_dir(&self) -> PathBuf {
        self.state_home.join("nexus")
    }

    /// `$XDG_DATA_HOME/nexus`: images and workspaces.
    pub fn data_dir(&self) -> PathBuf {
        self.data_home.join("nexus")
    }

    /// `$XDG_RUNTIME_DIR/nexus`: sockets and pid files.
    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime_dir.join("nexus")
    }
}

/// The file name of the state database inside the state directory.
pub const DATABASE_FILE: &str = "nexus.db";

/// The state database inside a state directory.
pub fn database_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DATABASE_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let map: HashMap<String, PathBuf> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn explicit_variables_win() {
        let dirs = XdgDirs::resolve(
            env(&[
                ("HOME", "/home/a"),
                ("XDG_CONFIG_HOME", "/c"),
                ("XDG_STATE_HOME", "/s"),
                ("XDG_DATA_HOME", "/d"),
                ("XDG_RUNTIME_DIR", "/r"),
            ]),
            1000,
        );
        assert_eq!(
            dirs.daemon_config_file(),
            PathBuf::from("/c/nexus/nexus.yaml")
        );
        assert_eq!(dirs.token_file(), PathBuf::from("/c/nexus/token"));
        assert_eq!(
            dirs.cli_config_file(),
            PathBuf::from("/c/nexusctl/config.yaml")
        );
        assert_eq!(
            database_path(&dirs.state_dir()),
            PathBuf::from("/s/nexus/nexus.db")
        );
        assert_eq!(dirs.data_dir(), PathBuf::from("/d/nexus"));
        assert_eq!(dirs.runtime_dir(), PathBuf::from("/r/nexus"));
    }

    #[test]
    fn unset_and_relative_variables_fall_back_under_home() {
        let dirs = XdgDirs::resolve(env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "rel")]), 42);
        assert_eq!(dirs.config_home, PathBuf::from("/home/a/.config"));
        assert_eq!(dirs.state_home, PathBuf::from("/home/a/.local/state"));
        assert_eq!(dirs.data_home, PathBuf::from("/home/a/.local/share"));
        assert_eq!(dirs.runtime_dir, PathBuf::from("/tmp/nexus-42"));
    }
}
