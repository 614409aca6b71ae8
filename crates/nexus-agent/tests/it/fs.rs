//! The file API (protocol version 2) against the real agent: reads, writes, stat, list,
//! mutations, batch, glob/grep, tar, watch, and the path rules (magic links refused).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream};
use nexus_agent_proto::fs::{
    BatchOp, BatchOutput, BatchRequest, ContentEncoding, CopyRequest, FileType, HashMode,
    ListRequest, MkdirRequest, MoveRequest, Outcome, RemoveRequest, StatRequest, TarUploadRequest,
    WatchEvent, WatchRequest, WriteRequest,
};
use nexus_agent_proto::{
    AgentClient, ClientOptions, ErrorCode, Frame, FrameCodec, FrameType, ProtoError, Request,
    Response,
};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::harness::{TestAgent, eventually};

/// An agent whose workdir is a fresh temporary directory.
pub struct Fixture {
    pub agent: TestAgent,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let workdir = dir.path().to_str().expect("utf-8 temp path").to_owned();
        let agent = TestAgent::start_with(&["--workdir", &workdir]);
        Self { agent, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn abs(&self, rel: &str) -> String {
        self.path(rel)
            .to_str()
            .expect("reading through the agent")
            .to_owned()
    }
}

fn body(chunks: Vec<Vec<u8>>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
}

async fn read_all(
    client: &AgentClient,
    path: &str,
    offset: u64,
    length: Option<u64>,
) -> (u64, Vec<u8>) {
    let (info, mut stream) = client
        .fs_read(path, offset, length)
        .await
        .expect("reading through the agent");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("reading through the agent"));
    }
    assert_eq!(info.length, out.len() as u64, "announced length matches");
    (info.stat.size, out)
}

pub fn remote_code(err: &ProtoError) -> ErrorCode {
    err.remote_code()
        .unwrap_or_else(|| panic!("expected a refusal, got {err:?}"))
}

#[tokio::test]
async fn reads_whole_files_ranges_and_past_the_end() {
    let fx = Fixture::new();
    std::fs::write(fx.path("f"), b"0123456789").unwrap();
    let client = fx.agent.connect().await;
    assert_eq!(
        read_all(&client, "f", 0, None).await,
        (10, b"0123456789".to_vec())
    );
    assert_eq!(read_all(&client, "f", 2, Some(3)).await.1, b"234");
    assert_eq!(read_all(&client, "f", 8, Some(100)).await.1, b"89");
    assert_eq!(read_all(&client, "f", 10, None).await.1, b"");
    assert_eq!(read_all(&client, "f", 50, Some(5)).await.1, b"");

    // Larger than the flow-control window, several reads at once on one connection.
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    std::fs::write(fx.path("big"), &big).unwrap();
    let abs = fx.abs("big");
    let (a, b, c) = tokio::join!(
        read_all(&client, &abs, 0, None),
        read_all(&client, "big", 1_000_000, Some(3_000_000)),
        read_all(&client, "f", 0, None),
    );
    assert!(a.1 == big, "whole big file");
    assert!(b.1 == big[1_000_000..4_000_000], "big range");
    assert_eq!(c.1, b"0123456789");

    let err = client.fs_read("missing", 0, None).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::NotFound);
    assert!(err.to_string().contains("missing"), "{err}");
    std::fs::create_dir(fx.path("d")).unwrap();
    let err = client.fs_read("d", 0, None).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::IsADirectory);
    let err = client.fs_read("", 0, None).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::InvalidPath);
    let err = client.fs_read("a\0b", 0, None).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::InvalidPath);
}

