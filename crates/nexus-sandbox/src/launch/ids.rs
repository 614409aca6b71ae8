//! Host uids for sandboxes: one unprivileged uid per sandbox when the daemon is root, so
//! two sandboxes are strangers to each other even after an escape.
//!
//! # Uids and persistent workspaces
//!
//! A workspace outlives its sandboxes, and its files keep the host uid of the sandbox
//! that wrote them (owner and group: the gid of a sandbox is its uid). So a uid is
//! never handed to a sandbox while files it owns exist elsewhere: a sandbox given a
//! uid that still owns another workspace could read and write that workspace after an
//! escape. [`HostUser::for_workspace`] chooses, under the allocator's lock:
//!
//! 1. **the tree's owner**, when the top directory of the workspace tree belongs to a
//!    uid of the range that no running sandbox has and that owns nothing outside this
//!    workspace ([`TreeOwners::owns_only`]). This is the common case (a sandbox
//!    restarted or recreated on its workspace) and costs no `chown` at all;
//! 2. otherwise **a fresh uid**: the lowest of the range that no running sandbox has and
//!    that owns nothing on disk ([`TreeOwners::owns_any`]); [`super::prepare_workspace`]
//!    then hands the tree to it (one recursive `chown`).
//!
//! "On disk" is what [`TreeOwners::scan`] finds: the owners of the top directories of
//! every tree and snapshot (`<data>/workspaces/*/{trees,snapshots}/*`, temporaries of
//! `nexus-storage` included) and of the private workspaces of sandboxes made before
//! workspaces existed (`<data>/sandboxes/*/workspace`). Only top directories count:
//! every tree is handed over as a whole, and a sandbox cannot give files away (no
//! `CAP_CHOWN`). For a tree that a uid of the range owns (case 1), the scan is redone at
//! that launch, with the allocator locked: it is one directory listing per workspace plus
//! one `lstat` per tree and snapshot, and a fresh scan cannot miss a tree made, restored,
//! forked or deleted behind a cache's back. For a tree no such uid owns yet (a new
//! workspace, the common case), only "owns nothing" matters, and a set that can only be
//! too large answers it without reading the disk: the owners of one full scan plus every
//! uid handed out since ([`HostIds::allocate_owning_nothing`]). With 1,000 workspaces the
//! scan took several milliseconds of every create, under the lock. Holding the lock closes
//! the race with a launch that is still handing its tree over: its uid is in use until
//! that sandbox is cleaned up, after the `chown`.
//!
//! What "same workspace" means: a tree at `<data>/workspaces/<ws>/trees/<gen>` belongs
//! to `<data>/workspaces/<ws>`, so its older generations and its snapshots may share its
//! uid; any other path (a legacy private workspace) is a workspace of its own.
//!
//! # Reading other workspaces
//!
//! A sandbox that mounts another workspace's tree read-only gets that tree's group as a
//! supplementary group ([`supplementary_groups`]): tree top directories are 0750 and
//! files are made with umask 022, so the group reads and never writes (and the mount is
//! read-only besides). Inside the user namespace the group is unmapped and shows as
//! `nogroup`, but the kernel checks the real gid, so access is granted. Only gids of the
//! range are ever added (never root's or a system group), and never while the daemon
//! is not root (then every sandbox is the daemon's uid and needs nothing).

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

use super::LaunchError;

/// The host user a sandbox runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostUser {
    /// The daemon is root: the child drops to this uid (and the same gid, with only the
    /// supplementary groups of its read-only mounts) before bwrap starts, and the
    /// sandbox's uid 1000 maps to it.
    Dedicated(u32),
    /// The daemon is not root: the sandbox runs as the daemon's own uid, which the user
    /// namespace maps to uid 1000.
    Current,
}

/// Who owns the workspace trees on disk: uid → the workspaces (see the module doc) whose
/// trees or snapshots it owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeOwners {
    owners: HashMap<u32, BTreeSet<PathBuf>>,
}

