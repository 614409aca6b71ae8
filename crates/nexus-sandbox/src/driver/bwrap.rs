//! The `bwrap` driver: every sandbox in its own user, mount, PID, IPC, UTS, network and
//! cgroup namespaces, under seccomp, with no capabilities, in its own cgroup, as its own
//! host uid when the daemon is root. The agent is its PID 1.
//!
//! The workspace tree the service passes ([`SandboxMounts::workspace`]) is bound
//! read-write at `/workspace`; sandboxes recorded before workspaces existed keep a
//! private directory in the data directory instead. Trees of other workspaces are bound
//! read-only, readable through their groups (see `launch::ids` for the uid scheme). A
//! root daemon can swap the workspace tree under a running sandbox (`swap`), which is
//! how a restore keeps the sandbox's processes running.

mod swap;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use nexus_core::{
    AgentStream, Driver, DriverError, DriverKind, Isolation, LimitEnforcement, Sandbox,
    SandboxMounts, Started, Usage, WorkspaceSwap,
};
use serde::{Deserialize, Serialize};

use super::{Layout, remove_tree};
use crate::bwrap::{BwrapSpec, ImageRoot, ReadOnlyBind, plan_shadows, resolve_masks};
use crate::cgroups::{CgroupError, CgroupManager, LimitReport, LimitStatus, Limits};
use crate::launch::{self, HostIds, HostUser, LaunchRequest, SandboxProcess};
use crate::seccomp::SeccompProgram;
use nexus_net::netns::Netns;
use nexus_net::policy::Policy;
use nexus_net::proxy::{Egress, proxy_environment};

/// Settings of the bwrap driver.
#[derive(Debug, Clone)]
pub struct BwrapDriverConfig {
    /// Where files go.
    pub layout: Layout,
    /// The bubblewrap binary (looked up on `PATH` when relative).
    pub bwrap: PathBuf,
    /// The agent binary.
    pub agent: PathBuf,
    /// Directories hidden from every sandbox on top of the host image's secrets: the
    /// daemon's config (token), state, data (other workspaces) and runtime directories.
    pub masked: Vec<PathBuf>,
    /// Host uids for sandboxes when the daemon is root.
    pub uid_range: std::ops::RangeInclusive<u32>,
    /// The policy proxy sandboxes reach the network through. `None`, or a daemon that is
    /// not root: sandboxes have loopback only.
    pub egress: Option<Arc<Egress>>,
}

/// Runs sandboxes under bubblewrap.
#[derive(Debug)]
pub struct BwrapDriver {
    config: BwrapDriverConfig,
    bwrap: Option<PathBuf>,
    cgroups: CgroupManager,
    seccomp: Result<SeccompProgram, String>,
    ids: Mutex<HostIds>,
    available: OnceLock<Result<(), String>>,
}

/// What is persisted about a bwrap sandbox: enough to adopt, report and clean it up.
#[derive(Debug, Serialize, Deserialize)]
struct Runtime {
    id: String,
    process: SandboxProcess,
    uid: u32,
    dedicated_uid: bool,
    socket: PathBuf,
    runtime_dir: PathBuf,
    limits: Vec<Enforcement>,
    /// How the sandbox's root is made, for the isolation report.
    #[serde(default)]
    root: RootKind,
    /// How it reaches the network.
    #[serde(default)]
    network: NetworkKind,
}

/// A sandbox's network, as recorded at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum NetworkKind {
    /// Its own namespace with loopback only.
    #[default]
    LoopbackOnly,
    /// A namespace the daemon made, served by the policy proxy.
    Proxied {
        /// Connections ignoring the proxy variables are captured too.
        transparent: bool,
        /// The capture's status in words.
        detail: String,
    },
}

/// Why a sandbox has loopback only, for the isolation report.
const LOOPBACK_ONLY: &str = "loopback only: network egress needs nexusd running as root (it makes the sandbox's network namespace and serves the policy proxy in it)";

/// A sandbox's `/`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RootKind {
    /// The host's `/`, read-only, secrets masked.
    #[default]
    Host,
    /// An image under the sandbox's own writable layer.
    ImageLayer,
    /// An image, read-only (a non-root daemon cannot mount the layer).
    ImageReadOnly,
}