#[tokio::test]
async fn writes_replace_append_create_parents_and_mode() {
    let fx = Fixture::new();
    let client = fx.agent.connect().await;
    let mut request = WriteRequest::new("a/b/c.txt");
    request.mode = Some(0o640);
    let err = client
        .fs_write(request.clone(), body(vec![b"x".to_vec()]))
        .await
        .unwrap_err();
    assert_eq!(
        remote_code(&err),
        ErrorCode::NotFound,
        "no parents without create_parents"
    );
    request.create_parents = true;
    let written = client
        .fs_write(request, body(vec![b"hello ".to_vec(), b"world".to_vec()]))
        .await
        .unwrap();
    assert_eq!(written.bytes, 11);
    assert_eq!(written.stat.size, 11);
    assert_eq!(written.stat.mode, 0o640);
    assert_eq!(written.stat.path, fx.abs("a/b/c.txt"));
    let file = fx.path("a/b/c.txt");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello world");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o640
    );

    let mut append = WriteRequest::new(fx.abs("a/b/c.txt"));
    append.append = true;
    let appended = client
        .fs_write(append.clone(), body(vec![b"!".to_vec()]))
        .await
        .unwrap();
    assert_eq!(appended.stat.size, 12);
    assert_eq!(std::fs::read(&file).unwrap(), b"hello world!");
    let expected_hash = client
        .fs_stat("a/b/c.txt", HashMode::Auto)
        .await
        .unwrap()
        .sha256;
    assert_eq!(appended.stat.sha256, expected_hash);

    // Replace keeps the mode of the file it replaces.
    client
        .fs_write(WriteRequest::new("a/b/c.txt"), body(vec![b"new".to_vec()]))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o640
    );

    // Many times the upload window, in odd-sized chunks.
    let big: Vec<u8> = (0..9 * 1024 * 1024 + 3).map(|i| (i % 253) as u8).collect();
    let chunks: Vec<Vec<u8>> = big.chunks(100_003).map(<[u8]>::to_vec).collect();
    let result = client
        .fs_write(WriteRequest::new("big"), body(chunks))
        .await
        .unwrap();
    assert_eq!(result.bytes, big.len() as u64);
    assert!(std::fs::read(fx.path("big")).unwrap() == big);
    let mut names: Vec<String> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "big"], "no temporary file left");
}

#[tokio::test]
async fn a_write_whose_body_fails_midway_keeps_the_old_content() {
    let fx = Fixture::new();
    std::fs::write(fx.path("keep"), b"old content").unwrap();
    let client = fx.agent.connect().await;
    // More than the upload window arrives before the failure, so the agent has written
    // some of it to its temporary file.
    let chunks = vec![
        Ok(Bytes::from(vec![b'x'; 3 * 1024 * 1024])),
        Err(std::io::Error::other("the uploader went away")),
    ];
    let err = client
        .fs_write(WriteRequest::new("keep"), stream::iter(chunks))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtoError::Body(_)), "{err:?}");
    assert_eq!(std::fs::read(fx.path("keep")).unwrap(), b"old content");
    let clean = eventually(Duration::from_secs(5), || {
        std::fs::read_dir(fx.dir.path()).unwrap().count() == 1
    })
    .await;
    assert!(clean, "the temporary file is removed");
    assert_eq!(std::fs::read(fx.path("keep")).unwrap(), b"old content");
    // The connection is still fine.
    client.ping().await.unwrap();
}

