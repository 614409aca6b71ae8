//! PACKED frames (protocol version 4): answers in a compact binary encoding instead of
//! JSON, for the answers whose JSON costs more than the work behind them. From version 4
//! on, `fs_stat` is answered this way: a bulk stat of 100 small files is about 25 KB of
//! JSON, and writing and parsing it took about a fifth of the agent's and of the daemon's
//! CPU for the whole call. PROTOCOL.md §2 and §10 are the specification.
//!
//! A payload is one byte saying which answer it is ([`PackedKind`]), then the answer in
//! [postcard](https://docs.rs/postcard) (varint integers, length-prefixed strings, no
//! field names) as laid out by the private wire types below. Decoding gives the same
//! [`Response`] the JSON would have given, so everything above the frame layer is
//! unaware of the encoding.

use std::borrow::Cow;

use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};

use crate::fs::{FileStat, FileType, ItemError, Outcome, StatResult};
use crate::{ErrorCode, ProtoError, Response};

/// What a PACKED payload carries: its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PackedKind {
    /// The answer to `fs_stat`: [`Response::FsStats`].
    FsStats = 1,
}

/// One item of a packed `fs_stat` answer.
#[derive(Serialize, Deserialize)]
enum WireItem<'a> {
    /// The path's stat.
    #[serde(borrow)]
    Ok(WireStat<'a>),
    /// Why it has none.
    Error {
        /// The path as requested.
        path: &'a str,
        /// The error code's name (`not_found`, ...), as in JSON.
        code: Cow<'a, str>,
        /// For people.
        message: &'a str,
    },
}

/// A [`FileStat`] on the wire.
#[derive(Serialize, Deserialize)]
struct WireStat<'a> {
    /// The path as requested (the result's path).
    path: &'a str,
    /// The stat's own path when it differs from `path`.
    stat_path: Option<&'a str>,
    /// 0 file, 1 directory, 2 symlink, 3 other.
    file_type: u8,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ms: i64,
    mtime_sec: i64,
    mtime_nsec: u32,
    symlink_target: Option<&'a str>,
    sha256: Option<&'a str>,
}

/// The PACKED payload of an `fs_stat` answer.
pub fn encode_stats(results: &[StatResult]) -> Vec<u8> {
    let items: Vec<WireItem<'_>> = results
        .iter()
        .map(|result| match &result.result {
            Outcome::Ok(stat) => WireItem::Ok(WireStat {
                path: &result.path,
                stat_path: (stat.path != result.path).then_some(stat.path.as_str()),
                file_type: match stat.file_type {
                    FileType::File => 0,
                    FileType::Dir => 1,
                    FileType::Symlink => 2,
                    FileType::Other => 3,
                },
                size: stat.size,
                mode: stat.mode,
                uid: stat.uid,
                gid: stat.gid,
                mtime_ms: stat.mtime_ms,
                mtime_sec: stat.mtime_sec,
                mtime_nsec: stat.mtime_nsec,
                symlink_target: stat.symlink_target.as_deref(),
                sha256: stat.sha256.as_deref(),
            }),
            Outcome::Error(error) => WireItem::Error {
                path: &result.path,
                code: Cow::Owned(error.code.to_string()),
                message: &error.message,
            },
        })
        .collect();
    // About 60 bytes an item with a hash; one allocation in the common case.
    let mut payload = Vec::with_capacity(1 + results.len() * 64);
    payload.push(PackedKind::FsStats as u8);
    postcard::to_io(&items, &mut payload).expect("writing to a Vec cannot fail");
    payload
}

/// The [`Response`] a PACKED payload carries.
pub fn decode(payload: &[u8]) -> Result<Response, ProtoError> {
    let bad = |message: String| ProtoError::BadPacked(message);
    let (&kind, body) = payload
        .split_first()
        .ok_or_else(|| bad("empty payload".to_owned()))?;
    if kind != PackedKind::FsStats as u8 {
        return Err(bad(format!("unknown packed answer kind {kind}")));
    }
    let items: Vec<WireItem<'_>> =
        postcard::from_bytes(body).map_err(|e| bad(format!("fs_stats: {e}")))?;
    let results = items
        .into_iter()
        .map(|item| match item {
            WireItem::Ok(stat) => StatResult {
                path: stat.path.to_owned(),
                result: Outcome::Ok(FileStat {
                    path: stat.stat_path.unwrap_or(stat.path).to_owned(),
                    file_type: match stat.file_type {
                        0 => FileType::File,
                        1 => FileType::Dir,
                        2 => FileType::Symlink,
                        _ => FileType::Other,
                    },
                    size: stat.size,
                    mode: stat.mode,
                    uid: stat.uid,
                    gid: stat.gid,
                    mtime_ms: stat.mtime_ms,
                    mtime_sec: stat.mtime_sec,
                    mtime_nsec: stat.mtime_nsec,
                    symlink_target: stat.symlink_target.map(str::to_owned),
                    sha256: stat.sha256.map(str::to_owned),
                }),
            },
            WireItem::Error {
                path,
                code,
                message,
            } => StatResult {
                path: path.to_owned(),
                result: Outcome::Error(ItemError {
                    code: error_code(&code),
                    message: message.to_owned(),
                }),
            },
        })
        .collect();
    Ok(Response::FsStats { results })
}