/// Removes the cgroup of a start that failed before launching (which cleans up itself).
fn remove_cgroup(cgroup: &crate::cgroups::SandboxCgroup) {
    if let Err(error) = cgroup.remove() {
        tracing::warn!(%error, "cannot remove the cgroup of a failed start");
    }
}

/// The isolation report's warning for a read-only image root.
const READ_ONLY_IMAGE_WARNING: &str =
    "root filesystem read-only: the writable layer needs nexusd running as root";

/// One line of the limit part of the isolation report, persisted with the runtime.
#[derive(Debug, Serialize, Deserialize)]
struct Enforcement {
    name: String,
    requested: String,
    enforced: bool,
    detail: String,
}

/// How long a pause or resume may take before it is undone and reported.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// The cgroup directory (under the daemon's own) that holds sandbox cgroups.
const CGROUP_PARENT: &str = "nexus";

impl BwrapDriver {
    /// A driver with this configuration. Nothing is checked yet: a host without
    /// bubblewrap still runs the daemon, and creating a sandbox then says what is missing.
    pub fn new(config: BwrapDriverConfig) -> Result<Self, String> {
        let ids = HostIds::new(config.uid_range.clone()).map_err(|e| e.to_string())?;
        let bwrap = nexus_host::tools::find_program(&config.bwrap);
        Ok(Self {
            bwrap,
            cgroups: CgroupManager::detect(CGROUP_PARENT),
            seccomp: SeccompProgram::native().map_err(|e| e.to_string()),
            ids: Mutex::new(ids),
            available: OnceLock::new(),
            config,
        })
    }

    /// Whether sandboxes can start here; run once, on first use.
    fn probe(&self) -> Result<(), String> {
        let bwrap = self.bwrap.as_ref().ok_or_else(|| {
            format!(
                "bubblewrap ({}) is not installed: sudo apt-get install -y bubblewrap",
                self.config.bwrap.display()
            )
        })?;
        if !self.config.agent.exists() {
            return Err(format!(
                "the agent binary {} does not exist; reinstall nexus or set agent_path",
                self.config.agent.display()
            ));
        }
        self.seccomp.as_ref().map_err(Clone::clone)?;
        nexus_host::bwrap::smoke_test(bwrap, Duration::from_secs(5))
            .map(drop)
            .map_err(|e| {
                format!(
                    "bubblewrap cannot create namespaces here ({e}); {}",
                    nexus_host::bwrap::smoke_test_fix(&e)
                )
            })
    }