#[tokio::test]
async fn bulk_stat_reports_each_item_and_missing_ones_as_not_found() {
    let fx = Fixture::new();
    std::fs::write(fx.path("f"), b"abc").unwrap();
    std::fs::create_dir(fx.path("d")).unwrap();
    std::os::unix::fs::symlink("f", fx.path("l")).unwrap();
    let client = fx.agent.connect().await;
    let results = client
        .fs_stat_many(StatRequest {
            paths: vec!["f".into(), "missing".into(), fx.abs("d"), "l".into()],
            hash: HashMode::Auto,
        })
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    let Outcome::Ok(file) = &results[0].result else {
        panic!("{results:?}")
    };
    assert_eq!(
        (file.file_type, file.size, file.path.as_str()),
        (FileType::File, 3, "f")
    );
    assert_eq!(
        file.sha256.as_deref(),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert!(file.mtime_sec > 0 && file.mtime_ms / 1000 == file.mtime_sec);
    let Outcome::Error(missing) = &results[1].result else {
        panic!("{results:?}")
    };
    assert_eq!(missing.code, ErrorCode::NotFound);
    let Outcome::Ok(dir) = &results[2].result else {
        panic!("{results:?}")
    };
    assert_eq!(dir.file_type, FileType::Dir);
    let Outcome::Ok(link) = &results[3].result else {
        panic!("{results:?}")
    };
    assert_eq!(link.file_type, FileType::Symlink);
    assert_eq!(link.symlink_target.as_deref(), Some("f"));
    let never = client.fs_stat("f", HashMode::Never).await.unwrap();
    assert_eq!(never.sha256, None);
}

#[tokio::test]
async fn list_honours_depth_and_cap_and_sorts() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.path("a/sub")).unwrap();
    std::fs::write(fx.path("a/sub/deep"), b"1").unwrap();
    std::fs::write(fx.path("a/x"), b"1").unwrap();
    std::fs::write(fx.path("b"), b"1").unwrap();
    let client = fx.agent.connect().await;
    let names = |entries: &[nexus_agent_proto::fs::FileStat]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e.path.strip_prefix(&fx.abs("")).unwrap().to_owned())
            .collect()
    };
    let one = client.fs_list(ListRequest::new(".")).await.unwrap();
    assert_eq!(names(&one.entries), ["a", "b"]);
    assert!(!one.truncated);
    let mut request = ListRequest::new(fx.abs(""));
    request.depth = 3;
    let all = client.fs_list(request.clone()).await.unwrap();
    assert_eq!(
        names(&all.entries),
        ["a", "a/sub", "a/sub/deep", "a/x", "b"]
    );
    assert!(
        all.entries.iter().all(|e| e.sha256.is_none()),
        "no hash by default"
    );
    request.depth = 2;
    let two = client.fs_list(request.clone()).await.unwrap();
    assert_eq!(names(&two.entries), ["a", "a/sub", "a/x", "b"]);
    request.max_entries = 2;
    let capped = client.fs_list(request).await.unwrap();
    assert_eq!(capped.entries.len(), 2);
    assert!(capped.truncated);
    let err = client.fs_list(ListRequest::new("b")).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::NotADirectory);
}

#[tokio::test]
async fn mkdir_move_remove_and_copy() {
    let fx = Fixture::new();
    let client = fx.agent.connect().await;
    let mkdir = |path: &str, parents: bool| MkdirRequest {
        path: path.into(),
        parents,
        mode: None,
    };
    let err = client.fs_mkdir(mkdir("p/q/r", false)).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::NotFound);
    let made = client.fs_mkdir(mkdir("p/q/r", true)).await.unwrap();
    assert_eq!(made.file_type, FileType::Dir);
    assert!(fx.path("p/q/r").is_dir());
    client.fs_mkdir(mkdir("p/q/r", true)).await.unwrap();
    let err = client.fs_mkdir(mkdir("p/q/r", false)).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::Exists);

    std::fs::write(fx.path("one"), b"1").unwrap();
    std::fs::write(fx.path("two"), b"2").unwrap();
    let moving = |overwrite| MoveRequest {
        from: "one".into(),
        to: "two".into(),
        overwrite,
    };
    let err = client.fs_move(moving(false)).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::Exists);
    assert_eq!(std::fs::read(fx.path("two")).unwrap(), b"2", "untouched");
    let moved = client.fs_move(moving(true)).await.unwrap();
    assert_eq!(moved.path, fx.abs("two"));
    assert_eq!(std::fs::read(fx.path("two")).unwrap(), b"1");
    assert!(!fx.path("one").exists());

    std::fs::write(fx.path("p/q/r/file"), b"x").unwrap();
    let copied = client
        .fs_copy(CopyRequest {
            from: "p".into(),
            to: "p2".into(),
            overwrite: false,
        })
        .await
        .unwrap();
    assert_eq!((copied.dirs, copied.files, copied.bytes), (3, 1, 1));
    assert_eq!(std::fs::read(fx.path("p2/q/r/file")).unwrap(), b"x");

    let remove = |path: &str, recursive| RemoveRequest {
        path: path.into(),
        recursive,
    };
    let err = client.fs_remove(remove("p", false)).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::NotEmpty);
    assert!(fx.path("p/q/r/file").exists());
    let removed = client.fs_remove(remove("p", true)).await.unwrap();
    assert_eq!(removed.removed, 4);
    assert!(!fx.path("p").exists());
    let err = client.fs_remove(remove("p", true)).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::NotFound);
    client.fs_remove(remove("two", false)).await.unwrap();
    assert!(!fx.path("two").exists());
    let err = client.fs_remove(remove("/", true)).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::InvalidPath);
}

