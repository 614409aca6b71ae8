//! Starting and stopping the daemon: directories, store, token, listener, and a
//! graceful shutdown that lets in-flight requests finish within `shutdown_timeout`.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};
use nexus_api::DaemonPaths;
use nexus_core::service::{SandboxService, ServiceConfig, WarmPoolTasks};
use nexus_core::{Store, SystemClock};
use nexus_net::proxy::{Egress, EgressConfig};
use nexus_net::resolve::Resolver;
use nexus_store::SqliteStore;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::metrics::Metrics;
use crate::netlog::NetLog;
use crate::state::{AppState, DaemonInfo};
use crate::token::{self, ApiToken, TokenSource};

/// A daemon that is serving requests.
#[derive(Debug)]
pub struct RunningDaemon {
    addr: SocketAddr,
    token: ApiToken,
    shutdown_timeout: std::time::Duration,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    ticker: JoinHandle<()>,
    /// The warm pool's top-up tasks; stopped at shutdown, after the start under way.
    pool: WarmPoolTasks,
    /// The service, whose image builds are cancelled at shutdown.
    sandboxes: Arc<SandboxService>,
    pid_file: PathBuf,
}

/// SIGTERM and SIGINT handlers. Install them before [`start`], so a signal that arrives
/// as soon as the daemon reports it listens is never lost.
#[derive(Debug)]
pub struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (needs a running Tokio runtime).
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }
}

