//! The file API of one running sandbox through the typed client (issue 4): reads, atomic
//! writes and bulk stats of small files, and big downloads and uploads as throughput.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::StreamExt;
use nexus_client::WriteOptions;

use crate::lab::Lab;
use crate::measure::Plan;
use crate::report::{Group, Operation};
use crate::stats::{Rates, Samples};

/// Names of the operations measured here, in report order.
const NAMES: [&str; 6] = [
    "file_read_1k",
    "file_write_1k",
    "file_stat_100",
    "file_stat_100_fresh",
    "file_download_1g",
    "file_upload_1g",
];
/// Files of the bulk stat.
const STAT_FILES: usize = 100;
/// How long the bulk stat's files are left alone before `file_stat_100`: the agent
/// remembers a file's hash only once the file's ctime is 50 ms old (a later write could
/// otherwise land in the same timestamp tick unseen), so a stat within 50 ms of a write
/// reads and hashes the file every time; `file_stat_100_fresh` measures that case.
const STAT_SETTLE: Duration = Duration::from_millis(200);
/// Chunks of the streamed upload.
const CHUNK: usize = 1024 * 1024;
/// One chunk of zeros, shared by every upload.
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Measures every file operation on one fresh sandbox, which is deleted afterwards.
pub async fn measure(lab: &Lab, plan: &Plan) -> Vec<Operation> {
    let target = match lab.create_running().await {
        Ok(info) => info,
        Err(e) => {
            let reason = format!("cannot create the sandbox for the file API: {e:#}");
            return NAMES
                .iter()
                .map(|name| Operation::skipped(name, Group::Nexus, reason.clone()))
                .collect();
        }
    };
    let id = target.id.as_str();
    let n = plan.iterations;
    let mut operations = vec![read_1k(lab, id, n).await, write_1k(lab, id, n).await];
    operations.extend(stat_100(lab, id, n).await);
    operations.extend(transfers(lab, id, plan).await);
    let _ = lab.delete(id).await;
    operations
}

/// `file_read_1k`: `read_file` of a 1 KiB file, after three warm-up reads.
async fn read_1k(lab: &Lab, id: &str, n: usize) -> Operation {
    let path = "/workspace/read-1k";
    let setup = lab
        .client
        .write_file(id, path, vec![b'r'; 1024], &WriteOptions::default())
        .await;
    if let Err(e) = setup {
        return Operation::skipped(NAMES[0], Group::Nexus, format!("cannot write {path}: {e}"));
    }
    let mut samples = Samples::default();
    for i in 0..n + 3 {
        let start = Instant::now();
        let result = lab.client.read_file(id, path).await;
        let elapsed = start.elapsed();
        let result = result
            .map_err(anyhow::Error::from)
            .and_then(|bytes| expect_len(bytes.len() as u64, 1024));
        if i >= 3 {
            samples.record(elapsed, result);
        }
    }
    Operation::measured(NAMES[0], Group::Nexus, samples)
}

/// `file_write_1k`: `write_file` of 1 KiB replacing the file atomically (the default).
async fn write_1k(lab: &Lab, id: &str, n: usize) -> Operation {
    let path = "/workspace/write-1k";
    let content = Bytes::from(vec![b'w'; 1024]);
    let mut samples = Samples::default();
    for i in 0..n + 3 {
        let start = Instant::now();
        let result = lab
            .client
            .write_file(id, path, content.clone(), &WriteOptions::default())
            .await;
        let elapsed = start.elapsed();
        let result = result
            .map_err(anyhow::Error::from)
            .and_then(|stat| expect_len(stat.size, 1024));
        if i >= 3 {
            samples.record(elapsed, result);
        }
    }
    Operation::measured(NAMES[1], Group::Nexus, samples).with_note("atomic replace")
}

/// `file_stat_100`: one `stat_files` call for 100 small files (with their content
/// hashes) that were written a while before, the common case of a stat of a working
/// tree; and `file_stat_100_fresh`: the same call with every file touched just before it
/// (untimed), so every hash is computed, not remembered.
async fn stat_100(lab: &Lab, id: &str, n: usize) -> [Operation; 2] {
    let dir = "/workspace/stat";
    let script = format!(
        "mkdir -p {dir} && cd {dir} && i=0; \
         while [ $i -lt {STAT_FILES} ]; do echo $i > f$i; i=$((i+1)); done"
    );
    if let Err(e) = lab.exec_sh(id, &script, Duration::from_secs(60)).await {
        let reason = format!("cannot make the files to stat: {e:#}");
        return [
            Operation::skipped(NAMES[2], Group::Nexus, reason.clone()),
            Operation::skipped(NAMES[3], Group::Nexus, reason),
        ];
    }
    let paths: Vec<String> = (0..STAT_FILES).map(|i| format!("{dir}/f{i}")).collect();
    tokio::time::sleep(STAT_SETTLE).await;
    let mut settled = Samples::default();
    for i in 0..n + 3 {
        let (elapsed, result) = timed_stat(lab, id, &paths).await;
        if i >= 3 {
            settled.record(elapsed, result);
        }
    }
    let touch = format!("touch {dir}/f*");
    let mut fresh = Samples::default();
    for i in 0..n + 3 {
        if let Err(e) = lab.exec_sh(id, &touch, Duration::from_secs(60)).await {
            fresh.fail(&e);
            continue;
        }
        let (elapsed, result) = timed_stat(lab, id, &paths).await;
        if i >= 3 {
            fresh.record(elapsed, result);
        }
    }
    [
        Operation::measured(NAMES[2], Group::Nexus, settled).with_note(
            "100 paths in one call, files written 200 ms before: hashes come from the agent's cache",
        ),
        Operation::measured(NAMES[3], Group::Nexus, fresh).with_note(
            "100 paths in one call, every file touched just before: every file is read and hashed",
        ),
    ]
}