#[tokio::test]
async fn batch_reports_each_item_and_goes_on_after_a_failure() {
    let fx = Fixture::new();
    let client = fx.agent.connect().await;
    let ops = vec![
        BatchOp::Mkdir(MkdirRequest {
            path: "d".into(),
            parents: false,
            mode: None,
        }),
        BatchOp::Write {
            request: WriteRequest::new("d/text"),
            content: "héllo".into(),
            encoding: ContentEncoding::Text,
        },
        BatchOp::Remove(RemoveRequest {
            path: "nope".into(),
            recursive: false,
        }),
        BatchOp::Write {
            request: WriteRequest::new("d/bin"),
            content: "AP8=".into(),
            encoding: ContentEncoding::Base64,
        },
        BatchOp::Stat {
            path: "d/bin".into(),
            hash: HashMode::Never,
        },
    ];
    let results = client
        .fs_batch(BatchRequest {
            ops: ops.clone(),
            stop_on_error: false,
        })
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    assert!(
        matches!(&results[0], Outcome::Ok(BatchOutput::Stat { .. })),
        "{results:?}"
    );
    assert!(matches!(
        &results[1],
        Outcome::Ok(BatchOutput::Written { bytes: 6, .. })
    ));
    assert!(matches!(&results[2], Outcome::Error(e) if e.code == ErrorCode::NotFound));
    assert!(matches!(&results[4], Outcome::Ok(BatchOutput::Stat { stat }) if stat.size == 2));
    assert_eq!(
        std::fs::read(fx.path("d/text")).unwrap(),
        "héllo".as_bytes()
    );
    assert_eq!(std::fs::read(fx.path("d/bin")).unwrap(), [0x00, 0xff]);

    let results = client
        .fs_batch(BatchRequest {
            ops: ops[2..].to_vec(),
            stop_on_error: true,
        })
        .await
        .unwrap();
    assert!(matches!(&results[1], Outcome::Error(e) if e.code == ErrorCode::Cancelled));
}