    fn launch(&self, sandbox: &Sandbox, mounts: &SandboxMounts) -> Result<Runtime, String> {
        let id = sandbox.id.as_str();
        let bwrap = self.bwrap.clone().ok_or("bubblewrap is not installed")?;
        let seccomp = self.seccomp.as_ref().map_err(Clone::clone)?;
        let workspace = match &mounts.workspace {
            Some(tree) => tree.clone(),
            None => self
                .config
                .layout
                .ensure_workspace(id)
                .map_err(|e| format!("cannot create the workspace: {e}"))?,
        };
        let user = {
            // Held through the scan of tree owners: see `launch::ids`.
            let mut ids = self
                .ids
                .lock()
                .expect("uid allocator lock is never poisoned");
            HostUser::for_workspace(&mut ids, &self.config.layout.data_dir, &workspace)
                .map_err(|e| chain(&e))?
        };
        let result = (|| {
            launch::prepare_workspace(&workspace, user.uid()).map_err(|e| chain(&e))?;
            let read_only: Vec<ReadOnlyBind> = mounts
                .read_only
                .iter()
                .map(|mount| ReadOnlyBind {
                    source: mount.source.clone(),
                    target: PathBuf::from(&mount.target),
                })
                .collect();
            let groups = match user {
                HostUser::Dedicated(uid) => {
                    let sources: Vec<&Path> =
                        read_only.iter().map(|b| b.source.as_path()).collect();
                    launch::supplementary_groups(&sources, &self.config.uid_range, uid)
                        .map_err(|e| chain(&e))?
                }
                HostUser::Current => Vec::new(),
            };
            let (root, root_kind) = self.root_for(id, mounts, user)?;
            let masks = match root_kind {
                RootKind::Host => resolve_masks(&self.config.masked, user.uid()),
                // Nothing of the host is in an image: there is no secret to hide.
                RootKind::ImageLayer | RootKind::ImageReadOnly => Vec::new(),
            };
            let targets: Vec<&Path> = read_only.iter().map(|b| b.target.as_path()).collect();
            let shadows = if root_kind == RootKind::ImageLayer {
                Vec::new() // bwrap makes the mount points in the writable layer
            } else {
                plan_shadows(&root, &masks, &targets).map_err(|e| e.to_string())?
            };
            // A root daemon assembles the root before bwrap runs, which spares bwrap most
            // of its mounts (see `plan_tree`); an image layer is one bind already.
            let tree = match (user, root_kind) {
                (HostUser::Dedicated(_), RootKind::Host | RootKind::ImageReadOnly) => Some(
                    self.config
                        .layout
                        .ensure_root_tree()
                        .map_err(|e| format!("cannot create the root tree mount point: {e}"))?,
                ),
                _ => None,
            };
            let limits = &sandbox.spec.limits;
            // The network namespace with its rules (an `nft` run) and the cgroups do not
            // depend on each other: they are made at the same time, which takes about a
            // millisecond and a half off every start.
            // The proxy registers the namespace's sockets with the runtime this runs in.
            let runtime = tokio::runtime::Handle::try_current().ok();
            let (network, setup) = std::thread::scope(|scope| {
                let network = scope.spawn(|| {
                    let _context = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    self.network_for(sandbox, user)
                });
                let setup = self.cgroups.create(
                    id,
                    &Limits {
                        memory_mib: limits.memory_mib,
                        cpus: limits.cpus,
                        pids: limits.pids,
                    },
                );
                let network = network
                    .join()
                    .unwrap_or_else(|_| Err("setting up the network panicked".to_owned()));
                (network, setup)
            });
            let setup = setup.map_err(|e| chain(&e))?;
            let network = match network {
                Ok(network) => network,
                Err(error) => {
                    remove_cgroup(&setup.cgroup);
                    return Err(error);
                }
            };
            let spec = BwrapSpec {
                root,
                masks,
                workspace: workspace.clone(),
                read_only,
                shadows,
                tmp_mib: limits.tmp_mib.unwrap_or(512),
                hostname: sandbox.spec.name.to_string(),
                env: Vec::new(),
                agent: Some(self.config.agent.clone()),
                command: BwrapSpec::agent_command(
                    launch::LISTEN_FD,
                    &if network.is_some() {
                        proxy_environment()
                    } else {
                        Vec::new()
                    },
                ),
                writable_root: root_kind == RootKind::ImageLayer,
                joined_network: network.is_some(),
                tree,
            };
            if let Err(error) = spec.validate() {
                remove_cgroup(&setup.cgroup);
                return Err(error.to_string());
            }
            let runtime_dir = self.config.layout.sandbox_runtime(id);
            let request = LaunchRequest {
                bwrap: &bwrap,
                spec: &spec,
                seccomp,
                runtime_dir: &runtime_dir,
                user,
                groups: &groups,
                netns: network
                    .as_ref()
                    .map(|(netns, _)| std::os::fd::AsFd::as_fd(netns)),
            };
            let report = enforcement(sandbox, &setup.report);
            let launched = launch::launch(&request, setup.cgroup).map_err(|e| chain(&e))?;
            let _ = std::fs::write(
                runtime_dir.join("bwrap.pid"),
                format!("{}\n", launched.process.bwrap_pid),
            );
            let _ = std::fs::write(
                runtime_dir.join("init.pid"),
                format!("{}\n", launched.process.init_pid),
            );
            Ok(Runtime {
                id: id.to_owned(),
                process: launched.process,
                uid: user.uid(),
                dedicated_uid: matches!(user, HostUser::Dedicated(_)),
                socket: launched.socket_path,
                runtime_dir: launched.runtime_dir,
                limits: report,
                root: root_kind,
                network: network.map_or(NetworkKind::LoopbackOnly, |(_, kind)| kind),
            })
        })();
        if result.is_err() {
            if let Some(egress) = &self.config.egress {
                egress.detach(id);
            }
            crate::layer::unmount(&self.layer(id));
            self.release(user);
        }
        result
    }

