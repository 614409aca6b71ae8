//! The API bearer token: configured, or generated once into a 0600 file that
//! `nexusctl` on the same host finds by itself.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use subtle::ConstantTimeEq;

/// A bearer token. Its `Debug` output is redacted so it cannot reach a log by accident.
#[derive(Clone)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// Wraps a token that was already validated.
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// Compares in constant time (for equal lengths), so timing does not reveal a prefix.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// The token itself, for the in-process handle tests use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where the token came from, for the status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `NEXUS_TOKEN` or `token:` in the config file.
    Configured,
    /// The token file, generated now or on an earlier start.
    File,
}

/// Uses the configured token, else the token file, else generates the file.
pub fn load_or_create(
    configured: Option<&str>,
    file: &Path,
) -> anyhow::Result<(ApiToken, TokenSource)> {
    if let Some(token) = configured {
        return Ok((ApiToken::new(token.to_owned()), TokenSource::Configured));
    }
    if file.exists() {
        return read_token_file(file).map(|t| (t, TokenSource::File));
    }
    let token = generate();
    write_token_file(file, &token)?;
    tracing::info!(path = %file.display(), "generated a new API token");
    Ok((ApiToken::new(token), TokenSource::File))
}

fn read_token_file(path: &Path) -> anyhow::Result<ApiToken> {
    let meta = fs_err::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tracing::warn!(path = %path.display(), "the token file was readable by other users; its mode is now 0600");
    }
    let text = fs_err::read_to_string(path)?;
    let token = text.trim().to_owned();
    crate::config::validate_token(&token).with_context(|| {
        format!(
            "the token file {} is invalid; delete it to have a new token generated",
            path.display()
        )
    })?;
    Ok(ApiToken::new(token))
}

fn write_token_file(path: &Path, token: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create token file {}", path.display()))?;
    writeln!(file, "{token}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write token file {}", path.display()))
}

/// 32 random bytes from the OS, hex encoded.
fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_file_is_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nexus").join("token");
        let (first, source) = load_or_create(None, &path).expect("generate");
        assert_eq!(source, TokenSource::File);
        assert_eq!(first.expose().len(), 64);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (second, _) = load_or_create(None, &path).expect("reload");
        assert_eq!(first.expose(), second.expose());
    }

    #[test]
    fn configured_token_wins_and_no_file_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        let (token, source) = load_or_create(Some("configured-token-0123"), &path).expect("ok");
        assert_eq!(source, TokenSource::Configured);
        assert!(token.matches("configured-token-0123"));
        assert!(!path.exists());
    }

    #[test]
    fn a_loose_token_file_is_tightened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (token, _) = load_or_create(None, &path).expect("load");
        assert!(token.matches("0123456789abcdef0123"));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn matching_is_exact() {
        let token = ApiToken::new("0123456789abcdef".into());
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeX"));
        assert!(!token.matches("0123456789abcdef0"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
    }
}