/// The code named `name`; a name this build does not know is [`ErrorCode::Unknown`], as
/// in JSON.
fn error_code(name: &str) -> ErrorCode {
    let name: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        name.into_deserializer();
    ErrorCode::deserialize(name).unwrap_or(ErrorCode::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &str, file_type: FileType) -> FileStat {
        FileStat {
            path: path.to_owned(),
            file_type,
            size: 4096,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            mtime_ms: -1_500,
            mtime_sec: -2,
            mtime_nsec: 500_000_000,
            symlink_target: None,
            sha256: None,
        }
    }

    fn every_shape() -> Vec<StatResult> {
        let mut file = stat("a/f", FileType::File);
        file.sha256 = Some("ab".repeat(32));
        file.size = u64::MAX;
        let mut link = stat("l", FileType::Symlink);
        link.symlink_target = Some("../ünïcode \"target\"".to_owned());
        vec![
            StatResult {
                path: "a/f".to_owned(),
                result: Outcome::Ok(file),
            },
            StatResult {
                path: "/workspace/d/".to_owned(),
                result: Outcome::Ok(stat("/workspace/d", FileType::Dir)),
            },
            StatResult {
                path: "l".to_owned(),
                result: Outcome::Ok(link),
            },
            StatResult {
                path: "/dev/null".to_owned(),
                result: Outcome::Ok(stat("/dev/null", FileType::Other)),
            },
            StatResult {
                path: "gone".to_owned(),
                result: Outcome::Error(ItemError {
                    code: ErrorCode::NotFound,
                    message: "gone: no such file or directory".to_owned(),
                }),
            },
        ]
    }

    #[test]
    fn every_kind_of_result_comes_back_as_it_was_sent() {
        let results = every_shape();
        let decoded = decode(&encode_stats(&results)).unwrap();
        assert_eq!(decoded, Response::FsStats { results });
    }

    #[test]
    fn no_results_is_a_valid_answer() {
        let decoded = decode(&encode_stats(&[])).unwrap();
        assert_eq!(decoded, Response::FsStats { results: vec![] });
    }

    #[test]
    fn it_is_much_smaller_than_the_json() {
        let results: Vec<StatResult> = (0..100)
            .map(|i| {
                let path = format!("/workspace/stat/f{i}");
                let mut file = stat(&path, FileType::File);
                file.sha256 = Some("0f".repeat(32));
                StatResult {
                    path,
                    result: Outcome::Ok(file),
                }
            })
            .collect();
        let json = serde_json::to_vec(&Response::FsStats {
            results: results.clone(),
        })
        .unwrap();
        let packed = encode_stats(&results);
        assert!(
            packed.len() * 2 < json.len(),
            "packed {} bytes, JSON {}",
            packed.len(),
            json.len()
        );
    }

    #[test]
    fn an_error_code_this_build_does_not_know_reads_as_unknown() {
        let items = vec![WireItem::Error {
            path: "p",
            code: Cow::Borrowed("from_a_newer_agent"),
            message: "m",
        }];
        let mut payload = vec![PackedKind::FsStats as u8];
        payload.extend(postcard::to_allocvec(&items).unwrap());
        let Response::FsStats { results } = decode(&payload).unwrap() else {
            panic!("not fs_stats");
        };
        assert_eq!(
            results[0].result,
            Outcome::Error(ItemError {
                code: ErrorCode::Unknown,
                message: "m".to_owned()
            })
        );
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let good = encode_stats(&every_shape());
        assert!(matches!(decode(&[]), Err(ProtoError::BadPacked(_))));
        assert!(matches!(decode(&[9, 0]), Err(ProtoError::BadPacked(_))));
        for cut in 1..good.len() {
            assert!(
                matches!(decode(&good[..cut]), Err(ProtoError::BadPacked(_))),
                "a payload cut at {cut} of {} bytes decoded",
                good.len()
            );
        }
    }
}
