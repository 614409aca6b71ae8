//! Isolation mechanics of the bwrap driver: what a sandbox is made of on the host, kept
//! apart from HTTP, SQL and the daemon's state so the privileged code stays small.
//!
//! - [`seccomp`]: the syscall deny list, compiled to BPF for bwrap's `--seccomp`;
//! - [`cgroups`]: per-sandbox cgroups (v1 and v2) with limits, stats, kill and removal, and
//!   the cgroups of image builds, which only hold and kill their processes;
//! - [`bwrap`]: the pure builder of bwrap's command line from a [`bwrap::BwrapSpec`];
//! - [`launch`]: spawning bwrap in the cgroup as an unprivileged host uid, detached from
//!   the daemon, and stopping or destroying it.
//!
//! A driver puts them together: `CgroupManager::create` → `bwrap::resolve_masks` and a
//! `BwrapSpec` → `launch::launch` → later `launch::destroy`.

pub mod bwrap;
pub mod cgroups;
pub mod driver;
pub mod launch;
pub mod layer;
pub mod seccomp;