    /// A network namespace served by the policy proxy, for a root daemon with a proxy;
    /// `None`: bwrap makes a loopback-only one. The proxy is attached before the sandbox
    /// starts, so its first connection already meets it.
    fn network_for(
        &self,
        sandbox: &Sandbox,
        user: HostUser,
    ) -> Result<Option<(Netns, NetworkKind)>, String> {
        let Some(egress) = &self.config.egress else {
            return Ok(None);
        };
        if !matches!(user, HostUser::Dedicated(_)) {
            return Ok(None);
        }
        let policy = Policy::parse(&sandbox.spec.network).map_err(|e| format!("network.{e}"))?;
        let (netns, capture) = egress.namespace().map_err(|e| chain(&e))?;
        egress
            .attach(sandbox.id.as_str(), &netns, policy)
            .map_err(|e| chain(&e))?;
        Ok(Some((
            netns,
            NetworkKind::Proxied {
                transparent: capture.transparent,
                detail: capture.detail,
            },
        )))
    }

    /// The sandbox's `/`: the host's, or its image under its writable layer (root
    /// daemon), or its image read-only.
    fn root_for(
        &self,
        id: &str,
        mounts: &SandboxMounts,
        user: HostUser,
    ) -> Result<(ImageRoot, RootKind), String> {
        let Some(image) = &mounts.image_root else {
            let root = ImageRoot::scan(Path::new("/"))
                .map_err(|e| format!("cannot read the host image: {e}"))?;
            return Ok((root, RootKind::Host));
        };
        if !image.is_dir() {
            return Err(format!("the image tree {} is missing", image.display()));
        }
        let (path, kind) = match user {
            HostUser::Dedicated(uid) => {
                let merged = crate::layer::mount(image, &self.layer(id), uid)?;
                (merged, RootKind::ImageLayer)
            }
            HostUser::Current => (image.clone(), RootKind::ImageReadOnly),
        };
        let root = ImageRoot::scan(&path)
            .map_err(|e| format!("cannot read the image at {}: {e}", path.display()))?;
        Ok((root, kind))
    }

    /// Where a sandbox's writable layer lives.
    fn layer(&self, id: &str) -> PathBuf {
        crate::layer::layer_dir(&self.config.layout.sandbox_data(id))
    }

    fn release(&self, user: HostUser) {
        if let HostUser::Dedicated(uid) = user {
            self.ids
                .lock()
                .expect("uid allocator lock is never poisoned")
                .release(uid);
        }
    }

