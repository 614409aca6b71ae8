//! Content hashes remembered by file identity and change times, so a stat of an unchanged
//! file does not read it again (bulk stats of a tree are the common case).
//!
//! A hash is remembered under the file's device, inode, size, mtime and ctime, and found
//! again only when all of them are unchanged. Any write changes the ctime, but timestamps
//! are coarse (a clock tick): two writes within one tick can leave them equal. So a hash
//! is remembered only once the file's ctime is [`SETTLED`] in the past, as git does with
//! "racy" index entries: a later write then lands in a later tick and changes the ctime.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::FileStat as RawStat;

/// How old a ctime must be for its file's hash to be remembered: well above the coarsest
/// timestamp tick (10 ms at `HZ=100`).
const SETTLED: Duration = Duration::from_millis(50);

/// Hashes remembered at most; the whole cache is dropped when full (cheap, and rare).
const CAPACITY: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Key {
    fn of(raw: &RawStat) -> Self {
        Self {
            dev: raw.st_dev,
            ino: raw.st_ino,
            size: raw.st_size,
            mtime: (raw.st_mtime, raw.st_mtime_nsec),
            ctime: (raw.st_ctime, raw.st_ctime_nsec),
        }
    }
}

static CACHE: LazyLock<Mutex<HashMap<Key, String>>> = LazyLock::new(Mutex::default);

fn cache() -> std::sync::MutexGuard<'static, HashMap<Key, String>> {
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The remembered hash of the file `raw` describes, if it has not changed since.
pub fn get(raw: &RawStat) -> Option<String> {
    cache().get(&Key::of(raw)).cloned()
}

/// Remembers `sha256` as the hash of the file `raw` describes (the stat taken before it
/// was read), unless its ctime is too recent to be trusted.
pub fn put(raw: &RawStat, sha256: &str) {
    put_at(raw, sha256, SystemTime::now());
}

fn put_at(raw: &RawStat, sha256: &str, now: SystemTime) {
    let Ok(ctime_ns) = u64::try_from(raw.st_ctime)
        .map(|s| Duration::from_secs(s) + Duration::from_nanos(raw.st_ctime_nsec.unsigned_abs()))
    else {
        return;
    };
    let settled = now
        .duration_since(UNIX_EPOCH + ctime_ns)
        .is_ok_and(|age| age >= SETTLED);
    if !settled {
        return;
    }
    let mut cache = cache();
    if cache.len() >= CAPACITY {
        cache.clear();
    }
    cache.insert(Key::of(raw), sha256.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_of(path: &std::path::Path) -> RawStat {
        nix::sys::stat::stat(path).unwrap()
    }

    #[test]
    fn a_settled_unchanged_file_is_found_and_a_changed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let raw = stat_of(&path);
        let later = SystemTime::now() + Duration::from_secs(1);
        put_at(&raw, "hash-one", later);
        assert_eq!(get(&raw).as_deref(), Some("hash-one"));
        // Any write changes size, mtime or ctime: the old hash is not found.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, b"two").unwrap();
        assert_eq!(get(&stat_of(&path)), None);
    }

    #[test]
    fn a_file_changed_within_the_settling_time_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"racy").unwrap();
        let raw = stat_of(&path);
        put_at(&raw, "hash-racy", SystemTime::now());
        assert_eq!(
            get(&raw),
            None,
            "a ctime younger than {SETTLED:?} is not trusted"
        );
    }
}