/// One timed `stat_files` of `paths`, which must all have a stat.
async fn timed_stat(lab: &Lab, id: &str, paths: &[String]) -> (Duration, anyhow::Result<()>) {
    let start = Instant::now();
    let result = lab.client.stat_files(id, paths.to_vec()).await;
    let elapsed = start.elapsed();
    let result = result.map_err(anyhow::Error::from).and_then(|items| {
        let failed = items.iter().filter(|item| item.stat.is_none()).count();
        ensure!(
            items.len() == paths.len() && failed == 0,
            "{} results, {failed} without a stat",
            items.len()
        );
        Ok(())
    });
    (elapsed, result)
}

/// `file_download_1g` (`read_file_stream`) and `file_upload_1g` (`write_file_stream`)
/// of a file of `plan.transfer_mib` MiB, as MiB/s.
async fn transfers(lab: &Lab, id: &str, plan: &Plan) -> [Operation; 2] {
    let mib = plan.transfer_mib;
    let bytes = mib * 1024 * 1024;
    let note = if mib == 1024 {
        "1 GiB file".to_owned()
    } else {
        format!("{mib} MiB file (quick mode; 1 GiB in full mode)")
    };
    let path = "/workspace/big";
    let script = format!("head -c {bytes} /dev/zero > {path}");
    if let Err(e) = lab.exec_sh(id, &script, Duration::from_secs(300)).await {
        let reason = format!("cannot make the file to download: {e:#}");
        return [
            Operation::skipped(NAMES[4], Group::Nexus, reason.clone()),
            Operation::skipped(NAMES[5], Group::Nexus, reason),
        ];
    }
    let mut down = Rates::default();
    for _ in 0..plan.heavy_iterations {
        let start = Instant::now();
        let result = download(lab, id, path).await;
        let elapsed = start.elapsed();
        down.record(
            bytes,
            elapsed,
            result.and_then(|got| expect_len(got, bytes)),
        );
    }
    let mut up = Rates::default();
    for _ in 0..plan.heavy_iterations {
        let start = Instant::now();
        let result = upload(lab, id, "/workspace/uploaded", bytes).await;
        up.record(bytes, start.elapsed(), result);
    }
    let _ = lab.client.remove_file(id, path, false).await;
    let _ = lab
        .client
        .remove_file(id, "/workspace/uploaded", false)
        .await;
    [
        Operation::throughput(NAMES[4], Group::Nexus, &down).with_note(note.clone()),
        Operation::throughput(NAMES[5], Group::Nexus, &up)
            .with_note(format!("{note}, streamed in 1 MiB chunks, atomic replace")),
    ]
}

/// Streams a whole file and returns how many bytes came.
async fn download(lab: &Lab, id: &str, path: &str) -> anyhow::Result<u64> {
    let (_, mut stream) = lab.client.read_file_stream(id, path, 0, None).await?;
    let mut got = 0;
    while let Some(chunk) = stream.next().await {
        got += chunk.context("the download broke off")?.len() as u64;
    }
    Ok(got)
}

/// Streams `bytes` zeros into `path` and checks the size the daemon reports.
async fn upload(lab: &Lab, id: &str, path: &str, bytes: u64) -> anyhow::Result<()> {
    let chunks = bytes.div_ceil(CHUNK as u64);
    let body = futures::stream::iter((0..chunks).map(move |i| {
        let len = (bytes - i * CHUNK as u64).min(CHUNK as u64);
        let len = usize::try_from(len).expect("a chunk is at most 1 MiB");
        Ok::<_, std::io::Error>(Bytes::from_static(&ZEROS[..len]))
    }));
    let stat = lab
        .client
        .write_file_stream(id, path, body, &WriteOptions::default())
        .await?;
    expect_len(stat.size, bytes)
}

fn expect_len(got: u64, want: u64) -> anyhow::Result<()> {
    ensure!(got == want, "{got} bytes instead of {want}");
    Ok(())
}