#[tokio::test]
async fn tar_download_and_upload_round_trip_a_directory() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.path("tree/sub/empty")).unwrap();
    std::fs::write(fx.path("tree/a.txt"), b"alpha").unwrap();
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 241) as u8).collect();
    std::fs::write(fx.path("tree/sub/big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("a.txt", fx.path("tree/link")).unwrap();
    std::fs::set_permissions(
        fx.path("tree/a.txt"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    let client = fx.agent.connect().await;

    let mut download = client.fs_download_tar("tree").await.unwrap();
    let mut archive = Vec::new();
    while let Some(chunk) = download.next().await {
        archive.extend_from_slice(&chunk.unwrap());
    }
    let summary = download.tar_summary().expect("a summary at the end");
    assert_eq!((summary.files, summary.dirs, summary.symlinks), (2, 3, 1));
    assert_eq!(summary.bytes, 5 + big.len() as u64);

    let chunks: Vec<Vec<u8>> = archive.chunks(70_000).map(<[u8]>::to_vec).collect();
    let uploaded = client
        .fs_upload_tar(
            TarUploadRequest {
                dest: "copy/here".into(),
            },
            body(chunks),
        )
        .await
        .unwrap();
    assert_eq!(uploaded, summary);
    let root = fx.path("copy/here/tree");
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"alpha");
    assert!(std::fs::read(root.join("sub/big.bin")).unwrap() == big);
    assert!(root.join("sub/empty").is_dir());
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        std::fs::metadata(root.join("a.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o751
    );
}

/// A tar holding one file whose name is written raw (the `tar` crate refuses to build `..`).
fn tar_with_entry(name: &[u8], content: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(&header, content)
        .expect("building the test archive");
    builder.into_inner().expect("building the test archive")
}

#[tokio::test]
async fn tar_upload_refuses_entries_that_escape_the_destination() {
    let fx = Fixture::new();
    let client = fx.agent.connect().await;
    for name in [&b"../escaped"[..], b"/abs-escaped"] {
        let archive = tar_with_entry(name, b"evil");
        let err = client
            .fs_upload_tar(
                TarUploadRequest {
                    dest: "dest".into(),
                },
                body(vec![archive]),
            )
            .await
            .unwrap_err();
        assert_eq!(remote_code(&err), ErrorCode::InvalidPath, "{err}");
        assert!(err.to_string().contains("escaped"), "{err}");
    }
    assert!(!fx.path("escaped").exists());
    assert!(!Path::new("/abs-escaped").exists());
    let fine = client
        .fs_upload_tar(
            TarUploadRequest {
                dest: "dest".into(),
            },
            body(vec![tar_with_entry(b"ok.txt", b"fine")]),
        )
        .await
        .unwrap();
    assert_eq!(fine.files, 1);
    assert_eq!(std::fs::read(fx.path("dest/ok.txt")).unwrap(), b"fine");
}

async fn next_change(stream: &mut nexus_agent_proto::WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a change in time")
        .expect("the watch goes on")
        .expect("a change")
}

#[tokio::test]
async fn watch_reports_create_modify_delete_and_rename() {
    let fx = Fixture::new();
    std::fs::create_dir(fx.path("w")).unwrap();
    let client = fx.agent.connect().await;
    let mut watch = client
        .fs_watch(WatchRequest {
            path: "w".into(),
            recursive: true,
        })
        .await
        .unwrap();
    let w = |rel: &str| fx.abs(&format!("w/{rel}"));

    std::fs::File::create(fx.path("w/f")).unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Create {
            path: w("f"),
            dir: false
        }
    );
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Modify { path: w("f") }
    );
    std::fs::write(fx.path("w/f"), b"more").unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Modify { path: w("f") }
    );
    std::fs::rename(fx.path("w/f"), fx.path("w/g")).unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Rename {
            from: w("f"),
            to: w("g"),
            dir: false
        }
    );
    std::fs::remove_file(fx.path("w/g")).unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Delete {
            path: w("g"),
            dir: false
        }
    );

    // Recursive: a new subdirectory is watched too.
    std::fs::create_dir(fx.path("w/sub")).unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        WatchEvent::Create {
            path: w("sub"),
            dir: true
        }
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::remove_dir(fx.path("w/sub")).ok();
    std::fs::create_dir(fx.path("w/sub2")).unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&WatchEvent::Create {
        path: w("sub2"),
        dir: true,
    }) {
        seen.push(next_change(&mut watch).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(fx.path("w/sub2/inner"), b"x").unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&WatchEvent::Modify {
        path: w("sub2/inner"),
    }) {
        seen.push(next_change(&mut watch).await);
    }
    assert!(
        seen.contains(&WatchEvent::Create {
            path: w("sub2/inner"),
            dir: false
        }),
        "{seen:?}"
    );
    drop(watch);
    client.ping().await.unwrap();
}

