//! Reading and writing cgroup control files, with errors that name the file.

use std::io::Write;
use std::path::Path;

use super::CgroupError;

/// Unit tests run against a fake cgroup tree in a plain directory, where the kernel does
/// not create control files in new cgroups: there writes create them, and append so a
/// test sees every write. Against cgroupfs (every other build) a missing control file is
/// an error, as it must be.
const CREATE_MISSING: bool = cfg!(test);

/// Writes `value` to the control file `path` in one `write(2)`.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let error = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(CREATE_MISSING)
        .append(CREATE_MISSING)
        .open(path)
        .map_err(error)?;
    file.write_all(value.as_bytes()).map_err(error)
}

/// Reads a whole control file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A file holding one number (`pids.current`, `memory.current`), or `None`.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read(path).ok()?.trim().parse().ok()
}

/// A space-separated list (`cgroup.controllers`, `cgroup.subtree_control`).
pub(crate) fn read_list(path: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(read(path)?.split_whitespace().map(str::to_owned).collect())
}

/// The number after `key` in a `key value` per line file (`memory.events`, `cpu.stat`,
/// `memory.oom_control`, `/proc/meminfo`).
pub(crate) fn read_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == key).then_some(())?;
        fields.next()?.parse().ok()
    })
}

/// An error and its causes as one line: `outer: inner`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_are_parsed() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(read_keyed(events, "oom_kill"), Some(1));
        assert_eq!(read_keyed(events, "oom"), Some(2));
        assert_eq!(read_keyed(events, "missing"), None);
        let meminfo = "MemTotal:       24683652 kB\nSwapTotal:             0 kB\n";
        assert_eq!(read_keyed(meminfo, "SwapTotal:"), Some(0));
    }

    #[test]
    fn errors_name_the_file_and_the_value() {
        let error = write_file(Path::new("/nonexistent/dir/pids.max"), "50").expect_err("no dir");
        assert_eq!(
            chain(&error),
            "cannot write \"50\" to /nonexistent/dir/pids.max: No such file or directory (os error 2)"
        );
        assert_eq!(read_u64(Path::new("/nonexistent")), None);
    }
}