/// Allocates host uids from a range. The caller persists which are in use (the uid is
/// part of a sandbox's record) and rebuilds the allocator with [`HostIds::mark_used`]
/// after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIds {
    range: RangeInclusive<u32>,
    used: BTreeSet<u32>,
    /// Every uid that may own a tree: the owners of the last full scan plus every uid
    /// handed out since (see [`HostIds::allocate_owning_nothing`]). `None` before the
    /// first scan.
    may_own: Option<BTreeSet<u32>>,
}

impl HostUser {
    /// The host uid the sandbox's processes have.
    pub fn uid(self) -> u32 {
        match self {
            HostUser::Dedicated(uid) => uid,
            HostUser::Current => Uid::effective().as_raw(),
        }
    }

    /// A dedicated uid from `ids` when the daemon is root, else [`HostUser::Current`].
    pub fn choose(ids: &mut HostIds) -> Result<HostUser, LaunchError> {
        if Uid::effective().is_root() {
            ids.allocate().map(HostUser::Dedicated)
        } else {
            Ok(HostUser::Current)
        }
    }

    /// The user of a sandbox on the tree `workspace` (see the module doc): its owner
    /// when that uid is free and owns nothing else under `data_dir`, else a fresh uid
    /// owning nothing there. [`HostUser::Current`] when the daemon is not root.
    pub fn for_workspace(
        ids: &mut HostIds,
        data_dir: &Path,
        workspace: &Path,
    ) -> Result<HostUser, LaunchError> {
        if !Uid::effective().is_root() {
            return Ok(HostUser::Current);
        }
        let meta =
            std::fs::symlink_metadata(workspace).map_err(|source| LaunchError::Workspace {
                path: workspace.to_path_buf(),
                source: Some(source),
            })?;
        if !meta.is_dir() {
            return Err(LaunchError::Workspace {
                path: workspace.to_path_buf(),
                source: None,
            });
        }
        if !ids.range.contains(&meta.uid()) {
            // A tree no sandbox uid owns yet (a new workspace, the common case): any uid
            // owning nothing will do, which the set of known owners answers without a scan.
            return ids
                .allocate_owning_nothing(|| TreeOwners::scan(data_dir))
                .map(HostUser::Dedicated);
        }
        let owners = TreeOwners::scan(data_dir)?;
        let domain = TreeOwners::domain(data_dir, workspace);
        ids.choose_for_tree(meta.uid(), &domain, &owners)
            .map(HostUser::Dedicated)
    }
}

/// The supplementary groups that let a sandboxed `uid` read `sources` (trees of other
/// workspaces): the group of each source's top directory, when it lies in `range` and
/// is not `uid`'s own. Sorted, without duplicates.
pub fn supplementary_groups(
    sources: &[&Path],
    range: &RangeInclusive<u32>,
    uid: u32,
) -> Result<Vec<u32>, LaunchError> {
    let mut groups = BTreeSet::new();
    for source in sources {
        let meta = std::fs::metadata(source).map_err(|_| LaunchError::Missing {
            what: "read-only mount source",
            path: source.to_path_buf(),
        })?;
        if range.contains(&meta.gid()) && meta.gid() != uid {
            groups.insert(meta.gid());
        }
    }
    Ok(groups.into_iter().collect())
}

impl TreeOwners {
    /// Reads the owners of every tree and snapshot under `<data_dir>/workspaces` and of
    /// every legacy workspace under `<data_dir>/sandboxes`. Missing directories are
    /// empty; any other error fails the scan (a uid is never chosen on a partial view).
    pub fn scan(data_dir: &Path) -> Result<TreeOwners, LaunchError> {
        let mut owners = TreeOwners::default();
        let workspaces = data_dir.join("workspaces");
        for workspace in list(&workspaces)? {
            for kind in ["trees", "snapshots"] {
                for tree in list(&workspace.join(kind))? {
                    // A tree can vanish between the listing and its stat: a temporary of
                    // a create, clone or snapshot renamed into place, or a deleted tree.
                    // Its owner owns the source it is made from too (new trees belong
                    // to the daemon until a sandbox gets them), so nothing is missed.
                    if let Some(uid) = owner(&tree)? {
                        owners.add(uid, workspace.clone());
                    }
                }
            }
        }
        for sandbox in list(&data_dir.join("sandboxes"))? {
            let legacy = sandbox.join("workspace");
            match std::fs::symlink_metadata(&legacy) {
                Ok(meta) => owners.add(meta.uid(), legacy),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(scan_error(&legacy, source)),
            }
        }
        Ok(owners)
    }