#[tokio::test]
async fn magic_links_are_refused_and_plain_symlinks_followed() {
    let fx = Fixture::new();
    std::os::unix::fs::symlink("/proc/self/root", fx.path("root-link")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/0", fx.path("fd-link")).unwrap();
    std::fs::write(fx.path("real"), b"real").unwrap();
    std::os::unix::fs::symlink("real", fx.path("plain-link")).unwrap();
    let client = fx.agent.connect().await;

    let hostname = "root-link/etc/hostname";
    let err = client.fs_read(hostname, 0, None).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::SymlinkRefused, "{err}");
    assert!(err.to_string().contains(hostname), "{err}");
    let err = client.fs_read("fd-link", 0, None).await.unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::SymlinkRefused, "{err}");
    let err = client
        .fs_write(
            WriteRequest::new("root-link/tmp/x"),
            body(vec![b"x".to_vec()]),
        )
        .await
        .unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::SymlinkRefused, "{err}");
    let err = client
        .fs_list(ListRequest::new("root-link/etc"))
        .await
        .unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::SymlinkRefused, "{err}");
    let err = client
        .fs_stat("/proc/self/root/etc", HashMode::Never)
        .await
        .unwrap_err();
    assert_eq!(remote_code(&err), ErrorCode::SymlinkRefused, "{err}");

    // The link itself can be described; plain symlinks are followed for reads.
    let link = client.fs_stat("root-link", HashMode::Auto).await.unwrap();
    assert_eq!(link.symlink_target.as_deref(), Some("/proc/self/root"));
    assert_eq!(read_all(&client, "plain-link", 0, None).await.1, b"real");
}

#[tokio::test]
async fn hashing_a_file_for_a_stat_leaves_its_access_time_alone() {
    use std::os::unix::fs::MetadataExt as _;
    let fx = Fixture::new();
    std::fs::write(fx.path("f"), b"content").unwrap();
    // Accessed two days ago, modified three: any read would update the access time under
    // the default `relatime` (older than a day) and `strictatime` alike.
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let times = std::fs::FileTimes::new()
        .set_accessed(now - 2 * day)
        .set_modified(now - 3 * day);
    std::fs::File::options()
        .write(true)
        .open(fx.path("f"))
        .unwrap()
        .set_times(times)
        .unwrap();
    let before = std::fs::metadata(fx.path("f")).unwrap().atime();
    let client = fx.agent.connect().await;
    let stat = client.fs_stat("f", HashMode::Always).await.unwrap();
    assert!(stat.sha256.is_some(), "{stat:?}");
    let after = std::fs::metadata(fx.path("f")).unwrap().atime();
    assert_eq!(after, before, "the stat's read changed the access time");
}

/// An answer larger than a frame may be used to be unsendable, which ended the agent's
/// writer: every later call on the connection hung. A listing of 10,000 long names
/// (about 2.4 MB of JSON) is now cut to what fits and marked truncated, a bulk stat of
/// 3,000 paths is asked in parts, and the connection goes on.
#[tokio::test]
async fn answers_larger_than_a_frame_are_cut_or_split_and_the_connection_goes_on() {
    let fx = Fixture::new();
    let big = fx.path("big");
    std::fs::create_dir(&big).unwrap();
    let long = "n".repeat(150);
    for i in 0..10_000 {
        std::fs::File::create(big.join(format!("{long}-{i:05}"))).unwrap();
    }
    let client = fx.agent.connect().await;
    let listed = tokio::time::timeout(
        Duration::from_secs(30),
        client.fs_list(ListRequest::new("big")),
    )
    .await
    .expect("the listing is answered")
    .unwrap();
    assert!(listed.truncated);
    assert!(
        listed.entries.len() > 1_000 && listed.entries.len() < 10_000,
        "{} entries",
        listed.entries.len()
    );
    // Sorted, so what is kept is the listing's start.
    assert!(listed.entries[0].path.ends_with(&format!("{long}-00000")));

    let paths: Vec<String> = (0..3_000).map(|i| format!("big/{long}-{i:05}")).collect();
    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        client.fs_stat_many(StatRequest {
            paths: paths.clone(),
            hash: HashMode::Auto,
        }),
    )
    .await
    .expect("the stat is answered")
    .unwrap();
    assert_eq!(
        stats.iter().map(|s| s.path.clone()).collect::<Vec<_>>(),
        paths
    );
    assert!(stats.iter().all(|s| matches!(s.result, Outcome::Ok(_))));
    tokio::time::timeout(Duration::from_secs(5), client.ping())
        .await
        .expect("the connection still answers")
        .unwrap();
}

