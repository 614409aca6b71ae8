//! The file API (protocol version 2): every `fs_*` operation. Filesystem work runs on the
//! blocking pool, never on the agent's reactor; every path goes through [`path`]'s rules
//! (`openat2` with `RESOLVE_NO_MAGICLINKS`, descriptor-relative mutations).
//!
//! Module map: [`path`] (validation, resolution, errno → error code), [`stat`] (stat,
//! hashes, list), [`mutate`] (mkdir, move, remove, copy), [`write`] (atomic replace,
//! append, batch), [`transfer`] (read, write and tar streams), [`search`] (glob, grep),
//! [`watch`] (inotify).

mod hash_cache;
pub mod mutate;
pub mod path;
pub mod search;
pub mod stat;
pub mod transfer;
pub mod watch;
pub mod write;

use std::sync::Arc;

use nexus_agent_proto::{ErrorCode, Request, Response};

use crate::Agent;
use crate::conn::FrameSender;
use crate::ops::Credit;
use crate::procs::Refusal;
use transfer::{Body, blocking};

/// Stat requests of at most this many paths run on the agent's own thread. A hop to the
/// blocking pool and back costs about 0.2 ms on the 2-core development VM (two
/// cross-CPU wake-ups), more than a stat, a `mkdir`, a `rename`, a one-entry remove or
/// the opening of a small read on a local filesystem, which therefore run inline too;
/// walks, copies, searches, archives and large reads stay on the pool.
const INLINE_STATS: usize = 256;

/// Runs one `fs_*` request; `credit` is set for reads and tar downloads, `body` for
/// writes and tar uploads.
pub async fn execute(
    agent: &Arc<Agent>,
    tx: &FrameSender,
    channel: u32,
    request: Request,
    credit: Option<Arc<Credit>>,
    body: Option<Body>,
) -> Result<Response, Refusal> {
    let workdir = agent.table.config.workdir.clone();
    let missing = || {
        Refusal::new(
            ErrorCode::Internal,
            "streaming operation without its stream state",
        )
    };
    match request {
        Request::FsRead(request) => {
            transfer::read(workdir, request, credit.ok_or_else(missing)?, tx, channel).await
        }
        Request::FsTarDownload(request) => {
            transfer::tar_download(workdir, request, credit.ok_or_else(missing)?, tx, channel).await
        }
        Request::FsWrite(request) => {
            transfer::write(
                workdir,
                request,
                body.ok_or_else(missing)?,
                tx.clone(),
                channel,
            )
            .await
        }
        Request::FsTarUpload(request) => {
            transfer::tar_upload(
                workdir,
                request,
                body.ok_or_else(missing)?,
                tx.clone(),
                channel,
            )
            .await
        }
        Request::FsWatch(request) => watch::run(workdir, request, tx, channel).await,
        // Bounded work runs inline (see `INLINE_STATS`); the rest on the blocking pool.
        Request::FsStat(request) if request.paths.len() <= INLINE_STATS => Ok(Response::FsStats {
            results: stat::stat_many(&workdir, &request),
        }),
        Request::FsStat(request) => Ok(Response::FsStats {
            results: blocking(move || Ok(stat::stat_many(&workdir, &request))).await?,
        }),
        Request::FsList(request) => Ok(Response::FsListed(
            blocking(move || stat::list(&workdir, &request)).await?,
        )),
        Request::FsMkdir(request) => Ok(Response::FsStat {
            stat: mutate::mkdir(&workdir, &request)?,
        }),
        Request::FsMove(request) => Ok(Response::FsStat {
            stat: mutate::rename(&workdir, &request)?,
        }),
        Request::FsRemove(request) if !request.recursive => {
            Ok(Response::FsRemoved(mutate::remove(&workdir, &request)?))
        }
        Request::FsRemove(request) => Ok(Response::FsRemoved(
            blocking(move || mutate::remove(&workdir, &request)).await?,
        )),
        Request::FsCopy(request) => Ok(Response::FsTree(
            blocking(move || mutate::copy(&workdir, &request)).await?,
        )),
        Request::FsBatch(request) => Ok(Response::FsBatch {
            results: blocking(move || Ok(write::batch(&workdir, &request))).await?,
        }),
        Request::FsGlob(request) => Ok(Response::FsGlobbed(
            blocking(move || search::glob(&workdir, &request)).await?,
        )),
        Request::FsGrep(request) => Ok(Response::FsGrepped(
            blocking(move || search::grep(&workdir, &request)).await?,
        )),
        other => Err(Refusal::new(
            ErrorCode::Internal,
            format!("{} is not a file operation", other.op_name()),
        )),
    }
}