/// Opens everything the daemon needs and starts serving. Fails before listening when
/// the store, the token or the address cannot be had, so a half-started daemon never
/// answers requests.
pub async fn start(config: &Config) -> anyhow::Result<RunningDaemon> {
    raise_open_file_limit();
    ensure_private_dir(&config.runtime_dir)?;
    let agent_path = prepare_data_dir(config)?;
    let db_path = nexus_core::paths::database_path(&config.state_dir);
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db_path))
        .await
        .context("the store-opening task panicked")??;
    let store: Arc<dyn Store> = Arc::new(store);
    let (token, source) = token::load_or_create(config.token.as_deref(), &config.token_file)?;
    let data_dir = config.data_dir.clone();
    let storage = tokio::task::spawn_blocking(move || crate::storage::DiskStorage::open(&data_dir))
        .await
        .context("the storage-opening task panicked")??;
    let data_dir = config.data_dir.clone();
    let images = tokio::task::spawn_blocking(move || crate::storage::DiskImages::open(&data_dir))
        .await
        .context("the image-storage-opening task panicked")??;
    let metrics = Arc::new(Metrics::new().with_max_sandboxes(config.metrics.max_sandboxes));
    let netlog = Arc::new(NetLog::new(
        config.network.log,
        Some(metrics.egress_counter()),
    ));
    // Sandboxes reach the network only through the policy proxy, which needs root to
    // make their namespaces; otherwise they have loopback only (see `doctor`).
    let egress = nix::unistd::geteuid().is_root().then(|| {
        Arc::new(Egress::new(
            Resolver::new(config.network.hosts.clone()),
            netlog.clone(),
            EgressConfig::default(),
        ))
    });
    let sandboxes = Arc::new(
        SandboxService::new(
            store.clone(),
            crate::drivers::build(config, &agent_path, egress)?,
            Arc::new(storage),
            Arc::new(SystemClock),
            ServiceConfig {
                allow_host_driver: config.allow_host_driver,
                default_network: config.network.default.clone(),
                warm_pool: config.warm_pool.clone(),
                ..ServiceConfig::default()
            },
        )
        .with_images(Arc::new(images))
        .with_builder(Arc::new(
            crate::image_build::Mmdebstrap::new(config.mmdebstrap_path.clone())
                .with_detected_cgroups(&config.data_dir),
        )),
    );
    // Leftovers of operations a crash interrupted go first, so nothing half-made is seen.
    let swept = sandboxes
        .recover_storage()
        .await
        .context("cannot recover the workspace storage")?;
    if swept > 0 {
        tracing::info!(swept, "removed workspace storage of interrupted operations");
    }
    // Kills what builds of a previous run left in their cgroups, then sweeps their
    // scratch directories.
    sandboxes
        .recover_images()
        .await
        .context("cannot recover the image storage")?;
    // Sandboxes that outlived the previous daemon are adopted before anything is served.
    let adopted = sandboxes
        .adopt()
        .await
        .context("cannot adopt the sandboxes of the previous run")?;
    if adopted > 0 {
        tracing::info!(adopted, "adopted running sandboxes");
    }
    // The previous run's warm pool is not adopted but replaced by a fresh one, filled in
    // the background once the daemon serves.
    sandboxes
        .remove_pool_leftovers()
        .await
        .context("cannot remove the warm pool of the previous run")?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; is another nexusd running? Stop it or choose another address with --listen"
            } else {
                ""
            };
            anyhow::anyhow!("cannot listen on {}: {e}{hint}", config.listen)
        })?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening on a non-loopback address: the API is plain HTTP, so put TLS in front of it");
    }

    let shutdown = tokio_util::sync::CancellationToken::new();
    let state = AppState {
        store,
        sandboxes: sandboxes.clone(),
        token: Arc::new(token.clone()),
        metrics,
        netlog,
        mcp: Arc::new(config.mcp.clone()),
        shutdown: shutdown.clone(),
        info: Arc::new(DaemonInfo {
            started: Instant::now(),
            started_at: SystemTime::now(),
            listen: addr,
            paths: DaemonPaths {
                config_file: config.config_file.as_ref().map(|p| p.display().to_string()),
                token_file: (source == TokenSource::File)
                    .then(|| config.token_file.display().to_string()),
                state_dir: config.state_dir.display().to_string(),
                data_dir: config.data_dir.display().to_string(),
                runtime_dir: config.runtime_dir.display().to_string(),
            },
        }),
    };

    let pid_file = config.runtime_dir.join("nexusd.pid");
    fs_err::write(&pid_file, format!("{}\n", std::process::id()))?;

    let (stop, mut stopped) = watch::channel(false);
    let pool = sandboxes.spawn_warm_pool();
    let ticker = tokio::spawn(tick(sandboxes.clone(), stop.subscribe()));
    let app = crate::http::app(state);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // An error means the sender is gone, which also means stop.
                let _ = stopped.wait_for(|stop| *stop).await;
                shutdown.cancel();
            })
            .await
    });
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), pid = std::process::id(), "listening");
    Ok(RunningDaemon {
        addr,
        token,
        shutdown_timeout: config.shutdown_timeout,
        stop,
        server,
        ticker,
        pool,
        sandboxes,
        pid_file,
    })
}

/// Raises the soft limit on open descriptors to the hard one. Every sandbox holds some
/// in the daemon (its agent's connection; with egress, the proxy's six sockets, plus a
/// connection and two pipes per relayed connection), and the usual soft limit of 1,024
/// would cap a host at a hundred-odd sandboxes. Sandboxes inherit the raised limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