/// Sends one `fs_stat` of `paths` on a raw connection that offers versions up to `max`,
/// and returns the frame that answers it.
async fn raw_stat_answer(fx: &Fixture, max: u16, paths: &[&str]) -> Frame {
    let stream = UnixStream::connect(&fx.agent.socket)
        .await
        .expect("connecting to the agent");
    let mut framed = Framed::new(stream, FrameCodec::new());
    let hello = nexus_agent_proto::Hello {
        magic: nexus_agent_proto::MAGIC.into(),
        min_version: 1,
        max_version: max,
        client: "raw".into(),
    };
    framed
        .send(Frame::json(FrameType::Hello, 0, &hello))
        .await
        .expect("sending HELLO");
    let welcome: nexus_agent_proto::AgentInfo = framed
        .next()
        .await
        .expect("a WELCOME")
        .expect("a frame")
        .parse()
        .expect("WELCOME parses");
    assert_eq!(welcome.protocol_version, max);
    let request = Request::FsStat(StatRequest {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        hash: HashMode::Auto,
    });
    framed
        .send(Frame::json(FrameType::Request, 1, &request))
        .await
        .expect("sending the request");
    let answer = framed.next().await.expect("an answer").expect("a frame");
    assert_eq!(answer.channel, 1);
    answer
}

#[tokio::test]
async fn bulk_stat_is_answered_packed_from_version_4_and_as_json_before() {
    let fx = Fixture::new();
    std::fs::write(fx.path("f"), b"abc").unwrap();
    std::os::unix::fs::symlink("f", fx.path("l")).unwrap();
    let paths = ["f", "l", "missing", "."];
    let packed = raw_stat_answer(&fx, 4, &paths).await;
    let json = raw_stat_answer(&fx, 3, &paths).await;
    assert_eq!(packed.kind, FrameType::Packed);
    assert_eq!(json.kind, FrameType::Response);
    assert!(
        packed.payload.len() * 2 < json.payload.len(),
        "packed {} bytes, JSON {}",
        packed.payload.len(),
        json.payload.len()
    );
    // The same answer either way.
    let Response::FsStats { results } = packed.response().unwrap() else {
        panic!("not fs_stats");
    };
    assert_eq!(
        json.response().unwrap(),
        Response::FsStats {
            results: results.clone()
        }
    );
    assert_eq!(results.len(), 4);
    let Outcome::Ok(link) = &results[1].result else {
        panic!("{results:?}")
    };
    assert_eq!(link.symlink_target.as_deref(), Some("f"));
    let Outcome::Error(missing) = &results[2].result else {
        panic!("{results:?}")
    };
    assert_eq!(missing.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn file_operations_need_protocol_version_2() {
    let fx = Fixture::new();
    let stream = UnixStream::connect(&fx.agent.socket).await.unwrap();
    let options = ClientOptions {
        versions: 1..=1,
        ..ClientOptions::default()
    };
    let (client, info) = AgentClient::handshake_with(stream, options).await.unwrap();
    assert_eq!(info.protocol_version, 1);
    let err = client.fs_stat("x", HashMode::Never).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::Unsupported {
                needed: 2,
                negotiated: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "fs_stat needs protocol version 2, the agent speaks version 1"
    );
    // The v1 operations still work on that connection, and the agent itself refuses a
    // file operation sent on it anyway.
    client.ping().await.unwrap();
    let stream = UnixStream::connect(&fx.agent.socket).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new());
    nexus_agent_proto::handshake::client_handshake(&mut framed, 1..=1, "raw")
        .await
        .unwrap();
    let request = Request::FsStat(StatRequest {
        paths: vec!["x".into()],
        hash: HashMode::Never,
    });
    framed
        .send(Frame::json(FrameType::Request, 1, &request))
        .await
        .unwrap();
    let reply = framed.next().await.unwrap().unwrap();
    let Response::Error { code, message } = reply.parse().unwrap() else {
        panic!("expected an error: {reply:?}");
    };
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("needs protocol version 2"), "{message}");
    let (_, info) = fx.agent.connect_info().await;
    assert_eq!(info.protocol_version, nexus_agent_proto::PROTOCOL_VERSION);
}