    /// Ends the sandbox's processes and removes its cgroup and runtime files. Cleaning
    /// up what is already gone succeeds.
    fn cleanup(&self, id: &str, runtime: Option<&Runtime>, grace: Duration) -> Result<(), String> {
        if let Some(egress) = &self.config.egress {
            egress.detach(id);
        }
        let runtime_dir = self.config.layout.sandbox_runtime(id);
        let cgroup = match self.cgroups.open(id) {
            Ok(cgroup) => Some(cgroup),
            Err(CgroupError::NotFound(_)) => None,
            Err(e) => return Err(chain(&e)),
        };
        match (runtime, cgroup) {
            // The agent (PID 1) ignores SIGTERM, and the service has already ended its
            // processes gracefully through it; whatever is left gets SIGTERM and the grace
            // period, then the namespace is killed.
            (Some(rt), Some(cgroup)) => {
                terminate_gracefully(rt, &cgroup, grace);
                launch::destroy(&rt.process, &cgroup, &runtime_dir, Duration::ZERO)
                    .map_err(|e| chain(&e))?;
            }
            (Some(rt), None) => {
                if rt.process.is_alive() {
                    let pid =
                        nix::unistd::Pid::from_raw(i32::try_from(rt.process.init_pid).unwrap_or(0));
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
                rt.process.try_reap();
                remove_tree(&runtime_dir)?;
            }
            (None, Some(cgroup)) => {
                cgroup
                    .kill_all()
                    .and_then(|()| cgroup.remove())
                    .map_err(|e| chain(&e))?;
                remove_tree(&runtime_dir)?;
            }
            // No cgroup (an unprivileged daemon without a delegated one) and no handle (a
            // daemon killed mid-start): the launch record names the processes.
            (None, None) => {
                let killed = launch::record::kill_recorded(&runtime_dir);
                if !killed.is_empty() {
                    tracing::info!(sandbox_id = id, pids = ?killed, "killed the processes of an unfinished start");
                }
                remove_tree(&runtime_dir)?;
            }
        }
        // The processes are gone: the merged tree can go too (its changes stay).
        crate::layer::unmount(&self.layer(id));
        if let Some(rt) = runtime
            && rt.dedicated_uid
        {
            self.release(HostUser::Dedicated(rt.uid));
        }
        Ok(())
    }
}

/// SIGTERM to every process of the sandbox but its init (the agent, which ignores it) and
/// bwrap, then up to `grace` for them to go. Normally the agent has already ended them and
/// this returns at once; it matters when the agent could not be reached.
fn terminate_gracefully(rt: &Runtime, cgroup: &crate::cgroups::SandboxCgroup, grace: Duration) {
    let others = || -> Vec<u32> {
        cgroup
            .pids()
            .unwrap_or_default()
            .into_iter()
            .filter(|pid| *pid != rt.process.init_pid && *pid != rt.process.bwrap_pid)
            .collect()
    };
    let pids = others();
    if pids.is_empty() || grace.is_zero() {
        return;
    }
    for pid in pids {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = std::time::Instant::now() + grace;
    while !others().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each requested limit and whether the cgroup (or bwrap, for `/tmp`) enforces it.
fn enforcement(sandbox: &Sandbox, report: &LimitReport) -> Vec<Enforcement> {
    let l = &sandbox.spec.limits;
    let entry = |name: &str, requested: Option<String>, status: &LimitStatus, how: &str| {
        let requested = requested?;
        let (enforced, detail) = match status {
            LimitStatus::NotRequested => return None,
            LimitStatus::Enforced => (true, how.to_owned()),
            LimitStatus::Degraded { reason } => (true, format!("{how}; {reason}")),
            LimitStatus::NotEnforced { reason } => (false, reason.clone()),
        };
        Some(Enforcement {
            name: name.into(),
            requested,
            enforced,
            detail,
        })
    };
    let mut out: Vec<Enforcement> = [
        entry(
            "memory",
            l.memory_mib.map(|m| format!("{m} MiB")),
            &report.memory,
            "cgroup memory limit",
        ),
        entry(
            "cpu",
            l.cpus.map(|c| format!("{c} cpus")),
            &report.cpus,
            "cgroup cpu quota",
        ),
        entry(
            "pids",
            l.pids.map(|p| format!("{p} processes")),
            &report.pids,
            "cgroup pids limit",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(t) = l.tmp_mib {
        out.push(Enforcement {
            name: "tmp".into(),
            requested: format!("{t} MiB"),
            enforced: true,
            detail: "size-limited tmpfs".into(),
        });
    }
    out
}

impl BwrapDriver {
    /// Serves a running sandbox's namespace again (after a daemon restart).
    fn reattach(&self, sandbox: &Sandbox, rt: &Runtime) -> Result<(), DriverError> {
        let failed = |reason: String| DriverError::Failed {
            what: format!("serve the network of {}", sandbox.spec.name),
            reason,
        };
        let Some(egress) = &self.config.egress else {
            return Ok(());
        };
        if rt.network == NetworkKind::LoopbackOnly || !rt.process.is_alive() {
            return Ok(());
        }
        let policy =
            Policy::parse(&sandbox.spec.network).map_err(|e| failed(format!("network.{e}")))?;
        let netns = Netns::of_process(rt.process.init_pid).map_err(|e| failed(chain(&e)))?;
        // The pid may have been reused between the check and the open: check again.
        if !rt.process.is_alive() {
            return Err(failed("the sandbox's processes are gone".into()));
        }
        egress
            .attach(&rt.id, &netns, policy)
            .map_err(|e| failed(chain(&e)))
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse(runtime: &str) -> Option<Runtime> {
    serde_json::from_str(runtime).ok()
}

#[async_trait]
impl Driver for BwrapDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Bwrap
    }

    fn check_available(&self) -> Result<(), DriverError> {
        self.available
            .get_or_init(|| self.probe())
            .clone()
            .map_err(|reason| DriverError::Unavailable {
                driver: DriverKind::Bwrap,
                reason,
            })
    }

    async fn start(
        &self,
        sandbox: &Sandbox,
        mounts: &SandboxMounts,
    ) -> Result<Started, DriverError> {
        let runtime = tokio::task::block_in_place(|| self.launch(sandbox, mounts))
            .map_err(|reason| DriverError::Start { reason })?;
        let json = serde_json::to_string(&runtime).expect("the runtime record serializes");
        Ok(Started {
            isolation: self.isolation(sandbox, &json),
            runtime: json,
        })
    }

    async fn connect(&self, _sandbox: &Sandbox, runtime: &str) -> Result<AgentStream, DriverError> {
        let runtime = parse(runtime).ok_or(DriverError::Connect {
            reason: "no runtime record".into(),
        })?;
        super::connect_agent(&runtime.socket).await
    }

    async fn is_alive(&self, runtime: &str) -> bool {
        let Some(runtime) = parse(runtime) else {
            return false;
        };
        if runtime.dedicated_uid {
            // After a restart the allocator starts empty: keep this sandbox's uid taken.
            self.ids
                .lock()
                .expect("uid allocator lock is never poisoned")
                .mark_used(runtime.uid);
        }
        runtime.process.try_reap();
        runtime.process.is_alive()
    }

    fn isolation(&self, _sandbox: &Sandbox, runtime: &str) -> Isolation {
        let runtime = parse(runtime);
        let root = runtime.as_ref().map(|r| r.root);
        let network = runtime.as_ref().map(|r| r.network.clone());
        Isolation {
            isolated: true,
            namespaces: ["user", "mount", "pid", "ipc", "uts", "net", "cgroup"]
                .map(String::from)
                .to_vec(),
            seccomp: true,
            capabilities: "none".into(),
            no_new_privs: true,
            uid_inside: Some(1000),
            uid_host: runtime.as_ref().map(|r| r.uid),
            limits: runtime
                .map(|r| {
                    r.limits
                        .into_iter()
                        .map(|e| LimitEnforcement {
                            name: e.name,
                            requested: e.requested,
                            enforced: e.enforced,
                            detail: e.detail,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            warnings: match root {
                Some(RootKind::ImageReadOnly) => vec![READ_ONLY_IMAGE_WARNING.to_owned()],
                _ => Vec::new(),
            }
            .into_iter()
            .chain(match &network {
                Some(NetworkKind::Proxied {
                    transparent: false,
                    detail,
                }) => Some(detail.clone()),
                _ => None,
            })
            .collect(),
            network: match network {
                Some(NetworkKind::Proxied { detail, .. }) => {
                    format!("egress through the policy proxy only; {detail}")
                }
                _ => LOOPBACK_ONLY.to_owned(),
            },
        }
    }

    async fn set_network(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        kill_existing: bool,
    ) -> Result<(), DriverError> {
        let (Some(egress), Some(rt)) = (&self.config.egress, parse(runtime)) else {
            return Ok(());
        };
        if rt.network == NetworkKind::LoopbackOnly {
            return Ok(()); // no way out to apply a policy to
        }
        let policy = Policy::parse(&sandbox.spec.network).map_err(|e| DriverError::Failed {
            what: format!("change the network policy of {}", sandbox.spec.name),
            reason: format!("network.{e}"),
        })?;
        if !egress.update(&rt.id, policy, kill_existing) {
            // Not attached (a failed re-attach after a restart): try again now.
            self.reattach(sandbox, &rt)?;
        }
        Ok(())
    }

    async fn set_hostname(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        hostname: &str,
    ) -> Result<(), DriverError> {
        let rt = parse(runtime).ok_or(DriverError::Failed {
            what: format!("rename sandbox {}", sandbox.spec.name),
            reason: "it has no runtime record".into(),
        })?;
        match launch::set_hostname(&rt.process, hostname) {
            Ok(()) => Ok(()),
            Err(launch::HostnameError::NotRoot) => Err(DriverError::Unsupported {
                driver: DriverKind::Bwrap,
                what: "rename a running sandbox".into(),
                reason: "entering its namespaces needs nexusd running as root".into(),
            }),
            Err(error) => Err(DriverError::Failed {
                what: format!("rename sandbox {}", sandbox.spec.name),
                reason: chain(&error),
            }),
        }
    }

    async fn replace_workspace(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        tree: &Path,
    ) -> Result<WorkspaceSwap, DriverError> {
        tokio::task::block_in_place(|| self.swap_workspace(sandbox, runtime, tree))
    }

    async fn adopted(&self, sandbox: &Sandbox, runtime: &str) {
        let Some(rt) = parse(runtime) else { return };
        if let Err(e) = self.reattach(sandbox, &rt) {
            tracing::warn!(sandbox_id = %sandbox.id, error = %e, "cannot re-attach the policy proxy; the sandbox has no network until its policy is set again");
        }
    }

    async fn oom_kills(&self, runtime: &str) -> Option<u64> {
        let runtime = parse(runtime)?;
        self.cgroups.oom_kills(&runtime.id)
    }

    async fn usage(&self, runtime: &str) -> Usage {
        let Some(runtime) = parse(runtime) else {
            return Usage::default();
        };
        match self.cgroups.open(&runtime.id) {
            Ok(cgroup) => {
                let s = cgroup.stats();
                Usage {
                    memory_current: s.memory_current,
                    memory_peak: s.memory_peak,
                    memory_limit: s.memory_limit,
                    oom_kills: s.oom_kills,
                    pids_current: s.pids_current,
                    pids_limit: s.pids_limit,
                    cpu_usage_usec: s.cpu_usage_usec,
                    cpu_user_usec: s.cpu_user_usec,
                    cpu_system_usec: s.cpu_system_usec,
                    io_read_bytes: s.io_read_bytes,
                    io_write_bytes: s.io_write_bytes,
                    io_read_ops: s.io_read_ops,
                    io_write_ops: s.io_write_ops,
                }
            }
            Err(_) => Usage::default(),
        }
    }

    async fn set_paused(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        paused: bool,
    ) -> Result<(), DriverError> {
        let unsupported = |reason: String| DriverError::Unsupported {
            driver: DriverKind::Bwrap,
            what: if paused { "pause" } else { "resume" }.to_owned() + " this sandbox",
            reason,
        };
        let id = parse(runtime).map_or_else(|| sandbox.id.to_string(), |rt| rt.id);
        let cgroup = self
            .cgroups
            .open(&id)
            .map_err(|e| unsupported(format!("{}; pausing needs a freezer cgroup", chain(&e))))?;
        if !cgroup.can_freeze() {
            return Err(unsupported(
                "this host has no freezer cgroup (v1 `freezer` controller or v2 `cgroup.freeze`) for its sandboxes; see `nexusctl doctor`".into(),
            ));
        }
        tokio::task::block_in_place(|| match cgroup.freeze(paused, FREEZE_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(err) => {
                if paused {
                    // Never leave a sandbox half frozen behind a failed pause.
                    let _ = cgroup.freeze(false, FREEZE_TIMEOUT);
                }
                Err(DriverError::Failed {
                    what: format!(
                        "{} sandbox {}",
                        if paused { "pause" } else { "resume" },
                        sandbox.spec.name
                    ),
                    reason: chain(&err),
                })
            }
        })
    }

    async fn stop(
        &self,
        sandbox: &Sandbox,
        runtime: &str,
        grace: Duration,
    ) -> Result<(), DriverError> {
        let parsed = parse(runtime);
        let id = sandbox.id.as_str().to_owned();
        tokio::task::block_in_place(|| self.cleanup(&id, parsed.as_ref(), grace))
            .map_err(|reason| DriverError::Cleanup { reason })
    }

    /// Removes the sandbox's cgroup, runtime files and private data directory; never a
    /// workspace tree it mounted (the service owns those).
    async fn destroy(&self, sandbox: &Sandbox) -> Result<(), DriverError> {
        let id = sandbox.id.as_str().to_owned();
        tokio::task::block_in_place(|| self.cleanup(&id, None, Duration::ZERO))
            .map_err(|reason| DriverError::Cleanup { reason })?;
        remove_tree(&self.config.layout.sandbox_data(&id))
            .map_err(|reason| DriverError::Cleanup { reason })
    }
}