    /// The workspace `tree` belongs to: `<data_dir>/workspaces/<ws>` for its trees and
    /// snapshots, the path itself for anything else.
    pub fn domain(data_dir: &Path, tree: &Path) -> PathBuf {
        let workspaces = data_dir.join("workspaces");
        let kind = tree.parent().and_then(Path::file_name);
        match tree.parent().and_then(Path::parent) {
            Some(workspace)
                if workspace.parent() == Some(workspaces.as_path())
                    && matches!(kind.and_then(|k| k.to_str()), Some("trees" | "snapshots")) =>
            {
                workspace.to_path_buf()
            }
            _ => tree.to_path_buf(),
        }
    }

    /// Records that `uid` owns a tree of `workspace`.
    pub fn add(&mut self, uid: u32, workspace: PathBuf) {
        self.owners.entry(uid).or_default().insert(workspace);
    }

    /// Whether `uid` owns any tree.
    pub fn owns_any(&self, uid: u32) -> bool {
        self.owners.contains_key(&uid)
    }

    /// Whether every tree `uid` owns (possibly none) belongs to `workspace`.
    pub fn owns_only(&self, uid: u32, workspace: &Path) -> bool {
        self.owners
            .get(&uid)
            .is_none_or(|set| set.iter().all(|w| w == workspace))
    }
}

impl HostIds {
    /// The default range: 65,536 uids from 200000. `useradd` hands out subordinate uid
    /// ranges from 100000 in blocks of 65,536, so a second user's (165536-231071)
    /// overlaps it: on hosts with several users, configure a range `/etc/subuid` does
    /// not use.
    pub const DEFAULT_RANGE: RangeInclusive<u32> = 200_000..=265_535;

    /// An allocator over `range`, which must be non-empty and exclude root and the
    /// overflow uid 65534 (`nobody`).
    pub fn new(range: RangeInclusive<u32>) -> Result<Self, LaunchError> {
        if range.is_empty() || range.contains(&0) || range.contains(&65_534) {
            return Err(LaunchError::InvalidIdRange {
                start: *range.start(),
                end: *range.end(),
            });
        }
        Ok(HostIds {
            range,
            used: BTreeSet::new(),
            may_own: None,
        })
    }

    /// The range.
    pub fn range(&self) -> &RangeInclusive<u32> {
        &self.range
    }

    /// Records `uid` as taken (e.g. by a sandbox found after a restart). Returns false
    /// when it lies outside the range or was taken already.
    pub fn mark_used(&mut self, uid: u32) -> bool {
        self.range.contains(&uid) && self.used.insert(uid)
    }

    /// Takes the lowest free uid.
    pub fn allocate(&mut self) -> Result<u32, LaunchError> {
        self.allocate_avoiding(|_| false)
    }

    /// Takes the uid for a sandbox on a tree whose top directory `owner` owns, in
    /// `workspace` (see the module doc): `owner` itself when it is in the range, free,
    /// and owns nothing outside `workspace`; else the lowest free uid owning nothing.
    pub fn choose_for_tree(
        &mut self,
        owner: u32,
        workspace: &Path,
        owners: &TreeOwners,
    ) -> Result<u32, LaunchError> {
        if let Some(may_own) = &mut self.may_own {
            // A full scan is at hand: whoever owns a tree now is known.
            may_own.extend(owners.owners.keys().copied());
        }
        if self.range.contains(&owner)
            && !self.used.contains(&owner)
            && owners.owns_only(owner, workspace)
        {
            self.take(owner);
            return Ok(owner);
        }
        self.allocate_avoiding(|uid| owners.owns_any(uid))
    }

