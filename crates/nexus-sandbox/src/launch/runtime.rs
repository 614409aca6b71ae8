//! The sandbox's runtime directory (agent socket and log), and reading what bwrap
//! reports about the sandbox it started.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::{LOG_NAME, LaunchError, SOCKET_NAME, START_TIMEOUT};

/// The runtime directory's contents, made by [`create_runtime_dir`].
pub(super) struct Runtime {
    pub listener: UnixListener,
    pub log: File,
    pub log_path: PathBuf,
}

pub(super) fn create_runtime_dir(dir: &Path) -> Result<Runtime, LaunchError> {
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LaunchError::Runtime { path, source }
    };
    let socket_path = dir.join(SOCKET_NAME);
    if socket_path.as_os_str().len() > 107 {
        return Err(LaunchError::SocketPathTooLong(socket_path));
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(error(parent))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(error(dir))?;
    let listener = UnixListener::bind(&socket_path).map_err(error(&socket_path))?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
        .map_err(error(&socket_path))?;
    let log_path = dir.join(LOG_NAME);
    let log = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(error(&log_path))?;
    Ok(Runtime {
        listener,
        log,
        log_path,
    })
}

/// Reads bwrap's `--info-fd` JSON to its end and returns `child-pid`, or `None` when
/// bwrap closed it without one (it failed first).
pub(super) fn read_child_pid(info: &OwnedFd) -> Option<u32> {
    let mut text = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        let mut poll = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(info),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout =
            nix::poll::PollTimeout::try_from(START_TIMEOUT).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut poll, timeout) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
        match nix::unistd::read(info, &mut buffer) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    parse_child_pid(&String::from_utf8_lossy(&text))
}

/// `"child-pid": 1234` from bwrap's info JSON.
fn parse_child_pid(json: &str) -> Option<u32> {
    let rest = json.split("\"child-pid\"").nth(1)?;
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The last 2 KiB of the log, for error messages.
pub(super) fn log_tail(log: &mut File) -> String {
    let length = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut text = String::new();
    if log
        .seek(SeekFrom::Start(length.saturating_sub(2048)))
        .is_ok()
    {
        let mut bytes = Vec::new();
        let _ = log.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).trim().to_owned();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn parses_bwrap_info() {
        let json = "{\n    \"child-pid\": 23123,\n    \"mnt-namespace\": 4026532178\n}";
        assert_eq!(parse_child_pid(json), Some(23123));
        assert_eq!(parse_child_pid(""), None);
        assert_eq!(parse_child_pid("{\"child-pid\": x}"), None);
    }

    #[test]
    fn runtime_dir_is_private_and_holds_socket_and_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = dir.path().join("sandboxes/sb-1");
        let made = create_runtime_dir(&runtime).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").mode() & 0o777;
        assert_eq!(mode(&runtime), 0o700);
        assert_eq!(mode(&runtime.join(SOCKET_NAME)), 0o600);
        assert_eq!(mode(&made.log_path), 0o600);
        assert!(
            matches!(
                create_runtime_dir(&runtime),
                Err(LaunchError::Runtime { .. })
            ),
            "exists"
        );
        let long = dir.path().join("x".repeat(120));
        assert!(matches!(
            create_runtime_dir(&long),
            Err(LaunchError::SocketPathTooLong(_))
        ));
    }
}