impl RunningDaemon {
    /// The address the API is served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        self.token.expose()
    }

    /// Serves until SIGTERM or SIGINT arrives on `signals`, then shuts down gracefully.
    pub async fn run_until_signal(mut self, mut signals: ShutdownSignals) -> anyhow::Result<()> {
        tokio::select! {
            _ = signals.term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = signals.int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            result = &mut self.server => {
                bail!("the HTTP server stopped unexpectedly: {:?}", result);
            }
        }
        self.shutdown().await
    }

    /// Stops accepting connections and starting warm-pool sandboxes, cancels the image
    /// builds under way (their progress streams end with `image_build_cancelled`, so
    /// they do not hold the shutdown up), waits up to `shutdown_timeout` for in-flight
    /// requests, for the warm-pool start under way and for the periodic check under way
    /// (a TTL stop, say), then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.pool.stop_starting();
        self.sandboxes.cancel_image_builds().await;
        let timeout = self.shutdown_timeout;
        tracing::info!(timeout = %humantime::format_duration(timeout), "waiting for in-flight requests");
        let mut server = self.server;
        let mut ticker = self.ticker;
        // A pool start cut off here would be left half-made for the next start to remove,
        // and so would a stop the periodic check has under way (a TTL reached).
        let (served, pool_stopped, checked) = tokio::join!(
            tokio::time::timeout(timeout, &mut server),
            self.pool.stop(timeout),
            tokio::time::timeout(timeout, &mut ticker)
        );
        if !pool_stopped {
            tracing::warn!(timeout = %humantime::format_duration(timeout), "a warm pool start did not finish in time; the next start removes what it left");
        }
        if checked.is_err() {
            ticker.abort();
            tracing::warn!(timeout = %humantime::format_duration(timeout), "the periodic sandbox check did not finish in time; the next start finishes what it left");
        }
        match served {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the HTTP server failed while stopping"),
            Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server task failed"),
            Err(_) => {
                server.abort();
                tracing::warn!(timeout = %humantime::format_duration(timeout), "in-flight requests did not finish in time; closing them");
            }
        }
        if let Err(e) = std::fs::remove_file(&self.pid_file) {
            tracing::debug!(error = %e, path = %self.pid_file.display(), "pid file already gone");
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Once a second: stops sandboxes past their TTL and notices crashed ones.
async fn tick(service: Arc<SandboxService>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if let Err(e) = service.tick().await {
                    tracing::warn!(error = %e, "periodic sandbox check failed");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Creates the data directory. As root, sandboxes run as unprivileged host uids that
/// must reach their workspaces (and the agent binary) inside it, so it is made
/// traversable (0711, never listable) and its ancestors are checked; an agent binary
/// those uids cannot reach is copied in. Returns the agent binary to use.
fn prepare_data_dir(config: &Config) -> anyhow::Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        ensure_private_dir(&config.data_dir)?;
        return Ok(config.agent_path.clone());
    }
    let sandbox_uid = *config.uid_range.start();
    for dir in [config.data_dir.clone(), config.data_dir.join("sandboxes")] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    }
    if let Some(blocking) =
        nexus_sandbox::bwrap::unreachable_ancestor(&config.data_dir.join("sandboxes"), sandbox_uid)
    {
        bail!(
            "data_dir {} is out of reach of sandbox uids: {} is closed to other users; run `chmod o+x {}` or set data_dir (or XDG_DATA_HOME) to a directory such as {}",
            config.data_dir.display(),
            blocking.display(),
            blocking.display(),
            crate::config::ROOT_DATA_DIR
        );
    }
    let agent = config.agent_path.clone();
    let reachable = agent.is_absolute()
        && nexus_sandbox::bwrap::unreachable_ancestor(&agent, sandbox_uid).is_none();
    if reachable || !agent.exists() {
        return Ok(agent);
    }
    // Copy then rename, so a sandbox starting meanwhile never sees half a binary.
    let dir = config.data_dir.join("agent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)?;
    let copy = dir.join("nexus-agent");
    let staging = dir.join(".nexus-agent.new");
    fs_err::copy(&agent, &staging)?;
    fs_err::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))?;
    fs_err::rename(&staging, &copy)?;
    tracing::info!(from = %agent.display(), to = %copy.display(), "copied the agent where sandbox uids can reach it");
    Ok(copy)
}

/// Creates a directory only this user can enter, or checks an existing one is ours.
fn ensure_private_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create directory {}", path.display()))?;
    let meta = fs_err::metadata(path)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        bail!(
            "directory {} belongs to uid {}, not to this user (uid {euid}); remove it or choose another directory",
            path.display(),
            meta.uid()
        );
    }
    Ok(())
}