    /// Takes the lowest free uid that owns no tree, for a tree that no uid of the range
    /// owns yet, without reading the disk in the common case.
    ///
    /// A uid comes to own a tree only by being handed out here or by
    /// [`Self::choose_for_tree`] (the tree is then given to it), or as the owner of a tree
    /// copied from one it owns already (snapshots, forks, restores). So the owners of one
    /// full `scan`, plus every uid handed out since, include every uid that may own a
    /// tree now: a uid outside that set owns nothing. The set only grows (a tree deleted
    /// since keeps its former owner in it) until the range runs out; then a fresh scan,
    /// with the uids in use, replaces it and the search runs once more. A scan that has
    /// just finished can miss a tree whose hand-over is still under way, but that tree's
    /// uid is in use until its launch is over, and stays in the set.
    pub fn allocate_owning_nothing(
        &mut self,
        scan: impl Fn() -> Result<TreeOwners, LaunchError>,
    ) -> Result<u32, LaunchError> {
        if self.may_own.is_none() {
            self.may_own = Some(scan()?.owners.into_keys().collect());
        }
        let found = self.free_not_in_may_own();
        let uid = match found {
            Some(uid) => uid,
            None => {
                let mut rescanned: BTreeSet<u32> = scan()?.owners.into_keys().collect();
                rescanned.extend(self.used.iter().copied());
                self.may_own = Some(rescanned);
                self.free_not_in_may_own()
                    .ok_or(LaunchError::IdsExhausted {
                        start: *self.range.start(),
                        end: *self.range.end(),
                    })?
            }
        };
        self.take(uid);
        Ok(uid)
    }

    fn free_not_in_may_own(&self) -> Option<u32> {
        let may_own = self.may_own.as_ref()?;
        self.range
            .clone()
            .find(|uid| !self.used.contains(uid) && !may_own.contains(uid))
    }

    /// Marks `uid` in use and as a possible owner from now on.
    fn take(&mut self, uid: u32) {
        self.used.insert(uid);
        if let Some(may_own) = &mut self.may_own {
            may_own.insert(uid);
        }
    }

    /// Takes the lowest uid that is free and not `avoid`ed.
    fn allocate_avoiding(&mut self, avoid: impl Fn(u32) -> bool) -> Result<u32, LaunchError> {
        let free = self
            .range
            .clone()
            .find(|uid| !self.used.contains(uid) && !avoid(*uid))
            .ok_or(LaunchError::IdsExhausted {
                start: *self.range.start(),
                end: *self.range.end(),
            })?;
        self.take(free);
        Ok(free)
    }

    /// Gives `uid` back.
    pub fn release(&mut self, uid: u32) {
        self.used.remove(&uid);
    }

    /// How many uids are taken.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

/// The entries of `dir` (none when it does not exist).
fn list(dir: &Path) -> Result<Vec<PathBuf>, LaunchError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|source| scan_error(dir, source)),
        // A missing directory, or a stray file where a directory is expected, holds no tree.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(Vec::new())
        }
        Err(source) => Err(scan_error(dir, source)),
    }
}

/// The owner of `path`; `None` when it no longer exists.
fn owner(path: &Path) -> Result<Option<u32>, LaunchError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta.uid())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(scan_error(path, source)),
    }
}

