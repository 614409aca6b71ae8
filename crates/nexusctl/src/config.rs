//! Where `nexusctl` finds the daemon and its token: flags and `NEXUS_*` variables, then
//! `$XDG_CONFIG_HOME/nexusctl/config.yaml`, then the daemon's own token file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nexus_core::paths::XdgDirs;
use serde::Deserialize;

use crate::cli::GlobalArgs;

/// The shape of `config.yaml`. Unknown keys are refused so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Daemon address.
    url: Option<String>,
    /// API token.
    token: Option<String>,
}

/// The resolved connection settings.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Daemon URL.
    pub url: String,
    /// Token, if one was found anywhere.
    pub token: Option<String>,
}

/// Resolves the connection from flags, the config file and the daemon's token file.
pub fn resolve(global: &GlobalArgs, dirs: &XdgDirs) -> anyhow::Result<Connection> {
    let file = read_config(&dirs.cli_config_file())?;
    let url = global
        .url
        .clone()
        .or(file.url)
        .unwrap_or_else(|| format!("http://{}", nexus_api::DEFAULT_LISTEN));
    let token = global
        .token
        .clone()
        .or(file.token)
        .or_else(|| read_daemon_token(&dirs.token_file()));
    Ok(Connection { url, token })
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml_ng::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
            .unwrap_or_default();
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        anyhow::anyhow!(
            "invalid config file {}{at}: {message} (allowed keys: url, token)",
            path.display()
        )
    })
}

/// The token `nexusd` generated, when this user can read it.
fn read_daemon_token(path: &PathBuf) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> XdgDirs {
        XdgDirs::resolve(
            |name| (name == "XDG_CONFIG_HOME").then(|| root.to_path_buf()),
            1000,
        )
    }

    fn args(url: Option<&str>, token: Option<&str>) -> GlobalArgs {
        GlobalArgs {
            url: url.map(Into::into),
            token: token.map(Into::into),
            json: false,
        }
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_token_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let dirs = dirs(root.path());
        std::fs::create_dir_all(dirs.token_file().parent().expect("parent")).expect("mkdir");
        std::fs::write(dirs.token_file(), "daemon-token\n").expect("write");
        let conn = resolve(&args(None, None), &dirs).expect("resolve");
        assert_eq!(conn.url, "http://127.0.0.1:9600");
        assert_eq!(conn.token.as_deref(), Some("daemon-token"));

        std::fs::create_dir_all(dirs.cli_config_file().parent().expect("parent")).expect("mkdir");
        std::fs::write(
            dirs.cli_config_file(),
            "url: http://10.0.0.1:1\ntoken: file-token\n",
        )
        .expect("write");
        let conn = resolve(&args(None, None), &dirs).expect("resolve");
        assert_eq!(
            (conn.url.as_str(), conn.token.as_deref()),
            ("http://10.0.0.1:1", Some("file-token"))
        );

        let conn = resolve(&args(Some("127.0.0.1:2"), Some("flag-token")), &dirs).expect("resolve");
        assert_eq!(
            (conn.url.as_str(), conn.token.as_deref()),
            ("127.0.0.1:2", Some("flag-token"))
        );
    }

    #[test]
    fn a_broken_config_names_file_and_line() {
        let root = tempfile::tempdir().expect("tempdir");
        let dirs = dirs(root.path());
        std::fs::create_dir_all(dirs.cli_config_file().parent().expect("parent")).expect("mkdir");
        std::fs::write(dirs.cli_config_file(), "url: x\nurll: y\n").expect("write");
        let err = resolve(&args(None, None), &dirs)
            .expect_err("typo")
            .to_string();
        assert!(err.contains("config.yaml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("urll"), "{err}");
    }
}