fn scan_error(path: &Path, source: std::io::Error) -> LaunchError {
    LaunchError::OwnerScan {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_that_vanished_during_the_scan_owns_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            owner(&dir.path().join("renamed-meanwhile")).expect("no error"),
            None
        );
        assert!(owner(dir.path()).expect("exists").is_some());
    }

    fn owners_of(uids: &[u32]) -> TreeOwners {
        let mut owners = TreeOwners::default();
        for uid in uids {
            owners.add(*uid, PathBuf::from(format!("/data/workspaces/ws-{uid}")));
        }
        owners
    }

    #[test]
    fn fresh_trees_get_uids_owning_nothing_from_one_scan_until_the_range_runs_out() {
        let scans = std::cell::Cell::new(0);
        // On disk: 200_000 owns a tree, and later 200_002's tree is deleted.
        let on_disk = std::cell::RefCell::new(vec![200_000, 200_002]);
        let scan = || {
            scans.set(scans.get() + 1);
            Ok(owners_of(&on_disk.borrow()))
        };
        let mut ids = HostIds::new(200_000..=200_003).expect("valid");
        assert_eq!(ids.allocate_owning_nothing(scan).expect("free"), 200_001);
        assert_eq!(ids.allocate_owning_nothing(scan).expect("free"), 200_003);
        assert_eq!(scans.get(), 1, "one scan serves every fresh tree");
        // Released uids may own the trees they were given: not handed out again...
        ids.release(200_001);
        ids.release(200_003);
        on_disk.borrow_mut().retain(|uid| *uid != 200_002);
        // ...until the range runs out and a fresh scan shows what is really owned.
        assert_eq!(
            ids.allocate_owning_nothing(scan).expect("rescanned"),
            200_001
        );
        assert_eq!(scans.get(), 2);
        assert_eq!(ids.allocate_owning_nothing(scan).expect("free"), 200_002);
        ids.mark_used(200_003);
        assert!(matches!(
            ids.allocate_owning_nothing(scan),
            Err(LaunchError::IdsExhausted { .. })
        ));
    }

    #[test]
    fn a_full_scan_for_an_owned_tree_teaches_the_known_owners() {
        let mut ids = HostIds::new(200_000..=200_003).expect("valid");
        let none = || Ok(owners_of(&[]));
        assert_eq!(ids.allocate_owning_nothing(none).expect("free"), 200_000);
        // A scan for another tree finds 200_001 owning a fork: it is never handed out
        // for a fresh tree, even though the first scan had not seen it.
        let owners = owners_of(&[200_001]);
        let ws = PathBuf::from("/data/workspaces/ws-x");
        assert_eq!(ids.choose_for_tree(0, &ws, &owners).expect("free"), 200_002);
        assert_eq!(ids.allocate_owning_nothing(none).expect("free"), 200_003);
    }

    #[test]
    fn allocates_lowest_free_and_reuses_released() {
        let mut ids = HostIds::new(200_000..=200_002).expect("valid");
        assert_eq!(ids.allocate().expect("free"), 200_000);
        assert!(ids.mark_used(200_002));
        assert!(!ids.mark_used(200_002), "taken already");
        assert!(!ids.mark_used(7), "outside the range");
        assert_eq!(ids.allocate().expect("free"), 200_001);
        assert!(matches!(
            ids.allocate(),
            Err(LaunchError::IdsExhausted { .. })
        ));
        ids.release(200_001);
        assert_eq!(ids.allocate().expect("free again"), 200_001);
        assert_eq!(ids.in_use(), 3);
    }

    #[test]
    fn the_top_of_the_u32_range_is_handled() {
        let mut ids = HostIds::new(u32::MAX..=u32::MAX).expect("valid");
        assert_eq!(ids.allocate().expect("one"), u32::MAX);
        assert!(ids.allocate().is_err());
    }

    #[test]
    fn ranges_with_root_or_nobody_are_refused() {
        #[expect(clippy::reversed_empty_ranges, reason = "an empty range is a case")]
        let empty = 10..=5;
        for range in [0..=10, 65_000..=66_000, empty] {
            assert!(HostIds::new(range).is_err());
        }
    }

    #[test]
    fn a_tree_keeps_its_owner_when_that_uid_is_free_and_owns_nothing_else() {
        let ws = |name: &str| PathBuf::from("/data/workspaces").join(name);
        let mut owners = TreeOwners::default();
        owners.add(200_000, ws("a"));
        owners.add(200_001, ws("b"));
        owners.add(200_001, ws("c")); // forked: b and c share an owner
        owners.add(200_003, ws("d"));
        let mut ids = HostIds::new(200_000..=200_009).expect("valid");

        assert_eq!(
            ids.choose_for_tree(200_000, &ws("a"), &owners)
                .expect("reused"),
            200_000
        );
        // In use now: a second sandbox on the same tree gets a fresh uid owning nothing.
        assert_eq!(
            ids.choose_for_tree(200_000, &ws("a"), &owners)
                .expect("fresh"),
            200_002
        );
        // The owner also owns another workspace: fresh (200_003 owns d, so skipped).
        assert_eq!(
            ids.choose_for_tree(200_001, &ws("b"), &owners)
                .expect("fresh"),
            200_004
        );
        // Root-owned (a new tree) or outside the range: fresh.
        assert_eq!(
            ids.choose_for_tree(0, &ws("e"), &owners).expect("fresh"),
            200_005
        );
        assert_eq!(
            ids.choose_for_tree(7, &ws("e"), &owners).expect("fresh"),
            200_006
        );
        // Released uids are reused only by their own workspace or once they own nothing.
        ids.release(200_000);
        assert_eq!(
            ids.choose_for_tree(0, &ws("e"), &owners).expect("fresh"),
            200_007
        );
        assert_eq!(
            ids.choose_for_tree(200_000, &ws("a"), &owners)
                .expect("reused"),
            200_000
        );
        assert_eq!(
            ids.choose_for_tree(200_003, &ws("d"), &owners)
                .expect("reused"),
            200_003
        );
        assert_eq!(
            ids.choose_for_tree(0, &ws("e"), &owners).expect("fresh"),
            200_008
        );
        assert_eq!(
            ids.choose_for_tree(0, &ws("e"), &owners).expect("fresh"),
            200_009
        );
        assert!(matches!(
            ids.choose_for_tree(0, &ws("e"), &owners),
            Err(LaunchError::IdsExhausted { .. })
        ));
    }

    #[test]
    fn trees_and_snapshots_belong_to_their_workspace_and_other_paths_to_themselves() {
        let data = Path::new("/data");
        for (tree, domain) in [
            ("/data/workspaces/a/trees/3", "/data/workspaces/a"),
            ("/data/workspaces/a/snapshots/s1", "/data/workspaces/a"),
            ("/data/workspaces/a/other/3", "/data/workspaces/a/other/3"),
            (
                "/data/sandboxes/sb/workspace",
                "/data/sandboxes/sb/workspace",
            ),
            (
                "/elsewhere/workspaces/a/trees/3",
                "/elsewhere/workspaces/a/trees/3",
            ),
        ] {
            assert_eq!(
                TreeOwners::domain(data, Path::new(tree)),
                Path::new(domain),
                "{tree}"
            );
        }
    }

    #[test]
    fn the_scan_finds_trees_snapshots_and_legacy_workspaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        for sub in [
            "workspaces/a/trees/1",
            "workspaces/a/snapshots/s",
            "workspaces/b/trees/2",
            "sandboxes/sb-1/workspace",
            "sandboxes/sb-2",
        ] {
            std::fs::create_dir_all(data.join(sub)).expect("mkdir");
        }
        std::fs::write(data.join("workspaces/.tmp-x-0000"), "").expect("stray file");
        let owners = TreeOwners::scan(data).expect("scan");
        let me = Uid::effective().as_raw();
        assert!(owners.owns_any(me));
        assert!(!owners.owns_any(me + 1));
        assert!(
            !owners.owns_only(me, &data.join("workspaces/a")),
            "b and sb-1 too"
        );
        assert!(
            owners.owns_only(me + 1, &data.join("workspaces/a")),
            "owns nothing"
        );
        let empty = TreeOwners::scan(&data.join("missing")).expect("scan");
        assert_eq!(empty, TreeOwners::default());
    }

    #[test]
    fn supplementary_groups_are_the_range_gids_of_the_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gid = std::fs::metadata(dir.path()).expect("stat").gid();
        let sources = [dir.path(), dir.path()];
        assert_eq!(
            supplementary_groups(&sources, &(gid..=gid), gid + 1).expect("groups"),
            [gid]
        );
        assert!(
            supplementary_groups(&sources, &(gid..=gid), gid)
                .expect("own")
                .is_empty()
        );
        let outside = gid.wrapping_add(1)..=gid.wrapping_add(2);
        assert!(
            supplementary_groups(&sources, &outside, 4_000_000)
                .expect("none")
                .is_empty()
        );
        assert!(matches!(
            supplementary_groups(&[&dir.path().join("missing")], &(gid..=gid), 1),
            Err(LaunchError::Missing { .. })
        ));
    }

    #[test]
    fn non_root_daemons_use_their_own_uid() {
        let mut ids = HostIds::new(HostIds::DEFAULT_RANGE).expect("valid");
        let user = HostUser::choose(&mut ids).expect("chosen");
        if Uid::effective().is_root() {
            assert_eq!(user, HostUser::Dedicated(200_000));
        } else {
            assert_eq!(user, HostUser::Current);
        }
        assert_ne!(user.uid(), 0, "never root");
    }
}
